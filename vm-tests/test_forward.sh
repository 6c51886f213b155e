#!/usr/bin/env bash
# `openshell-tunnel forward` and `openshell-tunnel ssh-proxy` (issue 5, 4.4):
#   forward: curl through a forwarded port (IPv4 and IPv6 bind), sha256 intact;
#            half-close: client first (every byte both ways), target first
#            (every byte, then EOF; the 0.1 call ends there, so later client
#            bytes do not reach the target; with the extension they do); a closed port in
#            the sandbox resets the local client's connection (never a fake
#            clean end); bad specs and unknown sandboxes fail with exit codes
#            1 and 2; SIGTERM ends it with exit 0; a sandbox that stops
#            being READY ends it with exit 2 within the 2 s re-check.
#   ssh-proxy: ssh with ProxyCommand runs a command and moves 8 MiB intact
#            both ways; stdin EOF -> WritesDone -> exit 0 after sshd's banner;
#            an unknown sandbox -> one line on stderr, exit 2.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

osh_topology
osh_sandbox_services 8
osh_gateway
osh_supervisor
sbx_tcp_server sinkreply 9001 sink-reply --bytes $((10 << 20))
sbx_tcp_server replyclose 9002 reply-close --bytes $((10 << 20))
sbx_tcp_server replyshut 9003 reply-shut --bytes $((1 << 20))
GW_URL="http://$OSH_GW_ADDR:$OSH_GW_PORT"
SHA1M="$(expect_sha $((1 << 20)))"
SHA10M="$(expect_sha $((10 << 20)))"

say "forward: bad arguments and an unknown sandbox"
set +e
n_client "$OSH_TUNNEL" forward --gateway-endpoint "$GW_URL" 0 demo 2>"$OSH_WORK/err"
rc=$?
set -e
check "LOCAL 0 without a sandbox port: exit 1" [ "$rc" -eq 1 ]
check "  and says why" grep -q "name the sandbox port" "$OSH_WORK/err"
set +e
n_client "$OSH_TUNNEL" forward --gateway-endpoint "$GW_URL" 0 nosuch:80 2>"$OSH_WORK/err"
rc=$?
set -e
check "unknown sandbox: exit 2" [ "$rc" -eq 2 ]
check "  and says so" grep -q "sandbox 'nosuch' not found" "$OSH_WORK/err"

say "forward: curl an 8 MiB file through 127.0.0.1:0 -> demo:8080"
forward_start fwd_http 0 demo:8080
HTTP_PORT=$FWD_PORT
check "banner names the target" grep -q -- "-> 127.0.0.1:8080 in sandbox demo via gRPC" "$OSH_WORK/fwd_http.log"
got="$(n_client curl -sS --max-time "$(osh_scaled 60)" "http://127.0.0.1:$HTTP_PORT/blob" | sha256sum | cut -d' ' -f1)"
check "sha256 intact" [ "$got" = "$OSH_BLOB_SHA" ]

say "forward: 4 parallel downloads on one forward"
pids=()
for i in 1 2 3 4; do
  (n_client curl -sS --max-time "$(osh_scaled 60)" "http://127.0.0.1:$HTTP_PORT/blob" | sha256sum | cut -d' ' -f1 >"$OSH_WORK/par$i") &
  pids+=("$!")
done
wait "${pids[@]}"
for i in 1 2 3 4; do check "download $i intact" [ "$(cat "$OSH_WORK/par$i")" = "$OSH_BLOB_SHA" ]; done

say "forward: IPv6 bind [::1]:0 -> demo:8080"
forward_start fwd_http6 "[::1]:0" demo:8080
got="$(n_client curl -sS -g --max-time "$(osh_scaled 60)" "http://[::1]:$FWD_PORT/blob" | sha256sum | cut -d' ' -f1)"
check "sha256 intact over the IPv6 listener" [ "$got" = "$OSH_BLOB_SHA" ]

say "forward: half-close, client first (send 1 MiB, SHUT_WR, 10 MiB reply after EOF)"
forward_start fwd_9001 0 demo:9001
out="$(client_tcp send-shut-read --host 127.0.0.1 --port "$FWD_PORT" --bytes $((1 << 20)))"
echo "  $out"
check "client got 10 MiB intact" [ "$(jfield "$out" sha256)" = "$SHA10M" ]
wait_until 10 test -s "$OSH_WORK/sinkreply.report"
check "server got the 1 MiB request intact, then EOF" [ "$(jfield "$(tail -n1 "$OSH_WORK/sinkreply.report")" sha256)" = "$SHA1M" ]

say "forward: server writes 10 MiB and closes first"
forward_start fwd_9002 0 demo:9002
out="$(client_tcp read --host 127.0.0.1 --port "$FWD_PORT")"
echo "  $out"
check "no error (FIN, not RST)" [ -z "$(jfield "$out" error)" ]
check "client read all 10 MiB intact" [ "$(jfield "$out" sha256)" = "$SHA10M" ]

say "forward: server writes 1 MiB, SHUT_WR, then reads until EOF"
forward_start fwd_9003 0 demo:9003
out="$(client_tcp read-then-send --host 127.0.0.1 --port "$FWD_PORT" --bytes $((1 << 20)))"
echo "  $out"
check "client read the reply, then EOF" [ "$(jfield "$out" sha256)" = "$SHA1M" ]
wait_until 10 test -s "$OSH_WORK/replyshut.report"
rep="$(tail -n1 "$OSH_WORK/replyshut.report")"
echo "  server: $rep"
if osh_ext; then
  check "client could still send after EOF" [ "$(jfield "$out" sent)" = $((1 << 20)) ]
  check "server read the client's 1 MiB after its own FIN" [ "$(jfield "$rep" sha256)" = "$SHA1M" ]
else
  # 0.1 upstream: the target's FIN ends the call (OK); nothing sent later reaches it.
  check "the call ended at the target's FIN: the client's later bytes did not reach the server" \
    [ "$(jfield "$rep" bytes)" = 0 ]
fi

say "forward: closed port 9 in the sandbox"
forward_start fwd_closed 0 demo:9
out="$(client_tcp read --host 127.0.0.1 --port "$FWD_PORT")"
echo "  $out"
check "local connection reset (ECONNRESET), not a clean EOF" [ "$(jfield "$out" error)" = ECONNRESET ]
check_within "reset, not a hang:" "$(jfield "$out" elapsed_s)" 2
check "forward still running" kill -0 "$PID_fwd_closed"

say "ssh-proxy: unknown sandbox"
set +e
ip netns exec "$NS_CLIENT" "$OSH_TUNNEL" ssh-proxy --gateway-endpoint "$GW_URL" nosuch </dev/null >/dev/null 2>"$OSH_WORK/err"
rc=$?
set -e
cat "$OSH_WORK/err"
check "exit 2" [ "$rc" -eq 2 ]
check "one line on stderr" [ "$(wc -l <"$OSH_WORK/err")" -eq 1 ]

say "ssh-proxy: stdin EOF at once: sshd's banner arrives, then a clean exit"
set +e
ip netns exec "$NS_CLIENT" timeout "$(osh_scaled 20)" "$OSH_TUNNEL" ssh-proxy --gateway-endpoint "$GW_URL" demo </dev/null >"$OSH_WORK/banner" 2>"$OSH_WORK/err"
rc=$?
set -e
check "exit 0 (rc $rc, stderr: $(cat "$OSH_WORK/err"))" [ "$rc" -eq 0 ]
check "stdout starts with the SSH banner" grep -q "^SSH-2.0-" "$OSH_WORK/banner"

PROXY="ProxyCommand=$OSH_TUNNEL ssh-proxy --gateway-endpoint $GW_URL demo"
say "ssh-proxy: ssh runs a command through ProxyCommand"
out="$(osh_ssh -o "$PROXY" root@demo 'echo hello-from-$(hostname -s 2>/dev/null || echo sandbox)')"
echo "  $out"
check "command ran" grep -q "^hello-from-" <<<"$out"

say "ssh-proxy: 8 MiB down and up through ssh, sha256 intact"
got="$(osh_ssh -o "$PROXY" root@demo "cat $OSH_WORK/www/blob" | sha256sum | cut -d' ' -f1)"
check "download intact" [ "$got" = "$OSH_BLOB_SHA" ]
got="$(osh_ssh -o "$PROXY" root@demo 'sha256sum' <"$OSH_WORK/www/blob" | cut -d' ' -f1)"
check "upload intact (stdin EOF reached the remote command)" [ "$got" = "$OSH_BLOB_SHA" ]

say "forward: SIGTERM"
kill -TERM "$PID_fwd_http"
wait_rc "$PID_fwd_http"
check "exit 0" [ "$RC" -eq 0 ]
check "counters logged" grep -q "counters: accepted=5" "$OSH_WORK/fwd_http.log"

say "forward: the sandbox stops being READY (its supervisor stops) -> every forward ends (exit 2)"
kill -TERM "$PID_supervisor"
osh_now_ms
t0=$OSH_NOW_MS
for f in fwd_http6 fwd_9001 fwd_9002 fwd_9003 fwd_closed; do
  pid_var="PID_$f"
  wait_rc "${!pid_var}"
  check "$f: exit 2 (rc $RC)" [ "$RC" -eq 2 ]
  check "$f: says why" grep -q "service forward stopped: sandbox 'demo' is not ready" "$OSH_WORK/$f.log"
done
check_within "every forward ended after the 2 s re-check," "$(osh_since_s "$t0")" 5
say "PASS: forward and ssh-proxy"
