#!/usr/bin/env bash
# certs/make-certs.sh: SANs, chain, CA kept on re-run, rotation keeps both CAs in the bundle.
set -euo pipefail
src=${SIZEGUARD_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
fp() { openssl x509 -in "$1" -noout -fingerprint -sha256; }

"$src/certs/make-certs.sh" --service hook --namespace team-a --out "$out" --dns hook.example.test --ip 127.0.0.1 >/dev/null
openssl verify -CAfile "$out/ca.crt" "$out/tls.crt" >/dev/null || fail "serving cert does not chain to the CA"
san=$(openssl x509 -in "$out/tls.crt" -noout -ext subjectAltName)
for want in hook hook.team-a hook.team-a.svc hook.team-a.svc.cluster.local hook.example.test "IP Address:127.0.0.1"; do
  grep -q "$want" <<<"$san" || fail "SAN $want missing in: $san"
done
openssl x509 -in "$out/tls.crt" -noout -ext extendedKeyUsage | grep -q "TLS Web Server Authentication" || fail "no serverAuth EKU"
openssl x509 -in "$out/tls.crt" -noout -checkend $((300 * 86400)) >/dev/null || fail "serving cert expires too soon"
[[ $(stat -c %a "$out/tls.key") == 600 ]] || fail "tls.key is not 0600"
diff <(base64 -d "$out/ca-bundle.b64") "$out/ca.crt" >/dev/null || fail "caBundle is not the CA"
# The key matches the certificate.
[[ $(openssl pkey -in "$out/tls.key" -pubout) == $(openssl x509 -in "$out/tls.crt" -noout -pubkey) ]] || fail "key/cert mismatch"

ca1=$(fp "$out/ca.crt"); leaf1=$(fp "$out/tls.crt")
"$src/certs/make-certs.sh" --service hook --namespace team-a --out "$out" >/dev/null
[[ $(fp "$out/ca.crt") == "$ca1" ]] || fail "re-run replaced the CA"
[[ $(fp "$out/tls.crt") != "$leaf1" ]] || fail "re-run did not re-issue the serving cert"

"$src/certs/make-certs.sh" --service hook --namespace team-a --out "$out" --rotate-ca >/dev/null
[[ $(fp "$out/ca.crt") != "$ca1" ]] || fail "--rotate-ca kept the CA"
openssl verify -CAfile "$out/ca.crt" "$out/tls.crt" >/dev/null || fail "new serving cert not from the new CA"
[[ $(grep -c "BEGIN CERTIFICATE" "$out/ca-bundle.crt") == 2 ]] || fail "bundle should hold new and previous CA during rotation"
"$src/certs/make-certs.sh" --service hook --namespace team-a --out "$out" --drop-previous-ca >/dev/null
[[ $(grep -c "BEGIN CERTIFICATE" "$out/ca-bundle.crt") == 1 ]] || fail "--drop-previous-ca left the old CA in the bundle"

if "$src/certs/make-certs.sh" --service Bad_Name --out "$out" 2>/dev/null; then fail "accepted an invalid service name"; fi
echo "make_certs: all checks passed"
