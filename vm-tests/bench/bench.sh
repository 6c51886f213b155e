#!/usr/bin/env bash
# vm-tests/bench/bench.sh: the benchmark of issue 5 (design.md §7). One run
# builds the design §6 topology and measures the same work over five paths to
# the same sandbox server (benchtool.py serve, [::]:9100 in the sandbox):
#
#   A  plain TCP, client ns -> sandbox ns over a bench-only veth (the physical
#      limit here, and the load tool's own ceiling)
#   B  ssh -L 19100:127.0.0.1:9100 with ProxyCommand `openshell-tunnel ssh-proxy`
#      (the status quo: one ForwardTcp stream to sshd, channels inside SSH)
#   C  `openshell-tunnel forward 0 demo:9100` (one ForwardTcp stream per
#      connection, no TUN)
#   D  the tunnel: demo.local:9100, IPv4 (`openshell-tunnel up`)
#   E  the tunnel over IPv6 (a fresh `up`, so its RSS starts clean)
#   U  the tunnel (IPv4) without the project's extensions (`up --no-tunnel-ext`),
#      i.e. as against an upstream gateway: every connection waits for the
#      first target byte or the settle window (docs/ARCHITECTURE.md); every
#      workload here has the client speak first, so U - D is that cost
#
# The mini-gateway offers the extensions (--tunnel-extensions, OSH_EXT=1), so
# paths C, D and E, whose ratios are the targets, run with connect-ack
# negotiated, as issue 12.3 asks; U shows what upstream behaviour costs.
#   ┌──────── client ns ────────┐        ┌──── gw ns ────┐        ┌──────── sbx ns ────────┐
#   │ benchtool client          │  veth  │ mini-gateway  │  veth  │ mini-supervisor, sshd  │
#   │ B: ssh -L / C: forward    ├────────┤ :17670        ├────────┤ benchtool serve :9100  │
#   │ D/E: up, TUN osh0         │        └───────────────┘        │                        │
#   │ 203.0.113.1 ──────────────┼──── bench-only veth (path A) ───┼─ 203.0.113.2           │
#   └───────────────────────────┘                                 └────────────────────────┘
#
# Workloads (each over --reps repetitions, printed as median (min–max)):
# bulk upload and download (sha256 checked), connect + first byte p50/p95 over
# sequential connections, 64-byte request/response rate on one connection, a
# storm of concurrent 1 MiB downloads, connection churn (connect, 1 KiB echo,
# close), concurrent idle connections (all established end to end; RSS growth
# of the tunnel process per connection), CPU seconds per GiB of the tunnel
# process, the gateway and the supervisor. The mini-gateway's caps are raised
# (5000 streams per sandbox and per token, 5000 unclaimed relays; more with a larger
# --idle-n) and so are the tunnel's and forward's --max-streams-per-sandbox (idle-n + 100) and
# --max-streams (idle-n + 200), for the idle test; forward's --max-pending-opens too
# (idle-n + 100): its idle connections are all accepted by the kernel at once, so their opens
# queue together (the tunnel's SYN gate paces them).
#
# Usage: bench.sh [--smoke] [--out DIR] [--reps N] [--bulk-mib N] [--latency-n N]
#                 [--rr-n N] [--storm-n N] [--churn-n N] [--idle-n N] [--paths "A B C D E U"]
#                 [--profile] [--profile-event EVENT]
#   --smoke   tiny sizes, one repetition (~10 s of measuring): CI's anti-rot check
#   --profile one extra bulk upload and download per path, not measured, under
#             `perf record -e cpu-clock -g` of the tunnel process, the gateway and
#             the supervisor: DIR/profile/<path>-<upload|download>-<group>.{data,txt}
#             (the .txt: CPU share per thread and per symbol; issue 16.1)
#   --profile-event EVENT  what --profile records instead of cpu-clock: a software
#             event recorded at every occurrence (-c 1), e.g. page-faults; the
#             .txt then starts with the count (implies --profile)
# Output: the table on stdout, DIR/bench.json (everything), DIR/bench.md and
# DIR/bench.png (benchchart.py: each path's throughput, latency and CPU per GiB
# relative to C, the direct relay; needs python3-matplotlib).
# Binaries: $OSH_TUNNEL, $OSH_GATEWAY, $OSH_SUPERVISOR, else ./build/... of the repo.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TOOL="$HERE/benchtool.py"
PY=/usr/bin/python3

SMOKE=0
OUT=""
REPS=3
BULK=$((1 << 30))
LAT_N=1000
RR_N=10000
STORM_N=50
STORM_BYTES=$((1 << 20))
CHURN_N=1000
IDLE_N=1000
PATHS="A B C D E U"
PROFILE=0 PROFILE_EVENT=cpu-clock
while (($#)); do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    --reps) REPS="$2"; shift ;;
    --bulk-mib) BULK=$(($2 << 20)); shift ;;
    --latency-n) LAT_N="$2"; shift ;;
    --rr-n) RR_N="$2"; shift ;;
    --storm-n) STORM_N="$2"; shift ;;
    --churn-n) CHURN_N="$2"; shift ;;
    --idle-n) IDLE_N="$2"; shift ;;
    --paths) PATHS="$2"; shift ;;
    --profile) PROFILE=1 ;;
    --profile-event) PROFILE=1 PROFILE_EVENT="$2"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 1 ;;
  esac
  shift
done
if ((SMOKE)); then
  REPS=1 BULK=$((16 << 20)) LAT_N=50 RR_N=500 STORM_N=10 STORM_BYTES=$((256 << 10)) CHURN_N=50 IDLE_N=50
fi
OUT="${OUT:-$PWD/osh-bench-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
rm -f "$OUT"/path-*.json
export OSH_TUNNEL="${OSH_TUNNEL:-$ROOT/build/cli/openshell-tunnel}"
export OSH_GATEWAY="${OSH_GATEWAY:-$ROOT/build/peers/openshell-mini-gateway}"
export OSH_SUPERVISOR="${OSH_SUPERVISOR:-$ROOT/build/peers/openshell-mini-supervisor}"
export OSH_VERBOSE="${OSH_VERBOSE:-0}"
if ((PROFILE)) && ! command -v perf >/dev/null; then
  echo "bench.sh: --profile needs perf (apt-get install linux-perf)" >&2
  exit 1
fi
if ((PROFILE)); then
  # Every occurrence of the event is recorded (-c 1), except cpu-clock's
  # samples: a timer event such as task-clock would be "recorded" a few
  # hundred times and the count be meaningless.
  [[ $PROFILE_EVENT != task-clock ]] || { echo "bench.sh: --profile-event task-clock: a timer; use cpu-clock (--profile)" >&2; exit 1; }
  perf stat -e "$PROFILE_EVENT" true >/dev/null 2>&1 ||
    { echo "bench.sh: --profile-event $PROFILE_EVENT: perf does not know this event (perf list sw)" >&2; exit 1; }
fi
PROFILE_ARGS=()
((PROFILE)) && PROFILE_ARGS=(--profile-dir "$OUT/profile" --profile-event "$PROFILE_EVENT")
for b in "$OSH_TUNNEL" "$OSH_GATEWAY" "$OSH_SUPERVISOR"; do
  [[ -x $b ]] || { echo "bench.sh: $b is missing: build first (scripts/build.sh)" >&2; exit 1; }
done

export OSH_EXT="${OSH_EXT:-1}"  # the gateway offers the extensions (see above)
source "$HERE/../lib.sh"
trap osh_cleanup EXIT
ulimit -n "$(ulimit -Hn)"  # 1000 idle connections in every process on the path
T_START=$SECONDS

osh_topology
say "bench-only veth client <-> sandbox (path A): 203.0.113.1 <-> 203.0.113.2"
ip link add "vd$OSH_TAG" netns "$NS_CLIENT" type veth peer name "ve$OSH_TAG" netns "$NS_SBX"
ip -n "$NS_CLIENT" addr add 203.0.113.1/24 dev "vd$OSH_TAG"
ip -n "$NS_SBX" addr add 203.0.113.2/24 dev "ve$OSH_TAG"
ip -n "$NS_CLIENT" link set "vd$OSH_TAG" up
ip -n "$NS_SBX" link set "ve$OSH_TAG" up
osh_sandbox_services 1
GW_CAP=$((IDLE_N + 200 > 5000 ? IDLE_N + 200 : 5000))
osh_gateway --max-streams-per-sandbox "$GW_CAP" --max-streams-per-token "$GW_CAP" \
  --max-pending-relays-per-sandbox "$GW_CAP" --max-pending-relays "$GW_CAP"
# The tunnel's and forward's caps, above what the idle test holds.
CAPS=(--max-streams-per-sandbox $((IDLE_N + 100)) --max-streams $((IDLE_N + 200)))
osh_supervisor
STREAM_BYTES=$((BULK > STORM_BYTES ? BULK : STORM_BYTES))
say "sandbox: benchtool serve on [::]:9100 (test stream of $((STREAM_BYTES >> 20)) MiB)"
osh_spawn "$NS_SBX" benchsrv "$PY" "$TOOL" serve --port 9100 --stream-bytes "$STREAM_BYTES"
wait_until 60 port_listens "$NS_SBX" 9100
GW_URL="http://$OSH_GW_ADDR:$OSH_GW_PORT"
PROXY="ProxyCommand=$OSH_TUNNEL ssh-proxy --gateway-endpoint $GW_URL demo"
SSH_OPTS=(-F /dev/null -i "$OSH_WORK/ssh/id_test" -o BatchMode=yes -o StrictHostKeyChecking=no
  -o UserKnownHostsFile=/dev/null -o ServerAliveInterval=15 -o "$PROXY")

# run_path NAME LABEL HOST PORT TUNNEL_PIDS [EXTRA_GROUP_JSON]
run_path() {
  local name="$1" label="$2" host="$3" port="$4" tunnel="$5" extra="${6:-}"
  local watch="{\"gateway\": [$PID_gateway], \"supervisor\": [$PID_supervisor]"
  [[ -n $tunnel ]] && watch+=", \"tunnel\": [$tunnel]"
  [[ -n $extra ]] && watch+=", $extra"
  watch+="}"
  say "path $name: $label -> $host:$port"
  ip netns exec "$NS_CLIENT" "$PY" "$TOOL" client --name "$name" --label "$label" --host "$host" \
    --port "$port" --out "$OUT/path-$name.json" --watch "$watch" --reps "$REPS" \
    --bulk-bytes "$BULK" --latency-n "$LAT_N" --rr-n "$RR_N" --storm-n "$STORM_N" \
    --storm-bytes "$STORM_BYTES" --churn-n "$CHURN_N" --idle-n "$IDLE_N"  \
    "${PROFILE_ARGS[@]}"
}

# profile_summaries: one text summary next to each perf.data of --profile:
# the CPU share per thread, per symbol (self time), then per symbol with what
# it calls (children: which of our functions and syscalls the time sits under).
profile_summaries() {
  local f
  for f in "$OUT"/profile/*.data; do
    [[ -e $f ]] || continue
    {
      echo "# $(basename "$f"): perf record -e $PROFILE_EVENT -g; per thread, then per symbol (self)"
      [[ $PROFILE_EVENT == cpu-clock ]] ||
        echo "# $PROFILE_EVENT: $(perf script -i "$f" -F event 2>/dev/null | wc -l) events (each one recorded)"
      perf report -i "$f" --stdio --no-children --sort comm --percent-limit 1 -g none 2>/dev/null | grep -v '^$'
      perf report -i "$f" --stdio --no-children --sort dso,sym --percent-limit 0.7 -g none 2>/dev/null | grep -v '^$'
      echo "# with children (in the function and what it calls)"
      perf report -i "$f" --stdio --children --sort sym --percent-limit 3 -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | cut -c1-160 || true  # nothing left: no samples (page-faults: none)
    } > "${f%.data}.txt"
  done
  say "profiles: $OUT/profile/*.txt"
}

# stop_pid PID: SIGTERM one process this script started, and wait for it.
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

CIPHER=""
for p in $PATHS; do
  case "$p" in
    A)
      run_path A "plain TCP (veth)" 203.0.113.2 9100 ""
      ;;
    B)
      # The cipher ssh negotiates here (the same for the -L session below).
      CIPHER="$(ip netns exec "$NS_CLIENT" ssh -v "${SSH_OPTS[@]}" root@demo true 2>&1 |
        sed -n 's/.*kex: server->client cipher: \([^ ]*\).*/\1/p' | head -n1)"
      say "ssh cipher: ${CIPHER:-unknown}"
      osh_spawn "$NS_CLIENT" sshfwd ssh "${SSH_OPTS[@]}" -o ExitOnForwardFailure=yes -N \
        -L 127.0.0.1:19100:127.0.0.1:9100 root@demo
      wait_until 20 port_listens "$NS_CLIENT" 19100
      run_path B "ssh -L + ssh-proxy" 127.0.0.1 19100 "$PID_sshfwd" "\"sshd\": [$PID_sshd]"
      stop_pid "$PID_sshfwd"
      ;;
    C)
      # shellcheck disable=SC2086 # OSH_STREAM_FLAGS (lib.sh; osh_tunnel adds them for D/E/U)
      osh_spawn "$NS_CLIENT" forward "$OSH_TUNNEL" forward --gateway-endpoint "$GW_URL" \
        "${CAPS[@]}" ${OSH_STREAM_FLAGS:-} --max-pending-opens $((IDLE_N + 100)) 0 demo:9100
      wait_until 15 grep -q "✓ Forwarding" "$OSH_WORK/forward.log"
      FWD_PORT="$(sed -n 's/^✓ Forwarding .*:\([0-9]*\) -> .*/\1/p' "$OSH_WORK/forward.log" | head -n1)"
      run_path C "forward (no TUN)" 127.0.0.1 "$FWD_PORT" "$PID_forward"
      stop_pid "$PID_forward"
      ;;
    D | E)
      # No per-user cap: the idle case holds --idle-n (1,000) connections of root.
      osh_tunnel "${CAPS[@]}" --max-connections-per-user 0
      if [[ $p == D ]]; then
        run_path D "tunnel demo.local (IPv4)" "$(sandbox_v4)" 9100 "$PID_tunnel"
      else
        run_path E "tunnel demo.local (IPv6)" "$(sandbox_v6)" 9100 "$PID_tunnel"
      fi
      stop_tunnel
      ;;
    U)
      osh_tunnel "${CAPS[@]}" --max-connections-per-user 0 --no-tunnel-ext
      run_path U "tunnel, upstream mode (IPv4)" "$(sandbox_v4)" 9100 "$PID_tunnel"
      stop_tunnel
      say "path U: $(grep -o 'late_refusals=[0-9]*' "$OSH_WORK/tunnel.log" | tail -n1) (refusals after the settle window)"
      ;;
    *) fail "unknown path $p" ;;
  esac
done

((PROFILE)) && profile_summaries
say "report ($((SECONDS - T_START)) s so far)"
EXTRA="$("$PY" -c 'import json,sys; print(json.dumps({"ssh_cipher": sys.argv[1], "smoke": sys.argv[2] == "1", "git": sys.argv[3]}))' \
  "$CIPHER" "$SMOKE" "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)")"
rc=0
"$PY" "$TOOL" report "$OUT"/path-*.json --json "$OUT/bench.json" --markdown "$OUT/bench.md" --extra "$EXTRA" || rc=$?
# The chart (issue 17.5): every path relative to C, the direct relay.
if "$PY" -c 'import matplotlib' 2>/dev/null; then
  "$PY" "$HERE/benchchart.py" "$OUT/bench.json" "$OUT/bench.png" || say "chart failed (see above)"
else
  say "no chart: python3-matplotlib is not installed (scripts/install-deps.sh installs it)"
fi
say "results: $OUT/bench.json, $OUT/bench.md$([[ -e $OUT/bench.png ]] && echo ", $OUT/bench.png") (total $((SECONDS - T_START)) s)"
((rc == 0)) || say "FAILED: some transfer or connection failed (see 'failures' above)"
exit "$rc"
