#!/usr/bin/env bash
# Builds the libFuzzer targets in the clang ASan+UBSan build (the one `tests/run.sh
# --sanitize` uses, so its objects are reused), seeds them from the fixtures, the example
# policies and the usage traces, and runs each for SECONDS (default 30). Any crash, leak,
# timeout or broken invariant fails, and the input that caused it is printed.
#   tests/fuzz/run.sh [SECONDS]
# Environment: FUZZ_TARGETS (default: all eight), BUILD_DIR (default build-asan/),
# JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
seconds=${1:-30}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "usage: tests/fuzz/run.sh [SECONDS]" >&2; exit 2; }
build_dir=${BUILD_DIR:-build-asan}
jobs=${JOBS:-$(nproc)}
targets=${FUZZ_TARGETS:-admission_fuzz json_fuzz quantity_fuzz policy_fuzz usage_csv_fuzz bitbrains_fuzz manifest_fuzz
  http_framing_fuzz}

# Installs what is missing and configures exactly as tests/run.sh --sanitize does (by the
# same code), so a build dir made by either serves both.
tests/run.sh --sanitize --configure-only
cmake --build "$build_dir" -j "$jobs" --target $targets

out=$build_dir/fuzz
seeds=$out/seeds
rm -rf "$seeds"
mkdir -p "$seeds"

# Seeds: admission reviews as the apiserver sends them, once per webhook (first byte
# '0' = mutate, '1' = validate).
mkdir -p "$seeds/admission"
for f in tests/fixtures/admission-apiserver-1.28/*.json; do
  [[ -f $f ]] || continue
  for w in 0 1; do { printf '%s' "$w"; cat "$f"; } > "$seeds/admission/$w-$(basename "$f")"; done
done
# The body parser (differential against nlohmann): the same reviews, without the selector byte.
mkdir -p "$seeds/json"
for f in tests/fixtures/admission-apiserver-1.28/*.json; do
  [[ -f $f ]] || continue
  cp "$f" "$seeds/json/"
done
mkdir -p "$seeds/quantity"
for q in 0 500m 1.5Gi 1e3 1E-3 .5 +1 128974848 100.035k 9Ei 0.000000000001Ki -1.5Mi 1e2147483647; do
  printf '%s' "$q" > "$seeds/quantity/$(printf '%s' "$q" | md5sum | cut -c1-12)"
done
mkdir -p "$seeds/policy"
cp policies/examples/*.yaml "$seeds/policy/"
find tests/fixtures -name '*.yaml' -exec cp {} "$seeds/policy/" \;
# Manifests for review: the YAML and JSON fixtures, the example policies (YAML with anchors
# and lists), a small alias fan-out and deep nesting in both syntaxes.
mkdir -p "$seeds/manifest"
find tests/fixtures -name '*.yaml' -exec cp {} "$seeds/manifest/" \;
cp policies/examples/*.yaml tests/fixtures/admission-apiserver-1.28/deployment-create.json "$seeds/manifest/"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nx: {a0: &a [l, l], a1: &b [*a, *a, *a], a2: [*b, *b, *b]}\n<<: {y: 1}\n' \
  > "$seeds/manifest/aliases.yaml"
printf 'apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: p}, x: %s%s}\n' \
  "$(printf '[%.0s' $(seq 1 400))" "$(printf ']%.0s' $(seq 1 400))" > "$seeds/manifest/deep.yaml"
# HTTP framing: requests as the apiserver and other clients frame them.
mkdir -p "$seeds/http_framing"
printf 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n' > "$seeds/http_framing/pipelined"
printf 'POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}' > "$seeds/http_framing/length"
printf 'POST /readyz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b\r\n{\r\n1\r\n}\r\n0\r\nT: 1\r\n\r\n' > "$seeds/http_framing/chunked"
printf 'POST /readyz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}' > "$seeds/http_framing/expect"
printf 'POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello' > "$seeds/http_framing/repeated-length"
# Usage: heads of the Bitbrains sample traces, the same rows as a long CSV, and a file of each
# format with its features (quoting, RFC3339, exponents, optional columns, bad rows).
mkdir -p "$seeds/bitbrains" "$seeds/usage_csv"
cp tests/fuzz/seeds/usage.csv "$seeds/usage_csv/"
cp tests/fuzz/seeds/bitbrains.csv "$seeds/bitbrains/"
for n in 1 2 3; do
  trace=tests/fixtures/usage/bitbrains-sample/$n.csv.gz
  [[ -f $trace ]] || continue
  zcat "$trace" | sed -n 1,50p > "$seeds/bitbrains/$n.csv"  # sed reads on: no SIGPIPE under pipefail
  awk -F';\t' -v n="$n" 'NR == 1 { print "timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes,cpu_request,memory_request"; next }
    { printf "%s,bitbrains,VM,%s,main,%.6f,%.0f,%s,%.0f\n", $1, n, $4 / ($3 / $2), $7 * 1024, $2, $6 * 1024 }' \
    "$seeds/bitbrains/$n.csv" > "$seeds/usage_csv/bitbrains-$n.csv"
done

options() {  # per target: inputs a little larger than the largest seed, so structure can grow; dictionaries
  case $1 in
    admission_fuzz) echo -max_len=32768 -dict=tests/fuzz/admission.dict ;;
    json_fuzz) echo -max_len=32768 -dict=tests/fuzz/admission.dict ;;
    quantity_fuzz) echo -max_len=64 ;;
    usage_csv_fuzz | bitbrains_fuzz) echo -max_len=8192 -dict=tests/fuzz/usage.dict ;;
    policy_fuzz) echo -max_len=8192 -dict=tests/fuzz/policy.dict ;;
    manifest_fuzz) echo -max_len=8192 -dict=tests/fuzz/policy.dict ;;
    http_framing_fuzz) echo -max_len=4096 -dict=tests/fuzz/http.dict ;;
  esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for target in $targets; do
  name=${target%_fuzz}
  corpus=$out/corpus/$name  # kept between runs; new inputs are written here
  mkdir -p "$corpus" "$out/crashes"
  log=$out/$target.log
  if "$out/$target" -max_total_time="$seconds" $(options "$target") -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$out/crashes/$target-" "$corpus" "$seeds/$name" > "$log" 2>&1; then
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
    execs=$(sed -n 's/^stat::number_of_executed_units: //p' "$log")
    cov=$(sed -En 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")
    ft=$(sed -En 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")
    corp=$(sed -En 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$done_line")
    rate=$(sed -En 's/.* exec\/s: ([0-9]+).*/\1/p' <<<"$done_line")
    echo "fuzz: $target ok: ${execs:-?} execs in ${seconds}s (${rate:-?}/s), coverage ${cov:-?} edges, ${ft:-?} features, corpus ${corp:-?}"
  else
    status=1
    echo "fuzz: $target FAILED (log: $log)" >&2
    grep -E 'ERROR: |SUMMARY: |invariant violated|==[0-9]+==' "$log" | head -5 >&2 || true
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    [[ -n $artifact ]] && echo "fuzz: $target input: $artifact (replay: $out/$target $artifact)" >&2
  fi
done
exit $status
