#!/usr/bin/env bash
# Bounds (issue 14.5): global caps on streams and on waiting connections,
# and a deadline on every connect.
#   - --max-streams 4: four connections hold every stream; a fifth is
#     refused at once (RST), counted; once they end, connections work again.
#   - --max-pending-opens 2 (with --max-streams-per-sandbox 2): two holders
#     and two waiting connections; a fifth is refused at once, counted; the
#     waiting ones are served once the holders end.
#   - a gateway that never answers (SIGSTOP) with --open-timeout-ms 2000:
#     a connect is refused (RST) after about 2 s, not held; counted; after
#     SIGCONT connections work again.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

osh_topology
osh_sandbox_services 1
osh_gateway --max-streams-per-token 3 --max-streams-per-sandbox 20
osh_supervisor
sbx_tcp_server sink 9006 discard
V4=""

status_field() {  # status_field PYTHON-EXPR: one value of `status --json` (d = the JSON)
  ip netns exec "$NS_CLIENT" "$OSH_TUNNEL" status --state-dir "$OSH_STATE" --json |
    /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"
}
stream_field_is() { [ "$(status_field "d['counters']['streams']['$1']")" = "$2" ]; }
connects_now() { client_tcp connect --host "$V4" --port 9006 --timeout 5 | grep -q '"connected": true'; }

# check_refused_at_once: a connect to the sink is refused (ECONNREFUSED) well
# before the queue bound (10 s): the cap answers at once.
check_refused_at_once() {
  local out
  out="$(client_tcp connect --host "$V4" --port 9006 --timeout "$(osh_scaled 10)")"
  echo "  $out"
  check "refused (ECONNREFUSED)" [ "$(jfield "$out" error)" = ECONNREFUSED ]
  check_within "refused at once, not after the 10 s queue bound:" "$(jfield "$out" elapsed_s)" 5
}

# check_connects: a connect to the sink succeeds.
check_connects() {
  local out
  out="$(client_tcp connect --host "$V4" --port 9006 --timeout "$(osh_scaled 10)")"
  check "a new connection works ($(jfield "$out" error))" [ "$(jfield "$out" connected)" = true ]
}

say "--max-streams 4: four connections hold every stream, the fifth is refused at once"
osh_tunnel --max-streams 4 --max-pending-opens 2 --max-streams-per-sandbox 20
V4="$(sandbox_v4)"
client_tcp hold-many --host "$V4" --port 9006 --count 4 --secs "$(osh_scaled 6)" >"$OSH_WORK/h1.out" 2>&1 &
holders=$!
wait_until 20 grep -q "holding 4" "$OSH_WORK/h1.out"
check_refused_at_once
check "status counts it (stream_cap_refusals)" [ "$(status_field 'd["counters"]["streams"]["stream_cap_refusals"]')" -eq 1 ]
ip netns exec "$NS_CLIENT" "$OSH_TUNNEL" status --state-dir "$OSH_STATE" | grep "^bounds" || true
wait_rc "$holders"
check "the 4 holders were connected throughout (rc $RC: $(cat "$OSH_WORK/h1.out"))" [ "$RC" -eq 0 ]
wait_until 20 stream_field_is active 0
check_connects
stop_tunnel
check "exit counters: stream_cap_refusals=1" [ "$(tunnel_counter stream_cap_refusals)" -eq 1 ]

say "--max-pending-opens 2: two holders, two waiting; the fifth is refused at once"
osh_tunnel --max-pending-opens 2 --max-streams-per-sandbox 2
client_tcp hold-many --host "$V4" --port 9006 --count 2 --secs "$(osh_scaled 8)" >"$OSH_WORK/h2.out" 2>&1 &
holders=$!
wait_until 20 grep -q "holding 2" "$OSH_WORK/h2.out"
waiters=()
for i in 1 2; do
  client_tcp connect --host "$V4" --port 9006 --timeout "$(osh_scaled 30)" >"$OSH_WORK/w$i.out" 2>&1 &
  waiters+=("$!")
done
wait_until 20 stream_field_is queued 2
check_refused_at_once
check "status counts it (pending_cap_refusals)" [ "$(status_field 'd["counters"]["streams"]["pending_cap_refusals"]')" -eq 1 ]
wait_rc "$holders"
check "the 2 holders were connected throughout (rc $RC)" [ "$RC" -eq 0 ]
for i in 1 2; do
  wait "${waiters[$((i - 1))]}" || true
  out="$(cat "$OSH_WORK/w$i.out")"
  # Served once a holder ended, or refused at the 10 s queue bound on a
  # machine so loaded that the holders outlived it: either way answered.
  echo "  waiting connection $i: $out"
  check "waiting connection $i answered" [ -n "$(jfield "$out" elapsed_s)" ]
done
check_connects
stop_tunnel
check "exit counters: pending_cap_refusals=1" [ "$(tunnel_counter pending_cap_refusals)" -eq 1 ]

say "a gateway that never answers: refused at --open-timeout-ms 2000, not held"
osh_tunnel --open-timeout-ms 2000
check_connects  # a token is pooled now: the next open needs no unary call
kill -STOP "$PID_gateway"
out="$(client_tcp connect --host "$V4" --port 9006 --timeout "$(osh_scaled 20)")"
echo "  $out"
kill -CONT "$PID_gateway"
check "refused (ECONNREFUSED)" [ "$(jfield "$out" error)" = ECONNREFUSED ]
check "after the open deadline (measured $(jfield "$out" error_ms) ms)" \
  /usr/bin/python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 1900 else 1)" "$(jfield "$out" error_ms)"
check_within "refused at the deadline, not a hang:" "$(jfield "$out" elapsed_s)" 8
check "status counts it (open_timeouts)" [ "$(status_field 'd["counters"]["streams"]["open_timeouts"]')" -ge 1 ]
wait_until 20 connects_now
check_connects
stop_tunnel
check "exit counters: open_timeouts >= 1" [ "$(tunnel_counter open_timeouts)" -ge 1 ]
check "no held SYN reached the stack's backstop deadline" [ "$(tunnel_counter syn_timeouts)" -eq 0 ]
say "PASS: bounds"
