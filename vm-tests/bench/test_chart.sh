#!/usr/bin/env bash
# bench_chart: benchchart.py draws the chart from a bench.json (the committed
# short run's, docs/bench/short-run.json) into a PNG, and refuses a JSON
# without path C (the direct relay everything is relative to). No root, no
# namespaces. Skipped (77) without python3-matplotlib.
# Usage: test_chart.sh BENCH_JSON
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
JSON="$1"
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || { echo "SKIP: python3-matplotlib is not installed"; exit 77; }
OUT="$(mktemp -d /tmp/osh-chart-test.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
/usr/bin/python3 "$HERE/benchchart.py" "$JSON" "$OUT/bench.png"
[[ "$(head -c 8 "$OUT/bench.png" | od -An -tx1 | tr -d ' \n')" == 89504e470d0a1a0a ]] || { echo "FAIL: not a PNG"; exit 1; }
echo "  ok: PNG written ($(stat -c %s "$OUT/bench.png") bytes)"
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["summary"].pop("C"); json.dump(d, open(sys.argv[2], "w"))' \
  "$JSON" "$OUT/noc.json"
rc=0
/usr/bin/python3 "$HERE/benchchart.py" "$OUT/noc.json" "$OUT/noc.png" 2>/dev/null || rc=$?
[[ $rc == 2 && ! -e $OUT/noc.png ]] || { echo "FAIL: a JSON without path C gave exit $rc"; exit 1; }
echo "  ok: a JSON without path C is refused (exit 2)"
echo "PASS: bench chart"
