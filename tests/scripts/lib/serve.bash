# shellcheck shell=bash disable=SC2034  # port and metrics_port are read by the sourcing script
# Shared by the script tests that start `sizeguard serve` on free ports (127.0.0.1:0).
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
