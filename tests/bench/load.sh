#!/usr/bin/env bash
# End-to-end load test: `sizeguard serve` (example policies, bundled model, a recommendations
# snapshot, decision and audit logs on) and the floor server `sizeguard-floor` (same libraries,
# parses the body, answers allowed), both with the same certificate, driven by
# sizeguard-loadgen with the real apiserver fixtures over TLS keep-alive:
#   1. max rate (closed loop) against the floor, then sizeguard;
#   2. a fixed rate (open loop, default 2,000/s) against the floor, then sizeguard;
# unpinned (server and client share both cores) and/or pinned (server on CPU 0, client on
# CPU 1, so server CPU per review gives an honest capacity per core). Prints a markdown table.
#
# Environment: DURATION (30 s per phase), WARMUP (3 s), CONNECTIONS (16), RATE (2000),
# PIN (both | unpinned | pinned), OUT (directory for results.jsonl and logs; default a temp
# dir, kept), BUILD_DIR, NO_BUILD=1, SERVER_ARGS (see tests/bench/lib.sh).
set -euo pipefail
# shellcheck source=tests/bench/lib.sh
source "$(dirname "$0")/lib.sh"

duration=${DURATION:-30}
warmup=${WARMUP:-3}
connections=${CONNECTIONS:-16}
rate=${RATE:-2000}
pin=${PIN:-both}

sg_prepare load
sg_start_pair "$work"
sg_log "sizeguard pid $sg_pid on :$sg_port (metrics :$sg_metrics_port), floor pid $floor_pid on :$floor_port; results in $out"

results=$out/results.jsonl
: > "$results"
phase() {  # phase PIN SERVER MODE
  local pin_mode=$1 server=$2 mode=$3 port pid metrics=() client_cpus="0-$(($(nproc) - 1))" server_cpus
  if [[ $server == sizeguard ]]; then port=$sg_port pid=$sg_pid metrics=(--metrics-url "http://127.0.0.1:$sg_metrics_port")
  else port=$floor_port pid=$floor_pid; fi
  server_cpus=$client_cpus
  if [[ $pin_mode == pinned ]]; then server_cpus=0 client_cpus=1; fi
  taskset -a -p -c "$server_cpus" "$pid" >/dev/null
  local rate_arg=0
  [[ $mode == fixed ]] && rate_arg=$rate
  sg_log "$pin_mode $server $mode (rate $rate_arg, $connections connections, ${duration}s)"
  taskset -c "$client_cpus" "$sg_loadgen" --url "https://127.0.0.1:$port" --ca "$work/certs/ca.crt" \
    --connections "$connections" --rate "$rate_arg" --duration "$duration" --warmup "$warmup" \
    --server-pid "$pid" "${metrics[@]}" --json --label "$pin_mode/$server/$mode" >>"$results" 2>>"$out/loadgen.log"
}

modes=()
case $pin in
  both) modes=(unpinned pinned) ;;
  unpinned | pinned) modes=("$pin") ;;
  *) sg_die "PIN must be both, unpinned or pinned" ;;
esac
if [[ $(nproc) -lt 2 && $pin != unpinned ]]; then
  sg_log "one CPU: pinned phases skipped"
  modes=(unpinned)
fi
for m in "${modes[@]}"; do
  for mode in max fixed; do
    phase "$m" floor "$mode"
    phase "$m" sizeguard "$mode"
  done
done
taskset -a -p -c "0-$(($(nproc) - 1))" "$sg_pid" >/dev/null
rss_after=$(sg_rss_kib "$sg_pid")
hwm_after=$(awk '/^VmHWM:/ { print $2 }' "/proc/$sg_pid/status")
floor_rss=$(sg_rss_kib "$floor_pid")

python3 - "$results" "$rate" "$rss_after" "$hwm_after" "$floor_rss" <<'PY'
import json, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
rate, rss, hwm, floor_rss = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def get(label, *path):
    r = rows.get(label)
    for p in path:
        if r is None: return None
        r = r.get(p) if isinstance(r, dict) else None
    return r

def fmt(v, unit=""):
    if v is None: return "n/a"
    if isinstance(v, float) and v >= 100: return f"{v:,.0f}{unit}"
    return f"{v:.3g}{unit}" if isinstance(v, float) else f"{v}{unit}"

print("| target | metric | floor | sizeguard | ratio | goal | met? |")
print("| --- | --- | --- | --- | --- | --- | --- |")
def row(target, metric, floor, sg, goal, met, ratio=None, unit=""):
    if ratio is None and floor and sg: ratio = sg / floor
    print(f"| {target} | {metric} | {fmt(floor, unit)} | {fmt(sg, unit)} | {fmt(ratio, '×') if ratio else 'n/a'} | {goal} | {met} |")
def yn(ok): return "n/a" if ok is None else ("yes" if ok else "**no**")

for pin in ("unpinned", "pinned"):
    if f"{pin}/sizeguard/max" not in rows: continue
    f, s = f"{pin}/floor/max", f"{pin}/sizeguard/max"
    cores = "2 cores shared with the client" if pin == "unpinned" else "server on 1 core, client on the other"
    ft, st = get(f, "throughput_rps"), get(s, "throughput_rps")
    row(f"max rate, {pin}", f"reviews/s ({cores})", ft, st,
        "≥ 10,000/s on 2 cores" if pin == "unpinned" else "(capacity per core)",
        yn(st >= 10000) if pin == "unpinned" and st else "n/a")
    row(f"max rate, {pin}", "floor ÷ sizeguard throughput", None, None, "≤ 1.5×",
        yn(ft / st <= 1.5) if ft and st else "n/a", ratio=(ft / st) if ft and st else None)
    fc, sc = get(f, "server", "cpu_us_per_review"), get(s, "server", "cpu_us_per_review")
    row(f"max rate, {pin}", "server CPU µs per review", fc, sc, "≤ 1.5× floor", yn(sc / fc <= 1.5) if fc and sc else "n/a")
    row(f"max rate, {pin}", "→ reviews/s per server core", 1e6 / fc if fc else None, 1e6 / sc if sc else None, "", "")
    row(f"max rate, {pin}", "server cores used", get(f, "server", "cpu_cores"), get(s, "server", "cpu_cores"), "", "")
    row(f"max rate, {pin}", "client cores used", get(f, "client_cpu_cores"), get(s, "client_cpu_cores"), "", "")
    for q in ("p50", "p99", "p999"):
        row(f"max rate, {pin}", f"{q} latency, client-observed", get(f, "latency_ms", q), get(s, "latency_ms", q), "", "", unit=" ms")
    row(f"max rate, {pin}", "errors", get(f, "errors", "total"), get(s, "errors", "total"), "0", yn(get(s, "errors", "total") == 0))
    f, s = f"{pin}/floor/fixed", f"{pin}/sizeguard/fixed"
    target = f"{rate:,.0f}/s, {pin}"
    row(target, "achieved reviews/s", get(f, "throughput_rps"), get(s, "throughput_rps"), "", "")
    for q in ("p50", "p99", "p999", "max"):
        row(target, f"{q} latency from intended send, client-observed", get(f, "latency_ms", q), get(s, "latency_ms", q), "", "", unit=" ms")
    frac = get(s, "server_histogram", "fraction_le")
    le = get(s, "server_histogram", "le_s")
    row(target, f"server-side reviews ≤ {le * 1e3 if le else '?'} ms (histogram)", None, frac,
        "p99 ≤ 2 ms: ≥ 0.99" + ("" if le == 0.002 else " (no 0.002 bucket: ≤ 2.5 ms shown)"),
        yn(frac >= 0.99) if frac is not None else "n/a", ratio=None)
    row(target, "server-side p99 (histogram estimate)", None, get(s, "server_histogram", "p99_ms_est"), "≤ 2 ms",
        yn(get(s, "server_histogram", "p99_ms_est") <= 2) if get(s, "server_histogram", "p99_ms_est") is not None else "n/a", unit=" ms")
    row(target, "server CPU µs per review", get(f, "server", "cpu_us_per_review"), get(s, "server", "cpu_us_per_review"), "", "")
    row(target, "errors", get(f, "errors", "total"), get(s, "errors", "total"), "0", yn(get(s, "errors", "total") == 0))
row("after all phases", "server RSS (VmRSS / VmHWM)", floor_rss / 1024, rss / 1024, "≤ 64 MiB (model + policies loaded)",
    yn(hwm / 1024 <= 64), unit=" MiB")
print(f"\nsizeguard VmHWM {hwm / 1024:.1f} MiB. TLS: {next(iter(rows.values()))['tls']}. Raw results: {sys.argv[1]}")
PY
