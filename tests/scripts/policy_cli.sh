#!/usr/bin/env bash
# `sizeguard policy lint` and `sizeguard review --policies` as a user runs them: exit codes,
# positioned errors, a real denial of a real apiserver fixture, and the JSON answer.
set -euo pipefail
bin=${SIZEGUARD_BINARY:?}
src=${SIZEGUARD_SOURCE_DIR:?}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Lint: the shipped examples are clean; a broken file gives every error with its position.
"$bin" policy lint "$src/policies/examples" > "$work/lint.out" || fail "examples do not lint: $(cat "$work/lint.out")"
grep -q '^ok: [0-9]* policies in [0-9]* files$' "$work/lint.out" || fail "lint summary: $(cat "$work/lint.out")"
cat > "$work/prod.yaml" <<'YAML'
apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: fine}
spec: {replicas: {min: 1}}
---
apiVersion: sizeguard.io/v1
kind: Policy
metadata: {name: broken}
spec:
  replicas:
    min: two
  surprise: true
YAML
set +e
"$bin" policy lint "$work/prod.yaml" > "$work/lint.out"; code=$?
set -e
[[ $code == 1 ]] || fail "lint of a broken file exited $code"
grep -qF 'prod.yaml[1] spec.replicas.min: expected a non-negative integer, got "two"' "$work/lint.out" || fail "$(cat "$work/lint.out")"
grep -qF 'prod.yaml[1] spec.surprise: unknown field' "$work/lint.out" || fail "$(cat "$work/lint.out")"

# Review with the example policies: the Deployment without requests is denied (exit 1).
set +e
"$bin" review -f "$src/tests/fixtures/admission-apiserver-1.28/deployment-create.json" --policies "$src/policies/examples" \
  --cluster-state "$src/deploy/quickstart/cluster-state.yaml" > "$work/review.out"; code=$?
set -e
[[ $code == 1 ]] || fail "review of a violating Deployment exited $code: $(cat "$work/review.out")"
grep -qF 'decision: DENIED (403 Forbidden)' "$work/review.out" || fail "$(cat "$work/review.out")"
grep -qF 'spec.template.spec.containers[0].resources.requests.cpu: MissingRequest' "$work/review.out" || fail "$(cat "$work/review.out")"

# JSON output carries the causes; the scale fixture (3 replicas, floor 2) is allowed.
set +e
"$bin" review -f "$src/tests/fixtures/admission-apiserver-1.28/deployment-create.json" -f "$src/tests/fixtures/admission-apiserver-1.28/scale-update.json" \
  --policies "$src/policies/examples" --cluster-state "$src/deploy/quickstart/cluster-state.yaml" --output json > "$work/review.json"
set -e
python3 - "$work/review.json" <<'PY' || fail "json output"
import json, sys
docs = json.load(open(sys.argv[1]))
assert len(docs) == 2, docs
assert docs[0]["allowed"] is False
assert docs[0]["status"]["details"]["causes"][0]["reason"] == "MissingRequest", docs[0]["status"]
assert docs[1]["allowed"] is True, docs[1]
PY

# The quickstart's audit-only step: a Pod the ReplicaSet controller makes, in a namespace
# labelled sizeguard.io/mode=audit, is left as written and review still says what right-sizing
# would do (serve leaves such warnings to the annotation; review is read by a person).
sed 's/environment: production/environment: production\n    sizeguard.io\/mode: audit/' \
  "$src/deploy/quickstart/cluster-state.yaml" > "$work/cluster-audit.yaml"
"$bin" review -f "$src/tests/fixtures/admission-apiserver-1.28/pod-create-from-replicaset.json" \
  --policies "$src/policies/examples" --cluster-state "$work/cluster-audit.yaml" \
  --model "$src/recommender/models/default" > "$work/audit.out" || fail "audit-mode review: $(cat "$work/audit.out")"
grep -qF '(no changes)' "$work/audit.out" || fail "audit mode changed the Pod: $(cat "$work/audit.out")"
grep -qF 'sizeguard: [audit, not applied] container app: cpu request none' "$work/audit.out" \
  || fail "audit mode reported nothing: $(cat "$work/audit.out")"

# A policy directory that does not load is bad input for review (exit 2), naming the error.
set +e
"$bin" review -f "$src/tests/fixtures/admission-apiserver-1.28/deployment-create.json" --policies "$work/prod.yaml" 2> "$work/err.out" >/dev/null; code=$?
set -e
[[ $code == 2 ]] || fail "review with broken policies exited $code"
grep -qF 'spec.replicas.min' "$work/err.out" || fail "$(cat "$work/err.out")"
# Control characters from a file are escaped, never sent raw to the terminal.
printf 'apiVersion: sizeguard.io/v1\nkind: Policy\nmetadata: {name: esc}\nspec:\n  mode: "\\e]0;owned\\a\\e[2J\\x9b31m"\n  replicas: {min: 1}\n' > "$work/esc.yaml"
set +e
"$bin" policy lint "$work/esc.yaml" > "$work/lint.out"; code=$?
set -e
[[ $code == 1 ]] || fail "lint of esc.yaml exited $code"
! LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' "$work/lint.out" || fail "raw control characters in lint output: $(od -c "$work/lint.out" | head)"
! grep -q $'\xc2\x9b' "$work/lint.out" || fail "raw C1 control in lint output"
grep -qF 'got "\u001b]0;owned\u0007\u001b[2J\u009b31m"' "$work/lint.out" || fail "escapes missing: $(cat "$work/lint.out")"
echo "policy_cli: ok"
