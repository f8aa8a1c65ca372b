#!/usr/bin/env bash
# Makes a CA and a serving certificate for the sizeguard webhook Service, with OpenSSL only.
#
#   certs/make-certs.sh [--service sizeguard] [--namespace sizeguard-system] [--out certs/out]
#                       [--dns NAME]... [--ip ADDR]... [--days 365] [--ca-days 3650]
#                       [--rotate-ca] [--drop-previous-ca]
#
# Writes to --out: ca.key ca.crt (kept across runs), tls.key tls.crt (re-issued every run),
# ca-bundle.crt (the CAs the apiserver should trust) and ca-bundle.b64 (one line, for
# `caBundle:` in webhook configurations).
# --rotate-ca makes a new CA and keeps the old one in ca-bundle.* until --drop-previous-ca,
# so webhook configurations can trust both while the serving cert changes over.
set -euo pipefail

service=sizeguard namespace=sizeguard-system out=certs/out days=365 ca_days=3650
rotate_ca=0 drop_previous=0
extra_dns=() extra_ips=()
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case $1 in
    --service) service=$2; shift 2 ;;
    --namespace) namespace=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --dns) extra_dns+=("$2"); shift 2 ;;
    --ip) extra_ips+=("$2"); shift 2 ;;
    --days) days=$2; shift 2 ;;
    --ca-days) ca_days=$2; shift 2 ;;
    --rotate-ca) rotate_ca=1; shift ;;
    --drop-previous-ca) drop_previous=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "make-certs: unknown argument '$1'" >&2; usage 2 >&2 ;;
  esac
done
[[ $service =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || { echo "make-certs: --service '$service' is not a DNS-1035 label" >&2; exit 2; }
[[ $namespace =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || { echo "make-certs: --namespace '$namespace' is not a DNS-1123 label" >&2; exit 2; }
[[ $days =~ ^[0-9]+$ && $ca_days =~ ^[0-9]+$ ]] || { echo "make-certs: --days and --ca-days take whole numbers" >&2; exit 2; }

command -v openssl >/dev/null || { echo "make-certs: openssl is not installed" >&2; exit 1; }
mkdir -p "$out"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ECDSA P-256: small, fast handshakes, accepted by every supported apiserver.
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [[ $rotate_ca == 1 && -f $out/ca.crt ]]; then
  cp "$out/ca.crt" "$out/ca.previous.crt"
  rm -f "$out/ca.key" "$out/ca.crt"
  echo "make-certs: rotating the CA; the previous CA stays in ca-bundle until --drop-previous-ca"
fi
if [[ $drop_previous == 1 ]]; then rm -f "$out/ca.previous.crt"; fi

if [[ ! -f $out/ca.key || ! -f $out/ca.crt ]]; then
  new_key "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$ca_days" \
    -subj "/CN=sizeguard-webhook-ca ($namespace)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.crt" 2>/dev/null
  echo "make-certs: new CA $out/ca.crt"
else
  echo "make-certs: keeping the existing CA $out/ca.crt"
fi

fqdn="$service.$namespace.svc"
sans="DNS:$service,DNS:$service.$namespace,DNS:$fqdn,DNS:$fqdn.cluster.local"
for d in "${extra_dns[@]}"; do sans+=",DNS:$d"; done
for i in "${extra_ips[@]}"; do sans+=",IP:$i"; done

new_key "$tmp/tls.key"
openssl req -new -key "$tmp/tls.key" -subj "/CN=$fqdn" -out "$tmp/tls.csr" 2>/dev/null
cat > "$tmp/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$sans
EXT
openssl x509 -req -in "$tmp/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -CAserial "$tmp/ca.srl" -sha256 -days "$days" -extfile "$tmp/ext.cnf" -out "$tmp/tls.crt" 2>/dev/null
openssl verify -CAfile "$out/ca.crt" "$tmp/tls.crt" >/dev/null
# Replace key and cert together so a watcher never sees a cert without its key for long.
mv "$tmp/tls.key" "$out/tls.key.new" && mv "$tmp/tls.crt" "$out/tls.crt.new"
mv "$out/tls.key.new" "$out/tls.key" && mv "$out/tls.crt.new" "$out/tls.crt"

cat "$out/ca.crt" > "$out/ca-bundle.crt"
[[ -f $out/ca.previous.crt ]] && cat "$out/ca.previous.crt" >> "$out/ca-bundle.crt"
base64 -w0 "$out/ca-bundle.crt" > "$out/ca-bundle.b64"
chmod 644 "$out/ca.crt" "$out/tls.crt" "$out/ca-bundle.crt" "$out/ca-bundle.b64"

echo "make-certs: serving cert $out/tls.crt for $sans, valid $days days"
echo "make-certs: caBundle in $out/ca-bundle.b64"
