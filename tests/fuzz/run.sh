#!/usr/bin/env bash
# libFuzzer targets (clang, with ASan+UBSan), seeded from the real apiserver fixtures and
# the Quantity test forms. Runs each target for SECONDS (default 30); a crash fails.
#   tests/fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-30}
out=${FUZZ_DIR:-build-fuzz}
mkdir -p "$out"
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (deploy/install-deps.sh test installs clang)" >&2; exit 2; }
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. -DSIZEGUARD_VERSION=\"fuzz\")

build() {  # build NAME SOURCES... -- LIBS...
  local name=$1; shift
  local sources=() libs=()
  while [[ $# -gt 0 && $1 != -- ]]; do sources+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  libs=("$@")
  clang++ "${flags[@]}" "${sources[@]}" -o "$out/$name" "${libs[@]}"
}
build quantity_fuzz tests/fuzz/quantity_fuzz.cpp webhook/quantity.cpp
build review_fuzz tests/fuzz/review_fuzz.cpp webhook/review.cpp webhook/workload.cpp webhook/quantity.cpp -- -lcrypto

# Seeds.
mkdir -p "$out/corpus/quantity" "$out/corpus/review"
for q in 0 500m 1.5Gi 1e3 1E-3 .5 +1 128974848 100.035k 9Ei 0.000000000001Ki -1.5Mi 1e2147483647; do
  printf '%s' "$q" > "$out/corpus/quantity/$(printf '%s' "$q" | md5sum | cut -c1-12)"
done
cp ../shared/fixtures/admission-apiserver-1.28/*.json "$out/corpus/review/" 2>/dev/null || cp tests/fixtures/admission/*.json "$out/corpus/review/"

status=0
for target in ${FUZZ_TARGETS:-quantity_fuzz review_fuzz}; do
  corpus=$out/corpus/${target%_fuzz}
  echo "fuzz: $target for ${seconds}s"
  if ! "$out/$target" -max_total_time="$seconds" -max_len=65536 -artifact_prefix="$out/$target-" "$corpus" \
      > "$out/$target.log" 2>&1; then
    echo "fuzz: $target FAILED, see $out/$target.log and the crash input $out/$target-*" >&2
    tail -30 "$out/$target.log" >&2
    status=1
  else
    grep -E '^#[0-9]+.*(DONE|pulse)' "$out/$target.log" | tail -1
  fi
done
exit $status
