#!/usr/bin/env bash
# The recommender on a bare clone, on the six-VM sample derived from the Bitbrains trace
# (tests/fixtures/usage/bitbrains-sample): `train` writes a model that loads, `evaluate`
# backtests it and the shipped default model and writes a table, JSON and an HTML report that
# renders: headless Chromium must load it and find every chart (the rendering is skipped,
# visibly, if Chromium is not installed; tests/run.sh installs it).
set -euo pipefail
bin=${SIZEGUARD_BINARY:?}
src=${SIZEGUARD_SOURCE_DIR:?}
sample=$src/tests/fixtures/usage/bitbrains-sample
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
source "$src/tests/scripts/lib/evaluation_checks.bash"

"$bin" train --bitbrains "$sample" --out "$work/model" --train-days 1-20 --rounds 40 --threads 2 \
  > "$work/train.txt" 2>&1 || fail "train: $(cat "$work/train.txt")"
for f in model.json metadata.json; do [[ -s $work/model/$f ]] || fail "train wrote no $f"; done
"$bin" evaluate --model "$work/model" --bitbrains "$sample" --eval-days 21-30 --json "$work/eval.json" \
  --export-recs "$work/recs.csv" > "$work/table.txt" 2> "$work/err.txt" || fail "evaluate (trained): $(cat "$work/err.txt")"
check_evaluation "$work"

# train --also: other fleets' days go under days 1-20 by whole weeks (Azure's VMs: CPU rows only);
# the model loads and backtests like any other. A bad --also is refused before anything is read.
x=$src/tests/fixtures/usage/extra-traces-sample
"$bin" train --bitbrains "$sample" --out "$work/mixed" --train-days 1-20 --rounds 20 --threads 2 --cpu-tails none \
  --also "azure-cpu:$x/azure2017.csv.gz" --also "csv:$x/google2019.csv.gz@1-2" > "$work/mixed.txt" 2>&1 \
  || fail "train --also: $(cat "$work/mixed.txt")"
python3 - "$work/mixed.txt" <<'PY' || fail "train --also: $(cat "$work/mixed.txt")"
import re, sys
log = open(sys.argv[1]).read()
moved = re.findall(r"^also training on (\d+) series of .*(azure2017|google2019)\.csv\.gz, (\S+) \.\. (\S+) moved by (-?\d+) days$", log, re.M)
assert [(m[0], m[1], m[2], m[3]) for m in moved] == [("2", "azure2017", "1970-01-01", "1970-01-03"),
                                                     ("1", "google2019", "2019-05-02", "2019-05-03")], moved
assert all(int(m[4]) % 7 == 0 for m in moved), moved
assert re.search(r"^trained xgb-\w+ in .* from 9 series", log, re.M), log
PY
"$bin" evaluate --model "$work/mixed" --bitbrains "$sample" --eval-days 21-30 --json "$work/eval.json" \
  --export-recs "$work/recs.csv" > "$work/table.txt" 2> "$work/err.txt" || fail "evaluate (trained --also): $(cat "$work/err.txt")"
check_evaluation "$work"
rc=0
"$bin" train --bitbrains "$sample" --out "$work/bad" --also "parquet:$x/google2019.csv.gz" > "$work/bad.txt" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "^sizeguard train: --also 'parquet:.*': expected KIND:PATH\[@FIRST-LAST\]" "$work/bad.txt" \
  && ! grep -q "^read " "$work/bad.txt" || fail "bad --also (exit $rc, or read data first): $(cat "$work/bad.txt")"

"$bin" evaluate --model "$src/recommender/models/default" --bitbrains "$sample" \
  --eval-days 21-30 --json "$work/eval.json" --html "$work/eval.html" \
  --export-recs "$work/recs.csv" > "$work/table.txt" 2> "$work/err.txt" || fail "evaluate: $(cat "$work/err.txt")"
check_evaluation "$work"

# `recommend --at` day 25 gates the default model again on days 21-24 (the ones it did not train
# on) and writes exactly what evaluate scored for that day; --no-regate keeps the July gate.
day25=$((1372636800 + 24 * 86400))
"$bin" recommend --model "$src/recommender/models/default" --bitbrains "$sample" --at "$day25" \
  --out "$work/recs.json" 2> "$work/rec.err" || fail "recommend: $(cat "$work/rec.err")"
grep -q "^model: gated on days 21-24 here" "$work/rec.err" || fail "recommend did not regate: $(cat "$work/rec.err")"
python3 - "$work/recs.json" "$work/recs.csv" "$day25" <<'PY' || fail "recommend --at differs from what evaluate scored"
import csv, json, sys
snap = json.load(open(sys.argv[1]))["recommendations"]
units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
def qty(q):
    for u, f in units.items():
        if q.endswith(u): return float(q[: -len(u)]) * f
    return float(q)
rows = [r for r in csv.DictReader(open(sys.argv[2])) if r["method"] == "model" and r["day_start_epoch"] == sys.argv[3]]
assert len(rows) >= 5, len(rows)
for r in rows:
    s = snap[r["series"]]
    assert abs(qty(s["cpu"]) - float(r["cpu_cores"])) < 1e-9, (r, s)
    assert abs(qty(s["memory"]) - float(r["memory_bytes"])) < 0.5, (r, s)
PY
"$bin" recommend --model "$src/recommender/models/default" --bitbrains "$sample" --at "$day25" --no-regate \
  --out "$work/fixed.json" 2> "$work/fixed.err" || fail "recommend --no-regate: $(cat "$work/fixed.err")"
! grep -q "gated on days" "$work/fixed.err" || fail "--no-regate regated: $(cat "$work/fixed.err")"

# The snapshot records the decision the log states (per resource: model, blend or vpa, on which
# days, by how much), and `report --recommendations` shows it.
python3 - "$work/recs.json" "$work/rec.err" <<'PY' || fail "snapshot decision"
import json, re, sys
d = json.load(open(sys.argv[1]))["decision"]
log = open(sys.argv[2]).read()
m = re.search(r"gated on days 21-24 here: cpu (\w+), memory (\w+)", log)
assert m, log
assert (d["cpu"]["source"], d["memory"]["source"]) == m.groups(), (d, m.groups())
assert d["gateDays"] == "2013-07-21..2013-07-24", d
for r in ("cpu", "memory"):
    s = d[r]["slackAtMatchedRisk"]
    # vpa ships unless a candidate beat it (the blend is no candidate at a matched margin < 1)
    assert d[r]["source"] == "baseline" or s[d[r]["source"]] <= s["baseline"], d[r]
    assert d[r]["margin"] >= 1 or d[r]["source"] == "model", d[r]
assert "gated on days 21-24" in d["model"], d
PY
: > "$work/empty-audit.log"
"$bin" report --audit-log "$work/empty-audit.log" --recommendations "$work/recs.json" > "$work/report.txt" \
  || fail "report --recommendations"
grep -q "^  cpu: .*slack at matched risk on 2013-07-21..2013-07-24" "$work/report.txt" || fail "report: $(cat "$work/report.txt")"
python3 - "$work/fixed.json" <<'PY' || fail "--no-regate decision"
import json, sys
d = json.load(open(sys.argv[1]))["decision"]
assert "--no-regate" in d["model"] and d["gateDays"] == "2013-07-17..2013-07-20", d  # July's own gate days
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
