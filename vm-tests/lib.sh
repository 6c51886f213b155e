# vm-tests/lib.sh: the test topology of docs/ARCHITECTURE.md "Test topology"
# (design.md §6), built from network namespaces this script creates and
# always deletes (call osh_cleanup from an EXIT trap).
#
#   ┌──────────── client ns ─────────────┐      ┌─────── gw ns ───────┐      ┌──────────── sbx ns ────────────┐
#   │ ssh, curl                          │      │                     │      │ mini-supervisor                │
#   │ openshell-tunnel up ── TUN osh0    │ veth │ mini-gateway :17670 │ veth │ sshd 127.0.0.1:22 (test key)   │
#   │ 198.18.0.1/16 fd00:6f73:6800::1/64 ├──────┤                     ├──────┤ http 127.0.0.1:8080 (64 MiB)   │
#   │ 192.0.2.1/24                       │      │ 192.0.2.2/24        │      │ 198.51.100.2/24                │
#   └────────────────────────────────────┘      │ 198.51.100.1/24     │      └────────────────────────────────┘
#                                               └─────────────────────┘
# Addresses are TEST-NET-1/2 (RFC 5737) on veths between our own namespaces;
# nothing is configured in the machine's own namespace and no traffic leaves
# these namespaces. Names are unique per run ($$), so runs never collide.
#
# Inputs (environment): OSH_TUNNEL, OSH_GATEWAY, OSH_SUPERVISOR = binaries;
# OSH_STREAM_FLAGS = extra flags for every `up` and `forward` the helpers
# start (e.g. "--forward-transport grpc" runs a test on the other transport).
# Helpers log each command they run in a namespace.

OSH_TAG="${OSH_TAG:-$$}"
NS_CLIENT="osh-c-$OSH_TAG"
NS_GW="osh-g-$OSH_TAG"
NS_SBX="osh-s-$OSH_TAG"
OSH_SANDBOX_NAME="${OSH_SANDBOX_NAME:-demo}"
OSH_SANDBOX_ID="${OSH_SANDBOX_ID:-8b1f0c8e-5a3d-4c1e-9f6a-2d7e4b9c0a11}"
OSH_GW_ADDR=192.0.2.2
OSH_GW_PORT=17670
OSH_WORK="$(mktemp -d /tmp/osh-vmtest.XXXXXX)"
OSH_PIDS=()
OSH_VERBOSE="${OSH_VERBOSE:-1}"
# No served user unless a test names one (--user): the tunnel's user file
# helper would otherwise write the test's ssh config as $SUDO_USER, who
# cannot enter this run's root-only work dir (cli/user_files.h).
unset SUDO_USER OPENSHELL_TUNNEL_USER
# The protocol matrix (issue 12.4; vm-tests/CMakeLists.txt registers the
# variants). OSH_PROTOCOL: the mini peers' wire generation, 0.1 (upstream's
# current line, the default) or 0.0. OSH_EXT=1: the mini-gateway offers the
# project's ForwardTcp extensions (connect-ack, fin-frame, relay-error),
# which the tunnel always asks for; OSH_EXT=0 (default): upstream behaviour.
OSH_PROTOCOL="${OSH_PROTOCOL:-0.1}"
OSH_EXT="${OSH_EXT:-0}"
# The flags that give the mini peers that behaviour (osh_gateway and
# osh_supervisor add them; tests that start peers by hand add them too).
osh_gateway_mode_flags() {
  echo --protocol "$OSH_PROTOCOL"
  [[ $OSH_EXT == 1 ]] && echo --tunnel-extensions
  return 0
}
osh_supervisor_mode_flags() { echo --protocol "$OSH_PROTOCOL"; }
# True when the gateway confirms the extensions (assertions that only hold
# with them use this; the rest assert upstream's documented behaviour).
osh_ext() { [[ $OSH_EXT == 1 ]]; }

say() { echo "[$(date +%T)] $*"; }
n_client() { [[ $OSH_VERBOSE == 1 ]] && echo "  client\$ $*" >&2; ip netns exec "$NS_CLIENT" "$@"; }
n_gw() { [[ $OSH_VERBOSE == 1 ]] && echo "  gw\$ $*" >&2; ip netns exec "$NS_GW" "$@"; }
n_sbx() { [[ $OSH_VERBOSE == 1 ]] && echo "  sbx\$ $*" >&2; ip netns exec "$NS_SBX" "$@"; }

# Starts "$@" in namespace $1 in the background, logging to $OSH_WORK/$2.log,
# and records its PID (ip netns exec execs the command: same PID).
osh_spawn() {
  local ns="$1" name="$2"
  shift 2
  # Remove the previous run's log first: the redirection below truncates it
  # only once the child runs, and a waiter could read the old content first.
  rm -f "$OSH_WORK/$name.log"
  ip netns exec "$ns" "$@" >"$OSH_WORK/$name.log" 2>&1 &
  OSH_PIDS+=("$!")
  eval "PID_${name//-/_}=$!"
}

# ---- load-scaled waits (issue 15.6) ----
# A wait for the system (a port listens, a log line appears, a connection
# recovers) gets a base timeout in seconds, scaled to the machine:
#   scale = min(OSH_WAIT_CAP, max(1, loadavg1 / nproc) * OSH_WAIT_SCALE)
# loadavg1 from $OSH_LOADAVG_FILE (default /proc/loadavg) is read when the
# wait starts and again on every poll: the deadline only grows when the
# load rises, never shrinks. OSH_WAIT_SCALE defaults to 3 in the sanitizer
# builds (OSH_SANITIZED=1, vm-tests/CMakeLists.txt) and 1 otherwise;
# OSH_WAIT_CAP (default 10) bounds the scale, so a real hang still fails.
# OSH_NPROC overrides the CPU count (for vm-tests/test_wait_helper.sh).
# Bounded waits in tests go through wait_until or osh_scaled; figures such
# as a recovery time are measured and printed (osh_now_ms, osh_since_s),
# not asserted.
OSH_NPROC="${OSH_NPROC:-$(nproc 2>/dev/null || echo 1)}"

# _osh_milli VALUE: sets _OSH_M to a decimal VALUE ("1.5", "10", "0.25") in
# thousandths, no fork (the polls below run every 0.1 s). Non-numbers give 0.
_osh_milli() {
  local v="$1" i f
  [[ $v =~ ^[0-9]*(\.[0-9]*)?$ && -n $v ]] || { _OSH_M=0; return; }
  i="${v%%.*}" f=""
  [[ $v == *.* ]] && f="${v#*.}"
  f="${f}000"
  _OSH_M=$((10#${i:-0} * 1000 + 10#${f:0:3}))
}

# _osh_fmt MILLI: sets _OSH_F to MILLI/1000 as a decimal ("2", "2.5", "0.125").
_osh_fmt() {
  local m="$1" r
  printf -v r '%03d' $((m % 1000))
  r="${r%0}" r="${r%0}" r="${r%0}"
  _OSH_F="$((m / 1000))${r:+.$r}"
}

# _osh_wait_scale: sets _OSH_SCALE (the scale in thousandths, capped) and
# _OSH_LOAD, _OSH_USER_SCALE, _OSH_CAPPED for the messages.
_osh_wait_scale() {
  local load rest factor cap
  load="0"
  read -r load rest 2>/dev/null <"${OSH_LOADAVG_FILE:-/proc/loadavg}" || load="0"
  _OSH_LOAD="$load"
  _osh_milli "$load"
  factor=$((_OSH_M / (OSH_NPROC > 0 ? OSH_NPROC : 1)))
  ((factor >= 1000)) || factor=1000
  if [[ -n ${OSH_WAIT_SCALE:-} ]]; then
    _OSH_USER_SCALE="$OSH_WAIT_SCALE"
  elif [[ ${OSH_SANITIZED:-0} == 1 ]]; then
    _OSH_USER_SCALE=3
  else
    _OSH_USER_SCALE=1
  fi
  _osh_milli "$_OSH_USER_SCALE"
  ((_OSH_M > 0)) || _OSH_M=1000
  _OSH_SCALE=$((factor * _OSH_M / 1000))
  _osh_milli "${OSH_WAIT_CAP:-10}"
  cap=$((_OSH_M > 0 ? _OSH_M : 10000))
  _OSH_CAPPED=0
  if ((_OSH_SCALE > cap)); then _OSH_SCALE=$cap _OSH_CAPPED=1; fi
}

# osh_now_ms: sets OSH_NOW_MS to a monotonic-enough wall clock in ms (no fork).
osh_now_ms() { OSH_NOW_MS=$((10#${EPOCHREALTIME//[.,]/} / 1000)); }

# The test's own deadline. ctest kills a test at its TIMEOUT property
# (vm-tests/CMakeLists.txt, which passes it as OSH_TEST_TIMEOUT) without a
# word, while a scaled wait may grow to OSH_WAIT_CAP x its base. So no wait
# runs past the deadline: TIMEOUT from the script's start, less a reserve
# for cleanup and the logs osh_cleanup prints (a tenth of it, at least
# 10 s); a wait cut short there fails with wait_until's message and says
# so. Unset or 0 (a script run by hand): no deadline.
osh_now_ms
OSH_TEST_START_MS="${OSH_TEST_START_MS:-$OSH_NOW_MS}"
OSH_TEST_TIMEOUT="${OSH_TEST_TIMEOUT:-0}"
_osh_reserve=$((OSH_TEST_TIMEOUT / 10 > 10 ? OSH_TEST_TIMEOUT / 10 : 10))
# OSH_DEADLINE_MS: absolute (osh_now_ms), 0 = none.
OSH_DEADLINE_MS=0
((OSH_TEST_TIMEOUT > 0)) && OSH_DEADLINE_MS=$((OSH_TEST_START_MS + (OSH_TEST_TIMEOUT - _osh_reserve) * 1000))
unset _osh_reserve

# osh_since_s T0_MS: prints the seconds since T0_MS (from osh_now_ms), "1.234".
osh_since_s() {
  osh_now_ms
  _osh_fmt $((OSH_NOW_MS - $1))
  echo "$_OSH_F"
}

# osh_scaled SECONDS: prints SECONDS scaled as wait_until scales it now,
# rounded up to whole seconds, for timeouts handed to other programs
# (tcptool/hostile.py --timeout, curl --max-time, timeout(1)) where they wait
# for the system.
osh_scaled() {
  local ms
  ms="$(osh_scaled_ms "$1")"
  # never past the test's deadline (above), but at least 1 s
  if ((OSH_DEADLINE_MS > 0)); then
    osh_now_ms
    ((ms <= OSH_DEADLINE_MS - OSH_NOW_MS)) || ms=$((OSH_DEADLINE_MS - OSH_NOW_MS))
    ((ms >= 1000)) || ms=1000
  fi
  echo $(((ms + 999) / 1000))
}

# osh_scaled_ms SECONDS: the same in milliseconds, not rounded.
osh_scaled_ms() {
  _osh_milli "$1"
  local base=$_OSH_M
  _osh_wait_scale
  echo $((base * _OSH_SCALE / 1000))
}

# osh_scale_factor: prints the scale itself ("1", "2.35"), for helpers that
# scale their own waits (hostile.py reads it as OSH_WAIT_FACTOR).
osh_scale_factor() {
  _osh_wait_scale
  _osh_fmt "$_OSH_SCALE"
  echo "$_OSH_F"
}

# check_within WHAT MEASURED_S BASE_S: asserts a measured duration (seconds,
# decimal) stayed below BASE_S scaled to the load: a bound that tells "not a
# hang, not a timeout" from the behaviour under test; prints both.
check_within() {
  local limit
  limit="$(osh_scaled_ms "$3")"
  _osh_fmt "$limit"
  check "$1 within $3 s (measured $2 s; bound scaled to $_OSH_F s)" \
    awk -v v="$2" -v l="$limit" 'BEGIN { exit !(v != "" && v * 1000 < l) }'
}

# wait_until SECONDS CMD...: polls CMD every 0.1 s until it succeeds or the
# load-scaled timeout passes (see above); SECONDS may be fractional. Sets
# WAIT_SECS to how long it waited ("0.3"). On timeout it prints the base,
# the scale, the load, and returns 1. It never waits past the test's
# deadline (OSH_TEST_TIMEOUT, above): cut short there, it says so.
wait_until() {
  _osh_milli "$1"
  local base=$_OSH_M start limit scale=0 load capped=0 cut=0
  shift
  osh_now_ms
  start=$OSH_NOW_MS
  while true; do
    if "$@" >/dev/null 2>&1; then
      osh_now_ms
      _osh_fmt $((OSH_NOW_MS - start))
      WAIT_SECS="$_OSH_F"
      return 0
    fi
    _osh_wait_scale
    if ((_OSH_SCALE > scale)); then scale=$_OSH_SCALE load="$_OSH_LOAD" capped=$_OSH_CAPPED; fi
    limit=$((base * scale / 1000)) cut=0
    if ((OSH_DEADLINE_MS > 0 && start + limit > OSH_DEADLINE_MS)); then
      limit=$((OSH_DEADLINE_MS - start)) cut=1
    fi
    osh_now_ms
    if ((OSH_NOW_MS - start >= limit)); then
      _osh_fmt $((OSH_NOW_MS - start))
      # shellcheck disable=SC2034 # read by the caller
      WAIT_SECS="$_OSH_F"
      local waited="$_OSH_F" b s
      _osh_fmt "$base"; b="$_OSH_F"
      _osh_fmt "$scale"; s="$_OSH_F"
      echo "timed out after ${waited}s (base ${b}s x scale $s: loadavg1 $load on $OSH_NPROC CPUs," \
        "OSH_WAIT_SCALE $_OSH_USER_SCALE, cap ${OSH_WAIT_CAP:-10}x$( ((capped)) && echo ', capped')) waiting for: $*" >&2
      ((cut)) && echo "  cut short at the test's deadline: ctest TIMEOUT ${OSH_TEST_TIMEOUT}s" \
        "(OSH_TEST_TIMEOUT) less a reserve for cleanup" >&2
      return 1
    fi
    sleep 0.1
  done
}

# proc_gone PID: true when PID has exited (gone, or a zombie not yet reaped:
# kill -0 still succeeds on those).
proc_gone() {
  local st
  st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  [[ -z $st ]] && return 0
  st="${st##*) }"
  [[ ${st%% *} == Z ]]
}

# True when TCP port $2 listens in namespace $1.
port_listens() { ip netns exec "$1" ss -Hltn "sport = :$2" | grep -q LISTEN; }

osh_cleanup() {
  local rc=$?
  set +e
  local i kill_polls
  kill_polls=$(($(osh_scaled_ms 5) / 100))
  for ((i = ${#OSH_PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${OSH_PIDS[i]}" 2>/dev/null
  done
  for ((i = ${#OSH_PIDS[@]} - 1; i >= 0; i--)); do
    local p="${OSH_PIDS[i]}" n=0
    # 5 s (load-scaled) for a clean exit: a sanitizer's exit report takes time
    while kill -0 "$p" 2>/dev/null && ((n < kill_polls)); do sleep 0.1; n=$((n + 1)); done
    kill -KILL "$p" 2>/dev/null
  done
  wait 2>/dev/null
  # A sanitizer report in any process's log fails the test (ASan/UBSan/TSan builds).
  if grep -lE "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: ThreadSanitizer" \
    "$OSH_WORK"/*.log 2>/dev/null; then
    echo "FAIL: sanitizer report in the logs above" >&2
    rc=1
  fi
  if ((rc != 0)); then
    for f in "$OSH_WORK"/*.log; do
      [[ -f $f ]] || continue
      echo "----- $(basename "$f") (last 40 lines) -----"
      tail -n 40 "$f"
    done
    # OSH_KEEP_DIR=DIR: keep a failed run's work dir (logs, state) for a post-mortem.
    if [[ -n ${OSH_KEEP_DIR:-} ]]; then
      mkdir -p "$OSH_KEEP_DIR" && cp -a "$OSH_WORK" "$OSH_KEEP_DIR/" &&
        echo "work dir kept in $OSH_KEEP_DIR/$(basename "$OSH_WORK")"
    fi
  fi
  ip netns del "$NS_CLIENT" 2>/dev/null
  ip netns del "$NS_GW" 2>/dev/null
  ip netns del "$NS_SBX" 2>/dev/null
  rm -rf "/etc/netns/$NS_CLIENT" "$OSH_WORK"
  if [[ ${OSH_MADE_ETC_NETNS:-0} == 1 ]]; then rmdir /etc/netns 2>/dev/null || true; fi  # only if empty
  return $rc
}

osh_topology() {
  say "creating namespaces $NS_CLIENT, $NS_GW, $NS_SBX"
  ip netns add "$NS_CLIENT"
  ip netns add "$NS_GW"
  ip netns add "$NS_SBX"
  for ns in "$NS_CLIENT" "$NS_GW" "$NS_SBX"; do ip -n "$ns" link set lo up; done
  ip link add "vc$OSH_TAG" netns "$NS_CLIENT" type veth peer name "vg$OSH_TAG" netns "$NS_GW"
  ip link add "vs$OSH_TAG" netns "$NS_SBX" type veth peer name "vh$OSH_TAG" netns "$NS_GW"
  ip -n "$NS_CLIENT" addr add 192.0.2.1/24 dev "vc$OSH_TAG"
  ip -n "$NS_GW" addr add 192.0.2.2/24 dev "vg$OSH_TAG"
  ip -n "$NS_GW" addr add 198.51.100.1/24 dev "vh$OSH_TAG"
  ip -n "$NS_SBX" addr add 198.51.100.2/24 dev "vs$OSH_TAG"
  ip -n "$NS_CLIENT" link set "vc$OSH_TAG" up
  ip -n "$NS_GW" link set "vg$OSH_TAG" up
  ip -n "$NS_GW" link set "vh$OSH_TAG" up
  ip -n "$NS_SBX" link set "vs$OSH_TAG" up
  # The client namespace's own hosts file (ip netns exec bind-mounts it on /etc/hosts).
  [[ -d /etc/netns ]] || OSH_MADE_ETC_NETNS=1
  mkdir -p "/etc/netns/$NS_CLIENT"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"/etc/netns/$NS_CLIENT/hosts"
  OSH_HOSTS="/etc/netns/$NS_CLIENT/hosts"
}

# osh_routed_namespace NS: a namespace NS behind the client namespace, as a
# container or a VM is behind its host: veth (NS 203.0.113.2/24, client
# 203.0.113.1/24, TEST-NET-3), NS's route to the IPv4 prefix via the client,
# IPv4 forwarding on in the client namespace. The caller deletes NS (trap).
osh_routed_namespace() {
  local ns="$1"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "vv$OSH_TAG" netns "$ns" type veth peer name "vw$OSH_TAG" netns "$NS_CLIENT"
  ip -n "$ns" addr add 203.0.113.2/24 dev "vv$OSH_TAG"
  ip -n "$NS_CLIENT" addr add 203.0.113.1/24 dev "vw$OSH_TAG"
  ip -n "$ns" link set "vv$OSH_TAG" up
  ip -n "$NS_CLIENT" link set "vw$OSH_TAG" up
  ip -n "$ns" route add 198.18.0.0/16 via 203.0.113.1
  ip netns exec "$NS_CLIENT" sysctl -qw net.ipv4.ip_forward=1
}

# sshd on 127.0.0.1:22 and an HTTP server on 127.0.0.1:8080 in the sandbox,
# with a key and a 64 MiB file generated for this run.
osh_sandbox_services() {
  local blob_mib="${1:-64}"
  say "sandbox: sshd on 127.0.0.1:22 and HTTP on 127.0.0.1:8080 (${blob_mib} MiB blob)"
  mkdir -p "$OSH_WORK/www" "$OSH_WORK/ssh"
  ssh-keygen -q -t ed25519 -N '' -f "$OSH_WORK/ssh/host_key" -C osh-test-host
  ssh-keygen -q -t ed25519 -N '' -f "$OSH_WORK/ssh/id_test" -C osh-test-user
  cp "$OSH_WORK/ssh/id_test.pub" "$OSH_WORK/ssh/authorized_keys"
  cat >"$OSH_WORK/ssh/sshd_config" <<SSHD
Port 22
ListenAddress 127.0.0.1
HostKey $OSH_WORK/ssh/host_key
AuthorizedKeysFile $OSH_WORK/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
Subsystem sftp internal-sftp
SSHD
  mkdir -p /run/sshd  # privilege-separation directory sshd insists on
  osh_spawn "$NS_SBX" sshd /usr/sbin/sshd -D -e -f "$OSH_WORK/ssh/sshd_config"
  head -c "$((blob_mib * 1024 * 1024))" /dev/urandom >"$OSH_WORK/www/blob"
  OSH_BLOB_SHA="$(sha256sum "$OSH_WORK/www/blob" | cut -d' ' -f1)"
  osh_spawn "$NS_SBX" http /usr/bin/python3 -m http.server 8080 --bind 127.0.0.1 --directory "$OSH_WORK/www"
  wait_until 10 port_listens "$NS_SBX" 22
  wait_until 10 port_listens "$NS_SBX" 8080
}

osh_gateway() {
  say "gateway: mini-gateway on $OSH_GW_ADDR:$OSH_GW_PORT, sandbox $OSH_SANDBOX_NAME=$OSH_SANDBOX_ID" \
    "(protocol $OSH_PROTOCOL, extensions $(osh_ext && echo offered || echo off))"
  # shellcheck disable=SC2046 # one flag per word
  osh_spawn "$NS_GW" gateway "$OSH_GATEWAY" --listen "0.0.0.0:$OSH_GW_PORT" \
    --sandbox "$OSH_SANDBOX_NAME=$OSH_SANDBOX_ID" $(osh_gateway_mode_flags) "$@"
  wait_until 10 port_listens "$NS_GW" "$OSH_GW_PORT"
}

osh_supervisor() {
  say "sandbox: mini-supervisor -> http://198.51.100.1:$OSH_GW_PORT"
  # shellcheck disable=SC2046
  osh_spawn "$NS_SBX" supervisor "$OSH_SUPERVISOR" --gateway-endpoint "http://198.51.100.1:$OSH_GW_PORT" \
    --sandbox-id "$OSH_SANDBOX_ID" --ssh-target 127.0.0.1:22 $(osh_supervisor_mode_flags)
  wait_until 15 grep -q "session accepted" "$OSH_WORK/supervisor.log"
}

osh_tunnel() {
  say "client: openshell-tunnel up --gateway-endpoint http://$OSH_GW_ADDR:$OSH_GW_PORT"
  # Every file the tunnel writes is in this run's work dir: state, control
  # socket, and the ssh config that gets the Include (never ~/.ssh/config).
  OSH_STATE="$OSH_WORK/state"
  OSH_SSH_CONFIG="$OSH_WORK/ssh/user_config"
  # shellcheck disable=SC2086 # OSH_STREAM_FLAGS: words, e.g. "--forward-transport grpc"
  osh_spawn "$NS_CLIENT" tunnel "$OSH_TUNNEL" up --gateway-endpoint "http://$OSH_GW_ADDR:$OSH_GW_PORT" \
    --hosts-file "$OSH_HOSTS" --state-dir "$OSH_STATE" --ssh-config "$OSH_SSH_CONFIG" ${OSH_STREAM_FLAGS:-} "$@"
  wait_until 15 grep -q "Tunnel is up" "$OSH_WORK/tunnel.log"
}

# ssh through the tunnel with the test key and no host-key pinning (the
# sandbox's host key changes with every supervisor start, protocol §3.3).
osh_ssh() {
  n_client ssh -F /dev/null -i "$OSH_WORK/ssh/id_test" -o BatchMode=yes \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -o ConnectTimeout="$(osh_scaled 10)" "$@"
}

# ---- helpers for semantics tests ----
OSH_TCPTOOL="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tcptool.py"

# jfield JSON KEY: one field of a JSON object ("" when absent).
jfield() { /usr/bin/python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2], ""); print(str(v).lower() if isinstance(v, bool) else v)' "$1" "$2"; }

# The sha256 of the first N bytes of tcptool's test stream.
expect_sha() { /usr/bin/python3 "$OSH_TCPTOOL" expect --bytes "$1"; }

# tcptool in the sandbox (server) or the client namespace.
sbx_tcp_server() {  # NAME PORT MODE [args...]
  local name="$1" port="$2" mode="$3"
  shift 3
  osh_spawn "$NS_SBX" "$name" /usr/bin/python3 "$OSH_TCPTOOL" serve --port "$port" --mode "$mode" \
    --report "$OSH_WORK/$name.report" "$@"
  wait_until 10 port_listens "$NS_SBX" "$port"
}
# client_tcp CMD ARGS...: tcptool's default --timeout (15 s, how long a
# client waits for the system) is load-scaled; an explicit --timeout wins.
client_tcp() {
  ip netns exec "$NS_CLIENT" /usr/bin/python3 "$OSH_TCPTOOL" "$1" --timeout "$(osh_scaled 15)" "${@:2}"
}

# Resident set size of a process, KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# parallel_downloads N: N curl downloads of the sandbox's /blob at once
# through the tunnel; prints each failure and sets BAD to how many were not
# intact (sha256).
parallel_downloads() {
  local n="$1" i pids=() max
  max="$(osh_scaled 120)"
  for i in $(seq 1 "$n"); do
    (ip netns exec "$NS_CLIENT" curl -4 -sS --max-time "$max" http://demo.local:8080/blob 2>"$OSH_WORK/c$i.err" |
      sha256sum | cut -d' ' -f1 >"$OSH_WORK/s$i") &
    pids+=("$!")
  done
  wait "${pids[@]}" || true
  BAD=0
  for i in $(seq 1 "$n"); do
    [[ "$(cat "$OSH_WORK/s$i")" == "$OSH_BLOB_SHA" ]] || { BAD=$((BAD + 1)); echo "  download $i: $(cat "$OSH_WORK/c$i.err")"; }
  done
}

# check_refused_after_queue_bound HOST PORT: a connection to HOST:PORT is
# refused (ECONNREFUSED) after about a 1.5 s --queue-timeout-ms, not at once
# (the lower bound is the behaviour; the upper one is load-scaled).
check_refused_after_queue_bound() {
  local out
  out="$(client_tcp connect --host "$1" --port "$2" --timeout "$(osh_scaled 10)")"
  echo "  $out"
  check "refused (ECONNREFUSED)" [ "$(jfield "$out" error)" = ECONNREFUSED ]
  check "after waiting at least the queue bound (measured $(jfield "$out" error_ms) ms)" \
    /usr/bin/python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 1400 else 1)" "$(jfield "$out" error_ms)"
  check_within "refused after the queue bound, not a hang:" "$(jfield "$out" elapsed_s)" 5
}

# forward_start NAME LOCAL TARGET: starts `forward` in the client namespace
# (gateway: the topology's mini-gateway) and sets FWD_PORT to the local port
# it printed.
forward_start() {
  local name="$1"
  # shellcheck disable=SC2086 # OSH_STREAM_FLAGS: as osh_tunnel
  osh_spawn "$NS_CLIENT" "$name" "$OSH_TUNNEL" forward --gateway-endpoint "http://$OSH_GW_ADDR:$OSH_GW_PORT" \
    ${OSH_STREAM_FLAGS:-} "$2" "$3"
  wait_until 15 grep -q "✓ Forwarding" "$OSH_WORK/$name.log"
  FWD_PORT="$(sed -n 's/^✓ Forwarding .*:\([0-9]*\) -> .*/\1/p' "$OSH_WORK/$name.log" | head -n1)"
  [[ -n $FWD_PORT ]] || fail "no port in $(cat "$OSH_WORK/$name.log")"
  echo "  $(grep "✓ Forwarding" "$OSH_WORK/$name.log")"
}

# wait_rc PID: waits for a child process and sets RC to its exit status
# (without tripping set -e).
wait_rc() { RC=0; wait "$1" || RC=$?; }

# Stops the tunnel with SIGTERM and waits for it (its log then holds the counters line).
stop_tunnel() {
  kill -TERM "$PID_tunnel"
  wait "$PID_tunnel"
}

# tunnel_counter NAME: a counter from the tunnel's final "counters:" log line.
tunnel_counter() { grep -o "[ ]$1=[0-9]*" "$OSH_WORK/tunnel.log" | tail -n1 | cut -d= -f2; }

# The tunnel's addresses for the demo sandbox, from the hosts block.
sandbox_v4() { awk -v n="$OSH_SANDBOX_NAME.local" '$2 == n && $1 ~ /\./ {print $1; exit}' "$OSH_HOSTS"; }
sandbox_v6() { awk -v n="$OSH_SANDBOX_NAME.local" '$2 == n && $1 ~ /:/ {print $1; exit}' "$OSH_HOSTS"; }

fail() { echo "FAIL: $*" >&2; exit 1; }
check() {  # check DESCRIPTION COMMAND...
  local what="$1"
  shift
  if "$@"; then echo "  ok: $what"; else fail "$what"; fi
}
