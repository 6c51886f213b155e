#!/usr/bin/env bash
# Half-close in both directions (issue 3.2, 12.3/12.4; docs/ARCHITECTURE.md
# "Half-close on the wire"), over IPv4 and IPv6:
#   a. client sends, shutdown(SHUT_WR), then reads a 10 MiB reply sent only
#      after EOF: the same in every mode;
#   b. the server writes 10 MiB and closes first:
#      0.1 (the call ends OK at the target's FIN) and with fin-frame: the
#        client reads every byte, then EOF (not RST);
#      0.0 without the extension (upstream holds the target's FIN until the
#        client half-closes, protocol §2.6): every byte, no EOF for 2 s, and
#        EOF once the client half-closes;
#   c. the server writes 1 MiB, shutdown(SHUT_WR), then reads until EOF:
#      fin-frame: the client reads the reply, then EOF, and can still send
#        1 MiB that the server reads after its own FIN;
#      0.1: the client reads the reply, then EOF; the call has ended, so the
#        bytes it sends afterwards do not reach the server (protocol-0.1 §3);
#      0.0: the client reads the reply, no EOF for 2 s; it sends 1 MiB and
#        half-closes: the server reads the 1 MiB, the client then gets EOF.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

HOLD_SECS=2
osh_topology
osh_sandbox_services 1
osh_gateway
osh_supervisor
sbx_tcp_server sinkreply 9001 sink-reply --bytes $((10 << 20))
sbx_tcp_server replyclose 9002 reply-close --bytes $((10 << 20))
sbx_tcp_server replyshut 9003 reply-shut --bytes $((1 << 20))
osh_tunnel
SHA1M="$(expect_sha $((1 << 20)))"
SHA10M="$(expect_sha $((10 << 20)))"
if osh_ext; then
  MODE=fin-frame
elif [[ $OSH_PROTOCOL == 0.0 ]]; then
  MODE=held
else
  MODE=ends
fi
say "mode: protocol $OSH_PROTOCOL, target FIN $MODE"

for host in "$(sandbox_v4)" "$(sandbox_v6)"; do
  say "a. request, SHUT_WR, 10 MiB reply after EOF ($host)"
  : >"$OSH_WORK/sinkreply.report"
  out="$(client_tcp send-shut-read --host "$host" --port 9001 --bytes $((1 << 20)))"
  echo "  $out"
  check "client got 10 MiB intact" [ "$(jfield "$out" sha256)" = "$SHA10M" ]
  wait_until 10 test -s "$OSH_WORK/sinkreply.report"
  rep="$(tail -n1 "$OSH_WORK/sinkreply.report")"
  check "server got the 1 MiB request intact, then EOF" [ "$(jfield "$rep" sha256)" = "$SHA1M" ]

  say "b. server writes 10 MiB and closes first ($host)"
  if [[ $MODE == held ]]; then
    out="$(client_tcp read-hold-shut --host "$host" --port 9002 --bytes $((10 << 20)) --secs "$HOLD_SECS")"
    echo "  $out"
    check "client read all 10 MiB intact" [ "$(jfield "$out" sha256)" = "$SHA10M" ]
    check "no EOF (and nothing else) for ${HOLD_SECS} s: 0.0 holds the target's FIN" \
      [ "$(jfield "$out" early_eof)" = false -a "$(jfield "$out" extra)" = 0 ]
    check "EOF once the client half-closed ($(jfield "$out" eof_after_shut_ms) ms; $(jfield "$out" error))" \
      [ "$(jfield "$out" eof)" = true -a -z "$(jfield "$out" error)" ]
  else
    out="$(client_tcp read --host "$host" --port 9002)"
    echo "  $out"
    check "no error (FIN, not RST)" [ -z "$(jfield "$out" error)" ]
    check "client read all 10 MiB intact, then EOF" [ "$(jfield "$out" sha256)" = "$SHA10M" ]
  fi

  say "c. server writes 1 MiB, SHUT_WR, keeps reading ($host)"
  : >"$OSH_WORK/replyshut.report"
  case $MODE in
    fin-frame)
      out="$(client_tcp read-then-send --host "$host" --port 9003 --bytes $((1 << 20)))"
      echo "  $out"
      check "client read the reply then EOF" [ "$(jfield "$out" sha256)" = "$SHA1M" ]
      check "client could still send after EOF" [ "$(jfield "$out" sent)" = $((1 << 20)) ]
      wait_until 10 test -s "$OSH_WORK/replyshut.report"
      rep="$(tail -n1 "$OSH_WORK/replyshut.report")"
      echo "  server: $rep"
      check "server read the client's 1 MiB after its own FIN" [ "$(jfield "$rep" sha256)" = "$SHA1M" ]
      ;;
    ends)
      out="$(client_tcp read-then-send --host "$host" --port 9003 --bytes $((1 << 20)))"
      echo "  $out"
      check "client read the reply then EOF" [ "$(jfield "$out" sha256)" = "$SHA1M" ]
      wait_until 10 test -s "$OSH_WORK/replyshut.report"
      rep="$(tail -n1 "$OSH_WORK/replyshut.report")"
      echo "  server: $rep"
      check "the call ended at the target's FIN: none of the client's later bytes reached the server" \
        [ "$(jfield "$rep" bytes)" = 0 ]
      ;;
    held)
      out="$(client_tcp read-hold-shut --host "$host" --port 9003 --bytes $((1 << 20)) --secs "$HOLD_SECS" \
        --send-bytes $((1 << 20)))"
      echo "  $out"
      check "client read the reply intact" [ "$(jfield "$out" sha256)" = "$SHA1M" ]
      check "no EOF for ${HOLD_SECS} s: 0.0 holds the target's FIN" \
        [ "$(jfield "$out" early_eof)" = false -a "$(jfield "$out" extra)" = 0 ]
      check "client sent 1 MiB, half-closed, then got EOF ($(jfield "$out" error))" \
        [ "$(jfield "$out" sent)" = $((1 << 20)) -a "$(jfield "$out" eof)" = true ]
      wait_until 10 test -s "$OSH_WORK/replyshut.report"
      rep="$(tail -n1 "$OSH_WORK/replyshut.report")"
      echo "  server: $rep"
      check "server read the client's 1 MiB after its own FIN" [ "$(jfield "$rep" sha256)" = "$SHA1M" ]
      ;;
  esac
done
stop_tunnel
check "no stream ended in a reset (resets=$(tunnel_counter resets))" [ "$(tunnel_counter resets)" -eq 0 ]
say "PASS: half-close ($MODE)"
