#!/usr/bin/env bash
# Installs what is missing, builds sizeguard with its tests and runs the whole suite.
#   tests/run.sh              default suite (unit, integration, script tests)
#   tests/run.sh --sanitize   the same suite built with ASan+UBSan (separate build dir)
# Environment: BUILD_DIR (default build/ or build-asan/), JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=OFF
build_dir=${BUILD_DIR:-build}
for arg in "$@"; do
  case $arg in
    --sanitize) sanitize=ON; build_dir=${BUILD_DIR:-build-asan} ;;
    *) echo "usage: tests/run.sh [--sanitize]" >&2; exit 2 ;;
  esac
done
jobs=${JOBS:-$(nproc)}

deploy/install-deps.sh all

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIZEGUARD_BUILD_TESTS=ON \
  -DSIZEGUARD_SANITIZE=$sanitize >/dev/null
cmake --build "$build_dir" -j "$jobs"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" --timeout 600
