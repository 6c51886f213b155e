#!/usr/bin/env bash
# The sandbox list follows ListSandboxes' pages (issue 12.1, 12.4): the
# mini-gateway declares demo plus 150 generated sandboxes (sb-000 ... sb-149,
# --generate-sandboxes); `status --json` shows all 151 with both addresses,
# every address distinct, and the last one (sb-149, last by name in 0.1 and
# by declaration in 0.0) resolves through the hosts file to the address
# status shows. The tunnel asks for pages of 1000 (the gateway's maximum), so
# 151 fit in one page: then 1000 more (pg-000 ... pg-999) are declared
# (SIGHUP re-reads --config): 1151 sandboxes take two pages, and every one of
# them, those of the second page included, gets its addresses and name.
# demo (the only one with a supervisor) stays reachable throughout.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

osh_topology
osh_sandbox_services 1
echo '{}' >"$OSH_WORK/gw.json"
osh_gateway --generate-sandboxes sb:150 --config "$OSH_WORK/gw.json"
osh_supervisor
osh_tunnel

# listing: "<name> <ipv4> <ipv6>" per sandbox into $OSH_WORK/listing, from
# `status --json`. KNOWN PRODUCT BUG (see STATUS_BUG below): `status` reads
# the control socket's answer into at most 4 KiB (cli/control.cc read_line),
# so with many sandboxes it fails ("no answer on .../control.sock"); the
# listing then comes from the state file (every sandbox's addresses), the
# rest of the test goes on, and the test fails at the end.
STATUS_BUG=""
listing() {
  if ip netns exec "$NS_CLIENT" "$OSH_TUNNEL" status --state-dir "$OSH_STATE" --json \
    >"$OSH_WORK/status.json" 2>"$OSH_WORK/status.err"; then
    /usr/bin/python3 -c '
import json, sys
for s in json.load(open(sys.argv[1]))["sandboxes"]:
    print(s["name"], s.get("ipv4") or "-", s.get("ipv6") or "-")' "$OSH_WORK/status.json" >"$OSH_WORK/listing"
  else
    STATUS_BUG="status --json failed with $1 sandboxes: $(cat "$OSH_WORK/status.err")"
    echo "  KNOWN PRODUCT BUG: $STATUS_BUG (listing from state.json instead)"
    /usr/bin/python3 -c '
import json, sys
for r in json.load(open(sys.argv[1]))["sandboxes"].values():
    print(r["name"], r.get("v4") or "-", r.get("v6") or "-")' "$OSH_STATE/state.json" >"$OSH_WORK/listing"
  fi
}
listing_has() { listing "$1" && [ "$(wc -l <"$OSH_WORK/listing")" -eq "$1" ]; }
# check_listing N: N sandboxes, names unique, each with both addresses, all distinct.
check_listing() {
  listing "$1"
  /usr/bin/python3 - "$OSH_WORK/listing" "$1" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
n = int(sys.argv[2])
assert len(rows) == n, f"{len(rows)} sandboxes listed, want {n}"
assert len({r[0] for r in rows}) == n, "a sandbox listed twice"
missing = [r[0] for r in rows if "-" in r[1:]]
assert not missing, f"without addresses: {missing[:5]}"
assert len({r[1] for r in rows}) == n and len({r[2] for r in rows}) == n, "an address used twice"
PY
}
# resolves NAME: the client's hosts file maps NAME.local to the addresses status shows.
resolves() {
  local name="$1" v4 v6
  read -r _ v4 v6 < <(awk -v n="$name" '$1 == n' "$OSH_WORK/listing")
  [[ -n $v4 ]] || fail "$name is not in status"
  n_client getent ahosts "$name.local" >"$OSH_WORK/ahosts"
  grep -q "^$v4 " "$OSH_WORK/ahosts" && grep -q "^$v6 " "$OSH_WORK/ahosts"
}

say "151 sandboxes (demo + sb-000 ... sb-149)"
check "the tunnel lists all 151, each with its own IPv4 and IPv6 address" check_listing 151
for name in sb-000 sb-149; do
  check "$name.local resolves to its addresses" resolves "$name"
done
check "every sandbox has its hosts entries ($(grep -c '\.local$' "$OSH_HOSTS") lines)" \
  [ "$(grep -c '[[:space:]]sb-[0-9]*\.local$' "$OSH_HOSTS")" -eq 300 ]
check "demo answers through the tunnel" \
  bash -c "ip netns exec $NS_CLIENT curl -4 -sS --max-time $(osh_scaled 10) -o /dev/null http://demo.local:8080/blob"

say "1000 more (pg-000 ... pg-999): 1151 sandboxes, two pages of 1000"
echo '{"generate_sandboxes": [{"prefix": "pg", "count": 1000}]}' >"$OSH_WORK/gw.json"
kill -HUP "$PID_gateway"
wait_until 15 grep -q "SIGHUP: reloaded, 1151 sandboxes" "$OSH_WORK/gateway.log"
t0=$SECONDS
wait_until 30 listing_has 1151
say "  1151 listed $((SECONDS - t0)) s after the reload"
check "the tunnel lists all 1151, each with its own addresses" check_listing 1151
for name in pg-000 pg-999 sb-000 sb-149; do
  check "$name.local resolves to its addresses" resolves "$name"
done
check "demo still answers through the tunnel" \
  bash -c "ip netns exec $NS_CLIENT curl -4 -sS --max-time $(osh_scaled 10) -o /dev/null http://demo.local:8080/blob"
stop_tunnel
check "the hosts block is removed on exit" bash -c "! grep -q openshell-tunnel '$OSH_HOSTS'"
[[ -z $STATUS_BUG ]] || fail "KNOWN PRODUCT BUG: $STATUS_BUG"
say "PASS: paging (protocol $OSH_PROTOCOL)"
