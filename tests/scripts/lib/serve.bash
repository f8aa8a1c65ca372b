# shellcheck shell=bash disable=SC2034  # work, pid, port and metrics_port are the sourcing script's
# Shared by the script tests that start `sizeguard serve` on free ports (127.0.0.1:0).
# Sourcing it sets up what they all need: a work folder `work`, removed on exit together with
# the server whose pid the script keeps in `pid`, and `fail MESSAGE`, which also prints the end
# of WORK/server.log.
work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [[ -f $work/server.log ]] && tail -20 "$work/server.log" >&2; exit 1; }

# wait_for_ports LOG PID: waits for serve's "listening" line in LOG, then sets `port` and
# `metrics_port` from it; calls the script's `fail` if PID exits first or no line appears.
wait_for_ports() {
  local log=$1 pid=$2
  for _ in $(seq 1 100); do
    grep -q 'webhook_port=' "$log" && break
    kill -0 "$pid" 2>/dev/null || fail "serve exited"
    sleep 0.1
  done
  port=$(grep -o 'webhook_port=[0-9]*' "$log" | head -1 | cut -d= -f2)
  metrics_port=$(grep -o 'metrics_port=[0-9]*' "$log" | head -1 | cut -d= -f2)
  [[ -n $port && -n $metrics_port ]] || fail "no listening line in $log"
}
