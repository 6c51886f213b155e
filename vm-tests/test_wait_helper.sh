#!/usr/bin/env bash
# The vm-tests' load-scaled wait (lib.sh wait_until / osh_scaled, issue
# 15.6), with a faked /proc/loadavg (OSH_LOADAVG_FILE) and CPU count
# (OSH_NPROC): the scale follows loadavg1/nproc (never below 1), the
# deadline grows when the load rises during a wait, OSH_WAIT_SCALE
# multiplies (3 by default in the sanitizer builds), the cap bounds it, and
# a timeout names the base, the scale and the load; no wait runs past the
# test's deadline (OSH_TEST_TIMEOUT). No root, no namespaces.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'rm -rf "$OSH_WORK"' EXIT
unset OSH_WAIT_SCALE OSH_WAIT_CAP
OSH_SANITIZED=0
# Upper bounds allow for this machine's real load (the scheduling of the
# polls), scaled by the helper under test from the real /proc/loadavg.
SLACK="$(osh_scaled 1)"
echo "  slack for upper bounds: $SLACK s"
export OSH_NPROC=2 OSH_LOADAVG_FILE="$OSH_WORK/loadavg"
load() { echo "$1 0.50 0.50 1/100 4242" >"$OSH_LOADAVG_FILE.new" && mv "$OSH_LOADAVG_FILE.new" "$OSH_LOADAVG_FILE"; }

# in_range VALUE LO HI: LO <= VALUE < HI (decimals).
in_range() { awk -v v="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(v >= lo && v < hi) }'; }
# timed_fail BASE: runs wait_until BASE false; sets ELAPSED and MSG.
timed_fail() { timed_fail_cmd "$1" false; }
# timed_fail_cmd BASE CMD...: runs wait_until BASE CMD... expecting a timeout.
timed_fail_cmd() {
  local t0 rc=0
  osh_now_ms
  t0=$OSH_NOW_MS
  wait_until "$@" 2>"$OSH_WORK/msg" || rc=$?
  ELAPSED="$(osh_since_s "$t0")"
  MSG="$(cat "$OSH_WORK/msg")"
  echo "  wait_until $*: rc $rc after $ELAPSED s: $MSG"
  [[ $rc == 1 ]] || fail "wait_until $* returned $rc"
}
say "osh_scaled"
load 0.40
check "idle machine: 10 s stays 10 s" [ "$(osh_scaled 10)" = 10 ]
load 1.90
check "load below the CPU count: no scaling" [ "$(osh_scaled 10)" = 10 ]
load 5.00
check "load 5 on 2 CPUs: 10 s becomes 25 s" [ "$(osh_scaled 10)" = 25 ]
check "fractions round up (1.2 s x 2.5 = 3 s)" [ "$(osh_scaled 1.2)" = 3 ]
check "OSH_WAIT_SCALE=2 multiplies (50 s)" [ "$(OSH_WAIT_SCALE=2 osh_scaled 10)" = 50 ]
load 0.10
check "sanitizer builds default to 3x (OSH_SANITIZED=1)" [ "$(OSH_SANITIZED=1 osh_scaled 10)" = 30 ]
check "OSH_WAIT_SCALE wins over the sanitizer default" [ "$(OSH_SANITIZED=1 OSH_WAIT_SCALE=1.5 osh_scaled 10)" = 15 ]
load 100.00
check "capped at 10x (load 100 on 2 CPUs)" [ "$(osh_scaled 10)" = 100 ]
check "OSH_WAIT_CAP moves the cap" [ "$(OSH_WAIT_CAP=4 osh_scaled 10)" = 40 ]
echo "garbage" >"$OSH_LOADAVG_FILE"
check "an unreadable load counts as idle" [ "$(osh_scaled 10)" = 10 ]
check "a missing loadavg file counts as idle" [ "$(OSH_LOADAVG_FILE=/nonexistent osh_scaled 10)" = 10 ]

say "wait_until succeeds as soon as the condition holds"
load 0.10
rm -f "$OSH_WORK/flag"
(sleep 0.5 && touch "$OSH_WORK/flag") &
check "returns 0" wait_until 5 test -e "$OSH_WORK/flag"
check "after about 0.5 s, not the timeout (WAIT_SECS $WAIT_SECS)" in_range "$WAIT_SECS" 0.4 $((2 + SLACK))
wait

say "wait_until times out after base x scale"
load 0.10
timed_fail 0.5
check "idle: about 0.5 s" in_range "$ELAPSED" 0.5 $((1 + SLACK))
check "the message names the base" grep -q "base 0.5s" <<<"$MSG"
check "the message names the scale" grep -q "scale 1[:)]" <<<"$MSG"
check "the message names the load and CPUs" grep -q "loadavg1 0.10 on 2 CPUs" <<<"$MSG"
check "the message names the command" grep -q "waiting for: false" <<<"$MSG"
load 6.00
timed_fail 0.5
check "load 6 on 2 CPUs: about 1.5 s" in_range "$ELAPSED" 1.5 $((2 + SLACK))
check "the message says scale 3" grep -q "base 0.5s x scale 3:" <<<"$MSG"
check "and the load" grep -q "loadavg1 6.00 on 2 CPUs" <<<"$MSG"
load 0.10
OSH_WAIT_SCALE=2 timed_fail 0.5
check "OSH_WAIT_SCALE=2: about 1 s" in_range "$ELAPSED" 1 $((1 + SLACK))
check "the message names OSH_WAIT_SCALE" grep -q "OSH_WAIT_SCALE 2," <<<"$MSG"

say "the cap: a hang still fails"
load 400.00
timed_fail 0.2
check "load 400 on 2 CPUs: capped at 10 x 0.2 s = 2 s" in_range "$ELAPSED" 2 $((2 + SLACK))
check "the message says capped" grep -q "scale 10: .*cap 10x, capped" <<<"$MSG"

say "the deadline grows when the load rises during the wait"
# The condition itself changes the faked load on its third poll (~0.2 s).
load_at_poll3() { POLLS=$((POLLS + 1)); ((POLLS == 3)) && load "$1"; return 1; }
load 0.10
POLLS=0
timed_fail_cmd 0.6 load_at_poll3 8.00
check "load 8 on 2 CPUs from the third poll on: about 2.4 s, not 0.6 s" in_range "$ELAPSED" 2.4 $((3 + SLACK))
check "the message reports the higher load" grep -q "scale 4: loadavg1 8.00" <<<"$MSG"
say "... and does not shrink when it falls"
load 8.00
POLLS=0
timed_fail_cmd 0.5 load_at_poll3 0.10
check "load 8 at the start: about 2 s even after it fell" in_range "$ELAPSED" 2 $((3 + SLACK))

say "the test's deadline (OSH_TEST_TIMEOUT, the ctest TIMEOUT) bounds every wait"
deadline_of() {  # deadline_of TIMEOUT START_MS: OSH_DEADLINE_MS as lib.sh sets it
  (OSH_TEST_TIMEOUT="$1" OSH_TEST_START_MS="$2" && source "$(dirname "$0")/lib.sh" &&
    rm -rf "$OSH_WORK" && echo "$OSH_DEADLINE_MS")
}
check "TIMEOUT 300 s: waits end 30 s (a tenth) before it" [ "$(deadline_of 300 5000)" = $((5000 + 270000)) ]
check "TIMEOUT 60 s: at least 10 s before it" [ "$(deadline_of 60 5000)" = $((5000 + 50000)) ]
check "no TIMEOUT: no deadline" [ "$(deadline_of 0 5000)" = 0 ]
load 0.10
saved_deadline=$OSH_DEADLINE_MS
osh_now_ms
OSH_DEADLINE_MS=$((OSH_NOW_MS + 1000))
timed_fail 5
check "a 5 s wait is cut at the deadline 1 s away" in_range "$ELAPSED" 1 $((2 + SLACK))
check "the message says why" grep -q "cut short at the test's deadline" <<<"$MSG"
check "osh_scaled stays within it (1 s at least)" [ "$(osh_scaled 10)" = 1 ]
OSH_DEADLINE_MS=$saved_deadline

say "osh_since_s"
osh_now_ms
t0=$OSH_NOW_MS
sleep 0.3
check "measures about 0.3 s ($(osh_since_s "$t0"))" in_range "$(osh_since_s "$t0")" 0.3 $((1 + SLACK))
say "PASS: wait helper"
