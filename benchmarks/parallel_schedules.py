"""Sequential vs time-parallel Kalman filter and RTS smoother: CPU time and float32 error.

Standalone (needs only jaxssm and its dependencies)::

    python benchmarks/parallel_schedules.py --quick          # smoke run, N = 1,000 only
    python benchmarks/parallel_schedules.py                  # N = 1,000, 10,000, 44,484
    python benchmarks/parallel_schedules.py --out DIR        # default benchmarks/results/local/

What is measured
----------------
- **Time.** For each N, dtype (float64, float32), schedule (``sequential``: the full
  covariance recursion, ``steady_state=False``, a ``lax.scan``; ``parallel``:
  ``method="parallel"``, ``lax.associative_scan``) and operation (``filter``:
  ``jaxssm.kalman_filter``; ``smoother``: ``jaxssm.rts_smoother``, gains and log-likelihood
  included), timed by ``workloads.time_call``: compiled ahead of time (the *compile* column),
  then the median of ``--runs`` calls with ``block_until_ready`` (the *run* column). When the
  first call takes under a second it is an untimed warm-up; slower first calls are counted.
- **float32 error** at the largest N: both schedules' float32 smoothers against the float64
  sequential smoother: the largest relative error of the smoothed means
  (``max_k |m32_k - m64_k|_2 / |m64_k|_2``, and the largest entry error over the largest
  entry), the log-likelihood's relative error, the number of non-finite values, and the
  smallest eigenvalue of every filtered and smoothed covariance (``numpy.linalg.eigvalsh``
  in float64; a covariance whose smallest eigenvalue is <= 0 is counted as not positive
  definite). The float64 parallel smoother is compared the same way.

Model: ``workloads.random_dense_model(21)``, the random dense stable model of all the
benchmarks (spectral radius 0.95, random SPD ``Q``, ``R``, ``P0``, ``H = I``: all 21
coordinates observed, as in the SARCOS exercise), and data drawn from it by
``workloads.simulate``. Dense matrices on purpose: the exercise's block-structured prior
splits into seven 3-dim problems (see ENVIRONMENT.md). The published
``results/parallel_schedules.*`` were made before this script shared that model (with its own:
``P0 = I``, ``m0 ~ 10 N(0, I)``, ``Q`` eigenvalues in [0.02, 0.12]); a new run differs from
them by that model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import workloads

D = 21
FULL_N = (1_000, 10_000, 44_484)
QUICK_N = (1_000,)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000 only (about 2 minutes)")
    parser.add_argument("--N", type=int, nargs="+", help="override the list of N")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per cell (median)")
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "local"))
    parser.add_argument("--name", default=None, help="file stem (default quick / full)")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)  # float64 cells need it; float32 cells cast
    import jax.numpy as jnp

    import jaxssm as ssm

    Ns = tuple(args.N) if args.N else (QUICK_N if args.quick else FULL_N)
    name = args.name or ("quick" if args.quick else "full")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    full, par = {"steady_state": False}, {"method": "parallel"}
    programs = {
        ("sequential", "filter"): lambda p, y: ssm.kalman_filter(p, y, **full),
        ("sequential", "smoother"): lambda p, y: ssm.rts_smoother(p, y, **full),
        ("parallel", "filter"): lambda p, y: ssm.kalman_filter(p, y, **par),
        ("parallel", "smoother"): lambda p, y: ssm.rts_smoother(p, y, **par),
    }

    model64 = workloads.random_dense_model(D)
    ys64 = workloads.simulate(model64, max(Ns))
    meta = workloads.machine_info()
    meta.update(D=D, Dy=D, Ns=list(Ns), runs=args.runs)
    meta["model"] = "workloads.random_dense_model(21): spectral radius 0.95, H = I"
    meta["note"] = "shared 2-core machine; other jobs may have been running"
    print(json.dumps(meta), flush=True)

    timings, outputs = [], {}
    largest = max(Ns)
    for N in Ns:
        for dtype in args.dtypes:
            dt = jnp.dtype(dtype)
            params = ssm.LGSSM(*(jnp.asarray(x, dt) for x in model64))
            ys = jnp.asarray(ys64[:N], dt)
            for (schedule, op), fn in programs.items():
                t = workloads.time_call(fn, params, ys, runs=args.runs)
                row = dict(N=N, dtype=dtype, schedule=schedule, op=op, compile_s=t.compile_s)
                row.update(run_s=t.median_s, runs_s=t.times_s)
                row["log_likelihood"] = float(t.out.log_likelihood)
                timings.append(row)
                print(json.dumps(row), flush=True)
                if N == largest and op == "smoother":
                    outputs[(dtype, schedule)] = jax.tree.map(
                        lambda x: np.asarray(x, np.float64), t.out
                    )
                if N == largest and op == "filter":
                    outputs[(dtype, schedule, "filter_covs")] = np.asarray(t.out.covs, np.float64)
                del t

    result = dict(meta=meta, timings=timings, errors=float32_errors(outputs, largest))
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{name}.md").write_text(to_markdown(result))
    print(f"wrote {out_dir / name}.json and .md", flush=True)
    return 0


def float32_errors(outputs: dict, N: int) -> list[dict]:
    """Each smoother's error against the float64 sequential one (first row: the reference)."""
    ref = outputs.get(("float64", "sequential"))
    if ref is None:
        return []
    errors = []
    for dtype, schedule in [
        ("float64", "parallel"),
        ("float32", "sequential"),
        ("float32", "parallel"),
    ]:
        if (dtype, schedule) not in outputs:
            continue
        s = outputs[(dtype, schedule)]
        fc = outputs[(dtype, schedule, "filter_covs")]
        dm = np.linalg.norm(s.means - ref.means, axis=1)
        eig_s = np.linalg.eigvalsh(np.nan_to_num(s.covs))
        eig_f = np.linalg.eigvalsh(np.nan_to_num(fc))
        nonfinite = sum(np.size(x) - np.isfinite(x).sum() for x in (*s, fc))
        row = dict(
            N=N,
            dtype=dtype,
            schedule=schedule,
            max_rel_err_smoothed_means=float(np.max(dm / np.linalg.norm(ref.means, axis=1))),
            max_abs_err_over_max_smoothed_mean=float(
                np.max(np.abs(s.means - ref.means)) / np.max(np.abs(ref.means))
            ),
            max_rel_err_smoothed_covs=float(
                np.max(np.abs(s.covs - ref.covs)) / np.max(np.abs(ref.covs))
            ),
            rel_err_log_likelihood=float(
                abs(s.log_likelihood - ref.log_likelihood) / abs(ref.log_likelihood)
            ),
            nonfinite=int(nonfinite),
            min_eig_smoothed_cov=float(eig_s.min()),
            num_non_pd_smoothed_covs=int(np.sum(eig_s.min(axis=1) <= 0)),
            min_eig_filtered_cov=float(eig_f.min()),
            num_non_pd_filtered_covs=int(np.sum(eig_f.min(axis=1) <= 0)),
        )
        errors.append(row)
        print(json.dumps(row), flush=True)
    ref_eig = float(np.linalg.eigvalsh(ref.covs).min())
    reference = dict(N=N, dtype="float64", schedule="sequential", reference=True)
    return [{**reference, "min_eig_smoothed_cov": ref_eig}, *errors]


def to_markdown(result: dict) -> str:
    m = result["meta"]
    lines = [
        "# Sequential vs parallel schedules",
        "",
        f"jax {m['jax']}, backend {m['backend']} ({m['device']}), {m['cpu_count']} CPU cores, "
        f"Python {m['python']}, {m['date']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'])} ({m['note']}).",
        f"D = Dy = {m['D']}; model: {m['model']}. Times: median of {m['runs']} runs after "
        "ahead-of-time compilation; compile time separately.",
        "",
        "| N | dtype | op | sequential run (s) | parallel run (s) | parallel / sequential "
        "| sequential compile (s) | parallel compile (s) |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    cells = {(r["N"], r["dtype"], r["op"], r["schedule"]): r for r in result["timings"]}
    for (N, dtype, op, schedule), r in cells.items():
        if schedule != "sequential" or (N, dtype, op, "parallel") not in cells:
            continue
        p = cells[(N, dtype, op, "parallel")]
        lines.append(
            f"| {N:,} | {dtype} | {op} | {r['run_s']:.3f} | {p['run_s']:.3f} | "
            f"{p['run_s'] / r['run_s']:.1f}x | {r['compile_s']:.1f} | {p['compile_s']:.1f} |"
        )
    if result["errors"]:
        lines += [
            "",
            f"Error against the float64 sequential smoother at N = {result['errors'][0]['N']:,}:",
            "",
            "| dtype | schedule | max rel. err. smoothed means | max abs err / max mean "
            "| rel. err. log-lik. | non-finite | min eig smoothed cov (non-PD) "
            "| min eig filtered cov (non-PD) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for e in result["errors"][1:]:
            lines.append(
                f"| {e['dtype']} | {e['schedule']} | {e['max_rel_err_smoothed_means']:.2e} | "
                f"{e['max_abs_err_over_max_smoothed_mean']:.2e} | "
                f"{e['rel_err_log_likelihood']:.2e} | {e['nonfinite']} | "
                f"{e['min_eig_smoothed_cov']:.2e} ({e['num_non_pd_smoothed_covs']}) | "
                f"{e['min_eig_filtered_cov']:.2e} ({e['num_non_pd_filtered_covs']}) |"
            )
        ref = result["errors"][0]
        lines.append("")
        lines.append(
            "float64 sequential reference: min eig of smoothed covariances "
            f"{ref['min_eig_smoothed_cov']:.3e}."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
