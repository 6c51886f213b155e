#!/usr/bin/env bash
# SYN gate outcomes (issue 3.1, 12.3; docs/ARCHITECTURE.md "Connection
# semantics and the error table"), against the mini-gateway's default
# upstream behaviour (headers before the supervisor dials, a refused dial as
# a trailing UNAVAILABLE) in either generation, or with connect-ack
# negotiated (OSH_EXT=1: the refusal arrives before any headers):
#   closed port (closed in both loopback families), from an IPv4 and an IPv6
#     client, 3 times each -> ECONNREFUSED from connect(), fast: the SYN was
#     held through the settle window, never connect-then-reset
#     (late_refusals 0);
#   a service bound only to 127.0.0.1, reached from an IPv6 client (curl -6):
#     the tunnel's ::1 dial is refused and retried on 127.0.0.1 before the
#     SYN is answered (loopback_fallbacks);
#   sandbox declared but not READY  -> EHOSTUNREACH, fast;
#   gateway gone                    -> EHOSTUNREACH, fast, the tunnel stays up.
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
streams_field() {
  ip netns exec "$NS_CLIENT" "$OSH_TUNNEL" status --state-dir "$OSH_STATE" --json |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["streams"][sys.argv[1]])' "$1"
}

say "warm-up: one connection that opens (the tunnel learns the gateway's header latency)"
out="$(client_tcp connect --host "$V4" --port 8080)"
check "connected to 127.0.0.1:8080 ($out)" [ "$(jfield "$out" connected)" = true ]

for addr in "$V4" "$V6"; do
  for i in 1 2 3; do
    say "closed port 9 on $addr (both loopback families closed), try $i"
    out="$(client_tcp connect --host "$addr" --port 9)"
    echo "  $out"
    check "ECONNREFUSED from connect()" [ "$(jfield "$out" error)" = ECONNREFUSED ]
    check_within "refused" "$(jfield "$out" elapsed_s)" 1
  done
done
check "no refusal arrived after the settle window (late_refusals $(streams_field late_refusals))" \
  [ "$(streams_field late_refusals)" -eq 0 ]
say "  settle window now $(streams_field settle_window_us) us"
if osh_ext; then
  check "connect-ack negotiated: no settle window (0 us)" [ "$(streams_field settle_window_us)" -eq 0 ]
else
  check "upstream headers: an adaptive settle window, at most 25 ms" \
    [ "$(streams_field settle_window_us)" -gt 0 -a "$(streams_field settle_window_us)" -le 25000 ]
fi

say "sandbox 'ghost' is declared but has no supervisor (not READY)"
out="$(client_tcp connect --host "$GHOST4" --port 80)"
echo "  $out"
check "EHOSTUNREACH" [ "$(jfield "$out" error)" = EHOSTUNREACH ]

say "curl -6: the server listens on 127.0.0.1:8080 only; the tunnel falls back from ::1"
fb0="$(streams_field loopback_fallbacks)"
n_client curl -6 -sS -v --max-time "$(osh_scaled 10)" -o "$OSH_WORK/blob6" "http://demo.local:8080/blob" 2>"$OSH_WORK/curl.err" ||
  { cat "$OSH_WORK/curl.err"; fail "curl -6 failed"; }
check "curl connected over IPv6 ($V6)" grep -q "Connected to demo.local ($V6)" "$OSH_WORK/curl.err"
check "download intact" [ "$(sha256sum <"$OSH_WORK/blob6" | cut -d' ' -f1)" = "$OSH_BLOB_SHA" ]
check "counted as a loopback fallback ($fb0 -> $(streams_field loopback_fallbacks))" \
  [ "$(streams_field loopback_fallbacks)" -gt "$fb0" ]

say "a refusal storm: 100 connects to a closed port; the log gets a burst of lines, not 100 (issue 14.7)"
lines0="$(grep -c ' refused (' "$OSH_WORK/tunnel.log" || true)"
late0="$(streams_field late_refusals)"
out="$(client_tcp connect-many --host "$V4" --port 9 --count 100)"
echo "  $out"
# With the "connected" extension every refusal comes before the SYN-ACK.
# In upstream mode a refusal may come after the adaptive settle window on a
# loaded machine: the client's connect() then succeeds and the connection
# is reset (a late refusal, by design; counted unless the client closed
# first). When that reset lands before the client's connect() has returned,
# connect() fails with ECONNRESET instead (seen once in an ASan run at load
# 3.5). So there every connect is refused, connected or reset, and the "no
# late refusal" check below leaves the storm out; its figures are printed.
storm_late=$(($(streams_field late_refusals) - late0))
storm_refused="$(jfield "$out" ECONNREFUSED)"
storm_connected="$(jfield "$out" connected)"
storm_reset="$(jfield "$out" ECONNRESET)"
echo "  storm: ${storm_refused:-0} refused, ${storm_connected:-0} connected, ${storm_reset:-0} reset in connect()," \
  "$storm_late late refusals (load $(cut -d' ' -f1 /proc/loadavg))"
if osh_ext; then
  check "all 100 refused" [ "${storm_refused:-0}" = 100 ]
else
  check "all 100 refused before or after the settle window" \
    [ "$((${storm_refused:-0} + ${storm_connected:-0} + ${storm_reset:-0}))" = 100 ]
  check "every reset in connect() is a late refusal the tunnel counted (${storm_reset:-0} <= $storm_late)" \
    [ "${storm_reset:-0}" -le "$storm_late" ]
fi
lines=$(($(grep -c ' refused (' "$OSH_WORK/tunnel.log" || true) - lines0))
# 10 at once, then one a second: 100 connects would need more than 40 s to
# reach 50 lines.
check "per-connection refusal lines rate-limited ($lines lines for 100 refusals)" [ "$lines" -lt 50 ]
check "the next line that passes counts the suppressed ones" wait_until 10 bash -c \
  "ip netns exec $NS_CLIENT /usr/bin/python3 $OSH_TCPTOOL connect --host $V4 --port 9 >/dev/null;
   grep -q 'refused (.*similar lines suppressed\]' '$OSH_WORK/tunnel.log'"

say "gateway goes away"
kill -TERM "$PID_gateway"
wait "$PID_gateway" || true
out="$(client_tcp connect --host "$V4" --port 8080)"
echo "  $out"
check "EHOSTUNREACH with the gateway gone" [ "$(jfield "$out" error)" = EHOSTUNREACH ]
check_within "answered" "$(jfield "$out" elapsed_s)" 5
check "tunnel still running" kill -0 "$PID_tunnel"

stop_tunnel
check "refusals counted (RST: $(tunnel_counter refused_rst))" [ "$(tunnel_counter refused_rst)" -ge 6 ]
check "unreachables counted (ICMP: $(tunnel_counter refused_unreachable))" [ "$(tunnel_counter refused_unreachable)" -ge 2 ]
# After the single connections (checked above: no late refusal there) the
# storm and the rate-limit probe may refuse late under load, by design (see
# the storm); each such refusal is a reset, and nothing else may be.
check "every reset is a late refusal (resets $(tunnel_counter resets), late_refusals $(tunnel_counter late_refusals), $storm_late in the storm)" \
  [ "$(tunnel_counter resets)" -eq "$(tunnel_counter late_refusals)" ]
say "PASS: refusal semantics (protocol $OSH_PROTOCOL, extensions $(osh_ext && echo negotiated || echo off))"
