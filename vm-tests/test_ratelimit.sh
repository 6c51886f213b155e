#!/usr/bin/env bash
# The gateway's global rate limit (issue 12.3, 12.4): the mini-gateway runs
# with --rate-limit 5/1 (a bucket of 5 calls refilled over a second;
# RESOURCE_EXHAUSTED "gRPC rate limit exceeded" past it, for ListSandboxes,
# CreateSshSession and ForwardTcp alike). The tunnel backs off (50 ms
# doubling to 2 s) and pools tokens, so 30 parallel downloads, each needing
# its own ForwardTcp call (30 calls at 5 a second: several seconds however
# slowly curl starts), still all complete intact (queue bound 30 s: no queue
# timeout); `status` counts the rate-limit hits and few
# tokens are minted. The sandbox list (refreshed every 2 s through the same
# limit) stays intact: no sandbox disappears.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

N=30
osh_topology
osh_sandbox_services 1
osh_gateway --rate-limit 5/1
osh_supervisor
osh_tunnel --queue-timeout-ms $(($(osh_scaled 30) * 1000))  # load-scaled: no queue timeout is asserted below
streams_field() {
  ip netns exec "$NS_CLIENT" "$OSH_TUNNEL" status --state-dir "$OSH_STATE" --json |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["streams"][sys.argv[1]])' "$1"
}

say "$N parallel downloads of a 1 MiB file (about 5 ForwardTcp calls a second admitted)"
t0=$SECONDS
parallel_downloads "$N"
say "  done after $((SECONDS - t0)) s"
check "all $N downloads intact ($BAD bad)" [ "$BAD" -eq 0 ]
hits="$(streams_field rate_limit_hits)"
check "the gateway's rate limit was hit and retried ($hits times)" [ "$hits" -gt 0 ]
check "demo.local is still in the hosts file" grep -q "[[:space:]]demo\.local$" "$OSH_HOSTS"

say "one ssh session and one more download after the burst"
out="$(osh_ssh root@demo.local 'echo rate-ok')"
check "ssh printed rate-ok" [ "$out" = rate-ok ]
parallel_downloads 1
check "download intact" [ "$BAD" -eq 0 ]

stop_tunnel
check "rate-limit hits in the final counters ($(tunnel_counter rate_limit_hits))" [ "$(tunnel_counter rate_limit_hits)" -gt 0 ]
check "no queue timeout ($(tunnel_counter queue_timeouts))" [ "$(tunnel_counter queue_timeouts)" -eq 0 ]
check "no connection refused ($(tunnel_counter refused_rst) RST, $(tunnel_counter refused_unreachable) ICMP)" \
  [ "$(tunnel_counter refused_rst)" -eq 0 -a "$(tunnel_counter refused_unreachable)" -eq 0 ]
check "tokens pooled ($(tunnel_counter tokens_minted) minted for $((N + 2)) connections)" \
  [ "$(tunnel_counter tokens_minted)" -le 30 ]
say "PASS: rate limit"
