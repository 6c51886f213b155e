#!/usr/bin/env bash
# Local isolation (issue 14 items 2 and 5, tun/firewall.h): only this
# machine's own processes, and of those only the allowed uids, reach the
# tunnel.
#   1. A fourth namespace routed through the client namespace (veth,
#      ip_forward on, as Docker forwards its containers): its SYNs to a
#      sandbox and its DNS queries to the tunnel's responder never reach the
#      tunnel (no connection, no stream, no DNS query counted; the firewall
#      counts the drops), while the client itself still connects and resolves.
#   2. A uid outside --allow-users is refused (reset; its DNS query never
#      answered) while an allowed uid connects; past
#      --max-connections-per-user the allowed uid's next connection is reset
#      and `status` counts it; an unknown user name is exit 1.
#   3. `status` works for the allowed non-root uid, is refused for another
#      uid, and `down` as the allowed uid is refused (the tunnel runs on).
#   4. The table is gone after `up` exits, and after `down` cleans up a
#      tunnel killed with SIGKILL.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
NS_FWD="osh-f-$OSH_TAG"
isolation_cleanup() {
  local rc=$?
  set +e
  ip netns del "$NS_FWD" 2>/dev/null
  (exit "$rc")  # osh_cleanup reads the test's status from $?
  osh_cleanup
}
trap isolation_cleanup EXIT

ALLOWED_UID=64123  # a uid with no passwd entry: --allow-users takes numbers
OTHER_UID=65534    # nobody
as_uid() { local u="$1"; shift; n_client setpriv --reuid "$u" --regid "$u" --clear-groups "$@"; }
status_json() { n_client "$OSH_TUNNEL" status --json --state-dir "$OSH_STATE"; }
# jpath JSON a.b.c: a nested field ("" when absent).
jpath() {
  /usr/bin/python3 -c '
import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    v = v.get(k, "") if isinstance(v, dict) else ""
print(v)' "$1" "$2"
}
fw_tables() { n_client nft list tables 2>&1 | grep -c openshell_tunnel || true; }
# A DNS query for demo.local to the tunnel's responder; prints the answer ("" = none).
dns_query() { "$@" dig +short +time=2 +tries=1 @198.18.0.2 "$OSH_SANDBOX_NAME.local" A 2>/dev/null | grep -E '^[0-9.]+$' || true; }

osh_topology
osh_sandbox_services 1
osh_gateway
osh_supervisor
sbx_tcp_server sink 9006 discard

say "unknown user in --allow-users: exit 1, nothing set up"
rc=0
n_client "$OSH_TUNNEL" up --gateway-endpoint "http://$OSH_GW_ADDR:$OSH_GW_PORT" --state-dir "$OSH_WORK/x" \
  --allow-users "root,osh-no-such-user-$OSH_TAG" >"$OSH_WORK/unknown.out" 2>&1 || rc=$?
cat "$OSH_WORK/unknown.out"
check "exit 1 (got $rc)" [ "$rc" -eq 1 ]
check "the error names the user" grep -q "osh-no-such-user-$OSH_TAG" "$OSH_WORK/unknown.out"

say "a namespace forwarded through the client namespace ($NS_FWD, 203.0.113.2)"
osh_routed_namespace "$NS_FWD"

osh_tunnel --allow-users "$ALLOWED_UID" --max-connections-per-user 3
V4="$(sandbox_v4)"
check "the firewall table is installed" [ "$(fw_tables)" -eq 1 ]
check "the forwarded namespace routes to $V4 through the client namespace" \
  bash -c "ip -n $NS_FWD route get $V4 | grep -q 'via 203.0.113.1'"

out="$(ip netns exec "$NS_FWD" /usr/bin/python3 "$OSH_TCPTOOL" connect --host "$V4" --port 8080 --timeout 3 || true)"
echo "  forwarded SYN: $out"
check "the forwarded connection did not connect" [ "$(jfield "$out" connected)" != true ]
ans="$(dns_query ip netns exec "$NS_FWD")"
check "the forwarded DNS query got no answer ('$ans')" [ -z "$ans" ]
J="$(status_json)"
echo "  firewall: $(jpath "$J" firewall)"
check "no connection reached the tunnel ($(jpath "$J" counters.connections_opened))" \
  [ "$(jpath "$J" counters.connections_opened)" -eq 0 ]
check "no stream opened ($(jpath "$J" counters.streams.opened))" [ "$(jpath "$J" counters.streams.opened)" -eq 0 ]
check "no DNS query counted ($(jpath "$J" counters.dns_queries))" [ "$(jpath "$J" counters.dns_queries)" -eq 0 ]
check "forwarded packets dropped and counted" [ "$(jpath "$J" firewall.forward_drops)" -ge 2 ]

say "the client itself (root) still connects and resolves"
ans="$(dns_query n_client)"
check "DNS answer for root: $ans" [ "$ans" = "$V4" ]
out="$(client_tcp connect --host "$V4" --port 8080)"
check "root connects ($out)" [ "$(jfield "$out" connected)" = true ]

say "uid $OTHER_UID (not allowed) is refused; uid $ALLOWED_UID (allowed) connects"
out="$(as_uid "$OTHER_UID" /usr/bin/python3 "$OSH_TCPTOOL" connect --host "$V4" --port 8080 --timeout "$(osh_scaled 10)" || true)"
echo "  uid $OTHER_UID: $out"
check "refused with a reset (ECONNREFUSED)" [ "$(jfield "$out" error)" = ECONNREFUSED ]
out="$(as_uid "$OTHER_UID" /usr/bin/python3 "$OSH_TCPTOOL" connect --host "$(sandbox_v6)" --port 8080 --timeout "$(osh_scaled 10)" || true)"
echo "  uid $OTHER_UID, IPv6: $out"
check "refused over IPv6 too (ECONNREFUSED)" [ "$(jfield "$out" error)" = ECONNREFUSED ]
q0="$(jpath "$(status_json)" counters.dns_queries)"
ans="$(dns_query as_uid "$OTHER_UID")"
check "its DNS query got no answer ('$ans')" [ -z "$ans" ]
check "its DNS query never reached the responder" [ "$(jpath "$(status_json)" counters.dns_queries)" -eq "$q0" ]
out="$(as_uid "$ALLOWED_UID" /usr/bin/python3 "$OSH_TCPTOOL" connect --host "$V4" --port 8080 --timeout "$(osh_scaled 10)")"
check "uid $ALLOWED_UID connects ($out)" [ "$(jfield "$out" connected)" = true ]
out="$(as_uid "$ALLOWED_UID" /usr/bin/python3 "$OSH_TCPTOOL" connect --host "$(sandbox_v6)" --port 8080 --timeout "$(osh_scaled 10)")"
check "uid $ALLOWED_UID connects over IPv6 ($out)" [ "$(jfield "$out" connected)" = true ]
check "uid $ALLOWED_UID resolves" [ "$(dns_query as_uid "$ALLOWED_UID")" = "$V4" ]
J="$(status_json)"
check "refusals counted ($(jpath "$J" firewall.refused_uid))" [ "$(jpath "$J" firewall.refused_uid)" -ge 3 ]

say "per-user cap 3: uid $ALLOWED_UID holds 3 connections, the 4th is reset and counted"
as_uid "$ALLOWED_UID" /usr/bin/python3 "$OSH_TCPTOOL" hold-many --host "$V4" --port 9006 --count 3 \
  --secs "$(osh_scaled 20)" --timeout "$(osh_scaled 15)" >"$OSH_WORK/holders.out" 2>&1 &
holders=$!
wait_until 15 grep -q "holding 3" "$OSH_WORK/holders.out"
out="$(as_uid "$ALLOWED_UID" /usr/bin/python3 "$OSH_TCPTOOL" connect --host "$V4" --port 9006 --timeout "$(osh_scaled 10)" || true)"
echo "  4th: $out"
check "the 4th connection is reset (ECONNREFUSED)" [ "$(jfield "$out" error)" = ECONNREFUSED ]
out="$(client_tcp connect --host "$V4" --port 9006)"
check "root (its own cap) still connects ($out)" [ "$(jfield "$out" connected)" = true ]
J="$(status_json)"
check "cap hits counted in status --json ($(jpath "$J" firewall.uid_cap_hits))" [ "$(jpath "$J" firewall.uid_cap_hits)" -ge 1 ]
check "and in the text status" bash -c "ip netns exec $NS_CLIENT $OSH_TUNNEL status --state-dir $OSH_STATE | \
  grep -Eq '[1-9][0-9]* connections reset past the per-user cap'"
kill "$holders" 2>/dev/null || true
wait "$holders" 2>/dev/null || true

say "status as the allowed uid works (read-only); down as that uid and status as another are refused"
chmod 0711 "$OSH_WORK"  # this run's work dir (mktemp: 0700) holds the state dir
out="$(as_uid "$ALLOWED_UID" "$OSH_TUNNEL" status --state-dir "$OSH_STATE")"
echo "$out" | head -n 3
check "status as uid $ALLOWED_UID shows the tunnel" grep -q "openshell-tunnel: up" <<<"$out"
rc=0
out="$(as_uid "$ALLOWED_UID" "$OSH_TUNNEL" down --state-dir "$OSH_STATE" 2>&1)" || rc=$?
echo "  down as uid $ALLOWED_UID: $out"
check "down refused (exit $rc)" [ "$rc" -ne 0 ]
check "the refusal says it needs root" grep -q "needs root" <<<"$out"
rc=0
out="$(as_uid "$OTHER_UID" "$OSH_TUNNEL" status --state-dir "$OSH_STATE" 2>&1)" || rc=$?
echo "  status as uid $OTHER_UID: $out"
check "status refused for uid $OTHER_UID (exit $rc)" [ "$rc" -eq 1 ]
check "the refusal names the uid" grep -q "uid $OTHER_UID is not allowed" <<<"$out"
check "the tunnel still runs" kill -0 "$PID_tunnel"

say "the table goes with the tunnel"
stop_tunnel
check "no firewall table after up exited" [ "$(fw_tables)" -eq 0 ]

say "a tunnel killed with SIGKILL leaves its table; down removes it"
osh_tunnel
check "table installed" [ "$(fw_tables)" -eq 1 ]
kill -KILL "$PID_tunnel"
wait "$PID_tunnel" 2>/dev/null || true
check "table left behind by the killed tunnel" [ "$(fw_tables)" -eq 1 ]
n_client "$OSH_TUNNEL" down --state-dir "$OSH_STATE"
check "down removed the stale table" [ "$(fw_tables)" -eq 0 ]
say "PASS: isolation"
