#!/usr/bin/env bash
# The recommender on the three extra traces from other providers (SIZEGUARD_DATA_DIR/extra-traces;
# Google 2019 Borg tasks, Alibaba 2018 hosts, Azure 2017 VMs, CPU only), in three settings:
#   default  the bundled model as `recommend --model` ships it: gated and calibrated again before
#            each day on the trace's own last days (up to 4; from the third evaluation day on
#            when the first two are needed);
#   fixed    the bundled model with its own gate and margins from July 2013 (`--no-regate`);
#   own      a model trained on the trace's first days (`train`; what the CronJob trains), also
#            regated on the evaluation days it has seen, as `recommend` does.
# Prints one markdown row per trace and setting (docs/recommender.md "Results") and checks that
# what ships where it was gated on the trace's own data (default, own) is under-provisioned
# within a point of the targets at its own margins and has at most 1.5 points more slack than
# VPA at matched risk. Skipped (77) without the traces.
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
  "$bin" train "$flag" "$file" --train-days "$train" --validation-days "$valid" --quantile 0.5 --rounds 300 \
    --threads 2 --out "$work/$name-own" > "$work/$name-own.txt" 2>&1 || fail "train $name: $(tail -3 "$work/$name-own.txt")"
  for setting in default fixed own; do
    model=$work/$name-own extra=()
    [[ $setting != own ]] && model=$src/recommender/models/default
    [[ $setting == fixed ]] && extra=(--no-regate)
    "$bin" evaluate --model "$model" "$flag" "$file" --eval-days "$eval" --json "$work/$name-$setting.json" "${extra[@]}" \
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
if s.get("regate"):  # days per choice: model / blend / vpa
    g = s["gateDays"]
    src_of = lambda r: f'{g[r]["model"]}m {g[r]["blend"]}b {g[r]["baseline"]}v'
gate = f'{src_of("cpu")} / {src_of("memory")}'
print(f"| {name} | {setting} | {days} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {under} | {gate} |")
if setting != "fixed":
    for r in ("cpu", "memory"):
        a, b = slack("model", r), slack("vpa", r)
        if a is None or b is None:
            continue
        # Safety at the shipped margins, on every dataset: within a point of the 5% / 1% targets.
        assert m["model"][r]["under"] <= {"cpu": 0.06, "memory": 0.02}[r], (r, m["model"][r]["under"])
        # Never much worse than VPA at matched risk, whichever source served. (Google memory was
        # 49.9 vs 38.4 until restarted tasks were held at their request: memory_request_floor.)
        assert a <= b + 0.015, (r, a, b)
PY
  done
done
