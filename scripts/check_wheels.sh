#!/usr/bin/env bash
# Does the engine wheel with its [keypoints] extra resolve to binary wheels for a Python and
# platform this machine is not? (Blender 5.1+ embeds CPython 3.13; artists run Windows and macOS.)
#   scripts/check_wheels.sh [PYTHON_VERSION]        default 3.13; needs PyPI
# Builds the engine wheel, reads its dependencies (all but torch: pip evaluates torch's
# Linux-only CUDA markers against this machine, whatever --platform says; torch 2.13.0 publishes
# cp313 wheels for every platform here), and pip-downloads them with --only-binary for Linux
# x86-64, Windows x86-64 and macOS arm64. Prints one line per platform.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${ROOT}/.venv/bin/python"
VERSION="${1:-3.13}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip wheel --no-deps -q -w "$WORK/wheel" "$ROOT"
"$PY" - "$WORK/wheel" >"$WORK/requirements.txt" <<'EOF'
import glob, re, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
z = zipfile.ZipFile(wheel)
meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
for line in z.read(meta).decode().splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req = line.split(":", 1)[1].strip()
    if re.split(r"[ ;<>=!\[]", req)[0] == "torch":
        continue
    if "extra ==" in req and 'extra == "keypoints"' not in req:
        continue
    req = re.sub(r'\s*and\s*extra == "keypoints"|;\s*extra == "keypoints"', "", req)
    print(req)
EOF
status=0
for platform in "manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64" win_amd64 macosx_14_0_arm64; do
    args=()
    for p in $platform; do args+=(--platform "$p"); done
    dest="$WORK/${platform%% *}"
    if "$PY" -m pip download -q --only-binary=:all: --python-version "$VERSION" --implementation cp "${args[@]}" \
        -d "$dest" -r "$WORK/requirements.txt" >"$WORK/log" 2>&1; then
        echo "cp${VERSION/./} ${platform%% *}: ok, $(ls "$dest" | grep -c '\.whl$') wheels"
    else
        echo "cp${VERSION/./} ${platform%% *}: FAILED: $(grep -m1 ERROR "$WORK/log" || tail -1 "$WORK/log")"
        status=1
    fi
done
exit $status
