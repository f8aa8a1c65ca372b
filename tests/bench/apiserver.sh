#!/usr/bin/env bash
# The apiserver's pattern, floor and sizeguard side by side in one run (issue 19):
# `sizeguard-loadgen --pattern apiserver` keeps one keep-alive TLS connection per webhook and
# sends each real Pod CREATE fixture to /mutate, then the patched object to /validate, one object
# at a time, open loop at RATE objects/s (2 reviews per object). Phases alternate floor and
# sizeguard (the order flips every repetition) so the machine's noise hits both alike; the table
# shows medians over REPS repetitions. Server CPU per review is the server process's utime+stime
# (/proc/PID/stat) over the measured window divided by the reviews: it is the number to trust
# on a shared machine, latencies are noisier.
#
# Environment: RATE (objects/s, default 100 = 200 reviews/s), DURATION (20 s per phase),
# WARMUP (2 s), REPS (3), OUT, BUILD_DIR, NO_BUILD=1, SERVER_ARGS, AUDIT_LOG (see lib.sh).
# BASELINE_BIN: another sizeguard (e.g. a build of main) served beside them with the same flags
# and measured in the same rotation, as a third column, to compare two builds in one run.
set -euo pipefail
# shellcheck source=tests/bench/lib.sh
source "$(dirname "$0")/lib.sh"

rate=${RATE:-100}
duration=${DURATION:-20}
warmup=${WARMUP:-2}
reps=${REPS:-3}

sg_prepare apiserver
sg_start_pair "$work"
sg_log "sizeguard pid $sg_pid on :$sg_port, floor pid $floor_pid on :$floor_port; results in $out"
servers=(floor sizeguard)
if [[ -n ${BASELINE_BIN:-} ]]; then
  sg_start_baseline "$work" "$BASELINE_BIN"
  trap 'sg_stop "$base_pid"; sg_trim_logs "$work/baseline"; sg_stop_pair' EXIT
  servers+=(baseline)
  sg_log "baseline ($BASELINE_BIN) pid $base_pid on :$base_port"
fi

results=$out/results.jsonl
: > "$results"
phase() {  # phase SERVER REP
  local port pid
  case $1 in
    sizeguard) port=$sg_port pid=$sg_pid ;;
    baseline) port=$base_port pid=$base_pid ;;
    *) port=$floor_port pid=$floor_pid ;;
  esac
  sg_log "rep $2: $1 at $rate objects/s for ${duration}s"
  "$sg_loadgen" --pattern apiserver --url "https://127.0.0.1:$port" --ca "$work/certs/ca.crt" \
    --rate "$rate" --duration "$duration" --warmup "$warmup" --server-pid "$pid" --json \
    --label "$1/$2" >>"$results" 2>>"$out/loadgen.log" || { tail -5 "$out/loadgen.log" >&2; sg_die "loadgen ($1)"; }
}
for rep in $(seq 1 "$reps"); do  # the order rotates every repetition
  n=${#servers[@]}
  for ((i = 0; i < n; i++)); do phase "${servers[(i + rep - 1) % n]}" "$rep"; done
done

python3 - "$results" "$rate" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def med(server, *path):
    values = []
    for r in rows:
        if not r["label"].startswith(server + "/"): continue
        for p in path: r = r[p]
        values.append(r)
    return statistics.median(values) if values else None
base = any(r["label"].startswith("baseline/") for r in rows)
print(f"{sys.argv[2]} Pod CREATEs/s, each /mutate then /validate (one keep-alive connection per webhook); "
      f"medians of {len(rows) // (3 if base else 2)} alternating repetitions\n")
print("| metric | floor | sizeguard | ratio | goal |" + (" baseline | ratio |" if base else ""))
print("| --- | --- | --- | --- | --- |" + (" --- | --- |" if base else ""))
def row(name, path, goal="", unit="", digits=3):
    f, s = med("floor", *path), med("sizeguard", *path)
    ratio = lambda v: f"{v / f:.2f}×" if f else "n/a"
    line = f"| {name} | {f:.{digits}g}{unit} | {s:.{digits}g}{unit} | {ratio(s)} | {goal} |"
    if base:
        b = med("baseline", *path)
        line += f" {b:.{digits}g}{unit} | {ratio(b)} |"
    print(line)
row("review p50, client-observed", ("review_latency_ms", "p50"), "≤ 1.5×", " ms")
row("review p99, client-observed", ("review_latency_ms", "p99"), "≤ 2×", " ms")
row("mutate p50", ("mutate", "latency_ms", "p50"), "", " ms")
row("validate p50", ("validate", "latency_ms", "p50"), "", " ms")
row("object (mutate + validate) p50", ("object_latency_ms", "p50"), "", " ms")
row("object p99", ("object_latency_ms", "p99"), "", " ms")
row("server CPU per review", ("server", "cpu_us_per_review"), "≤ 1.5×", " µs")
row("mutate response bytes", ("mutate", "response_bytes_mean"), "", " B", 4)
row("mutate patch bytes (decoded)", ("mutate", "patch_bytes_mean"), "", " B", 4)
row("validate response bytes", ("validate", "response_bytes_mean"), "", " B", 4)
row("warnings per mutate", ("mutate", "warnings_per_call"), "")
print(f"\nLoad average at the end (1, 5, 15 min): {' '.join(open('/proc/loadavg').read().split()[:3])}")
print(f"Raw results: {sys.argv[1]}")
PY
