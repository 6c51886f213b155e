#!/usr/bin/env bash
# The benchmark's anti-rot check (issue 5.3): bench/bench.sh --smoke runs every
# workload over all five paths with tiny sizes (about 10 s of measuring) and
# must finish with every transfer's sha256 intact, no failed connection, and a
# JSON file naming all five paths. The performance targets are not checked
# here: the numbers of a smoke run mean nothing.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$(mktemp -d /tmp/osh-bench-smoke.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
bash "$HERE/bench/bench.sh" --smoke --out "$OUT"
/usr/bin/python3 - "$OUT/bench.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
paths = sorted(d["summary"])
assert paths == ["A", "B", "C", "D", "E", "U"], paths
assert all(d["sha_ok"].values()), d["sha_ok"]
for p, s in d["summary"].items():
    fails = {k: v for k, v in s.items() if k.endswith("_failed")}
    assert not any(fails.values()), (p, fails)
    assert s["bulk_up_gbps"]["median"] > 0 and s["bulk_down_gbps"]["median"] > 0, p
assert d["targets"], "no targets evaluated"
print("  ok: bench.json has all six paths, every sha256 intact, no failures")
PY
echo "PASS: bench smoke"
