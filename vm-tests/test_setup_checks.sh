#!/usr/bin/env bash
# `up` refuses a setup that cannot work and adapts to one that can (issue
# 15.5). The topology of lib.sh, plus, in the client namespace only:
#
#   client ns                                   gw ns
#   default via 192.0.2.2 ───────────────────── 198.18.77.7/32 on lo (a gateway
#   dum0 (a veth): 198.18.5.1/24, then          address inside the tunnel's
#         fd00:6f73:6800::abcd/64               default 198.18.0.0/16)
#   route 198.18.64.0/18 via 192.0.2.2
#   osh0, osh1: stale persistent TUNs with the tunnel's own addresses
#   net.ipv6.conf.all.disable_ipv6 = 1 (last)
#
# Each refusal must be exit 1 with one "error:" line naming both sides, and
# leave no TUN behind:
#   - the gateway at 198.18.77.7 (a literal, then a name that resolves to
#     192.0.2.2 and 198.18.77.7: every address counts);
#   - an address on another interface inside --prefix4; a route inside it;
#     the same for --prefix6;
# and the tunnel adapts:
#   - stale TUNs of its own (osh0, osh1) are removed, the tunnel comes up;
#   - the gateway's name re-resolving into the prefix while the tunnel runs
#     is logged as an error and shown in `status` (and cleared when it
#     resolves elsewhere again);
#   - with IPv6 disabled it runs IPv4-only with one warning; IPv4 works.
# OSH_CASES="gw_literal stale ..." runs only those cases (default: all).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

osh_topology
osh_sandbox_services 1
osh_gateway
osh_supervisor
OSH_STATE="$OSH_WORK/state"
OSH_SSH_CONFIG="$OSH_WORK/ssh/user_config"
# A timeout for `up` runs that must end at once (scaled to the load when lib.sh can).
UP_TIMEOUT=20
declare -F osh_scaled >/dev/null && UP_TIMEOUT="$(osh_scaled 20)"

# up_refused NAME WANT1 WANT2 [up flags...]: `up` exits 1 with exactly one
# "error:" line that names WANT1 and WANT2, prints no "Tunnel is up", and
# leaves no osh0 behind.
up_refused() {
  local name="$1" want1="$2" want2="$3" rc=0
  shift 3
  n_client timeout "$UP_TIMEOUT" "$OSH_TUNNEL" up --hosts-file "$OSH_HOSTS" --state-dir "$OSH_STATE" \
    --ssh-config "$OSH_SSH_CONFIG" "$@" >"$OSH_WORK/$name.log" 2>&1 || rc=$?
  sed 's/^/    | /' "$OSH_WORK/$name.log"
  check "$name: exit code 1 (got $rc)" [ "$rc" = 1 ]
  check "$name: exactly one error line" [ "$(grep -c '^error:' "$OSH_WORK/$name.log")" = 1 ]
  check "$name: it names $want1 and $want2" \
    bash -c 'grep "^error:" "$1" | grep -F -- "$2" | grep -qF -- "$3"' _ "$OSH_WORK/$name.log" "$want1" "$want2"
  check "$name: no 'Tunnel is up'" bash -c '! grep -q "Tunnel is up" "$1"' _ "$OSH_WORK/$name.log"
  check "$name: no TUN left" bash -c '! ip -n "$1" link show osh0 >/dev/null 2>&1' _ "$NS_CLIENT"
}

# want CASE: true when CASE is to run.
want() { [[ -z ${OSH_CASES:-} || " $OSH_CASES " == *" $1 "* ]]; }

say "setup: a gateway address inside 198.18.0.0/16, reachable from the client by the default route"
ip -n "$NS_GW" addr add 198.18.77.7/32 dev lo
ip -n "$NS_CLIENT" route add default via "$OSH_GW_ADDR"
check "the gateway answers on 198.18.77.7 before any tunnel" \
  n_client timeout 5 bash -c 'exec 3<>/dev/tcp/198.18.77.7/17670'

say "case: gateway at 198.18.77.7 with the default --prefix4"
want gw_literal && up_refused gw_literal 198.18.77.7 198.18.0.0/16 --gateway-endpoint http://198.18.77.7:17670

say "case: a gateway name that resolves to 192.0.2.2 and 198.18.77.7"
printf '192.0.2.2\tgw.test\n198.18.77.7\tgw.test\n' >>"$OSH_HOSTS"
want gw_name && up_refused gw_name 198.18.77.7 198.18.0.0/16 --gateway-endpoint http://gw.test:17670

GW="http://$OSH_GW_ADDR:$OSH_GW_PORT"
say "case: an address inside --prefix4 on another interface"
ip -n "$NS_CLIENT" link add dum0 type veth peer name dum0p
ip -n "$NS_CLIENT" link set dum0 up
ip -n "$NS_CLIENT" addr add 198.18.5.1/24 dev dum0
want addr4 && up_refused addr4 "198.18.5.1/24 on dum0" 198.18.0.0/16 --gateway-endpoint "$GW"
ip -n "$NS_CLIENT" addr del 198.18.5.1/24 dev dum0

say "case: a route inside --prefix4"
ip -n "$NS_CLIENT" route add 198.18.64.0/18 via "$OSH_GW_ADDR"
want route4 && up_refused route4 198.18.64.0/18 198.18.0.0/16 --gateway-endpoint "$GW"
ip -n "$NS_CLIENT" route del 198.18.64.0/18

say "case: an address inside --prefix6 on another interface"
ip -n "$NS_CLIENT" -6 addr add fd00:6f73:6800::abcd/64 dev dum0 nodad
want addr6 && up_refused addr6 "fd00:6f73:6800::abcd/64 on dum0" fd00:6f73:6800::/64 --gateway-endpoint "$GW"
ip -n "$NS_CLIENT" link del dum0

if want stale; then
say "case: stale TUNs of the tunnel's own (osh0, osh1, persistent, no process) are removed"
for t in osh0 osh1; do
  ip -n "$NS_CLIENT" tuntap add dev "$t" mode tun
  ip -n "$NS_CLIENT" addr add 198.18.0.1/16 dev "$t"
  ip -n "$NS_CLIENT" -6 addr add fd00:6f73:6800::1/64 dev "$t" nodad
  ip -n "$NS_CLIENT" link set "$t" up
done
osh_tunnel
check "it says it removed osh0" grep -q "removed stale interface osh0" "$OSH_WORK/tunnel.log"
check "osh1 is gone" bash -c '! ip -n "$1" link show osh1 >/dev/null 2>&1' _ "$NS_CLIENT"
check "osh0 is the tunnel's own now (not persistent)" \
  bash -c '! ip -n "$1" -d link show osh0 | grep -q "persist on"' _ "$NS_CLIENT"
out="$(osh_ssh root@demo.local 'echo tunnel-ok')"
check "ssh through the tunnel works" [ "$out" = tunnel-ok ]
stop_tunnel
check "osh0 is gone after the stop" bash -c '! ip -n "$1" link show osh0 >/dev/null 2>&1' _ "$NS_CLIENT"
fi

if want resolve; then
say "case: the gateway's name re-resolves into the prefix while the tunnel runs"
# The tunnel's names go to another file here, so that the namespace's hosts
# file (the tunnel's /etc/hosts) keeps its inode and is edited in place.
printf '127.0.0.1\tlocalhost\n192.0.2.2\tgw.test\n' >"$OSH_HOSTS"
# GRPC_DNS_RESOLVER=native: gRPC resolves through getaddrinfo (the hosts
# file) like the tunnel's own check, not through c-ares and the (here
# unreachable) DNS servers of /etc/resolv.conf.
osh_spawn "$NS_CLIENT" tunnel env GRPC_DNS_RESOLVER=native "$OSH_TUNNEL" up --gateway-endpoint http://gw.test:17670 --refresh-ms 500 \
  --hosts-file "$OSH_WORK/names_hosts" --state-dir "$OSH_STATE" --ssh-config "$OSH_SSH_CONFIG"
wait_until 15 grep -q "Tunnel is up" "$OSH_WORK/tunnel.log"
printf '127.0.0.1\tlocalhost\n198.18.77.7\tgw.test\n' >"$OSH_HOSTS"  # same inode
kill -STOP "$PID_gateway"  # unreachable: the name is resolved again
wait_until 30 grep -q "is inside --prefix4 198.18.0.0/16" "$OSH_WORK/tunnel.log"
grep "is inside --prefix4" "$OSH_WORK/tunnel.log" | sed 's/^/    | /'
check "logged as an error" grep -q "error.*the gateway http://gw.test:17670 (198.18.77.7) is inside" \
  "$OSH_WORK/tunnel.log"
n_client "$OSH_TUNNEL" status --state-dir "$OSH_STATE" >"$OSH_WORK/status.txt"
check "status shows the conflict" grep -q "gateway CONFLICT: the gateway http://gw.test:17670 (198.18.77.7)" \
  "$OSH_WORK/status.txt"
printf '127.0.0.1\tlocalhost\n192.0.2.2\tgw.test\n' >"$OSH_HOSTS"
kill -CONT "$PID_gateway"
wait_until 60 grep -q "resolves outside the tunnel's prefixes again" "$OSH_WORK/tunnel.log"
n_client "$OSH_TUNNEL" status --state-dir "$OSH_STATE" >"$OSH_WORK/status.txt"
check "status no longer shows it" bash -c '! grep -q CONFLICT "$1"' _ "$OSH_WORK/status.txt"
stop_tunnel
fi

if want ipv6_off; then
say "case: IPv6 disabled in the client namespace"
n_client sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6'
osh_tunnel
grep -i "ipv6" "$OSH_WORK/tunnel.log" | sed 's/^/    | /'
check "one warning about IPv6" [ "$(grep -ci 'warn.*ipv6' "$OSH_WORK/tunnel.log")" = 1 ]
check "osh0 has no IPv6 address" bash -c '[ -z "$(ip -n "$1" -6 addr show dev osh0)" ]' _ "$NS_CLIENT"
check "the hosts block has no IPv6 address" bash -c '! grep -q "^fd00.*demo.local" "$1"' _ "$OSH_HOSTS"
n_client "$OSH_TUNNEL" status --state-dir "$OSH_STATE" >"$OSH_WORK/status.txt"
check "status says IPv6 is off" grep -q "IPv6: off" "$OSH_WORK/status.txt"
sum="$(n_client curl -4 -sS --max-time 60 http://demo.local:8080/blob | sha256sum | cut -d' ' -f1)"
check "an IPv4 download through the tunnel is intact" [ "$sum" = "$OSH_BLOB_SHA" ]
stop_tunnel
fi

say "PASS: setup checks"
