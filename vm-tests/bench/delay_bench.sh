#!/usr/bin/env bash
# vm-tests/bench/delay_bench.sh: single-stream throughput with added round-trip
# delay between the client and the gateway (issue 15.3). This kernel has no
# netem, so the delay is osh-delay-relay (delay_relay.cc) in the gateway
# namespace: the client's gateway endpoint is the relay (192.0.2.2:17671),
# which forwards to the mini-gateway (127.0.0.1:17670) and holds each
# direction's bytes for RTT/2, so the added round-trip time is RTT. The
# supervisor's side is not delayed. Topology otherwise as bench.sh (lib.sh's
# client, gw and sbx namespaces; benchtool.py serve on [::]:9100 in the
# sandbox):
#
#   client ns                      gw ns                                  sbx ns
#   delaytool.py ─ C: forward ──┐  osh-delay-relay :17671 ─► mini-gateway  mini-supervisor
#                ─ D: up, osh0 ─┴─► (+RTT/2 each way)         :17670 ───── benchtool serve :9100
#
# For each RTT (0 still goes through the relay) and each path, one warm-up
# download of 4 MiB, then --reps repetitions of a download (and an upload with
# --dirs "down up") of --mib MiB on one fresh connection, each stopped after
# --max-secs; prints Mbit/s, whether the bytes are intact (sha256 / prefix
# compare), the peak RSS of the tunnel process (`up` or `forward`) and of the
# gateway during each transfer, the load average before it, the median of 5
# connect + first byte probes, and the most bytes the relay held in the
# download direction (see relay_peaks).
#
# Usage: delay_bench.sh [--rtt-ms "0 50 150"] [--paths "D C"] [--mib 256]
#                       [--max-secs 20] [--reps 2] [--dirs down] [--out DIR]
#                       [--smoke]
#   --smoke   --rtt-ms 20 --mib 8 --reps 1 --dirs "down up": the vm-test's check
# Output: the table on stdout, DIR/delay.md and DIR/delay.json; exit 1 when a
# transfer was not intact or failed.
# Binaries: $OSH_TUNNEL, $OSH_GATEWAY, $OSH_SUPERVISOR, $OSH_DELAY_RELAY, else
# ./build/... of the repo.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY=/usr/bin/python3

RTTS="0 50 150"
PATHS="D C"
MIB=256
MAX_SECS=20
REPS=2
DIRS="down"
OUT=""
while (($#)); do
  case "$1" in
    --rtt-ms) RTTS="$2"; shift ;;
    --paths) PATHS="$2"; shift ;;
    --mib) MIB="$2"; shift ;;
    --max-secs) MAX_SECS="$2"; shift ;;
    --reps) REPS="$2"; shift ;;
    --dirs) DIRS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --smoke) RTTS=20 MIB=8 REPS=1 DIRS="down up" ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "delay_bench.sh: unknown argument $1 (see --help)" >&2; exit 1 ;;
  esac
  shift
done
OUT="${OUT:-$PWD/osh-delay-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
rm -f "$OUT"/run-*.json
export OSH_TUNNEL="${OSH_TUNNEL:-$ROOT/build/cli/openshell-tunnel}"
export OSH_GATEWAY="${OSH_GATEWAY:-$ROOT/build/peers/openshell-mini-gateway}"
export OSH_SUPERVISOR="${OSH_SUPERVISOR:-$ROOT/build/peers/openshell-mini-supervisor}"
OSH_DELAY_RELAY="${OSH_DELAY_RELAY:-$ROOT/build/vm-tests/bench/osh-delay-relay}"
export OSH_VERBOSE="${OSH_VERBOSE:-0}"
for b in "$OSH_TUNNEL" "$OSH_GATEWAY" "$OSH_SUPERVISOR" "$OSH_DELAY_RELAY"; do
  [[ -x $b ]] || { echo "delay_bench.sh: $b is missing: build first (scripts/build.sh)" >&2; exit 1; }
done

export OSH_EXT="${OSH_EXT:-1}"  # as bench.sh: the gateway offers the extensions
source "$HERE/../lib.sh"
trap osh_cleanup EXIT
T_START=$SECONDS

osh_topology
osh_sandbox_services 1
osh_gateway
osh_supervisor
say "sandbox: benchtool serve on [::]:9100 (test stream of $MIB MiB)"
osh_spawn "$NS_SBX" benchsrv "$PY" "$HERE/benchtool.py" serve --port 9100 --stream-bytes $((MIB << 20))
wait_until 60 port_listens "$NS_SBX" 9100
RELAY_PORT=17671  # the client's gateway endpoint: the relay

stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# run NAME LABEL HOST PORT TUNNEL_PID RTT
run() {
  local watch="{\"tunnel\": [$5], \"gateway\": [$PID_gateway], \"relay\": [$PID_relay]}"
  ip netns exec "$NS_CLIENT" "$PY" "$HERE/delaytool.py" bulk --name "$1" --label "$2" --host "$3" \
    --port "$4" --rtt-ms "$6" --out "$OUT/run-$6-$1.json" --watch "$watch" --bytes $((MIB << 20)) \
    --max-secs "$MAX_SECS" --reps "$REPS" --dirs "$DIRS"
}

# relay_all_closed: every connection the relay opened has been closed (its
# last line for each carries the peak bytes held).
relay_all_closed() { (($(grep -c ': open' "$OSH_WORK/relay.log") == $(grep -c ': closed' "$OSH_WORK/relay.log"))); }

# relay_peaks NAME RTT: after a path's process stopped, records the most bytes
# the relay held in the download direction over that path's connections (a
# lower bound on the flow-control window the gateway was granted; about that
# window when the window, not CPU, limited the transfer) into its run JSON.
relay_peaks() {
  wait_until 10 relay_all_closed || true
  local down
  down="$(sed -n "$((RELAY_SEEN + 1)),\$ s/.*peak held down \([0-9]*\) KiB.*/\1/p" "$OSH_WORK/relay.log" | sort -n | tail -n1)"
  RELAY_SEEN="$(wc -l <"$OSH_WORK/relay.log")"
  say "path $1 +$2 ms: the relay held at most ${down:-?} KiB in the download direction"
  "$PY" - "$OUT/run-$2-$1.json" "${down:-0}" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    r = json.load(f)
r["relay_peak_down_kib"] = int(sys.argv[2])
with open(sys.argv[1], "w") as f:
    json.dump(r, f, indent=1)
PY
}

for rtt in $RTTS; do
  say "relay: osh-delay-relay $OSH_GW_ADDR:$RELAY_PORT -> 127.0.0.1:$OSH_GW_PORT, RTT +$rtt ms ($(cut -d' ' -f1-3 /proc/loadavg) load)"
  osh_spawn "$NS_GW" relay "$OSH_DELAY_RELAY" --listen "$OSH_GW_ADDR:$RELAY_PORT" \
    --connect "127.0.0.1:$OSH_GW_PORT" --rtt-ms "$rtt"
  wait_until 10 port_listens "$NS_GW" "$RELAY_PORT"
  RELAY_SEEN=0
  for p in $PATHS; do
    case "$p" in
      C)
        # lib.sh's forward_start and osh_tunnel use http://$OSH_GW_ADDR:$OSH_GW_PORT:
        # the relay's port here.
        OSH_GW_PORT=$RELAY_PORT forward_start forward 0 demo:9100
        run C "forward (no TUN)" 127.0.0.1 "$FWD_PORT" "$PID_forward" "$rtt"
        stop_pid "$PID_forward"
        relay_peaks C "$rtt"
        ;;
      D)
        OSH_GW_PORT=$RELAY_PORT osh_tunnel
        run D "tunnel (IPv4)" "$(sandbox_v4)" 9100 "$PID_tunnel" "$rtt"
        stop_tunnel
        relay_peaks D "$rtt"
        ;;
      *) fail "unknown path $p (C or D)" ;;
    esac
  done
  stop_pid "$PID_relay"
done

say "report ($((SECONDS - T_START)) s)"
EXTRA="$("$PY" -c 'import json,sys; print(json.dumps({"git": sys.argv[1], "tunnel": sys.argv[2]}))' \
  "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)" "$OSH_TUNNEL")"
rc=0
"$PY" "$HERE/delaytool.py" report "$OUT"/run-*.json --markdown "$OUT/delay.md" --json "$OUT/delay.json" \
  --extra "$EXTRA" || rc=$?
say "results: $OUT/delay.md, $OUT/delay.json (total $((SECONDS - T_START)) s)"
((rc == 0)) || say "FAILED: some transfer was not intact or failed (see above)"
exit "$rc"
