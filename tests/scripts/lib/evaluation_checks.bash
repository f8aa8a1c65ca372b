# Checks of `sizeguard evaluate` output shared by the script tests (sourced, not a test).
# check_evaluation WORK: WORK/table.txt, eval.json and recs.csv as evaluate wrote them.
check_evaluation() {
  local work=$1 method
  for method in model vpa krr 'oracle\*' raw blend; do grep -q "^$method " "$work/table.txt" || fail "table lacks $method"; done
  python3 - "$work/eval.json" "$work/recs.csv" <<'PY' || fail "json/csv"
import csv, json, sys
e = json.load(open(sys.argv[1]))
names = [m["name"] for m in e["methods"]]
assert names == ["model", "vpa", "krr", "oracle", "raw", "blend"], names
assert "shipped" in e and e["shipped"]["seriesDays"] > 0, e.get("shipped")
rows = list(csv.DictReader(open(sys.argv[2])))
assert set(rows[0]) == {"method", "series", "day_start_epoch", "cpu_cores", "memory_bytes"}, rows[0]
assert {r["method"] for r in rows} == set(names)
PY
}
