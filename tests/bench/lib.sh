# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source it
# Sourced by tests/bench/load.sh and tests/soak/*.sh: build, dev certificates, a recommendations
# snapshot, starting sizeguard and the floor server, reading metrics. Not run on its own.
#
# Environment: BUILD_DIR (default build-bench), NO_BUILD=1 to use what is built, SIZEGUARD_BIN,
# SERVER_ARGS (extra `sizeguard serve` flags, e.g. --log-level=warn), AUDIT_LOG (default WORK/audit.log;
# /dev/null to measure without it).

sg_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
sg_build_dir=${BUILD_DIR:-$sg_root/build-bench}
# The whole Bitbrains trace when the data directory has it, else the six-VM sample.
sg_trace=${SIZEGUARD_DATA_DIR:-$sg_root/../shared/data}/bitbrains-rnd-2013-07
[[ -d $sg_trace ]] || sg_trace=$sg_root/tests/fixtures/usage/bitbrains-sample
sg_bin=${SIZEGUARD_BIN:-$sg_build_dir/sizeguard}  # SIZEGUARD_BIN: e.g. a main build to compare with
sg_loadgen=$sg_build_dir/bench/sizeguard-loadgen
sg_floor=$sg_build_dir/bench/sizeguard-floor

sg_log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
sg_die() { echo "FAIL: $*" >&2; exit 1; }

sg_build() {
  [[ ${NO_BUILD:-0} == 1 ]] && return 0
  local launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S "$sg_root" -B "$sg_build_dir" -DCMAKE_BUILD_TYPE=Release -DSIZEGUARD_BUILD_BENCH=ON \
    -DSIZEGUARD_BUILD_TESTS=OFF "${launcher[@]}" >/dev/null
  cmake --build "$sg_build_dir" --target sizeguard sizeguard-loadgen sizeguard-floor -j "$(nproc)" >&2
}

# sg_certs DIR: CA + serving certificate for 127.0.0.1/localhost (re-running re-issues the leaf).
sg_certs() { "$sg_root/certs/make-certs.sh" --out "$1" --ip 127.0.0.1 --dns localhost >/dev/null; }

# sg_snapshot FILE: a recommendations snapshot from `sizeguard recommend` with the bundled model:
# the 500 Bitbrains series (a realistic snapshot size) plus a week of usage for the fixtures'
# workloads, so /mutate finds real recommendations for them. Cached in the build directory.
sg_snapshot() {
  local out=$1 cache=$sg_build_dir/loadtest-recommendations.json
  if [[ ! -s $cache ]]; then
    local tmp
    tmp=$(mktemp -d)
    python3 - "$tmp/fixtures.csv" <<'PY'
import math, sys
# One week of 5-minute samples, a daily cycle, for the workloads the apiserver fixtures name.
series = [("webhook-test", "Deployment", w, "app") for w in ("demo", "dry", "ssa", "denied")]
series.append(("webhook-test", "Pod", "user-pod", "user-pod"))
start = 1_700_000_000 - 1_700_000_000 % 86400
with open(sys.argv[1], "w") as f:
    f.write("timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes,cpu_request,memory_request\n")
    for i, (ns, kind, name, container) in enumerate(series):
        for k in range(7 * 288):
            day = math.sin(2 * math.pi * k / 288)
            cpu = 0.12 + 0.08 * day + 0.01 * ((k * 7 + i) % 5)
            mem = (180 + 20 * day + i) * 2**20
            f.write(f"{start + 300 * k},{ns},{kind},{name},{container},{cpu:.4f},{int(mem)},1,1073741824\n")
PY
    # (the Bitbrains traces have rows from powered-off VMs, which recommend reports at length)
    "$sg_bin" recommend --model "$sg_root/recommender/models/default" --csv "$tmp/fixtures.csv" \
      --out "$tmp/fixtures.json" >"$tmp/recommend.log" 2>&1 || { cat "$tmp/recommend.log" >&2; sg_die "recommend --csv"; }
    "$sg_bin" recommend --model "$sg_root/recommender/models/default" --bitbrains "$sg_trace" \
      --out "$tmp/bitbrains.json" >"$tmp/recommend.log" 2>&1 || { cat "$tmp/recommend.log" >&2; sg_die "recommend --bitbrains"; }
    python3 - "$tmp/bitbrains.json" "$tmp/fixtures.json" "$cache" <<'PY'
import json, sys
merged = json.load(open(sys.argv[1]))
merged["recommendations"].update(json.load(open(sys.argv[2]))["recommendations"])
json.dump(merged, open(sys.argv[3], "w"))
PY
    rm -rf "$tmp"
  fi
  cp "$cache" "$out"
}

# sg_prepare NAME: the set-up every script shares. Sets out (OUT, or a new
# /tmp/sizeguard-NAME.XXXXXX, kept) and work (= out), builds (unless NO_BUILD=1), makes
# certificates in WORK/certs and the recommendations snapshot WORK/recommendations.json.
sg_prepare() {
  out=${OUT:-$(mktemp -d "/tmp/sizeguard-$1.XXXXXX")}
  mkdir -p "$out"
  work=$out
  sg_build
  sg_certs "$work/certs"
  sg_snapshot "$work/recommendations.json"
}

# sg_start_sizeguard WORK [serve flags...]: serves with the example policies, the quickstart's
# cluster state, the bundled model and WORK/recommendations.json, TLS from WORK/certs.
# Sets sg_pid, sg_port, sg_metrics_port. Logs in WORK/server.log, audit in WORK/audit.log.
# SG_TASKSET (e.g. "taskset -c 0") and SG_POLICIES (default policies/examples) adjust it.
sg_start_sizeguard() {
  local work=$1 _
  shift
  : > "$work/server.log"
  # Ports chosen here, not with :0 and the `listening` log line, so --log-level=warn works too.
  sg_port=$(sg_free_port)
  sg_metrics_port=$(sg_free_port)
  # shellcheck disable=SC2086
  ${SG_TASKSET:-} "$sg_bin" serve --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" \
    --listen "127.0.0.1:$sg_port" --metrics-listen "127.0.0.1:$sg_metrics_port" \
    --policies "${SG_POLICIES:-$sg_root/policies/examples}" \
    --cluster-state "$sg_root/deploy/quickstart/cluster-state.yaml" \
    --model "$sg_root/recommender/models/default" --recommendations "$work/recommendations.json" \
    --audit-log "${AUDIT_LOG:-$work/audit.log}" ${SERVER_ARGS:-} "$@" >>"$work/server.log" 2>&1 &
  sg_pid=$!
  for _ in $(seq 1 400); do
    curl -fsS "http://127.0.0.1:$sg_metrics_port/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$sg_pid" 2>/dev/null || { tail -20 "$work/server.log" >&2; sg_die "sizeguard serve exited"; }
    sleep 0.05
  done
  curl -sS "http://127.0.0.1:$sg_metrics_port/readyz" >&2 || true
  sg_die "sizeguard not ready"
}

# sg_start_baseline WORK BIN: a second sizeguard, another build, served beside the one
# sg_start_sizeguard started, with the same flags, certificates and snapshot (its logs in
# WORK/baseline). Sets base_pid, base_port; sg_pid, sg_port and sg_metrics_port stay as they were.
sg_start_baseline() {
  local work=$1 saved
  mkdir -p "$work/baseline"
  ln -sf "$work/certs" "$work/baseline/certs"
  ln -sf "$work/recommendations.json" "$work/baseline/recommendations.json"
  saved="$sg_pid $sg_port $sg_metrics_port"
  sg_bin=$2 sg_start_sizeguard "$work/baseline"
  read -r base_pid base_port <<<"$sg_pid $sg_port"
  read -r sg_pid sg_port sg_metrics_port <<<"$saved"
}

sg_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# sg_start_floor WORK [FLAG...]: sets floor_pid, floor_port.
sg_start_floor() {
  local work=$1 _
  floor_port=$(sg_free_port)
  ${SG_TASKSET:-} "$sg_floor" --listen "127.0.0.1:$floor_port" --cert "$work/certs/tls.crt" \
    --key "$work/certs/tls.key" "${@:2}" >"$work/floor.log" 2>&1 &
  floor_pid=$!
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$floor_port") 2>/dev/null && return 0
    kill -0 "$floor_pid" 2>/dev/null || { cat "$work/floor.log" >&2; sg_die "sizeguard-floor exited"; }
    sleep 0.05
  done
  sg_die "sizeguard-floor does not accept connections"
}

# sg_stop PID: SIGTERM and wait; the exit code in sg_rc (not a subshell: wait needs the parent).
sg_stop() {
  sg_rc=0
  kill -TERM "$1" 2>/dev/null || return 0
  wait "$1" || sg_rc=$?
}

# sg_trim_logs WORK: the decision log grows by ~300 bytes per review; keep every other line
# (errors, reloads, shutdown) and drop the audit log.
sg_trim_logs() {
  rm -f "$1/audit.log"
  [[ -f $1/server.log ]] || return 0
  grep -av ' admission decision ' "$1/server.log" >"$1/server.log.kept" || true
  mv "$1/server.log.kept" "$1/server.log"
}

# sg_start_pair WORK: sizeguard and the floor server side by side (sg_pid, floor_pid), both
# stopped and their logs trimmed when the script exits.
sg_start_pair() {
  sg_pair_work=$1 sg_pid="" floor_pid=""
  trap sg_stop_pair EXIT
  sg_start_sizeguard "$1"
  sg_start_floor "$1"
}
sg_stop_pair() {
  [[ -n $sg_pid ]] && sg_stop "$sg_pid"
  [[ -n $floor_pid ]] && sg_stop "$floor_pid"
  sg_trim_logs "$sg_pair_work"
}

# sg_metric NAME_WITH_LABELS: the value of one series on sizeguard's /metrics (empty if absent).
sg_metric() {
  curl -fsS "http://127.0.0.1:$sg_metrics_port/metrics" | awk -v name="$1" '$1 == name { print $2 }'
}

# sg_rss_kib PID
sg_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# sg_json FILE EXPR: evaluates a Python expression over the JSON object in FILE (as `r`).
sg_json() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
