#!/usr/bin/env bash
# Installs sizeguard's TLS material into a cluster, with kubectl only:
#   1. certificates from certs/make-certs.sh in --dir (made there first if absent);
#   2. the Secret sizeguard-tls (tls.crt, tls.key, ca.crt) in --namespace, created or updated
#      (sizeguard reloads the mounted files by itself, no restart);
#   3. the CA bundle (ca-bundle.b64) patched into caBundle of every webhook of the
#      MutatingWebhookConfiguration and ValidatingWebhookConfiguration `sizeguard`.
#
#   certs/install.sh [--namespace sizeguard-system] [--dir certs/out] [--service sizeguard]
#                    [--webhook-config sizeguard] [--no-webhooks | --webhooks-only] [--dry-run]
#
# --no-webhooks: steps 1-2 only (before `kubectl apply -k`, so the pods can start);
# --webhooks-only: step 3 only (after the webhook configurations exist);
# --dry-run: print the kubectl commands instead of running them (certificates are still
#   made locally when absent; the webhook count is then assumed to be 1 per configuration).
# --out is accepted as another name for --dir. KUBECTL overrides the kubectl binary.
# Rotating the CA: certs/make-certs.sh --rotate-ca, run this, roll out, then
# certs/make-certs.sh --drop-previous-ca and run this again (docs/install.md "2. Certificates").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
namespace=sizeguard-system dir=certs/out service=sizeguard config=sizeguard secret=sizeguard-tls
dry_run=0 do_secret=1 do_webhooks=1
kubectl=${KUBECTL:-kubectl}
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case $1 in
    --namespace|-n) namespace=${2:?--namespace needs a value}; shift 2 ;;
    --namespace=*) namespace=${1#*=}; shift ;;
    --dir|--out) dir=${2:?$1 needs a value}; shift 2 ;;
    --dir=*|--out=*) dir=${1#*=}; shift ;;
    --service) service=${2:?--service needs a value}; shift 2 ;;
    --webhook-config) config=${2:?--webhook-config needs a value}; shift 2 ;;
    --no-webhooks) do_webhooks=0; shift ;;
    --webhooks-only) do_secret=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install: unknown argument '$1'" >&2; usage 2 >&2 ;;
  esac
done
((do_secret || do_webhooks)) || { echo "install: --no-webhooks and --webhooks-only together do nothing" >&2; exit 2; }
[[ $namespace =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || { echo "install: --namespace '$namespace' is not a DNS-1123 label" >&2; exit 2; }

# A command line as it can be pasted into a shell: plain words as they are, others in '...'.
shell_words() {
  local word out=""
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./=:,@%+-]+$ ]]; then out+="$word "; else out+="'${word//\'/\'\\\'\'}' "; fi
  done
  echo "${out% }"
}
# Prints a command or runs it.
run() { if ((dry_run)); then shell_words "$@"; else "$@"; fi; }

# 1. Certificates.
if [[ ! -s $dir/tls.crt || ! -s $dir/tls.key || ! -s $dir/ca-bundle.crt || ! -s $dir/ca-bundle.b64 ]]; then
  echo "install: no certificates in $dir, making them (certs/make-certs.sh)" >&2
  "$here/make-certs.sh" --service "$service" --namespace "$namespace" --out "$dir" >&2
fi
bundle=$(tr -d '\n' < "$dir/ca-bundle.b64")
[[ -n $bundle ]] || { echo "install: $dir/ca-bundle.b64 is empty" >&2; exit 1; }

# 2. The Secret: rendered client-side, then applied, so it is created or updated alike.
if ((do_secret)); then
  if ((!dry_run)) && ! "$kubectl" get namespace "$namespace" >/dev/null 2>&1; then
    echo "install: namespace $namespace does not exist; create it first: kubectl apply -f deploy/base/namespace.yaml" >&2
    exit 1
  fi
  create=("$kubectl" -n "$namespace" create secret generic "$secret" --type=kubernetes.io/tls
          "--from-file=tls.crt=$dir/tls.crt" "--from-file=tls.key=$dir/tls.key" "--from-file=ca.crt=$dir/ca-bundle.crt"
          --dry-run=client -o yaml)
  apply=("$kubectl" -n "$namespace" apply -f -)
  if ((dry_run)); then
    echo "$(shell_words "${create[@]}") | $(shell_words "${apply[@]}")"
  else
    "${create[@]}" | "${apply[@]}"
  fi
fi

# 3. caBundle into every webhook of both configurations (JSON patch "add" sets or replaces).
if ((do_webhooks)); then
  for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
    if ((dry_run)); then
      count=1
    else
      names=$("$kubectl" get "$kind" "$config" -o jsonpath='{range .webhooks[*]}{.name}{"\n"}{end}') || {
        echo "install: $kind/$config not found; apply the manifests first (kubectl apply -k deploy/base)" >&2
        exit 1
      }
      count=$(grep -c . <<<"$names" || true)
      ((count > 0)) || { echo "install: $kind/$config has no webhooks" >&2; exit 1; }
    fi
    patch="["
    for ((i = 0; i < count; i++)); do
      ((i)) && patch+=","
      patch+="{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$bundle\"}"
    done
    patch+="]"
    run "$kubectl" patch "$kind" "$config" --type=json -p "$patch"
  done
fi
((dry_run)) || echo "install: TLS Secret $namespace/$secret and caBundle of $config are up to date" >&2
