#!/usr/bin/env bash
# The packaged unit's SystemCallFilter= against what `up` really calls
# (issue 17.2): systemd kills a service with SIGSYS (or fails the call with
# SystemCallErrorNumber=) on a system call outside its filter, and there is
# no systemd as PID 1 on the test machines to find out. So: `up` runs under
# strace -f through a session that uses every part of it (start-up with the
# resolved registration attempt, ssh and HTTP through the tunnel, DNS, ICMP
# echo, status on the control socket, SIGHUP reload, sandbox refresh, down),
# and every system call it made must be in the filter the unit names
# (packaging/openshell-tunnel.service, expanded with systemd-analyze
# syscall-filter, nested groups included).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
UNIT="$HERE/../packaging/openshell-tunnel.service"
# The sanitizer runtimes make system calls of their own; the package ships the plain build.
[[ ${OSH_SANITIZED:-0} == 1 ]] && { echo "SKIP: sanitizer build (its runtime's system calls are not the daemon's)"; exit 77; }
command -v strace >/dev/null || { echo "SKIP: strace is not installed (scripts/install-deps.sh installs it)"; exit 77; }
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze is not installed"; exit 77; }
source "$HERE/lib.sh"
trap osh_cleanup EXIT

filter="$(sed -n 's/^SystemCallFilter=//p' "$UNIT")"
[[ -n $filter ]] || fail "no SystemCallFilter= in $UNIT"
say "the unit's SystemCallFilter=$filter, expanded"
# systemd-analyze syscall-filter prints every group: "@name" headers, then
# indented members (syscalls or nested "@groups").
systemd-analyze syscall-filter >"$OSH_WORK/groups.txt"
/usr/bin/python3 - "$OSH_WORK/groups.txt" $filter >"$OSH_WORK/allowed.txt" <<'PY'
import sys
groups, cur = {}, None
for ln in open(sys.argv[1]):
    s = ln.strip()
    if not s or s.startswith("#"):
        continue
    if not ln[0].isspace() and s.startswith("@"):
        cur = s
        groups[cur] = []
    elif cur:
        groups[cur].append(s)
def expand(item, seen):
    if not item.startswith("@"):
        return {item}
    if item in seen:
        return set()
    seen.add(item)
    out = set()
    for m in groups.get(item, []):
        out |= expand(m, seen)
    return out
allowed = set()
for item in sys.argv[2:]:
    allowed |= expand(item, set())
print("\n".join(sorted(allowed)))
PY
echo "  $(wc -l <"$OSH_WORK/allowed.txt") system calls allowed"

osh_topology
osh_sandbox_services 1
osh_gateway
osh_supervisor
say "up under strace -f"
OSH_STATE="$OSH_WORK/state"
osh_spawn "$NS_CLIENT" tunnel strace -f -qq -o "$OSH_WORK/strace.txt" "$OSH_TUNNEL" up \
  --gateway-endpoint "http://$OSH_GW_ADDR:$OSH_GW_PORT" --hosts-file "$OSH_HOSTS" --state-dir "$OSH_STATE" \
  --ssh-config "$OSH_WORK/ssh/user_config" --refresh-ms 500
wait_until 30 grep -q "Tunnel is up" "$OSH_WORK/tunnel.log"
osh_ssh root@demo.local true
n_client curl -4 -fsS -o /dev/null --max-time "$(osh_scaled 20)" http://demo.local:8080/blob  # the server is IPv4-only
n_client dig +short "+time=$(osh_scaled 2)" +tries=1 @198.18.0.2 demo.local A >/dev/null
n_client ping -c 1 -W 2 198.18.0.2 >/dev/null || true
n_client "$OSH_TUNNEL" status --state-dir "$OSH_STATE" >/dev/null
# The tunnel's own PID (PID_tunnel is strace's): state.json has it.
tpid="$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$OSH_STATE/state.json")"
kill -HUP "$tpid"
wait_until 15 grep -q "reload: gateway" "$OSH_WORK/tunnel.log"
sleep "$(osh_scaled 1)"
n_client "$OSH_TUNNEL" down --state-dir "$OSH_STATE"
wait_rc "$PID_tunnel"
check "up (under strace) exited 0" [ "$RC" = 0 ]

# Syscall names from strace's lines: "PID name(args..." (also "<... name resumed>").
sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p; s/^[0-9]+ +<\.\.\. ([a-z0-9_]+) resumed>.*/\1/p' "$OSH_WORK/strace.txt" |
  sort -u >"$OSH_WORK/used.txt"
# strace's own start: the execve of the tunnel happens before the filter would apply.
echo "  up made $(wc -l <"$OSH_WORK/used.txt") distinct system calls: $(tr '\n' ' ' <"$OSH_WORK/used.txt")"
outside="$(comm -23 "$OSH_WORK/used.txt" "$OSH_WORK/allowed.txt" | grep -vx execve || true)"
if [[ -n $outside ]]; then
  for s in $outside; do echo "  outside the filter: $s ($(grep -cE "^[0-9]+ +$s\(" "$OSH_WORK/strace.txt") calls)"; done
  fail "system calls outside SystemCallFilter=$filter: $(echo $outside)"
fi
echo "  ok: every system call is in SystemCallFilter=$filter"
# The confined threads (issue 14.6, common/thread_sandbox.cc): what they
# called after their seccomp() call, for the allow-list's record (a call
# outside it would have killed `up`, which exited 0 above).
for name in osh-stack osh-tcpip; do
  tid="$(sed -nE "s/^([0-9]+) +prctl\(PR_SET_NAME, \"$name\".*/\1/p" "$OSH_WORK/strace.txt" | head -n1)"
  [[ -n $tid ]] || fail "no thread named $name in the trace"
  # After its last seccomp() (libseccomp probes the kernel with a few first).
  calls="$(awk -v t="$tid" '$1 == t' "$OSH_WORK/strace.txt" | tac | sed '/seccomp(/,$d' | tac |
    sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p; s/^[0-9]+ +<\.\.\. ([a-z0-9_]+) resumed>.*/\1/p' | sort | uniq -c |
    awk '{printf "%s(%s) ", $2, $1}')"
  echo "  $name (tid $tid) under its filter: $calls"
done
echo "PASS: syscalls"
