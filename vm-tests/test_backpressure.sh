#!/usr/bin/env bash
# Back-pressure end to end, no unbounded buffer (issue 3.3):
#   upload:   the sandbox server reads 1 MiB/s for a while, the client sends 1 GiB;
#   download: the client reads 1 MiB/s for a while, the sandbox sends 1 GiB.
# While the reader is slow, the tunnel's and the mini-gateway's RSS stay
# below 96 MiB (see LIMIT_KIB); when it speeds up, the transfer completes intact.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

GIB=$((1 << 30))
SLOW_SECS="${OSH_SLOW_SECS:-6}"
# 96 MiB: was 64 MiB until the mini-gateway sent upstream's 64 KiB frames
# (issue 12); gRPC's BDP-grown windows of one paused stream then reach
# ~75 MiB. Bounding them per connection is issue 15, which restores 64 MiB.
LIMIT_KIB=$((96 * 1024))
if [[ "${OSH_SANITIZED:-0}" == 1 ]]; then
  LIMIT_KIB=$((4 * 1024 * 1024))  # ASan build: RSS includes quarantine and shadow; bounds checked in the main build
  say "sanitizer build: RSS is reported, not bounded"
fi
osh_topology
osh_sandbox_services 1
osh_gateway
osh_supervisor
sbx_tcp_server slowsink 9004 slow-sink --rate 1048576 --slow-secs "$SLOW_SECS"
sbx_tcp_server source 9005 source --bytes "$GIB"
osh_tunnel
SHA1G="$(expect_sha "$GIB")"
V4="$(sandbox_v4)"

# Samples RSS of the tunnel and the gateway every 0.2 s into $OSH_WORK/rss.$1
# until the file $OSH_WORK/stop.$1 appears.
sample_rss() {
  local tag="$1" t=0 g=0 mt=0 mg=0
  while [[ ! -e "$OSH_WORK/stop.$tag" ]]; do
    t="$(rss_kib "$PID_tunnel")"
    g="$(rss_kib "$PID_gateway")"
    ((t > mt)) && mt=$t
    ((g > mg)) && mg=$g
    echo "$mt $mg" >"$OSH_WORK/rss.$tag"
    sleep 0.2
  done
}

say "upload 1 GiB to a server reading 1 MiB/s for ${SLOW_SECS}s"
sample_rss up &
sampler=$!
out="$(client_tcp send --host "$V4" --port 9004 --bytes "$GIB")"
touch "$OSH_WORK/stop.up"
wait "$sampler"
echo "  $out"
read -r mt mg <"$OSH_WORK/rss.up"
say "  max RSS: tunnel ${mt} KiB, mini-gateway ${mg} KiB (limit $LIMIT_KIB KiB)"
wait_until 30 test -s "$OSH_WORK/slowsink.report"
rep="$(tail -n1 "$OSH_WORK/slowsink.report")"
check "server received 1 GiB intact" [ "$(jfield "$rep" sha256)" = "$SHA1G" ]
check "the upload took longer than the slow phase (it was held back)" \
  /usr/bin/python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= $SLOW_SECS else 1)" "$(jfield "$out" elapsed_s)"
check "tunnel RSS < $((LIMIT_KIB / 1024)) MiB" [ "$mt" -lt "$LIMIT_KIB" ]
check "gateway RSS < $((LIMIT_KIB / 1024)) MiB" [ "$mg" -lt "$LIMIT_KIB" ]

say "download 1 GiB by a client reading 1 MiB/s for ${SLOW_SECS}s"
sample_rss down &
sampler=$!
out="$(client_tcp read --host "$V4" --port 9005 --rate 1048576 --slow-secs "$SLOW_SECS")"
touch "$OSH_WORK/stop.down"
wait "$sampler"
echo "  $out"
read -r mt mg <"$OSH_WORK/rss.down"
say "  max RSS: tunnel ${mt} KiB, mini-gateway ${mg} KiB (limit $LIMIT_KIB KiB)"
check "client received 1 GiB intact" [ "$(jfield "$out" sha256)" = "$SHA1G" ]
check "tunnel RSS < $((LIMIT_KIB / 1024)) MiB" [ "$mt" -lt "$LIMIT_KIB" ]
check "gateway RSS < $((LIMIT_KIB / 1024)) MiB" [ "$mg" -lt "$LIMIT_KIB" ]
say "PASS: back-pressure"
