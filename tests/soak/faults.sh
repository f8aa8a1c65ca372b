#!/usr/bin/env bash
# Faults under load. `sizeguard serve` gets a fixed-rate load (RATE, default 1,000/s) of the real
# apiserver fixtures with every answer checked against a first pass (--expect: HTTP 200, uid,
# allowed, patch), while:
#   1. policies: the ConfigMap-style policy directory (..data symlink) is swapped to a generation
#      where one file is broken YAML, then back. The last good set must stay in force (no answer
#      changes), and the reload error must show in the log and the metrics.
#   2. recommendations: the snapshot is truncated in place (a writer caught mid-write), then
#      restored. The previous snapshot must stay in force (same patches); the error must show.
#   3. certificate rotation: certs/make-certs.sh re-issues the serving certificate; new
#      connections must get the new one, and no request may fail.
#   4. SIGTERM under load: every request the server read is answered correctly, the process
#      exits 0 within --drain-timeout.
# Prints PASS/FAIL per fault; exits non-zero if any failed.
#
# Environment: RATE, CONNECTIONS (8), OUT, BUILD_DIR, NO_BUILD=1, SERVER_ARGS.
set -euo pipefail
# shellcheck source=tests/bench/lib.sh
source "$(dirname "$0")/../bench/lib.sh"

rate=${RATE:-1000}
connections=${CONNECTIONS:-8}
sg_prepare faults
cp "$work/recommendations.json" "$work/recommendations.good"

# A ConfigMap volume as the kubelet writes it: ..<generation>/ with the files, a ..data symlink
# to it, and one symlink per key through ..data. Swapping = a new generation + rename(2) of ..data.
policies=$work/policies
mkdir -p "$policies"
generation=0
publish_policies() {  # publish_policies SOURCE_DIR
  generation=$((generation + 1))
  local gen="..gen_$generation"
  mkdir "$policies/$gen"
  cp "$1"/*.yaml "$policies/$gen/"
  ln -s "$gen" "$policies/..data_tmp"
  mv -T "$policies/..data_tmp" "$policies/..data"
  local f
  for f in "$1"/*.yaml; do ln -sfn "..data/$(basename "$f")" "$policies/$(basename "$f")"; done
}
mkdir -p "$work/good" "$work/broken"
cp "$sg_root"/policies/examples/*.yaml "$work/good/"
cp "$sg_root"/policies/examples/*.yaml "$work/broken/"
# The broken generation loses the policy that denies validate-deployment-create-denied: if the
# server applied the rest of the set, that answer would change and --expect would catch it.
printf 'apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: resource-requirements\nspec: [unclosed\n' \
  >"$work/broken/resource-requirements.yaml"
publish_policies "$work/good"

sg_pid="" load_pid=""
cleanup() {
  [[ -n $load_pid ]] && kill "$load_pid" 2>/dev/null
  [[ -n $sg_pid ]] && sg_stop "$sg_pid"
  sg_trim_logs "$work"
}
trap cleanup EXIT
SG_POLICIES=$policies sg_start_sizeguard "$work" --policy-poll-interval 250ms --tls-reload-interval 250ms \
  --drain-timeout 10s
sg_log "sizeguard pid $sg_pid on :$sg_port; results in $out"

failures=0
result() {  # result NAME OK DETAIL
  if [[ $2 == 1 ]]; then echo "PASS  $1: $3"; else echo "FAIL  $1: $3"; failures=$((failures + 1)); fi
}
metric() { sg_metric "$1"; }
serial() {
  openssl s_client -connect "127.0.0.1:$sg_port" -CAfile "$work/certs/ca.crt" </dev/null 2>/dev/null |
    openssl x509 -noout -serial
}
loadgen() {  # loadgen LABEL SECONDS [args]: background fixed-rate load with answer checks
  local label=$1 secs=$2
  shift 2
  "$sg_loadgen" --url "https://127.0.0.1:$sg_port" --ca "$work/certs/ca.crt" --connections "$connections" \
    --rate "$rate" --duration "$secs" --warmup 0 --expect --json --label "$label" "$@" \
    >"$out/$label.json" 2>"$out/$label.log" &
  load_pid=$!
}

# Phases 1-3 under one load; its answers must all be correct.
loadgen reload 26 --save-expect "$out/expected.json"
sleep 3

# 1. Broken policy generation, then back.
errors_before=$(metric sizeguard_policy_load_errors_total); errors_before=${errors_before:-0}
publish_policies "$work/broken"
sleep 2
ok=1 detail=""
[[ $(metric sizeguard_policy_last_reload_success) == 0 ]] || { ok=0; detail+="last_reload_success is not 0 while broken; "; }
errors_now=$(metric sizeguard_policy_load_errors_total)
awk -v a="${errors_now:-0}" -v b="$errors_before" 'BEGIN { exit !(a > b) }' || { ok=0; detail+="load_errors_total did not increase; "; }
grep -q 'resource-requirements.yaml' "$work/server.log" || { ok=0; detail+="no log line names the broken file; "; }
readyz=$(curl -sS "http://127.0.0.1:$sg_metrics_port/readyz" || true)
grep -q 'degraded' <<<"$readyz" || { ok=0; detail+="readyz does not say degraded; "; }
sleep 3
publish_policies "$work/good"
sleep 2
[[ $(metric sizeguard_policy_last_reload_success) == 1 ]] || { ok=0; detail+="not reloaded after the fix; "; }
result "policy dir swapped to a broken file and back" "$ok" "${detail:-error logged and counted, readyz degraded, recovered (answers checked at the end)}"

# 2. Recommendations snapshot truncated mid-write, then restored.
rec_errors_before=$(metric sizeguard_recommendations_load_errors_total); rec_errors_before=${rec_errors_before:-0}
size=$(stat -c %s "$work/recommendations.good")
head -c $((size / 2)) "$work/recommendations.good" >"$work/recommendations.json"  # in place, not atomic
sleep 2
ok=1 detail=""
[[ $(metric sizeguard_recommendations_last_reload_success) == 0 ]] || { ok=0; detail+="last_reload_success is not 0 while truncated; "; }
rec_errors_now=$(metric sizeguard_recommendations_load_errors_total)
awk -v a="${rec_errors_now:-0}" -v b="$rec_errors_before" 'BEGIN { exit !(a > b) }' || { ok=0; detail+="load_errors_total did not increase; "; }
grep -q 'keeping the previous snapshot' "$work/server.log" || { ok=0; detail+="no 'keeping the previous snapshot' log line; "; }
sleep 2
cp "$work/recommendations.good" "$work/recommendations.json"
sleep 2
[[ $(metric sizeguard_recommendations_last_reload_success) == 1 ]] || { ok=0; detail+="not reloaded after the restore; "; }
result "recommendations snapshot truncated mid-write and restored" "$ok" "${detail:-error logged and counted, previous snapshot kept, recovered}"

# 3. Certificate rotation.
before=$(serial)
sg_certs "$work/certs"
sleep 2
after=$(serial)
ok=1 detail="serial $before -> $after"
[[ -n $before && -n $after && $before != "$after" ]] || { ok=0; detail="new connections still get serial $before (now $after)"; }
grep -q 'serving certificate reloaded' "$work/server.log" || { ok=0; detail+="; no 'serving certificate reloaded' log line"; }
result "serving certificate rotated" "$ok" "$detail"

wait "$load_pid" || true
load_pid=""
ok=$(sg_json "$out/reload.json" 'int(r["errors"]["total"] == 0 and r["requests"] > 0)')
result "answers during phases 1-3" "$ok" "$(sg_json "$out/reload.json" '"%d reviews checked, errors %s" % (r["sent_total"], r["errors"])')"
[[ $ok == 1 ]] || sed -n '1,10p' "$out/reload.log"

# 4. SIGTERM under load: answers must be correct; requests after the exit are refused.
loadgen sigterm 8 --expect-file "$out/expected.json"
sleep 3
t0=$(date +%s.%N)
kill -TERM "$sg_pid"
rc=0
wait "$sg_pid" || rc=$?
t1=$(date +%s.%N)
sg_pid=""
wait "$load_pid" || true
load_pid=""
took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
ok=1 detail="exit $rc after ${took}s"
[[ $rc == 0 ]] || ok=0
awk -v t="$took" 'BEGIN { exit !(t <= 10.5) }' || { ok=0; detail+=" (drain timeout 10s)"; }
grep -q 'drained' "$work/server.log" || { ok=0; detail+=", no 'drained' log line"; }
bad=$(sg_json "$out/sigterm.json" 'r["errors"]["mismatch"] + r["errors"]["status"] + r["errors"]["broken"] + r["errors"]["timeout"]')
unanswered=$(sg_json "$out/sigterm.json" 'r["errors"]["unanswered"]')
answered=$(sg_json "$out/sigterm.json" 'r["ok_total"]')
refused=$(sg_json "$out/sigterm.json" 'r["errors"]["connect"]')
detail+="; $answered answered correctly, $bad wrong/partial/timed out, $unanswered sent on a connection the server closed without answering, $refused refused after shutdown"
[[ $bad == 0 && $unanswered == 0 && $answered -gt 0 ]] || ok=0
result "SIGTERM under load" "$ok" "$detail"

echo
if [[ $failures -eq 0 ]]; then echo "faults: PASS"; else echo "faults: $failures FAILED (logs and results in $out)"; exit 1; fi
