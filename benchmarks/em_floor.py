#!/usr/bin/env python
"""One EM iteration inside ``fit_em`` against the floor of the same work, in one process.

Workload: the exercise's set-up (``jaxssm.datasets.exercise_setup``: ``m0 = Y[0]``,
``ys = Y[1:]``, ``H = I``, ``R = P0 = kron(diag(0.01, 0.01, 1), I_7)``, white-noise start)
on the SARCOS stand-in (``jaxssm.datasets.sarcos_stand_in``: the bundled test split played
forward and backward; the training split is not in the repository) of ``N + 1`` rows, so that
EM runs on ``N`` steps (default 44,484), ``D = 21``, float64, on whatever device JAX picks.

Measured, every timing the median of ``--runs`` calls after compilation:

1. **EM iteration inside fit_em**: ``fit_em(num_iters=K2)`` minus ``fit_em(num_iters=K1)``
   (both compiled ahead of time, ``tol=None``), divided by ``K2 - K1``: the cost of one
   iteration inside the compiled loop, without the final likelihood pass. Measured twice:
   under ``jax.jit`` (traced data: the program holds the fast path and its fallback) and
   as an eager call on the concrete data (the program an ordinary ``fit_em`` call compiles
   on fully observed data: the fast path alone, see ``fit_em``'s "What is compiled"). The
   eager program is compiled with jaxssm's per-program CPU option (``jaxssm._base.compile``); the
   one under the caller's ``jax.jit`` with XLA's defaults.
2. **The floor**: the work an EM iteration cannot avoid once the covariances are constant,
   as plain ``lax.scan``s: a forward chain ``m_k = F m_{k-1} + u_k`` and a backward chain
   ``s_k = G s_{k+1} + w_k`` of ``D x D`` matvecs over ``N`` steps, the two ``[N, D] @
   [D, D]`` products that form ``u`` and ``w``, and four ``[D, N] @ [N, D]`` products (the
   statistics ``Sigma, Phi, B, C``). Timed as one call and as ``K2 - K1`` dependent
   repetitions inside a ``lax.scan`` (the in-loop conditions of item 1), the latter also
   compiled with the eager program's option.
3. **Fresh processes** (``--fresh``): a new Python process loads the data, then calls
   ``fit_em(num_iters=100)`` twice; first call minus second call is the trace + compile
   overhead; the peak RSS it adds over the process after loading the data is the peak
   (``VmHWM``, reset after loading through ``/proc/self/clear_refs``) minus ``VmRSS`` after
   loading (Linux). Run twice with an empty
   persistent compilation cache folder: the first run fills it, the second loads from it.

4. **dynamax** (``--peer-python PATH``: an interpreter with dynamax installed, see
   ``benchmarks/README.md``): one ``LinearGaussianSSM.fit_em(num_iters=1)`` on the same
   ``N x D`` (the ``em_iter`` cell of ``run.py``, in its own process, right after item 1;
   its cost per step does not depend on the parameter values), for the ratio to item 1.

Writes ``results/em_floor.md`` and ``results/em_floor.json`` (``--out``).

Usage::

    python benchmarks/em_floor.py [--num-steps 44484] [--runs 7] [--k1 10] [--k2 30]
        [--no-fresh] [--peer-python .venv-bench/bin/python] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # a script may; the library never does

import jax.numpy as jnp  # noqa: E402
import workloads  # noqa: E402

import jaxssm as ssm  # noqa: E402
from jaxssm._base import compile as _compile  # noqa: E402
from jaxssm._learn import em as _em  # noqa: E402
from jaxssm._schedules import plan as _plan  # noqa: E402

HERE = Path(__file__).resolve().parent


def exercise(num_steps: int):
    """The exercise's start and ``ys [num_steps, 21]`` on the stand-in (float64)."""
    data = ssm.datasets.sarcos_stand_in(num_steps + 1)
    start, ys = ssm.datasets.exercise_setup(jnp.asarray(data.inputs), jax.random.PRNGKey(0))
    return start, jnp.asarray(ys), data.name


def median_ms(fn, *args, runs: int) -> tuple[float, list[float]]:
    """Median wall time of ``fn(*args)`` in ms over ``runs`` calls, after one warm-up."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times), times


def floor_iteration(F, G, K, GA, ys, m0):
    """The floor of one EM iteration: two matvec chains, two maps, four statistics products."""
    u = ys @ K.T

    def fwd(m, ui):
        m = F @ m + ui
        return m, m

    _, means = jax.lax.scan(fwd, m0, u)
    w = means[:-1] @ GA.T

    def bwd(s, wi):
        s = G @ s + wi
        return s, s

    _, sm = jax.lax.scan(bwd, means[-1], w, reverse=True)
    sm = jnp.concatenate([sm, means[-1:]], axis=0)
    sigma = sm.T @ sm
    phi = sm[:-1].T @ sm[:-1]
    b = ys.T @ sm
    c = sm[1:].T @ sm[:-1]
    return sigma, phi, b, c


def floor_loop(F, G, K, GA, ys, m0, n: int):
    """``n`` dependent floor iterations in one ``lax.scan`` (as inside fit_em's loop)."""

    def body(carry, i):
        scale = 1.0 + 1e-14 * (carry + i)
        sigma, phi, b, c = floor_iteration(scale * F, G, K, GA, ys, m0)
        return carry + 1e-300 * (jnp.sum(sigma) + jnp.sum(phi) + jnp.sum(b) + jnp.sum(c)), None

    return jax.lax.scan(body, jnp.zeros((), ys.dtype), jnp.arange(n, dtype=ys.dtype))[0]


def _temp_mb(compiled) -> float | None:
    """XLA's temp buffer reservation of a compiled program in MB (None if not reported)."""
    try:
        return compiled.memory_analysis().temp_size_in_bytes / 1e6
    except (AttributeError, NotImplementedError):
        return None


def in_process(args) -> dict:
    start, ys, source = exercise(args.num_steps)
    print(f"data: {source}; ys {ys.shape}, {ys.dtype}", flush=True)
    # Steady-state matrices of the start model, for the floor (their values do not matter
    # for the cost; they make the chains stable).
    filtered = ssm.kalman_filter(start, ys[:2000])
    smoothed = ssm.rts_smoother(start, ys[:2000])
    P, Pp = filtered.covs[-1], filtered.pred_covs[-1]
    S = start.H @ Pp @ start.H.T + start.R
    K = jnp.linalg.solve(S, start.H @ Pp).T
    F = start.A - K @ start.H @ start.A
    G = smoothed.gains[1000]
    GA = jnp.eye(F.shape[0]) - G @ start.A
    del P

    fits = {}
    compile_s = {}
    for k in (args.k1, args.k2):
        fn = jax.jit(lambda p, y, k=k: ssm.fit_em(p, y, num_iters=k))
        t = time.perf_counter()
        fits[k] = fn.lower(start, ys).compile()
        compile_s[k] = time.perf_counter() - t
    # The program an eager fit_em compiles on fully observed data: the fast path alone
    # (the plan of jaxssm._schedules.plan.prepare_stats: Paths.FAST and the data-only
    # sums); its temp reservation, and its iteration timed below through the public eager
    # call (the cache holds it after the first call).
    eager = _em._fit_jit.lower(
        start,
        _plan.prepare_stats(start, ys, None, "auto"),
        None,
        num_iters=args.k2,
        update=("A", "Q"),
        tol=None,
        decrease_rtol=_em.default_decrease_rtol(ys.dtype),
        callback=None,
    ).compile()
    floor_one = jax.jit(floor_iteration).lower(F, G, K, GA, ys, start.m0).compile()
    n = args.k2 - args.k1
    floor_n = jax.jit(floor_loop, static_argnums=6).lower(F, G, K, GA, ys, start.m0, n).compile()
    # The same floor compiled with the per-program option the eager fit_em program gets
    # (jaxssm._base.compile); the jitted fit_em above is compiled with XLA's defaults, as any
    # program of the caller's is.
    floor_n_opt = (
        jax.jit(floor_loop, static_argnums=6, compiler_options=_compile.options() or None)
        .lower(F, G, K, GA, ys, start.m0, n)
        .compile()
    )

    # Interleaved: each round times every function once, so that load changes hit all alike.
    res = {
        k: []
        for k in (
            "fit_em_k1",
            "fit_em_k2",
            "eager_k1",
            "eager_k2",
            "floor_one",
            "floor_loop",
            "floor_loop_opt",
        )
    }
    for f in (fits[args.k1], fits[args.k2]):
        jax.block_until_ready(f(start, ys))
    for k in (args.k1, args.k2):
        jax.block_until_ready(ssm.fit_em(start, ys, num_iters=k))
    jax.block_until_ready(floor_one(F, G, K, GA, ys, start.m0))
    jax.block_until_ready(floor_n(F, G, K, GA, ys, start.m0))
    jax.block_until_ready(floor_n_opt(F, G, K, GA, ys, start.m0))
    for _ in range(args.runs):
        for key, call in (
            ("fit_em_k1", lambda: fits[args.k1](start, ys)),
            ("fit_em_k2", lambda: fits[args.k2](start, ys)),
            ("eager_k1", lambda: ssm.fit_em(start, ys, num_iters=args.k1)),
            ("eager_k2", lambda: ssm.fit_em(start, ys, num_iters=args.k2)),
            ("floor_one", lambda: floor_one(F, G, K, GA, ys, start.m0)),
            ("floor_loop", lambda: floor_n(F, G, K, GA, ys, start.m0)),
            ("floor_loop_opt", lambda: floor_n_opt(F, G, K, GA, ys, start.m0)),
        ):
            t = time.perf_counter()
            jax.block_until_ready(call())
            res[key].append(1e3 * (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in res.items()}
    em_iter = (med["fit_em_k2"] - med["fit_em_k1"]) / n
    eager_iter = (med["eager_k2"] - med["eager_k1"]) / n
    floor_in_loop = med["floor_loop"] / n
    floor_in_loop_opt = med["floor_loop_opt"] / n
    _, info = fits[args.k2](start, ys)
    return dict(
        source=source,
        num_steps=int(ys.shape[0]),
        dim=int(ys.shape[1]),
        dtype=str(ys.dtype),
        k1=args.k1,
        k2=args.k2,
        runs=args.runs,
        compile_s={str(k): v for k, v in compile_s.items()},
        times_ms=res,
        medians_ms=med,
        em_iteration_ms=em_iter,
        floor_one_call_ms=med["floor_one"],
        floor_in_loop_ms=floor_in_loop,
        ratio_to_floor_in_loop=em_iter / floor_in_loop,
        ratio_to_floor_one_call=em_iter / med["floor_one"],
        eager_iteration_ms=eager_iter,
        eager_ratio_to_floor_in_loop=eager_iter / floor_in_loop,
        compiler_options=_compile.options(),
        floor_in_loop_opt_ms=floor_in_loop_opt,
        eager_ratio_to_floor_in_loop_opt=eager_iter / floor_in_loop_opt,
        eager_temp_mb=_temp_mb(eager),
        final_log_likelihood=float(info.log_likelihood),
        temp_mb=_temp_mb(fits[args.k2]),
    )


def dynamax_em_iteration(peer_python: str, num_steps: int, runs: int) -> dict:
    """dynamax's EM iteration: ``run.py``'s ``em_iter`` cell for dynamax, float64."""
    with tempfile.TemporaryDirectory(prefix="jaxssm-peer-") as tmp:
        cmd = [peer_python, str(HERE / "run.py"), "--impls", "dynamax", "--ops", "em_iter"]
        cmd += ["--dtypes", "float64", "--schedules", "sequential", "--no-sweep"]
        cmd += ["--N", str(num_steps), "--runs", str(runs), "--out", tmp, "--name", "peer"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        path = Path(tmp) / "peer.json"
        if proc.returncode != 0 or not path.exists():
            return dict(status="error", reason=proc.stderr[-2000:])
        cells = json.loads(path.read_text())["results"]
    cell = next(c for c in cells if c["spec"]["impl"] == "dynamax")
    if cell.get("status") != "ok":
        return dict(status=cell.get("status"), reason=cell.get("reason", ""))
    return dict(status="ok", median_ms=1e3 * cell["median_s"], runs=cell["runs"], note=cell["note"])


FRESH = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import jaxssm as ssm
from jaxssm._learn import em as _em


def status(key):  # kB -> MB, from /proc/self/status (Linux)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


N = int(sys.argv[1])
data = ssm.datasets.sarcos_stand_in(N + 1)
start, ys = ssm.datasets.exercise_setup(jnp.asarray(data.inputs), jax.random.PRNGKey(0))
ys = jax.block_until_ready(jnp.asarray(ys))
rss_loaded = status("VmRSS")
peak_loading = status("VmHWM")
try:  # reset the peak (VmHWM) to the current RSS, so that the peak below is fit_em's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
t = time.perf_counter()
fitted, info = ssm.fit_em(start, ys, num_iters=100)
jax.block_until_ready(info)
first = time.perf_counter() - t
t = time.perf_counter()
fitted, info = ssm.fit_em(start, ys, num_iters=100)
jax.block_until_ready(info)
second = time.perf_counter() - t
peak = status("VmHWM")
print(json.dumps(dict(first_s=first, second_s=second, overhead_s=first - second,
                      rss_loaded_mb=rss_loaded, peak_while_loading_mb=peak_loading,
                      peak_reset=reset, rss_peak_mb=peak, rss_added_mb=peak - rss_loaded,
                      log_likelihood=float(info.log_likelihood))))
"""


def fresh_runs(num_steps: int) -> list[dict]:
    """Two fresh processes sharing a new, empty persistent-cache folder (cold, then warm)."""
    out = []
    with tempfile.TemporaryDirectory(prefix="jaxssm-cache-") as cache:
        for label in ("cold cache", "warm cache"):
            env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(HERE.parent)] + [p for p in [env.get("PYTHONPATH")] if p]
            )
            proc = subprocess.run(
                [sys.executable, "-c", FRESH, str(num_steps)],
                capture_output=True,
                text=True,
                env=env,
                timeout=900,
            )
            if proc.returncode != 0:
                out.append(dict(label=label, error=proc.stderr[-2000:]))
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["label"] = label
            out.append(row)
            print(label, row, flush=True)
    return out


def render(result: dict) -> str:
    r, m = result["in_process"], result["machine"]
    lines = [
        "# One EM iteration against the floor (`benchmarks/em_floor.py`)",
        "",
        f"{m['date']}, jax {m['jax']} ({m['backend']}, {m['device_kind']}), "
        f"{m['cpu_count']} cores, load average at start {m['load_average_at_start']} "
        f"(the machine is shared), `uptime` at the end: {result['uptime_end']}.",
        f"Data: {r['source']}; N = {r['num_steps']:,}, D = {r['dim']}, {r['dtype']}; the "
        "exercise's white-noise start; medians of "
        f"{r['runs']} interleaved rounds after compilation.",
        "",
        "| quantity | ms |",
        "| --- | ---: |",
        f"| one EM iteration inside fit_em ((fit_em({r['k2']}) - fit_em({r['k1']})) / "
        f"{r['k2'] - r['k1']}) | {r['em_iteration_ms']:.2f} |",
        f"| the same, eager fit_em on concrete data (its program holds the fast path alone) | "
        f"{r['eager_iteration_ms']:.2f} |",
        f"| floor, in a loop of {r['k2'] - r['k1']} dependent repetitions, per repetition | "
        f"{r['floor_in_loop_ms']:.2f} |",
        f"| the same floor, compiled with the eager program's option "
        f"`{r.get('compiler_options')}` | {r.get('floor_in_loop_opt_ms', float('nan')):.2f} |",
        f"| floor, one call | {r['floor_one_call_ms']:.2f} |",
        f"| fit_em({r['k1']}), whole call | {r['medians_ms']['fit_em_k1']:.1f} |",
        f"| fit_em({r['k2']}), whole call | {r['medians_ms']['fit_em_k2']:.1f} |",
        "",
        f"EM iteration / floor: {r['ratio_to_floor_in_loop']:.2f}x (in-loop floor), "
        f"{r['ratio_to_floor_one_call']:.2f}x (one-call floor); eager: "
        f"{r['eager_ratio_to_floor_in_loop']:.2f}x the in-loop floor, "
        f"{r.get('eager_ratio_to_floor_in_loop_opt', float('nan')):.2f}x the floor compiled "
        "with the same option. The floor is two dependent "
        "chains of D x D matvecs as plain `lax.scan`s, the two [N, D] @ [D, D] maps feeding "
        "them and four [D, N] @ [N, D] products.",
        "",
        "Ahead-of-time lower + compile in this process of `jax.jit(fit_em)` (traced data: "
        "fast path and fallback in one program): "
        + ", ".join(f"fit_em({k}) {v:.1f} s" for k, v in r["compile_s"].items())
        + "."
        + (
            f" XLA temp buffers reserved by the compiled fit_em({r['k2']}) "
            f"(`memory_analysis()`): {r['temp_mb']:.0f} MB with both paths, "
            f"{r['eager_temp_mb']:.0f} MB for the eager program (the fast path alone)."
            if r.get("temp_mb") is not None and r.get("eager_temp_mb") is not None
            else ""
        ),
    ]
    peer = result.get("dynamax")
    if peer:
        lines += [""]
        if peer["status"] == "ok":
            lines.append(
                f"dynamax's EM iteration in the same run (`LinearGaussianSSM.fit_em(num_iters=1)`, "
                f"the `em_iter` cell of `run.py`, median of {peer['runs']}): "
                f"{peer['median_ms']:.0f} ms, {peer['ratio']:.0f}x the EM iteration above."
            )
        else:
            lines.append(f"dynamax's EM iteration: {peer['status']} ({peer['reason'][-200:]}).")
    if result.get("fresh"):
        lines += [
            "",
            "## fit_em(100) in a fresh process",
            "",
            "First call minus second call (trace + compile) and the peak RSS added over the "
            "process after loading the data (peak `VmHWM`, reset after loading, minus "
            "`VmRSS`). Two processes share a new "
            "persistent compilation cache folder (`JAX_COMPILATION_CACHE_DIR`): the first "
            "fills it, the second loads the compiled loop from it.",
            "",
            "| process | first call s | second call s | overhead s | RSS after data MB | "
            "peak RSS MB | added MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in result["fresh"]:
            if "error" in row:
                lines.append(f"| {row['label']} | failed: see em_floor.json | | | | | |")
                continue
            lines.append(
                f"| {row['label']} | {row['first_s']:.2f} | {row['second_s']:.2f} | "
                f"{row['overhead_s']:.2f} | {row['rss_loaded_mb']:.0f} | "
                f"{row['rss_peak_mb']:.0f} | {row['rss_added_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=workloads.SARCOS_TRAIN_STEPS)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--k1", type=int, default=10)
    parser.add_argument("--k2", type=int, default=30)
    parser.add_argument("--no-fresh", action="store_true", help="skip the fresh processes")
    parser.add_argument(
        "--fresh-only",
        type=Path,
        default=None,
        metavar="JSON",
        help="run only the fresh processes and merge them into this earlier result",
    )
    parser.add_argument(
        "--peer-python",
        default=None,
        help="an interpreter with dynamax installed: time its EM iteration too",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="em_floor")
    args = parser.parse_args()
    if args.fresh_only is not None:
        result = json.loads(args.fresh_only.read_text())
    else:
        result = dict(machine=workloads.machine_info(), in_process=in_process(args))
        print(json.dumps(result["in_process"]["medians_ms"]), flush=True)
        if args.peer_python:
            peer = dynamax_em_iteration(args.peer_python, args.num_steps, args.runs)
            if peer["status"] == "ok":
                peer["ratio"] = peer["median_ms"] / result["in_process"]["em_iteration_ms"]
            result["dynamax"] = peer
            print("dynamax", peer, flush=True)
    if not args.no_fresh:
        result["fresh"] = fresh_runs(args.num_steps)
    result["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
