#!/usr/bin/env bash
# End-to-end check of sizeguard against a real cluster (kind, k3s, a dev apiserver...).
#
#   tests/e2e/run.sh --in-cluster [--image sizeguard:0.1.0]
#       deploys deploy/base with kustomize (the image must be pullable by the cluster,
#       e.g. `kind load docker-image`), webhooks reach it through its Service.
#   tests/e2e/run.sh --local https://127.0.0.1:8443
#       runs sizeguard on this host; the webhook configurations point at the URL
#       (clientConfig.url + caBundle), the way webhook authors test against kind or a
#       dev apiserver whose network can reach this host.
#
# Uses the current KUBECONFIG context. Without a reachable cluster it prints SKIP and exits 0.
# Checks: a Deployment gets right-sized Pods with the explanation annotation and kubectl
# warnings; an agent service account (impersonated) is denied an unsafe `kubectl scale`
# with a reason code while a human is allowed; audit mode changes nothing; then cleans up.
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
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "e2e: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $mode ]] || { echo "e2e: choose --in-cluster or --local URL" >&2; exit 2; }

if ! command -v kubectl >/dev/null || ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
  echo "SKIP: tests/e2e/run.sh needs a reachable Kubernetes cluster (kubectl + KUBECONFIG); none here"
  exit 0
fi

ns="sizeguard-e2e-$RANDOM"
work=$(mktemp -d)
local_pid=""
pass=0 fail=0
ok()   { echo "PASS: $*"; pass=$((pass + 1)); }
bad()  { echo "FAIL: $*"; fail=$((fail + 1)); }
step() { echo; echo "--- $*"; }

cleanup() {
  ((keep)) && { echo "kept namespace $ns and the webhook configurations"; return; }
  step "cleanup"
  kubectl delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete clusterrolebinding "$ns-agent" --ignore-not-found >/dev/null 2>&1 || true
  if [[ $mode == local ]]; then
    kubectl delete mutatingwebhookconfiguration sizeguard-e2e --ignore-not-found >/dev/null 2>&1 || true
    kubectl delete validatingwebhookconfiguration sizeguard-e2e --ignore-not-found >/dev/null 2>&1 || true
    [[ -n $local_pid ]] && kill -TERM "$local_pid" 2>/dev/null && wait "$local_pid" 2>/dev/null || true
  else
    kubectl delete -k "$work/kustomize" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The policy under test: a replica floor and scale-down step for one agent account.
mkdir -p "$work/policies"
cat > "$work/policies/e2e.yaml" <<YAML
apiVersion: sizeguard.io/v1
kind: Policy
metadata:
  name: e2e-guardrails
spec:
  mode: enforce
  match:
    namespaces: ["$ns"]
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

step "install sizeguard ($mode)"
if [[ $mode == local ]]; then
  host_port=${url#https://}
  host=${host_port%:*} port=${host_port##*:}
  certs/make-certs.sh --out "$work/certs" --ip "$host" --dns localhost >/dev/null
  build=${BUILD_DIR:-build-release}
  [[ -x $build/sizeguard ]] || { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSIZEGUARD_BUILD_TESTS=OFF >/dev/null; cmake --build "$build" --target sizeguard -j"$(nproc)"; }
  "$build/sizeguard" serve --listen "$host_port" --metrics-listen 127.0.0.1:0 \
    --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" \
    --policies "$work/policies" --model "$root/recommender/models/default" \
    --kubeconfig "${KUBECONFIG:-$HOME/.kube/config}" >"$work/sizeguard.log" 2>&1 &
  local_pid=$!
  sleep 2
  kill -0 "$local_pid" || { cat "$work/sizeguard.log"; exit 1; }
  bundle=$(cat "$work/certs/ca-bundle.b64")
  # The base webhook configurations with clientConfig.url instead of the Service.
  python3 - "$root/deploy/base/webhooks.yaml" "$url" "$bundle" > "$work/webhooks.json" <<'PY'
import json, sys, yaml  # python3-yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
out = []
for d in docs:
    d["metadata"]["name"] = "sizeguard-e2e"
    for w in d["webhooks"]:
        path = w["clientConfig"]["service"]["path"]
        w["clientConfig"] = {"url": sys.argv[2] + path, "caBundle": sys.argv[3]}
    out.append(d)
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": out}))
PY
  kubectl apply -f "$work/webhooks.json" >/dev/null
else
  mkdir -p "$work/kustomize"
  cp -r deploy/base "$work/kustomize/base"
  cp "$work/policies/e2e.yaml" "$work/kustomize/base/policies/production-floor.yaml"
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
fi

step "test namespace $ns"
kubectl create namespace "$ns" >/dev/null
kubectl -n "$ns" create serviceaccount agent >/dev/null
kubectl create clusterrolebinding "$ns-agent" --clusterrole=edit --serviceaccount="$ns:agent" >/dev/null
sleep 2  # policy reload (the directory or ConfigMap changed)

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
          image: registry.k8s.io/pause:3.9
          resources:
            requests: {cpu: "4", memory: 8Gi}
            limits: {memory: 8Gi}
YAML
kubectl apply -f "$work/demo.yaml" > "$work/apply.out" 2>&1 || { cat "$work/apply.out"; bad "apply demo"; }
pod=""
for _ in $(seq 1 60); do
  pod=$(kubectl -n "$ns" get pods -l app=demo -o name 2>/dev/null | head -1)
  [[ -n $pod ]] && break; sleep 1
done
if [[ -z $pod ]]; then bad "no demo pod was created"; else
  ann=$(kubectl -n "$ns" get "$pod" -o jsonpath='{.metadata.annotations.sizeguard\.io/rightsized}')
  cpu=$(kubectl -n "$ns" get "$pod" -o jsonpath='{.spec.containers[0].resources.requests.cpu}')
  [[ -n $ann ]] && ok "pod has sizeguard.io/rightsized: $ann" || bad "pod lacks the sizeguard.io/rightsized annotation"
  [[ $cpu != 4 ]] && ok "pod cpu request right-sized 4 -> $cpu" || bad "pod cpu request unchanged ($cpu)"
fi

step "guardrails: the agent may not scale below the floor; a human may"
kubectl -n "$ns" rollout status deployment/demo --timeout=120s >/dev/null 2>&1 || true
if kubectl -n "$ns" scale deployment/demo --replicas=1 --as="system:serviceaccount:$ns:agent" > "$work/scale.out" 2>&1; then
  bad "agent scale-down to 1 was allowed"
else
  grep -Eq "BelowFloor|ScaleDownStepExceeded" "$work/scale.out" && ok "agent denied: $(tr '\n' ' ' < "$work/scale.out")" \
    || bad "denial without reason code: $(cat "$work/scale.out")"
  grep -q "minAllowedReplicas=" "$work/scale.out" && ok "denial names the nearest allowed value" || bad "no minAllowedReplicas= in the denial"
fi
kubectl -n "$ns" scale deployment/demo --replicas=1 > /dev/null 2>&1 && ok "human scale-down allowed" || bad "human scale-down denied"

step "audit mode: nothing changes, warnings still explain"
kubectl label namespace "$ns" sizeguard.io/mode=audit sizeguard.io/rightsize=audit --overwrite >/dev/null
sed 's/name: demo/name: audited/; s/app: demo/app: audited/g' "$work/demo.yaml" > "$work/audited.yaml"
kubectl apply -f "$work/audited.yaml" > /dev/null 2>&1 || bad "apply in audit mode failed"
# A Pod created by kubectl itself, so the right-sizing warning comes back to this client
# (Pods made by a controller warn the controller, not kubectl).
cat > "$work/audited-pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: audited-pod, namespace: $ns}
spec:
  containers:
    - name: web
      image: registry.k8s.io/pause:3.9
      resources:
        requests: {cpu: "4", memory: 8Gi}
        limits: {memory: 8Gi}
YAML
kubectl apply -f "$work/audited-pod.yaml" > "$work/apply-audit.out" 2>&1 || bad "apply of a pod in audit mode failed"
grep -q "sizeguard: \[audit, not applied\]" "$work/apply-audit.out" \
  && ok "audit mode warned: $(grep sizeguard: "$work/apply-audit.out" | head -1)" || bad "no sizeguard audit warning: $(cat "$work/apply-audit.out")"
acpu=$(kubectl -n "$ns" get pod audited-pod -o jsonpath='{.spec.containers[0].resources.requests.cpu}')
[[ $acpu == 4 ]] && ok "audit mode left the pod as written" || bad "audit mode changed the pod (cpu $acpu)"
[[ -z $(kubectl -n "$ns" get pod audited-pod -o jsonpath='{.metadata.annotations.sizeguard\.io/rightsized}') ]] \
  && ok "audit mode added no annotation" || bad "audit mode annotated the pod"
kubectl -n "$ns" scale deployment/audited --replicas=0 --as="system:serviceaccount:$ns:agent" >/dev/null 2>&1 \
  && ok "audit mode did not deny the agent" || bad "audit mode denied"

echo
echo "e2e: $pass passed, $fail failed"
((fail == 0))
