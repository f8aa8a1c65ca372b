#!/usr/bin/env bash
# The source folders form layers (issue #20), arrows pointing down only:
#   kube  <  policies, recommender  <  rightsizing  <  webhook  <  webhook/app (the CLI)
# Fails when a source file includes a header from its own layer's sibling or from a layer
# above it, and when the CMake targets disagree: each folder's target must link only targets
# below it, and must reach (directly or through them) every folder its sources include from.
# tests/ is not checked (tests may include anything).
set -euo pipefail
src=${SIZEGUARD_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
command -v python3 >/dev/null || { echo "SKIP: python3 not found"; exit 77; }

python3 - "$src" <<'EOF'
import pathlib, re, sys

root = pathlib.Path(sys.argv[1])
# folder -> (rank, CMake target); a folder may include only from folders of a lower rank.
LAYERS = {
    "kube": (0, "sizeguard_kube"),
    "policies": (1, "sizeguard_policies"),
    "recommender": (1, "sizeguard_recommender"),
    "rightsizing": (2, "sizeguard_rightsizing"),
    "webhook": (3, "sizeguard_webhook"),
    "webhook/app": (4, "sizeguard_app"),
}
TARGET_FOLDER = {target: folder for folder, (_, target) in LAYERS.items()}
errors = []

def folder_of(path):  # "webhook/app/x.h" -> "webhook/app"; None outside the layers
    best = None
    for folder in LAYERS:
        if path == folder or path.startswith(folder + "/"):
            if best is None or len(folder) > len(best):
                best = folder
    return best

# 1. Includes: every quoted include of a layered folder must point down.
uses = {folder: set() for folder in LAYERS}
include = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
for folder in LAYERS:
    for file in sorted((root / folder).glob("*")):
        if file.suffix not in (".h", ".cpp"):
            continue
        rel = file.relative_to(root).as_posix()
        for header in include.findall(file.read_text(errors="replace")):
            to = folder_of(header)
            if to is None or to == folder:
                continue
            if LAYERS[to][0] >= LAYERS[folder][0]:
                errors.append(f"{rel} includes \"{header}\": {folder}/ may not include from {to}/ "
                              f"(layer {LAYERS[folder][0]} -> {LAYERS[to][0]})")
            uses[folder].add(to)
    if not any((root / folder).glob("*.cpp")) and not any((root / folder).glob("*.h")):
        errors.append(f"{folder}/ has no sources: update LAYERS in tests/scripts/layering.sh")

# 2. CMake: each folder's target links only sizeguard_* targets below it.
links = {}
for folder, (rank, target) in LAYERS.items():
    cmake = root / folder / "CMakeLists.txt"
    if not cmake.exists():
        errors.append(f"{folder}/CMakeLists.txt is missing")
        continue
    text = re.sub(r"#[^\n]*", "", cmake.read_text())
    linked = set()
    for m in re.finditer(r"target_link_libraries\(\s*(\S+)([^)]*)\)", text):
        if m.group(1) == target:
            linked |= set(re.findall(r"\bsizeguard_\w+", m.group(2)))
    links[folder] = linked
    if not re.search(r"add_library\(\s*" + target + r"\b", text):
        errors.append(f"{folder}/CMakeLists.txt does not define {target}")
    for other in sorted(linked):
        to = TARGET_FOLDER.get(other)
        if to is None:
            errors.append(f"{folder}/CMakeLists.txt: {target} links unknown target {other}")
        elif LAYERS[to][0] >= rank:
            errors.append(f"{folder}/CMakeLists.txt: {target} links {other}, which is not below it")

def reach(folder, seen=None):
    seen = set() if seen is None else seen
    for other in links.get(folder, ()):
        to = TARGET_FOLDER.get(other)
        if to and to not in seen:
            seen.add(to)
            reach(to, seen)
    return seen

for folder, used in uses.items():
    for to in sorted(used - reach(folder)):
        errors.append(f"{folder}/ includes from {to}/ but {LAYERS[folder][1]} does not link {LAYERS[to][1]}")

if errors:
    print("\n".join("FAIL: " + e for e in errors), file=sys.stderr)
    sys.exit(1)
edges = sum(len(u) for u in uses.values())
print(f"layering: {len(LAYERS)} folders, {edges} folder-to-folder include edges, all pointing down and linked")
EOF
