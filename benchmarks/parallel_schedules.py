"""Sequential vs time-parallel Kalman filter and RTS smoother: CPU time and float32 error.

Standalone (needs only jaxssm and its dependencies)::

    python benchmarks/parallel_schedules.py --quick          # smoke run, N = 1,000 only
    python benchmarks/parallel_schedules.py                  # N = 1,000, 10,000, 44,484
    python benchmarks/parallel_schedules.py --out DIR        # default benchmarks/results/local/

What is measured
----------------
- **Time.** For each N, dtype (float64, float32), schedule (``sequential``: ``lax.scan``;
  ``parallel``: ``lax.associative_scan``) and operation (``filter``; ``smoother`` = filter +
  RTS pass, gains and log-likelihood included), the unchecked jaxssm function is compiled
  ahead of time (``jax.jit(f).lower(...).compile()``; the *compile* column) and then run
  ``--runs`` times with ``block_until_ready``; the *run* column is the median. When the first
  run takes under a second it is an untimed warm-up and ``--runs`` more follow; slower
  first runs are counted.
- **float32 error** at the largest N: both schedules' float32 smoothers against the float64
  sequential smoother: the largest relative error of the smoothed means
  (``max_k |m32_k - m64_k|_2 / |m64_k|_2``, and the largest entry error over the largest
  entry), the log-likelihood's relative error, the number of non-finite values, and the
  smallest eigenvalue of every filtered and smoothed covariance (``numpy.linalg.eigvalsh``
  in float64; a covariance whose smallest eigenvalue is <= 0 is counted as not positive
  definite). The float64 parallel smoother is compared the same way.

Model: a dense, stable, random 21-dimensional model (numpy seed 0): ``A`` a standard-normal
matrix scaled to spectral radius 0.95, ``Q`` and ``R`` random SPD (eigenvalues in
[0.02, 0.12] and [0.1, 0.6]), ``H = I`` (all 21 coordinates observed, as in the SARCOS
exercise), ``P0 = I``, ``m0`` ~ 10 N(0, I); the data are drawn from the model with numpy.
Dense matrices on purpose: the exercise's block-structured prior splits into seven 3-dim
problems (see ENVIRONMENT.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

D = 21
FULL_N = (1_000, 10_000, 44_484)
QUICK_N = (1_000,)


def make_model(seed: int = 0) -> dict:
    """The dense stable random model (float64 numpy arrays), see the module docstring."""
    rng = np.random.default_rng(seed)

    def spd(scale):
        U, _ = np.linalg.qr(rng.standard_normal((D, D)))
        return scale * (U * rng.uniform(0.2, 1.2, size=D)) @ U.T

    A = rng.standard_normal((D, D))
    A *= 0.95 / np.max(np.abs(np.linalg.eigvals(A)))
    return dict(m0=10.0 * rng.standard_normal(D), P0=np.eye(D), A=A, Q=spd(0.1), H=np.eye(D),
                R=spd(0.5))


def simulate(model: dict, N: int, seed: int = 1) -> np.ndarray:
    """y_1..y_N drawn from the model with numpy (float64)."""
    rng = np.random.default_rng(seed)
    Lq, Lr = np.linalg.cholesky(model["Q"]), np.linalg.cholesky(model["R"])
    x = model["m0"] + np.linalg.cholesky(model["P0"]) @ rng.standard_normal(D)
    q = rng.standard_normal((N, D)) @ Lq.T
    xs = np.empty((N, D))
    for k in range(N):
        x = model["A"] @ x + q[k]
        xs[k] = x
    return xs @ model["H"].T + rng.standard_normal((N, D)) @ Lr.T


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
    import jaxlib

    import jaxssm as ssm
    from jaxssm import _filtering, _parallel, _smoothing

    Ns = tuple(args.N) if args.N else (QUICK_N if args.quick else FULL_N)
    name = args.name or ("quick" if args.quick else "full")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    programs = {
        ("sequential", "filter"): _filtering._filter,
        ("sequential", "smoother"): lambda p, y: _smoothing._smooth(p, _filtering._filter(p, y)),
        ("parallel", "filter"): _parallel._parallel_filter,
        ("parallel", "smoother"): _parallel._parallel_smooth,
    }

    model64 = make_model()
    ys64 = simulate(model64, max(Ns))
    meta = dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        jax=jax.__version__, jaxlib=jaxlib.__version__,
        backend=jax.default_backend(), device=str(jax.devices()[0]),
        cpu_count=os.cpu_count(), python=platform.python_version(), machine=platform.machine(),
        load_average_at_start=os.getloadavg(), D=D, Dy=D, Ns=list(Ns), runs=args.runs,
        model="dense stable random (seed 0): spectral radius 0.95, H = I, see docstring",
        note="shared 2-core machine; other jobs may have been running",
    )
    print(json.dumps(meta), flush=True)

    timings, outputs = [], {}
    largest = max(Ns)
    for N in Ns:
        for dtype in args.dtypes:
            dt = jnp.dtype(dtype)
            params = ssm.LGSSM(**{k: jnp.asarray(v, dt) for k, v in model64.items()})
            ys = jnp.asarray(ys64[:N], dt)
            for (schedule, op), fn in programs.items():
                t0 = time.perf_counter()
                compiled = jax.jit(fn).lower(params, ys).compile()
                compile_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                out = jax.block_until_ready(compiled(params, ys))
                first = time.perf_counter() - t0
                runs = [] if first < 1.0 else [first]
                while len(runs) < args.runs:
                    t0 = time.perf_counter()
                    out = jax.block_until_ready(compiled(params, ys))
                    runs.append(time.perf_counter() - t0)
                row = dict(N=N, dtype=dtype, schedule=schedule, op=op, compile_s=compile_s,
                           run_s=statistics.median(runs), runs_s=runs,
                           log_likelihood=float(out.log_likelihood))
                timings.append(row)
                print(json.dumps(row), flush=True)
                if N == largest and op == "smoother":
                    outputs[(dtype, schedule)] = jax.tree_util.tree_map(
                        lambda x: np.asarray(x, np.float64), out)
                if N == largest and op == "filter":
                    outputs[(dtype, schedule, "filter_covs")] = np.asarray(out.covs, np.float64)
                del out, compiled

    errors = []
    ref = outputs.get(("float64", "sequential"))
    if ref is not None:
        for (dtype, schedule) in [("float64", "parallel"), ("float32", "sequential"),
                                  ("float32", "parallel")]:
            if (dtype, schedule) not in outputs:
                continue
            s = outputs[(dtype, schedule)]
            fc = outputs[(dtype, schedule, "filter_covs")]
            dm = np.linalg.norm(s.means - ref.means, axis=1)
            eig_s = np.linalg.eigvalsh(np.nan_to_num(s.covs))
            eig_f = np.linalg.eigvalsh(np.nan_to_num(fc))
            row = dict(
                N=largest, dtype=dtype, schedule=schedule,
                max_rel_err_smoothed_means=float(np.max(dm / np.linalg.norm(ref.means, axis=1))),
                max_abs_err_over_max_smoothed_mean=float(
                    np.max(np.abs(s.means - ref.means)) / np.max(np.abs(ref.means))),
                max_rel_err_smoothed_covs=float(
                    np.max(np.abs(s.covs - ref.covs)) / np.max(np.abs(ref.covs))),
                rel_err_log_likelihood=float(
                    abs(s.log_likelihood - ref.log_likelihood) / abs(ref.log_likelihood)),
                nonfinite=int(sum(np.size(x) - np.isfinite(x).sum() for x in s) +
                              np.size(fc) - np.isfinite(fc).sum()),
                min_eig_smoothed_cov=float(eig_s.min()),
                num_non_pd_smoothed_covs=int(np.sum(eig_s.min(axis=1) <= 0)),
                min_eig_filtered_cov=float(eig_f.min()),
                num_non_pd_filtered_covs=int(np.sum(eig_f.min(axis=1) <= 0)),
            )
            errors.append(row)
            print(json.dumps(row), flush=True)
        errors.insert(0, dict(N=largest, dtype="float64", schedule="sequential", reference=True,
                              min_eig_smoothed_cov=float(np.linalg.eigvalsh(ref.covs).min())))

    result = dict(meta=meta, timings=timings, errors=errors)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{name}.md").write_text(to_markdown(result))
    print(f"wrote {out_dir / name}.json and .md", flush=True)
    return 0


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
            f"{p['run_s'] / r['run_s']:.1f}x | {r['compile_s']:.1f} | {p['compile_s']:.1f} |")
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
        for e in result["errors"]:
            if e.get("reference"):
                continue
            lines.append(
                f"| {e['dtype']} | {e['schedule']} | {e['max_rel_err_smoothed_means']:.2e} | "
                f"{e['max_abs_err_over_max_smoothed_mean']:.2e} | "
                f"{e['rel_err_log_likelihood']:.2e} | {e['nonfinite']} | "
                f"{e['min_eig_smoothed_cov']:.2e} ({e['num_non_pd_smoothed_covs']}) | "
                f"{e['min_eig_filtered_cov']:.2e} ({e['num_non_pd_filtered_covs']}) |")
        ref = result["errors"][0]
        lines.append("")
        lines.append(f"float64 sequential reference: min eig of smoothed covariances "
                     f"{ref['min_eig_smoothed_cov']:.3e}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
