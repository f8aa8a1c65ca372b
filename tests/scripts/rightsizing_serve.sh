#!/usr/bin/env bash
# The real binary serving /mutate with the bundled model: audit mode changes nothing and
# reports (warnings, audit log, GET /recommendations, `sizeguard report`); enforce mode
# patches. Requests are the real apiserver fixtures, over TLS verified against the dev CA.
set -euo pipefail
bin=${SIZEGUARD_BINARY:?}
src=${SIZEGUARD_SOURCE_DIR:?}
# shellcheck source=tests/scripts/lib/serve.bash
source "$src/tests/scripts/lib/serve.bash"

policy() {  # policy MODE
  mkdir -p "$work/policies-$1"
  cat > "$work/policies-$1/rightsizing.yaml" <<YAML
apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: rightsize-$1}
spec:
  rightsizing:
    mode: $1
    target: both
YAML
}

start() {  # start MODE [FLAG...]: serve on free ports; sets pid, port, metrics_port
  policy "$1"
  : > "$work/server.log"
  "$bin" serve --dev --dev-cert-dir "$work/certs" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --policies "$work/policies-$1" --model "$src/recommender/models/default" \
    --audit-log "$work/audit-$1.log" "${@:2}" > "$work/server.log" 2>&1 &
  pid=$!
  wait_for_ports "$work/server.log" "$pid"
}

stop() { kill -TERM "$pid"; wait "$pid" || true; pid=""; }

post() {  # post FIXTURE -> answer JSON on stdout
  curl -sS --fail-with-body --cacert "$work/certs/ca.crt" -H 'Content-Type: application/json' \
    --data-binary "@$src/tests/fixtures/admission-apiserver-1.28/$1" "https://127.0.0.1:$port/mutate?timeout=10s"
}

# Audit mode: no patch, warnings say what would change, everything is reported.
start audit
post deployment-create.json > "$work/audit-answer.json"
python3 - "$work/audit-answer.json" <<'PY' || fail "audit answer"
import json, sys
r = json.load(open(sys.argv[1]))["response"]
assert r["allowed"] is True, r
assert "patch" not in r and "patchType" not in r, r
assert any("[audit, not applied] container app" in w for w in r["warnings"]), r["warnings"]
PY
curl -fsS "http://127.0.0.1:$metrics_port/recommendations" > "$work/recs.json" || fail "GET /recommendations"
python3 - "$work/recs.json" <<'PY' || fail "recommendations table"
import json, sys
t = json.load(open(sys.argv[1]))
w = [x for x in t["workloads"] if x["name"] == "demo"]
assert w and w[0]["mode"] == "audit" and w[0]["cpuCores"]["recommended"] > 0, t
PY
curl -fsS "http://127.0.0.1:$metrics_port/metrics" > "$work/metrics.txt" || fail "GET /metrics"
grep -q 'sizeguard_recommendation_cpu_cores{namespace="webhook-test",value="recommended"}' "$work/metrics.txt" \
  || fail "recommendation gauges"
stop
grep -q '"wouldPatch"' "$work/audit-audit.log" || fail "audit log has no would-be patch"
"$bin" report --audit-log "$work/audit-audit.log" > "$work/report.txt" || fail "report"
grep -q 'webhook-test/Deployment/demo' "$work/report.txt" || fail "report table: $(cat "$work/report.txt")"
"$bin" report --audit-log "$work/audit-audit.log" --output json --price-core-hour 0.05 | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["pricePerCoreHour"] == 0.05 and len(r["workloads"]) == 1, r' || fail "report json"

# The report counts only what exists: no dry runs, nothing the validating webhook denied, and a
# Pod made by a controller stands for each replica of its workload.
rs='"rightsizing":{"mode":"enforce","coldStart":false,"cpuCores":{"current":1,"recommended":0.5},"memoryBytes":{"current":0,"recommended":0}'
cat > "$work/handmade.log" <<LOG
{"webhook":"mutate","kind":"Deployment","namespace":"shop","name":"web","dryRun":false,$rs,"workload":"shop/Deployment/web","replicas":3}}
{"webhook":"mutate","kind":"Pod","namespace":"shop","name":"web-6c79ccc859-","dryRun":false,$rs,"workload":"shop/Deployment/web","replicas":1}}
{"webhook":"mutate","kind":"Deployment","namespace":"shop","name":"dry","dryRun":true,$rs,"workload":"shop/Deployment/dry","replicas":5}}
{"webhook":"mutate","kind":"Deployment","namespace":"shop","name":"denied","dryRun":false,$rs,"workload":"shop/Deployment/denied","replicas":2}}
{"webhook":"validate","kind":"Deployment","namespace":"shop","name":"denied","dryRun":false,"allowed":false}
LOG
"$bin" report --audit-log "$work/handmade.log" --output json | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert [w["workload"] for w in r["workloads"]] == ["shop/Deployment/web"], r
w = r["workloads"][0]
assert w["replicas"] == 3 and w["cpuCores"]["current"] == 3 and w["cpuCores"]["recommended"] == 1.5, w' || fail "report counts"

# Enforce mode: the Pod from the ReplicaSet gets a patch with requests. Serve reads a snapshot
# from `recommend`, and GET /recommendations says which model and gate decision it came from.
"$bin" recommend --model "$src/recommender/models/default" --bitbrains "$src/tests/fixtures/usage/bitbrains-sample" \
  --out "$work/snapshot.json" 2> "$work/recommend.err" || fail "recommend: $(cat "$work/recommend.err")"
start enforce --recommendations "$work/snapshot.json"
curl -fsS "http://127.0.0.1:$metrics_port/recommendations" > "$work/recs-enforce.json" || fail "GET /recommendations"
python3 - "$work/recs-enforce.json" "$work/snapshot.json" <<'PY' || fail "recommender decision in GET /recommendations"
import json, sys
table, snap = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
r = table["recommender"]
assert r["modelVersion"] == snap["modelVersion"] and r["recommendations"] == len(snap["recommendations"]), r
assert r["decision"] == snap["decision"] and r["decision"]["cpu"]["source"] in ("model", "blend", "baseline"), r
PY
post pod-create-from-replicaset.json > "$work/enforce-answer.json"
python3 - "$work/enforce-answer.json" <<'PY' || fail "enforce answer"
import base64, json, sys
r = json.load(open(sys.argv[1]))["response"]
assert r["allowed"] is True and r["patchType"] == "JSONPatch", r
patch = json.loads(base64.b64decode(r["patch"]))
paths = [op["path"] for op in patch]
assert any(p.startswith("/spec/containers/0/resources") for p in paths), paths
assert any("sizeguard.io~1rightsized" in p or p == "/metadata/annotations" for p in paths), paths
PY
stop
echo "rightsizing_serve: ok"
