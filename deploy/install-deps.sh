#!/usr/bin/env bash
# Installs the Debian packages sizeguard needs to build, test and run, skipping those
# already present. Usage: deploy/install-deps.sh [build|test|all]   (default: all)
set -euo pipefail
what=${1:-all}

build_pkgs=(build-essential cmake pkg-config libcpp-httplib-dev libssl-dev zlib1g-dev
  nlohmann-json3-dev libsimdjson-dev libxgboost-dev xgboost libspdlog-dev libyaml-cpp-dev libcli11-dev
  libhowardhinnant-date-dev tzdata openssl curl ca-certificates)
test_pkgs=(libgtest-dev googletest libgmock-dev libbenchmark-dev prometheus python3 python3-yaml clang chromium
  libclang-rt-14-dev etcd-server)

pkgs=("${build_pkgs[@]}")
[[ $what == test || $what == all ]] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
