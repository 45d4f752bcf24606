"""The EM loop with the data-only statistics computed once per fit, against once per iteration.

Standalone (needs only jaxssm and its dependencies)::

    python benchmarks/data_sums.py                 # N = 44,484, D = 21, float64, 25 rounds
    python benchmarks/data_sums.py --quick         # N = 4,096, 3 rounds (smoke test)
    python benchmarks/data_sums.py --out DIR       # default benchmarks/results/local/

On fully observed data an eager ``fit_em`` plans its E-steps with the data-only sums
(``jaxssm._schedules.plan.prepare_stats``): ``D = (1/N) sum y y^T`` (and, with inputs,
``U``, ``YU``) is computed once, before the loop, in place of the E-step's own. This script
compiles that program and the same program without the sums in the plan (the statistic
recomputed by every E-step, as before)
for ``update=("A", "Q")`` (nothing reads ``D``: XLA drops it either way, so the two should
tie) and ``update=("A", "Q", "H", "R")`` (the R M-step reads ``D``), each for ``--k1`` and
``--k2`` iterations (``tol=None``: all run). It then times them in rounds in one process,
the two variants' order alternating from round to round; a round's time per iteration is
``(t(k2) - t(k1)) / (k2 - k1)``, so compilation and the once-per-fit work drop out. It
reports the medians, the median of the paired ratios (once per fit / once per iteration,
round by round: the machine's drift cancels), the time of the hoisted product ``ys^T ys``
alone, and the largest relative difference of the fitted parameters between the two
programs.

Workload: the exercise's set-up (``jaxssm.datasets.exercise_setup``) on the SARCOS stand-in
(``jaxssm.datasets.sarcos_stand_in``), as ``em_floor.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import workloads

HERE = Path(__file__).resolve().parent
UPDATES = {"A, Q": ("A", "Q"), "A, Q, H, R": ("A", "Q", "H", "R")}


def measure(args) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxssm as ssm
    from jaxssm._learn import em as _em
    from jaxssm._schedules import plan as _plan

    data = ssm.datasets.sarcos_stand_in(args.num_steps + 1)
    start, ys = ssm.datasets.exercise_setup(jnp.asarray(data.inputs), jax.random.PRNGKey(0))
    ys = jax.block_until_ready(jnp.asarray(ys))
    options = dict(tol=None, decrease_rtol=_em.default_decrease_rtol(ys.dtype), callback=None)
    # The fast path alone, with the data sums of the plan (observed) or without them.
    plan = _plan.prepare_stats(start, ys, None, "auto")
    plans = {True: plan, False: dataclasses.replace(plan, sums=None)}
    progs = {}
    for label, update in UPDATES.items():
        for observed in (False, True):
            for k in (args.k1, args.k2):
                progs[label, observed, k] = _em._fit_jit.lower(
                    start, plans[observed], None, num_iters=k, update=update, **options
                ).compile()

    per_iter = {key: [] for key in ((label, obs) for label in UPDATES for obs in (False, True))}
    fitted = {}
    for r in range(args.rounds):
        for label in UPDATES:
            for observed in (False, True) if r % 2 == 0 else (True, False):  # order alternates
                times = {}
                for k in (args.k1, args.k2):
                    t = time.perf_counter()
                    program = progs[label, observed, k]
                    out = jax.block_until_ready(program(start, plans[observed], None))
                    times[k] = time.perf_counter() - t
                per_iter[label, observed].append(
                    (times[args.k2] - times[args.k1]) / (args.k2 - args.k1) * 1e3
                )
                fitted[label, observed] = out[0].best

    gram = jax.jit(lambda y: y.T @ y)
    jax.block_until_ready(gram(ys))
    gram_ms = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        jax.block_until_ready(gram(ys))
        gram_ms.append((time.perf_counter() - t) * 1e3)

    rows = {}
    for label in UPDATES:
        every, once = np.array(per_iter[label, False]), np.array(per_iter[label, True])
        diff = max(
            float(np.max(np.abs(np.asarray(x) - np.asarray(z))) / np.max(np.abs(np.asarray(z))))
            for x, z in zip(fitted[label, True], fitted[label, False], strict=True)
            if z is not None
        )
        rows[label] = dict(
            every_iteration_ms=float(np.median(every)),
            once_per_fit_ms=float(np.median(once)),
            paired_ratio=float(np.median(once / every)),
            every_iteration_range_ms=[float(every.min()), float(every.max())],
            once_per_fit_range_ms=[float(once.min()), float(once.max())],
            max_rel_param_diff=diff,
        )
    return dict(
        num_steps=args.num_steps,
        dim=int(ys.shape[-1]),
        k1=args.k1,
        k2=args.k2,
        rounds=args.rounds,
        gram_ms=float(np.median(gram_ms)),
        rows=rows,
    )


def render(result: dict) -> str:
    m = result["machine"]
    r = result["measured"]
    lines = [
        "# EM loop: data-only statistics once per fit vs once per iteration",
        "",
        f"`python benchmarks/data_sums.py` on {m['device_kind']} ({m['cpu_count']} cores), "
        f"jax {m['jax']}, {m['date']}, "
        f"float64, N = {r['num_steps']:,}, D = {r['dim']}, {r['rounds']} alternating rounds, "
        f"per iteration = (t({r['k2']}) - t({r['k1']})) / {r['k2'] - r['k1']}.",
        "",
        "| update | once per iteration (ms) | once per fit (ms) | paired ratio | "
        "max rel. param diff |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, row in r["rows"].items():
        lines.append(
            f"| {label} | {row['every_iteration_ms']:.2f} "
            f"({row['every_iteration_range_ms'][0]:.2f}-{row['every_iteration_range_ms'][1]:.2f})"
            f" | {row['once_per_fit_ms']:.2f} "
            f"({row['once_per_fit_range_ms'][0]:.2f}-{row['once_per_fit_range_ms'][1]:.2f})"
            f" | {row['paired_ratio']:.3f} | {row['max_rel_param_diff']:.1e} |"
        )
    lines += [
        "",
        f"The hoisted product `ys^T ys` alone: {r['gram_ms']:.2f} ms (median).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=workloads.SARCOS_TRAIN_STEPS)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--k1", type=int, default=10)
    parser.add_argument("--k2", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="N = 4,096, 3 rounds")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "local")
    parser.add_argument("--name", default="data_sums")
    args = parser.parse_args()
    if args.quick:
        args.num_steps, args.rounds = 4096, 3
    result = dict(machine=workloads.machine_info(), measured=measure(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = render(result)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
