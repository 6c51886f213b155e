#!/usr/bin/env bash
# IPv6 (issue 3.5): each sandbox has a ULA address too; the name resolves to
# both; curl -6 and ssh -6 work; a service listening only on ::1 in the
# sandbox is reachable through the v6 address (the family is mapped:
# v6 clients reach [::1]:PORT, v4 clients 127.0.0.1:PORT).
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

say "curl -6 to a server listening only on [::1]:8081 in the sandbox"
sum="$(n_client curl -6 -sS --max-time 30 http://demo.local:8081/blob | sha256sum | cut -d' ' -f1)"
check "download intact over IPv6" [ "$sum" = "$OSH_BLOB_SHA" ]

say "curl -4 to the same port: 127.0.0.1:8081 is closed in the sandbox"
rc=0
n_client curl -4 -sS --max-time 10 -o /dev/null http://demo.local:8081/blob 2>"$OSH_WORK/c4.err" || rc=$?
cat "$OSH_WORK/c4.err"
check "refused (curl exit 7)" [ "$rc" -eq 7 ]

say "ssh -6"
out="$(osh_ssh -6 root@demo.local 'echo v6-ok')"
check "ssh -6 printed v6-ok" [ "$out" = v6-ok ]

say "ping -6"
check "ping -6 answers" n_client ping -6 -c 1 -W 2 demo.local
say "PASS: IPv6"
