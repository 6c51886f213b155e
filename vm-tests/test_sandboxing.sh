#!/usr/bin/env bash
# The data plane's confinement (issue 14.6, docs/THREAT_MODEL.md "What a
# memory bug can still reach"): in a running `up`, the threads that parse
# packets (the stack reader "osh-stack" and lwIP's tcpip thread "osh-tcpip")
# have no capabilities and a seccomp filter (Seccomp: 2), the main thread has
# neither change; the process is not dumpable (a root shell without
# CAP_SYS_PTRACE cannot attach to it with strace); and a
# full data-path session passes with the filter on: ssh and HTTP downloads
# over IPv4 and IPv6, DNS A/AAAA over both, ping over both, status and
# SIGHUP reload, then a clean exit 0 (a call outside the allow-list would
# have killed the process with SIGSYS). That a forbidden call kills is
# tests/common/thread_sandbox_test.cc (the same installer, in a forked child).
set -euo pipefail
command -v strace >/dev/null || { echo "SKIP: strace is not installed (scripts/install-deps.sh installs it)"; exit 77; }
command -v capsh >/dev/null || { echo "SKIP: capsh is not installed (libcap2-bin)"; exit 77; }
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

osh_topology
osh_sandbox_services 8
osh_spawn "$NS_SBX" http6 /usr/bin/python3 -m http.server 8081 --bind ::1 --directory "$OSH_WORK/www"
wait_until 10 port_listens "$NS_SBX" 8081
osh_gateway
osh_supervisor
osh_tunnel --refresh-ms 500
pid="$PID_tunnel"
check "up (pid $pid) runs" kill -0 "$pid"

# task_field NAME FIELD: FIELD of the thread called NAME ("main": the main thread).
task_field() {
  local t
  if [[ $1 == main ]]; then
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$pid/task/$pid/status"
    return
  fi
  for t in /proc/"$pid"/task/*; do
    if [[ "$(cat "$t/comm" 2>/dev/null)" == "$1" ]]; then
      awk -v f="$2:" '$1 == f {print $2}' "$t/status"
      return
    fi
  done
  echo "no-thread-$1"
}

say "the packet-parsing threads are confined, the others are not"
for t in /proc/"$pid"/task/*; do
  printf '  %-16s %s\n' "$(cat "$t/comm")" "$(grep -E '^(CapEff|Seccomp):' "$t/status" | tr -s '\t\n' '  ')"
done
for t in osh-stack osh-tcpip; do
  check "$t: CapEff 0" [ "$(task_field "$t" CapEff)" = 0000000000000000 ]
  check "$t: CapPrm 0" [ "$(task_field "$t" CapPrm)" = 0000000000000000 ]
  check "$t: seccomp filter (Seccomp: 2)" [ "$(task_field "$t" Seccomp)" = 2 ]
done
check "main thread: no filter of ours (Seccomp: 0)" [ "$(task_field main Seccomp)" = 0 ]
check "main thread keeps its capabilities" [ "$(task_field main CapEff)" != 0000000000000000 ]
# The upstream dispatch thread makes the gRPC calls the confined threads may not.
check "osh-dispatch: no filter of ours (Seccomp: 0)" [ "$(task_field osh-dispatch Seccomp)" = 0 ]
check "NoNewPrivs on the confined threads" [ "$(task_field osh-stack NoNewPrivs)" = 1 ]

say "not dumpable: attaching needs CAP_SYS_PTRACE, even for uid 0 with a superset of its capabilities"
# (A dumpable process of the same uid, whose capabilities the tracer has,
# could be attached to without CAP_SYS_PTRACE.)
capsh --drop=cap_sys_ptrace -- -c "timeout $(osh_scaled 2) strace -qq -e trace=none -p $pid" >"$OSH_WORK/attach.txt" 2>&1 || true
cat "$OSH_WORK/attach.txt"
check "ptrace attach refused (EPERM)" grep -q "Operation not permitted" "$OSH_WORK/attach.txt"

say "a full data-path session with the filter on"
V4="$(sandbox_v4)"
V6="$(sandbox_v6)"
DIG=(dig +short "+time=$(osh_scaled 2)" +tries=3)
check "A over IPv4" [ "$(n_client "${DIG[@]}" @198.18.0.2 demo.local A)" = "$V4" ]
check "AAAA over IPv6" [ "$(n_client "${DIG[@]}" @fd00:6f73:6800::2 demo.local AAAA)" = "$V6" ]
check "ssh -4" [ "$(osh_ssh -4 root@demo.local echo v4-ok)" = v4-ok ]
check "ssh -6" [ "$(osh_ssh -6 root@demo.local echo v6-ok)" = v6-ok ]
for fam in 4 6; do
  port=$([[ $fam == 4 ]] && echo 8080 || echo 8081)
  sum="$(n_client curl "-$fam" -sS --max-time "$(osh_scaled 30)" "http://demo.local:$port/blob" | sha256sum | cut -d' ' -f1)"
  check "download intact over IPv$fam" [ "$sum" = "$OSH_BLOB_SHA" ]
done
check "ping -4" n_client ping -4 -c 1 -W "$(osh_scaled 2)" demo.local
check "ping -6" n_client ping -6 -c 1 -W "$(osh_scaled 2)" demo.local
n_client "$OSH_TUNNEL" status --state-dir "$OSH_STATE" >/dev/null
kill -HUP "$pid"
wait_until 15 grep -q "reload: gateway" "$OSH_WORK/tunnel.log"
check "still running after the session" kill -0 "$pid"
kill -TERM "$pid"
wait_rc "$pid"
check "up exited 0 (no SIGSYS: status $RC)" [ "$RC" = 0 ]
say "PASS: sandboxing"
