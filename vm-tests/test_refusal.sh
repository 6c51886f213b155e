#!/usr/bin/env bash
# SYN gate outcomes (issue 3.1, docs/ARCHITECTURE.md "error table"):
#   closed port in the sandbox      -> ECONNREFUSED, fast, never connect-then-reset
#   sandbox declared but not READY  -> EHOSTUNREACH, fast
#   curl with a refusing first address falls back to the second
#   gateway gone                    -> EHOSTUNREACH, fast, the tunnel stays up
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

GHOST_ID=0f0e0d0c-0b0a-4909-8807-060504030201
osh_topology
osh_sandbox_services 1
osh_gateway --sandbox "ghost=$GHOST_ID"
osh_supervisor
osh_tunnel
V4="$(sandbox_v4)"
V6="$(sandbox_v6)"
GHOST4="$(awk '$2 == "ghost.local" && $1 ~ /\./ {print $1}' "$OSH_HOSTS")"
[[ -n $V4 && -n $V6 && -n $GHOST4 ]] || fail "addresses missing from $OSH_HOSTS"

for addr in "$V4" "$V6"; do
  say "closed port 9 on $addr"
  out="$(client_tcp connect --host "$addr" --port 9)"
  echo "  $out"
  check "ECONNREFUSED" [ "$(jfield "$out" error)" = ECONNREFUSED ]
  check "refused within 100 ms (measured $(jfield "$out" error_ms) ms)" \
    /usr/bin/python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 100 else 1)" "$(jfield "$out" error_ms)"
done

say "sandbox 'ghost' is declared but has no supervisor (not READY)"
out="$(client_tcp connect --host "$GHOST4" --port 80)"
echo "  $out"
check "EHOSTUNREACH" [ "$(jfield "$out" error)" = EHOSTUNREACH ]

say "curl: the IPv6 address refuses (server bound to 127.0.0.1 only), IPv4 answers"
n_client curl -sS -v --max-time 10 -o /dev/null "http://demo.local:8080/blob" 2>"$OSH_WORK/curl.err"
grep -Ei "connect to .*(fd00|\\[).* failed: Connection refused|Failed to connect to .*fd00" "$OSH_WORK/curl.err" ||
  { cat "$OSH_WORK/curl.err"; fail "curl did not see the IPv6 refusal"; }
check "curl fell back to IPv4" grep -q "Connected to demo.local ($V4)" "$OSH_WORK/curl.err"

say "gateway goes away"
kill -TERM "$PID_gateway"
wait "$PID_gateway" || true
out="$(client_tcp connect --host "$V4" --port 8080)"
echo "  $out"
check "EHOSTUNREACH with the gateway gone" [ "$(jfield "$out" error)" = EHOSTUNREACH ]
check "answered within 5 s" /usr/bin/python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 5000 else 1)" "$(jfield "$out" error_ms)"
check "tunnel still running" kill -0 "$PID_tunnel"

stop_tunnel
check "refusals counted (RST)" [ "$(tunnel_counter refused_rst)" -ge 2 ]
check "unreachables counted (ICMP)" [ "$(tunnel_counter refused_unreachable)" -ge 2 ]
say "PASS: refusal semantics"
