#!/usr/bin/env bash
# Installs what is missing, builds sizeguard and runs its tests. With no argument (the
# README's test command, and what CI runs) three stages run in turn, each reported at the end:
#   1. the default suite: GCC, build/
#   2. the same whole suite under ASan+UBSan: clang, build-asan/ (also builds the fuzzers)
#   3. short fuzzing: tests/fuzz/run.sh FUZZ_SECONDS on the stage-2 build
# Single stages:
#   tests/run.sh --quick      stage 1 only
#   tests/run.sh --sanitize   stage 2 only
#   tests/run.sh --tsan       the concurrency tests (server, hot reload, budgets, GPU reservations, API client, watches,
#                             background audit, buffered logs, the tail boosters predicted beside the main one)
#                             under ThreadSanitizer, build-tsan/
#   --configure-only          install and configure the chosen stage's build, nothing else
#                             (tests/fuzz/run.sh uses it with --sanitize)
# Environment: JOBS (default nproc), FUZZ_SECONDS (per fuzz target, default 20),
# BUILD_DIR (the build directory of a single-stage run).
set -euo pipefail
cd "$(dirname "$0")/.."

stages=(default sanitize fuzz tsan)
configure_only=false
for arg in "$@"; do
  case $arg in
    --quick) stages=(default) ;;
    --sanitize) stages=(sanitize) ;;
    --tsan) stages=(tsan) ;;
    --configure-only) configure_only=true ;;
    *) echo "usage: tests/run.sh [--quick|--sanitize|--tsan] [--configure-only]" >&2; exit 2 ;;
  esac
done
((${#stages[@]} == 1)) || [[ -z ${BUILD_DIR:-} ]] || { echo "tests/run.sh: BUILD_DIR needs a single stage" >&2; exit 2; }
jobs=${JOBS:-$(nproc)}

deploy/install-deps.sh all

# Line tables (-g1) are all that sanitizer reports and backtraces need, and build about a
# third faster than full debug information.
configure() {  # configure DIR COMPILER CMAKE-ARGS...
  local dir=$1 compiler=$2
  shift 2
  # The compiler is fixed when a build dir is first configured: one made with another
  # compiler starts over.
  if [[ -f $dir/CMakeCache.txt ]] && ! grep -q "^CMAKE_CXX_COMPILER:[A-Z]*=.*/$compiler\$" "$dir/CMakeCache.txt"; then
    rm -rf "$dir/CMakeCache.txt" "$dir/CMakeFiles"
  fi
  CXX=$compiler cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIZEGUARD_BUILD_TESTS=ON \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" "$@" >/dev/null
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# CI shows only the tail of the output, so failing tests are named again in the summary
# with their assertion lines. Each failing test is run once more, alone: one that passes
# then is reported as FLAKY (and does not fail the stage), one that fails again fails it.
report_failures() {  # report_failures DIR: for each test in LastTestsFailed.log
  local dir=$1 name output rc=0
  cp "$dir/Testing/Temporary/LastTestsFailed.log" "$dir/first-failures.log"
  while IFS=: read -r _ name; do
    if output=$(ctest --test-dir "$dir" --no-tests=error -R "^${name//./\\.}\$" --output-on-failure --timeout 900 2>&1); then
      echo "  FLAKY (failed in the parallel run, passed alone): $name"
    else
      echo "  FAILED twice: $name"
      rc=1
    fi
    # The first run's output is in the log above; these are the second run's key lines.
    grep -E "Failure$|^Expected|^  Actual|Which is|Value of|^FAIL|ERROR: |runtime error|\*\*\*Timeout|exception" \
      <<<"$output" | head -12 | sed 's/^/      /' || true
  done < "$dir/first-failures.log"
  return $rc
}

# Tests that need what a bare clone lacks (the usage traces in the data directory, the
# control plane in ../shared/k8s) skip, and say what is missing. The summary counts and
# names them, so a bare-clone run is never mistaken for the whole suite; in CI, which has
# ../shared, such a skip fails the stage instead of silently dropping the full-data tests.
report_skips() {  # report_skips DIR CTEST-OUTPUT
  local dir=$1 output=$2 name reason count=0
  local skipped
  skipped=$(sed -n 's/^[[:space:]]*[0-9]* - \(.*\) (Skipped)$/\1/p' "$output")
  [[ -n $skipped ]] || return 0
  while IFS= read -r name; do
    count=$((count + 1))
    # The first line of that test's output in ctest's log that says what is missing.
    reason=$(awk -v t="$name" '$0 ~ /^[0-9]+\/[0-9]+ Testing: / { inside = ($3 == t) ; next }
                                 inside && /missing/ { sub(/^SKIP: /, ""); print; exit }' \
             "$dir/Testing/Temporary/LastTest.log")
    echo "    skipped: $name: ${reason:-(no reason given)}"
  done <<<"$skipped" > "$dir/skipped.log"
  echo "  $count tests skipped, each for something missing (../shared beside the checkout has the data and the control plane; SIZEGUARD_DATA_DIR / SIZEGUARD_K8S_DIR point elsewhere):" >> "$stage_report"
  cat "$dir/skipped.log" >> "$stage_report"
  if [[ ${CI:-} == true ]]; then
    echo "  CI=true: CI has ../shared and installs every tool, so these tests must run, not skip" >> "$stage_report"
    return 1
  fi
}

run_ctest() {  # run_ctest DIR CTEST-ARGS...
  local dir=$1 ctest_rc=0 rc=0
  shift
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" "$@" | tee "$dir/ctest-output.log" || ctest_rc=$?
  # Before report_failures: its reruns replace ctest's log.
  report_skips "$dir" "$dir/ctest-output.log" || rc=1
  if ((ctest_rc != 0)); then
    report_failures "$dir" | tee -a "$stage_report"
    ((PIPESTATUS[0] == 0)) || rc=1
  fi
  return $rc
}

run_default() {
  local dir=${BUILD_DIR:-build}
  configure "$dir" g++ -DSIZEGUARD_SANITIZE=OFF
  $configure_only && return
  cmake --build "$dir" -j "$jobs"
  run_ctest "$dir" --timeout 600
}

run_sanitize() {
  # clang: its libFuzzer instruments the same objects, so fuzzing needs no third build.
  local dir=${BUILD_DIR:-build-asan}
  configure "$dir" clang++ -DSIZEGUARD_SANITIZE=ON
  $configure_only && return
  cmake --build "$dir" -j "$jobs"
  run_ctest "$dir" --timeout 900
}

run_fuzz() {
  BUILD_DIR=build-asan tests/fuzz/run.sh "${FUZZ_SECONDS:-20}"
}

run_tsan() {
  local dir=${BUILD_DIR:-build-tsan}
  configure "$dir" g++ -DSIZEGUARD_TSAN=ON
  $configure_only && return
  cmake --build "$dir" -j "$jobs" --target sizeguard unit_kube unit_recommender unit_webhook integration_server_test \
    integration_hostile_clients_test integration_policy_reload_test integration_budget_test integration_gpu_reservations_test integration_kubeapi_test integration_watch_test integration_background_audit_test
  # XGBoost's OpenMP runtime is not instrumented: one thread keeps model loading visible.
  OMP_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/sanitizers/tsan.supp" \
    run_ctest "$dir" --timeout 900 \
      -R '^(integration\.(server|hostile_clients|policy_reload|budget|gpu_reservations|kubeapi|watch|background_audit)_test\.|unit\.kube\.Metrics|unit\.recommender\.(RecommendationStore|Model\.TailForecasts)|unit\.webhook\.(LargeReviewLane|LineWriter)|script\.(rightsizing_serve|cert_rotation)$)'
}

summary=()
status=0
for stage in "${stages[@]}"; do
  start=$SECONDS
  echo "=== tests/run.sh: stage $stage"
  stage_report=$(mktemp)
  export stage_report
  # Not in an `if`: that would switch off errexit inside the stage.
  set +e
  ( set -e; "run_$stage" )
  rc=$?
  set -e
  if ((rc == 0)); then result=passed; else result="FAILED (exit $rc)"; status=1; fi
  summary+=("$stage: $result in $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s")
  while IFS= read -r line; do summary+=("$line"); done < "$stage_report"
  rm -f "$stage_report"
done
if ! $configure_only; then
  echo "=== tests/run.sh summary"
  printf '  %s\n' "${summary[@]}"
fi
exit $status
