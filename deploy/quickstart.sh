#!/usr/bin/env bash
# Builds sizeguard and runs it on embedded defaults: the bundled model, the example
# policies and throwaway dev certificates. Serves the webhook on localhost, sends it
# AdmissionReviews exactly as a kube-apiserver sends them (curl verifies TLS against the
# dev CA), prints the answers, and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

deploy/install-deps.sh build
build=${BUILD_DIR:-build-release}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSIZEGUARD_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" --target sizeguard -j "$(nproc)"

work=$(mktemp -d)
port=${PORT:-18443}
metrics_port=${METRICS_PORT:-19090}
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

args=(serve --dev --dev-cert-dir "$work/certs" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics_port")
args+=(--policies "$root/policies/examples" --cluster-state "$root/deploy/quickstart/cluster-state.yaml"
      --model "$root/recommender/models/default" --audit-log "$work/audit.log")
echo "+ sizeguard ${args[*]}"
"$build/sizeguard" "${args[@]}" >"$work/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "quickstart: server exited" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null || { cat "$work/server.log"; exit 1; }

send() {  # send WEBHOOK FIXTURE: POST as the apiserver does, TLS verified against the dev CA
  local webhook=$1 fixture=$2
  echo
  echo "=== POST /$webhook  <- $(basename "$fixture")"
  curl -sS --fail-with-body --cacert "$work/certs/ca.crt" \
    -H "Content-Type: application/json" -H "Accept: application/json, */*" \
    -H "User-Agent: kube-apiserver-admission" -H "Accept-Encoding: gzip" --compressed \
    --data-binary "@$fixture" "https://127.0.0.1:$port/$webhook?timeout=10s" > "$work/answer.json"
  python3 - "$work/answer.json" <<'PY'
import base64, json, sys
answer = json.load(open(sys.argv[1]))
response = answer["response"]
if "patch" in response:
    response["patch"] = json.loads(base64.b64decode(response["patch"]))  # shown decoded
print(json.dumps(answer, indent=2, ensure_ascii=False))
PY
}
send mutate tests/fixtures/admission-apiserver-1.28/pod-create-from-replicaset.json
send mutate tests/fixtures/admission-apiserver-1.28/deployment-create.json
send validate tests/fixtures/admission-apiserver-1.28/deployment-create.json
send validate tests/fixtures/admission-apiserver-1.28/scale-update.json

echo
echo "=== GET /recommendations (what right-sizing has seen)"
curl -fsS "http://127.0.0.1:$metrics_port/recommendations"

echo
echo "=== server log"
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
cat "$work/server.log"

echo
echo "=== audit-only mode, offline: the same Pod in a namespace labelled sizeguard.io/mode=audit (nothing changed, nothing denied, all reported)"
sed 's/environment: production/environment: production\n    sizeguard.io\/mode: audit/' \
  deploy/quickstart/cluster-state.yaml > "$work/cluster-audit.yaml"
"$build/sizeguard" review -f tests/fixtures/admission-apiserver-1.28/pod-create-from-replicaset.json \
  --policies policies/examples --cluster-state "$work/cluster-audit.yaml" --model recommender/models/default || true

echo
echo "=== sizeguard report --audit-log (what the server's right-sizing would save)"
"$build/sizeguard" report --audit-log "$work/audit.log"
