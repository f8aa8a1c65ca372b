#!/usr/bin/env bash
# deploy/grafana/sizeguard-dashboard.json queries only metrics the webhook exports: every
# metric name in its PromQL (panel targets and template queries) must be a family in the
# /metrics output of a running `sizeguard serve --dev` (a histogram's _bucket/_sum/_count
# count as its base name). The server runs with every optional metric source switched on:
# policies, a recommendations snapshot, the model and a cluster-state watch (pointed at a
# closed loopback port, so the watch fails, but its metrics are there).
set -euo pipefail
bin=${SIZEGUARD_BINARY:?}
src=${SIZEGUARD_SOURCE_DIR:?}
dashboard=${1:-$src/deploy/grafana/sizeguard-dashboard.json}
# shellcheck source=tests/scripts/lib/serve.bash
source "$src/tests/scripts/lib/serve.bash"

mkdir -p "$work/policies"
cp "$src"/policies/examples/*.yaml "$work/policies/"
echo '{"modelVersion":"none","generatedAt":"1970-01-01T00:00:00Z","recommendations":{}}' > "$work/recommendations.json"
cat > "$work/kubeconfig" <<'YAML'
apiVersion: v1
kind: Config
current-context: closed
clusters:
- name: closed
  cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}
users:
- name: nobody
  user: {token: none}
contexts:
- name: closed
  context: {cluster: closed, user: nobody}
YAML

"$bin" serve --dev --dev-cert-dir "$work/certs" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --policies "$work/policies" --recommendations "$work/recommendations.json" \
  --model "$src/recommender/models/default" --kubeconfig "$work/kubeconfig" --audit-log '' \
  > "$work/server.log" 2>&1 &
pid=$!
wait_for_ports "$work/server.log" "$pid"

# One review each way, so labelled series exist too (the check itself reads the families).
for path in mutate validate; do
  curl -sS -o /dev/null --cacert "$work/certs/ca.crt" -H 'Content-Type: application/json' \
    --data-binary "@$src/tests/fixtures/admission-apiserver-1.28/deployment-create.json" \
    "https://127.0.0.1:$port/$path?timeout=10s" || fail "POST /$path"
done
curl -fsS "http://127.0.0.1:$metrics_port/metrics" > "$work/metrics.txt" || fail "GET /metrics"

python3 - "$dashboard" "$work/metrics.txt" <<'PY' || fail "dashboard metrics"
import json, re, sys

dashboard = json.load(open(sys.argv[1]))
families = {}  # name -> type, from the exposition's "# TYPE name type" lines
for line in open(sys.argv[2]):
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split()
        families[name] = kind

queries = []
def walk(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                queries.append(value)
            elif key == "query" and isinstance(value, str):
                queries.append(value)
            else:
                walk(value)
    elif isinstance(node, list):
        for item in node:
            walk(item)
walk(dashboard)
assert queries, "no PromQL found in the dashboard"

names = set()
for q in queries:
    # Metric names only: label values and legend text are not part of the expressions.
    stripped = re.sub(r'"[^"]*"', '""', q)
    names.update(re.findall(r"\bsizeguard_[a-zA-Z0-9_:]+", stripped))

missing = []
for name in sorted(names):
    if name in families:
        continue
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if base != name and families.get(base) == "histogram":
        continue
    missing.append(name)
if missing:
    sys.exit("queried but not exported by serve: " + ", ".join(missing))

# The dashboard covers what it is for (issue 18): decisions, latency from the histogram,
# right-sizing, reload health of policies/recommendations/certificates, watches, HTTP.
required = {
    "sizeguard_admission_requests_total", "sizeguard_admission_duration_seconds_bucket",
    "sizeguard_rightsizing_total", "sizeguard_recommendation_cpu_cores", "sizeguard_recommendation_memory_bytes",
    "sizeguard_recommendation_workloads", "sizeguard_policy_last_reload_success",
    "sizeguard_recommendations_last_reload_success", "sizeguard_tls_cert_expiry_timestamp_seconds",
    "sizeguard_watch_staleness_seconds", "sizeguard_http_errors_total", "sizeguard_http_busy_workers",
}
absent = required - names
assert not absent, f"dashboard lacks panels for: {sorted(absent)}"
assert any("histogram_quantile" in q and "sizeguard_admission_duration_seconds_bucket" in q for q in queries), \
    "no latency quantile from the histogram"

ids = [p["id"] for p in dashboard["panels"]]
assert len(ids) == len(set(ids)), "panel ids repeat"
for p in dashboard["panels"]:
    if p.get("type") != "row":
        assert p.get("targets"), f"panel {p.get('title')} has no query"
print(f"{len(names)} metric names in {len(queries)} queries, all exported")
PY
echo "PASS: grafana dashboard"
