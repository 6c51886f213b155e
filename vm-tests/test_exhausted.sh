#!/usr/bin/env bash
# The gateway answers RESOURCE_EXHAUSTED mid-run (issue 6.4): connections are
# queued and retried, not lost.
#
# The mini-gateway admits 6 streams per sandbox (3 per token); the tunnel
# believes it may open 20 (its default), so most of its opens are refused by
# the gateway with RESOURCE_EXHAUSTED before the response headers. The tunnel
# keeps the client's SYN, retries every 100 ms until its queue deadline
# (relay/forward.cc, ForwardCall::OnDone), and only then refuses.
#   1. 40 parallel downloads: all intact, retries counted, none refused.
#   2. Another client (`openshell-tunnel forward`, which the tunnel knows
#      nothing about) takes every gateway slot: a new connection through the
#      tunnel waits, then completes intact once the slots free up.
#   3. With the slots held past the tunnel's queue bound, a connection is
#      refused (ECONNREFUSED) after about that bound, not at once and not never.
#   4. A client that gives up while queued: when its stream opens, the
#      client's RST to the SYN-ACK ends it at once (no slot held for 20 s).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

osh_topology
osh_sandbox_services 4
osh_gateway --max-streams-per-token 3 --max-streams-per-sandbox 6
osh_supervisor
sbx_tcp_server sink 9006 slow-sink
osh_tunnel
V4="$(sandbox_v4)"
# Established target-side connections to the sink: one per open stream.
sink_conns() { ip netns exec "$NS_SBX" ss -Htn state established '( sport = :9006 )' | wc -l; }
sink_conns_are() { [ "$(sink_conns)" "$1" "$2" ]; }  # sink_conns_are -ge 6

say "1. 40 parallel downloads of a 4 MiB file; the gateway admits 6 at a time"
parallel_downloads 40
check "all 40 downloads intact ($BAD bad)" [ "$BAD" -eq 0 ]

say "2. another client holds all 6 gateway slots for 4 s; a connection through the tunnel waits for them"
forward_start fwd 0 demo:9006
holders=()
for i in $(seq 1 6); do
  client_tcp hold --host 127.0.0.1 --port "$FWD_PORT" --secs 4 >"$OSH_WORK/h$i" &
  holders+=("$!")
done
wait_until 10 sink_conns_are -ge 6
t0=$(date +%s%N)
sum="$(ip netns exec "$NS_CLIENT" curl -4 -sS --max-time 30 http://demo.local:8080/blob | sha256sum | cut -d' ' -f1)"
waited_ms=$((($(date +%s%N) - t0) / 1000000))
check "the download completed intact after waiting ${waited_ms} ms" [ "$sum" = "$OSH_BLOB_SHA" ]
check "it waited for the slots (> 1 s) rather than going through" [ "$waited_ms" -gt 1000 ]
wait "${holders[@]}"
for i in $(seq 1 6); do
  check "forward holder $i was connected" grep -q '"connected": true' "$OSH_WORK/h$i"
done
wait_until 10 sink_conns_are -eq 0

stop_tunnel
retries="$(tunnel_counter open_retries)"
check "RESOURCE_EXHAUSTED opens were retried ($retries retries)" [ "$retries" -ge 10 ]
check "no queue timeouts" [ "$(tunnel_counter queue_timeouts)" -eq 0 ]
check "no connection refused" [ "$(tunnel_counter refused_rst)" -eq 0 ]
check "no stream reset" [ "$(tunnel_counter resets)" -eq 0 ]

say "3. slots held for 6 s, tunnel queue bound 1.5 s: refused after about the bound"
osh_tunnel --queue-timeout-ms 1500
for i in $(seq 1 6); do
  client_tcp hold --host 127.0.0.1 --port "$FWD_PORT" --secs 6 >"$OSH_WORK/h$i" &
  holders[i - 1]=$!
done
wait_until 10 sink_conns_are -ge 6
check_refused_after_queue_bound "$V4" 9006
wait "${holders[@]}"
stop_tunnel
check "counted as a queue timeout" [ "$(tunnel_counter queue_timeouts)" -ge 1 ]

say "4. a client gives up (1 s connect timeout) while its SYN waits; the slot is freed as soon as it opens"
osh_tunnel
for i in $(seq 1 6); do
  client_tcp hold --host 127.0.0.1 --port "$FWD_PORT" --secs 3 >"$OSH_WORK/h$i" &
  holders[i - 1]=$!
done
wait_until 10 sink_conns_are -ge 6
conns_opened() { ip netns exec "$NS_CLIENT" "$OSH_TUNNEL" status --state-dir "$OSH_STATE" --json |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["connections_opened"])'; }
opened_before="$(conns_opened)"
out="$(client_tcp connect --host "$V4" --port 9006 --timeout 1)"
echo "  $out"
check "the client gave up (timeout)" [ "$(jfield "$out" connected)" != true ]
wait "${holders[@]}"
# The queued stream now opens, lwIP's SYN-ACK meets the client's RST, and the
# stream ends at once instead of holding the slot for the 20 s handshake sweep.
opened_since() { [ "$(conns_opened)" -gt "$opened_before" ]; }
wait_until 15 opened_since
t0=$SECONDS
wait_until 5 sink_conns_are -eq 0
active_streams() { ip netns exec "$NS_CLIENT" "$OSH_TUNNEL" status --state-dir "$OSH_STATE" --json |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["streams"]["active"])'; }
streams_idle() { [ "$(active_streams)" = 0 ]; }
wait_until 5 streams_idle
check "no stream or sandbox connection left $((SECONDS - t0)) s later" [ "$(active_streams)" = 0 ]
say "PASS: RESOURCE_EXHAUSTED"
