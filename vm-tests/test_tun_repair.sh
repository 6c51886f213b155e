#!/usr/bin/env bash
# The tunnel watches its interface (issue 15.4). In the client namespace,
# something else on the machine:
#   1. flaps the link (`ip link set osh0 down; ip link set osh0 up`: the
#      kernel drops the IPv6 address and route for good);
#   2. deletes the IPv4 address 198.18.0.1/16;
#   3. deletes the IPv6 prefix route fd00:6f73:6800::/64;
# after each, IPv4 and IPv6 downloads from the sandbox work again (the time
# until they do is printed), the tunnel logs one repair line per change and
# `status` counts tun_repairs (3). Then
#   4. `ip link del osh0`: the tunnel logs an error naming the interface,
#      tears down (hosts block, control socket) and exits with code 5.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

TUN=osh0
osh_topology
osh_sandbox_services 1
osh_gateway
osh_supervisor
osh_tunnel

# fetch FAMILY: one download of /blob over IPv4 or IPv6, intact.
fetch() {
  local sum
  sum="$(ip netns exec "$NS_CLIENT" curl "-$1" -sS --max-time 5 "http://demo.local:8080/blob" 2>/dev/null |
    sha256sum | cut -d' ' -f1)"
  [[ $sum == "$OSH_BLOB_SHA" ]]
}
both_families_work() { fetch 4 && fetch 6; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
repair_lines() { grep -c "by something else on the machine; repaired" "$OSH_WORK/tunnel.log" || true; }

# after_change WHAT: waits (generously) until both families work again and
# prints how long that took since T0, the moment of the change.
after_change() {
  wait_until 20 both_families_work || fail "after $1, IPv4 and IPv6 connections to the sandbox do not work again"
  echo "  ok: after $1, IPv4 and IPv6 downloads work again $(($(now_ms) - T0)) ms after the change"
  wait_until 10 [ "$(repair_lines)" -ge "$2" ] || true
  grep "by something else on the machine; repaired" "$OSH_WORK/tunnel.log" | tail -n1 | sed 's/^/  log: /'
  check "one repair line per change ($(repair_lines) after $2 changes)" [ "$(repair_lines)" -eq "$2" ]
}

say "before: IPv4 and IPv6 downloads work"
check "both families" both_families_work
n_client ip addr show dev "$TUN"

say "1. link flap: ip link set $TUN down; ip link set $TUN up"
T0=$(now_ms)
ip -n "$NS_CLIENT" -batch - <<EOF
link set $TUN down
link set $TUN up
EOF
after_change "a link flap" 1
n_client ip -6 addr show dev "$TUN"

say "2. the IPv4 address goes: ip addr del 198.18.0.1/16 dev $TUN"
T0=$(now_ms)
n_client ip addr del 198.18.0.1/16 dev "$TUN"
after_change "the IPv4 address was deleted" 2
check "198.18.0.1/16 is back on $TUN" bash -c "ip -n '$NS_CLIENT' -4 addr show dev $TUN | grep -q '198.18.0.1/16'"

say "3. the IPv6 route goes: ip -6 route del fd00:6f73:6800::/64 dev $TUN"
T0=$(now_ms)
n_client ip -6 route del fd00:6f73:6800::/64 dev "$TUN"
after_change "the IPv6 route was deleted" 3
n_client ip -6 route show dev "$TUN"

say "status counts the repairs"
n_client "$OSH_TUNNEL" status --state-dir "$OSH_STATE" --json >"$OSH_WORK/status.json"
repairs="$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["counters"]["tun_repairs"])' \
  "$OSH_WORK/status.json")"
check "status: tun_repairs = $repairs (>= 3)" [ "$repairs" -ge 3 ]
n_client "$OSH_TUNNEL" status --state-dir "$OSH_STATE" >"$OSH_WORK/status.txt"
check "status text names the repairs" grep -q "^TUN repairs: $repairs" "$OSH_WORK/status.txt"

say "4. the interface disappears: ip link del $TUN"
n_client ip link del "$TUN"
wait_until 30 bash -c "! kill -0 $PID_tunnel 2>/dev/null" || fail "the tunnel still runs after its interface was deleted"
wait_rc "$PID_tunnel"
grep -E "interface $TUN|$TUN .*deleted" "$OSH_WORK/tunnel.log" | sed 's/^/  log: /'
check "exit code 5 (got $RC)" [ "$RC" -eq 5 ]
check "the log names the interface and says it was deleted" \
  grep -q "interface $TUN was deleted by something else on the machine" "$OSH_WORK/tunnel.log"
check "the hosts block is gone" bash -c "! grep -q 'demo.local' '$OSH_HOSTS'"
check "the control socket is gone" [ ! -e "$OSH_STATE/control.sock" ]
rc=0
n_client "$OSH_TUNNEL" status --state-dir "$OSH_STATE" >/dev/null 2>&1 || rc=$?
check "status: not running (exit 4, got $rc)" [ "$rc" -eq 4 ]
check "no interface $TUN left" bash -c "! ip -n '$NS_CLIENT' link show $TUN >/dev/null 2>&1"
say "PASS: tun repair"
