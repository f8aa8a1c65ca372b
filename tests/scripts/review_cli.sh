#!/usr/bin/env bash
# `sizeguard review -f FILE`: manifests (YAML, multi-document, List, JSON) and saved
# AdmissionReviews go through mutate + validate; bad input exits 2 naming file and document.
set -euo pipefail
src=${SIZEGUARD_SOURCE_DIR:?} bin=${SIZEGUARD_BINARY:?}
fail() { echo "FAIL: $*" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Runs sizeguard review with the given arguments; sets out, err and rc.
run() {
  rc=0
  "$bin" review "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  out=$(cat "$tmp/out") err=$(cat "$tmp/err")
}
expect_rc() { [[ $rc == "$1" ]] || fail "expected exit $1, got $rc for: $2"$'\n'"stdout: $out"$'\n'"stderr: $err"; }
expect_out() { grep -qF -- "$1" <<<"$out" || fail "stdout lacks '$1':"$'\n'"$out"; }
expect_err() { grep -qF -- "$1" <<<"$err" || fail "stderr lacks '$1':"$'\n'"$err"; }
valid_json() { python3 -c 'import json,sys; json.load(sys.stdin)' <<<"$out" || fail "--output json is not JSON:"$'\n'"$out"; }

cat >"$tmp/deploy.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: prod
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: registry.invalid/web:1.0
        resources:
          requests: {cpu: 100m, memory: 128Mi}
EOF

cat >"$tmp/multi.yaml" <<'EOF'
# leading comment
---
apiVersion: v1
kind: Pod
metadata:
  name: single
spec:
  containers:
  - name: c
    image: busybox
---
# an empty document still counts
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  namespace: data
spec:
  replicas: 3
EOF

cat >"$tmp/list.yaml" <<'EOF'
apiVersion: v1
kind: List
items:
- apiVersion: batch/v1
  kind: Job
  metadata: {name: once}
- apiVersion: batch/v1
  kind: CronJob
  metadata: {name: nightly, namespace: ops}
EOF

# One Deployment: header, no changes, allowed, exit 0.
run -f "$tmp/deploy.yaml"
expect_rc 0 "deploy.yaml"
expect_out "$tmp/deploy.yaml[0] Deployment prod/web (CREATE)"
expect_out "  (no changes)"
expect_out "  decision: allowed"

# Multi-document: empty documents are skipped but counted; --namespace fills in.
run -f "$tmp/multi.yaml" --namespace team-a
expect_rc 0 "multi.yaml"
expect_out "$tmp/multi.yaml[0] Pod team-a/single (CREATE)"
expect_out "$tmp/multi.yaml[2] StatefulSet data/db (CREATE)"
[[ $(grep -c "decision: allowed" <<<"$out") == 2 ]] || fail "expected 2 decisions:"$'\n'"$out"

# A List expands into its items, which keep the List's document index; several -f files.
run -f "$tmp/list.yaml" -f "$tmp/deploy.yaml" --operation UPDATE
expect_rc 0 "list.yaml"
expect_out "$tmp/list.yaml[0] Job default/once (UPDATE)"
expect_out "$tmp/list.yaml[0] CronJob ops/nightly (UPDATE)"
expect_out "$tmp/deploy.yaml[0] Deployment prod/web (UPDATE)"

# stdin and DELETE.
rc=0
"$bin" review -f - --operation DELETE <"$tmp/deploy.yaml" >"$tmp/out" 2>"$tmp/err" || rc=$?
out=$(cat "$tmp/out") err=$(cat "$tmp/err")
expect_rc 0 "stdin"
expect_out "-[0] Deployment prod/web (DELETE)"

# Saved AdmissionReviews are used as they are (operation, user, namespace from the review).
reviews=("$src"/tests/fixtures/admission-apiserver-1.28/*.json)
((${#reviews[@]} > 0)) || fail "no AdmissionReview fixtures in tests/fixtures/admission"
run -f "$src/tests/fixtures/admission-apiserver-1.28/deployment-create.json" --operation DELETE
expect_rc 0 "deployment-create.json"
expect_out "deployment-create.json[0] Deployment webhook-test/demo (CREATE)"
expect_out "  decision: allowed"
run -f "$src/tests/fixtures/admission-apiserver-1.28/scale-update.json"
expect_rc 0 "scale-update.json"
expect_out "scale-update.json[0] Scale "
expect_out "(UPDATE)"

# --output json: one object per document with the documented fields.
run -f "$tmp/multi.yaml" -f "$tmp/list.yaml" -f "$src/tests/fixtures/admission-apiserver-1.28/deployment-create.json" --output json
expect_rc 0 "--output json"
valid_json
python3 - "$tmp/out" <<'EOF' || fail "--output json fields"
import json, sys
results = json.load(open(sys.argv[1]))
assert isinstance(results, list) and len(results) == 5, results
fields = {"source", "index", "kind", "namespace", "name", "operation", "allowed", "patch", "changes",
          "warnings", "status", "auditAnnotations"}
for r in results:
    assert fields <= set(r), sorted(fields - set(r))
    assert r["allowed"] is True and r["status"] is None and r["patch"] is None, r
    assert r["changes"] == [] and r["warnings"] == [] and r["auditAnnotations"] == {}, r
assert [(r["index"], r["kind"], r["namespace"], r["name"]) for r in results[:4]] == [
    (0, "Pod", "default", "single"), (2, "StatefulSet", "data", "db"),
    (0, "Job", "default", "once"), (0, "CronJob", "ops", "nightly")], results
assert results[0]["operation"] == "CREATE"
assert results[4]["kind"] == "Deployment" and results[4]["source"].endswith("deployment-create.json")
EOF

# Bad YAML in the second document: exit 2, stderr names file, document and line.
printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: a: b\n' >"$tmp/bad.yaml"
run -f "$tmp/deploy.yaml" -f "$tmp/bad.yaml"
expect_rc 2 "bad.yaml"
expect_err "sizeguard review: $tmp/bad.yaml[1]: line 8"
[[ -z $out ]] || fail "bad input must print no results:"$'\n'"$out"

# Not a Kubernetes object.
printf 'apiVersion: v1\nkind: Pod\n---\napiVersion: v1\nmetadata: {name: x}\n' >"$tmp/nokind.yaml"
run -f "$tmp/nokind.yaml"
expect_rc 2 "nokind.yaml"
expect_err "$tmp/nokind.yaml[1]: not a Kubernetes object: missing kind"

# A broken AdmissionReview.
printf '{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}\n' >"$tmp/review.json"
run -f "$tmp/review.json"
expect_rc 2 "review.json"
expect_err "$tmp/review.json[0]: bad AdmissionReview"

# Missing file.
run -f "$tmp/does-not-exist.yaml"
expect_rc 2 "missing file"
expect_err "$tmp/does-not-exist.yaml"

# No objects at all.
printf '# nothing\n' >"$tmp/empty.yaml"
run -f "$tmp/empty.yaml"
expect_rc 2 "empty.yaml"
printf 'apiVersion: v1\nkind: List\nitems: []\n' >"$tmp/empty-list.yaml"
run -f "$tmp/empty-list.yaml"
expect_rc 2 "empty-list.yaml"
expect_err "no Kubernetes objects in $tmp/empty-list.yaml"

# Cluster-scoped kinds get no namespace, built-in ones beyond the common few too.
cat >"$tmp/cluster.yaml" <<'EOF'
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: p}
---
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: c}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: m}
EOF
run -f "$tmp/cluster.yaml" --output json
expect_rc 0 "cluster.yaml"
python3 -c 'import json,sys; r=json.load(sys.stdin); assert [x["namespace"] for x in r] == ["", "", "default"], r' <<<"$out" \
  || fail "cluster-scoped kinds were given a namespace: $out"

# Control characters in names and values are escaped in the text output.
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: "a\\e[31mred\\0nul"}\n' >"$tmp/esc.yaml"
run -f "$tmp/esc.yaml"
expect_rc 0 "esc.yaml"
! LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' "$tmp/out" || fail "raw control characters in review output"
python3 -c 'import sys; sys.exit(b"\0" in open(sys.argv[1], "rb").read())' "$tmp/out" || fail "raw NUL in review output"
expect_out 'ConfigMap default/a\u001b[31mred\u0000nul (CREATE)'

# -f is required.
run
[[ $rc != 0 ]] || fail "review without -f must fail"

echo "review_cli: ok"
