#!/usr/bin/env python
"""jaxssm benchmark suite: one entry point for every number in benchmarks/results/.

Usage (from the repository root)::

    python benchmarks/run.py --quick                  # < 2 min on 2 CPU cores, small N
    python benchmarks/run.py                          # the full CPU suite (< 15 min, 2 cores)
    python benchmarks/run.py --gpu                    # what benchmarks/gpu.sh runs
    python benchmarks/run.py --all                    # the whole grid (about an hour on CPU)
    python benchmarks/run.py --out DIR --name cpu     # where the .json / .md go
    python benchmarks/run.py --render DIR/cpu.json    # re-write the .md from the .json

Every measurement ("cell": implementation x operation x schedule x dtype x N x D) runs in its
own subprocess, for three reasons: peak memory is that cell's alone (``ru_maxrss`` of the
process; on a GPU also the device allocator's ``peak_bytes_in_use``), a cell that hangs (the
jax 0.10.2 associative-scan hangs in ENVIRONMENT.md) is killed at its timeout and reported as
such instead of stalling the suite, and dynamax's import-time ``jax.config.update`` (matmul
precision) cannot leak into the other implementations.

Timing inside a cell is ``workloads.time_call``: JAX functions are jitted and compiled ahead
of time (the "compile" column), then one untimed warm-up call (calls over 1 s: the first call
after compilation is the first timed run), then ``--runs`` timed calls, each ended by
``jax.block_until_ready``; the table shows the median, the JSON every run with its process CPU
time. Plain Python peers (numpy loop, pykalman) have no compile step. jaxssm cells always get
``--runs`` timed runs; a peer's cell whose runs would exceed ``--max-cell-seconds`` gets fewer
(at least ``--peer-min-runs``); the runs column says how many. Cells are run in order of
importance and skipped once ``--budget`` is spent.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import report  # noqa: E402  (benchmarks/report.py)

RESULT_TAG = "@@BENCH_RESULT@@ "


# ==========================================================================================
# Worker: runs one cell in its own process and prints one JSON line
# ==========================================================================================


def _phase(msg: str) -> None:
    print(f"[phase] {msg}", file=sys.stderr, flush=True)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker(spec: dict) -> dict:
    if spec["impl"] in ("jaxssm", "dynamax", "cuthbert"):
        import jax

        jax.config.update("jax_enable_x64", spec["dtype"] == "float64")
    import peers
    import workloads

    _phase("building workload")
    w = workloads.build(spec["kind"], spec["N"], spec["D"])
    if spec.get("subset"):  # the first steps of the same data and model (agreement checks)
        w = w._replace(ys=w.ys[: spec["subset"]])
    out: dict = {"spec": spec, "data_source": w.source, "fingerprint": workloads.fingerprint(w)}
    try:
        prep = peers.prepare(spec["impl"], spec["op"], spec["schedule"], w, spec["dtype"])
    except peers.Unavailable as e:
        return {**out, "status": "unavailable", "reason": str(e)}
    out.update(note=prep.note, num_steps_run=prep.num_steps or w.ys.shape[0], scale=prep.scale)
    out.update(baseline_rss_mb=_maxrss_mb(), device="cpu:numpy")
    dev = None
    if prep.is_jax:
        import jax

        dev = jax.devices()[0]
        out["device"] = f"{dev.platform}:{getattr(dev, 'device_kind', '')}"
    # An op that loops already (100 EM iterations) is timed once, from its first call.
    runs = dict(runs=1, min_runs=1, warmup_below=0.0) if prep.long else dict(runs=spec["runs"])
    runs.setdefault("min_runs", spec.get("min_runs", 1))
    t = workloads.time_call(
        prep.fn,
        *prep.args,
        jit=prep.is_jax,
        phase=_phase,
        **runs,
        max_seconds=spec["max_cell_seconds"],
    )
    if t.compile_s is not None:
        out.update(compile_s=t.compile_s, compile_kind=t.compile_kind)
    if t.warmup_s is not None:
        out["warmup_s"] = t.warmup_s
    stats = dev.memory_stats() if dev is not None and hasattr(dev, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    times, cpu = [x * prep.scale for x in t.times_s], [x * prep.scale for x in t.cpu_times_s]
    out.update(times_s=times, cpu_times_s=cpu, runs=len(times), median_s=statistics.median(times))
    out.update(median_cpu_s=statistics.median(cpu), min_s=min(times))
    if prep.loglik is not None:
        try:
            out["loglik"] = float(prep.loglik(t.out))
        except Exception as e:  # noqa: BLE001
            out["loglik_error"] = f"{type(e).__name__}: {e}"
    return {**out, "peak_rss_mb": _maxrss_mb(), "status": "ok"}


def _versions() -> dict:
    """The versions and the JAX device this interpreter sees (the worker's ``--versions``)."""
    import importlib.metadata as md

    out: dict = {}
    for p in ("jax", "jaxlib", "numpy", "scipy", "optax", "dynamax", "cuthbert", "pykalman"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    import jax

    d = jax.devices()[0]
    out.update(jax_device=f"{d.platform}:{getattr(d, 'device_kind', '')}")
    out.update(jax_device_count=jax.device_count())
    import jaxssm

    return {**out, "jaxssm": jaxssm.__version__, "jaxssm_public": sorted(jaxssm.__all__)}


def _worker_main(arg: str) -> None:
    spec = json.loads(arg)
    try:
        res = _versions() if spec == "versions" else _worker(spec)
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        res = {"spec": spec, "status": "error", "reason": f"{type(e).__name__}: {e}"[:500]}
    print(RESULT_TAG + json.dumps(res), flush=True)


# ==========================================================================================
# Orchestrator
# ==========================================================================================


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _run_cell(spec, python: str, timeout: float, env: dict, idle_s: float) -> dict:
    """Run one cell in a fresh process; kill it at ``timeout`` or after ``idle_s`` at 0% CPU.

    A process that is runnable accumulates CPU time even on a busy shared machine; the
    associative-scan hangs of jax 0.10.2 (ENVIRONMENT.md) park every thread at 0% CPU, so
    ``idle_s`` seconds without CPU progress is reported as a hang.
    """
    cmd = [python, str(HERE / "run.py"), "--worker", json.dumps(spec)]
    t_start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        kw = dict(stdout=out, stderr=err, text=True, env=env, cwd=ROOT, start_new_session=True)
        proc = subprocess.Popen(cmd, **kw)
        last_cpu, last_progress, killed = 0.0, t_start, None
        while proc.poll() is None:
            time.sleep(0.5)
            now, cpu = time.perf_counter(), _cpu_seconds(proc.pid)
            if cpu is not None and cpu > last_cpu + 0.05:
                last_cpu, last_progress = cpu, now
            if now - t_start > timeout:
                killed = f"timeout {timeout:.0f} s (still computing"
            elif now - last_progress > idle_s:
                killed = f"hung (0% CPU for {idle_s:.0f} s"
            if killed:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                break
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    res = {"spec": spec, "wall_s": time.perf_counter() - t_start}
    if killed:
        phases = [ln[8:] for ln in stderr.splitlines() if ln.startswith("[phase] ")]
        reason = f"{killed}, after: {phases[-1] if phases else 'starting'})"
        return {**res, "status": "timeout", "reason": reason}
    lines = [ln[len(RESULT_TAG) :] for ln in stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if lines:
        res = {**json.loads(lines[-1]), "wall_s": res["wall_s"]}
        return {**res, "stderr_tail": stderr[-2000:]} if res.get("status") == "error" else res
    reason = f"worker exited {proc.returncode} without a result"
    return {**res, "status": "error", "reason": reason, "stderr_tail": stderr[-2000:]}


JAX_OPS = ("filter", "smoother", "e_step", "em_iter", "mle_step")
PEER_OPS = {
    "dynamax": ("filter", "smoother", "em_iter"),
    "cuthbert": ("filter", "smoother"),
    "numpy": ("filter", "smoother", "em_iter"),
    "pykalman": ("filter", "smoother", "em_iter"),
}
SEQ, PAR = "sequential", "parallel"
SWEEPS = {  # (N, D) of the scaling sweeps
    # On 2 CPU cores the D sweep runs at N = 2,000: one D = 63 filter step costs ~60x a D = 21
    # step there (20 s per call at N = 1e4).
    "cpu": [(1_000, 21), (10_000, 21), (100_000, 21), (2_000, 3), (2_000, 21), (2_000, 63)],
    "gpu": [(1_000, 21), (10_000, 21), (100_000, 21), (10_000, 3), (10_000, 63)],
}

# One line per group of cells, most important first, so that a time budget that runs out drops
# the least important. "IMPLS OPS SCHEDULES DTYPES" (comma-separated lists; OPS "*": all of the
# implementation's, jaxssm's without em_100; IMPLS "peers": the four peers): cells on the main
# workload (N x D SARCOS). "check": jaxssm's float64 filter on pykalman's 4,448-step subset (the
# agreement check). "sweep NxD,... DTYPES IMPLS:SCHEDULES ...": filters on simulated data (N
# outer, then dtype, then implementation); "cpu" / "gpu" name the (N, D) lists in SWEEPS.
PRESETS = {
    # The default CPU suite, about 10 minutes on 2 idle cores (the 880 s budget drops the tail
    # on a busy machine): every jaxssm op on the fast path and on the full recursion, in both
    # dtypes; 100 EM iterations; the peers' sequential paths; the parallel filters (on 2 cores
    # a parallel filter costs ~10x the sequential one and compiles for 20-60 s); the sweep;
    # then the parallel smoother / E-step / float32 filter and 100 full-recursion EM iterations.
    "full": """
        jaxssm * steady,sequential f64
        peers * sequential f64
        check
        jaxssm * steady,sequential f32
        dynamax filter,smoother sequential f32
        cuthbert filter sequential f32
        jaxssm em_100 steady f64,f32
        jaxssm,dynamax,cuthbert filter parallel f64
        sweep cpu f64 jaxssm:steady,sequential
        sweep 1000x21,10000x21,2000x3 f64 jaxssm:parallel
        jaxssm smoother,e_step parallel f64
        jaxssm filter parallel f32
        jaxssm em_100 sequential f64
        sweep cpu f64 dynamax:sequential
    """,
    # Everything, on any device (over an hour on 2 CPU cores).
    "all": """
        jaxssm * steady,sequential f64,f32
        peers * sequential f64
        check
        dynamax,cuthbert * sequential f32
        jaxssm * parallel f64,f32
        dynamax,cuthbert filter,smoother parallel f64,f32
        jaxssm em_100 steady,sequential,parallel f64,f32
        sweep cpu f64 jaxssm:steady,sequential,parallel dynamax,cuthbert:sequential
    """,
    "quick": """
        jaxssm filter,smoother,e_step,em_iter,mle_step,em_100 steady f64
        jaxssm filter,em_iter sequential f64
        peers filter sequential f64
        jaxssm filter parallel f64
        sweep 1000x21,4000x21,1000x3 f64 jaxssm:steady
    """,
    # GPU, ordered as issue 17 asks (the budget drops the tail): jaxssm's filter + smoother and
    # one EM iteration on all three schedules in both dtypes at N = 44,484; 100 EM iterations
    # (the compile column is apart, so run + compile is the cost of a fresh call); a sweep of
    # the filter to N = 1e6 on the steady and parallel schedules in both dtypes (the full
    # sequential recursion on a GPU is one kernel sequence per step: only to 1e5); dynamax's
    # EM iteration for the ratio; then the peers and the rest.
    "gpu": """
        jaxssm smoother,em_iter parallel,steady,sequential f64,f32
        jaxssm em_100 steady,parallel f64,f32
        sweep 10000x21,100000x21,1000000x21 f64,f32 jaxssm:steady,parallel
        dynamax em_iter,smoother sequential f64
        jaxssm filter parallel,steady,sequential f64,f32
        dynamax,cuthbert filter,smoother parallel f64,f32
        jaxssm e_step,mle_step parallel,steady,sequential f64,f32
        sweep gpu f32 jaxssm:sequential dynamax,cuthbert:parallel
        dynamax,cuthbert * sequential f64,f32
        numpy,pykalman filter sequential f64
        check
        sweep 1000000x21 f32 dynamax,cuthbert:parallel
        jaxssm em_100 sequential f32
    """,
}


def _spec(args, impl, op, schedule, dtype, group, N=None, D=None, **extra) -> dict:
    sweep = group == "sweep"
    min_runs = args.runs if impl == "jaxssm" else min(args.runs, args.peer_min_runs)
    timeout = args.em100_timeout if op == "em_100" else None
    timeout = timeout or (args.parallel_timeout if schedule == PAR else None)
    spec = dict(impl=impl, op=op, schedule=schedule, dtype=dtype, N=N or args.N, D=D or args.D)
    spec.update(kind="simulated" if sweep else "sarcos", group=group, runs=args.runs)
    spec.update(min_runs=min(min_runs, 3) if sweep else min_runs)
    spec.update(max_cell_seconds=args.max_cell_seconds, timeout=timeout, **extra)
    return spec


def plan(args) -> list[dict]:
    """The ordered list of cells of the preset, filtered by --impls/--ops/--dtypes/..."""
    cells: list[dict] = []
    dtypes = {"f64": ["float64"], "f32": ["float32"], "f64,f32": ["float64", "float32"]}
    for words in (line.split() for line in PRESETS[args.preset].strip().splitlines()):
        if words[0] == "check":
            if "pykalman" in args.impls and args.N > 4_448 and "float64" in args.dtypes:
                cells.append(_spec(args, "jaxssm", "filter", SEQ, "float64", "check", subset=4_448))
        elif words[0] == "sweep":
            nxd = [tuple(map(int, c.split("x"))) for c in words[1].split(",") if "x" in c]
            confs = SWEEPS.get(words[1], nxd)
            pairs = []
            for impls, scheds in (token.split(":") for token in words[3:]):
                pairs += [(i, s) for i in impls.split(",") for s in scheds.split(",")]
            for n, d in [] if args.no_sweep else confs:
                for dtype in dtypes[words[2]]:
                    for impl, s in pairs:
                        keep = impl in args.impls and s in args.schedules
                        if keep and dtype in args.sweep_dtypes:
                            cells.append(_spec(args, impl, "filter", s, dtype, "sweep", n, d))
        else:
            impls, ops, scheds, dts = words
            for impl in report.PEERS if impls == "peers" else impls.split(","):
                for s in scheds.split(","):
                    for dtype in dtypes[dts]:
                        for op in PEER_OPS.get(impl, JAX_OPS) if ops == "*" else ops.split(","):
                            keep = impl in args.impls and op in args.ops
                            if keep and s in args.schedules and dtype in args.dtypes:
                                cells.append(_spec(args, impl, op, s, dtype, "main"))
    return cells


def _sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=ROOT).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        info = []
    model = [ln for ln in info if ln.startswith("model name")]
    return model[0].split(":", 1)[1].strip() if model else (platform.processor() or "unknown")


NOISE_NOTE = {  # by whether the run is on a GPU
    True: "Compare ratios within one run, not across runs.",
    False: "Timings are noisy: this 2-core machine was shared with other work while the suite ran "
    "(wall times move by up to 2-3x between runs); compare ratios within one run, not across runs.",
}


# ==========================================================================================
# main
# ==========================================================================================

# flag, type, default, help: the options besides --quick / --gpu / --all / --no-sweep
OPTIONS = [
    ("--out", str, str(HERE / "results" / "local"), "output folder"),
    ("--name", str, None, "file stem of the outputs (default: the mode)"),
    ("--python", str, sys.executable, "interpreter for the worker processes"),
    ("--N", int, None, "steps (default 44,484; --quick 1,000)"),
    ("--D", int, 21, "state dimension of the main table (<= 21)"),
    ("--runs", int, 5, "timed runs per cell after compilation"),
    ("--max-cell-seconds", float, None, "fewer timed runs when they would take longer (15)"),
    ("--peer-min-runs", int, 3, "minimum timed runs of a peer's cell (jaxssm: always --runs)"),
    ("--timeout", float, None, "per-cell timeout in s (300)"),
    ("--parallel-timeout", float, None, "timeout of parallel-schedule cells in s (240)"),
    ("--em100-timeout", float, 600.0, "timeout of the 100-EM-iteration cells in s"),
    ("--idle-timeout", float, None, "report a cell hung after this long at 0%% CPU (20)"),
    ("--budget", float, None, "wall-clock budget in s; cells left are skipped (880; 0: none)"),
    ("--impls", str, "jaxssm,dynamax,cuthbert,numpy,pykalman", "implementations"),
    ("--ops", str, ",".join(report.OP_LABELS), "operations"),
    ("--dtypes", str, "float64,float32", "dtypes of the main table"),
    ("--schedules", str, ",".join(report.SCHEDULES), "steady: fast path; sequential: full"),
    ("--sweep-dtypes", str, "float64,float32", "dtypes of the sweep, within the preset's"),
]
# The defaults in parentheses above are the full suite's; per preset: N, max_cell_seconds,
# timeout, parallel_timeout, budget, idle_timeout.
DEFAULTS = {
    "full": (44_484, 15.0, 300.0, 240.0, 880.0, 20.0),
    "quick": (1_000, 2.0, 60.0, 40.0, 115.0, 10.0),
    "all": (44_484, 15.0, 900.0, 600.0, 0.0, 20.0),
    "gpu": (44_484, 5.0, 240.0, 180.0, 450.0, 20.0),
}


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small N, float64, < 2 min on 2 cores")
    p.add_argument("--gpu", action="store_true", help="GPU preset (parallel first, big sweep)")
    p.add_argument("--all", action="store_true", help="the whole grid, no budget unless given")
    p.add_argument("--no-sweep", action="store_true", help="leave out the scaling sweep")
    for flag, typ, default, hlp in OPTIONS:
        p.add_argument(flag, type=typ, default=default, help=hlp)
    a = p.parse_args(argv)
    if a.quick + a.gpu + a.all > 1:
        p.error("--quick, --gpu and --all are exclusive")
    a.preset = "quick" if a.quick else ("gpu" if a.gpu else ("all" if a.all else "full"))
    names = ("N", "max_cell_seconds", "timeout", "parallel_timeout", "budget", "idle_timeout")
    for name, value in zip(names, DEFAULTS[a.preset], strict=True):
        if getattr(a, name) is None:
            setattr(a, name, value)
    a.budget = a.budget if a.budget > 0 else None
    for name in ("impls", "ops", "dtypes", "schedules", "sweep_dtypes"):
        setattr(a, name, [x for x in getattr(a, name).split(",") if x])
    return a


def _machine(versions: dict) -> tuple[str, bool]:
    """A label for the machine, and whether JAX runs on a GPU."""
    jax_dev = str(versions.get("jax_device", ""))
    host = f"{_cpu_model()}, {os.cpu_count()} cores"
    if not jax_dev.lower().startswith(("gpu", "cuda")):
        return f"CPU {host}", False
    gpu = _sh(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]).strip()
    return f"GPU {gpu or jax_dev.split(':', 1)[-1]} (host CPU: {host})", True


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker_main(argv[1])
        return 0
    if argv[:1] == ["--render"]:  # re-write the markdown of an existing results JSON
        path = Path(argv[1])
        data = json.loads(path.read_text())
        path.with_suffix(".md").write_text(report.render_markdown(data["meta"], data["results"]))
        print(f"[bench] wrote {path.with_suffix('.md')}")
        return 0
    args = _parse(argv)
    mode, name, out_dir = args.preset, args.name or args.preset, Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", **os.environ}
    path = [str(HERE), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(path)

    t_start = time.perf_counter()
    versions = _run_cell("versions", args.python, 120.0, env, 60.0)
    versions = {k: x for k, x in versions.items() if k not in ("spec", "wall_s")}
    cells = plan(args)
    device, on_gpu = _machine(versions)
    print(f"[bench] {mode}: {len(cells)} cells on {device}; jax {versions.get('jax')}", flush=True)
    git = _sh(["git", "rev-parse", "HEAD"]).strip() or "unknown"
    git += "+dirty" if _sh(["git", "status", "--porcelain", "--untracked-files=no"]) else ""
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = dict(title=f"{mode} run", mode=mode, device=device, gpu=on_gpu, versions=versions)
    meta.update(git_commit=git, date=date, python=platform.python_version())
    meta.update(command="python benchmarks/run.py " + " ".join(argv))
    meta.update(N=args.N, D=args.D, dtypes=args.dtypes, noise_note=NOISE_NOTE[on_gpu])
    results: list[dict] = []

    def dump():
        meta["wall_s"] = time.perf_counter() - t_start
        main_ok = [r for r in results if r["spec"]["group"] == "main" and "data_source" in r]
        meta["data_source"] = main_ok[0]["data_source"] if main_ok else "-"
        meta["fingerprint"] = main_ok[0].get("fingerprint") if main_ok else None
        data = json.dumps(dict(meta=meta, results=results), indent=1)
        (out_dir / f"{name}.json").write_text(data)
        (out_dir / f"{name}.md").write_text(report.render_markdown(meta, results))

    for i, spec in enumerate(cells):
        elapsed = time.perf_counter() - t_start
        label = f"[{i + 1}/{len(cells)}] {spec['impl']} {spec['op']} {spec['schedule']} "
        label += f"{spec['dtype']} N={spec.get('subset') or spec['N']} D={spec['D']}"
        if args.budget is not None and elapsed > args.budget - 3:
            reason = f"skipped: time budget of {args.budget:.0f} s spent"
            results.append({"spec": spec, "status": "skipped", "reason": reason})
            print(f"{label}: skipped (budget)", flush=True)
            continue
        timeout = spec.pop("timeout") or args.timeout
        by_budget = args.budget is not None and args.budget - elapsed < timeout
        if by_budget:
            timeout = max(5.0, args.budget - elapsed)
        res = _run_cell(spec, args.python, timeout, env, args.idle_timeout)
        if by_budget and res.get("status") == "timeout" and "still computing" in res["reason"]:
            why = f"the time budget of {args.budget:.0f} s ran out during this cell"
            res.update(status="skipped", reason=f"stopped: {why} ({res['reason']})")
        results.append(res)
        msg = report.status_text(res)
        if report.is_ok(res):
            msg = f"median {report.fmt_s(res['median_s'])} x{res['runs']}, compile "
            msg += f"{report.fmt_s(res.get('compile_s'))}, peak {res['peak_rss_mb']:.0f} MB"
            msg += f", loglik {res['loglik']:.4f}" if "loglik" in res else ""
        print(f"{label}: {msg}  ({res.get('wall_s', 0):.1f} s)", flush=True)
        dump()
    dump()
    print("[bench] log-likelihood agreement (reference: jaxssm sequential float64 filter):")
    for n, d, kind, impl, op, sched, dtype, ll, diff, rel in report.agreement_rows(results):
        bad = rel is not None and rel > (1e-6 if dtype == "float64" else 1e-3)
        diff, rel = ("-" if x is None else f"{x:{f}}" for x, f in ((diff, "+.3g"), (rel, ".2g")))
        print(
            f"  {kind:9s} N={n:<7d} D={d:<3d} {impl:9s} {op:9s} {sched:10s} {dtype}: {ll:.6f}"
            f"  diff {diff}  rel {rel}{'  <-- DISAGREES' if bad else ''}"
        )
    print(f"[bench] wrote {out_dir / name}.json and .md in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
