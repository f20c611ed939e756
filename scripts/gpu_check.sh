#!/usr/bin/env bash
# Everything a lent GPU (H100 / H200) has to check, in one command with an internal time limit:
# the self-check (with the host's overhead per call), the GPU-marked tests, the kernel and
# dispatch tests on CUDA, the local HN benchmark at the four anchor shapes in bf16 and fp32 (both
# caption layouts, host time and CUDA-graph time beside GPU time), the training-step benchmark
# (ViT-B/32, B = 256, K = 3, AMP bf16) and the linear cross-entropy at Cut Cross-Entropy's Table 1
# shape (Gemma 2 2B: N = 8192, H = 2304, V = 256000, bf16). Each step runs under its own limit, in
# the order that matters most first, so the whole run ends inside GPU_CHECK_BUDGET_S (default
# 450 s), which with the machine's start fits a session's 15 minutes of device time.
# docs/benchmarks.md ("The GPU run") says how to use it.
#
#   scripts/gpu_check.sh OUT_DIR          # on the device: OUT_DIR="$OUT"
#   GPU_CHECK_REHEARSAL=1 scripts/gpu_check.sh OUT_DIR   # on a CPU: the same steps at smoke sizes
#
# Wheels the device lacks are read from .whl/ (scripts/fetch_gpu_wheels.sh fills it) and installed
# into /tmp/site. OUT_DIR receives at most 8 files, as many as the device tool returns.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT_DIR=${1:?usage: scripts/gpu_check.sh OUT_DIR}
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
REHEARSAL=${GPU_CHECK_REHEARSAL:-0}
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/summary.txt"
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

say() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME LIMIT_S LOG COMMAND...: run COMMAND under min(LIMIT_S, what is left of the budget),
# append its output to LOG, and record its exit status and time in the summary.
failed=0
step() {
    local name=$1 limit=$2 log=$3
    shift 3
    local left=$((BUDGET_S - ($(date +%s) - START)))
    if ((left < 10)); then
        say "SKIP  $name: the budget of ${BUDGET_S} s is spent"
        failed=1
        return
    fi
    ((limit > left)) && limit=$left
    local t0=$(date +%s)
    echo "### $name: $*" >>"$OUT_DIR/$log"
    timeout --kill-after=10 "$limit" "$@" >>"$OUT_DIR/$log" 2>&1
    local rc=$?
    local status=ok
    ((rc == 124 || rc == 137)) && status="TIMEOUT after ${limit} s"
    ((rc != 0 && rc != 124 && rc != 137)) && status="FAIL rc=$rc"
    ((rc != 0)) && failed=1
    say "$(printf '%-5s %-16s %4d s  (%s)' "${status%% *}" "$name" $(($(date +%s) - t0)) "$status")"
}

say "gpu_check at $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), budget ${BUDGET_S} s"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    step wheels 60 summary.txt python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
python3 - >>"$SUMMARY" 2>&1 <<'PY'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
for name in ("triton", "open_clip_torch", "transformers", "einops"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "MISSING")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs", p.total_memory >> 30, "GiB")
else:
    print("device: no CUDA device")
PY

if [ "$REHEARSAL" = 1 ]; then
    # CPU: the kernels run under Triton's interpreter, the benchmarks run their smoke sizes; the
    # GPU-marked tests skip themselves, but for tests/test_kernels_gpu.py's, which rehearse on the
    # CPU at small stand-in shapes (FSC_GPU_DRY_RUN=1; those needing CUDA itself skip). What is
    # exercised is this script, every command line and the GPU tests' logic.
    export TRITON_INTERPRET=1 FSC_GPU_DRY_RUN=1
    BENCH=(--smoke)
    TRAIN=(--smoke)
    LINEAR_CE=(--smoke)
    KERNEL_TESTS=(tests/test_dispatch.py)
    XDIST=()
else
    BENCH=(--suite anchors)
    TRAIN=(--model ViT-B-32 --batch 256 --negatives 3)
    LINEAR_CE=(--shape 8192,2304,256000 --dtype bf16 --provider chunked reference compiled)
    KERNEL_TESTS=(tests/test_kernels.py tests/test_dispatch.py)
    # 16 CPU cores compile Triton and inductor kernels in parallel; pytest-xdist is on the device.
    XDIST=(-n 8)
fi

step check 60 check.log python3 -m fsc_losses.check
step gpu-tests 150 pytest_gpu.log python3 -m pytest -q -rs -m gpu "${XDIST[@]}" tests
step kernel-tests 100 pytest_kernels.log python3 -m pytest -q -rs "${XDIST[@]}" "${KERNEL_TESTS[@]}"
step bench-local-hn 150 bench.log python3 benchmarks/bench_local_hn.py "${BENCH[@]}" --dtype bf16 fp32 \
    --normalizer minmax --mode fwd+bwd --rep-ms 100 --results "$OUT_DIR/local_hn.csv"
step bench-train 60 bench.log python3 benchmarks/bench_train_step.py "${TRAIN[@]}" \
    --results "$OUT_DIR/train_step.csv"
step bench-linear-ce 75 bench.log python3 benchmarks/bench_linear_ce.py "${LINEAR_CE[@]}" \
    --results "$OUT_DIR/linear_ce.csv"

say "total $(($(date +%s) - START)) s; $([ $failed = 0 ] && echo 'every step passed' || echo 'SOME STEPS FAILED')"
exit $failed
