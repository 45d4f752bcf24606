#!/usr/bin/env python
"""Time to the maximum likelihood: plain EM, SQUAREM-accelerated EM, ``fit`` and L-BFGS.

The exercise's set-up on the SARCOS test split (``--standin``: the 44,484-step stand-in;
``--simulated``: 44,484 steps drawn from ``fit``'s maximum on the test split, a series the
model class can produce),
learning ``(A, Q)`` in float64, from two starts: the exercise's white noise
(``exercise_setup(Y, PRNGKey(--seed))``) and ``jaxssm.initialize`` (the regression start).
Side by side in one process, each method compiled first (``lower().compile()``, or a warm-up
call for ``fit``), then run once and timed with ``block_until_ready``:

* plain EM: ``jaxssm.fit_em(num_iters=--plain-iters)``;
* accelerated EM: ``squarem_loop`` (``jaxssm._learn.accelerate``) over the public E-step and
  M-step, ``--accel-iters`` E-steps, no stopping rule (its whole trajectory);
* ``jaxssm.fit`` with its defaults (stops by itself): accelerated EM, then (where ``Q``'s
  eigenvalues vanish) the boundary stage, L-BFGS on exact gradients with those directions held
  at zero. Its trace is the EM stage's E-steps then the boundary stage's gradient
  evaluations; the time to a target is the measured total apportioned by the measured cost of
  one E-step and of one gradient (``value_and_grad(log_likelihood)``, timed separately);
* ``jaxssm.fit_mle(optimizer=optax.lbfgs())``, ``--mle-iters`` iterations;
* a long SQUAREM run from the initialize start (``--reference-iters`` E-steps; 0 skips it);
* ``fit`` with a tight tolerance from the initialize start (``tol=1e-12``, up to
  ``--reference-grads`` gradients; 0 skips it): the boundary stage run to round-off, which
  sets the best log-likelihood (the maximum sits on the boundary where ``Q`` turns singular:
  EM-based runs crawl towards it and stay below).

The target is the best log-likelihood any run reaches (``best``); a method's time to it is
the first E-step (iteration) whose running maximum is within 0.1 nat, or within ``1e-6
|best|``, times its measured time per E-step (the loops are compiled: one E-step costs the
same throughout). A plain-EM run that does not get there is **extrapolated**: the gap
``best - ll(n)`` over the last half of its trace is fitted by a power law ``c n^-p``
(log-log least squares) and solved for the target; those cells say "extrapolated".

Usage (from the repository root)::

    python benchmarks/time_to_max.py                 # SARCOS test split, ~15-30 min on 2 cores
    python benchmarks/time_to_max.py --quick         # small budgets, a smoke test
    python benchmarks/time_to_max.py --standin       # the 44,484-step stand-in
    python benchmarks/time_to_max.py --simulated     # 44,484 steps drawn from the test fit
    python benchmarks/time_to_max.py --render        # the page's table again from its JSON

Writes ``time_to_max.json`` and ``time_to_max.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxssm as ssm  # noqa: E402
from jaxssm._learn.accelerate import squarem_loop  # noqa: E402
from jaxssm._learn.initialize import initialize  # noqa: E402

UPDATE = ("A", "Q")


def _timed(compiled, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - t


def run_plain(params, ys, iters):
    fn = jax.jit(lambda p: ssm.fit_em(p, ys, num_iters=iters, update=UPDATE))
    t = time.perf_counter()
    compiled = fn.lower(params).compile()
    compile_s = time.perf_counter() - t
    (q, info), secs = _timed(compiled, params)
    trace = np.append(np.asarray(info.log_likelihoods), float(info.log_likelihood))
    return dict(trace=trace, e_steps=iters + 1, seconds=secs, compile_s=compile_s)


def run_accel(params, ys, iters):
    def em_map(p):
        stats, ll = ssm.e_step(p, ys)
        return ssm.m_step(p, stats, UPDATE), ll

    fn = jax.jit(lambda p: squarem_loop(em_map, p, update=UPDATE, max_iters=iters))
    t = time.perf_counter()
    compiled = fn.lower(params).compile()
    compile_s = time.perf_counter() - t
    (q, info), secs = _timed(compiled, params)
    n = int(info.num_e_steps)
    return dict(
        trace=np.asarray(info.log_likelihoods)[:n],
        e_steps=n,
        seconds=secs,
        compile_s=compile_s,
        rejected=int(info.num_rejected),
        extrapolations=int(info.num_extrapolations),
    )


def unit_costs(params, ys, reps=5):
    """Seconds of one compiled E-step and of one exact gradient (reverse mode), median."""
    e_step = jax.jit(lambda p: ssm.e_step(p, ys)).lower(params).compile()
    grad = jax.jit(jax.value_and_grad(lambda p: ssm.log_likelihood(p, ys))).lower(params).compile()
    out = []
    for fn in (e_step, grad):
        times = [_timed(fn, params)[1] for _ in range(reps)]
        out.append(float(np.median(times)))
    return out


def run_fit(params, ys, max_iters, start="auto"):
    t = time.perf_counter()
    # compiles the programs
    ssm.fit(params, ys, update=UPDATE, tol=1e-2, max_iters=max_iters, start=start)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    q, info = ssm.fit(params, ys, update=UPDATE, max_iters=max_iters, start=start)
    jax.block_until_ready(q)
    secs = time.perf_counter() - t
    n = int(info.num_e_steps)
    g = int(info.num_grad_evals)
    em = np.asarray(info.log_likelihoods)
    finite = np.nonzero(np.isfinite(em))[0]
    em = em[: finite[-1] + 1] if len(finite) else em[:0]
    boundary = np.asarray(info.grad_log_likelihoods)
    t_e, t_g = unit_costs(q, ys)
    # The EM stage's E-steps, its extra passes (scaled gradients, truncation tests) at the
    # end of the stage, then the boundary stage's gradients; scaled to the measured total.
    costs = np.concatenate([np.full(len(em), t_e), np.full(len(boundary), t_g)])
    costs[len(em) - 1 if len(em) else 0] += (n - len(em)) * t_e
    costs = np.cumsum(costs) * secs / ((n * t_e + g * t_g) or 1.0)
    trace = np.concatenate([em, boundary]) if g else np.append(em, float(info.log_likelihood))
    if not g:
        costs = np.append(costs, secs)
    # 50 more plain EM iterations from fit's answer: how much is left on the table.
    _, more = ssm.fit_em(q, ys, num_iters=50, update=UPDATE)
    return dict(
        trace=trace,
        costs=costs,
        num_em_entries=len(em),
        e_steps=n,
        grad_evals=g,
        seconds_per_e_step=t_e,
        seconds_per_grad=t_g,
        rank_dropped=info.rank_dropped,
        boundary_slope=float(info.boundary_slope),
        seconds=secs,
        compile_s=compile_s,
        status=info.status.name,
        grad_norm=float(info.grad_norm),
        final=float(info.log_likelihood),
        gain_50_em=float(more.log_likelihood) - float(info.log_likelihood),
        rejected=int(info.num_rejected),
        extrapolations=int(info.num_extrapolations),
        aic=float(info.aic),
        bic=float(info.bic),
        num_free_params=info.num_free_params,
        start_used=info.start,
    )


def run_fit_params(params, ys, max_iters):
    return run_fit(params, ys, max_iters, start="params")


def run_fit_tight(params, ys, grads):
    t = time.perf_counter()
    q, info = ssm.fit(params, ys, update=UPDATE, tol=1e-12, max_grad_evals=grads)
    secs = time.perf_counter() - t
    em = np.asarray(info.log_likelihoods)
    em = em[np.isfinite(em)]
    return dict(
        trace=np.concatenate([em, np.asarray(info.grad_log_likelihoods)]),
        e_steps=int(info.num_e_steps),
        grad_evals=int(info.num_grad_evals),
        seconds=secs,
        compile_s=0.0,
        status=info.status.name,
        grad_norm=float(info.grad_norm),
        rank_dropped=info.rank_dropped,
        boundary_slope=float(info.boundary_slope),
    )


def run_lbfgs(params, ys, iters):
    fn = jax.jit(
        lambda p: ssm.fit_mle(p, ys, optimizer=optax.lbfgs(), num_iters=iters, update=UPDATE)
    )
    t = time.perf_counter()
    compiled = fn.lower(params).compile()
    compile_s = time.perf_counter() - t
    (q, info), secs = _timed(compiled, params)
    trace = np.append(np.asarray(info.log_likelihoods), float(info.log_likelihood))
    return dict(trace=trace, e_steps=None, iterations=iters, seconds=secs, compile_s=compile_s)


def dynamax_rows(rows, num_steps, cpu_json):
    """Derived rows for dynamax's EM: plain EM's iterations to each target (the same
    iterates: dynamax's fit_em is plain EM, here restricted to the same fields) times
    dynamax's measured seconds per EM iteration at N = 44,484 from ``cpu.json``
    (``benchmarks/run.py``; dynamax is not installed here), scaled linearly to ``num_steps``.
    """
    try:
        cells = json.loads(cpu_json.read_text())["results"]
        cell = next(
            c
            for c in cells
            if c["spec"]["impl"] == "dynamax"
            and c["spec"]["op"] == "em_iter"
            and c["spec"]["dtype"] == "float64"
            and c.get("median_s")
        )
    except (OSError, KeyError, StopIteration, ValueError):
        return []
    per = float(cell["median_s"]) * num_steps / int(cell["spec"]["N"])
    out = []
    for row in rows:
        if row["method"] != "plain EM":
            continue
        new = dict(start=row["start"], method="dynamax EM (derived)", seconds=None)
        new.update(e_steps=None, final=None, gap=None, compile_s=None, seconds_per_iter=per)
        for label in ("0.1nat", "1e-6rel"):
            k = row.get(f"steps_{label}")
            new[f"steps_{label}"] = k
            new[f"time_{label}"] = None if k is None else k * per
            new[f"how_{label}"] = "derived" if k is not None else "not reached"
        out.append(new)
    return out


def first_within(trace, best, eps):
    run = np.fmax.accumulate(np.where(np.isfinite(trace), trace, -np.inf))
    hit = np.nonzero(run >= best - eps)[0]
    return int(hit[0]) + 1 if len(hit) else None


def extrapolate(trace, best, eps):
    """Steps for a power-law fit ``best - ll(n) = c n^-p`` of the last half to reach ``eps``."""
    n = np.arange(1, len(trace) + 1)
    gap = best - np.fmax.accumulate(trace)
    keep = (n > len(trace) // 2) & (gap > 0)
    if keep.sum() < 10:
        return None
    slope, icpt = np.polyfit(np.log(n[keep]), np.log(gap[keep]), 1)
    if slope >= 0:
        return None
    return float(np.exp((np.log(eps) - icpt) / slope))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--standin", action="store_true")
    ap.add_argument(
        "--simulated",
        action="store_true",
        help="44,484 steps drawn from fit's maximum on the test split",
    )
    ap.add_argument("--plain-iters", type=int, default=1500)
    ap.add_argument("--accel-iters", type=int, default=2001)
    ap.add_argument("--fit-iters", type=int, default=4000)
    ap.add_argument("--mle-iters", type=int, default=100)
    ap.add_argument(
        "--reference-iters",
        type=int,
        default=0,
        help="a long SQUAREM run from the initialize start (0: none)",
    )
    ap.add_argument(
        "--reference-grads",
        type=int,
        default=1000,
        help="gradient budget of the tight fit from initialize that sets the best (0: none)",
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--starts", default="white,initialize")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument(
        "--render",
        action="store_true",
        help="rewrite the table of --out's page from its JSON (keeping the notes below it)",
    )
    args = ap.parse_args()
    if args.render:
        stem = _stem(args)
        rerender(Path(args.out) / f"{stem}.json", Path(args.out) / f"{stem}.md")
        return
    if args.quick:
        args.plain_iters, args.accel_iters, args.fit_iters, args.mle_iters = 60, 60, 300, 5
        args.reference_iters = args.reference_grads = 0

    data = ssm.datasets.sarcos_stand_in(44485) if args.standin else ssm.datasets.load_sarcos("test")
    white, ys = ssm.datasets.exercise_setup(
        data.inputs, jax.random.PRNGKey(args.seed), dtype=jnp.float64
    )
    truth_ll = None
    if args.simulated:
        # A series the model class can produce, of the training split's length: drawn from
        # fit's maximum on the test split (the stand-in plays the test split backwards too,
        # where positions run against the recorded velocities).
        truth, _ = ssm.fit(white, ys, update=UPDATE)
        _, ys = ssm.sample(jax.random.key(args.seed), truth, 44484)
        white = white._replace(m0=truth.m0)
        truth_ll = float(ssm.log_likelihood(truth, ys))
    starts = {"white": white, "initialize": initialize(white, ys, update=UPDATE)}
    runs = {}
    for name in args.starts.split(","):
        p = starts[name]
        for method, fn, iters in (
            ("plain EM", run_plain, args.plain_iters),
            ("SQUAREM EM", run_accel, args.accel_iters),
            ("fit", run_fit, args.fit_iters),
            ("fit, start='params'", run_fit_params, args.fit_iters),
            ("L-BFGS (fit_mle)", run_lbfgs, args.mle_iters),
            ("SQUAREM EM, long (reference)", run_accel, args.reference_iters),
            ("fit, tol 1e-12 (reference)", run_fit_tight, args.reference_grads),
        ):
            if iters <= 0 or ("reference" in method and name != "initialize"):
                continue
            if method.startswith("fit, start") and name != "white":
                continue  # from initialize, start="params" and "auto" start at the same point
            r = fn(p, ys, iters)
            r["start_ll"] = float(ssm.log_likelihood(p, ys))
            runs[(name, method)] = r
            print(
                f"{name:10s} {method:30s} {r['seconds']:8.1f} s  best {np.nanmax(r['trace']):.4f}",
                flush=True,
            )
    best = max(float(np.nanmax(r["trace"])) for r in runs.values())

    rows = []
    for (start, method), r in runs.items():
        per = r["seconds"] / len(r["trace"])
        row = dict(
            start=start,
            method=method,
            seconds=r["seconds"],
            compile_s=r["compile_s"],
            e_steps=r["e_steps"],
            final=float(np.nanmax(r["trace"])),
            gap=best - float(np.nanmax(r["trace"])),
        )
        for label, eps in (("0.1nat", 0.1), ("1e-6rel", 1e-6 * abs(best))):
            k = first_within(r["trace"], best, eps)
            if k is not None and "costs" in r:  # fit: E-steps then gradients
                e = min(k, r["num_em_entries"])
                row[f"steps_{label}"] = e if k <= r["num_em_entries"] else r["e_steps"]
                row[f"grads_{label}"] = max(0, k - r["num_em_entries"])
                row[f"time_{label}"] = float(r["costs"][k - 1])
                row[f"how_{label}"] = "measured"
            elif k is not None:
                row[f"steps_{label}"], row[f"time_{label}"], row[f"how_{label}"] = (
                    k,
                    k * per,
                    "measured",
                )
            elif method == "plain EM":
                k = extrapolate(r["trace"], best, eps)
                row[f"steps_{label}"] = k
                row[f"time_{label}"] = None if k is None else k * per
                row[f"how_{label}"] = "extrapolated" if k is not None else "not reached"
            else:
                row[f"steps_{label}"], row[f"time_{label}"], row[f"how_{label}"] = (
                    None,
                    None,
                    "not reached",
                )
        for key in (
            "grad_evals",
            "rank_dropped",
            "boundary_slope",
            "seconds_per_e_step",
            "seconds_per_grad",
            "status",
            "start_used",
            "grad_norm",
            "gain_50_em",
            "rejected",
            "extrapolations",
            "aic",
            "bic",
            "num_free_params",
        ):
            if key in r:
                row[key] = r[key]
        rows.append(row)
    rows += dynamax_rows(rows, int(ys.shape[0]), Path(__file__).parent / "results" / "cpu.json")
    # fit against plain EM from the same start: time (and E-step equivalents) to each target.
    for row in rows:
        if not row["method"].startswith("fit") or "reference" in row["method"]:
            continue
        plain = next(
            (x for x in rows if x["start"] == row["start"] and x["method"] == "plain EM"), None
        )
        dyn = next(
            (x for x in rows if x["start"] == row["start"] and x["method"].startswith("dynamax")),
            None,
        )
        for label in ("0.1nat", "1e-6rel"):
            a, b = (plain or {}).get(f"time_{label}"), row.get(f"time_{label}")
            row[f"ratio_plain_{label}"] = a / b if a and b else None
            a = (dyn or {}).get(f"time_{label}")
            row[f"ratio_dynamax_{label}"] = a / b if a and b else None

    meta = dict(
        device=f"CPU ({os.cpu_count()} cores, shared with other jobs: timings noisy)",
        platform=platform.platform(),
        jax=jax.__version__,
        dtype="float64",
        data=(
            "stand-in 44,484 steps"
            if args.standin
            else "simulated 44,484 steps"
            if args.simulated
            else "SARCOS test split"
        ),
        truth_log_likelihood=truth_ll,
        N=int(ys.shape[0]),
        D=int(ys.shape[1]),
        update=list(UPDATE),
        best=best,
        args=vars(args),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = _stem(args)
    (out / f"{stem}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    (out / f"{stem}.md").write_text(render(meta, rows))
    print(render(meta, rows))


#: Extrapolated E-step counts beyond this are printed as "over 10^9".
_NEVER_EXP = 9
_NEVER = 10.0**_NEVER_EXP


def _stem(args) -> str:
    if args.standin:
        return "time_to_max_standin"
    return "time_to_max_simulated" if args.simulated else "time_to_max"


def rerender(json_path: Path, md_path: Path) -> None:
    """Rewrite ``md_path``'s table from ``json_path``; the notes after the table are kept."""
    saved = json.loads(json_path.read_text())
    old = md_path.read_text() if md_path.exists() else ""
    cut = old.find("\nNotes")
    md_path.write_text(render(saved["meta"], saved["rows"]) + (old[cut:] if cut >= 0 else ""))


def _f(x, fmt="{:.1f}"):
    return "-" if x is None else fmt.format(x)


def render(meta, rows):
    lines = [
        f"# Time to the maximum likelihood ({meta['data']}, N = {meta['N']:,}, D = {meta['D']}, "
        f"update A, Q, {meta['dtype']})",
        "",
        f"Device: {meta['device']}; jax {meta['jax']}. Best log-likelihood reached by any run: "
        f"**{meta['best']:.4f}**"
        + (
            f" (the model the series was drawn from: {meta['truth_log_likelihood']:.4f})"
            if meta.get("truth_log_likelihood") is not None
            else ""
        )
        + ". Time after compilation; time to target = E-steps to target x "
        "measured time per E-step (L-BFGS: per iteration). 'extrapolated': power-law fit of "
        "plain EM's last half (see the script).",
        "",
        "| start | method | E-steps run | seconds | final log-lik | gap to best "
        "| to 0.1 nat: steps / s | to 1e-6 rel: steps / s | notes |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        notes = []
        for key in (
            "status",
            "start_used",
            "grad_norm",
            "gain_50_em",
            "grad_evals",
            "rank_dropped",
            "boundary_slope",
            "ratio_plain_0.1nat",
            "ratio_plain_1e-6rel",
            "ratio_dynamax_0.1nat",
            "extrapolations",
            "rejected",
            "seconds_per_iter",
        ):
            if r.get(key) is not None:
                notes.append(
                    f"{key} {r[key]:.3g}" if isinstance(r[key], float) else f"{key} {r[key]}"
                )
        cells = []
        for label in ("0.1nat", "1e-6rel"):
            s, t, how = r.get(f"steps_{label}"), r.get(f"time_{label}"), r.get(f"how_{label}")
            c = f"{_f(s, '{:,.0f}')} / {_f(t)}"
            if r.get(f"grads_{label}"):
                c = f"{_f(s, '{:,.0f}')} E + {r[f'grads_{label}']} G / {_f(t)}"
            if how in ("extrapolated", "derived") and s is not None and s > _NEVER:
                # A power law fitted to a run that levels off below the target (another
                # maximum) solves for absurd counts: say only that it is beyond any budget.
                c = f"over 10^{_NEVER_EXP} ({how})"
            elif how in ("extrapolated", "derived"):
                c += f" ({how})"
            elif how == "not reached":
                c = "not reached"
            cells.append(c)
        lines.append(
            f"| {r['start']} | {r['method']} | {_f(r['e_steps'], '{:,}')} | {_f(r['seconds'])} | "
            f"{_f(r['final'], '{:.4f}')} | {_f(r['gap'], '{:.4f}')} | {cells[0]} | {cells[1]} "
            f"| {'; '.join(notes)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
