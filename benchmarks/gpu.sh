#!/usr/bin/env bash
# Run the jaxssm benchmark suite on a machine with an NVIDIA GPU and JAX with CUDA already
# installed, without network access. Finishes well inside 10 minutes (default budget 450 s
# for the suite including set-up, hard stop of the suite at the budget left + 60 s).
#
#   bash benchmarks/gpu.sh [OUTPUT_DIR]
#
# The --gpu preset of benchmarks/run.py, most important first (the budget drops the tail):
# filter + smoother and one EM iteration on the parallel, steady and sequential schedules in
# float64 and float32 at N = 44,484 (D = 21); 100 EM iterations (compile time apart, so a
# fresh call costs compile + run); a filter sweep to N = 1e6; dynamax's EM iteration; peers.
# Then benchmarks/parallel_steady.py (the last 120 s of the budget): the full associative
# scan against method="parallel", steady_state=True, and the mean recursion's plain,
# blocked and log-depth doubling forms, at N = 44,484 in float64. Then
# benchmarks/time_to_max.py --quick (120 s): fit, SQUAREM and plain EM from the data start.
#
# OUTPUT_DIR defaults to $OUT, else benchmarks/results/local/gpu (benchmarks/results puts
# gpu.md next to the README's cpu.md). It receives gpu.json and
# gpu.md (the tables; rewritten after every cell, so a stopped run still leaves results),
# env.txt (nvidia-smi, versions) and gpu_run.log (everything printed).
#
# Environment (all optional):
#   PYTHON             interpreter with jax[cuda] (default: python3)
#   BENCH_BUDGET       seconds for set-up + suite (default 450)
#   BENCH_ARGS         extra arguments for benchmarks/run.py (e.g. "--no-sweep")
#   JAXSSM_BENCH_SITE  a folder of extra pure-Python packages (optax, peers) put on PYTHONPATH
#
# The package is installed from this working tree without dependencies
# (pip install --no-deps --no-build-isolation -e .); where that cannot work offline (no
# hatchling), the working tree is put on PYTHONPATH instead. jaxssm needs jax and optax;
# dynamax, cuthbert and pykalman are benchmarked only where they are importable. Without a
# GPU (e.g. JAX_PLATFORMS=cpu) the script runs the small --quick suite instead, as a check
# of the script itself.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
OUT_DIR="${1:-${OUT:-$ROOT/benchmarks/results/local/gpu}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PY="${PYTHON:-python3}"
BUDGET="${BENCH_BUDGET:-450}"
START=$(date +%s)
exec > >(tee -a "$OUT_DIR/gpu_run.log") 2>&1

echo "== jaxssm GPU benchmark $(date -u '+%Y-%m-%d %H:%M:%S UTC'), output in $OUT_DIR"
{
    echo "# nvidia-smi"
    (nvidia-smi 2>&1 || echo "nvidia-smi not available")
    echo "# python / jax"
    "$PY" - <<'PYEOF' 2>&1
import importlib.metadata as md
import sys
print(sys.version.replace("\n", " "))
for p in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
          "optax", "numpy", "scipy", "dynamax", "cuthbert", "pykalman", "hatchling"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "not installed")
PYEOF
    echo "# git"
    (git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null | head -20) || echo "no git"
} > "$OUT_DIR/env.txt"
cat "$OUT_DIR/env.txt"

if ! "$PY" -c "import jax" >/dev/null 2>&1; then
    echo "ERROR: '$PY' cannot import jax; set PYTHON to the interpreter with jax[cuda]." \
        | tee "$OUT_DIR/FAILED.txt"
    exit 2
fi

# Install from the working tree without dependencies (offline), else use PYTHONPATH.
export PYTHONPATH="$ROOT${JAXSSM_BENCH_SITE:+:$JAXSSM_BENCH_SITE}${PYTHONPATH:+:$PYTHONPATH}"
if "$PY" -m pip install --quiet --no-deps --no-build-isolation --no-index -e "$ROOT" \
        >"$OUT_DIR/pip_install.log" 2>&1; then
    echo "== installed jaxssm from $ROOT (pip --no-deps -e)"
else
    echo "== pip install -e . not possible offline here (see pip_install.log); using PYTHONPATH=$ROOT"
fi
if ! (cd /tmp && "$PY" -c "import jaxssm; print('jaxssm', jaxssm.__version__, 'from', jaxssm.__file__)"); then
    echo "ERROR: jaxssm does not import (missing optax? put it in JAXSSM_BENCH_SITE)." \
        | tee "$OUT_DIR/FAILED.txt"
    exit 3
fi

PLATFORM="$("$PY" -c "import jax; print(jax.devices()[0].platform)" 2>/dev/null || echo none)"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # so that each cell's device peak is its own
SPENT=$(( $(date +%s) - START ))
LEFT=$(( BUDGET - SPENT ))
if [ "$LEFT" -lt 60 ]; then LEFT=60; fi
GPU=0
if [ "$PLATFORM" = "gpu" ] || [ "$PLATFORM" = "cuda" ]; then
    GPU=1
    LEFT=$(( LEFT - 240 ))   # kept for parallel_steady.py and time_to_max.py below
    if [ "$LEFT" -lt 60 ]; then LEFT=60; fi
    MODE=(--gpu --name gpu --budget "$LEFT")
    echo "== GPU found: running the --gpu suite with a budget of $LEFT s"
else
    if [ "$LEFT" -gt 115 ]; then LEFT=115; fi
    MODE=(--quick --name gpu_fallback_cpu --budget "$LEFT")
    echo "== no GPU visible to JAX (platform: $PLATFORM): running the --quick suite as a check"
fi
# shellcheck disable=SC2086
timeout -k 10 $(( LEFT + 60 )) "$PY" "$ROOT/benchmarks/run.py" "${MODE[@]}" \
    --python "$PY" --out "$OUT_DIR" ${BENCH_ARGS:-}
RC=$?
echo "== run.py exit code $RC after $(( $(date +%s) - START )) s"
if [ "$GPU" = 1 ]; then
    timeout -k 10 120 "$PY" "$ROOT/benchmarks/parallel_steady.py" --runs 3 --out "$OUT_DIR"
    echo "== parallel_steady.py exit code $? after $(( $(date +%s) - START )) s"
    # fit to convergence from the data start on the SARCOS test split, against plain and
    # accelerated EM (the quick budgets; the answer, not only the speed, is in the table).
    timeout -k 10 120 "$PY" "$ROOT/benchmarks/time_to_max.py" --quick --starts initialize \
        --out "$OUT_DIR"
    echo "== time_to_max.py exit code $? after $(( $(date +%s) - START )) s"
fi
echo "== results:"
ls -l "$OUT_DIR"
exit $RC
