"""jaxssm's per-program CPU compiler option against XLA's defaults, side by side.

jaxssm compiles its own top-level programs with ``jaxssm._base.compile.CPU_OPTIONS`` (XLA's CPU
compiler emits fused element-wise kernels with its older LLVM emitters instead of the MLIR
fusion emitters). This script measures what that changes, each cell in a fresh process (so
that every compile is cold and the peak RSS is the cell's own), the two variants alternating
for ``--repeats`` rounds so that load changes hit both alike:

- ``fit_em``: ``fit_em(start, ys, num_iters=100)`` from the exercise's start on the SARCOS
  stand-in (N = 44,484, D = 21): first call minus second call (trace + compile), the XLA
  compile time alone (``jax.monitoring``), the peak RSS the first call adds over the process
  after loading the data, the second call's time, and the final log-likelihood;
- ``smooth``: ``rts_smoother`` (steady-state schedule) and ``e_step`` on the same data and
  start model: the same quantities, and a checksum of the result.

The variant ``default`` replaces ``jaxssm._base.compile.options`` by one returning ``{}`` before the
first call, i.e. the programs are the plain ``jax.jit`` ones. Results must agree to round-off:
the script prints the largest relative difference of the log-likelihoods and checksums.

Usage::

    python benchmarks/compile_options.py [--repeats 3] [--num-steps 44484]

Writes ``results/compile_options.md`` and ``.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402

CHILD = r"""
import collections, json, sys, time
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import jaxssm as ssm
from jaxssm._base import compile as _compile
variant, workload, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
if variant == "default":
    _compile.options = lambda: {}

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")

events = collections.defaultdict(float)
jax.monitoring.register_event_duration_secs_listener(
    lambda name, d, **kw: events.__setitem__(name, events[name] + d))
data = ssm.datasets.sarcos_stand_in(N + 1)
start, ys = ssm.datasets.exercise_setup(jnp.asarray(data.inputs), jax.random.PRNGKey(0))
ys = jax.block_until_ready(jnp.asarray(ys))
if workload == "fit_em":
    call = lambda: ssm.fit_em(start, ys, num_iters=100)
    value = lambda out: float(out[1].log_likelihood)
elif workload == "smooth":
    call = lambda: ssm.rts_smoother(start, ys)
    value = lambda out: float(jnp.sum(out.means) + jnp.sum(out.covs))
else:
    call = lambda: ssm.e_step(start, ys)
    value = lambda out: float(out[1])
rss = status("VmRSS")
try:
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
events.clear()
t = time.perf_counter(); out = jax.block_until_ready(call()); first = time.perf_counter() - t
peak = status("VmHWM")
compile_s = events["/jax/core/compile/backend_compile_duration"]
times = []
for _ in range(3):
    t = time.perf_counter()
    out = jax.block_until_ready(call())
    times.append(time.perf_counter() - t)
second = sorted(times)[1]
print(json.dumps(dict(first_s=first, run_s=second, overhead_s=first - second,
                      xla_compile_s=compile_s, rss_added_mb=peak - rss, value=value(out))))
"""

VARIANTS = ("default", "jaxssm")
WORKLOADS = ("fit_em", "smooth", "e_step")


def cell(variant: str, workload: str, num_steps: int) -> dict:
    """Run one (variant, workload) in a fresh process; its JSON line."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, variant, workload, str(num_steps)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} {workload} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def render(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# jaxssm's CPU compiler option against XLA's defaults (`benchmarks/compile_options.py`)",
        "",
        f"jax {m.get('jax')}, {m.get('backend')}, {m.get('cpu_count')} CPU cores, {m.get('date')}, "
        f"load average at start {m.get('load_average_at_start')}; "
        f"N = {result['N']:,}, D = 21, float64; SARCOS stand-in, the exercise's start. "
        f"Each cell a fresh process, variants alternating, {result['repeats']} rounds; "
        "medians over the rounds (min-max in brackets). Option: "
        f"`{result['options']}`.",
        "",
        "| workload | variant | first - second call (s) | XLA compile (s) "
        "| peak RSS added (MB) | run (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]

    def fmt(xs, spec):
        return f"{statistics.median(xs):{spec}} ({min(xs):{spec}}-{max(xs):{spec}})"

    for w in WORKLOADS:
        for v in VARIANTS:
            rows = result["cells"][w][v]
            lines.append(
                f"| {w} | {v} | {fmt([r['overhead_s'] for r in rows], '.2f')} "
                f"| {fmt([r['xla_compile_s'] for r in rows], '.2f')} "
                f"| {fmt([r['rss_added_mb'] for r in rows], '.0f')} "
                f"| {fmt([r['run_s'] for r in rows], '.3f')} |"
            )
    lines += [
        "",
        "Largest relative difference between the variants' results (log-likelihood for "
        "fit_em and e_step, sum of smoothed means and covariances for smooth): "
        + ", ".join(f"{w} {result['max_rel_diff'][w]:.1e}" for w in WORKLOADS)
        + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-steps", type=int, default=44_484)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(HERE.parent))
    from jaxssm._base import compile as _compile

    cells = {w: {v: [] for v in VARIANTS} for w in WORKLOADS}
    for r in range(args.repeats):
        for w in WORKLOADS:
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for v in order:
                row = cell(v, w, args.num_steps)
                cells[w][v].append(row)
                print(f"round {r} {w} {v}: {row}", file=sys.stderr, flush=True)
    diffs = {}
    for w in WORKLOADS:
        vals = [row["value"] for v in VARIANTS for row in cells[w][v]]
        ref = vals[0]
        diffs[w] = max(abs(x - ref) for x in vals) / abs(ref)
    result = dict(
        machine=workloads.machine_info(),
        N=args.num_steps,
        repeats=args.repeats,
        options=_compile.CPU_OPTIONS,
        cells=cells,
        max_rel_diff=diffs,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compile_options.json").write_text(json.dumps(result, indent=1) + "\n")
    text = render(result)
    (args.out / "compile_options.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
