#!/usr/bin/env bash
# `up` as a systemd Type=notify service (issue 17.2), without systemd: the
# test plays systemd's part with a datagram socket in $NOTIFY_SOCKET and
# sends the signals the unit sends (ExecReload = SIGHUP, stop = SIGTERM).
#   - READY=1 arrives once the tunnel is up (after "Tunnel is up");
#   - SIGHUP reloads and does not stop: the OpenShell config is resolved
#     again. Here the active gateway is switched to another name with a new
#     OIDC token (the gateway was restarted with that token, so the old one
#     is refused): after SIGHUP the bearer token is replaced, the gateway is
#     re-detected and reachable again, and a connection through the tunnel
#     works. systemd hears RELOADING=1, then READY=1;
#   - a changed endpoint is reported as needing a restart and not applied;
#   - a broken config on SIGHUP keeps the running configuration;
#   - SIGTERM: STOPPING=1, the usual teardown, exit 0.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

osh_topology
osh_sandbox_services 1
T1="osh-t1-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
T2="osh-t2-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
osh_gateway --bearer-token "$T1"
osh_supervisor

# OpenShell config: gateways "lab" (token T1) and "lab2" (token T2), both
# the mini-gateway, auth_mode oidc; active_gateway = lab.
CFG="$OSH_WORK/cfg"
gw_config() {  # NAME TOKEN [PORT]
  mkdir -p "$CFG/gateways/$1"
  printf '{"name":"%s","gateway_endpoint":"http://%s:%s","is_remote":true,"gateway_port":0,"auth_mode":"oidc"}\n' \
    "$1" "$OSH_GW_ADDR" "${3:-$OSH_GW_PORT}" >"$CFG/gateways/$1/metadata.json"
  printf '{"access_token":"%s","issuer":"https://idp.osh.test","client_id":"cli"}\n' "$2" \
    >"$CFG/gateways/$1/oidc_token.json"
  chmod 600 "$CFG/gateways/$1/oidc_token.json"  # others may not read a token (issue 14.8)
}
gw_config lab "$T1"
gw_config lab2 "$T2"
echo lab >"$CFG/active_gateway"

# systemd's notification socket, played by a datagram listener.
NOTIFY="$OSH_WORK/notify.sock"
osh_spawn "$NS_CLIENT" notify /usr/bin/python3 -u -c '
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    msg = s.recv(4096).decode()
    print(f"{time.time():.3f} " + msg.replace("\n", " | "), flush=True)
' "$NOTIFY"
wait_until 5 test -S "$NOTIFY"

say "up with NOTIFY_SOCKET, gateway from the config files (active_gateway = lab)"
OSH_STATE="$OSH_WORK/state"
osh_spawn "$NS_CLIENT" tunnel env -u OPENSHELL_GATEWAY_ENDPOINT -u OPENSHELL_GATEWAY -u XDG_CONFIG_HOME \
  "NOTIFY_SOCKET=$NOTIFY" "OPENSHELL_SYSTEM_GATEWAY_DIR=$OSH_WORK/system" \
  "$OSH_TUNNEL" up --config-dir "$CFG" --hosts-file "$OSH_HOSTS" --state-dir "$OSH_STATE" \
  --no-ssh-config --refresh-ms 500
wait_until 15 grep -q "Tunnel is up" "$OSH_WORK/tunnel.log"
wait_until 5 grep -q "READY=1" "$OSH_WORK/notify.log"
cat "$OSH_WORK/notify.log"
check "READY=1 with a status line" grep -q "READY=1 | STATUS=tunnel osh0 is up" "$OSH_WORK/notify.log"
status_json() { ip netns exec "$NS_CLIENT" "$OSH_TUNNEL" status --state-dir "$OSH_STATE" --json; }
reachable() { status_json | /usr/bin/python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["gateway"]["reachable"] else 1)'; }
check "gateway reachable with token T1" reachable
check "curl through the tunnel" bash -c "ip netns exec $NS_CLIENT curl -fsS -o /dev/null --max-time $(osh_scaled 10) http://demo.local:8080/blob"

say "the gateway restarts with token T2: T1 is refused"
kill -TERM "$PID_gateway"
wait "$PID_gateway" || true
osh_gateway --bearer-token "$T2"
# The supervisor reconnects with upstream's backoff (1 s doubling to 30 s,
# protocol §3.1): a gateway that took 10 s to come back on a loaded machine
# was next tried 16 s later, so wait past one 30 s step.
wait_until 70 bash -c "[ \$(grep -c 'session accepted' '$OSH_WORK/supervisor.log') -ge 2 ]"
wait_until 15 bash -c "! ip netns exec $NS_CLIENT $OSH_TUNNEL status --state-dir $OSH_STATE --json | grep -q '\"reachable\":true'"
status_json >"$OSH_WORK/status.json"
check "status: unreachable, UNAUTHENTICATED" grep -q UNAUTHENTICATED "$OSH_WORK/status.json"

say "active_gateway = lab2 (token T2), then SIGHUP (systemctl reload)"
echo lab2 >"$CFG/active_gateway"
kill -HUP "$PID_tunnel"
wait_until 10 grep -q "reload: gateway .* answers" "$OSH_WORK/tunnel.log"
grep -E "SIGHUP|reload" "$OSH_WORK/tunnel.log" | sed 's/^/  log: /'
check "the tunnel is still running" kill -0 "$PID_tunnel"
check "bearer token replaced, from lab2's token file" grep -q "reload: bearer token replaced ($CFG/gateways/lab2/oidc_token.json)" "$OSH_WORK/tunnel.log"
check "no restart needed (same endpoint)" bash -c "! grep -q 'restart the tunnel' '$OSH_WORK/tunnel.log'"
wait_until 10 reachable
check "gateway reachable again with token T2" reachable
check "curl through the tunnel after the reload" bash -c "ip netns exec $NS_CLIENT curl -fsS -o /dev/null --max-time $(osh_scaled 10) http://demo.local:8080/blob"
wait_until 5 grep -q "READY=1 | STATUS=tunnel is up (configuration reloaded)" "$OSH_WORK/notify.log"
check "systemd heard RELOADING=1, then READY=1" /usr/bin/python3 -c '
import sys
lines = open(sys.argv[1]).read().splitlines()
r = [i for i, l in enumerate(lines) if "RELOADING=1" in l]
ok = [i for i, l in enumerate(lines) if "configuration reloaded" in l]
sys.exit(0 if r and ok and r[0] < ok[0] else 1)' "$OSH_WORK/notify.log"

say "an endpoint change needs a restart: reported, not applied"
gw_config lab2 "$T2" 17999
kill -HUP "$PID_tunnel"
wait_until 10 grep -q "endpoint changed (http://$OSH_GW_ADDR:$OSH_GW_PORT -> http://$OSH_GW_ADDR:17999)" "$OSH_WORK/tunnel.log"
check "warned: endpoint needs a restart" grep -q "restart the tunnel to use it" "$OSH_WORK/tunnel.log"
check "still reachable on the old endpoint" reachable

say "a broken config on SIGHUP keeps the running one"
echo '{"name":"lab2"}' >"$CFG/gateways/lab2/metadata.json"
kill -HUP "$PID_tunnel"
wait_until 10 grep -q "keeping the current configuration" "$OSH_WORK/tunnel.log"
check "logged the config error" grep -q "reload: .*metadata.json.*gateway_endpoint.*keeping the current configuration" "$OSH_WORK/tunnel.log"
check "still running and reachable" reachable

say "SIGTERM (systemctl stop): STOPPING=1 and the usual teardown"
kill -TERM "$PID_tunnel"
wait_rc "$PID_tunnel"
check "up exited 0" [ "$RC" = 0 ]
check "STOPPING=1" grep -q "STOPPING=1" "$OSH_WORK/notify.log"
check "TUN and names removed" grep -q "tunnel down, TUN and names removed" "$OSH_WORK/tunnel.log"
echo "PASS: service"
