#!/usr/bin/env python
"""``fit_mle``'s time per iteration with one steady-state path in the gradient, and without.

On fully observed data with a steady-state bound, ``fit_mle`` differentiates the filter
through the fast path alone, and through the gap-aware recursion alone where the fast path
does not cover a point (``jaxssm._schedules.plan.exact_on_fast_path``). Before, the gradient went
through the program holding both paths and a ``lax.cond``, whose reverse mode keeps both
branches' residuals. "both paths" here is that program: the same call with
``jaxssm._schedules.plan.choose_paths`` replaced by one that answers ``Paths.BOTH``.

Set-up: the exercise's white-noise start on ``jaxssm.datasets.sarcos_stand_in(N + 1)``
(21 columns, ``exercise_setup``, key 0), ``update=("A", "Q")``, float64, the default
schedule (steady-state at this N). Each optimiser (``optax.adam(1e-2)``, ``optax.lbfgs()``)
runs ``--iters`` steps per call; the first call compiles (its wall time is reported as
"first call"), then ``--runs`` calls are timed, each ended by ``block_until_ready``; "time /
iter" is their median divided by ``--iters`` (for L-BFGS an average over its line-search
evaluations). The eager public call is timed, as users make it: under an outer ``jax.jit``
the data are traced and ``fit_mle`` keeps both paths.

Usage (from the repository root)::

    python benchmarks/mle_paths.py                      # N = 44,484, a few minutes on 2 cores
    python benchmarks/mle_paths.py --num-steps 5000 --iters 3 --runs 2   # a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)  # the benchmark's choice; the library never does this

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import workloads  # noqa: E402

import jaxssm as ssm  # noqa: E402
from jaxssm import datasets  # noqa: E402
from jaxssm._learn import mle as _mle  # noqa: E402
from jaxssm._schedules.dispatch import Paths  # noqa: E402

UPDATE = ("A", "Q")


@contextlib.contextmanager
def both_paths():
    """Run ``fit_mle`` as before: the gradient through the program that holds both paths."""
    real = _mle._plan.choose_paths
    _mle._plan.choose_paths = lambda *args: Paths.BOTH
    try:
        yield
    finally:
        _mle._plan.choose_paths = real


def _time(fit, runs):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fit())
    first = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fit())
        times.append(time.perf_counter() - t0)
    return out, first, statistics.median(times), times


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-steps", type=int, default=workloads.SARCOS_TRAIN_STEPS)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--optimizers", default="adam,lbfgs")
    args = ap.parse_args(argv)

    Y = np.asarray(datasets.sarcos_stand_in(args.num_steps + 1).inputs[:, :21], np.float64)
    params, ys = datasets.exercise_setup(Y, jax.random.key(0), dtype=jnp.float64)
    info = workloads.machine_info()
    print(f"N = {ys.shape[0]}, D = 21, float64, {info['device']}, jax {info['jax']}", flush=True)
    optimizers = {"adam": optax.adam(1e-2), "lbfgs": optax.lbfgs()}
    rows = []
    for name in args.optimizers.split(","):
        opt = optimizers[name]

        def fit(opt=opt):
            return ssm.fit_mle(params, ys, optimizer=opt, num_iters=args.iters, update=UPDATE)

        row = {"optimizer": name}
        for label, ctx in (("one path", contextlib.nullcontext), ("both paths", both_paths)):
            with ctx():
                out, first, median, times = _time(fit, args.runs)
            row[label] = out
            per_iter = median / args.iters
            print(
                f"{name:6s} {label:10s}: first call {first:7.1f} s, time / iter "
                f"{per_iter:6.3f} s (runs {', '.join(f'{t:.2f}' for t in times)} s "
                f"for {args.iters} iterations)",
                flush=True,
            )
            row[f"{label} s/iter"] = per_iter
        (p1, i1), (p2, i2) = row.pop("one path"), row.pop("both paths")
        diff = max(_rel(i1.log_likelihoods, i2.log_likelihoods), _rel(p1.A, p2.A), _rel(p1.Q, p2.Q))
        row["max rel diff"] = diff
        print(
            f"{name:6s} speed-up {row['both paths s/iter'] / row['one path s/iter']:.1f}x, "
            f"max rel diff (trace, A, Q) {diff:.1e}",
            flush=True,
        )
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
