#!/usr/bin/env bash
# Pod CREATE through a real kube-apiserver 1.28.7 (issue 19's measurement): no webhook,
# sizeguard-floor and sizeguard registered by URL as mutating + validating (deploy/base/webhooks.yaml,
# matchConditions included, narrowed to one labelled namespace per phase), alternating, REPS
# repetitions, medians. A benchmark, not a ctest: it prints a Markdown table.
#
#   tests/e2e/apiserver-load.sh
#
# The control plane is etcd (tmpfs) + kube-apiserver from ../shared/k8s (see its README; no
# controller-manager: the bench creates each namespace's `default` ServiceAccount itself). The
# client is curl (no Go): one process per client, one keep-alive HTTPS connection each, as the
# cluster admin (client certificate), POSTing the same Pod (generateName, no requests, a memory
# limit: sizeguard fills the requests from the model's cold-start estimate, so every Pod is
# patched, and the example policies allow it) back to back; latency = curl's time_total.
# Webhook CPU per review = the webhook process's CPU time (its threads' schedstat) over the load
# ÷ the reviews the apiserver counted (apiserver_admission_webhook_admission_duration_seconds_count, both webhooks);
# "apiserver-seen ms per call" is that histogram's sum ÷ count.
#
# Environment: SIZEGUARD_K8S_DIR (default ../shared/k8s), ETCD_BIN, BUILD_DIR (default build-bench,
# Release; built unless NO_BUILD=1), SIZEGUARD_BIN (another sizeguard to measure), BASELINE_BIN (a
# second sizeguard, e.g. a build of main, served beside it with the same flags and measured in the
# same rotation as a fourth row, to compare two builds in one run), FLOOR_PATCH (set: also the floor
# with --patch, answering every Pod with a one-operation JSONPatch, to tell what the apiserver pays
# for applying any patch from sizeguard's own cost), REPS (3),
# ONE (200 creates, 1 client), FOUR (400 creates per client, 4 clients), WARM (20 creates before
# each load), OUT (results folder, kept).
#
# Exit: 0 measured, 77 when the control plane or etcd is missing ("SKIP: ..."), 1 on a failure
# (a create that did not return 201, or 409 for more than 1 %, fails the run: the numbers would not
# be comparable).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
k8s_dir=${SIZEGUARD_K8S_DIR:-$root/../shared/k8s}
skip() { echo "SKIP: tests/e2e/apiserver-load.sh: $* missing"; exit 77; }
[[ -f $k8s_dir/bin/kube-apiserver.gz && -f $k8s_dir/gen-certs.sh ]] \
  || skip "the control plane ($k8s_dir/bin/kube-apiserver.gz; set SIZEGUARD_K8S_DIR)"
etcd_bin=${ETCD_BIN:-$(command -v etcd || true)}
[[ -n $etcd_bin && -x $etcd_bin ]] || skip "etcd (apt-get install etcd-server, or set ETCD_BIN)"
command -v curl >/dev/null || skip "curl"
python3 -c 'import yaml' 2>/dev/null || skip "python3-yaml"

reps=${REPS:-3} one=${ONE:-200} four=${FOUR:-400} warm=${WARM:-20}
# shellcheck source=tests/bench/lib.sh
source "$root/tests/bench/lib.sh"
if [[ ${NO_BUILD:-0} != 1 ]]; then  # lib.sh's sg_build also builds the loadgen, not needed here
  cmake -S "$root" -B "$sg_build_dir" -DCMAKE_BUILD_TYPE=Release -DSIZEGUARD_BUILD_BENCH=ON \
    -DSIZEGUARD_BUILD_TESTS=OFF >/dev/null
  cmake --build "$sg_build_dir" --target sizeguard sizeguard-floor -j "$(nproc)" >&2
fi
out=${OUT:-$(mktemp -d /tmp/sizeguard-apiserver-load.XXXXXX)}
mkdir -p "$out/logs" "$out/bin"
work=$out
sg_certs "$work/certs"
sg_snapshot "$work/recommendations.json"

pids=()
stop_all() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  [[ -n ${shm:-} ]] && rm -rf "$shm"
  rm -rf "${out:?}/bin"  # the unpacked kube-apiserver (~70 MB); results and logs stay
  sg_trim_logs "$work"
  [[ -d $work/baseline ]] && sg_trim_logs "$work/baseline"
  echo "apiserver-load: stopped; results in $out" >&2
  exit "$rc"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- control plane ------------------------------------------------------------------------------
etcd_port=$(sg_free_port) etcd_peer=$(sg_free_port) api_port=$(sg_free_port)
gzip -dc "$k8s_dir/bin/kube-apiserver.gz" > "$out/bin/kube-apiserver"
chmod +x "$out/bin/kube-apiserver"
cp "$k8s_dir/gen-certs.sh" "$out/gen-certs.sh"
LAB=$out bash "$out/gen-certs.sh" >/dev/null
pki=$out/pki
shm=$(mktemp -d /dev/shm/sizeguard-load-etcd.XXXXXX 2>/dev/null || mktemp -d "$out/etcd.XXXXXX")
"$etcd_bin" --name lab --data-dir "$shm/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "lab=http://127.0.0.1:$etcd_peer" --initial-cluster-state new \
  --logger zap --log-outputs stderr > "$out/logs/etcd.log" 2>&1 < /dev/null &
pids+=($!)
"$out/bin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$etcd_port" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
  --secure-port="$api_port" --endpoint-reconciler-type=none --service-cluster-ip-range=10.0.0.0/24 \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$pki/sa.pub" \
  --service-account-signing-key-file="$pki/sa.key" --client-ca-file="$pki/ca.crt" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" --authorization-mode=RBAC \
  --enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
  --profiling=false --cert-dir="$out/run" --v=1 > "$out/logs/kube-apiserver.log" 2>&1 < /dev/null &
api_pid=$!
pids+=("$api_pid")
api=https://127.0.0.1:$api_port
auth=(--cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key")
kapi() { curl -sS --fail-with-body "${auth[@]}" "$@"; }  # kapi [curl args] URL
# kpost URL BODY: a create; answers go to OUT/api.log, an error also to stderr (and fails)
kpost() {
  if ! kapi -X POST -H 'Content-Type: application/json' --data-binary "$2" "$1" >> "$out/api.log"; then
    echo >&2; tail -c 600 "$out/api.log" >&2; echo >&2; return 1
  fi
  echo >> "$out/api.log"
}
for i in $(seq 1 240); do
  kapi -o /dev/null --max-time 3 "$api/readyz" 2>/dev/null && break
  kill -0 "$api_pid" 2>/dev/null || { tail -30 "$out/logs/kube-apiserver.log" >&2; sg_die "kube-apiserver exited"; }
  ((i < 240)) || sg_die "kube-apiserver not ready"
  sleep 0.5
done
sg_log "kube-apiserver pid $api_pid on :$api_port (LAB $out)"

# ---- webhooks -----------------------------------------------------------------------------------
sg_start_sizeguard "$work"
pids+=("$sg_pid")
sg_start_floor "$work"
pids+=("$floor_pid")
sg_log "sizeguard pid $sg_pid on :$sg_port, floor pid $floor_pid on :$floor_port"
servers=(sizeguard floor)
urls=("sizeguard=https://127.0.0.1:$sg_port" "floor=https://127.0.0.1:$floor_port")
base_pid=""
if [[ -n ${BASELINE_BIN:-} ]]; then
  sg_start_baseline "$work" "$BASELINE_BIN"
  pids+=("$base_pid")
  servers+=(baseline)
  urls+=("baseline=https://127.0.0.1:$base_port")
  sg_log "baseline ($BASELINE_BIN) pid $base_pid on :$base_port"
fi
patched_pid=""
if [[ -n ${FLOOR_PATCH:-} ]]; then  # the floor answering every Pod with a one-operation patch
  read -r plain_pid plain_port <<<"$floor_pid $floor_port"
  sg_start_floor "$work" --patch
  read -r patched_pid patched_port <<<"$floor_pid $floor_port"
  read -r floor_pid floor_port <<<"$plain_pid $plain_port"
  pids+=("$patched_pid")
  servers+=(floor-patch)
  urls+=("floor-patch=https://127.0.0.1:$patched_port")
  sg_log "floor --patch pid $patched_pid on :$patched_port"
fi
# deploy/base/webhooks.yaml by URL, sent only namespaces labelled sizeguard.io/bench=SERVER.
python3 - "$root/deploy/base/webhooks.yaml" "$(base64 -w0 "$work/certs/ca.crt")" "${urls[@]}" "$out" <<'PY'
import json, sys, yaml
src, bundle, *servers, out = sys.argv[1:]
for server, url in (s.split("=", 1) for s in servers):
    for d in yaml.safe_load_all(open(src)):
        if not d:
            continue
        d["metadata"]["name"] = "bench-" + server
        for w in d["webhooks"]:
            w["clientConfig"] = {"url": url + w["clientConfig"]["service"]["path"], "caBundle": bundle}
            w.setdefault("namespaceSelector", {}).setdefault("matchExpressions", []).append(
                {"key": "sizeguard.io/bench", "operator": "In", "values": [server]})
        plural = d["kind"].lower() + "s"
        json.dump(d, open(f"{out}/{server}-{plural}.json", "w"))
PY
registered=none
register() {  # register SERVER|none: exactly that server's two configurations
  local s kind
  [[ $1 == "$registered" ]] && return 0
  for s in "${servers[@]}"; do
    for kind in mutatingwebhookconfigurations validatingwebhookconfigurations; do
      if [[ $s == "$1" ]]; then
        kpost "$api/apis/admissionregistration.k8s.io/v1/$kind" "@$out/$s-$kind.json"
      else
        curl -sS -o /dev/null "${auth[@]}" -X DELETE "$api/apis/admissionregistration.k8s.io/v1/$kind/bench-$s"
      fi
    done
  done
  registered=$1
  sleep 2  # the apiserver's webhook informer
}

# The Pod: what `kubectl run` sends, without requests, with a memory limit.
cat > "$out/pod.json" <<'JSON'
{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"load-","labels":{"run":"load"}},
 "spec":{"containers":[{"name":"app","image":"registry.k8s.io/pause:3.9",
   "resources":{"limits":{"memory":"256Mi"}}}],"restartPolicy":"Never"}}
JSON

# CPU time of a process in µs: its threads' schedstat (ns; the servers' threads live as long as
# they do), /proc/PID/stat's 10 ms ticks being too coarse for a few hundred reviews.
cpu_us() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ ns += $1 } END { printf "%d\n", ns / 1000 }'; }
admission_counts() {  # "count sum" per webhook name, from the apiserver's metrics
  kapi "$api/metrics" | awk '
    /^apiserver_admission_webhook_admission_duration_seconds_(count|sum)\{/ {
      match($0, /name="[^"]*"/); n = substr($0, RSTART + 6, RLENGTH - 7)
      if ($0 ~ /_count\{/) c[n] += $NF; else s[n] += $NF
    }
    END { for (n in c) print n, c[n], s[n] }'
}
# load NAME CLIENTS CREATES SERVER NAMESPACE: CLIENTS curl processes, CREATES each; one JSON line.
load() {
  local name=$1 clients=$2 n=$3 server=$4 ns=$5 i pid=""
  local url=$api/api/v1/namespaces/$ns/pods args=() cpids=()
  for ((i = 0; i < n; i++)); do args+=(-o /dev/null "$url"); done
  [[ $server == sizeguard ]] && pid=$sg_pid
  [[ $server == floor ]] && pid=$floor_pid
  [[ $server == baseline ]] && pid=$base_pid
  [[ $server == floor-patch ]] && pid=$patched_pid
  admission_counts > "$out/adm.before"
  local t0 c0 a0 t1 c1 a1
  c0=$([[ -n $pid ]] && cpu_us "$pid" || echo 0)
  a0=$(cpu_us "$api_pid")
  t0=$(date +%s.%N)
  for ((i = 0; i < clients; i++)); do
    curl -sS "${auth[@]}" -H 'Content-Type: application/json' -H 'Accept: application/json' \
      --data-binary "@$out/pod.json" -w '%{http_code} %{time_total}\n' "${args[@]}" > "$out/lat.client.$i" &
    cpids+=($!)
  done
  for i in "${cpids[@]}"; do wait "$i"; done
  t1=$(date +%s.%N)
  c1=$([[ -n $pid ]] && cpu_us "$pid" || echo 0)
  a1=$(cpu_us "$api_pid")
  admission_counts > "$out/adm.after"
  cat "$out"/lat.client.* > "$out/lat.all"; rm -f "$out"/lat.client.*
  python3 - "$out/lat.all" "$out/adm.before" "$out/adm.after" "$name" "$server" "$t0" "$t1" \
    "$((c1 - c0))" "$((a1 - a0))" "$clients" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, statistics, sys
lat, before, after, name, server, t0, t1, cpu, api_cpu, clients, loadavg = sys.argv[1:]
codes, ms = [], []
for line in open(lat):
    code, t = line.split()
    codes.append(code); ms.append(float(t) * 1000)
# A 409: generateName's 5 random characters named an existing Pod (a few per thousand creates in
# one namespace); the call went through admission like the others, so it counts.
bad = [c for c in codes if c != "201" and c != "409"]
if bad or codes.count("409") > len(codes) // 100:
    sys.exit(f"apiserver-load: {len(codes) - codes.count('201')} of {len(codes)} creates did not return 201 "
             f"(first: {(bad or ['409'])[0]})")
def read(path):
    return {n: (float(c), float(s)) for n, c, s in (l.split() for l in open(path))}
b, a = read(before), read(after)
calls = {}
for n in a:
    c = a[n][0] - b.get(n, (0, 0))[0]
    if c > 0:
        calls[n] = {"calls": c, "ms_per_call": 1000 * (a[n][1] - b.get(n, (0, 0))[1]) / c}
reviews = sum(v["calls"] for v in calls.values())
ms.sort()
q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]
print(json.dumps({"load": name, "server": server, "creates": len(ms), "p50_ms": statistics.median(ms),
                  "p99_ms": q(0.99), "req_s": len(ms) / (float(t1) - float(t0)),
                  "webhook_cpu_us_per_review": int(cpu) / reviews if reviews else None,
                  "apiserver_cpu_ms_per_create": int(api_cpu) / 1e3 / len(ms), "clients": int(clients),
                  "webhooks": calls, "loadavg": float(loadavg)}))
PY
}

results=$out/results.jsonl
: > "$results"
phase() {  # phase SERVER REP
  local ns=load-$1-$2
  register "$1"
  kpost "$api/api/v1/namespaces" \
    "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$ns\",\"labels\":{\"sizeguard.io/bench\":\"$1\"}}}"
  kpost "$api/api/v1/namespaces/$ns/serviceaccounts" \
    '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}'
  sg_log "rep $2: $1 (namespace $ns): $warm warm-up creates, 1 client × $one, 4 clients × $four"
  load warm 1 "$warm" "$1" "$ns" > /dev/null
  load one 1 "$one" "$1" "$ns" >> "$results"
  load four 4 "$four" "$1" "$ns" >> "$results"
  if [[ $1 == sizeguard || $1 == baseline ]]; then  # the comparison holds only if sizeguard did patch the Pods
    [[ $(kapi "$api/api/v1/namespaces/$ns/pods?limit=1") == *sizeguard.io/rightsized* ]] \
      || sg_die "the Pods in $ns were not right-sized: is /mutate registered?"
  fi
  if [[ $1 == floor-patch ]]; then
    kapi "$api/api/v1/namespaces/$ns/pods?limit=1" | python3 -c '
import json, sys
assert json.load(sys.stdin)["items"][0]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "100m"' \
      || sg_die "the Pods in $ns did not get the floor's patch"
  fi
}
order=(none "${servers[@]}")  # rotated by one every repetition
for rep in $(seq 1 "$reps"); do
  n=${#order[@]}
  for ((i = 0; i < n; i++)); do phase "${order[(i + rep - 1) % n]}" "$rep"; done
done
register none

python3 - "$results" "$reps" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(load, server, f):
    v = [f(r) for r in rows if r["load"] == load and r["server"] == server]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None
def per_call(kind):
    def f(r):
        v = [w["ms_per_call"] for n, w in r["webhooks"].items() if n.startswith(kind)]
        return v[0] if v else None
    return f
loads = {"one": "1 client × {}", "four": "4 clients × {}"}
print(f"Pod CREATE through kube-apiserver 1.28.7, medians of {sys.argv[2]} alternating repetitions; "
      f"load average during the runs {min(r['loadavg'] for r in rows):.2f}-{max(r['loadavg'] for r in rows):.2f}\n")
for load in ("one", "four"):
    r0 = next(r for r in rows if r["load"] == load)
    n = r0["creates"] // r0["clients"]
    print(f"| {loads[load].format(n)} | p50 ms | added p50 | p99 ms | req/s | webhook CPU per review "
          "| apiserver-seen ms per call, mutate / validate | apiserver CPU ms per create |")
    print("|---|---|---|---|---|---|---|---|")
    base = med(load, "none", lambda r: r["p50_ms"])
    for s in ("none", "floor", "floor-patch", "sizeguard", "baseline"):
        if not any(r["server"] == s for r in rows):
            continue
        p50 = med(load, s, lambda r: r["p50_ms"])
        added = "–" if s == "none" else f"{p50 - base:+.2f}"
        cpu = med(load, s, lambda r: r["webhook_cpu_us_per_review"])
        m, v = med(load, s, per_call("rightsizing")), med(load, s, per_call("guardrails"))
        seen = "–" if m is None else f"{m:.2f} / {v:.2f}"
        print(f"| {'no webhook' if s == 'none' else s} | {p50:.2f} | {added} | {med(load, s, lambda r: r['p99_ms']):.2f} "
              f"| {med(load, s, lambda r: r['req_s']):.0f} | {'–' if cpu is None else f'{cpu:.0f} µs'} | {seen} "
              f"| {med(load, s, lambda r: r['apiserver_cpu_ms_per_create']):.2f} |")
    f = med(load, "floor", lambda r: r["p50_ms"]) - base
    g = med(load, "sizeguard", lambda r: r["p50_ms"]) - base
    fc = med(load, "floor", lambda r: r["webhook_cpu_us_per_review"])
    gc = med(load, "sizeguard", lambda r: r["webhook_cpu_us_per_review"])
    print(f"\nsizeguard / floor: added p50 {g / f:.2f}×, webhook CPU per review {gc / fc:.2f}×")
    if any(r["server"] == "baseline" for r in rows):
        b = med(load, "baseline", lambda r: r["p50_ms"]) - base
        bc = med(load, "baseline", lambda r: r["webhook_cpu_us_per_review"])
        print(f"baseline / floor: added p50 {b / f:.2f}×, webhook CPU per review {bc / fc:.2f}×")
    if any(r["server"] == "floor-patch" for r in rows):
        fp = med(load, "floor-patch", lambda r: r["p50_ms"]) - base
        print(f"sizeguard / floor-patch: added p50 {g / fp:.2f}× (floor-patch / floor {fp / f:.2f}×)")
    print()
print(f"Raw results: {sys.argv[1]}")
PY
