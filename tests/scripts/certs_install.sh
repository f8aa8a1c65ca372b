#!/usr/bin/env bash
# certs/install.sh: --dry-run prints the kubectl commands (Secret create-or-update, caBundle
# JSON patches of both webhook configurations); a run against a fake kubectl sends the same
# commands, patches every webhook of a configuration, and reuses existing certificates.
set -euo pipefail
src=${SIZEGUARD_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
install=$src/certs/install.sh
[[ -x $install ]] || fail "certs/install.sh is missing or not executable"
command -v python3 >/dev/null || fail "python3 is needed to check the JSON patches"

# A fake kubectl: logs one line of arguments (JSON) per call to $FAKE_LOG, answers the reads
# install.sh makes and renders a Secret for `create ... --dry-run=client -o yaml`.
mkdir -p "$work/bin"
cat > "$work/bin/kubectl" <<'FAKE'
#!/usr/bin/env bash
python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$FAKE_LOG"
args=" $* "
case $args in
  *" get namespace "*) [[ ${FAKE_NO_NAMESPACE:-0} == 1 ]] && exit 1; echo "namespace/x" ;;
  *" get mutatingwebhookconfiguration "*) printf 'rightsizing.sizeguard.io\n' ;;
  *" get validatingwebhookconfiguration "*) printf 'guardrails.sizeguard.io\nextra.sizeguard.io\n' ;;
  *" create secret "*) echo "apiVersion: v1"; echo "kind: Secret" ;;
  *" apply -f - "*) cat > "$FAKE_LOG.applied" ;;
  *" patch "*) ;;
  *) echo "fake kubectl: unexpected call: $*" >&2; exit 3 ;;
esac
FAKE
chmod +x "$work/bin/kubectl"
export FAKE_LOG=$work/kubectl.log

# --- --dry-run: generates missing certificates and prints the commands.
certs=$work/certs
"$install" --namespace team-hooks --dir "$certs" --dry-run > "$work/dry.out" 2> "$work/dry.err" \
  || { cat "$work/dry.err" >&2; fail "--dry-run failed"; }
for f in ca.crt ca.key tls.crt tls.key ca-bundle.crt ca-bundle.b64; do
  [[ -s $certs/$f ]] || fail "--dry-run did not make $f in --dir"
done
grep -q "making them" "$work/dry.err" || fail "no note that the certificates were made"
openssl x509 -in "$certs/tls.crt" -noout -ext subjectAltName | grep -q "sizeguard.team-hooks.svc" \
  || fail "certificate not made for the --namespace Service name"
[[ $(wc -l < "$work/dry.out") == 3 ]] || { cat "$work/dry.out"; fail "expected 3 commands (secret, 2 patches)"; }
secret_line=$(sed -n 1p "$work/dry.out")
want_secret="kubectl -n team-hooks create secret generic sizeguard-tls --type=kubernetes.io/tls --from-file=tls.crt=$certs/tls.crt --from-file=tls.key=$certs/tls.key --from-file=ca.crt=$certs/ca-bundle.crt --dry-run=client -o yaml | kubectl -n team-hooks apply -f -"
[[ $secret_line == "$want_secret" ]] || fail "secret command is
  $secret_line
expected
  $want_secret"
grep -q '^kubectl patch mutatingwebhookconfiguration sizeguard --type=json -p ' "$work/dry.out" || fail "no mutating patch"
grep -q '^kubectl patch validatingwebhookconfiguration sizeguard --type=json -p ' "$work/dry.out" || fail "no validating patch"
bundle=$(tr -d '\n' < "$certs/ca-bundle.b64")
base64 -d <<<"$bundle" | openssl x509 -noout 2>/dev/null || fail "ca-bundle.b64 is not a base64 certificate"

# The printed commands are valid shell: run them against the fake kubectl.
: > "$FAKE_LOG"
PATH=$work/bin:$PATH bash -euo pipefail "$work/dry.out" || fail "the printed commands do not run"
python3 - "$FAKE_LOG" "$bundle" <<'PY' || fail "printed patches are wrong"
import json, sys
calls = [json.loads(l) for l in open(sys.argv[1])]
patches = [c for c in calls if "patch" in c]
assert [c[1] for c in patches] == ["mutatingwebhookconfiguration", "validatingwebhookconfiguration"], patches
for c in patches:
    assert c[2] == "sizeguard" and "--type=json" in c, c
    ops = json.loads(c[c.index("-p") + 1])
    assert ops == [{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": sys.argv[2]}], ops
PY
grep -q "kind: Secret" "$FAKE_LOG.applied" || fail "the Secret was not piped into kubectl apply"

# --- re-running keeps existing certificates (no new CA, no new serving cert).
fp() { openssl x509 -in "$1" -noout -fingerprint -sha256; }
ca_fp=$(fp "$certs/ca.crt") leaf_fp=$(fp "$certs/tls.crt")
"$install" --namespace team-hooks --out "$certs" --dry-run > "$work/dry2.out" 2> "$work/dry2.err"
[[ $(fp "$certs/ca.crt") == "$ca_fp" && $(fp "$certs/tls.crt") == "$leaf_fp" ]] || fail "existing certificates were replaced"
grep -q "making them" "$work/dry2.err" && fail "made certificates although they existed"
cmp -s "$work/dry.out" "$work/dry2.out" || fail "--out and --dir differ"

# --- the two halves.
"$install" -n team-hooks --dir "$certs" --dry-run --no-webhooks > "$work/half1.out" 2>/dev/null
[[ $(wc -l < "$work/half1.out") == 1 ]] && grep -q "create secret generic sizeguard-tls" "$work/half1.out" \
  || fail "--no-webhooks should print only the Secret command"
"$install" -n team-hooks --dir "$certs" --dry-run --webhooks-only > "$work/half2.out" 2>/dev/null
[[ $(wc -l < "$work/half2.out") == 2 ]] && ! grep -q secret "$work/half2.out" \
  || fail "--webhooks-only should print only the two patches"

# --- a real run against the fake kubectl: every webhook of a configuration is patched.
: > "$FAKE_LOG"
KUBECTL=$work/bin/kubectl "$install" --namespace team-hooks --dir "$certs" > "$work/real.out" 2> "$work/real.err" \
  || { cat "$work/real.err" >&2; fail "real run failed"; }
python3 - "$FAKE_LOG" "$bundle" <<'PY' || fail "real run sent the wrong commands"
import json, sys
calls = [json.loads(l) for l in open(sys.argv[1])]
verbs = [next(a for a in c if a in ("get", "create", "apply", "patch")) for c in calls]
# create | apply run as one pipeline: either may log first.
assert verbs[0] == "get" and sorted(verbs[1:3]) == ["apply", "create"], verbs
assert verbs[3:] == ["get", "patch", "get", "patch"], verbs
create = calls[1 + verbs[1:3].index("create")]
assert create[:6] == ["-n", "team-hooks", "create", "secret", "generic", "sizeguard-tls"], create
assert "--type=kubernetes.io/tls" in create and "--dry-run=client" in create, create
def ops(call):
    return json.loads(call[call.index("-p") + 1])
m, v = ops(calls[4]), ops(calls[6])
assert [o["path"] for o in m] == ["/webhooks/0/clientConfig/caBundle"], m
assert [o["path"] for o in v] == ["/webhooks/0/clientConfig/caBundle", "/webhooks/1/clientConfig/caBundle"], v
assert all(o["op"] == "add" and o["value"] == sys.argv[2] for o in m + v)
PY

# --- errors.
if FAKE_NO_NAMESPACE=1 KUBECTL=$work/bin/kubectl "$install" -n nowhere --dir "$certs" >/dev/null 2>"$work/err"; then
  fail "a missing namespace was not an error"
fi
grep -q "namespace nowhere does not exist" "$work/err" || fail "missing-namespace message: $(cat "$work/err")"
set +e
"$install" --bogus >/dev/null 2>&1; rc=$?
"$install" --namespace Bad_NS --dry-run --dir "$certs" >/dev/null 2>&1; rc2=$?
set -e
[[ $rc == 2 ]] || fail "unknown argument exit code $rc, want 2"
[[ $rc2 == 2 ]] || fail "invalid namespace exit code $rc2, want 2"

echo "certs_install: all checks passed"
