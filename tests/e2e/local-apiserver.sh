#!/usr/bin/env bash
# End to end against a real, throwaway Kubernetes control plane on loopback:
# etcd + kube-apiserver + kube-controller-manager (v1.28.7 from ../shared/k8s, etcd from Debian's
# etcd-server), then tests/e2e/run.sh --local against it (which serves the built sizeguard with
# the example policies and registers both webhooks by URL + caBundle). Everything runs as a
# child of this script in a temporary LAB folder and is stopped and removed on exit.
#
#   tests/e2e/local-apiserver.sh [run.sh arguments, e.g. --keep]
#
# Environment:
#   SIZEGUARD_K8S_DIR   the control plane folder (bin/kube-apiserver.gz, bin/kube-controller-manager.gz,
#                       gen-certs.sh); default ../shared/k8s beside the checkout
#   SIZEGUARD_BINARY    the sizeguard binary (default build/sizeguard; ctest sets it)
#   ETCD_BIN            etcd (default: etcd on PATH)
#   E2E_ETCD_PORT=12379 E2E_ETCD_PEER_PORT=12380 E2E_APISERVER_PORT=16443 E2E_KCM_PORT=20257
#   E2E_WEBHOOK_PORT=18453   loopback ports, away from the defaults of a developer's cluster and of
#                       deploy/quickstart.sh; a default that is taken is replaced by a free port,
#                       a port set here that is taken fails the run
#   E2E_KEEP_LAB=1      keep the LAB folder (logs, pki, kubeconfig) after the run
#   E2E_HOLD=1          at a terminal: keep the control plane up after run.sh until Enter
#   E2E_TIMEOUT=300     seconds for run.sh (then TERM, so it cleans up before ctest's 420 s timeout)
#
# Exit codes: run.sh's (0 all passed, 1 a case failed), 77 when the control plane, etcd, kubectl
# or python3-yaml is missing (printed as "SKIP: ... missing"), 1 when the control plane does not start.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

k8s_dir=${SIZEGUARD_K8S_DIR:-$root/../shared/k8s}
binary=${SIZEGUARD_BINARY:-$root/build/sizeguard}

skip() { echo "SKIP: tests/e2e/local-apiserver.sh: $* missing"; exit 77; }
for f in bin/kube-apiserver.gz bin/kube-controller-manager.gz gen-certs.sh; do
  [[ -f $k8s_dir/$f ]] || skip "the control plane ($k8s_dir/$f; set SIZEGUARD_K8S_DIR)"
done
etcd_bin=${ETCD_BIN:-$(command -v etcd || true)}
[[ -n $etcd_bin && -x $etcd_bin ]] || skip "etcd (apt-get install etcd-server, or set ETCD_BIN)"
command -v kubectl >/dev/null || skip "kubectl"
python3 -c 'import yaml' 2>/dev/null || skip "python3-yaml"
command -v curl >/dev/null || skip "curl"
[[ -x $binary ]] || { echo "local-apiserver: no sizeguard binary at $binary (build it, or set SIZEGUARD_BINARY)" >&2; exit 1; }

# Ports: from the environment (which must be free), else the default, else (the default is
# taken, e.g. by another run on this machine) any free one.
taken=" " etcd_port="" etcd_peer_port="" apiserver_port="" kcm_port="" webhook_port=""
in_use() { [[ $taken == *" $1 "* ]] || (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { # ENV-VAR DEFAULT RESULT-VAR
  local var=$1 p=${!1:-}
  if [[ -n $p ]]; then
    in_use "$p" && { echo "local-apiserver: $var=$p is already in use" >&2; exit 1; }
  else
    p=$2
    while in_use "$p"; do
      p=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    done
  fi
  taken+="$p "
  printf -v "$3" '%s' "$p"
}
pick_port E2E_ETCD_PORT 12379 etcd_port
pick_port E2E_ETCD_PEER_PORT 12380 etcd_peer_port
pick_port E2E_APISERVER_PORT 16443 apiserver_port
pick_port E2E_KCM_PORT 20257 kcm_port
pick_port E2E_WEBHOOK_PORT 18453 webhook_port

# What a run killed with SIGKILL (a ctest timeout) left behind: folders whose owner is gone.
for d in "${TMPDIR:-/tmp}"/sizeguard-e2e-lab.* /dev/shm/sizeguard-e2e-etcd.*; do
  [[ -f $d/owner.pid ]] && ! kill -0 "$(cat "$d/owner.pid")" 2>/dev/null && rm -rf "$d"
done

start_time=$(date +%s)
LAB=$(mktemp -d "${TMPDIR:-/tmp}/sizeguard-e2e-lab.XXXXXX")
echo $$ > "$LAB/owner.pid"
pids=()   # started here, stopped in reverse order
names=()

stop_all() {
  local rc=$?
  trap - EXIT INT TERM
  local i pid
  # sizeguard, if run.sh could not stop it (killed after E2E_TIMEOUT)
  pid=$(cat "$LAB/run/sizeguard.pid" 2>/dev/null || true)
  if [[ -n $pid && $(readlink -f "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$binary")" ]]; then
    echo "local-apiserver: stopping sizeguard (pid $pid) left by run.sh"; kill -KILL "$pid" 2>/dev/null || true
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "local-apiserver: ${names[i]} (pid $pid) did not stop on TERM, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  [[ -n ${shm:-} ]] && rm -rf "$shm"
  # run.sh's "N passed, M failed" closes the output, after the teardown lines
  local summary
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$LAB/e2e.out" 2>/dev/null | tail -n1 || true)
  if [[ ${E2E_KEEP_LAB:-0} == 1 ]]; then echo "local-apiserver: kept $LAB"; else rm -rf "$LAB"; fi
  echo "local-apiserver: control plane stopped after $(($(date +%s) - start_time)) s"
  [[ -n $summary ]] && echo "$summary"
  exit "$rc"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME BIN ARGS...: a child of this script (not detached), so the trap, and a ctest
# timeout that kills the process tree, stop it.
start() {
  local name=$1 bin=$2; shift 2
  "$bin" "$@" > "$LAB/logs/$name.log" 2>&1 < /dev/null &
  pids+=($!) names+=("$name")
}
# wait_for DESC SECONDS PID CMD...: until CMD succeeds; fails early if PID died.
wait_for() {
  local desc=$1 t=$2 pid=$3; shift 3
  local deadline=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "local-apiserver: $desc exited; its log:" >&2; tail -30 "$LAB/logs/$desc.log" >&2; return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "local-apiserver: $desc not ready after $t s; its log:" >&2; tail -30 "$LAB/logs/$desc.log" >&2; return 1
    fi
    sleep 0.5
  done
}

mkdir -p "$LAB/bin" "$LAB/logs" "$LAB/data" "$LAB/run/kcm-certs"
echo "local-apiserver: LAB $LAB; control plane from $k8s_dir; etcd $etcd_bin"
echo "local-apiserver: ports etcd $etcd_port/$etcd_peer_port, apiserver $apiserver_port, controller-manager $kcm_port, webhook $webhook_port"
gzip -dc "$k8s_dir/bin/kube-apiserver.gz" > "$LAB/bin/kube-apiserver" &
gzip -dc "$k8s_dir/bin/kube-controller-manager.gz" > "$LAB/bin/kube-controller-manager"
wait $!
chmod +x "$LAB/bin/kube-apiserver" "$LAB/bin/kube-controller-manager"
cp "$k8s_dir/gen-certs.sh" "$LAB/gen-certs.sh"
export LAB
bash "$LAB/gen-certs.sh" >/dev/null
PKI=$LAB/pki

mk_kubeconfig() { # file user cert key
  kubectl config --kubeconfig="$1" set-cluster lab --server="https://127.0.0.1:$apiserver_port" \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  kubectl config --kubeconfig="$1" set-credentials "$2" --client-certificate="$3" --client-key="$4" \
    --embed-certs=true >/dev/null
  kubectl config --kubeconfig="$1" set-context lab --cluster=lab --user="$2" >/dev/null
  kubectl config --kubeconfig="$1" use-context lab >/dev/null
  chmod 600 "$1"
}
mk_kubeconfig "$LAB/kubeconfig" kubernetes-admin "$PKI/admin.crt" "$PKI/admin.key"
mk_kubeconfig "$LAB/run/kcm.kubeconfig" system:kube-controller-manager "$PKI/kcm.crt" "$PKI/kcm.key"

# etcd's data on tmpfs when there is one: fsync there is free, which keeps a loaded CI machine fast.
shm="" etcd_data=$LAB/data/etcd
if [[ -d /dev/shm && -w /dev/shm ]]; then
  shm=$(mktemp -d /dev/shm/sizeguard-e2e-etcd.XXXXXX); echo $$ > "$shm/owner.pid"; etcd_data=$shm/etcd
fi
start etcd "$etcd_bin" --name lab --data-dir "$etcd_data" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "lab=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state new \
  --logger zap --log-outputs stderr
wait_for etcd 60 "${pids[-1]}" curl -sf --max-time 2 "http://127.0.0.1:$etcd_port/health"

start kube-apiserver "$LAB/bin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$etcd_port" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
  --secure-port="$apiserver_port" --endpoint-reconciler-type=none --service-cluster-ip-range=10.0.0.0/24 \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" --client-ca-file="$PKI/ca.crt" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --authorization-mode=RBAC \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
  --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
  --allow-privileged=true --profiling=false --cert-dir="$LAB/run/apiserver-certs" --v=1
wait_for kube-apiserver 180 "${pids[-1]}" curl -sf --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
  --key "$PKI/admin.key" "https://127.0.0.1:$apiserver_port/readyz"

start kube-controller-manager "$LAB/bin/kube-controller-manager" \
  --kubeconfig="$LAB/run/kcm.kubeconfig" --authentication-kubeconfig="$LAB/run/kcm.kubeconfig" \
  --authorization-kubeconfig="$LAB/run/kcm.kubeconfig" --bind-address=127.0.0.1 --secure-port="$kcm_port" \
  --cert-dir="$LAB/run/kcm-certs" --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --service-cluster-ip-range=10.0.0.0/24 --cluster-name=lab --profiling=false --v=1
wait_for kube-controller-manager 120 "${pids[-1]}" curl -skf --max-time 2 "https://127.0.0.1:$kcm_port/healthz"

export KUBECONFIG=$LAB/kubeconfig
wait_for kube-controller-manager 60 "${pids[-1]}" kubectl -n default get serviceaccount default
echo "local-apiserver: control plane ready in $(($(date +%s) - start_time)) s (apiserver https://127.0.0.1:$apiserver_port)"

# run.sh --local serves $SIZEGUARD_BINARY itself and stops it on exit; its exit code is ours.
# It gets E2E_TIMEOUT seconds, then TERM, so its cleanup runs before a ctest timeout (KILL).
set +e
mkdir -p "$LAB/tmp"   # run.sh's scratch folder too, so a sweep above also finds what a KILL left
SIZEGUARD_BINARY=$binary SIZEGUARD_E2E_PIDFILE=$LAB/run/sizeguard.pid TMPDIR=$LAB/tmp \
  timeout --foreground --signal=TERM --kill-after=20 "${E2E_TIMEOUT:-300}" \
  tests/e2e/run.sh --local "https://127.0.0.1:$webhook_port" "$@" 2>&1 | tee "$LAB/e2e.out"
rc=${PIPESTATUS[0]}
if [[ ${E2E_HOLD:-0} == 1 && -t 0 ]]; then
  echo "local-apiserver: control plane still up: export KUBECONFIG=$KUBECONFIG (logs in $LAB/logs); Enter tears it down"
  read -r _ || true
fi
((rc == 124)) && echo "local-apiserver: tests/e2e/run.sh did not finish within E2E_TIMEOUT=${E2E_TIMEOUT:-300} s"
set -e
exit "$rc"
