#!/usr/bin/env bash
# Half-close in both directions with every byte delivered (issue 3.2):
#   a. client sends, shutdown(SHUT_WR), then reads a 10 MiB reply sent only after EOF;
#   b. the server writes 10 MiB and closes first: the client reads all, then EOF (not RST);
#   c. the server writes, shutdown(SHUT_WR), then reads 1 MiB more from the client.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

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
  out="$(client_tcp read --host "$host" --port 9002)"
  echo "  $out"
  check "no error (FIN, not RST)" [ -z "$(jfield "$out" error)" ]
  check "client read all 10 MiB intact" [ "$(jfield "$out" sha256)" = "$SHA10M" ]

  say "c. server writes, SHUT_WR, keeps reading 1 MiB ($host)"
  : >"$OSH_WORK/replyshut.report"
  out="$(client_tcp read-then-send --host "$host" --port 9003 --bytes $((1 << 20)))"
  echo "  $out"
  check "client read the reply then EOF" [ "$(jfield "$out" sha256)" = "$SHA1M" ]
  check "client could still send after EOF" [ "$(jfield "$out" sent)" = $((1 << 20)) ]
  wait_until 10 test -s "$OSH_WORK/replyshut.report"
  rep="$(tail -n1 "$OSH_WORK/replyshut.report")"
  check "server read the client's 1 MiB after its own FIN" [ "$(jfield "$rep" sha256)" = "$SHA1M" ]
done
say "PASS: half-close"
