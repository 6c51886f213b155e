#!/usr/bin/env bash
# The demo (README quick start): builds the test topology (lib.sh), brings the
# tunnel up in the client namespace and shows ssh and curl reaching the
# sandbox by name. Set OSH_DEMO_HOLD=1 to keep it running until Ctrl-C.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

osh_topology
osh_sandbox_services 16
osh_gateway
osh_supervisor
osh_tunnel

echo
say "the tunnel says:"
sed 's/^/    /' "$OSH_WORK/tunnel.log"
echo
say "client namespace's hosts file:"
sed 's/^/    /' "$OSH_HOSTS"
echo
say "ssh root@demo.local 'echo hello from \$(hostname) ...'"
osh_ssh root@demo.local 'echo "tunnel-ok: $(uname -sr), sshd on the sandbox loopback"' | sed 's/^/    /'
echo
say "curl http://demo.local:8080/ (directory listing served inside the sandbox)"
n_client curl -sS --max-time 10 http://demo.local:8080/ | sed 's/^/    /' | head -12
echo
say "curl http://demo.local:8080/blob | sha256sum  (16 MiB)"
got="$(n_client curl -sS --max-time 60 -w '%{size_download} bytes at %{speed_download} bytes/s' \
  -o "$OSH_WORK/demo.blob" http://demo.local:8080/blob)"
sum="$(sha256sum "$OSH_WORK/demo.blob" | cut -d' ' -f1)"
echo "    $got"
echo "    sha256 through the tunnel: $sum"
echo "    sha256 of the file:        $OSH_BLOB_SHA"
[[ "$sum" == "$OSH_BLOB_SHA" ]] || { echo "checksum mismatch"; exit 1; }
say "✓ checksums match"
echo
say "ping -c 2 demo.local (answered by the tunnel itself)"
n_client ping -c 2 -W 2 demo.local | sed 's/^/    /' || true

if [[ "${OSH_DEMO_HOLD:-0}" == 1 ]]; then
  say "holding; in another shell (as root):"
  echo "    ip netns exec $NS_CLIENT ssh -F $OSH_SSH_CONFIG -i $OSH_WORK/ssh/id_test -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@demo.local"
  echo "    ip netns exec $NS_CLIENT curl http://demo.local:8080/"
  echo "    ip netns exec $NS_CLIENT $OSH_TUNNEL status --state-dir $OSH_STATE"
  say "Ctrl-C to end."
  # Ctrl-C reaches the tunnel too (same process group); either way, go on.
  trap 'true' INT
  wait "$PID_tunnel" || true
  trap - INT
fi
echo
say "stopping the tunnel (SIGTERM) and removing the namespaces"
kill -TERM "$PID_tunnel" 2>/dev/null || true  # already gone after Ctrl-C
wait "$PID_tunnel" || true
tail -n 2 "$OSH_WORK/tunnel.log" | sed 's/^/    /'
say "demo done"
