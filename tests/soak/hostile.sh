#!/usr/bin/env bash
# Hostile clients next to good ones. First a quiet baseline: good clients (the apiserver
# fixtures, answers checked) at a fixed RATE (default 1,000/s) for DURATION seconds. Then the
# same good load once per hostile kind, while sizeguard-loadgen --hostile runs beside it:
#   slowloris        SLOW_CONNECTIONS (default 256) connections sending a request a byte a second
#   oversize         bodies of 4 MiB (over the 3 MiB limit), HOSTILE_RATE per second
#   deep-json        an AdmissionReview whose object is an array nested 100,000 deep
#   many-containers  a Pod with 10,000 containers
#   bad-utf8         a Pod with a label value that is not UTF-8
# Pass per kind: the good clients get 0 errors and their p99 stays within 2× the baseline, and
# the server is still running. Exits non-zero if any kind fails.
#
# Placement (PIN=1, the default, on 2 or more cores): sizeguard on core 0, the clients on the
# other cores, and the hostile client at idle CPU priority (chrt --idle). In a cluster the
# attacker's CPU is somebody else's machine; on one test box its encryption and sends would
# otherwise take the CPU of the server or of the clients measuring it, and the table would
# measure the attacker. It still runs at its full rate (the "hostile side" column). PIN=0
# runs everything unpinned at normal priority.
#
# Environment: RATE, CONNECTIONS (8), DURATION (20), SLOW_CONNECTIONS, HOSTILE_RATE (20),
# KINDS (space-separated subset), OUT, BUILD_DIR, NO_BUILD=1, SERVER_ARGS, PIN.
set -euo pipefail
# shellcheck source=tests/bench/lib.sh
source "$(dirname "$0")/../bench/lib.sh"

rate=${RATE:-1000}
connections=${CONNECTIONS:-8}
duration=${DURATION:-20}
slow_connections=${SLOW_CONNECTIONS:-256}
hostile_rate=${HOSTILE_RATE:-20}
kinds=${KINDS:-slowloris oversize deep-json many-containers bad-utf8}
client_cpus=() hostile_prefix=()
if [[ ${PIN:-1} == 1 ]] && (($(nproc) >= 2)); then
  export SG_TASKSET="taskset -c 0"
  client_cpus=(taskset -c "1-$(($(nproc) - 1))")
  hostile_prefix=(chrt --idle 0)
fi
sg_prepare hostile
sg_pid="" bad_pid=""
cleanup() {
  [[ -n $bad_pid ]] && kill "$bad_pid" 2>/dev/null
  [[ -n $sg_pid ]] && sg_stop "$sg_pid"
  sg_trim_logs "$work"
}
trap cleanup EXIT
sg_start_sizeguard "$work"
sg_log "sizeguard pid $sg_pid on :$sg_port; results in $out"

good() {  # good LABEL: the good clients' fixed-rate load, answers checked
  "${client_cpus[@]}" "$sg_loadgen" --url "https://127.0.0.1:$sg_port" --ca "$work/certs/ca.crt" --connections "$connections" \
    --rate "$rate" --duration "$duration" --warmup 2 --expect --json --label "$1" \
    >"$out/$1.json" 2>"$out/$1.log" || true
}

good baseline
base_p99=$(sg_json "$out/baseline.json" 'r["latency_ms"]["p99"]')
echo "baseline ($rate/s, $connections connections, ${duration}s): p99 $base_p99 ms, errors $(sg_json "$out/baseline.json" 'r["errors"]["total"]')${SG_TASKSET:+; sizeguard on core 0, clients on cores ${client_cpus[2]:-}, hostile client at idle priority}"
echo
echo "| hostile client | good p50 ms | good p99 ms | vs baseline | good errors | hostile side | met? |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
failures=0
for kind in $kinds; do
  if [[ $kind == slowloris ]]; then
    args=(--connections "$slow_connections")
  else
    args=(--connections 2 --rate "$hostile_rate" --warmup 0 --timeout 30000)
  fi
  "${hostile_prefix[@]}" "${client_cpus[@]}" "$sg_loadgen" --url "https://127.0.0.1:$sg_port" --ca "$work/certs/ca.crt" --hostile "$kind" \
    --duration $((duration + 6)) --json --label "hostile-$kind" "${args[@]}" \
    >"$out/hostile-$kind.json" 2>"$out/hostile-$kind.log" &
  bad_pid=$!
  sleep 3  # let the hostile clients get going (slowloris: connections opened)
  good "good-$kind"
  wait "$bad_pid" || true
  bad_pid=""
  # Let the server shed what the hostile client left (queued or half-read connections) so the
  # next kind starts from a quiet server: at most the good clients' connections open.
  for _ in $(seq 1 150); do
    open=$(sg_metric 'sizeguard_http_open_connections{listener="webhook"}' 2>/dev/null || echo 0)
    awk -v o="${open:-0}" 'BEGIN { exit !(o <= 0) }' && break
    sleep 0.1
  done
  alive=1
  kill -0 "$sg_pid" 2>/dev/null || alive=0
  p50=$(sg_json "$out/good-$kind.json" 'r["latency_ms"].get("p50", float("nan"))')
  p99=$(sg_json "$out/good-$kind.json" 'r["latency_ms"].get("p99", float("nan"))')
  errors=$(sg_json "$out/good-$kind.json" 'r["errors"]["total"]')
  ratio=$(awk -v a="$p99" -v b="$base_p99" 'BEGIN { printf "%.2f", a / b }')
  if [[ $kind == slowloris ]]; then
    side=$(sg_json "$out/hostile-$kind.json" '"%d conns opened, %d closed by server (mean life %.1fs), %d refused/failed" % (r["opened"], r["closed_by_server"], r["mean_lifetime_s"], r["connect_failures"])')
  else
    side=$(sg_json "$out/hostile-$kind.json" '"%d sent, statuses %s, errors %s" % (r["sent_total"], r["statuses"], {k: v for k, v in r["errors"].items() if v})')
  fi
  met=yes
  if [[ $alive == 0 || $errors != 0 ]] || ! awk -v r="$ratio" 'BEGIN { exit !(r <= 2) }'; then met="**no**"; failures=$((failures + 1)); fi
  [[ $alive == 1 ]] || side="SERVER DIED; $side"
  echo "| $kind | $p50 | $p99 | ${ratio}× | $errors | $side | $met |"
  [[ $alive == 1 ]] || break
done
echo
if [[ $failures -eq 0 ]]; then echo "hostile: PASS"; else echo "hostile: $failures FAILED (results in $out)"; exit 1; fi
