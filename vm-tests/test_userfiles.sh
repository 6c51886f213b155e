#!/usr/bin/env bash
# The served user's files (issue 14.1) and the daemon's capabilities (14.6),
# with a throwaway user (useradd, deleted on exit) whose home is in this
# run's work dir (never the machine's real ~/.ssh or /etc/hosts):
#   - a symlink at ~/.ssh/config to a root-only file is refused, the file
#     it names is unchanged;
#   - missing ~/.ssh and config are created by the user (0700/0600, owned by
#     the user); the Include target ~/.ssh/openshell-tunnel.conf is the
#     user's, lists only the served names and follows the sandbox set;
#   - ssh as the user, without flags, to a sandbox whose host key is the
#     gateway's fingerprint works with StrictHostKeyChecking; after the
#     gateway reports another fingerprint, ssh refuses the host;
#   - the daemon keeps CAP_NET_ADMIN and CAP_DAC_READ_SEARCH only, its file
#     helper runs as the user with no capability;
#   - after kill -9, `down` removes the block and the target as the user.
set -euo pipefail
export OSH_PROTOCOL=0.1  # Sandbox.host_key_fingerprint is a 0.1 field
source "$(dirname "$0")/lib.sh"
U="osh-u-$OSH_TAG"
cleanup() {
  osh_cleanup
  local rc=$?
  userdel -f "$U" 2>/dev/null || true
  return $rc
}
trap cleanup EXIT

osh_topology
osh_sandbox_services 1
ssh-keygen -q -t ed25519 -N '' -f "$OSH_WORK/ssh/other_key" -C osh-test-other
GW_CONFIG="$OSH_WORK/gateway.json"
gw_config() {  # gw_config HOST_KEY_FILE [extra sandbox json]
  printf '{"sandboxes":[{"name":"%s","id":"%s","host_key_file":"%s"}%s]}\n' \
    "$OSH_SANDBOX_NAME" "$OSH_SANDBOX_ID" "$1" "${2:-}" >"$GW_CONFIG"
}
gw_config "$OSH_WORK/ssh/host_key.pub"
# shellcheck disable=SC2046 # one flag per word
osh_spawn "$NS_GW" gateway "$OSH_GATEWAY" --listen "0.0.0.0:$OSH_GW_PORT" --config "$GW_CONFIG" \
  $(osh_gateway_mode_flags)
wait_until 10 port_listens "$NS_GW" "$OSH_GW_PORT"
osh_supervisor

say "throwaway user $U, home in the work dir"
chmod 755 "$OSH_WORK"
H="$OSH_WORK/home"
useradd -M -d "$H" -s /bin/sh -U "$U"
mkdir -m 700 "$H"
chown "$U:$U" "$H"
UID_U="$(id -u "$U")"
as_user() { ip netns exec "$NS_CLIENT" runuser -u "$U" -- "$@"; }
OSH_STATE="$OSH_WORK/state"
start_tunnel() {
  osh_spawn "$NS_CLIENT" tunnel "$OSH_TUNNEL" up --gateway-endpoint "http://$OSH_GW_ADDR:$OSH_GW_PORT" \
    --hosts-file "$OSH_HOSTS" --state-dir "$OSH_STATE" --user "$U" --refresh-ms 500
  wait_until 15 grep -q "Tunnel is up" "$OSH_WORK/tunnel.log"
}

say "a symlink at ~/.ssh/config to a root-only file is not followed"
mkdir -m 700 "$H/.ssh"
printf 'root only\n' >"$OSH_WORK/root-only"
chmod 600 "$OSH_WORK/root-only"
ln -s "$OSH_WORK/root-only" "$H/.ssh/config"
chown -h "$U:$U" "$H/.ssh" "$H/.ssh/config"
start_tunnel
check "the root-only file is unchanged" [ "$(cat "$OSH_WORK/root-only")" = "root only" ]
check "~/.ssh/config is still the symlink" test -L "$H/.ssh/config"
check "the refusal is logged" grep -q "symbolic link; refusing" "$OSH_WORK/tunnel.log"
stop_tunnel

say "missing ~/.ssh and config: created by the user"
rm -rf "$H/.ssh"
start_tunnel
pid="$PID_tunnel"
check "~/.ssh is the user's, 0700" [ "$(stat -c '%U %a' "$H/.ssh")" = "$U 700" ]
check "~/.ssh/config is the user's, 0600" [ "$(stat -c '%U %a' "$H/.ssh/config")" = "$U 600" ]
INC="$H/.ssh/openshell-tunnel.conf"
check "the Include target is the user's" [ "$(stat -c '%U' "$INC")" = "$U" ]
check "the Include names the target" grep -q "^Include \"$INC\"" "$H/.ssh/config"
check "the user can read the target" as_user cat "$INC"
check "it lists demo.local" grep -qx "Host $OSH_SANDBOX_NAME.local" "$INC"
check "and nothing else (no wildcard)" [ "$(grep -c '^Host ' "$INC")" = 1 ]
check "demo.local is checked strictly" grep -q "StrictHostKeyChecking yes" "$INC"

say "capabilities: the daemon keeps NET_ADMIN and DAC_READ_SEARCH only; the helper is the user"
grep -E "^(CapEff|CapBnd)" "/proc/$pid/status"
check "daemon CapEff 0x1004" [ "$(awk '/^CapEff/ {print $2}' "/proc/$pid/status")" = 0000000000001004 ]
check "no thread has more" bash -c "! grep -h '^CapEff' /proc/$pid/task/*/status | grep -v 0000000000001004"
helper="$(ps -o pid= --ppid "$pid" | tr -d ' ' | head -n1)"
check "a file helper runs ($helper)" [ -n "$helper" ]
check "the helper is uid $UID_U" [ "$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$helper/status")" = \
  "$UID_U $UID_U $UID_U $UID_U" ]
check "the helper has no capability" [ "$(awk '/^CapEff/ {print $2}' "/proc/$helper/status")" = 0000000000000000 ]
check "and no way to get one" [ "$(awk '/^NoNewPrivs/ {print $2}' "/proc/$helper/status")" = 1 ]

say "ssh as the user without flags: the host key is the gateway's fingerprint"
install -o "$U" -m 600 "$OSH_WORK/ssh/id_test" "$H/id_test"
user_ssh() {
  as_user ssh -i "$H/id_test" -o BatchMode=yes -o ConnectTimeout="$(osh_scaled 10)" "root@$OSH_SANDBOX_NAME.local" "$@"
}
out="$(user_ssh echo pinned-ok 2>"$OSH_WORK/ssh-ok.err")"
check "ssh works with strict host key checking" [ "$out" = pinned-ok ]
check "and nothing was refused on the way" bash -c "! grep -q refusing '$OSH_WORK/ssh-ok.err'"

say "the sandbox set changes: the Include target follows"
gw_config "$OSH_WORK/ssh/host_key.pub" ',{"name":"second","id":"0d1e2f30-0000-4000-8000-000000000002"}'
kill -HUP "$PID_gateway"
wait_until 15 grep -qx "Host second.local" "$INC"
check "second.local listed (not pinned: no fingerprint)" grep -qx "Host second.local" "$INC"
gw_config "$OSH_WORK/ssh/host_key.pub"
kill -HUP "$PID_gateway"
wait_until 15 bash -c "! grep -q second.local '$INC'"
check "second.local gone again" bash -c "! grep -q second.local '$INC'"
check "still the user's file" [ "$(stat -c '%U' "$INC")" = "$U" ]

say "the gateway reports another fingerprint: ssh refuses the sandbox"
OTHER_FP="$(ssh-keygen -lf "$OSH_WORK/ssh/other_key.pub" | awk '{print $2}')"
gw_config "$OSH_WORK/ssh/other_key.pub"
kill -HUP "$PID_gateway"
wait_until 15 grep -qF "$OTHER_FP" "$INC"
if out="$(user_ssh echo should-not-run 2>&1)"; then fail "ssh accepted a host key that is not the gateway's: $out"; fi
echo "$out" | sed 's/^/    /'
check "host key verification failed" grep -q "Host key verification failed" <<<"$out"
check "our KnownHostsCommand said why" grep -q "is not the one the gateway reports" <<<"$out"

say "kill -9: the helper goes with the daemon; down removes the block as the user"
kill -KILL "$pid"
wait_until 10 proc_gone "$pid"
wait_until 10 proc_gone "$helper"
check "the block is still there after the crash" grep -q "^Include" "$H/.ssh/config"
ip netns exec "$NS_CLIENT" "$OSH_TUNNEL" down --state-dir "$OSH_STATE"
check "down removed the Include block" bash -c "! grep -q Include '$H/.ssh/config'"
check "down removed the Include target" test ! -e "$INC"
check "~/.ssh/config is still the user's, 0600" [ "$(stat -c '%U %a' "$H/.ssh/config")" = "$U 600" ]
say "PASS"
