#!/usr/bin/env bash
# Only sandbox addresses are served (issue 3.6): packets to an unassigned
# address in the prefix are dropped and counted, never written back into the
# TUN — checked with the kernel's forwarding on in the client namespace, where
# a packet sent back would be forwarded again (a loop). ping <sandbox> answers.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

osh_topology
osh_sandbox_services 1
osh_gateway
osh_supervisor
osh_tunnel
n_client sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

# Packets the tunnel wrote into the kernel = RX on osh0.
osh0_rx() { ip -n "$NS_CLIENT" -s -j link show osh0 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'; }

rx0="$(osh0_rx)"
say "ping and TCP to unassigned addresses 198.18.0.99 and fd00:6f73:6800::99"
check "no echo reply from 198.18.0.99" bash -c "! ip netns exec $NS_CLIENT ping -c 3 -i 0.2 -W 1 198.18.0.99"
check "no echo reply from fd00:6f73:6800::99" bash -c "! ip netns exec $NS_CLIENT ping -6 -c 3 -i 0.2 -W 1 fd00:6f73:6800::99"
out="$(client_tcp connect --host 198.18.0.99 --port 80 --timeout 2)"
echo "  $out"
check "TCP SYN to an unassigned address is not answered (timeout)" [ "$(jfield "$out" error)" = TimeoutError ]
rx1="$(osh0_rx)"
check "nothing written back into the TUN (rx $rx0 -> $rx1)" [ "$rx1" -eq "$rx0" ]

say "ping demo.local answers (IPv4 and IPv6)"
check "ping -4" n_client ping -4 -c 2 -i 0.2 -W 2 demo.local
check "ping -6" n_client ping -6 -c 2 -i 0.2 -W 2 demo.local

stop_tunnel
check "drops counted (drop_not_sandbox=$(tunnel_counter drop_not_sandbox))" [ "$(tunnel_counter drop_not_sandbox)" -ge 7 ]
check "echo replies counted" [ "$(tunnel_counter echo_replies)" -ge 4 ]
say "PASS: drops"
