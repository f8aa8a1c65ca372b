#!/usr/bin/env bash
# `sizeguard evaluate` on real traces writes a table, JSON and an HTML report that renders:
# headless Chromium must load it and find every chart (skips the rendering, visibly, if
# Chromium is not installed; tests/run.sh installs it).
set -euo pipefail
bin=${SIZEGUARD_BINARY:?}
src=${SIZEGUARD_SOURCE_DIR:?}
shared=${SIZEGUARD_SHARED_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$bin" evaluate --model "$src/recommender/models/default" --bitbrains "$shared/data/bitbrains-rnd-2013-07" \
  --max-series 12 --eval-days 21-30 --json "$work/eval.json" --html "$work/eval.html" \
  --export-recs "$work/recs.csv" > "$work/table.txt" 2> "$work/err.txt" || fail "evaluate: $(cat "$work/err.txt")"
for method in model vpa krr 'oracle\*'; do grep -q "^$method " "$work/table.txt" || fail "table lacks $method"; done
python3 - "$work/eval.json" "$work/recs.csv" <<'PY' || fail "json/csv"
import csv, json, sys
e = json.load(open(sys.argv[1]))
names = [m["name"] for m in e["methods"]]
assert names == ["model", "vpa", "krr", "oracle"], names
rows = list(csv.DictReader(open(sys.argv[2])))
assert set(rows[0]) == {"method", "series", "day_start_epoch", "cpu_cores", "memory_bytes"}, rows[0]
assert {r["method"] for r in rows} == set(names)
PY

if ! command -v chromium >/dev/null; then
  echo "SKIP: chromium not installed, HTML rendering not checked (tests/run.sh installs it)"
  exit 0
fi
chromium --headless --no-sandbox --disable-gpu --dump-dom "file://$work/eval.html" > "$work/dom.html" 2>/dev/null \
  || fail "chromium could not load the report"
svgs=$(grep -o '<svg' "$work/dom.html" | wc -l)
(( svgs >= 4 )) || fail "rendered report has $svgs charts"
grep -q 'Slack vs under-provisioning' "$work/dom.html" || fail "section missing"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2000 \
  --screenshot="$work/report.png" "file://$work/eval.html" >/dev/null 2>&1 || fail "screenshot failed"
[[ $(stat -c %s "$work/report.png") -gt 20000 ]] || fail "screenshot is nearly empty"
echo "evaluate_report: ok ($svgs charts rendered)"
