#!/usr/bin/env bash
# The delay bench's anti-rot check (issue 15.3): delay_bench.sh --smoke runs
# one 8 MiB download and upload through a 20 ms relay on paths D (the tunnel)
# and C (forward), and must finish with every transfer intact; the JSON must
# hold both paths, and the relay must really delay (connect + first byte takes
# at least the added 20 ms). The throughput is not checked.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$(mktemp -d /tmp/osh-delay-smoke.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
bash "$HERE/delay_bench.sh" --smoke --out "$OUT"
/usr/bin/python3 - "$OUT/delay.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
runs = d["runs"]
assert sorted(r["path"] for r in runs) == ["C", "D"], [r["path"] for r in runs]
for r in runs:
    assert r["rtt_ms"] == 20, r["rtt_ms"]
    fb = r["first_byte_ms"]
    assert r["first_byte_failed"] == 0 and fb[len(fb) // 2] >= 20, (r["path"], fb)  # the relay delays
    dirs = sorted(x["dir"] for x in r["reps"])
    assert dirs == ["down", "up"], (r["path"], dirs)
    for x in r["reps"]:
        assert x.get("intact") and x.get("complete"), (r["path"], x)
print("  ok: delay.json has paths C and D at +20 ms, every transfer complete and intact,"
      " connect + first byte >= 20 ms")
PY
echo "PASS: delay bench smoke"
