"""The square-root form (issue 35): float32 accuracy where the covariance form fails, and cost.

Usage (from the repository root)::

    python benchmarks/sqrt_form.py [--N-stiff 3000] [--N-cost 44484] [--runs 3]
        [--out benchmarks/results]

**Accuracy** (float32 against float64 on the same float32-rounded data; the data are drawn
from the model with ``P0 = I`` in float64 and rounded to float32 for both runs):

* the stiff model of the issue: a 4-times integrated Wiener process (D = 5,
  :func:`jaxssm.priors.iwp`), dt = 0.005, positions observed with R = 1e-8, ``P0 = I``,
  N = 3,000 (key 0), and its first 300 steps. Over 3,000 steps the positions reach 424
  while their posterior sd is 1.3e-5: float32 cannot hold such a mean to its sd (its spacing
  at 424 is 3e-5), so means and log-likelihood carry that floor in either form; over 300
  steps (the same draw's start, positions below 2.75) they do not, and the forms'
  difference shows in them too;
* vague priors: a random walk plus noise (Q = 1, R = 0.1) with ``P0 = 1e6`` and ``1e7``, and
  a local linear trend (Q = diag(0.1, 0.01), R = 1) with ``P0 = 1e7 I``, N = 100.

For each, the smoother in float32 with ``form="cov"`` and ``form="sqrt"`` on the sequential
and the parallel schedule and with ``steady_state=True`` (the schedule column says whether
the fast path applied or the fallback ran): negative smoothed
variances, NaNs, the log-likelihood's error (relative and in nats), the largest relative
error of a smoothed variance and the largest error of a smoothed mean in units of the exact
posterior standard deviation.

**Cost**: filter + RTS smoother at SARCOS size (D = Dy = 21, N = 44,484, simulated from a
random dense stable model), float64 and float32: ``form="sqrt"`` against ``form="cov"`` on
the full sequential recursion (``steady_state=False``, the like-for-like comparison), the
covariance form's default (the steady-state fast path) and the square-root form's
steady-state fast path (``steady_state=True``; ``fast_path`` in the JSON says it applied),
median of ``--runs`` calls after
compilation, interleaved round by round (the ratio: the median of per-round ratios); with
``--parallel-cost N`` also both forms on the parallel schedule at that
``N`` (on CPU the square-root elements' QR is a loop: slow, and not what the parallel
schedule is for). Writes ``sqrt_form.json`` and ``sqrt_form.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from workloads import machine_info, random_dense_model, simulate  # noqa: E402

import jaxssm as ssm  # noqa: E402
from jaxssm._args.schedule import resolve  # noqa: E402
from jaxssm._schedules import dispatch  # noqa: E402


def _case_models():
    A, Q = (np.asarray(x) for x in ssm.priors.iwp(4, 0.005))
    H = np.zeros((1, 5))
    H[0, 0] = 1.0
    stiff = dict(m0=np.zeros(5), A=A, Q=Q, H=H, R=np.array([[1e-8]]))
    rw = dict(m0=np.zeros(1), A=np.eye(1), Q=np.eye(1), H=np.eye(1), R=0.1 * np.eye(1))
    llt = dict(
        m0=np.zeros(2),
        A=np.array([[1.0, 1.0], [0.0, 1.0]]),
        Q=np.diag([0.1, 0.01]),
        H=np.array([[1.0, 0.0]]),
        R=np.eye(1),
    )
    return stiff, rw, llt


def _errors(run, exact) -> dict:
    var = np.diagonal(np.asarray(run.covs, np.float64), axis1=1, axis2=2)
    var64 = np.diagonal(np.asarray(exact.covs), axis1=1, axis2=2)
    with np.errstate(invalid="ignore"):
        mean_sd = np.abs(np.asarray(run.means, np.float64) - np.asarray(exact.means)) / np.sqrt(
            var64
        )
        var_rel = np.abs(var / var64 - 1)
    ll, ll64 = float(run.log_likelihood), float(exact.log_likelihood)
    return dict(
        negative_variances=int(np.sum(var < 0)),
        nans=int(np.sum(np.isnan(var)) + np.sum(np.isnan(np.asarray(run.means)))),
        log_likelihood=ll,
        log_likelihood_float64=ll64,
        ll_abs_err=abs(ll - ll64),
        ll_rel_err=abs(ll - ll64) / abs(ll64),
        max_var_rel_err=float(np.nanmax(var_rel)) if np.any(np.isfinite(var_rel)) else None,
        max_mean_err_sd=float(np.nanmax(mean_sd)) if np.any(np.isfinite(mean_sd)) else None,
        median_mean_err_sd=float(np.nanmedian(mean_sd)) if np.any(np.isfinite(mean_sd)) else None,
        # from row 2 on: after the two steps that identify a vague initial state
        max_var_rel_err_from_row2=_nanmax(var_rel[2:]),
        max_mean_err_sd_from_row2=_nanmax(mean_sd[2:]),
    )


def _nanmax(x):
    return float(np.nanmax(x)) if np.any(np.isfinite(x)) else None


def accuracy(name: str, fields: dict, P0: np.ndarray, N: int) -> list[dict]:
    m0, A, Q, H, R = (np.asarray(fields[k], np.float64) for k in ("m0", "A", "Q", "H", "R"))
    D = A.shape[0]
    truth = ssm.LGSSM(*(jnp.asarray(x) for x in (m0, np.eye(D), A, Q, H, R)))
    _, ys = ssm.sample(jax.random.key(0), truth, N)
    ys32 = np.asarray(ys).astype(np.float32)
    p64 = ssm.LGSSM(*(jnp.asarray(x) for x in (m0, P0, A, Q, H, R)))
    p32 = ssm.LGSSM(*(jnp.asarray(x, jnp.float32) for x in (m0, P0, A, Q, H, R)))
    exact = ssm.rts_smoother(p64, jnp.asarray(ys32, jnp.float64), steady_state=False)
    rows = []
    forms = (
        ("cov", "sequential"),
        ("sqrt", "sequential"),
        ("cov", "parallel"),
        ("sqrt", "parallel"),
        ("cov", "steady"),
        ("sqrt", "steady"),
    )
    for form, method in forms:
        row = dict(case=name, N=N, form=form, method=method)
        if method == "steady":  # steady_state=True, through the dispatcher for its info
            schedule = resolve("sequential", True, form)
            run, info = dispatch.run(dispatch.Kind.SMOOTH, p32, jnp.asarray(ys32), schedule)
            row |= _errors(run, exact) | dict(fast_path=bool(info.fast_path))
            row["method"] = "steady (fast path)" if row["fast_path"] else "steady (fallback)"
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
            continue
        steady = False if method == "sequential" else None
        try:
            run = ssm.rts_smoother(p32, ys32, method=method, steady_state=steady, form=form)
            row |= _errors(run, exact)
        except ValueError as e:  # the library reports a NaN log-likelihood as an error
            row |= dict(error=str(e).split(":")[1].strip(), nans=-1, negative_variances=-1)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def cost(N: int, runs: int, parallel: bool = False) -> list[dict]:
    model = random_dense_model(21)
    ys = simulate(model, N)
    rows = []
    cases = (
        ("cov, full recursion", "cov", False, "sequential"),
        ("sqrt (full recursion)", "sqrt", False, "sequential"),
        ("cov, default (steady-state fast path)", "cov", None, "sequential"),
        ("sqrt, steady_state=True (steady-state fast path)", "sqrt", True, "sequential"),
    )
    if parallel:
        cases = (
            ("cov, full recursion", "cov", False, "parallel"),
            ("sqrt (full recursion)", "sqrt", False, "parallel"),
        )
    for dtype in (jnp.float64, jnp.float32):
        params = ssm.LGSSM(*(jnp.asarray(x, dtype) for x in model))
        y = jnp.asarray(ys, dtype)
        compiled, compile_s, fast_path = {}, {}, {}
        for label, form, steady, method in cases:

            def smoother(p, yy, f=form, s=steady, m=method):
                return ssm.rts_smoother(p, yy, steady_state=s, form=f, method=m)

            t0 = time.perf_counter()
            compiled[label] = jax.jit(smoother).lower(params, y).compile()
            compile_s[label] = time.perf_counter() - t0
            if steady is not False:  # whether the steady-state fast path applies here
                sched = resolve(method, steady, form)
                info = dispatch.run(dispatch.Kind.SMOOTH, params, y, sched)[1]
                fast_path[label] = bool(info.fast_path)
            jax.block_until_ready(compiled[label](params, y))  # warm-up
        # Interleaved rounds (one call of each case per round): on a shared machine the load
        # drifts, and a ratio of calls made side by side is steadier than one of medians
        # taken minutes apart.
        times = {label: [] for label in compiled}
        for _ in range(runs):
            for label, fn in compiled.items():
                t0 = time.perf_counter()
                jax.block_until_ready(fn(params, y))
                times[label].append(time.perf_counter() - t0)
        base = times[cases[0][0]]
        steady_base = times.get("cov, default (steady-state fast path)")
        for label, _, _, method in cases:
            row = dict(
                method=method,
                N=N,
                dtype=jnp.dtype(dtype).name,
                case=label,
                median_s=statistics.median(times[label]),
                times_s=times[label],
                compile_s=compile_s[label],
                ratio_to_cov_full=statistics.median(
                    [t / b for t, b in zip(times[label], base, strict=True)]
                ),
            )
            if label in fast_path:
                row["fast_path"] = fast_path[label]
            if steady_base is not None:
                row["ratio_to_cov_steady"] = statistics.median(
                    [t / b for t, b in zip(times[label], steady_base, strict=True)]
                )
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    return rows


def _fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--N-stiff", type=int, default=3000)
    ap.add_argument("--N-cost", type=int, default=44_484)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parallel-cost", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    info = machine_info()

    stiff, rw, llt = _case_models()
    acc = accuracy("stiff IWP(4), dt=0.005, R=1e-8, P0=I", stiff, np.eye(5), args.N_stiff)
    acc += accuracy("the same, first 300 steps", stiff, np.eye(5), 300)
    acc += accuracy("random walk, P0=1e6", rw, 1e6 * np.eye(1), 100)
    acc += accuracy("random walk, P0=1e7", rw, 1e7 * np.eye(1), 100)
    acc += accuracy("local linear trend, P0=1e7 I", llt, 1e7 * np.eye(2), 100)
    costs = cost(args.N_cost, args.runs)
    if args.parallel_cost:
        costs += cost(args.parallel_cost, args.runs, parallel=True)

    lines = [
        "# The square-root form (issue 35)",
        "",
        f"- Command: `python benchmarks/sqrt_form.py --N-stiff {args.N_stiff} "
        f"--N-cost {args.N_cost} --runs {args.runs} --parallel-cost {args.parallel_cost}`",
        f"- {info['device']}; jax {info['jax']}; {info['cpu_count']} CPUs; load at start "
        f"{info['load_average_at_start']}; {info['date']}",
        "",
        "## float32 accuracy (against float64 on the same float32 data)",
        "",
        "| case | form | schedule | negative variances | NaN | log-lik. (f32) | log-lik. "
        "(f64) | rel. error | max var. rel. error | max mean error (sd) | the same two "
        "from row 2 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in acc:
        if "error" in r:
            lines.append(
                f"| {r['case']} | {r['form']} | {r['method']} | error: {r['error']} |" + " |" * 7
            )
            continue
        lines.append(
            f"| {r['case']} | {r['form']} | {r['method']} | {r['negative_variances']} | "
            f"{r['nans']} | {r['log_likelihood']:.6g} | {r['log_likelihood_float64']:.6g} | "
            f"{r['ll_rel_err']:.2g} | {_fmt(r['max_var_rel_err'], '.2g')} | "
            f"{_fmt(r['max_mean_err_sd'], '.3g')} | "
            f"{_fmt(r['max_var_rel_err_from_row2'], '.2g')}, "
            f"{_fmt(r['max_mean_err_sd_from_row2'], '.3g')} |"
        )
    lines += [
        "",
        "## Cost: filter + RTS smoother, D = Dy = 21",
        "",
        f"Median of {args.runs} calls after compilation and a warm-up (seconds), the cases "
        "interleaved call by call; the ratio is the median of the per-round ratios.",
        "",
        "| schedule | N | dtype | case | median (s) | ratio to cov, full recursion | ratio to "
        "cov, steady-state fast path | compile (s) |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in costs:
        lines.append(
            f"| {r['method']} | {r['N']:,} | {r['dtype']} | {r['case']} | {r['median_s']:.3f} | "
            f"{r['ratio_to_cov_full']:.2f} | {_fmt(r.get('ratio_to_cov_steady'), '.2f')} | "
            f"{r['compile_s']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sqrt_form.md").write_text(text)
        out = {"machine": info, "args": vars(args) | {"out": str(args.out)}}
        out |= {"accuracy": acc, "cost": costs}
        (args.out / "sqrt_form.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
