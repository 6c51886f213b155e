#!/usr/bin/env bash
# One daemon per state directory (issue 14.4).
#
#   client ns:  openshell-tunnel up ─┐ (same --state-dir, started together)
#               openshell-tunnel up ─┴─► flock <state-dir>/lock ──► gateway
#
#   - two `up`s started at the same moment, 3 rounds: exactly one runs, the
#     other exits 3 and says another tunnel holds the state directory; the
#     state file names the one that runs (pid, boot id, start time from
#     /proc) and `down` stops it;
#   - a stale state file whose pid now belongs to another process (the
#     tunnel was killed with SIGKILL, and the pid is pointed at an imposter:
#     a copy of sleep named openshell-tunnel) is not taken for the tunnel:
#     `status` says the recorded pid died, `down` cleans up without touching
#     the imposter, and the next `up` starts;
#   - a stale state file of another state directory that names the live
#     tunnel's TUN (osh0, with carrier): neither its `down` nor its `up`
#     deletes it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT

osh_topology
osh_gateway
osh_supervisor
OSH_STATE="$OSH_WORK/state"
up_args=(up --gateway-endpoint "http://$OSH_GW_ADDR:$OSH_GW_PORT" --hosts-file "$OSH_HOSTS"
  --state-dir "$OSH_STATE" --no-ssh-config)

state_field() {
  /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' \
    "$OSH_STATE/state.json" "$1"
}
# The start time (proc(5) field 22) of PID now.
start_time() { local st; st="$(cat "/proc/$1/stat")"; st="${st##*) }"; awk '{print $20}' <<<"$st"; }

for round in 1 2 3; do
  say "round $round: two ups on one state directory at once"
  osh_spawn "$NS_CLIENT" "upa$round" "$OSH_TUNNEL" "${up_args[@]}"
  osh_spawn "$NS_CLIENT" "upb$round" "$OSH_TUNNEL" "${up_args[@]}"
  a=$(eval echo "\$PID_upa$round") b=$(eval echo "\$PID_upb$round")
  wait_until 20 grep -qs "Tunnel is up" "$OSH_WORK/upa$round.log" "$OSH_WORK/upb$round.log"
  if grep -q "Tunnel is up" "$OSH_WORK/upa$round.log"; then
    winner=$a loser=$b loser_log="$OSH_WORK/upb$round.log"
  else
    winner=$b loser=$a loser_log="$OSH_WORK/upa$round.log"
  fi
  wait_until 20 proc_gone "$loser"
  wait_rc "$loser"
  echo "  winner pid $winner; loser pid $loser exited $RC: $(cat "$loser_log")"
  check "the other up exited 3" [ "$RC" = 3 ]
  # "(pid N)" once the winner has recorded itself, which it does right after
  # taking the lock; a loser that looked in between says "starting".
  check "and said why" grep -q "another openshell-tunnel holds the state directory $OSH_STATE" "$loser_log"
  check "the loser changed nothing: no TUN or names step in its log" \
    bash -c "! grep -qE '✓ TUN|names written|cleaning up after' '$loser_log'"
  check "the winner still runs" kill -0 "$winner"
  check "state.json names the winner" [ "$(state_field pid)" = "$winner" ]
  check "with its boot id" [ "$(state_field boot_id)" = "$(cat /proc/sys/kernel/random/boot_id)" ]
  check "and its start time" [ "$(state_field start_time)" = "$(start_time "$winner")" ]
  n_client "$OSH_TUNNEL" status --state-dir "$OSH_STATE" >"$OSH_WORK/status.txt"
  n_client "$OSH_TUNNEL" down --state-dir "$OSH_STATE"
  wait_until 20 proc_gone "$winner"
  wait_rc "$winner"
  check "the winner stopped cleanly (exit $RC)" [ "$RC" = 0 ]
  check "state.json: no pid" [ "$(state_field pid)" = 0 ]
  check "no hosts block left" bash -c "! grep -q openshell-tunnel '$OSH_HOSTS'"
done

say "a stale state file whose pid now belongs to another process"
osh_spawn "$NS_CLIENT" tunnel "$OSH_TUNNEL" "${up_args[@]}"
wait_until 20 grep -q "Tunnel is up" "$OSH_WORK/tunnel.log"
kill -KILL "$PID_tunnel"
wait_until 10 proc_gone "$PID_tunnel"
wait_rc "$PID_tunnel"
check "the killed tunnel left its hosts block" grep -q openshell-tunnel "$OSH_HOSTS"
cp /bin/sleep "$OSH_WORK/openshell-tunnel"
osh_spawn "$NS_CLIENT" imposter "$OSH_WORK/openshell-tunnel" 600
imposter=$PID_imposter
wait_until 5 bash -c "readlink /proc/$imposter/exe | grep -q openshell-tunnel"
/usr/bin/python3 - "$OSH_STATE/state.json" "$imposter" <<'PY'
import json, sys
st = json.load(open(sys.argv[1]))
st["pid"] = int(sys.argv[2])  # the boot id and start time stay the dead tunnel's
json.dump(st, open(sys.argv[1], "w"))
PY
echo "  state.json: pid $(state_field pid) (the imposter, $(readlink "/proc/$imposter/exe")), start_time" \
  "$(state_field start_time) (the killed tunnel's; the imposter's is $(start_time "$imposter"))"

RC=0
n_client "$OSH_TUNNEL" status --state-dir "$OSH_STATE" >"$OSH_WORK/status.out" 2>&1 || RC=$?
cat "$OSH_WORK/status.out"
check "status: not running (exit 4)" [ "$RC" = 4 ]
check "status: the recorded pid died" grep -q "pid $imposter died without cleaning up" "$OSH_WORK/status.out"
RC=0
n_client "$OSH_TUNNEL" down --state-dir "$OSH_STATE" >"$OSH_WORK/down.out" 2>&1 || RC=$?
cat "$OSH_WORK/down.out"
check "down cleans up (exit 0)" [ "$RC" = 0 ]
check "down: cleaned up" grep -q "cleaned up after a tunnel that did not stop cleanly" "$OSH_WORK/down.out"
check "the hosts block is gone" bash -c "! grep -q openshell-tunnel '$OSH_HOSTS'"
check "the imposter was not signalled" kill -0 "$imposter"
check "state.json: no pid" [ "$(state_field pid)" = 0 ]

say "and the next up starts"
osh_spawn "$NS_CLIENT" tunnel2 "$OSH_TUNNEL" "${up_args[@]}"
wait_until 20 grep -q "Tunnel is up" "$OSH_WORK/tunnel2.log"
check "it records itself" [ "$(state_field pid)" = "$PID_tunnel2" ]

say "a stale state file of another state directory naming the live tunnel's TUN"
# A tunnel killed before its TUN existed used to leave the previous run's
# name in its state file, and the crash cleanup deleted that name blindly:
# here osh0 is tunnel2's (carrier: held by a live process) and must stay.
OTHER="$OSH_WORK/other-state"
mkdir -p "$OTHER"
/usr/bin/python3 - "$OSH_STATE/state.json" "$OTHER/state.json" "$PID_tunnel" <<'PY'
import json, sys
st = json.load(open(sys.argv[1]))
st.update(pid=int(sys.argv[3]), tun_name="osh0", hosts_file="", ssh_config="")  # a dead pid
json.dump(st, open(sys.argv[2], "w"))
PY
n_client "$OSH_TUNNEL" down --state-dir "$OTHER" >"$OSH_WORK/down_other.out" 2>&1 || true
cat "$OSH_WORK/down_other.out"
check "down: osh0 of the live tunnel is still there" bash -c 'ip -n "$1" link show osh0 >/dev/null' _ "$NS_CLIENT"
/usr/bin/python3 - "$OTHER/state.json" "$PID_tunnel" <<'PY'
import json, sys
st = json.load(open(sys.argv[1]))
st.update(pid=int(sys.argv[2]), tun_name="osh0")
json.dump(st, open(sys.argv[1], "w"))
PY
RC=0
n_client "$OSH_TUNNEL" up --gateway-endpoint "http://$OSH_GW_ADDR:$OSH_GW_PORT" --hosts-file "$OSH_WORK/other_hosts" \
  --state-dir "$OTHER" --no-ssh-config >"$OSH_WORK/up_other.out" 2>&1 || RC=$?
cat "$OSH_WORK/up_other.out"
check "up: refused (its prefix is the live tunnel's; exit $RC)" [ "$RC" != 0 ]
check "up: osh0 of the live tunnel is still there" bash -c 'ip -n "$1" link show osh0 >/dev/null' _ "$NS_CLIENT"
check "the live tunnel still runs" kill -0 "$PID_tunnel2"
check "and is not told its TUN was deleted" bash -c "! grep -q 'was deleted' '$OSH_WORK/tunnel2.log'"
kill -TERM "$PID_tunnel2"
wait_rc "$PID_tunnel2"
check "stopped cleanly" [ "$RC" = 0 ]

say "PASS: one daemon per state directory"
