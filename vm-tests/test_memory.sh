#!/usr/bin/env bash
# Bounded memory per connection, given back on idle (issue 15, items 1-2).
#
#   client ns                          gw ns                 sbx ns
#   tcptool read-many --rate 0 ─► tunnel ─► mini-gateway ─► mini-supervisor ─► tcptool source (256 MiB each)
#
# Part 1: 20 downloads whose clients stop reading (a paused browser download,
# a stuck pipe): each holds what the tunnel, the gateway and gRPC's buffers
# let through before back-pressure stops the sender. Part 2: 60 slow
# downloads (each client reads 16 KiB/s). For each part and each process (tunnel, mini-gateway,
# mini-supervisor) the test prints RSS before, during (once growth has
# levelled off) and after the clients closed, and the growth per connection:
# (RSS during - RSS before) / connections.
#
# Asserted (main build; the ASan build prints only):
#   - no connection is reset or ends early;
#   - tunnel, mini-gateway and mini-supervisor: within 30 s (scaled to the
#     load by lib.sh's wait_until; the measured time is printed) of the load
#     ending, RSS is back within 8 MiB of its level before the load (the
#     idle trimmer, common/idle_trim.h; before it, 30 s after 20 stalled
#     downloads closed the tunnel still held +314 MiB, the gateway +461 MiB).
#   - with the h2 transport (the default): the tunnel's RSS grows at most
#     1 MiB per connection (the issue's bound), and its h2 channel holds at
#     most 512 KiB unread per connection (`status`: h2_bytes_buffered; a
#     window grows only while its reader keeps up, and never past what it
#     took in all). With
#     OSH_STREAM_FLAGS="--forward-transport grpc" both are printed only:
#     gRPC 1.51 gives every stream >= 4 MiB (docs/ARCHITECTURE.md "Memory
#     bounds"); OSH_MEM_TUNNEL_FLAGS="--max-buffer-mib 256" measures its quota.
# Printed, not asserted: the mini-gateway's and the mini-supervisor's growth
# per connection (grpc++ servers: gRPC's windows).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

MIB=$((1 << 20))
STALLED="${OSH_MEM_STALLED:-20}"
SLOW="${OSH_MEM_SLOW:-60}"
SLOW_RATE="${OSH_MEM_SLOW_RATE:-16384}"  # B/s per slow client
ISSUE_PER_CONN_KIB=1024  # the issue's bound on unread data per connection
# The streams' transport (--forward-transport; OSH_STREAM_FLAGS can pick
# grpc): with h2 (the default) the bound is asserted, with grpc only printed
# (gRPC 1.51 cannot meet it: docs/ARCHITECTURE.md "Memory bounds").
H2=1
[[ " ${OSH_STREAM_FLAGS:-} " == *" grpc "* ]] && H2=0
RETURN_KIB=$((8 * 1024))
RETURN_SECS=30
ASSERT="${OSH_MEM_ASSERT:-1}"  # 0: measure and print only
if [[ "${OSH_SANITIZED:-0}" == 1 ]]; then
  ASSERT=0  # ASan: RSS includes quarantine and shadow memory; bounds are checked in the main build
  say "sanitizer build: RSS is reported, not bounded"
fi

osh_topology
osh_sandbox_services 1
# Caps raised so that all slow downloads are open at once (the caps are
# vm_limits' subject, not this test's).
osh_gateway --max-streams-per-token 1000 --max-streams-per-sandbox 1000 \
  --max-pending-relays-per-sandbox 1000 --max-pending-relays 1000 ${OSH_MEM_GATEWAY_FLAGS:-}
osh_supervisor
sbx_tcp_server source 9005 source --bytes $((256 * MIB))
osh_tunnel --max-streams-per-sandbox 1000 --max-streams-per-token 1000 --queue-timeout-ms 60000 \
  ${OSH_MEM_TUNNEL_FLAGS:-}
V4="$(sandbox_v4)"
PROCS=(tunnel gateway supervisor)

# rss_all: "tunnel gateway supervisor" RSS, KiB.
rss_all() { echo "$(rss_kib "$PID_tunnel") $(rss_kib "$PID_gateway") $(rss_kib "$PID_supervisor")"; }

# Warm-up: one download of 32 MiB, so that "before" includes the channels,
# threads and pools every first connection (and a first full-speed
# transfer) sets up; then it is stopped.
WARM_BYTES=$((32 * MIB))
warm_done() {
  ip netns exec "$NS_CLIENT" ss -Htin "dst $V4:9005" | grep -oE 'bytes_received:[0-9]+' |
    awk -F: -v n="$WARM_BYTES" '$2 >= n { f = 1 } END { exit !f }'
}
client_tcp read --host "$V4" --port 9005 >/dev/null &
warm=$!
wait_until 20 warm_done || fail "warm-up download: less than $WARM_BYTES bytes"
say "warm-up: $WARM_BYTES bytes in ${WAIT_SECS}s"
kill "$warm" 2>/dev/null || true
wait "$warm" 2>/dev/null || true

# level_settled: samples the summed RSS of the three processes every 0.5 s
# (calls in between return 1) and succeeds once it changed by less than
# 1 MiB over the last 3 s (growth has levelled off); sets LEVEL to the
# per-process RSS of the last sample. A condition for wait_until.
level_settled() {
  osh_now_ms
  ((OSH_NOW_MS - LEVEL_LAST_MS >= 500)) || return 1
  LEVEL_LAST_MS=$OSH_NOW_MS
  read -r -a LEVEL <<<"$(rss_all)"
  local sum=$((LEVEL[0] + LEVEL[1] + LEVEL[2]))
  LEVEL_HIST+=("$sum")
  ((${#LEVEL_HIST[@]} >= 7)) || return 1
  local d=$((sum - LEVEL_HIST[${#LEVEL_HIST[@]} - 7]))
  ((d < 0)) && d=$((-d))
  ((d < 1024))
}

# wait_level SECONDS [fixed]: waits (lib.sh wait_until, load-scaled) until
# level_settled, at most SECONDS; not levelled off by then is reported, not
# a failure (LEVEL is the last sample). "fixed": SECONDS is not scaled: the
# measurement "during" must fall inside the clients' hold, whose length does
# not grow with the load (OSH_WAIT_CAP=1 pins wait_until's scale to 1).
wait_level() {
  LEVEL_HIST=() LEVEL_LAST_MS=0
  if [[ ${2:-} == fixed ]]; then
    OSH_WAIT_CAP=1 wait_until "$1" level_settled || say "  (RSS still changing after ${1}s)"
  else
    wait_until "$1" level_settled || say "  (RSS still changing after ${1}s x load scale)"
  fi
}

# returned: every process's RSS is within RETURN_KIB of its BEFORE level;
# sets AFTER. A condition for wait_until.
returned() {
  local i
  read -r -a AFTER <<<"$(rss_all)"
  for i in 0 1 2; do ((AFTER[i] - BEFORE[i] <= RETURN_KIB)) || return 1; done
}

# wait_return: waits until returned, at most RETURN_SECS scaled to the load
# (lib.sh wait_until); sets AFTER (the last sample), RETURN_S (the measured
# time) and RETURN_BOUND (RETURN_SECS as the wait scaled it).
wait_return() {
  wait_until "$RETURN_SECS" returned || true
  RETURN_S="$WAIT_SECS"
  # the bound as the wait applied it: a timeout is its full length
  local b
  b="$(osh_scaled_ms "$RETURN_SECS")"
  _osh_milli "$WAIT_SECS"
  ((_OSH_M <= b)) || b=$_OSH_M
  _osh_fmt "$b"
  RETURN_BOUND="$_OSH_F"
}

# run_load NAME COUNT RATE HOLD_SECS: COUNT downloads read at RATE B/s each
# (0 = stalled), held HOLD_SECS once all are connected; prints and checks.
run_load() {
  local name="$1" count="$2" rate="$3" hold="$4"
  # The first part's "before" precedes the process's first trim: the idle
  # trimmer leaves RSS within its 4 MiB slack of the lowest level seen
  # (common/idle_trim.h), so what the start-up and the warm-up freed stays
  # resident until the load's end triggers a trim (measured: 37 MiB flat for
  # 12 s after the warm-up, 25 MiB after the load), and that part's bound is
  # looser by as much. The second part's "before" follows that trim: its
  # bound is the strict one.
  wait_level 20
  BEFORE=("${LEVEL[@]}")
  say "$name: $count downloads read at $rate B/s; RSS before (KiB): tunnel ${BEFORE[0]}, gateway ${BEFORE[1]}, supervisor ${BEFORE[2]}"
  client_tcp read-many --host "$V4" --port 9005 --count "$count" --rate "$rate" --secs "$hold" \
    --timeout 60 >"$OSH_WORK/$name.out" 2>&1 &
  local client=$!
  wait_until 90 grep -q "reading $count" "$OSH_WORK/$name.out" || fail "$(cat "$OSH_WORK/$name.out")"
  wait_level "$((hold - 2))" fixed
  local during=("${LEVEL[@]}")
  # What the h2 channel holds unread (status: h2_bytes_buffered): a stream
  # starts with a 256 KiB window, which never grows past what its reader
  # took in all; these clients took only what lwIP's send buffer (512 KiB)
  # and their socket buffers absorbed before the reader stopped, so one
  # doubling at most: 512 KiB.
  local unread
  unread="$(n_client "$OSH_TUNNEL" status --state-dir "$OSH_STATE" --json |
    /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['counters']['streams'].get('h2_bytes_buffered', 0))")"
  say "  tunnel: h2 channel holds $((unread / 1024)) KiB unread ($((unread / 1024 / count)) KiB per connection)"
  if ((H2)); then
    check "$name: the h2 channel holds at most 512 KiB unread per connection" [ "$unread" -le $((count * 512 * 1024)) ]
  fi
  wait_rc "$client"
  echo "  $(tail -n1 "$OSH_WORK/$name.out")"
  wait_return
  local i p per
  for i in 0 1 2; do
    p="${PROCS[i]}"
    per=$(((during[i] - BEFORE[i]) / count))
    say "  $p: before ${BEFORE[i]} KiB, during ${during[i]} KiB ($(((during[i] - BEFORE[i]) / 1024)) MiB," \
      "$per KiB per connection), after ${AFTER[i]} KiB ($(((AFTER[i] - BEFORE[i]) / 1024)) MiB above before, ${RETURN_S}s after the load)"
    eval "PER_${p}=$per"
  done
  [[ $RC == 0 ]] || fail "$name: the client failed"
  check "$name: all $count connected and none ended early" \
    [ "$(jfield "$(tail -n1 "$OSH_WORK/$name.out")" ended)" = 0 ]
  say "  tunnel: $PER_tunnel KiB per connection (the issue's bound: $ISSUE_PER_CONN_KIB KiB of unread data;" \
    "$( ((PER_tunnel <= ISSUE_PER_CONN_KIB)) && echo met || echo "not met") )"
  if ((ASSERT && H2)); then
    check "$name: tunnel RSS grew at most $ISSUE_PER_CONN_KIB KiB per connection" [ "$PER_tunnel" -le "$ISSUE_PER_CONN_KIB" ]
  fi
  if ((ASSERT)); then
    for i in 0 1 2; do
      check "$name: ${PROCS[i]} RSS back within $((RETURN_KIB / 1024)) MiB of before within ${RETURN_SECS}s (x load scale: ${RETURN_BOUND}s; measured ${RETURN_S}s)" \
        [ $((AFTER[i] - BEFORE[i])) -le "$RETURN_KIB" ]
    done
  fi
}

((STALLED > 0)) && run_load stalled "$STALLED" 0 20
((SLOW > 0)) && run_load slow "$SLOW" "$SLOW_RATE" 25
say "PASS: memory"
