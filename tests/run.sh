#!/usr/bin/env bash
# Installs what is missing, builds sizeguard with its tests and runs the whole suite.
#   tests/run.sh              default suite (unit, integration, script tests)
#   tests/run.sh --sanitize   the same suite built with clang, ASan and UBSan (separate build
#                             dir), which also builds the libFuzzer targets (tests/fuzz/run.sh)
#   --configure-only          install and configure, nothing else (tests/fuzz/run.sh uses it)
# Environment: BUILD_DIR (default build/ or build-asan/), JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=OFF
configure_only=false
build_dir=${BUILD_DIR:-build}
for arg in "$@"; do
  case $arg in
    --sanitize) sanitize=ON; build_dir=${BUILD_DIR:-build-asan} ;;
    --configure-only) configure_only=true ;;
    *) echo "usage: tests/run.sh [--sanitize] [--configure-only]" >&2; exit 2 ;;
  esac
done
jobs=${JOBS:-$(nproc)}

deploy/install-deps.sh all

if [[ $sanitize == ON ]]; then
  # clang for libFuzzer; the compiler is fixed when a build dir is first configured, so one
  # configured with another compiler starts over.
  export CXX=clang++
  if [[ -f $build_dir/CMakeCache.txt ]] && ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang++$' "$build_dir/CMakeCache.txt"; then
    rm -rf "$build_dir/CMakeCache.txt" "$build_dir/CMakeFiles"
  fi
fi
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIZEGUARD_BUILD_TESTS=ON \
  -DSIZEGUARD_SANITIZE=$sanitize >/dev/null
$configure_only && exit 0
cmake --build "$build_dir" -j "$jobs"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" --timeout 600
