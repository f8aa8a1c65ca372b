#!/usr/bin/env bash
# End-to-end check of sizeguard against a real cluster (kind, k3s, a dev apiserver...).
#
#   tests/e2e/run.sh --in-cluster [--image sizeguard:0.1.0]
#       deploys deploy/base with kustomize (the image must be pullable by the cluster,
#       e.g. `kind load docker-image`), webhooks reach it through its Service; change-budget
#       Leases live in sizeguard-system.
#   tests/e2e/run.sh --local https://127.0.0.1:8443
#       runs sizeguard on this host ($SIZEGUARD_BINARY, else built into $BUILD_DIR, default
#       build-release) with its own least-privilege identity (deploy/base/rbac.yaml, renamed
#       for this run, a service-account token in a kubeconfig); the webhook configurations
#       point at the URL (clientConfig.url + caBundle) and only at this run's namespaces.
#       tests/e2e/local-apiserver.sh runs this against a throwaway loopback control plane.
#   --keep   leave the namespaces, webhook configurations, RBAC (and with --local sizeguard) in place
#
# Uses the current KUBECONFIG context. Without a reachable cluster it prints SKIP and exits 0.
# Policies: policies/examples/ (freeze windows removed, so results do not depend on the day;
# every policy narrowed to this run's namespaces by the label sizeguard.io/e2e) plus one e2e policy.
# Cases: right-sizing with the explanation annotation; an agent denied below the floor with
# `denied the request: [BelowFloor]` while a human is allowed; audit mode changes nothing; a
# Deployment rollout under the replica floor completes; the audit label takes effect at once;
# an agent's change reason is needed per change and a no-op scale spends no budget; the GPU
# namespace quota holds under concurrent Pod creation. Prints PASS/FAIL/SKIP per check and
# ends with "N passed, M failed[, K skipped]"; exits 1 if any check failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

mode="" url="" image="sizeguard:0.1.0" keep=0
while (($#)); do
  case $1 in
    --in-cluster) mode=in-cluster; shift ;;
    --local) mode=local; url=${2:?--local needs a URL}; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "e2e: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $mode ]] || { echo "e2e: choose --in-cluster or --local URL" >&2; exit 2; }

if ! command -v kubectl >/dev/null || ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
  echo "SKIP: tests/e2e/run.sh needs a reachable Kubernetes cluster (kubectl + KUBECONFIG); none here"
  exit 0
fi
python3 -c 'import yaml' 2>/dev/null || { echo "e2e: needs python3 with yaml (python3-yaml)" >&2; exit 2; }

run="sizeguard-e2e-$((RANDOM * 32768 + RANDOM))"   # label value and name prefix of everything made here
ns=$run                       # right-sizing, floor for the e2e agent, audit mode (policy e2e-guardrails)
rollout_ns=$run-rollout       # production-replica-floor (label environment=production)
fresh_ns=$run-audit           # the sizeguard.io/mode label applied just before a create
prod_ns=prod-$run             # automation-guardrails matches prod-*
ml_ns=ml-$run                 # gpu-team-quotas matches ml-*
agent=system:serviceaccount:ops:ai-agent   # an actor of automation-guardrails
if [[ $mode == local ]]; then budget_ns=$run-system; else budget_ns=sizeguard-system; fi
pause=registry.k8s.io/pause:3.9

work=$(mktemp -d)
local_pid="" second_pid="" registered=0 rbac_applied=0 finished=0
pass=0 fail=0 skipped=0
ok()      { echo "PASS: $*"; pass=$((pass + 1)); }
bad()     { echo "FAIL: $*"; fail=$((fail + 1)); }
skip()    { echo "SKIP: $*"; skipped=$((skipped + 1)); }
step()    { echo; echo "--- $*"; }
oneline() { tr '\n' ' ' < "$1" | cut -c1-600; }
# leads_with CODES FILE: a denial in FILE whose message starts with a reason-code list
# ("[Code]" or "[Code, Other]") holding one of CODES (an ERE alternation)
leads_with() { grep -Eq "denied the request: \[([A-Za-z]+, )*($1)(, [A-Za-z]+)*\]" "$2"; }

cleanup() {
  local rc=$?
  # Stopped before the last case (setup failed, interrupted): that is a failure too.
  ((finished)) || bad "run.sh stopped before the last case (exit $rc)"
  if ((keep)); then echo "kept namespaces -l sizeguard.io/e2e=$run, the webhook configurations and RBAC"; fi
  if [[ $mode == local && -n $local_pid ]] && { ((fail)) || ((rc)); }; then
    echo "--- sizeguard log without the per-review lines (last 30)"
    grep -v " admission decision " "$work/sizeguard.log" | tail -30 || true
  fi
  if ! ((keep)); then
    step "cleanup"
    if [[ $mode == local ]]; then
      # The webhooks first: nothing is sent to a webhook that is about to stop.
      if ((registered)); then
        kubectl delete mutatingwebhookconfiguration "$run" --ignore-not-found >/dev/null 2>&1 || true
        kubectl delete validatingwebhookconfiguration "$run" --ignore-not-found >/dev/null 2>&1 || true
        kubectl delete mutatingwebhookconfiguration "$run-second" --ignore-not-found >/dev/null 2>&1 || true
      fi
      [[ -n $second_pid ]] && { kill "$second_pid" 2>/dev/null || true; }
      ((rbac_applied)) && { kubectl delete -f "$work/rbac.json" --ignore-not-found --wait=false >/dev/null 2>&1 || true; }
    else
      kubectl delete -k "$work/kustomize" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    fi
    kubectl delete namespace -l "sizeguard.io/e2e=$run" --wait=false >/dev/null 2>&1 || true
  fi
  if ((keep)) && [[ -n $local_pid ]]; then
    echo "sizeguard still serving $url (pid $local_pid; files in $work): kill $local_pid when done"
  else
    if [[ -n $local_pid ]]; then kill -TERM "$local_pid" 2>/dev/null && wait "$local_pid" 2>/dev/null || true; fi
    rm -rf "$work"
  fi
  echo
  echo "$pass passed, $fail failed$( ((skipped)) && echo ", $skipped skipped")"
  ((rc == 0 && fail > 0)) && rc=1
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# mkns NAME [LABEL=VALUE...]: a namespace of this run, labelled at creation (so the webhook's
# first read of it already has the labels); waits for its default ServiceAccount, without
# which the apiserver refuses Pods.
mkns() {
  local name=$1; shift
  {
    echo "apiVersion: v1"
    echo "kind: Namespace"
    echo "metadata:"
    echo "  name: $name"
    echo "  labels:"
    echo "    sizeguard.io/e2e: \"$run\""
    for l in "$@"; do echo "    ${l%%=*}: \"${l#*=}\""; done
  } | kubectl apply -f - >/dev/null
  for _ in $(seq 1 60); do
    kubectl -n "$name" get serviceaccount default >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "e2e: namespace $name has no default ServiceAccount after 30 s" >&2
}
# deployment NAME REPLICAS [IMAGE] > manifest (requests and limits as the
# example resource-requirements policy wants them)
deployment() {
  local name=$1 replicas=$2 img=${3:-$pause}
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $name}
spec:
  replicas: $replicas
  selector: {matchLabels: {app: $name}}
  template:
    metadata: {labels: {app: $name}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - name: $name
          image: $img
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {cpu: 200m, memory: 64Mi}
YAML
}
# until SECONDS CMD...: polls CMD every 0.5 s
until_true() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < deadline)) || return 1; sleep 0.5; done
}

# ---- policies -------------------------------------------------------------------------------
mkdir -p "$work/policies"
cat > "$work/policies/e2e.yaml" <<YAML
# A replica floor and scale-down step for one agent account, right-sizing in enforce mode.
apiVersion: sizeguard.io/v1
kind: Policy
metadata:
  name: e2e-guardrails
spec:
  mode: enforce
  match:
    namespaces: ["$ns"]
    namespaceSelector:
      matchLabels: {sizeguard.io/e2e: "$run"}
  automation:
    actors:
      serviceAccounts: ["$ns:agent"]
    scaleDown:
      floor: 2
      maxStep:
        percent: 50
  rightsizing:
    mode: enforce
    minChangePercent: 10
YAML
python3 - "$root/policies/examples" "$work/policies" "$run" <<'PY'
# The examples as shipped, narrowed to this run's namespaces (a webhook installed for this test
# must not judge anything else in a shared cluster), without freeze windows (the example's
# weekend and year-end windows would make the agent's cases depend on the date).
import os, sys, yaml
src, out, run = sys.argv[1:4]
for name in sorted(os.listdir(src)):
    if not name.endswith((".yaml", ".yml")):
        continue
    docs = [d for d in yaml.safe_load_all(open(os.path.join(src, name))) if d]
    for d in docs:
        match = d["spec"].setdefault("match", {})
        match.setdefault("namespaceSelector", {}).setdefault("matchLabels", {})["sizeguard.io/e2e"] = run
        d["spec"].get("automation", {}).pop("freezeWindows", None)
    with open(os.path.join(out, name), "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
PY

# ---- recommendations --------------------------------------------------------------------------
# Right-sizing changes existing values only for workloads with usage history (cold start only
# fills missing requests), so the run's workloads get a week of usage through the real
# recommender: `recommend --csv`, into a snapshot file (--local) or the ConfigMap the
# in-cluster webhook mounts.
python3 - "$work/usage.csv" "$ns" "$fresh_ns" <<'PY'
import math, sys
out, ns, fresh_ns = sys.argv[1:4]
series = [(ns, "Deployment", "demo", "web"), (ns, "Deployment", "audited", "web"), (ns, "Pod", "audited-pod", "web"),
          (ns, "Pod", "reinvoked", "web"), (fresh_ns, "Pod", "violator-2", "app")]
start = 1_700_000_000 - 1_700_000_000 % 86400
with open(out, "w") as f:
    f.write("timestamp,namespace,workload_kind,workload,container,cpu_cores,memory_bytes,cpu_request,memory_request\n")
    for namespace, kind, name, container in series:
        for k in range(7 * 288):
            day = math.sin(2 * math.pi * k / 288)
            f.write(f"{start + 300 * k},{namespace},{kind},{name},{container},{0.3 + 0.1 * day:.4f},"
                    f"{int((300 + 20 * day) * 2**20)},4,8589934592\n")
PY
# ---- install ----------------------------------------------------------------------------------
step "install sizeguard ($mode), run $run"
if [[ $mode == local ]]; then
  host_port=${url#https://}
  host=${host_port%:*}
  certs/make-certs.sh --out "$work/certs" --ip "$host" --dns localhost >/dev/null
  binary=${SIZEGUARD_BINARY:-}
  if [[ -z $binary ]]; then
    build=${BUILD_DIR:-build-release}
    [[ -x $build/sizeguard ]] || { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSIZEGUARD_BUILD_TESTS=OFF >/dev/null; cmake --build "$build" --target sizeguard -j"$(nproc)"; }
    binary=$build/sizeguard
  fi
  "$binary" recommend --model "$root/recommender/models/default" --csv "$work/usage.csv" \
    --out "$work/recommendations.json" > "$work/recommend.log" 2>&1 || { cat "$work/recommend.log"; exit 1; }

  # The webhook's own identity: deploy/base/rbac.yaml renamed for this run, with its
  # ServiceAccount in $budget_ns (where its change-budget Leases go), and a kubeconfig
  # holding that account's token: cluster-state reads and Lease writes get exactly the
  # permissions the shipped RBAC grants.
  mkns "$budget_ns"
  python3 - "$run" "$budget_ns" "$root/deploy/base/rbac.yaml" "$root/deploy/base/audit-rbac.yaml" > "$work/rbac.json" <<'PY'
import json, sys, yaml
run, ns = sys.argv[1:3]
items = []
for d in (d for src in sys.argv[3:] for d in yaml.safe_load_all(open(src))):
    if not d:
        continue
    md = d["metadata"]
    md["name"] = run + "-" + md["name"]
    if d["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
        md["namespace"] = ns
    if "roleRef" in d:
        d["roleRef"]["name"] = run + "-" + d["roleRef"]["name"]
    for s in d.get("subjects", []):
        s["name"], s["namespace"] = run + "-" + s["name"], ns
    items.append(d)
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
  kubectl apply -f "$work/rbac.json" >/dev/null
  rbac_applied=1
  token=$(kubectl -n "$budget_ns" create token "$run-sizeguard" --duration=2h)
  kubectl config view --minify --raw --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' \
    | base64 -d > "$work/apiserver-ca.crt"
  server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  kc=(kubectl config --kubeconfig="$work/webhook.kubeconfig")
  ca_args=()   # none: the apiserver's certificate is signed by a system CA
  [[ -s $work/apiserver-ca.crt ]] && ca_args=(--certificate-authority="$work/apiserver-ca.crt" --embed-certs=true)
  "${kc[@]}" set-cluster e2e --server="$server" "${ca_args[@]}" >/dev/null
  "${kc[@]}" set-credentials sizeguard --token="$token" >/dev/null
  "${kc[@]}" set-context e2e --cluster=e2e --user=sizeguard >/dev/null
  "${kc[@]}" use-context e2e >/dev/null
  # The background audit writes PolicyReports: their CRDs (deploy/components/policyreport-crds)
  # unless Kyverno or Policy Reporter installed them already.
  if ! kubectl get crd policyreports.wgpolicyk8s.io >/dev/null 2>&1; then
    kubectl apply -f deploy/components/policyreport-crds/policyreports.yaml >/dev/null
    kubectl wait --for condition=established --timeout=60s crd/policyreports.wgpolicyk8s.io >/dev/null
  fi

  "$binary" serve --listen "$host_port" --metrics-listen 127.0.0.1:0 \
    --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" \
    --policies "$work/policies" --model "$root/recommender/models/default" \
    --recommendations "$work/recommendations.json" \
    --kubeconfig "$work/webhook.kubeconfig" --budget-namespace "$budget_ns" --audit-interval 5s \
    --audit-log "$work/audit.log" >"$work/sizeguard.log" 2>&1 &
  local_pid=$!
  [[ -n ${SIZEGUARD_E2E_PIDFILE:-} ]] && echo "$local_pid" > "$SIZEGUARD_E2E_PIDFILE"
  # Up when the TLS listener answers (404 for /).
  serving() {
    kill -0 "$local_pid" 2>/dev/null || { echo "e2e: sizeguard exited:"; cat "$work/sizeguard.log"; exit 1; }
    curl -s -o /dev/null --cacert "$work/certs/ca.crt" "$url/"
  }
  until_true 30 serving || { echo "e2e: sizeguard did not start listening in 30 s"; cat "$work/sizeguard.log"; exit 1; }
  # Ready (policies loaded, and cluster state synced where serve keeps it in memory): /readyz
  # on the metrics port, which the "listening" line reports.
  mport=$(grep -o 'metrics_port=[0-9]*' "$work/sizeguard.log" | head -n1 | cut -d= -f2 || true)
  if [[ -n $mport ]]; then
    until_true 60 curl -sf -o /dev/null "http://127.0.0.1:$mport/readyz" \
      || { echo "e2e: sizeguard not ready after 60 s:"; curl -s "http://127.0.0.1:$mport/readyz"; tail -20 "$work/sizeguard.log"; exit 1; }
  fi
  bundle=$(cat "$work/certs/ca-bundle.b64")
  # The base webhook configurations with clientConfig.url instead of the Service, named for
  # this run and sent only this run's namespaces.
  python3 - "$root/deploy/base/webhooks.yaml" "$url" "$bundle" "$run" > "$work/webhooks.json" <<'PY'
import json, sys, yaml
src, url, bundle, run = sys.argv[1:5]
out = []
for d in yaml.safe_load_all(open(src)):
    if not d:
        continue
    d["metadata"]["name"] = run
    for w in d["webhooks"]:
        path = w["clientConfig"]["service"]["path"]
        w["clientConfig"] = {"url": url + path, "caBundle": bundle}
        w.setdefault("namespaceSelector", {}).setdefault("matchExpressions", []).append(
            {"key": "sizeguard.io/e2e", "operator": "In", "values": [run]})
    out.append(d)
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": out}))
PY
  kubectl apply -f "$work/webhooks.json" >/dev/null
  registered=1
else
  mkdir -p "$work/kustomize"
  cp -r deploy/base "$work/kustomize/base"
  rm -f "$work/kustomize/base/policies/"*
  cp "$work/policies/"* "$work/kustomize/base/policies/"
  python3 - "$work/kustomize/base/kustomization.yaml" "$work/policies" <<'PY'
import os, sys, yaml
path, policies = sys.argv[1:3]
k = yaml.safe_load(open(path))
for g in k["configMapGenerator"]:
    if g["name"] == "sizeguard-policies":
        g["files"] = ["policies/" + f for f in sorted(os.listdir(policies))]
yaml.safe_dump(k, open(path, "w"), sort_keys=False)
PY
  cat > "$work/kustomize/kustomization.yaml" <<YAML
resources: [base]
images:
  - name: sizeguard
    newName: ${image%:*}
    newTag: ${image##*:}
YAML
  kubectl apply -f deploy/base/namespace.yaml >/dev/null
  certs/install.sh --namespace sizeguard-system --out "$work/certs" --no-webhooks
  kubectl apply -k "$work/kustomize" >/dev/null
  certs/install.sh --namespace sizeguard-system --out "$work/certs" --webhooks-only
  kubectl -n sizeguard-system rollout status deployment/sizeguard --timeout=180s
  # The snapshot goes where the recommender CronJob writes it; the webhook reloads it once
  # the kubelet has updated the mounted ConfigMap (waited for in the right-sizing case).
  binary=${SIZEGUARD_BINARY:-build-release/sizeguard}
  [[ -x $binary ]] || { cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DSIZEGUARD_BUILD_TESTS=OFF >/dev/null; cmake --build build-release --target sizeguard -j"$(nproc)"; }
  "$binary" recommend --model "$root/recommender/models/default" --csv "$work/usage.csv" \
    --publish-configmap sizeguard-system/sizeguard-recommendations > "$work/recommend.log" 2>&1 \
    || { cat "$work/recommend.log"; exit 1; }
fi

step "test namespace $ns"
mkns "$ns"
kubectl -n "$ns" create serviceaccount agent >/dev/null
kubectl -n "$ns" create rolebinding agent-edit --clusterrole=edit --serviceaccount="$ns:agent" >/dev/null
# Ready when the validating webhook answers for this namespace with its policies loaded: a
# Deployment without requests is refused by resource-requirements (server-side dry run).
webhook_denies() {
  kubectl -n "$ns" create deployment sg-probe --image="$pause" --dry-run=server -o name > "$work/probe.out" 2>&1 && return 1
  grep -q "denied the request" "$work/probe.out"
}
if until_true 90 webhook_denies; then ok "sizeguard answers for $ns"; else
  bad "sizeguard never answered for $ns: $(oneline "$work/probe.out")"; exit 1
fi

# ---- existing cases -------------------------------------------------------------------------
step "right-sizing: a Deployment gets right-sized Pods with an explanation"
cat > "$work/demo.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo, namespace: $ns}
spec:
  replicas: 4
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers:
        - name: web
          image: $pause
          resources:
            requests: {cpu: "4", memory: 8Gi}
            limits: {memory: 8Gi}
YAML
# In force once a server-side dry run of a Pod with history comes back with a changed request
# (right-sizing targets Pods; the Deployment stays as written). The same Pod is created for
# real in the audit-mode case, and renamed for the reinvocation case.
cat > "$work/audited-pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: audited-pod, namespace: $ns}
spec:
  containers:
    - name: web
      image: $pause
      resources:
        requests: {cpu: "4", memory: 8Gi}
        limits: {memory: 8Gi}
YAML
dry_run_rightsized() {
  local cpu
  cpu=$(kubectl apply -f "$work/audited-pod.yaml" --dry-run=server \
       -o jsonpath='{.spec.containers[0].resources.requests.cpu}' 2>/dev/null) || return 1
  [[ -n $cpu && $cpu != 4 ]]
}
until_true 120 dry_run_rightsized || bad "the recommendation for $ns/demo never took effect (dry run unchanged after 120 s)"
kubectl apply -f "$work/demo.yaml" > "$work/apply.out" 2>&1 || { cat "$work/apply.out"; bad "apply demo"; }
pod=""
for _ in $(seq 1 60); do
  pod=$(kubectl -n "$ns" get pods -l app=demo -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
  [[ -n $pod ]] && break; sleep 1
done
if [[ -z $pod ]]; then bad "no demo pod was created"; else
  ann=$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.metadata.annotations.sizeguard\.io/rightsized}')
  cpu=$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.spec.containers[0].resources.requests.cpu}')
  [[ -n $ann ]] && ok "pod has sizeguard.io/rightsized: $ann" || bad "pod lacks the sizeguard.io/rightsized annotation"
  [[ $cpu != 4 ]] && ok "pod cpu request right-sized 4 -> $cpu" || bad "pod cpu request unchanged ($cpu)"
fi

step "reinvocation: a second mutating webhook after sizeguard changes nothing sizeguard already did"
# The apiserver calls sizeguard again (reinvocationPolicy: IfNeeded) when a later mutating
# webhook changes the object: a right-sized Pod must not be cut a second time.
if [[ $mode != local ]]; then
  skip "reinvocation needs a second webhook on this machine (--local only)"
else
  python3 - "$work/certs/tls.crt" "$work/certs/tls.key" "$host" > "$work/second.port" 2> "$work/second.log" <<'PY' &
# Adds a label to every Pod it is sent: a stand-in for any sidecar injector.
import base64, http.server, json, ssl, sys
cert, key, host = sys.argv[1:4]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        labels = review["request"]["object"].get("metadata", {}).get("labels")
        patch = ([{"op": "add", "path": "/metadata/labels/e2e.sizeguard.io~1second", "value": "true"}] if labels
                 else [{"op": "add", "path": "/metadata/labels", "value": {"e2e.sizeguard.io/second": "true"}}])
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
            "uid": review["request"]["uid"], "allowed": True, "patchType": "JSONPatch",
            "patch": base64.b64encode(json.dumps(patch).encode()).decode()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((host, 0), Hook)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
  second_pid=$!
  until_true 10 test -s "$work/second.port" || bad "the second webhook did not start: $(oneline "$work/second.log")"
  second_port=$(cat "$work/second.port")
  # Named after sizeguard's configuration, so the apiserver calls it after sizeguard.
  cat > "$work/second.json" <<JSON
{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
 "metadata": {"name": "$run-second"},
 "webhooks": [{"name": "second.e2e.sizeguard.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
   "failurePolicy": "Fail", "reinvocationPolicy": "Never", "timeoutSeconds": 5,
   "clientConfig": {"url": "https://$host:$second_port/", "caBundle": "$bundle"},
   "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
   "namespaceSelector": {"matchLabels": {"sizeguard.io/e2e": "$run"}}}]}
JSON
  kubectl apply -f "$work/second.json" >/dev/null
  sed "s/name: audited-pod/name: reinvoked/" "$work/audited-pod.yaml" > "$work/reinvoked.yaml"
  # The configuration takes a moment to reach the apiserver's webhook set: until the label
  # shows up, a dry run passed only sizeguard.
  until_true 30 bash -c "kubectl apply -f '$work/reinvoked.yaml' --dry-run=server -o jsonpath='{.metadata.labels}' 2>/dev/null | grep -q second" \
    || bad "the second webhook never took part (no label after 30 s)"
  kubectl apply -f "$work/reinvoked.yaml" > "$work/reinvoked.out" 2>&1 || bad "create of the reinvoked pod failed: $(oneline "$work/reinvoked.out")"
  calls=$(python3 - "$work/audit.log" "$ns" <<'PY'
import json, sys
log, ns = sys.argv[1:3]
records = [json.loads(line) for line in open(log) if line.startswith("{")]
print(sum(1 for r in records if r.get("webhook") == "mutate" and r.get("namespace") == ns
          and r.get("name") == "reinvoked" and not r.get("dryRun")))
PY
)
  ((calls >= 2)) && ok "sizeguard was called $calls times for one Pod CREATE (reinvoked after the second webhook)" \
    || bad "sizeguard was called $calls time(s) for the Pod: no reinvocation happened"
  python3 - "$ns" > "$work/reinvoked.check" 2>&1 <<'PY' && ok "right-sized once: $(cat "$work/reinvoked.check")" || bad "$(tail -n 1 "$work/reinvoked.check")"
import json, subprocess, sys
pod = json.loads(subprocess.check_output(["kubectl", "-n", sys.argv[1], "get", "pod", "reinvoked", "-o", "json"]))
annotations = pod["metadata"].get("annotations", {})
assert "sizeguard.io/rightsized" in annotations, f"no sizeguard.io/rightsized annotation: {pod['spec']['containers'][0]['resources']}, {annotations}"
record = json.loads(annotations["sizeguard.io/rightsized"])["containers"]["web"]
original, written = record["cpu"]["request"]
cpu = pod["spec"]["containers"][0]["resources"]["requests"]["cpu"]
assert pod["metadata"]["labels"].get("e2e.sizeguard.io/second") == "true", "the second webhook's label is missing"
assert original == "4", f"the annotation records {original} as the original cpu request, not 4: cut more than once"
assert cpu == written, f"cpu request {cpu} is not what sizeguard wrote ({written})"
print(f"cpu 4 -> {cpu}, annotation [{original}, {written}]")
PY
  # Pods of the later cases need not pass through it.
  kubectl delete mutatingwebhookconfiguration "$run-second" --ignore-not-found >/dev/null 2>&1 || true
fi

step "guardrails: the agent may not scale below the floor; a human may"
# kubectl prints only status.message: the reason code leads it, as "[Reason] ...".
if kubectl -n "$ns" scale deployment/demo --replicas=1 --as="system:serviceaccount:$ns:agent" > "$work/scale.out" 2>&1; then
  bad "agent scale-down to 1 was allowed"
else
  leads_with BelowFloor "$work/scale.out" && ok "agent denied with the reason code first: $(oneline "$work/scale.out")" \
    || bad "denial does not start with [BelowFloor]: $(oneline "$work/scale.out")"
  grep -q "minAllowedReplicas=2" "$work/scale.out" && ok "denial names the nearest allowed value" || bad "no minAllowedReplicas=2 in the denial"
fi
kubectl -n "$ns" scale deployment/demo --replicas=1 > /dev/null 2>&1 && ok "human scale-down allowed" || bad "human scale-down denied"

step "audit mode: nothing changes, warnings still explain"
kubectl label namespace "$ns" sizeguard.io/mode=audit sizeguard.io/rightsize=audit --overwrite >/dev/null
# The label reaches the webhook through its namespace watch, or through its cache with an
# older build or --in-cluster image (freshness has its own case below): wait until a
# violating dry run passes.
if until_true 30 bash -c "kubectl -n '$ns' create deployment sg-probe --image='$pause' --dry-run=server -o name >/dev/null 2>&1"; then
  sed "s/name: demo/name: audited/; s/app: demo/app: audited/g" "$work/demo.yaml" > "$work/audited.yaml"
  kubectl apply -f "$work/audited.yaml" > /dev/null 2>&1 || bad "apply in audit mode failed"
  # A Pod created by kubectl itself, so the right-sizing warning comes back to this client
  # (Pods made by a controller warn the controller, not kubectl).
  kubectl apply -f "$work/audited-pod.yaml" > "$work/apply-audit.out" 2>&1 || bad "apply of a pod in audit mode failed"
  grep -q "sizeguard: \[audit, not applied\]" "$work/apply-audit.out" \
    && ok "audit mode warned: $(grep -m1 sizeguard: "$work/apply-audit.out")" || bad "no sizeguard audit warning: $(oneline "$work/apply-audit.out")"
  acpu=$(kubectl -n "$ns" get pod audited-pod -o jsonpath='{.spec.containers[0].resources.requests.cpu}')
  [[ $acpu == 4 ]] && ok "audit mode left the pod as written" || bad "audit mode changed the pod (cpu $acpu)"
  [[ -z $(kubectl -n "$ns" get pod audited-pod -o jsonpath='{.metadata.annotations.sizeguard\.io/rightsized}') ]] \
    && ok "audit mode added no annotation" || bad "audit mode annotated the pod"
  kubectl -n "$ns" scale deployment/audited --replicas=0 --as="system:serviceaccount:$ns:agent" >/dev/null 2>&1 \
    && ok "audit mode did not deny the agent" || bad "audit mode denied"
else
  bad "the audit label never took effect (a violating dry run still denied after 30 s)"
fi

# ---- issue #14 ----------------------------------------------------------------------------------
step "rollout: a Deployment at the replica floor rolls out (controllers scale ReplicaSets below it)"
# production-replica-floor (min 2) covers ReplicaSets too; a rolling update creates the new
# ReplicaSet small and scales the old one to 0. maxUnavailable 100%: with no kubelet (a bare
# control plane) Pods never become available, and the rollout must still finish its scaling.
mkns "$rollout_ns" environment=production
deployment web 3 | sed 's/^spec:/spec:\n  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: "100%"}}/' \
  > "$work/web.yaml"
rs_table() { kubectl -n "$rollout_ns" get rs -l app=web -o jsonpath='{range .items[*]}{.spec.template.spec.containers[0].image} {.spec.replicas} {.status.replicas}{"\n"}{end}' 2>/dev/null; }
if ! kubectl -n "$rollout_ns" apply -f "$work/web.yaml" > "$work/web.out" 2>&1; then
  bad "Deployment web (3 replicas, floor 2) was refused: $(oneline "$work/web.out")"
elif ! until_true 60 bash -c "[[ \$(kubectl -n '$rollout_ns' get deploy web -o jsonpath='{.status.replicas}') == 3 ]]"; then
  bad "Deployment web never got 3 pods: $(rs_table | tr '\n' ';')"
else
  ok "Deployment web created with 3 pods"
  kubectl -n "$rollout_ns" set image deployment/web web=registry.k8s.io/pause:3.10 > "$work/set-image.out" 2>&1 \
    || bad "kubectl set image refused: $(oneline "$work/set-image.out")"
  rolled() {
    local t; t=$(rs_table)
    grep -qx "registry.k8s.io/pause:3.10 3 3" <<<"$t" && grep -Eqx "$pause 0( 0)?" <<<"$t" \
      && [[ $(kubectl -n "$rollout_ns" get deploy web -o jsonpath='{.status.updatedReplicas}') == 3 ]]
  }
  if until_true 60 rolled; then
    ok "rollout finished: new ReplicaSet 3/3 pods, old one at 0 ($(rs_table | tr '\n' ';'))"
  else
    bad "rollout stuck after 60 s: ReplicaSets (image spec status): $(rs_table | tr '\n' ';')"
  fi
  kubectl -n "$rollout_ns" get events -o jsonpath='{range .items[*]}{.reason}{"\t"}{.message}{"\n"}{end}' \
    | grep -E '^(ReplicaSetCreateError|FailedCreate)' | grep -i sizeguard > "$work/rollout-events.out" || true
  [[ ! -s $work/rollout-events.out ]] && ok "no ReplicaSetCreateError/FailedCreate events from sizeguard" \
    || bad "controller events from sizeguard: $(oneline "$work/rollout-events.out")"
fi

step "audit label: takes effect for the very next request"
mkns "$fresh_ns"
# app is oversized (right-sizing has something to say); istio-proxy has no resources at all,
# which resource-requirements refuses and right-sizing (which excludes proxies) cannot fix.
violator() {
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $fresh_ns}
spec:
  containers:
    - name: app
      image: $pause
      resources:
        requests: {cpu: "4", memory: 8Gi}
        limits: {memory: 8Gi}
    - name: istio-proxy
      image: $pause
YAML
}
if violator violator-1 | kubectl apply -f - > "$work/fresh1.out" 2>&1; then
  bad "violating pod allowed in enforce mode (the case needs a denial first): $(oneline "$work/fresh1.out")"
else
  ok "violating pod denied in enforce mode (the webhook has read the namespace)"
  # The label must reach the webhook within a second: retry the create until then.
  t0=$(date +%s%N)
  kubectl label namespace "$fresh_ns" sizeguard.io/mode=audit >/dev/null
  allowed=0 tries=0
  while :; do
    tries=$((tries + 1))
    violator violator-2 | kubectl apply -f - > "$work/fresh2.out" 2>&1 && allowed=1
    ms=$((($(date +%s%N) - t0) / 1000000))
    ((allowed || ms >= 1000)) && break
    sleep 0.1
  done
  if ((allowed)); then
    ok "violating pod allowed ${ms} ms after the namespace was labelled sizeguard.io/mode=audit (attempt $tries)"
    grep -q "sizeguard: \[audit, not applied\]" "$work/fresh2.out" \
      && ok "with the audit warning: $(grep -m1 'sizeguard: \[audit' "$work/fresh2.out" | cut -c1-200)" \
      || bad "allowed without an audit warning: $(oneline "$work/fresh2.out")"
  else
    bad "violating pod still denied ${ms} ms after sizeguard.io/mode=audit, $tries attempts (stale namespace labels): $(oneline "$work/fresh2.out")"
    skip "audit warning (the pod was denied)"
  fi
fi

step "agent: a change reason per change; a no-op scale spends no budget"
mkns "$prod_ns" environment=production
kubectl -n "$prod_ns" create rolebinding ai-agent-edit --clusterrole=edit --serviceaccount=ops:ai-agent >/dev/null
as_agent=(kubectl -n "$prod_ns" --as="$agent")
# The change-budget Leases of this workload and of the agent: "key events" per Lease.
leases() {
  kubectl -n "$budget_ns" get leases -o json | python3 -c '
import json, sys
ns, agent = sys.argv[1:3]
for l in json.load(sys.stdin)["items"]:
    a = l["metadata"].get("annotations", {})
    key = a.get("sizeguard.io/budget-key", "")
    if ns + "/" in key or key.endswith(agent):
        print(key, a.get("sizeguard.io/budget-events", ""))
' "$prod_ns" "$agent"
}
deployment worker 4 | kubectl -n "$prod_ns" apply -f - > "$work/worker.out" 2>&1 \
  || bad "Deployment worker refused: $(oneline "$work/worker.out")"
reason="e2e $run: shrink worker to 3 after the load test"
if "${as_agent[@]}" annotate deployment/worker "sizeguard.io/change-reason=$reason" --overwrite > "$work/annotate.out" 2>&1; then
  ok "agent set sizeguard.io/change-reason on the Deployment"
else
  bad "agent may not annotate: $(oneline "$work/annotate.out")"
fi
# An agent follows the denial's hints: a webhook whose copy of the Deployment predates the
# annotation says "retry in a few seconds" (at most 3 tries here).
agent_scale() { # REPLICAS OUT
  local _
  for _ in 1 2 3; do
    "${as_agent[@]}" scale deployment/worker --replicas="$1" > "$2" 2>&1 && return 0
    grep -q "retry in a few seconds" "$2" || return 1
    echo "(the webhook asked to retry: $(oneline "$2" | cut -c1-160)...)"
    sleep 2
  done
  return 1
}
if agent_scale 3 "$work/agent-scale1.out"; then
  ok "agent scale 4 -> 3 with a fresh change reason allowed"
else
  bad "agent scale 4 -> 3 with a fresh change reason denied: $(oneline "$work/agent-scale1.out")"
fi
if agent_scale 2 "$work/agent-scale2.out"; then
  bad "agent scale reusing the same change reason was allowed"
else
  # Issue #14 asked for MissingChangeReason; the policy change names it ChangeReasonReused.
  leads_with "MissingChangeReason|ChangeReasonReused" "$work/agent-scale2.out" \
    && ok "agent scale reusing the same change reason denied: $(oneline "$work/agent-scale2.out" | cut -c1-200)" \
    || bad "reused change reason: denial does not start with [MissingChangeReason] or [ChangeReasonReused]: $(oneline "$work/agent-scale2.out")"
fi
current=$(kubectl -n "$prod_ns" get deploy worker -o jsonpath='{.spec.replicas}')
before=$(leases)
[[ -n $before ]] && ok "change-budget Leases in $budget_ns record the agent's changes" \
  || bad "no change-budget Lease for $prod_ns/worker or $agent in $budget_ns"
if agent_scale "$current" "$work/agent-scale3.out"; then
  ok "agent scale to the same count ($current) allowed"
  after=$(leases)
  [[ $before == "$after" ]] && ok "the no-op scale spent no budget (Leases unchanged)" \
    || bad "the no-op scale spent budget: before [$before] after [$after]"
else
  bad "agent scale to the same count ($current) denied: $(oneline "$work/agent-scale3.out")"
  skip "budget of the no-op scale (it was denied)"
fi

step "GPU quota: two Deployments created together never exceed the namespace total"
quota=16 per=12   # gpu-team-quotas: namespaceTotal 16, maxPerWorkload 16
mkns "$ml_ns"
{
  for name in train-a train-b; do
    deployment "$name" "$per" | sed 's/limits: {cpu: 200m, memory: 64Mi}/limits: {cpu: 200m, memory: 64Mi, nvidia.com\/gpu: "1"}/'
    echo "---"
  done
} > "$work/gpu.yaml"
kubectl -n "$ml_ns" apply -f "$work/gpu.yaml" > "$work/gpu.out" 2>&1 || bad "GPU Deployments refused: $(oneline "$work/gpu.out")"
# The ReplicaSet controller creates Pods in parallel batches and retries refused ones with
# backoff: sample the count until it has held still for 10 s (at most 60 s).
gpu_pods() { kubectl -n "$ml_ns" get pods -o name 2>/dev/null | wc -l; }
max=0 last=-1 still=0 deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
  n=$(gpu_pods)
  ((n > max)) && max=$n
  if ((n == last && n > 0)); then still=$((still + 1)); else still=0; fi
  last=$n
  ((still >= 10)) && break
  sleep 1
done
if ((max <= quota)); then
  ok "at most $quota GPU pods at any time (max seen $max)"
  ((last == quota)) && ok "the quota was filled ($last of $quota)" || bad "$last GPU pods, expected the quota ($quota) filled"
else
  bad "$max GPU pods created for a namespace total of $quota"
  skip "quota filled (it was exceeded)"
fi
kubectl -n "$ml_ns" get events --field-selector reason=FailedCreate -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' \
  > "$work/gpu-events.out" 2>/dev/null || true
leads_with GPUQuotaExceeded "$work/gpu-events.out" \
  && ok "refused pods: $(grep -m1 -F 'GPUQuotaExceeded' "$work/gpu-events.out" | cut -c1-220)" \
  || bad "no FailedCreate event with 'denied the request: [GPUQuotaExceeded]': $(head -c 400 "$work/gpu-events.out")"

# ---- issue #18 ----------------------------------------------------------------------------------
if [[ $mode == local ]]; then
  step "background audit: the Lease holder keeps a PolicyReport for the test namespace"
  audit_report() {
    kubectl -n "$ns" get policyreport sizeguard-audit -o json > "$work/polr.json" 2>/dev/null \
      && python3 - "$work/polr.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sizeguard"
kinds = {res["kind"] for x in r["results"] for res in x["resources"]}
assert "Deployment" in kinds, kinds
assert sum(r["summary"].values()) == len(r["results"]), r["summary"]
PY
  }
  if until_true 60 audit_report; then
    ok "PolicyReport $ns/sizeguard-audit: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"])' "$work/polr.json")"
    python3 - "$work/polr.json" > "$work/polr-rs.out" <<'PY' && ok "right-sizing result: $(cat "$work/polr-rs.out")" || bad "no rightsizing result with properties in the report"
import json, sys
r = json.load(open(sys.argv[1]))
rs = [x for x in r["results"] if x["rule"] == "rightsizing"]
assert rs, "none"
# Workloads admission already right-sized pass; one it would change carries the numbers.
changed = [x for x in rs if x["result"] == "warn"]
for x in changed:
    assert {"current", "recommended", "savings", "coldStart"} <= set(x["properties"]), x["properties"]
x = (changed or rs)[0]
print(x["properties"]["workload"], x["result"], x["properties"].get("current", ""), "->", x["properties"].get("recommended", ""))
PY
  else
    bad "no PolicyReport sizeguard-audit in $ns after 60 s: $(tail -3 "$work/sizeguard.log" | tr '\n' ' ' | cut -c1-300)"
  fi
  # An HPA created before its namespace became production (so admission had no floor to apply)
  # scales the workload under the floor: the audit finds it through the autoscaling/v2 LIST.
  hpa_ns=$run-hpa
  mkns "$hpa_ns"
  kubectl -n "$hpa_ns" apply -f - > "$work/hpa.out" 2>&1 <<YAML || bad "HPA create failed: $(oneline "$work/hpa.out")"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 4
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}}]
YAML
  kubectl label namespace "$hpa_ns" environment=production --overwrite >/dev/null
  hpa_report() {
    kubectl -n "$hpa_ns" get policyreport sizeguard-audit -o json > "$work/polr-hpa.json" 2>/dev/null \
      && python3 - "$work/polr-hpa.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
hits = [x for x in r["results"] if any(res["kind"] == "HorizontalPodAutoscaler" for res in x["resources"])]
assert any(x["policy"] == "production-replica-floor" and x["result"] == "fail" and "minReplicas" in x["message"]
           for x in hits), hits
print(next(x["message"] for x in hits if x["result"] == "fail"))
PY
  }
  if until_true 60 hpa_report > "$work/polr-hpa.out"; then
    ok "PolicyReport $hpa_ns/sizeguard-audit finds the HPA under the floor: $(tail -1 "$work/polr-hpa.out" | cut -c1-200)"
  else
    bad "no HPA result in $hpa_ns/sizeguard-audit after 60 s: $(head -c 400 "$work/polr-hpa.json" 2>/dev/null)"
  fi
  holder=$(kubectl -n "$budget_ns" get lease sizeguard-audit-leader -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
  [[ -n $holder ]] && ok "leader Lease $budget_ns/sizeguard-audit-leader held by $holder" || bad "no holder on the audit leader Lease"
  if [[ -n ${mport:-} ]]; then
    curl -s "http://127.0.0.1:$mport/metrics" > "$work/metrics.out" || true
    grep -q '^sizeguard_audit_leader 1' "$work/metrics.out" && grep -q 'sizeguard_audit_runs_total{result="success"}' "$work/metrics.out" \
      && ok "metrics: sizeguard_audit_leader 1, successful runs counted" \
      || bad "audit metrics missing: $(grep sizeguard_audit "$work/metrics.out" | tr '\n' ' ' | cut -c1-300)"
  fi
fi

finished=1
((fail == 0))   # the summary is the last line, printed by cleanup
