#!/usr/bin/env bash
# The sandbox set follows the gateway (issue 4.2) and no secret reaches a
# log (issue 4.9): a sandbox declared while the tunnel runs gets its address
# and name (how long it took is printed; the wait is load-scaled, lib.sh
# wait_until); a deleted one loses them and its live connection is reset; every log of the run (tunnel at debug level, gateway, supervisor) is
# searched for every SSH-session token the gateway minted.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

SECOND_ID=5e5e5e5e-1111-4222-8333-944455556666
osh_topology
osh_sandbox_services 1
cat >"$OSH_WORK/gw.json" <<JSON
{"sandboxes": [{"name": "demo", "id": "$OSH_SANDBOX_ID"}]}
JSON
osh_spawn "$NS_GW" gateway "$OSH_GATEWAY" --listen "0.0.0.0:$OSH_GW_PORT" --config "$OSH_WORK/gw.json" \
  --record-tokens "$OSH_WORK/tokens.txt" --token-ttl-secs 2
wait_until 10 port_listens "$NS_GW" "$OSH_GW_PORT"
osh_supervisor
sbx_tcp_server slowsource 9007 source --bytes $((100 << 20)) --rate 200000 --slow-secs 120
osh_tunnel -v
V4="$(sandbox_v4)"

say "traffic, with 2-second tokens so that several are minted (and retried after expiry)"
for i in 1 2 3; do
  check "download $i" bash -c "ip netns exec $NS_CLIENT curl -4 -sS --max-time $(osh_scaled 10) -o /dev/null http://demo.local:8080/blob"
  sleep 2.2  # let the token expire: the next connection must re-authorize transparently
done
osh_ssh root@demo.local true

say "a sandbox is declared while the tunnel runs"
cat >"$OSH_WORK/gw.json" <<JSON
{"sandboxes": [{"name": "demo", "id": "$OSH_SANDBOX_ID"}, {"name": "second", "id": "$SECOND_ID"}]}
JSON
kill -HUP "$PID_gateway"
wait_until 10 grep -q "second.local" "$OSH_HOSTS"
say "  second.local appeared after $WAIT_SECS s (printed, not asserted)"
check "second.local answers DNS" bash -c "[ -n \"\$(ip netns exec $NS_CLIENT dig +short +time=$(osh_scaled 2) @198.18.0.2 second.local A)\" ]"

say "a live connection to demo, then demo is deleted"
client_tcp read --host "$V4" --port 9007 >"$OSH_WORK/live.json" &
reader=$!
wait_until 10 bash -c "[ \$(ip netns exec $NS_CLIENT ss -Htn state established dst $V4 | wc -l) -ge 1 ]"
cat >"$OSH_WORK/gw.json" <<JSON
{"sandboxes": [{"name": "second", "id": "$SECOND_ID"}]}
JSON
kill -HUP "$PID_gateway"
wait_until 10 bash -c "! grep -q demo.local '$OSH_HOSTS'"
say "  demo.local disappeared after $WAIT_SECS s (printed, not asserted)"
wait "$reader" || true
cat "$OSH_WORK/live.json"
check "the live connection was reset" [ "$(jfield "$(cat "$OSH_WORK/live.json")" error)" = ECONNRESET ]
check "demo.local is NXDOMAIN now" bash -c "ip netns exec $NS_CLIENT dig +time=$(osh_scaled 2) @198.18.0.2 demo.local A | grep -q NXDOMAIN"

stop_tunnel
check "retries after token expiry were counted" [ "$(tunnel_counter open_retries)" -ge 1 ]
say "no token in any log"
ntok=$(wc -l <"$OSH_WORK/tokens.txt")
check "the gateway minted tokens ($ntok)" [ "$ntok" -ge 2 ]
leaks=0
while read -r tok; do
  if grep -rlF "$tok" "$OSH_WORK"/*.log "$OSH_STATE" 2>/dev/null; then leaks=$((leaks + 1)); fi
done <"$OSH_WORK/tokens.txt"
check "no token appears in any log or state file" [ "$leaks" -eq 0 ]
say "PASS: sandbox set and secrets"
