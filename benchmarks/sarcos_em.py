#!/usr/bin/env python
"""Reproduce the exercise's task 2: EM for (A, Q) on the SARCOS series, with jaxssm.

Set-up (seed/exercise-12.md): the SARCOS test split (4,449 x 21, bundled with jaxssm; the
44,484-step training split is not available offline) and
``jaxssm.datasets.exercise_setup(Y, jax.random.PRNGKey(--seed), dtype=float64)``: m0 = Y[0],
ys = Y[1:], H = I, R = P0 = kron(diag(0.01, 0.01, 1), I7), A = 0, Q = 0.01 diag(u) with
u ~ U(0, 1); ``--iters`` EM iterations (default 100) of ``jaxssm.fit_em`` updating (A, Q),
float64. Unlike the exercise's own loop, every E-step uses the current estimate of A.

Reports the log-likelihood before and after, whether it rose monotonically (the largest
decrease if not) and ``fit_em``'s status, the one-step-ahead prediction RMSE of the joint
positions (columns 0-6; predicted mean H m_k^- against y_k) before and after, and the time
(``workloads.time_call``): compilation apart, the first call after it, and the median of
``--runs`` further calls, each ended by ``block_until_ready``.

Usage::

    python benchmarks/sarcos_em.py [--iters 100] [--runs 3] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math

import jax

jax.config.update("jax_enable_x64", True)  # a script may; the library never does

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import workloads  # noqa: E402

import jaxssm as ssm  # noqa: E402

POSITIONS = slice(0, 7)


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

    data = ssm.datasets.load_sarcos("test")
    key = jax.random.PRNGKey(args.seed)
    params, ys = ssm.datasets.exercise_setup(data.inputs, key, dtype=jnp.float64)
    N, D = ys.shape

    def fit(p, y):
        return ssm.fit_em(p, y, num_iters=args.iters, update=("A", "Q"), method=args.method)

    # The first call after compilation is reported apart (warm-up), then the median of --runs.
    t = workloads.time_call(fit, params, ys, runs=args.runs, min_runs=0, warmup_below=math.inf)
    fitted, info = t.out
    steady = t.median_s if t.times_s else float("nan")
    steady_cpu = t.median_cpu_s if t.times_s else float("nan")

    trace = np.asarray(info.log_likelihoods)[: int(info.num_iters)]
    full = np.append(trace, float(info.log_likelihood))  # theta_0 .. theta_iters
    steps = np.diff(full)
    info_ = workloads.machine_info()
    result = {
        "data": data.name,
        "N": int(N),
        "D": int(D),
        "dtype": str(ys.dtype),
        "method": args.method,
        "em_iters": args.iters,
        "seed": args.seed,
        "status": ssm.EMStatus(int(info.status)).name,
        "loglik_before": float(full[0]),
        "loglik_after": float(full[-1]),
        "monotone": bool(np.all(steps >= 0)),
        "largest_decrease": float(max(0.0, -steps.min())),
        "largest_relative_decrease": float(max(0.0, np.max(-steps / np.abs(full[:-1])))),
        "rmse_positions_before": position_rmse(params, ys),
        "rmse_positions_after": position_rmse(fitted, ys),
        "first_call_s": t.warmup_s,
        "run_median_s": steady,
        "run_median_cpu_s": steady_cpu,
        "runs": len(t.times_s),
        "last_iteration_increase": float(steps[-1]),
        "compile_s": t.compile_s,
        "jax": info_["jax"],
        "device": info_["device_kind"],
        "platform": info_["platform"],
        "cpu_count": info_["cpu_count"],
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
        f"  wall: compile {t.compile_s:.2f} s; first call after it {t.warmup_s:.2f} s; median of "
        f"{len(t.times_s)} runs {steady:.2f} s ({steady / args.iters * 1e3:.1f} ms / iteration), "
        f"process CPU time {steady_cpu:.2f} s; jax {result['jax']}, {result['device']}, "
        f"{result['cpu_count']} CPUs"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
