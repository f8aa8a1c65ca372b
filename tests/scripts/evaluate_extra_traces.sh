#!/usr/bin/env bash
# The recommender on the three extra traces from other providers (SIZEGUARD_DATA_DIR/extra-traces;
# Google 2019 Borg tasks, Alibaba 2018 hosts, Azure 2017 VMs, CPU only), in three settings:
#   default  the bundled model as `recommend --model` ships it (its own gate, from July 2013);
#   regated  the bundled model gated and calibrated on the trace's first days (`train
#            --from-model`; what the CronJob does with it before it has enough history to train);
#   own      a model trained on the trace's first days (`train`; what the CronJob trains).
# Prints one markdown row per trace and setting (docs/recommender.md "Results") and checks that
# what ships is never much worse than VPA where it was gated on the trace's own data (regated,
# own: at most 1.5 points more slack at matched risk). Skipped (77) without the traces.
set -euo pipefail
bin=${SIZEGUARD_BINARY:?}
src=${SIZEGUARD_SOURCE_DIR:?}
x=${SIZEGUARD_DATA_DIR:-${SIZEGUARD_CONFIGURED_DATA_DIR:?}}/extra-traces
if [[ ! -d $x ]]; then
  echo "SKIP: extra traces missing: $x (set SIZEGUARD_DATA_DIR to the folder holding them)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# name | source flag | file | first training days | validation days | evaluation days
traces=(
  "google2019|--csv|$x/google2019-borg-sample/google2019_borg_sample_long_sizeguard.csv.gz|1-14|4|15-31"
  "alibaba2018|--csv|$x/alibaba2018-machine-usage-head/alibaba2018_machines_300s_long_sizeguard.csv.gz|1-4|1|5-8"
  "azure2017|--azure-cpu|$x/azure2017-vm-cpu-sample100/azure2017_cpu_sample100_long.csv.gz|1-14|4|15-27"
)
echo "| trace | setting | eval days | CPU slack @5%: shipped / VPA / KRR / oracle | CPU gap closed | memory slack @1%: shipped / VPA / KRR / oracle | memory gap closed | under at shipped margins: CPU / memory | gate cpu / memory |"
echo "|---|---|---|---|---|---|---|---|---|"
for t in "${traces[@]}"; do
  IFS='|' read -r name flag file train valid eval <<< "$t"
  "$bin" train "$flag" "$file" --from-model "$src/recommender/models/default" --train-days "$train" \
    --validation-days "$valid" --out "$work/$name-regated" > "$work/$name-regated.txt" 2>&1 \
    || fail "train --from-model $name: $(tail -3 "$work/$name-regated.txt")"
  "$bin" train "$flag" "$file" --train-days "$train" --validation-days "$valid" --quantile 0.5 --rounds 300 \
    --threads 2 --out "$work/$name-own" > "$work/$name-own.txt" 2>&1 || fail "train $name: $(tail -3 "$work/$name-own.txt")"
  for setting in default regated own; do
    model=$work/$name-$setting
    [[ $setting == default ]] && model=$src/recommender/models/default
    "$bin" evaluate --model "$model" "$flag" "$file" --eval-days "$eval" --json "$work/$name-$setting.json" \
      > "$work/$name-$setting.table" 2> "$work/$name-$setting.err" || fail "evaluate $name $setting: $(tail -3 "$work/$name-$setting.err")"
    python3 - "$work/$name-$setting.json" "$name" "$setting" "$eval" <<'PY' || fail "$name $setting: what ships is worse than VPA"
import json, math, sys
e = json.load(open(sys.argv[1])); name, setting, days = sys.argv[2:5]
m = {x["name"]: x for x in e["methods"]}
def pct(v): return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"
def slack(meth, r): return m[meth][r]["matched"]["slack"]
cells = []
for r in ("cpu", "memory"):
    cells.append(" / ".join(pct(slack(k, r)) for k in ("model", "vpa", "krr", "oracle")))
    cells.append(pct(e["gapClosed"][r]))
s = e["shipped"]
under = f'{pct(m["model"]["cpu"]["under"])} / {pct(m["model"]["memory"]["under"])}'
src_of = lambda r: ("blend" if s[r + "Blend"] else "model") if s[r + "FromModel"] else "vpa"
gate = f'{src_of("cpu")} / {src_of("memory")}'
print(f"| {name} | {setting} | {days} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {under} | {gate} |")
if setting != "default":
    for r in ("cpu", "memory"):
        a, b = slack("model", r), slack("vpa", r)
        if a is not None and b is not None:
            assert a <= b + 0.015, (r, a, b)
PY
  done
done
