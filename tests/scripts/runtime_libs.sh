#!/usr/bin/env bash
# The Dockerfile's runtime stage must install every shared library the sizeguard binary
# needs: each library `ldd` reports must belong to a package the runtime stage installs or
# to one debian:bookworm-slim already has. (No Docker engine runs here, so this is the check.)
set -euo pipefail
src=${SIZEGUARD_SOURCE_DIR:?} bin=${SIZEGUARD_BINARY:?}
fail() { echo "FAIL: $*" >&2; exit 1; }

# Packages named in the runtime stage's apt-get install (the block after "AS runtime").
runtime_pkgs=$(awk '/AS runtime/{r=1} r && /apt-get install/{i=1} i{print} i && !/\\$/{i=0}' "$src/deploy/Dockerfile" \
  | tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vE '^(apt-get|install|rm|rf|y)$' || true)
[[ -n $runtime_pkgs ]] || fail "no runtime packages found in deploy/Dockerfile"
base_pkgs="libc6 libstdc++6 libgcc-s1 libzstd1 liblzma5 zlib1g libselinux1 libpcre2-8-0"

missing=0
while read -r lib path; do
  [[ -z $path || $path == "not" ]] && fail "ldd cannot resolve $lib"
  # A sanitizer build (tests/run.sh --sanitize) links the sanitizer runtimes; the image
  # ships a Release build, which does not.
  [[ $lib == libasan.so* || $lib == libubsan.so* || $lib == libtsan.so* ]] && continue
  real=$(readlink -f "$path")
  pkg=$(dpkg -S "$real" 2>/dev/null | head -1 | cut -d: -f1) || true
  [[ -z $pkg ]] && pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1) || true
  [[ -z $pkg ]] && { echo "no package owns $path"; missing=1; continue; }
  if ! grep -qx "$pkg" <<<"$runtime_pkgs" && ! grep -qw -- "$pkg" <<<"$base_pkgs"; then
    echo "missing from the Dockerfile runtime stage: $pkg (for $lib)"; missing=1
  fi
done < <(ldd "$bin" | awk '/=>/ {print $1, $3}')
((missing == 0)) || fail "deploy/Dockerfile runtime stage lacks packages the binary needs"
echo "runtime_libs: every library of $(basename "$bin") is provided ($(ldd "$bin" | grep -c '=>') checked)"
