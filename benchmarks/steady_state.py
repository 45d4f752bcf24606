#!/usr/bin/env python
"""The steady-state fast path against the full sequential E-step, and EM with it.

Two workloads, float64, sequential, on whatever device JAX picks (report says which):

- ``dense``: the random dense stable model of all the benchmarks
  (``workloads.random_dense_model(21)``: ``D = Dy = 21``, spectral radius 0.95, ``H = I``)
  and ``N = 44,484`` steps simulated from it; EM starts from its true ``m0, P0, H, R`` with
  the exercise's white-noise ``A, Q``;
- ``sarcos``: the exercise's set-up (``jaxssm.datasets.exercise_setup``: ``m0 = Y[0]``,
  ``ys = Y[1:]``, ``H = I``, ``R = P0 = kron(diag(0.01, 0.01, 1), I_7)``, white-noise start
  ``A = 0``, ``Q = 0.01 diag(u)``) on the SARCOS stand-in of 44,484 rows
  (``jaxssm.datasets.sarcos_stand_in``: the 4,449-row test split played forward and backward;
  the training split is not available offline), so ``N = 44,483`` steps.

The white-noise ``u`` comes from ``jax.random.PRNGKey(--seed)`` through
``jaxssm.datasets.exercise_setup``, the one builder of the exercise's start.

For each workload it measures (``workloads.time_call``: compiled ahead of time, then the
median of ``--runs`` calls, each ended by ``block_until_ready``):

1. the E-step through the fast path (``jaxssm.e_step(steady_state=True)``) and through the
   full sequential recursion (``steady_state=False``), and the largest relative difference
   between the two (both at the parameters of the EM start and, for ``dense``, at the true
   parameters), with the transient lengths of the fast path;
2. one EM iteration (``e_step`` + ``m_step`` for ``(A, Q)``), fast and full;
3. ``--iters`` EM iterations (default 100) of ``jaxssm.fit_em(steady_state=True)``, compiled
   apart and timed once compiled; then, untimed, the transient lengths of every iteration and
   whether any iteration fell back to the full recursion, and the E-step of item 1 again at
   the parameters EM ended with (the longest transient).

The transient lengths are the one internal diagnostic used here (:func:`steady_info`, from
``jaxssm._schedules.steady``); everything timed goes through public names.

dynamax's EM iteration at this size is quoted from ENVIRONMENT.md (1.6 s, measured on the same
kind of 2-core machine, not in this run).

Usage::

    python benchmarks/steady_state.py [--workloads dense sarcos] [--iters 100] [--runs 3]
        [--num-steps 44484] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # a script may; the library never does

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import workloads  # noqa: E402

import jaxssm as ssm  # noqa: E402
from jaxssm._schedules import settle as _settle  # noqa: E402  the one internal: the fast path's diagnostics

DYNAMAX_EM_ITERATION_S = 1.6  # ENVIRONMENT.md: dynamax 1.0.3, N = 44,484, D = 21, f64, CPU
UPDATE = ("A", "Q")
FAST, FULL = {"steady_state": True}, {"steady_state": False}


def steady_info(params: ssm.LGSSM, num_steps: int):
    """The fast path's transients for ``params`` over ``num_steps`` steps (a ``SteadyInfo``).

    The one internal this script needs: ``_schedules.steady.smoother_side(params, T).info`` with
    ``T = jaxssm._schedules.steady.transient_bound(N)``, the diagnostics the fast path computes for
    itself (``num_transient``, ``filter_transient``, ``smoother_transient``, ``converged``:
    False means the full recursion ran).
    """
    return _settle.smoother_side(params, _settle.transient_bound(num_steps)).info


def exercise_start(Y: np.ndarray, seed: int):
    return ssm.datasets.exercise_setup(Y, jax.random.PRNGKey(seed), dtype=jnp.float64)


def sarcos_workload(num_rows: int, seed: int):
    data = ssm.datasets.sarcos_stand_in(num_rows)
    params, ys = exercise_start(np.asarray(data.inputs, np.float64), seed)
    return params, ys, None, data.name


def dense_workload(num_steps: int, seed: int):
    model = workloads.random_dense_model(21)
    ys = workloads.simulate(model, num_steps)
    true = ssm.LGSSM(*(jnp.asarray(x) for x in model))
    white = exercise_start(ys, seed).params  # only its A = 0 and Q = 0.01 diag(u) are used
    start = true._replace(A=white.A, Q=white.Q)
    source = "simulated from a random dense stable model (D = 21, spectral radius 0.95, H = I)"
    return start, jnp.asarray(ys), true, source


def max_rel_diff(a, b) -> float:
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300)))
    return worst


def estep(kw):
    return lambda p, y: ssm.e_step(p, y, **kw)


def em_iteration(kw):
    def one(params, ys):
        stats, ll = ssm.e_step(params, ys, **kw)
        return ssm.m_step(params, stats, UPDATE), ll

    return one


def compare_estep(params, ys, runs: int) -> dict:
    """E-step fast vs full at ``params``: times, largest difference, transients."""
    fast = workloads.time_call(estep(FAST), params, ys, runs=runs)
    full = workloads.time_call(estep(FULL), params, ys, runs=runs)
    info = steady_info(params, ys.shape[0])
    diff = max_rel_diff(fast.out, full.out)  # every statistic and the log-likelihood
    return {
        "fast_compile_s": fast.compile_s,
        "fast_median_s": fast.median_s,
        "fast_runs_s": fast.times_s,
        "full_compile_s": full.compile_s,
        "full_median_s": full.median_s,
        "full_runs_s": full.times_s,
        "speedup": full.median_s / fast.median_s,
        "max_rel_diff": diff,
        "num_transient": int(info.num_transient),
        "filter_transient": int(info.filter_transient),
        "smoother_transient": int(info.smoother_transient),
        "fast_path_ran": bool(info.converged),
    }


def print_estep(label: str, e: dict, runs: int) -> None:
    print(
        f"E-step at the {label}: fast {e['fast_median_s'] * 1e3:.1f} ms, full "
        f"{e['full_median_s'] * 1e3:.0f} ms (median of {runs}; compile {e['fast_compile_s']:.1f}"
        f" s / {e['full_compile_s']:.1f} s) -> {e['speedup']:.1f}x; transients filter "
        f"{e['filter_transient']}, smoother {e['smoother_transient']} (bound "
        f"{e['num_transient']}), fast path ran: {e['fast_path_ran']}; max rel diff "
        f"{e['max_rel_diff']:.1e}",
        flush=True,
    )


def transients_along(params, ys, num_iters: int):
    """EM's iterates (``e_step`` + ``m_step``, as ``fit_em`` runs them) and their transients."""
    N = ys.shape[0]

    def body(p, _):
        stats, ll = ssm.e_step(p, ys, **FAST)
        info = steady_info(p, N)
        trace = (ll, info.filter_transient, info.smoother_transient, info.converged)
        return ssm.m_step(p, stats, UPDATE), trace

    final, trace = jax.jit(lambda p: jax.lax.scan(body, p, None, length=num_iters))(params)
    return final, [np.asarray(a) for a in trace]


def run_workload(name: str, args) -> dict:
    if name == "sarcos":
        params, ys, true, source = sarcos_workload(args.num_steps, args.seed)
    else:
        params, ys, true, source = dense_workload(args.num_steps, args.seed)
    N, D = ys.shape
    print(f"\n== {name}: N = {N}, D = Dy = {D}, float64; data: {source}", flush=True)
    res: dict = {"workload": name, "N": N, "D": D, "source": source}

    # 1. E-step, fast vs full, at the EM start (and at the true model).
    at = {"start": params} if true is None else {"start": params, "true model": true}
    for label, p in at.items():
        res[f"estep_at_{label.replace(' ', '_')}"] = e = compare_estep(p, ys, args.runs)
        print_estep(label, e, args.runs)

    # 2. One EM iteration (E-step + M-step), fast and full.
    fast = workloads.time_call(em_iteration(FAST), params, ys, runs=args.runs)
    full = workloads.time_call(em_iteration(FULL), params, ys, runs=args.runs)
    fi, gi = fast.median_s, full.median_s
    res["em_iteration"] = {
        "fast_median_s": fi,
        "fast_runs_s": fast.times_s,
        "full_median_s": gi,
        "full_runs_s": full.times_s,
        "speedup_vs_full": gi / fi,
        "speedup_vs_dynamax_quoted": DYNAMAX_EM_ITERATION_S / fi,
    }
    print(
        f"one EM iteration: fast {fi * 1e3:.1f} ms, full {gi * 1e3:.0f} ms ({gi / fi:.1f}x); "
        f"dynamax (quoted, {DYNAMAX_EM_ITERATION_S} s) / fast = "
        f"{DYNAMAX_EM_ITERATION_S / fi:.1f}x",
        flush=True,
    )

    # 3. fit_em on the fast path (one compiled loop), then its transients, untimed.
    def fit(p, y):
        return ssm.fit_em(p, y, num_iters=args.iters, update=UPDATE, **FAST)

    loop = workloads.time_call(fit, params, ys, runs=1, warmup_below=0.0)
    fitted, info = loop.out
    final, (_, ft, stt, conv) = transients_along(params, ys, args.iters)
    lls = np.append(np.asarray(info.log_likelihoods), float(info.log_likelihood))
    res["estep_at_em_result"] = e = compare_estep(fitted, ys, args.runs)
    print_estep("EM result", e, args.runs)
    dec = np.diff(lls)
    total = loop.median_s
    res["em_loop"] = {
        "iters": args.iters,
        "compile_s": loop.compile_s,
        "compiled_s": total,
        "per_iteration_s": total / args.iters,
        "status": int(info.status),
        "log_likelihoods": lls.tolist(),  # theta_0 .. theta_iters
        "largest_decrease": float(max(0.0, -dec.min())) if dec.size else 0.0,
        "filter_transients": ft.tolist(),
        "smoother_transients": stt.tolist(),
        "fallback_iterations": np.flatnonzero(~conv).tolist(),
        "spectral_radius_A_final": float(np.max(np.abs(np.linalg.eigvals(np.asarray(fitted.A))))),
        "scan_matches_fit_em": max_rel_diff(final, fitted),
    }
    print(
        f"{args.iters} EM iterations (fit_em, fast path): compile {loop.compile_s:.2f} s, "
        f"{total:.2f} s compiled ({total / args.iters * 1e3:.1f} ms/iter); log p(y) "
        f"{lls[0]:.6g} -> {lls[-1]:.6g}, largest decrease "
        f"{res['em_loop']['largest_decrease']:.3g}, status "
        f"{ssm.EMStatus(int(info.status)).name}",
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

    header = workloads.machine_info()
    header.update(dtype="float64", runs=args.runs, jaxssm=ssm.__version__)
    header.update(default_max_transient=_settle.DEFAULT_MAX_TRANSIENT)
    header.update(default_rtol=_settle.default_rtol(jnp.float64))
    header["dynamax_em_iteration_s_quoted"] = DYNAMAX_EM_ITERATION_S
    print(json.dumps(header))
    results = {"header": header, "workloads": [run_workload(w, args) for w in args.workloads]}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
