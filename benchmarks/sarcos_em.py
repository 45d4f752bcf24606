#!/usr/bin/env python
"""Reproduce the exercise's task 2: EM for (A, Q) on the SARCOS series, with jaxssm.

Set-up (seed/exercise-12.md): the SARCOS test split (4,449 x 21, bundled with jaxssm; the
44,484-step training split is not available offline), m0 = Y[0], ys = Y[1:], H = I,
R = P0 = kron(diag(0.01, 0.01, 1), I7), A = 0, Q = 0.01 diag(u) with u ~ U(0, 1) from a fixed
seed; ``--iters`` EM iterations (default 100) updating (A, Q), float64. Unlike the
exercise's own loop, every E-step uses the current estimate of A.

Reports the log-likelihood before and after, whether it rose monotonically (the largest
decrease if not), the one-step-ahead prediction RMSE of the joint positions (columns 0-6;
predicted mean H m_k^- against y_k) before and after, and the wall time: the first call
(compile + run) and the median of ``--runs`` further calls, each ended by
``block_until_ready``.

Usage::

    python benchmarks/sarcos_em.py [--iters 100] [--runs 3] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)  # a script may; the library never does

import numpy as np  # noqa: E402

import jaxssm as ssm  # noqa: E402
from jaxssm import _em  # noqa: E402
from jaxssm.datasets import load_sarcos  # noqa: E402

POSITIONS = slice(0, 7)


from em_vs_mle import exercise_start_from as exercise_setup  # noqa: E402  (same directory)


def position_rmse(params: ssm.LGSSM, ys: jax.Array) -> float:
    """One-step-ahead RMSE of the positions: E[y_k | y_1:k-1] = H m_k^- against y_k."""
    pred = ssm.kalman_filter(params, ys).pred_means @ params.H.T
    err = np.asarray(pred - ys)[:, POSITIONS]
    return float(np.sqrt(np.mean(err**2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="sequential", choices=["sequential", "parallel"])
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    data = load_sarcos("test")
    Y = data.inputs
    params, ys = exercise_setup(Y, args.seed)
    N, D = ys.shape

    def fit():
        out = ssm.fit_em_with_info(
            params, ys, num_iters=args.iters, update=("A", "Q"), method=args.method
        )
        return jax.block_until_ready(out)

    # Compile time, measured apart: lower and compile the same jitted loop fit_em calls
    # (a private name: a benchmark may reach in; the options are fit_em's defaults).
    t0 = time.perf_counter()
    _em._fit_jit.lower(
        params,
        ys,
        num_iters=args.iters,
        update=("A", "Q"),
        tol=None,
        method=args.method,
        decrease_rtol=_em.default_decrease_rtol(ys.dtype),
        callback=None,
    ).compile()
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    fitted, info = fit()
    first = time.perf_counter() - t0
    times, cpu_times = [], []
    for _ in range(args.runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fit()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    steady = statistics.median(times) if times else float("nan")
    steady_cpu = statistics.median(cpu_times) if cpu_times else float("nan")

    trace = np.asarray(info.log_likelihoods)
    full = np.append(trace, float(info.log_likelihood))  # theta_0 .. theta_iters
    steps = np.diff(full)
    result = {
        "data": data.name,
        "N": int(N),
        "D": int(D),
        "dtype": str(ys.dtype),
        "method": args.method,
        "em_iters": args.iters,
        "seed": args.seed,
        "status": int(info.status),
        "loglik_before": float(full[0]),
        "loglik_after": float(full[-1]),
        "monotone": bool(np.all(steps >= 0)),
        "largest_decrease": float(max(0.0, -steps.min())),
        "largest_relative_decrease": float(max(0.0, np.max(-steps / np.abs(full[:-1])))),
        "rmse_positions_before": position_rmse(params, ys),
        "rmse_positions_after": position_rmse(fitted, ys),
        "first_call_s": first,
        "run_median_s": steady,
        "run_median_cpu_s": steady_cpu,
        "runs": args.runs,
        "last_iteration_increase": float(steps[-1]),
        "compile_s": compile_s,
        "jax": jax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    print(f"SARCOS {data.name}: N = {N}, D = {D}, {ys.dtype}, {args.method}, EM for (A, Q)")
    print(f"  log-likelihood  theta_0: {result['loglik_before']:.6f}")
    print(f"  log-likelihood  theta_{args.iters}: {result['loglik_after']:.6f}")
    mono = "yes"
    if not result["monotone"]:
        mono = f"no (largest decrease {result['largest_decrease']:.3g})"
    print(f"  monotone over {args.iters} iterations: {mono}  (status {result['status']})")
    print(f"  increase in the last iteration: {result['last_iteration_increase']:.4g}")
    print(
        f"  one-step-ahead RMSE, positions: {result['rmse_positions_before']:.6f} -> "
        f"{result['rmse_positions_after']:.6f}"
    )
    print(
        f"  wall: compile {compile_s:.2f} s; first call {first:.2f} s (compile + run); "
        f"median of {args.runs} runs "
        f"{steady:.2f} s ({steady / args.iters * 1e3:.1f} ms / iteration), process CPU time "
        f"{steady_cpu:.2f} s; jax {jax.__version__}, {result['device']}, {os.cpu_count()} CPUs"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
