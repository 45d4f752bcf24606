#!/usr/bin/env python
"""Steady-state fast path (jaxssm._steady) against the full sequential E-step, and EM with it.

Two workloads, float64, sequential, on whatever device JAX picks (report says which):

- ``dense``: a random dense stable model (``D = Dy = 21``, spectral radius 0.95, ``H = I``;
  benchmarks/workloads.py) and ``N = 44,484`` steps simulated from it;
- ``sarcos``: the exercise's set-up (``m0 = Y[0]``, ``ys = Y[1:]``, ``H = I``,
  ``R = P0 = kron(diag(0.01, 0.01, 1), I_7)``, white-noise start ``A = 0``,
  ``Q = 0.01 diag(u)``) on the SARCOS stand-in of 44,484 rows
  (``jaxssm.datasets.sarcos_stand_in``: the 4,449-row test split played forward and backward;
  the training split is not available offline), so ``N = 44,483`` steps.

For each workload it measures, after compilation and as the median of ``--runs`` calls each
ended by ``block_until_ready``:

1. the E-step statistics through the fast path (``_steady_stats``) and through the full
   sequential recursion (``_filter`` + ``_smooth`` + a plain reduction over time), and the
   largest relative difference between the two (both at the parameters of the EM start and,
   for ``dense``, at the true parameters);
2. one EM iteration (E-step + M-step for ``(A, Q)``), fast and full;
3. ``--iters`` EM iterations (default 100) with the fast path as one ``lax.scan`` over the
   iterations, timed from the first call (trace + compile + run) and again once compiled,
   with the transient lengths of every iteration and whether any iteration fell back to the
   full recursion; then the E-step of item 1 again at the parameters EM ended with (the
   longest transient).

dynamax's EM iteration at this size is quoted from ENVIRONMENT.md (1.6 s, measured on the same
kind of 2-core machine, not in this run).

Usage::

    python benchmarks/steady_state.py [--workloads dense sarcos] [--iters 100] [--runs 3]
        [--num-steps 44484] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # a script may; the library never does

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxssm as ssm  # noqa: E402
from jaxssm import _steady as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import workloads  # noqa: E402

DYNAMAX_EM_ITERATION_S = 1.6  # ENVIRONMENT.md: dynamax 1.0.3, N = 44,484, D = 21, f64, CPU
UPDATE = ("A", "Q")


def exercise_start(D: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The exercise's white-noise start: ``A = 0``, ``Q = 0.01 diag(u)``, ``u ~ U(0, 1)``."""
    u = np.random.default_rng(seed).uniform(size=D)
    return np.zeros((D, D)), 0.01 * np.diag(u)


def sarcos_workload(num_rows: int, seed: int):
    data = ssm.datasets.sarcos_stand_in(num_rows)
    Y = np.asarray(data.inputs, np.float64)
    D = Y.shape[1]
    R = np.kron(np.diag([0.01, 0.01, 1.0]), np.eye(D // 3))
    A0, Q0 = exercise_start(D, seed)
    params = ssm.LGSSM(*(jnp.asarray(x) for x in (Y[0], R, A0, Q0, np.eye(D), R)))
    return params, jnp.asarray(Y[1:]), None, data.name


def dense_workload(num_steps: int, seed: int):
    model = workloads.random_dense_model(21)
    ys = workloads.simulate(model, num_steps)
    true = ssm.LGSSM(*(jnp.asarray(x) for x in model))
    A0, Q0 = exercise_start(21, seed)
    start = true._replace(A=jnp.asarray(A0), Q=jnp.asarray(Q0))
    source = "simulated from a random dense stable model (D = 21, spectral radius 0.95, H = I)"
    return start, jnp.asarray(ys), true, source


def timed(fn, *args, runs: int):
    """(first call incl. compile, median of ``runs`` later calls, all run times), seconds."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return out, first, statistics.median(times), times


def max_rel_diff(a, b) -> float:
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300)))
    return worst


def stats_leaves(stats: ssm.SufficientStats):
    return [getattr(stats, f) for f in ("Sigma", "Phi", "B", "C", "D")]


fast_stats = jax.jit(st._steady_stats_with_info)
full_stats = jax.jit(st._full_stats)


def _em_iteration(estep):
    def one(params, ys):
        stats, ll = estep(params, ys)[:2]
        return ssm.m_step(params, stats, UPDATE), ll

    return jax.jit(one)


fast_em_iteration = _em_iteration(st._steady_stats)
full_em_iteration = _em_iteration(st._full_stats)


def em_loop(params, ys, num_iters: int):
    def body(p, _):
        stats, ll, info = st._steady_stats_with_info(p, ys)
        return ssm.m_step(p, stats, UPDATE), (
            ll,
            info.filter_transient,
            info.smoother_transient,
            info.converged,
        )

    return jax.lax.scan(body, params, None, length=num_iters)


def run_workload(name: str, args) -> dict:
    if name == "sarcos":
        params, ys, true, source = sarcos_workload(args.num_steps, args.seed)
    else:
        params, ys, true, source = dense_workload(args.num_steps, args.seed)
    N, D = ys.shape
    print(f"\n== {name}: N = {N}, D = Dy = {D}, float64; data: {source}", flush=True)
    res: dict = {"workload": name, "N": N, "D": D, "source": source}

    # 1. E-step statistics, fast vs full, at the EM start (and at the true model).
    at = {"start": params} if true is None else {"start": params, "true model": true}
    for label, p in at.items():
        (fs, fll, info), f_first, f_med, f_all = timed(fast_stats, p, ys, runs=args.runs)
        (gs, gll), g_first, g_med, g_all = timed(full_stats, p, ys, runs=args.runs)
        diff = max(max_rel_diff(stats_leaves(fs), stats_leaves(gs)), max_rel_diff(fll, gll))
        entry = {
            "fast_first_s": f_first,
            "fast_median_s": f_med,
            "fast_runs_s": f_all,
            "full_first_s": g_first,
            "full_median_s": g_med,
            "full_runs_s": g_all,
            "speedup": g_med / f_med,
            "max_rel_diff": diff,
            "num_transient": int(info.num_transient),
            "filter_transient": int(info.filter_transient),
            "smoother_transient": int(info.smoother_transient),
            "fast_path_ran": bool(info.converged),
        }
        res[f"estep_at_{label.replace(' ', '_')}"] = entry
        print(
            f"E-step at the {label}: fast {f_med * 1e3:.1f} ms, full {g_med * 1e3:.0f} ms "
            f"(median of {args.runs}; first calls incl. compile {f_first:.1f} s / "
            f"{g_first:.1f} s) -> {g_med / f_med:.1f}x; transients filter "
            f"{entry['filter_transient']}, smoother {entry['smoother_transient']} "
            f"(bound {entry['num_transient']}), fast path ran: {entry['fast_path_ran']}; "
            f"max rel diff {diff:.1e}",
            flush=True,
        )

    # 2. One EM iteration (E-step + M-step), fast and full.
    _, fi_first, fi_med, fi_all = timed(fast_em_iteration, params, ys, runs=args.runs)
    _, gi_first, gi_med, gi_all = timed(full_em_iteration, params, ys, runs=args.runs)
    res["em_iteration"] = {
        "fast_median_s": fi_med,
        "fast_runs_s": fi_all,
        "full_median_s": gi_med,
        "full_runs_s": gi_all,
        "speedup_vs_full": gi_med / fi_med,
        "speedup_vs_dynamax_quoted": DYNAMAX_EM_ITERATION_S / fi_med,
    }
    print(
        f"one EM iteration: fast {fi_med * 1e3:.1f} ms, full {gi_med * 1e3:.0f} ms "
        f"({gi_med / fi_med:.1f}x); dynamax (quoted, {DYNAMAX_EM_ITERATION_S} s) / fast = "
        f"{DYNAMAX_EM_ITERATION_S / fi_med:.1f}x",
        flush=True,
    )

    # 3. EM loop with the fast path, one lax.scan over the iterations.
    loop = jax.jit(em_loop, static_argnums=2)
    t0 = time.perf_counter()
    final, (lls, ft, stt, conv) = jax.block_until_ready(loop(params, ys, args.iters))
    total_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(loop(params, ys, args.iters))
    total_compiled = time.perf_counter() - t0
    lls, ft, stt, conv = (np.asarray(a) for a in (lls, ft, stt, conv))

    # The fast path at the EM result (the longest transient) against the full recursion.
    (fs, fll, info), _, f_med, _ = timed(fast_stats, final, ys, runs=args.runs)
    (gs, gll), _, g_med, _ = timed(full_stats, final, ys, runs=args.runs)
    diff = max(max_rel_diff(stats_leaves(fs), stats_leaves(gs)), max_rel_diff(fll, gll))
    res["estep_at_em_result"] = {
        "fast_median_s": f_med,
        "full_median_s": g_med,
        "speedup": g_med / f_med,
        "max_rel_diff": diff,
        "filter_transient": int(info.filter_transient),
        "smoother_transient": int(info.smoother_transient),
        "fast_path_ran": bool(info.converged),
    }
    print(
        f"E-step at the EM result: fast {f_med * 1e3:.1f} ms, full {g_med * 1e3:.0f} ms -> "
        f"{g_med / f_med:.1f}x; transients filter {int(info.filter_transient)}, smoother "
        f"{int(info.smoother_transient)}, fast path ran: {bool(info.converged)}; "
        f"max rel diff {diff:.1e}",
        flush=True,
    )
    dec = np.diff(lls)
    res["em_loop"] = {
        "iters": args.iters,
        "first_call_s": total_first,
        "compiled_s": total_compiled,
        "per_iteration_s": total_compiled / args.iters,
        "log_likelihoods": lls.tolist(),
        "largest_decrease": float(max(0.0, -dec.min())) if dec.size else 0.0,
        "filter_transients": ft.tolist(),
        "smoother_transients": stt.tolist(),
        "fallback_iterations": np.flatnonzero(~conv).tolist(),
        "spectral_radius_A_final": float(np.max(np.abs(np.linalg.eigvals(np.asarray(final.A))))),
    }
    print(
        f"{args.iters} EM iterations (fast path): {total_first:.2f} s incl. trace + compile, "
        f"{total_compiled:.2f} s compiled ({total_compiled / args.iters * 1e3:.1f} ms/iter); "
        f"log p(y) {lls[0]:.6g} -> {lls[-1]:.6g}, largest decrease "
        f"{res['em_loop']['largest_decrease']:.3g}",
        flush=True,
    )
    print(
        f"transients per iteration: filter {ft.min()}..{ft.max()} (last {ft[-1]}), smoother "
        f"{stt.min()}..{stt.max()} (last {stt[-1]}); fell back to the full recursion in "
        f"{int((~conv).sum())} of {args.iters} iterations"
        + (f" ({np.flatnonzero(~conv).tolist()})" if (~conv).any() else ""),
        flush=True,
    )
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["dense", "sarcos"])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--num-steps", type=int, default=workloads.SARCOS_TRAIN_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=str, default=None, help="write the results here")
    args = parser.parse_args()

    header = {
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "dtype": "float64",
        "runs": args.runs,
        "default_max_transient": st.DEFAULT_MAX_TRANSIENT,
        "default_rtol": st.default_rtol(jnp.float64),
        "dynamax_em_iteration_s_quoted": DYNAMAX_EM_ITERATION_S,
    }
    print(json.dumps(header))
    results = {"header": header, "workloads": [run_workload(w, args) for w in args.workloads]}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
