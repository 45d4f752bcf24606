#!/usr/bin/env python
"""The score by Fisher's identity against reverse mode through the filter, in one process.

Workload: the exercise's set-up (``jaxssm.datasets.exercise_setup``: ``m0 = Y[0]``,
``ys = Y[1:]``, ``H = I``, ``R = P0 = kron(diag(0.01, 0.01, 1), I_7)``) on the SARCOS stand-in
(``jaxssm.datasets.sarcos_stand_in``: the bundled test split played forward and backward; the
training split is not in the repository) of ``N + 1`` rows, so ``N`` steps (default 44,484),
``D = Dy = 21``, float64, on the CPU. The gradient is taken with respect to ``(A, Q)`` (the
exercise's ``update``) at two points: the exercise's white-noise start and
``jaxssm.initialize``'s regression start (near the maximum, where a fit spends its time).

Timed, each the median of ``--runs`` calls after compilation (both wrapped in ``jax.jit``, so
that neither pays for the eager argument checks):

- ``score``: ``jaxssm.score(params, ys, update=("A", "Q"))``, one E-step (smoother and
  statistics) and the gradient of EM's closed-form objective;
- ``reverse``: ``jax.grad`` of ``jaxssm.log_likelihood`` with respect to ``(A, Q)``;
- ``one path`` (default schedule only): ``jax.grad`` of the log-likelihood through the
  steady-state fast path alone (``dispatch.run(..., paths=Paths.FAST)``, what ``fit``'s
  boundary stage differentiates on fully observed data): reverse mode through the public
  ``log_likelihood``, whose program holds both paths and a ``lax.cond``, pays for the
  residuals of both;
- for scale, ``log_likelihood`` alone and ``e_step`` alone.

Each on the default schedule (``steady_state=None``: the steady-state fast path at this N) and
on the full sequential recursion (``steady_state=False``). The two gradients are also compared
(max relative difference per field), so a timing never stands for a wrong answer.

Writes ``results/score.json`` and ``results/score.md`` (``--out``).

Usage::

    python benchmarks/score.py [--num-steps 44484] [--runs 7] [--out benchmarks/results]
    python benchmarks/score.py --markdown-only [results folder]  # rewrite score.md from score.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # a script may; the library never does

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import workloads  # noqa: E402

import jaxssm as ssm  # noqa: E402
from jaxssm import datasets  # noqa: E402
from jaxssm._args.schedule import resolve  # noqa: E402
from jaxssm._schedules import dispatch  # noqa: E402

HERE = Path(__file__).resolve().parent
UPDATE = ("A", "Q")


def _programs(steady_state):
    def score(p, y):
        s = ssm.score(p, y, update=UPDATE, steady_state=steady_state)
        return s.A, s.Q

    def reverse(p, y):
        def ll(free):
            return ssm.log_likelihood(p._replace(**free), y, steady_state=steady_state)

        g = jax.grad(ll)({"A": p.A, "Q": p.Q})
        return g["A"], g["Q"]

    def one_path(p, y):
        def ll(free):
            value, _ = dispatch.run(
                dispatch.Kind.LOG_LIKELIHOOD,
                p._replace(**free),
                y,
                resolve("sequential", None),
                paths=dispatch.Paths.FAST,
            )
            return value

        g = jax.grad(ll)({"A": p.A, "Q": p.Q})
        return g["A"], g["Q"]

    def loglik(p, y):
        return ssm.log_likelihood(p, y, steady_state=steady_state)

    def estep(p, y):
        return ssm.e_step(p, y, steady_state=steady_state)

    progs = {"score": score, "reverse": reverse, "log_likelihood": loglik, "e_step": estep}
    if steady_state is None:
        progs["one_path"] = one_path
    return progs


def _rel_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-steps", type=int, default=workloads.SARCOS_TRAIN_STEPS)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)

    Y = np.asarray(datasets.sarcos_stand_in(args.num_steps + 1).inputs[:, :21], np.float64)
    white, ys = datasets.exercise_setup(Y, jax.random.key(0), dtype=jnp.float64)
    start = ssm.initialize(white, ys, update=UPDATE)
    points = {"white-noise start": white, "initialize start": start}
    info = workloads.machine_info()
    print(f"N = {ys.shape[0]}, D = 21, float64, {info['device']}, jax {info['jax']}", flush=True)

    rows = []
    for steady in (None, False):
        progs = _programs(steady)
        for point, params in points.items():
            row = {"steady_state": steady, "point": point}
            for name, fn in progs.items():
                t = workloads.time_call(fn, params, ys, runs=args.runs)
                row[f"{name}_s"] = t.median_s
                row[f"{name}_compile_s"] = t.compile_s
                row[f"{name}_times_s"] = t.times_s
                if name in ("score", "reverse", "one_path"):
                    row[f"{name}_out"] = t.out
            row["ratio"] = row["reverse_s"] / row["score_s"]
            if "one_path_out" in row:
                one = row.pop("one_path_out")
                row["rel_diff_one_path"] = max(
                    _rel_diff(one[0], row["reverse_out"][0]),
                    _rel_diff(one[1], row["reverse_out"][1]),
                )
            row["rel_diff_A"] = _rel_diff(row.pop("score_out")[0], row["reverse_out"][0])
            row["rel_diff_Q"] = _rel_diff(
                ssm.score(params, ys, update=UPDATE, steady_state=steady).Q,
                row.pop("reverse_out")[1],
            )
            print(
                f"steady_state={steady!s:5} {point:18}: score {row['score_s'] * 1e3:8.1f} ms, "
                f"reverse {row['reverse_s'] * 1e3:8.1f} ms, ratio {row['ratio']:.1f}x "
                f"(log_likelihood {row['log_likelihood_s'] * 1e3:.1f} ms, e_step "
                f"{row['e_step_s'] * 1e3:.1f} ms); max rel diff A {row['rel_diff_A']:.1e}, "
                f"Q {row['rel_diff_Q']:.1e}",
                flush=True,
            )
            rows.append(row)

    result = {
        "benchmark": "score",
        "workload": (
            f"exercise set-up on jaxssm.datasets.sarcos_stand_in({args.num_steps + 1}) "
            "(STAND-IN, not the training split)"
        ),
        "num_steps": int(ys.shape[0]),
        "dim": 21,
        "dtype": "float64",
        "update": list(UPDATE),
        "runs": args.runs,
        "machine": info,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "score.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "score.md").write_text(_markdown(result))
    return result


def _markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Score by Fisher's identity vs reverse mode through the filter",
        "",
        f"{result['workload']}, N = {result['num_steps']:,}, D = Dy = {result['dim']}, "
        f"{result['dtype']}, gradient w.r.t. (A, Q). {m['device_kind']} ({m['cpu_count']} "
        f"cores, load {m['load_average_at_start'][0]:.1f} at start), jax {m['jax']}, "
        f"{m['date']}. Median of {result['runs']} runs after compilation (both under "
        "`jax.jit`).",
        "",
        "| schedule | point | score (ms) | jax.grad(log_likelihood) (ms) | ratio | "
        "jax.grad, fast path alone (ms) | log_likelihood (ms) | e_step (ms) | "
        "max rel diff A / Q |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        sched = "steady-state (default)" if r["steady_state"] is None else "sequential (full)"
        one = (
            f"{r['one_path_s'] * 1e3:.1f} (equal to {r['rel_diff_one_path']:.0e})"
            if "one_path_s" in r
            else "-"
        )
        lines.append(
            f"| {sched} | {r['point']} | {r['score_s'] * 1e3:.1f} | {r['reverse_s'] * 1e3:.1f} "
            f"| {r['ratio']:.1f}x | {one} | {r['log_likelihood_s'] * 1e3:.1f} | "
            f"{r['e_step_s'] * 1e3:.1f} | {r['rel_diff_A']:.0e} / {r['rel_diff_Q']:.0e} |"
        )
    first = [r for r in result["rows"] if r["point"] == result["rows"][0]["point"]]
    lines += [
        "",
        "Compilation (s), score / reverse (the second point reuses the programs): "
        + "; ".join(
            f"{'default' if r['steady_state'] is None else 'full'}: "
            f"{r['score_compile_s']:.1f} / {r['reverse_compile_s']:.1f}"
            for r in first
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--markdown-only"]:  # rewrite score.md from score.json
        out = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "results"
        (out / "score.md").write_text(_markdown(json.loads((out / "score.json").read_text())))
    else:
        main(sys.argv[1:])
