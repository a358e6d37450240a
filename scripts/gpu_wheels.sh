#!/usr/bin/env bash
# Prepare what scripts/gpu_check.sh needs on an offline CUDA machine (Python 3.12, torch and
# transformers already installed there). Run here, where PyPI is reachable, from any folder:
#
#   bash scripts/gpu_wheels.sh [--with-mediapipe] [--no-data]
#
# .gpu_wheels/  cp312 manylinux x86_64 wheels (--no-deps each) of the engine's dependencies that
#               that image lacks (torch is never downloaded). The image's own numpy, scipy,
#               transformers, huggingface-hub, safetensors, pillow, matplotlib, rich,
#               threadpoolctl, opencv-python-headless, absl-py, attrs and flatbuffers are reused.
# .gpu_data/    pair 1 of faust5k (its two meshes and ground truth, about 1 MB) copied from
#               ../shared/data for the size sweep; git-ignored, never committed (academic-use data).
#
# --with-mediapipe adds mediapipe==0.10.14 (~34 MiB) and protobuf 4.25.9 (mediapipe needs < 5):
# the folder then grows to ~65 MiB, over what one transfer of 64 MiB in all can carry beside
# the rest, so it is off by default (the GPU check does not need the pose model).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.gpu_wheels"
DATA_DEST="$ROOT/.gpu_data"
DATA_SRC="${STABLEWRAP_BENCH_DATA:-$ROOT/../shared/data}"
PY="${PYTHON:-python3}"
WITH_MEDIAPIPE=0
WITH_DATA=1
for arg in "$@"; do
    case "$arg" in
        --with-mediapipe) WITH_MEDIAPIPE=1 ;;
        --no-data) WITH_DATA=0 ;;
        -h | --help)
            sed -n '2,17p' "$0"
            exit 0
            ;;
        *)
            echo "usage: bash scripts/gpu_wheels.sh [--with-mediapipe] [--no-data]" >&2
            exit 2
            ;;
    esac
done

# The versions the engine is developed and tested with (pyproject.toml's ranges allow them).
# diffusers 0.42.1 needs huggingface-hub >= 1.32 and safetensors >= 0.8 (the image has 1.33 / 0.8);
# its other needs (filelock, regex, requests, pillow, numpy) are in the image, and it imports
# importlib_metadata only on Python < 3.8. diffrp-nvdiffrast is the [cuda] extra: pure Python,
# compiled on first use with the image's nvcc and ninja.
PACKAGES=(
    "trimesh==5.2.0"
    "libigl==2.6.3"
    "cholespy==2.2.0"
    "potpourri3d==1.4.0"
    "robust-laplacian==1.1.0"
    "fast-simplification==0.2.0"
    "pykdtree==1.4.3"
    "qdldl==0.1.9.post1"
    "diffusers==0.42.1"
    "diffrp-nvdiffrast==0.3.3.1"
)
if [ "$WITH_MEDIAPIPE" = 1 ]; then
    PACKAGES+=("mediapipe==0.10.14" "protobuf==4.25.9")
fi

PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done

mkdir -p "$DEST"
rm -f "$DEST"/*.whl
for spec in "${PACKAGES[@]}"; do
    echo "downloading $spec" >&2
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$spec"
done
if compgen -G "$DEST/torch-*.whl" >/dev/null; then
    echo "error: a torch wheel landed in $DEST; the device's own torch must be used" >&2
    exit 1
fi

if [ "$WITH_DATA" = 1 ]; then
    src="$DATA_SRC/faust5k"
    if [ -f "$src/pairs.txt" ]; then
        rm -rf "$DATA_DEST"
        mkdir -p "$DATA_DEST/faust5k/corres"
        read -r a b _ < <(grep -v '^[[:space:]]*\(#\|$\)' "$src/pairs.txt" | head -n 1)
        printf '%s\t%s\n' "$a" "$b" >"$DATA_DEST/faust5k/pairs.txt"
        for name in "$a" "$b"; do
            cp "$src/$name.off" "$DATA_DEST/faust5k/"
            cp "$src/corres/$name".*vts "$DATA_DEST/faust5k/corres/"  # NAME.vts and NAME.sym.vts
        done
        echo "staged faust5k pair 1 ($a -> $b) in $DATA_DEST" >&2
    else
        echo "warning: $src/pairs.txt not found; no data staged (the size sweep will be skipped)" >&2
    fi
fi

echo
for w in "$DEST"/*.whl; do
    awk -v b="$(stat -c %s "$w")" -v n="${w##*/}" 'BEGIN { printf "%10.2f MiB  %s\n", b / 1048576, n }'
done
total=$(du -cb "$DEST"/*.whl | tail -n 1 | cut -f1)
data=0
[ -d "$DATA_DEST" ] && data=$(du -sb "$DATA_DEST" | cut -f1)
awk -v t="$total" -v d="$data" 'BEGIN { printf "total: %.1f MiB of wheels, %.1f MiB of data\n", t / 1048576, d / 1048576 }'
if [ "$((total + data))" -gt $((60 * 1048576)) ]; then
    echo "warning: over 60 MiB: with the repository itself this may exceed the 64 MiB one transfer carries" >&2
fi
