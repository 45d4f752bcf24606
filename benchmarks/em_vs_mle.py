#!/usr/bin/env python
"""EM against gradient-based maximum likelihood (Adam, L-BFGS) on the SARCOS test split.

The exercise's set-up, from one start for every method:

    Y = jaxssm.datasets.load_sarcos("test").inputs      # [4449, 21]
    params, ys = jaxssm.datasets.exercise_setup(Y, jax.random.PRNGKey(--seed), dtype=float64)
    # m0 = Y[0], ys = Y[1:] (output row k = data row k), H = I,
    # R = P0 = kron(diag(0.01, 0.01, 1), I_7), A = 0, Q = 0.01 diag(u), u ~ U(0, 1)^21

and update = ("A", "Q"), float64. Methods: ``jaxssm.fit_em`` (closed-form M-step),
``jaxssm.fit_mle`` with ``optax.adam(--adam-lr)`` and with ``optax.lbfgs()`` (zoom line search),
all compiled as one loop over iterations. The published ``results/em_vs_mle.*`` and the
README's numbers come from ``python benchmarks/em_vs_mle.py`` (seed 0, 100 iterations): the
same start as ``jaxssm fit`` and the README's EM snippet (``exercise_setup`` draws ``u`` in
float32 and casts, so the start is also the same in float32 and float64).

Timing (``workloads.time_call``): each method's whole loop is compiled ahead of time
(``jax.jit(...).lower().compile()`` around the public call: the "compile" column), then run
``--runs`` times, each ended by ``block_until_ready``; "time / iter" is the median run time
divided by the iterations. The
wall-time axis places iteration ``i`` at ``i x (time / iter)``: the loops are compiled, so
per-iteration times are not observable. That is exact for EM and Adam (every iteration does
the same work) and an average for L-BFGS, whose line search evaluates the filter and its
gradient a varying number of times per iteration.

``info.log_likelihoods[i]`` of every method (``EMInfo``, ``MLEInfo``) is ``log p(y | theta_i)``
before iteration ``i``; the trace plotted here appends ``info.log_likelihood``, that of the
returned parameters, so it has ``n + 1`` points.

Usage (from the repository root)::

    python benchmarks/em_vs_mle.py               # 100 iterations each, a few minutes on 2 cores
    python benchmarks/em_vs_mle.py --quick       # a few iterations, a smoke test
    python benchmarks/em_vs_mle.py --iters 300 --out benchmarks/results/local/

Writes ``em_vs_mle.png``, ``em_vs_mle.md`` and ``em_vs_mle.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # the benchmark's choice; the library never does this

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import workloads  # noqa: E402

import jaxssm as ssm  # noqa: E402

UPDATE = ("A", "Q")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "local"


def exercise_start(seed: int) -> tuple[ssm.LGSSM, jax.Array, str]:
    """The exercise's model and white-noise start on the SARCOS test split (float64)."""
    data = ssm.datasets.load_sarcos("test")
    key = jax.random.PRNGKey(seed)
    params, ys = ssm.datasets.exercise_setup(data.inputs, key, dtype=jnp.float64)
    return params, ys, data.name


def run_method(name, fit, params, ys, runs):
    """Compile ahead of time, run ``runs`` times; return the trace and the timings.

    ``fit(params, ys)`` calls a public fitting function, which returns ``(params, info)``;
    wrapping it in ``jax.jit`` compiles the whole loop once (its validation runs at trace
    time, on shapes and dtypes).
    """
    t = workloads.time_call(fit, params, ys, runs=runs, warmup_below=0.0)
    fitted, info = t.out
    compile_time, run_time, times = t.compile_s, t.median_s, t.times_s
    lls = np.asarray(info.log_likelihoods, dtype=np.float64)
    if hasattr(info, "num_iters"):  # EM: entries after an early stop are NaN
        lls = lls[: int(info.num_iters)]
    # info.log_likelihood is computed inside the compiled loop, where the SPD check of concrete
    # covariances does not run: a fitted Q may be numerically singular (the maximum can lie on
    # the boundary), which ssm.log_likelihood would reject.
    final = float(info.log_likelihood)
    trace = np.append(lls, final)
    min_eig_q = float(np.linalg.eigvalsh(np.asarray(fitted.Q))[0])
    print(
        f"  {name}: final log-lik {final:.3f}, run {run_time:.2f} s, compile "
        f"{compile_time:.2f} s, min eig Q {min_eig_q:.3g}",
        flush=True,
    )
    n = trace.size - 1
    return dict(
        name=name,
        trace=trace,
        time=np.arange(n + 1) * (run_time / n),
        min_eig_q=min_eig_q,
        run_time=run_time,
        run_times=times,
        cpu_time=statistics.median(t.cpu_times_s),
        compile_time=compile_time,
    )


def value_at(r, t):
    """Log-likelihood of the iterate a method holds at wall time ``t``, and whether it ended."""
    k = int(np.searchsorted(r["time"], t, side="right")) - 1
    return float(r["trace"][max(k, 0)]), bool(t > r["time"][-1] + 1e-9)


def checkpoints(results, fractions=(0.05, 0.1, 0.25, 0.5, 1.0)):
    """Rows ``(t, {name: (log-lik, ended)}, leader among the methods still running)``."""
    t_end = max(r["time"][-1] for r in results)
    times = sorted({float(f * t_end) for f in fractions} | {float(r["time"][-1]) for r in results})
    rows = []
    for t in times:
        values = {r["name"]: value_at(r, t) for r in results}
        running = {k: v for k, (v, ended) in values.items() if not ended}
        top = max(running.values()) if running else None
        leaders = [k for k, v in running.items() if v == top]
        rows.append((t, values, " = ".join(leaders) if leaders else "-"))
    return rows


def first_reach(r, target):
    """Iteration and time at which ``r``'s trace first reaches ``target`` (or None)."""
    hit = np.nonzero(r["trace"] >= target)[0]
    if hit.size == 0:
        return None, None
    i = int(hit[0])
    return i, float(r["time"][i])


def write_outputs(out, results, meta):
    out.mkdir(parents=True, exist_ok=True)
    best = max(float(np.max(r["trace"])) for r in results)
    em = next(r for r in results if r["name"] == "EM")
    em_final = float(em["trace"][-1])

    # --- figure -------------------------------------------------------------------------------
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    styles = {"EM": "C0", "Adam": "C1", "L-BFGS": "C2"}
    for r in results:
        it = np.arange(r["trace"].size)
        gap = np.maximum(best - r["trace"], 1.0)
        kw = dict(color=styles[r["name"]], label=r["name"], lw=1.5)
        axs[0, 0].plot(it, r["trace"], **kw)
        axs[0, 1].plot(r["time"], r["trace"], **kw)
        axs[1, 0].semilogy(it, gap, **kw)
        axs[1, 1].semilogy(r["time"], gap, **kw)
    # The start (white noise, A = 0) is far below: show the upper part of the range.
    lo = min(float(np.quantile(r["trace"], 0.05)) for r in results)
    for ax in axs[0]:
        ax.set_ylim(lo, best + 0.02 * (best - lo))
        ax.set_ylabel("log p(y | theta)")
    for ax in axs[1]:
        ax.set_ylabel("best log-lik found - log-lik (nats, floor 1)")
    for ax in axs[:, 0]:
        ax.set_xlabel("iteration")
    for ax in axs[:, 1]:
        ax.set_xlabel("wall time after compilation (s)")
    for ax in axs.ravel():
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"EM vs gradient MLE, update={UPDATE}: SARCOS test split, N={meta['N']}, D={meta['D']}, "
        f"float64, {meta['device']}"
    )
    png = out / "em_vs_mle.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    # --- table --------------------------------------------------------------------------------
    lines = [
        "# EM vs gradient-based MLE on SARCOS",
        "",
        f'Data: `{meta["data"]}` via `jaxssm.datasets.load_sarcos("test")`; m0 = Y[0], '
        f"ys = Y[1:] (N = {meta['N']}, D = Dy = {meta['D']}). Model: H = I, "
        "R = P0 = kron(diag(0.01, 0.01, 1), I_7); start A = 0, Q = 0.01 diag(u), "
        f"u ~ U(0, 1) (`jaxssm.datasets.exercise_setup`, key `PRNGKey({meta['seed']})`). "
        'update = ("A", "Q"), float64.',
        "",
        f"Device: {meta['device']} ({meta['cpu_count']} cores), jax {meta['jax']}, "
        f"optax {meta['optax']}, {meta['date']}. Load average at start: {meta['load']} "
        "(the machine may be shared). Time / iter: median of "
        f"{meta['runs']} run(s) after compilation, divided by the iterations; CPU / iter: the "
        "process's CPU time (all threads) over the same run(s), less sensitive to other load.",
        "",
        f"Adam: `optax.adam({meta['adam_lr']})`. L-BFGS: `optax.lbfgs()` (memory 10, zoom line "
        "search). EM: `jaxssm.fit_em`. The MLE objective is -log p(y) / N; log-likelihoods "
        "are reported unnormalised.",
        "",
        "| method | iterations | final log-lik | final - EM final | time / iter (ms) | "
        "CPU / iter (ms) | total (s) | compile (s) | reaches EM's final at iter (time) | "
        "min eig of Q |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        n = r["trace"].size - 1
        i, t = first_reach(r, em_final)
        reach = "-" if i is None else f"{i} ({t:.1f} s)"
        lines.append(
            f"| {r['name']} | {n} | {r['trace'][-1]:.3f} | {r['trace'][-1] - em_final:+.3f} | "
            f"{1e3 * r['run_time'] / n:.1f} | {1e3 * r['cpu_time'] / n:.1f} | "
            f"{r['run_time']:.2f} | {r['compile_time']:.1f} | "
            f"{reach} | {r['min_eig_q']:.2g} |"
        )
    names = [r["name"] for r in results]
    lines += [
        "",
        "Log-likelihood of the current iterate at equal wall time after compilation ('ended': "
        "that method had finished its iterations; its final value is shown):",
        "",
        "| wall time (s) | " + " | ".join(names) + " | leader (among those running) |",
        "| ---: | " + " | ".join("---:" for _ in names) + " | --- |",
    ]
    for t, values, leader in checkpoints(results):
        cells = [f"{v:.0f}" + (" (ended)" if ended else "") for v, ended in values.values()]
        lines.append(f"| {t:.2f} | " + " | ".join(cells) + f" | {leader} |")
    lines += [
        "",
        f"Start log-likelihood: {results[0]['trace'][0]:.3f}. Time / iter and the wall-time "
        "axis exclude compilation. 'min eig of Q': the smallest eigenvalue of the returned Q; "
        "a value at round-off level (or slightly negative) means the returned Q is numerically "
        "singular; jaxssm accepts it (covariances are checked to be positive semi-definite "
        "within round-off relative to their scale). The log-likelihoods here are the fits' "
        "own, computed inside the compiled loops.",
        "",
    ]
    md = out / "em_vs_mle.md"
    md.write_text("\n".join(lines))

    payload = dict(
        meta=meta,
        results=[
            dict(
                name=r["name"],
                log_likelihoods=r["trace"].tolist(),
                wall_time=r["time"].tolist(),
                run_time_s=r["run_time"],
                run_times_s=r["run_times"],
                cpu_time_s=r["cpu_time"],
                compile_time_s=r["compile_time"],
                min_eig_q=r["min_eig_q"],
            )
            for r in results
        ],
    )
    (out / "em_vs_mle.json").write_text(json.dumps(payload, indent=1))
    return png, md


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument(
        "--iters",
        type=int,
        default=None,
        help="iterations for every method (default 100; --quick: 5)",
    )
    parser.add_argument("--em-iters", type=int, default=None, help="override for EM")
    parser.add_argument("--adam-iters", type=int, default=None, help="override for Adam")
    parser.add_argument("--lbfgs-iters", type=int, default=None, help="override for L-BFGS")
    parser.add_argument("--quick", action="store_true", help="a few iterations, one timed run")
    parser.add_argument(
        "--runs", type=int, default=None, help="timed runs after compilation (default 1)"
    )
    parser.add_argument("--adam-lr", type=float, default=5e-2, help="Adam's learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial Q")
    args = parser.parse_args(argv)

    iters = args.iters if args.iters is not None else (5 if args.quick else 100)
    runs = args.runs if args.runs is not None else 1
    n_em = args.em_iters or iters
    n_adam = args.adam_iters or iters
    n_lbfgs = args.lbfgs_iters or iters
    if min(iters, n_em, n_adam, n_lbfgs) < 1 or runs < 1:
        parser.error("iteration counts and --runs must be >= 1")

    params, ys, data_name = exercise_start(args.seed)
    N, D = ys.shape
    device = jax.devices()[0]
    info = workloads.machine_info()
    meta = dict(
        data=data_name,
        N=int(N),
        D=int(D),
        seed=args.seed,
        update=list(UPDATE),
        dtype="float64",
        adam_lr=args.adam_lr,
        runs=runs,
        device=f"{device.platform.upper()} ({platform.processor() or platform.machine()})",
        cpu_count=os.cpu_count(),
        jax=info["jax"],
        optax=optax.__version__,
        date=info["date"],
        load=", ".join(f"{x:.1f}" for x in info["load_average_at_start"]),
        iterations=dict(EM=n_em, Adam=n_adam, LBFGS=n_lbfgs),
    )
    print(
        f"SARCOS test split: N={N}, D={D}, start log-lik "
        f"{float(ssm.log_likelihood(params, ys)):.3f}",
        flush=True,
    )

    adam = optax.adam(args.adam_lr)
    lbfgs = optax.lbfgs()
    methods = [
        ("EM", lambda p, y: ssm.fit_em(p, y, num_iters=n_em, update=UPDATE)),
        ("Adam", lambda p, y: ssm.fit_mle(p, y, optimizer=adam, num_iters=n_adam, update=UPDATE)),
        (
            "L-BFGS",
            lambda p, y: ssm.fit_mle(p, y, optimizer=lbfgs, num_iters=n_lbfgs, update=UPDATE),
        ),
    ]
    results = [run_method(name, fit, params, ys, runs) for name, fit in methods]

    png, md = write_outputs(args.out, results, meta)
    print(md.read_text())
    print(f"wrote {png} and {md}", file=sys.stderr)


if __name__ == "__main__":
    main()
