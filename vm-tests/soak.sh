#!/usr/bin/env bash
# Soak (issue 6.5; a documented command, not CI): mixed traffic through the
# tunnel for a bounded time, then checks: zero corrupted bytes, RSS and CPU
# flat after warm-up, CPU idle when traffic stops.
#
#   sudo OSH_TUNNEL=... OSH_GATEWAY=... OSH_SUPERVISOR=... vm-tests/soak.sh [MINUTES]   (default 30)
#
# Traffic, in parallel until the time is up: 4 parallel 64 MiB downloads
# (sha256 checked) in a loop; an ssh session echoing a line every second;
# connection churn (curl of a small file) in a loop. Every 10 s the tunnel's
# RSS and CPU time are sampled into soak.tsv; at the end, per 5-minute window:
# RSS median (min-max) and CPU rate. Checks: no corrupted download, no
# failed churn connection, the ssh session lasted, RSS and CPU of the last
# third within 25 % of the middle third's, CPU idle after the traffic.
# Last result: docs/BENCHMARKS.md "Soak".
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap osh_cleanup EXIT
MINUTES="${1:-30}"
END=$((SECONDS + MINUTES * 60))

osh_topology
osh_sandbox_services 64
printf 'x%.0s' $(seq 1 1024) >"$OSH_WORK/www/small"
osh_gateway
osh_supervisor
osh_tunnel
OSH_VERBOSE=0

downloads() {
  local bad=0 n=0
  while ((SECONDS < END)); do
    local sum
    sum="$(ip netns exec "$NS_CLIENT" curl -4 -sS --max-time 120 http://demo.local:8080/blob | sha256sum | cut -d' ' -f1)"
    n=$((n + 1))
    [[ $sum == "$OSH_BLOB_SHA" ]] || bad=$((bad + 1))
  done
  echo "$n $bad"
}
churn() {
  local n=0 bad=0
  while ((SECONDS < END)); do
    ip netns exec "$NS_CLIENT" curl -4 -sS --max-time 10 -o /dev/null http://demo.local:8080/small || bad=$((bad + 1))
    n=$((n + 1))
  done
  echo "$n $bad"
}
ssh_session() {
  osh_ssh root@demo.local "for i in \$(seq 1 $((MINUTES * 60))); do echo tick \$i; sleep 1; done" 2>&1 | tail -n1
}

say "soak: $MINUTES min of downloads (4 parallel), churn, and an ssh session"
pids=()
for i in 1 2 3 4; do downloads >"$OSH_WORK/dl$i.res" & pids+=($!); done
churn >"$OSH_WORK/churn.res" & pids+=($!)
ssh_session >"$OSH_WORK/ssh.res" & pids+=($!)
hz=$(getconf CLK_TCK)
printf 't_s\trss_kib\tcpu_s\n' >"$OSH_WORK/soak.tsv"
start=$SECONDS
while ((SECONDS < END)); do
  cpu=$(awk -v hz="$hz" '{print ($14 + $15) / hz}' "/proc/$PID_tunnel/stat")
  printf '%d\t%d\t%s\n' $((SECONDS - start)) "$(rss_kib "$PID_tunnel")" "$cpu" >>"$OSH_WORK/soak.tsv"
  sleep 10  # sampling period
done
wait "${pids[@]}" || true
cpu_end=$(awk -v hz="$hz" '{print ($14 + $15) / hz}' "/proc/$PID_tunnel/stat")
sleep 10  # idle period after the traffic
cpu_idle=$(awk -v hz="$hz" -v e="$cpu_end" '{print ($14 + $15) / hz - e}' "/proc/$PID_tunnel/stat")

cat "$OSH_WORK/soak.tsv"
read -r dn db < <(cat "$OSH_WORK"/dl*.res | awk '{n += $1; b += $2} END {print n, b}')
read -r cn cb <"$OSH_WORK/churn.res"
say "downloads: $dn of 64 MiB, $db corrupted; churn: $cn connections, $cb failed; ssh: $(cat "$OSH_WORK/ssh.res")"
/usr/bin/python3 - "$OSH_WORK/soak.tsv" "$OSH_WORK/flat.txt" <<'PY'
import statistics, sys
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n')[1:] if l]
rows = [(int(t), int(r), float(c)) for t, r, c in rows]
# 5-minute windows (or thirds of a shorter run): RSS median/min/max, CPU rate
span = max(r[0] for r in rows) + 1
w = 300 if span >= 900 else max(10, span // 3)
for lo in range(0, span, w):
    seg = [r for r in rows if lo <= r[0] < lo + w]
    if len(seg) < 2:
        continue
    rss = [r[1] / 1024 for r in seg]
    cpu = (seg[-1][2] - seg[0][2]) / max(1, seg[-1][0] - seg[0][0])
    print(f"{lo // 60:3d}-{(lo + w) // 60:3d} min: RSS median {statistics.median(rss):.0f} MiB "
          f"({min(rss):.0f}-{max(rss):.0f}), CPU {cpu:.2f} s/s")
# Flat after warm-up: the last third's median RSS and CPU rate within 25 % of
# the middle third's (the first third is warm-up).
def third(k):
    return [r for r in rows if k * span / 3 <= r[0] < (k + 1) * span / 3]
def rate(seg):
    return (seg[-1][2] - seg[0][2]) / max(1, seg[-1][0] - seg[0][0])
mid, last = third(1), third(2)
rss_ratio = statistics.median(r[1] for r in last) / statistics.median(r[1] for r in mid)
cpu_ratio = rate(last) / max(1e-9, rate(mid))
print(f"last third vs middle third: RSS x{rss_ratio:.2f}, CPU x{cpu_ratio:.2f}")
with open(sys.argv[2], "w") as f:
    f.write(f"{rss_ratio} {cpu_ratio}\n")
PY
read -r rss_ratio cpu_ratio <"$OSH_WORK/flat.txt"
say "CPU in the 10 s after traffic stopped: ${cpu_idle} s"
check "zero corrupted downloads" [ "$db" -eq 0 ]
check "zero failed churn connections" [ "$cb" -eq 0 ]
check "the ssh session lasted the whole run" grep -q "tick $((MINUTES * 60))" "$OSH_WORK/ssh.res"
check "RSS flat after warm-up (last third x$rss_ratio of the middle third, within 1.25)" \
  /usr/bin/python3 -c "import sys; sys.exit(0 if float('$rss_ratio') <= 1.25 else 1)"
check "CPU flat after warm-up (last third x$cpu_ratio of the middle third, within 0.75-1.25)" \
  /usr/bin/python3 -c "import sys; sys.exit(0 if 0.75 <= float('$cpu_ratio') <= 1.25 else 1)"
check "CPU idle after traffic (< 0.2 s in 10 s)" /usr/bin/python3 -c "import sys; sys.exit(0 if float('$cpu_idle') < 0.2 else 1)"
say "soak done"
