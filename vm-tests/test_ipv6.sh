#!/usr/bin/env bash
# IPv6 (issue 3.5, 12.3): each sandbox has a ULA address too; the name
# resolves to both; curl -6 and ssh -6 work. Loopback families: a v6 client
# is relayed to [::1]:PORT and a v4 client to 127.0.0.1:PORT; when that
# family refuses, the tunnel tries the other one before it answers the SYN:
#   a server bound only to ::1      is reachable with curl -6 and curl -4;
#   a server bound only to 127.0.0.1 is reachable with curl -6 and curl -4;
#   a port closed in both families is refused for both (curl exit 7).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

osh_topology
osh_sandbox_services 2
osh_spawn "$NS_SBX" http6 /usr/bin/python3 -m http.server 8081 --bind ::1 --directory "$OSH_WORK/www"
wait_until 10 port_listens "$NS_SBX" 8081
osh_gateway
osh_supervisor
osh_tunnel
V4="$(sandbox_v4)"
V6="$(sandbox_v6)"

say "the name resolves to both addresses"
n_client getent ahosts demo.local >"$OSH_WORK/ahosts"
cat "$OSH_WORK/ahosts"
check "IPv4 address $V4" grep -q "^$V4 " "$OSH_WORK/ahosts"
check "IPv6 address $V6" grep -q "^$V6 " "$OSH_WORK/ahosts"

for fam in 6 4; do
  for port in 8081 8080; do
    bound=$([[ $port == 8081 ]] && echo "[::1]" || echo "127.0.0.1")
    say "curl -$fam to a server listening only on $bound:$port in the sandbox"
    sum="$(n_client curl "-$fam" -sS --max-time "$(osh_scaled 30)" "http://demo.local:$port/blob" | sha256sum | cut -d' ' -f1)"
    check "download intact over IPv$fam" [ "$sum" = "$OSH_BLOB_SHA" ]
  done
done

for fam in 6 4; do
  say "curl -$fam to port 8082, closed in both loopback families"
  rc=0
  n_client curl "-$fam" -sS --max-time "$(osh_scaled 10)" -o /dev/null http://demo.local:8082/ 2>"$OSH_WORK/c$fam.err" || rc=$?
  cat "$OSH_WORK/c$fam.err"
  check "refused (curl exit 7, got $rc)" [ "$rc" -eq 7 ]
done
for addr in "$V6" "$V4"; do
  out="$(client_tcp connect --host "$addr" --port 8082)"
  check "connect() to $addr:8082: ECONNREFUSED ($out)" [ "$(jfield "$out" error)" = ECONNREFUSED ]
done

say "ssh -6"
out="$(osh_ssh -6 root@demo.local 'echo v6-ok')"
check "ssh -6 printed v6-ok" [ "$out" = v6-ok ]

say "ping -6"
check "ping -6 answers" n_client ping -6 -c 1 -W 2 demo.local
stop_tunnel
check "the two cross-family downloads fell back (loopback_fallbacks $(tunnel_counter loopback_fallbacks))" \
  [ "$(tunnel_counter loopback_fallbacks)" -ge 2 ]
check "no late refusal (late_refusals $(tunnel_counter late_refusals))" [ "$(tunnel_counter late_refusals)" -eq 0 ]
say "PASS: IPv6"
