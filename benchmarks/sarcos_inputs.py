#!/usr/bin/env python
"""The SARCOS test split with the joint torques as inputs: EM with and without them.

Both fits start from the exercise's set-up (``jaxssm.datasets.exercise_setup``, seed 0,
float64): ``m0 = Y[0]``, ``ys = Y[1:]``, ``H = I``, ``R = P0 = kron(diag(0.01, 0.01, 1),
I_7)``, ``A = 0``, ``Q = 0.01 diag(u)``. The model with inputs adds ``B u_k`` to the
transition, ``u_k`` the seven torques of data row ``k`` (columns 21-27), with ``B = 0`` at
the start; EM learns ``(A, Q)`` without inputs and ``(A, B, Q)`` with them, for the same
number of iterations on the first ``--fit`` steps. Reported:

- the EM log-likelihood of the fitted model on the fitting steps;
- the one-step-ahead RMSE of the predicted observation ``E[y_k | y_1:k-1] = m_k^-`` (``H = I``),
  on the fitting steps and on the held-out steps after them (the filter runs over the whole
  series with the fitted parameters), overall and per block (positions, velocities,
  accelerations; each column in its own units).

Usage (from the repository root)::

    python benchmarks/sarcos_inputs.py                # 300 iterations, a few minutes
    python benchmarks/sarcos_inputs.py --iters 5      # a smoke test

Writes ``sarcos_inputs.md`` and ``sarcos_inputs.json`` to ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # the benchmark's choice; the library never does this

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxssm as ssm  # noqa: E402


def rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err**2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--fit", type=int, default=3000, help="fitting steps (default 3000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    data = ssm.datasets.load_sarcos("test")
    start, ys = ssm.datasets.exercise_setup(
        data.inputs, jax.random.PRNGKey(args.seed), dtype=jnp.float64
    )
    u = jnp.asarray(data.torques[1:], jnp.float64)  # row k's torques drive step k
    n = args.fit
    rows = {}
    for label, params0, inputs, update in (
        ("without inputs", start, None, ("A", "Q")),
        ("torques as inputs", start._replace(B=jnp.zeros((21, 7))), u, ("A", "B", "Q")),
    ):
        fit_inputs = None if inputs is None else inputs[:n]
        t0 = time.perf_counter()
        fitted, info = ssm.fit_em(
            params0, ys[:n], inputs=fit_inputs, num_iters=args.iters, update=update
        )
        jax.block_until_ready(fitted)
        seconds = time.perf_counter() - t0
        filt = ssm.kalman_filter(fitted, ys, inputs=inputs)
        err = np.asarray(ys) - np.asarray(filt.pred_means)
        blocks = {
            name: (rmse(err[:n, sl]), rmse(err[n:, sl]))
            for name, sl in (
                ("positions", slice(0, 7)),
                ("velocities", slice(7, 14)),
                ("accelerations", slice(14, 21)),
            )
        }
        rows[label] = dict(
            update=",".join(update),
            log_likelihood=float(info.log_likelihood),
            rmse_fit=rmse(err[:n]),
            rmse_held_out=rmse(err[n:]),
            blocks=blocks,
            seconds=seconds,
        )
        print(label, json.dumps(rows[label]))

    meta = dict(
        jax=jax.__version__,
        device=jax.devices()[0].platform,
        dtype="float64",
        fit_steps=n,
        held_out_steps=int(ys.shape[0]) - n,
        iters=args.iters,
        seed=args.seed,
    )
    lines = [
        "# SARCOS test split: EM with the joint torques as inputs",
        "",
        f"`python benchmarks/sarcos_inputs.py --iters {args.iters} --fit {n}`; jax "
        f"{meta['jax']}, {meta['device']}, float64. EM fits steps 1..{n} of the test split "
        f"from the exercise's start (seed {args.seed}), {args.iters} iterations; the one-step-"
        f"ahead RMSE is that of `E[y_k | y_1:k-1]` on those steps and on the "
        f"{meta['held_out_steps']} held-out steps after them. Wall time includes compilation.",
        "",
        "| model | update | EM log-likelihood (fit) | RMSE fit | RMSE held out | "
        "held out: pos / vel / acc | wall time |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for label, r in rows.items():
        b = r["blocks"]
        lines.append(
            f"| {label} | {r['update']} | {r['log_likelihood']:.6g} | {r['rmse_fit']:.4g} | "
            f"{r['rmse_held_out']:.4g} | {b['positions'][1]:.3g} / {b['velocities'][1]:.3g} / "
            f"{b['accelerations'][1]:.3g} | {r['seconds']:.1f} s |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sarcos_inputs.md").write_text("\n".join(lines) + "\n")
    (args.out / "sarcos_inputs.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
