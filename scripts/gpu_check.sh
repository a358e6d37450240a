#!/usr/bin/env bash
# The engine's GPU checks in one command, for an offline CUDA machine whose python3 already has
# torch (and transformers). Prepare with `bash scripts/gpu_wheels.sh` where PyPI is reachable,
# take .gpu_wheels/ and .gpu_data/ along with the repository, then from the repository root:
#
#   bash scripts/gpu_check.sh
#
# Steps (each under its own timeout, all within GPU_CHECK_BUDGET seconds, default 540; a failing
# step does not stop the later ones; a summary at the end):
#   install          the wheels of .gpu_wheels into /tmp/stablewrap_site (--no-index --no-deps),
#                    put on PYTHONPATH, so the image's torch, numpy and transformers are reused
#   info             torch / CUDA / GPU, the versions of what the engine imports
#   pytest_gpu       python -m pytest -q -m gpu tests/  (gpu-marked tests: test_cuda_paths.py,
#                    nvdiffrast vs torch rasteriser, semantic path in fp16, rendered flow)
#   backbones_cuda   python -m engine.bench.backbones --devices cuda  (defaults: 8 views, 3 repeats)
#   sweep            python -m engine.bench --set faust5k --only 1 --scale 5k,20k,80k,320k: rigid
#                    baseline, geometric_cpu, geometric_gpu ({"features": "geometric", "device": "cuda"})
#   backbones_cpu    the same backbones on the CPU with --views 2 --repeats 1 (seconds per view)
#   pytest_branches  the non-gpu tests of the files whose behaviour depends on CUDA being there
#
# Environment: OUT (logs, default out/gpu_check), PYTHON (default python3), GPU_CHECK_BUDGET,
# GPU_CHECK_WHEELS (default .gpu_wheels), GPU_CHECK_DATA (default .gpu_data, else ../shared/data),
# GPU_CHECK_SKIP_INSTALL=1, GPU_CHECK_DRY=1 (no GPU: cpu in place of cuda, tiny settings; proves
# that every command line parses and runs).
# Six files land in $OUT: setup.log, pytest.log, backbones.log, sweep.log, summary.txt (verdicts and
# the benchmarks' tables) and results.tar.gz (scale.md, scale.png, backbones.md).
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/out/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET:-540}"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/.gpu_wheels}"
DRY="${GPU_CHECK_DRY:-0}"
SITE=/tmp/stablewrap_site
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
START=$SECONDS

if [ -n "${GPU_CHECK_DATA:-}" ]; then
    DATA="$GPU_CHECK_DATA"
elif [ -f "$ROOT/.gpu_data/faust5k/pairs.txt" ]; then
    DATA="$ROOT/.gpu_data"
else
    DATA="$ROOT/../shared/data"
fi

if [ "$DRY" = 1 ]; then
    GPU=cpu
    SCALE=5k
    BB_GPU=(--backbones dino --views 1 --repeats 1)
    BB_CPU=(--backbones dino --views 1 --repeats 1)
else
    GPU=cuda
    SCALE=5k,20k,80k,320k  # the levels of midpoint subdivision (x4 each): 40k / 250k would snap to 80k / 320k
    BB_GPU=()
    BB_CPU=(--views 2 --repeats 1)
fi

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export STABLEWRAP_CACHE="$WORK/cache"
export TORCH_EXTENSIONS_DIR="$WORK/torch_extensions" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"

SUMMARY=()

# step NAME CAP_SECONDS LOG COMMAND...: run under `timeout` for at most CAP seconds and never past
# the budget (15 s kept for the summary); output appended to $OUT/LOG.log; one summary line.
step() {
    local name="$1" cap="$2" log="$OUT/$3.log"
    shift 3
    local left=$((BUDGET - (SECONDS - START) - 15))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 5 ]; then
        SUMMARY+=("$(printf '%-16s SKIPPED (budget of %ss spent)' "$name" "$BUDGET")")
        return 0
    fi
    echo "== $name (timeout ${limit}s): $*" | tee -a "$log"
    local t0=$SECONDS rc lines
    lines=$(wc -l <"$log")
    # through bash -c so that the exported shell functions below run as steps too
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >>"$log" 2>&1
    rc=$?
    local took=$((SECONDS - t0)) verdict
    case "$rc" in
        0) verdict=ok ;;
        124 | 137) verdict="TIMEOUT after ${limit}s" ;;
        *) verdict="FAILED (exit $rc)" ;;
    esac
    SUMMARY+=("$(printf '%-16s %-24s %4ss  %s' "$name" "$verdict" "$took" "${log##*/}")")
    sed -n "$((lines + 2)),\$p" "$log" | tail -n 3
    return 0
}

install_wheels() {
    local wheels=("$WHEELS"/*.whl)
    if [ ! -e "${wheels[0]}" ]; then
        echo "no wheels in $WHEELS (run bash scripts/gpu_wheels.sh where PyPI is reachable)"
        return 1
    fi
    # protobuf 4.25.9 comes only with mediapipe (--with-mediapipe); keep the image's unless it is >= 5
    if "$PY" -c 'import sys, google.protobuf as p; sys.exit(int(p.__version__.split(".")[0]) >= 5)' 2>/dev/null; then
        local keep=()
        for w in "${wheels[@]}"; do
            case "$(basename "$w")" in protobuf-*) echo "skipping $(basename "$w"): the image's protobuf is < 5" ;; *) keep+=("$w") ;; esac
        done
        wheels=("${keep[@]}")
    fi
    rm -rf "$SITE"
    PIP_CONFIG_FILE=/dev/null "$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${wheels[@]}" || return 1
    check_imports
}

check_imports() {
    "$PY" - <<'EOF'
import importlib, sys
bad = 0
for mod in ("numpy", "scipy", "torch", "transformers", "trimesh", "igl", "cholespy", "potpourri3d",
            "robust_laplacian", "fast_simplification", "pykdtree.kdtree", "qdldl", "diffusers",
            "nvdiffrast.torch", "mediapipe"):
    try:
        m = importlib.import_module(mod)
        print(f"  ok      {mod} {getattr(m, '__version__', '')}")
    except Exception as exc:  # report every module, fail at the end
        optional = mod == "mediapipe"
        bad += not optional
        print(f"  {'absent ' if optional else 'FAILED '} {mod}: {exc.__class__.__name__}: {str(exc)[:200]}")
sys.exit(1 if bad else 0)
EOF
}

info() {
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), python: $(command -v "$PY"), nproc: $(nproc)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    fi
    "$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA build", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
print("cuda available:", torch.cuda.is_available(), "| devices:", torch.cuda.device_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    torch.cuda.synchronize()
    print("fp16 matmul on cuda:", float((a @ a).float().abs().mean()) > 0)
import engine
print("engine imported from", engine.__file__)
EOF
    check_imports
}

sweep() {
    if [ ! -f "$DATA/faust5k/pairs.txt" ]; then
        echo "no faust5k data at $DATA (run bash scripts/gpu_wheels.sh, which stages pair 1 in .gpu_data)"
        return 1
    fi
    "$PY" -m engine.bench --data "$DATA" --set faust5k --only 1 --scale "$SCALE" --device cpu \
        --timeout 150 --cache "$WORK/geodesics" --out "$WORK/results/sweep" --features '' \
        --variant 'geometric_cpu={"features": "geometric", "device": "cpu"}' \
        --variant "geometric_gpu={\"features\": \"geometric\", \"device\": \"$GPU\"}"
}

export PY WHEELS SITE DATA SCALE GPU WORK
export -f install_wheels check_imports info sweep

echo "gpu_check: logs in $OUT, work files in $WORK, budget ${BUDGET}s$([ "$DRY" = 1 ] && echo ', DRY RUN (cpu for cuda)')"
rm -f "$OUT"/setup.log "$OUT"/pytest.log "$OUT"/backbones.log "$OUT"/sweep.log
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "${GPU_CHECK_SKIP_INSTALL:-0}" = 1 ]; then
    SUMMARY+=("$(printf '%-16s %s' install 'skipped (GPU_CHECK_SKIP_INSTALL=1)')")
else
    step install 90 setup install_wheels
fi
step info 60 setup info
step pytest_gpu 180 pytest "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/
mkdir -p "$WORK/results"
step backbones_cuda 120 backbones "$PY" -m engine.bench.backbones --devices "$GPU" "${BB_GPU[@]}" --out "$WORK/results/backbones_$GPU"
step sweep 200 sweep sweep
step backbones_cpu 120 backbones "$PY" -m engine.bench.backbones --devices cpu "${BB_CPU[@]}" --out "$WORK/results/backbones_cpu"
step pytest_branches 90 pytest "$PY" -m pytest -q -p no:cacheprovider -m "not gpu" tests/test_features_models.py \
    tests/test_features_semantic.py tests/test_semantic_flow.py tests/test_render_raster.py tests/test_bench_backbones.py

# the subdivided meshes stay behind (tens of MB; a file that comes back from $OUT is at most 16 MiB)
tar -czf "$OUT/results.tar.gz" -C "$WORK" --exclude=meshes results 2>/dev/null
{
    echo "gpu_check summary ($(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - START))s of ${BUDGET}s$([ "$DRY" = 1 ] && echo ', DRY RUN'))"
    printf '%s\n' "${SUMMARY[@]}"
    for f in "$WORK"/results/backbones_*/backbones.md "$WORK"/results/sweep/scale.md; do
        [ -f "$f" ] && { echo; echo "## ${f#"$WORK"/results/}"; cat "$f"; }
    done
} >"$OUT/summary.txt"
cat "$OUT/summary.txt"
