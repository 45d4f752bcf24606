"""Cost of missing entries on the default path (issue: missing data).

Usage (from the repository root)::

    python benchmarks/missing_data.py [--N 44484] [--D 21] [--runs 3] [--out benchmarks/results]

At ``N`` steps and ``D = Dy`` dimensions (float64, simulated from a random dense stable
model; the SARCOS stand-in is not needed here), times filter + RTS smoother and one EM
iteration (E-step + M-step of A, Q) in one process, side by side, for: the fully observed
series on the default path (steady-state fast path), the same with 1% of rows missing at
random, with one 500-step gap, and the fully observed series on the full recursion
(``steady_state=False``). A series with any NaN takes the full sequential recursion (the
steady-state covariances do not hold after a gap), so the two gappy rows are expected to
cost what the full recursion costs. Reports medians after compilation and ratios against
the fully observed default path, as markdown on stdout and in ``missing_data.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from workloads import machine_info, random_dense_model, simulate, time_call  # noqa: E402

import jaxssm as ssm  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--N", type=int, default=44_484)
    ap.add_argument("--D", type=int, default=21)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    model = random_dense_model(args.D)
    ys = simulate(model, args.N)
    params = ssm.LGSSM(*(jnp.asarray(x) for x in model))
    cases = {
        "fully observed, default": (ys, None),
        "1% rows missing, default": (ssm.datasets.knock_out(ys, rows=0.01, seed=1), None),
        "one 500-step gap, default": (
            ssm.datasets.knock_out(ys, gaps=[(args.N // 2, 500)]),
            None,
        ),
        "fully observed, full recursion": (ys, False),
    }

    def smoother(p, y, steady):
        return ssm.rts_smoother(p, y, steady_state=steady)

    def em_iteration(p, y, steady):
        stats, ll = ssm.e_step(p, y, steady_state=steady)
        return ssm.m_step(p, stats, update=("A", "Q")), ll

    rows = []
    for name, (y, steady) in cases.items():
        y = jnp.asarray(y)
        row = {"case": name, "missing_rows": int(np.sum(np.all(np.isnan(np.asarray(y)), 1)))}
        for op, fn in (("filter+smoother", smoother), ("EM iteration", em_iteration)):
            t = time_call(lambda p, yy, f=fn, s=steady: f(p, yy, s), params, y, runs=args.runs)
            row[op] = t.median_s
            row[op + " compile"] = t.compile_s
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    base = rows[0]
    info = machine_info()
    lines = [
        "# Missing entries on the default path",
        "",
        f"- Command: `python benchmarks/missing_data.py --N {args.N} --D {args.D} "
        f"--runs {args.runs}`",
        f"- {info.get('device', '')} ; jax {jax.__version__}; float64; N = {args.N:,}, "
        f"D = Dy = {args.D}; median of {args.runs} calls after compilation; date "
        f"{info.get('date', '')}",
        "",
        "| case | all-NaN rows | filter+smoother (s) | ratio | EM iteration (s) | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['missing_rows']} | {r['filter+smoother']:.3f} | "
            f"{r['filter+smoother'] / base['filter+smoother']:.1f} | {r['EM iteration']:.3f} | "
            f"{r['EM iteration'] / base['EM iteration']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "missing_data.md").write_text(text)
        (args.out / "missing_data.json").write_text(json.dumps({"machine": info, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
