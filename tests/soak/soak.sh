#!/usr/bin/env bash
# Soak: REQUESTS reviews (default 1,000,000) at a fixed RATE (default 2,000/s, about 8.5 min)
# against `sizeguard serve` with the example policies, the bundled model and a recommendations
# snapshot, every answer checked (--expect: status, uid, allowed and patch as in a first pass).
# RSS is sampled every 10 s. Pass: 0 errors, and RSS growth after the warm-up (WARMUP_S,
# default 60 s) below 5% (largest later sample vs the sample at the end of the warm-up).
#
# Environment: REQUESTS, RATE, CONNECTIONS (16), WARMUP_S, OUT (kept results dir), BUILD_DIR,
# NO_BUILD=1, SERVER_ARGS (see tests/bench/lib.sh).
set -euo pipefail
# shellcheck source=tests/bench/lib.sh
source "$(dirname "$0")/../bench/lib.sh"

requests=${REQUESTS:-1000000}
rate=${RATE:-2000}
connections=${CONNECTIONS:-16}
warmup_s=${WARMUP_S:-60}

sg_prepare soak
sg_pid="" sampler=""
cleanup() {
  [[ -n $sampler ]] && kill "$sampler" 2>/dev/null
  [[ -n $sg_pid ]] && sg_stop "$sg_pid"
  sg_trim_logs "$work"
}
trap cleanup EXIT
sg_start_sizeguard "$work"
sg_log "soak: $requests reviews at $rate/s over $connections connections (~$((requests / ${rate%.*}))s); results in $out"

# RSS every 10 s: seconds since start, VmRSS KiB.
(
  start=$(date +%s)
  while kill -0 "$sg_pid" 2>/dev/null; do
    echo "$(($(date +%s) - start)) $(sg_rss_kib "$sg_pid")"
    sleep 10
  done
) >"$out/rss.txt" &
sampler=$!

"$sg_loadgen" --url "https://127.0.0.1:$sg_port" --ca "$work/certs/ca.crt" --connections "$connections" \
  --rate "$rate" --requests "$requests" --warmup 0 --expect --server-pid "$sg_pid" \
  --metrics-url "http://127.0.0.1:$sg_metrics_port" --progress 60 --json --label soak >"$out/result.json" 2>"$out/loadgen.log" \
  || { cat "$out/loadgen.log" >&2; sg_die "loadgen failed"; }
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true; sampler=""
echo "$(awk 'END { print $1 + 10 }' "$out/rss.txt") $(sg_rss_kib "$sg_pid")" >>"$out/rss.txt"

python3 - "$out/result.json" "$out/rss.txt" "$warmup_s" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
samples = [tuple(map(int, l.split())) for l in open(sys.argv[2]) if len(l.split()) == 2]
warm = int(sys.argv[3])
after = [s for s in samples if s[0] >= warm]
base = after[0][1] if after else None
peak = max(s[1] for s in after) if after else None
growth = (peak - base) / base * 100 if base else None
lat = r["latency_ms"]
print(f"reviews measured: {r['requests']:,} in {r['window_s']:.0f} s ({r['throughput_rps']:,.0f}/s); sent in total {r['sent_total']:,}")
print(f"errors: {r['errors']}  statuses: {r['statuses']}")
print(f"latency from intended send (ms): p50 {lat['p50']:.3f}  p99 {lat['p99']:.3f}  p99.9 {lat['p999']:.3f}  max {lat['max']:.1f}")
if "server_histogram" in r:
    h = r["server_histogram"]
    print(f"server-side: {h['fraction_le'] * 100:.3f}% of reviews ≤ {h['le_s'] * 1e3:g} ms, p99 ≈ {h['p99_ms_est']:.3f} ms")
if "server" in r:
    print(f"server CPU: {r['server']['cpu_cores']:.2f} cores, {r['server']['cpu_us_per_review']:.0f} µs/review")
print("RSS MiB (t s: MiB): " + ", ".join(f"{t}:{kib / 1024:.1f}" for t, kib in samples))
if base:
    print(f"RSS after the {warm} s warm-up: {base / 1024:.1f} MiB, peak later {peak / 1024:.1f} MiB, growth {growth:.2f}% (goal < 5%)")
ok = r["errors"]["total"] == 0 and growth is not None and growth < 5
if growth is None:
    print(f"no RSS sample after the {warm} s warm-up: run longer or lower WARMUP_S")
print("soak: PASS" if ok else "soak: FAIL")
sys.exit(0 if ok else 1)
PY
