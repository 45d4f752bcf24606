"""The steady-state idea on the parallel schedule: before and after, side by side in one run.

Standalone (needs only jaxssm and its dependencies)::

    python benchmarks/parallel_steady.py               # N = 44,484, D = 21, float64
    python benchmarks/parallel_steady.py --quick       # N = 4,096, one run each (smoke test)
    python benchmarks/parallel_steady.py --out DIR     # default benchmarks/results/local/

What is measured, in one process (``workloads.time_call``: compiled ahead of time, then the
median of ``--runs`` calls):

Every program is compiled with the per-program XLA options a top-level call of the library
gets on this backend (``jaxssm._base.compile.options()``: on CPU, the fusion emitters off); the
smoother and E-step rows also give (where there are options) the compile time of the same
program without them, as a call inside the user's own ``jit`` compiles it (compiled second,
it may reuse the first compile's trace: the first column includes tracing and lowering, this
one may not).

- **Smoother** (``jaxssm._schedules.dispatch.smooth``: filter and RTS smoother, gains and
  log-likelihood included) on four schedules: ``sequential`` (the full ``lax.scan``
  recursion), ``steady`` (the sequential fast path), ``parallel`` (the full associative
  scan: *before*) and ``parallel_steady`` (``method="parallel", steady_state=True``: the
  steady-state covariance side, the mean recursions as log-depth scans of their affine
  maps, the full associative scan as the on-device fallback: *after*), and the last one's
  fast path compiled alone (``Paths.FAST``, what an eager ``fit_em`` compiles on
  fully observed data). Each row's largest
  relative error of the smoothed means against ``sequential`` is reported too.
- **EM statistics** (one E-step) on the three parallel rows.
- **The mean recursion alone**, ``x_i = F x_{i-1} + b_i`` over ``[N, D]`` with the fast
  path's filter matrix ``F = A - K H A``, in its three forms
  (``jaxssm._schedules.recursions.linear_recursion``): the plain ``lax.scan`` (one step per
  row), the blocked form (``sqrt(N)`` blocks: ``2 sqrt(N)`` loop steps) and the doubling
  scan (``ceil(log2 N)`` ``[N, D] @ [D, D]`` products). On a CPU the plain scan wins; the
  other two are the forms for accelerators, where every loop step costs a kernel launch
  (``benchmarks/gpu.sh``).

Model: ``workloads.random_dense_model(21)`` (dense, spectral radius 0.95, ``H = I``) and data
drawn from it by ``workloads.simulate``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import workloads

D = 21
#: The last one is ``parallel_steady`` compiled with its fast path alone
#: (``Paths.FAST``), the program an eager ``fit_em`` compiles on fully observed data.
SCHEDULES = ("sequential", "steady", "parallel", "parallel_steady", "parallel_steady (fast alone)")


def _call(kind, params, ys, schedule):
    from jaxssm._schedules import dispatch as _dispatch

    if schedule.endswith("(fast alone)"):
        fast = _dispatch.Paths.FAST
        return _dispatch.run(kind, params, ys, "parallel_steady", paths=fast)[0]
    return _dispatch.run(kind, params, ys, schedule)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 4,096 and one run each")
    ap.add_argument("--num-steps", type=int, default=None, help="N (default 44,484)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per cell (median)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "local")
    args = ap.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxssm as ssm
    from jaxssm._base import compile as _compile
    from jaxssm._schedules import recursions as _recursions
    from jaxssm._schedules import settle as _settle

    options = _compile.options()

    N = args.num_steps or (4_096 if args.quick else 44_484)
    runs = 1 if args.quick else args.runs
    model = workloads.random_dense_model(D)
    params = ssm.LGSSM(*(jnp.asarray(x, jnp.float64) for x in model))
    ys = jnp.asarray(workloads.simulate(model, N))
    info = jax.jit(lambda p: _settle.smoother_side(p, _settle.transient_bound(N)).info)(params)
    result = dict(
        machine=workloads.machine_info(),
        N=N,
        D=D,
        dtype="float64",
        runs=runs,
        compiler_options=options,
        transient=dict(
            bound=int(info.num_transient),
            filter=int(info.filter_transient),
            smoother=int(info.smoother_transient),
            converged=bool(info.converged),
        ),
        smoother=[],
        em=[],
        recursion=[],
    )

    def say(label):
        return lambda msg: print(f"  {label}: {msg}", file=sys.stderr, flush=True)

    def cell(kind, label, schedule):
        """Time ``kind`` on ``schedule``: (the timing, its row of the result)."""
        fn = lambda p, y: _call(kind, p, y, schedule)  # noqa: E731
        phase = say(f"{label} {schedule}")
        t = workloads.time_call(fn, params, ys, runs=runs, phase=phase, compiler_options=options)
        row = dict(schedule=schedule, compile_s=t.compile_s, run_s=float(np.median(t.times_s)))
        if options:  # else (a GPU) the same program again: no column
            phase("compiling without options")
            t0 = time.perf_counter()
            jax.jit(fn).lower(params, ys).compile()
            row["compile_plain_s"] = time.perf_counter() - t0
        return t, row

    reference = None
    for schedule in SCHEDULES:
        t, row = cell("smooth", "smoother", schedule)
        means = np.asarray(t.out.means)
        if reference is None:
            reference = means
        row["max_rel_err_means"] = float(
            np.max(np.linalg.norm(means - reference, axis=1) / np.linalg.norm(reference, axis=1))
        )
        result["smoother"].append(row)
    for schedule in SCHEDULES[2:]:
        result["em"].append(cell("stats", "E-step", schedule)[1])

    side = jax.jit(lambda p: _settle.filter_side(p, _settle.transient_bound(N)))(params)
    F = params.A - side.gain @ params.H @ params.A
    b = ys @ side.gain.T
    x0 = params.m0
    forms = (("plain", 1), ("blocked", math.isqrt(N - 1) + 1), ("doubling", "doubling"))
    plain = None
    for name, block in forms:
        t = workloads.time_call(
            lambda F, b, x, blk=block: _recursions.linear_recursion(F, b, x, block=blk),
            F,
            b,
            x0,
            runs=max(runs, 5),
            phase=say(f"recursion {name}"),
            compiler_options=options,
        )
        x = np.asarray(t.out)
        plain = x if plain is None else plain
        err = float(np.max(np.abs(x - plain)) / np.max(np.abs(plain)))
        result["recursion"].append(
            dict(
                form=name,
                block=str(block),
                compile_s=t.compile_s,
                run_s=float(np.median(t.times_s)),
                max_err_over_max=err,
            )
        )

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parallel_steady.json").write_text(json.dumps(result, indent=1) + "\n")
    md = to_markdown(result)
    (args.out / "parallel_steady.md").write_text(md)
    print(md)
    return 0


def _plain(c: dict) -> str:
    return f"{c['compile_plain_s']:.1f}" if "compile_plain_s" in c else "-"


def to_markdown(r: dict) -> str:
    m = r["machine"]
    tr = r["transient"]
    lines = [
        "# The steady-state idea on the parallel schedule",
        "",
        f"jax {m['jax']}, backend {m['backend']} ({m['device']}), {m['cpu_count']} CPU cores, "
        f"Python {m['python']}, {m['date']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}.",
        f"N = {r['N']:,}, D = Dy = {r['D']}, {r['dtype']}; model: workloads.random_dense_model"
        f"(21). Transients: filter {tr['filter']}, smoother {tr['smoother']} steps (bound "
        f"{tr['bound']}, converged: {tr['converged']}). Times: median of {r['runs']} runs after "
        "ahead-of-time compilation; compile time separately. Command: "
        "`python benchmarks/parallel_steady.py`.",
        f"Compiled with the options a top-level library call gets here: "
        f"`{r.get('compiler_options', {})}`; 'compile, no options' is the same program "
        "compiled as inside the user's own `jit` (compiled second, so it may skip tracing).",
        "",
        "## Filter + smoother",
        "",
        "| schedule | compile (s) | compile, no options (s) | run (s) "
        "| max rel. err. of smoothed means vs sequential |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for c in r["smoother"]:
        lines.append(
            f"| {c['schedule']} | {c['compile_s']:.1f} | {_plain(c)} | {c['run_s']:.4f} | "
            f"{c['max_rel_err_means']:.1e} |"
        )
    lines += [
        "",
        "## EM statistics (one E-step)",
        "",
        "| schedule | compile (s) | compile, no options (s) | run (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for c in r["em"]:
        lines.append(f"| {c['schedule']} | {c['compile_s']:.1f} | {_plain(c)} | {c['run_s']:.4f} |")
    lines += [
        "",
        "## The mean recursion alone (`[N, D]`, the fast filter's matrix)",
        "",
        "| form | block | compile (s) | run (ms) | max abs diff / max, vs plain |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for c in r["recursion"]:
        lines.append(
            f"| {c['form']} | {c['block']} | {c['compile_s']:.2f} | {1e3 * c['run_s']:.2f} | "
            f"{c['max_err_over_max']:.1e} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
