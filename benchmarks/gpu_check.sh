#!/usr/bin/env bash
# The GPU checks of issue 9 as one prepared run, for a machine with CUDA (e.g. the lent
# H100/H200, where torch, numpy, scipy, scikit-learn, click and tqdm are preinstalled and
# nothing can be fetched). From the repository root:
#
#     bash benchmarks/gpu_check.sh            # logs into $OUT (default: gpu_check_out/)
#
# Each step has its own time limit, so one that hangs cannot eat the others' time; the
# whole run fits in about 8 minutes. Logs: env.txt, kernel.txt (FC ReLU depth-5 NTK,
# n = 20000, float32/float64, default tile vs 8192 vs compile=True, with the elementwise
# floor), solvers.txt (overhead over a bare Cholesky solve), empirical.txt (jacobian and
# structured empirical NTK vs the torch.func tutorial, with peak memory), tests.txt (the
# suite with CUDA visible; tests needing packages absent there are skipped by them).
# NTKIT_GPU_CHECK_DEVICE=cpu runs the same steps on a CPU, small, to check the script.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DEV=${NTKIT_GPU_CHECK_DEVICE:-cuda}
if [ "$DEV" = cpu ]; then N=500; NS="300 500"; NE=4; T=120
else N=20000; NS="5000 10000 20000"; NE=64; T=150; fi

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.txt
    local name=$1 limit=$2; shift 2
    echo "== $name: $*" | tee -a "$OUT/summary.txt"
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    echo "   exit $? after ${SECONDS}s total" | tee -a "$OUT/summary.txt"
}

step env 30 bash -c "nvidia-smi 2>&1 || true; python3 -c 'import torch, numpy; \
print(torch.__version__, numpy.__version__, torch.cuda.is_available() and \
torch.cuda.get_device_name())'"
step kernel "$T" python3 benchmarks/bench_kernel.py --device "$DEV" --n "$N" --depth 5 \
    --act relu --dtype float32 float64 --tile 8192 --compile
# shellcheck disable=SC2086  # NS is a list of sizes
step solvers 90 python3 benchmarks/bench_solvers.py --device "$DEV" --n $NS
# neural-tangents is not installed there: the torch entries only.
step empirical 120 python3 benchmarks/bench_empirical.py --device "$DEV" --dtype float32 --n "$NE" \
    --timeout 60 --entries ntkit:jacobian ntkit:structured tutorial:jac tutorial:ntk_vp
if [ "$DEV" = cpu ]; then TESTS=tests/solvers/test_solvers_on_device.py; else TESTS=tests; fi
step tests 200 python3 -m pytest -q -p no:cacheprovider "$TESTS"
tail -n 3 "$OUT"/*.txt
