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

Timing inside a cell: JAX functions are wrapped in ``jax.jit`` and compiled ahead of time
(``lower(...).compile()``: the "compile" column); then one untimed warm-up call (for calls
over 1 s the first call after compilation is the first timed run instead), then ``--runs``
timed calls, each ended by ``jax.block_until_ready``; the table shows the median, the JSON
every run with its process CPU time. Plain Python peers (numpy loop, pykalman) have no
compile step. jaxssm cells always get ``--runs`` timed runs; a peer's cell whose runs would
exceed ``--max-cell-seconds`` gets fewer (at least ``--peer-min-runs``); the runs column
says how many. Cells are run in order of importance and skipped once ``--budget`` is spent.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

RESULT_TAG = "@@BENCH_RESULT@@ "
PEERS = ("dynamax", "cuthbert", "numpy", "pykalman")
SCHEDULES = ("steady", "sequential", "parallel")
SHORT = {"steady": "steady (default)", "sequential": "sequential (full)",
         "parallel": "parallel"}
SCHEDULE_LABELS = {
    "steady": "sequential, steady-state fast path (jaxssm's default)",
    "sequential": "sequential, full covariance recursion",
    "parallel": "parallel (associative scan)",
}
OP_LABELS = {
    "filter": "filter (log-lik + moments)",
    "smoother": "filter + RTS smoother",
    "e_step": "E-step",
    "em_iter": "1 EM iteration",
    "em_100": "100 EM iterations",
    "mle_step": "1 MLE gradient step",
}


# ==========================================================================================
# Worker: runs one cell and prints one JSON line
# ==========================================================================================


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _phase(msg: str) -> None:
    print(f"[phase] {msg}", file=sys.stderr, flush=True)


def _worker(spec: dict) -> dict:
    uses_jax = spec["impl"] in ("jaxssm", "dynamax", "cuthbert")
    out: dict = {"spec": spec}
    if uses_jax:
        import jax

        jax.config.update("jax_enable_x64", spec["dtype"] == "float64")
    import peers
    import workloads

    _phase("building workload")
    w = workloads.build(spec["kind"], spec["N"], spec["D"])
    if spec.get("subset"):  # the first steps of the same data and model (agreement checks)
        w = w._replace(ys=w.ys[: spec["subset"]])
    out["data_source"] = w.source
    out["fingerprint"] = workloads.fingerprint(w)
    try:
        prep = peers.prepare(spec["impl"], spec["op"], spec["schedule"], w, spec["dtype"])
    except peers.Unavailable as e:
        out.update(status="unavailable", reason=str(e))
        return out
    out["note"] = prep.note
    out["num_steps_run"] = prep.num_steps or w.ys.shape[0]
    out["scale"] = prep.scale
    out["baseline_rss_mb"] = _rss_mb()
    times: list[float] = []
    cpu_times: list[float] = []
    runs = spec["runs"]
    cap = spec["max_cell_seconds"]
    perf, cpu = time.perf_counter, time.process_time

    if prep.is_jax:
        import jax

        dev = jax.devices()[0]
        out["device"] = f"{dev.platform}:{getattr(dev, 'device_kind', '')}"
        jitted = jax.jit(prep.fn)
        _phase("compiling")
        t0 = perf()
        try:
            call = jitted.lower(*prep.args).compile()
            out["compile_s"] = perf() - t0
            out["compile_kind"] = "aot"
        except Exception as e:  # not jittable as a whole: time the public call directly
            out["compile_kind"] = f"first call (jit-wrap failed: {type(e).__name__})"
            call = prep.fn
            t0 = perf()
            jax.block_until_ready(call(*prep.args))
            out["compile_s"] = perf() - t0

        def once():
            return jax.block_until_ready(call(*prep.args))
    else:
        dev = None
        out["device"] = "cpu:numpy"

        def once():
            return prep.fn(*prep.args)

    def timed():
        t0, c0 = perf(), cpu()
        res = once()
        times.append(perf() - t0)
        cpu_times.append(cpu() - c0)
        return res

    _phase("first run")
    result = timed()
    first = times[0]
    if prep.is_jax and not prep.long and first <= 1.0:
        # Short JAX calls get an untimed warm-up; from 1 s up, the first call after
        # (ahead-of-time) compilation counts as the first timed run.
        out["warmup_s"] = times.pop()
        cpu_times.pop()
    if not prep.long:
        n = max(spec.get("min_runs", 1), min(runs, int(cap / max(first, 1e-9))))
        while len(times) < n:
            _phase(f"run {len(times) + 1}/{n}")
            result = timed()
    if dev is not None:
        stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
        if stats and "peak_bytes_in_use" in stats:
            out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    out["times_s"] = [t * prep.scale for t in times]
    out["cpu_times_s"] = [t * prep.scale for t in cpu_times]
    out["runs"] = len(times)
    out["median_s"] = statistics.median(out["times_s"])
    out["median_cpu_s"] = statistics.median(out["cpu_times_s"])
    out["min_s"] = min(out["times_s"])
    if prep.loglik is not None:
        try:
            out["loglik"] = float(prep.loglik(result))
        except Exception as e:  # noqa: BLE001
            out["loglik_error"] = f"{type(e).__name__}: {e}"
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out["status"] = "ok"
    return out


def _worker_main(arg: str) -> None:
    spec = json.loads(arg)
    try:
        res = _worker(spec)
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


def _run_cell(spec: dict, python: str, timeout: float, env: dict, idle_s: float) -> dict:
    """Run one cell in a fresh process; kill it at ``timeout`` or after ``idle_s`` at 0% CPU.

    A process that is runnable accumulates CPU time even on a busy shared machine; the
    associative-scan hangs of jax 0.10.2 (ENVIRONMENT.md) park every thread at 0% CPU, so
    ``idle_s`` seconds without CPU progress is reported as a hang.
    """
    cmd = [python, str(HERE / "run.py"), "--worker", json.dumps(spec)]
    t_start = time.perf_counter()
    err_file = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=err_file, text=True, env=env,
        start_new_session=True, cwd=str(ROOT),
    )
    out_chunks: list[str] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    last_cpu, last_progress = 0.0, time.perf_counter()
    killed = None
    while proc.poll() is None:
        time.sleep(0.5)
        now = time.perf_counter()
        cpu = _cpu_seconds(proc.pid)
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
    reader.join(timeout=10)
    stdout = "".join(out_chunks)
    err_file.seek(0)
    stderr = err_file.read()
    err_file.close()
    wall = time.perf_counter() - t_start
    if killed:
        phases = [ln[8:] for ln in stderr.splitlines() if ln.startswith("[phase] ")]
        last = phases[-1] if phases else "starting"
        return {"spec": spec, "status": "timeout", "reason": f"{killed}, after: {last})",
                "wall_s": wall}
    for line in stdout.splitlines():
        if line.startswith(RESULT_TAG):
            res = json.loads(line[len(RESULT_TAG):])
            res["wall_s"] = wall
            if res.get("status") == "error":
                res["stderr_tail"] = stderr[-2000:]
            return res
    return {"spec": spec, "status": "error",
            "reason": f"worker exited {proc.returncode} without a result",
            "stderr_tail": stderr[-2000:], "wall_s": wall}


def _spec(impl, op, schedule, dtype, N, D, kind, group, args, timeout=None) -> dict:
    min_runs = args.runs if impl == "jaxssm" else min(args.runs, args.peer_min_runs)
    return dict(impl=impl, op=op, schedule=schedule, dtype=dtype, N=N, D=D, kind=kind,
                group=group, runs=args.runs, min_runs=min_runs,
                max_cell_seconds=args.max_cell_seconds, timeout=timeout)


JAX_OPS = ("filter", "smoother", "e_step", "em_iter", "mle_step")
PEER_OPS = {
    "dynamax": ("filter", "smoother", "em_iter"),
    "cuthbert": ("filter", "smoother"),
    "numpy": ("filter", "smoother", "em_iter"),
    "pykalman": ("filter", "smoother", "em_iter"),
}
F64, F32, BOTH = ("float64",), ("float32",), ("float64", "float32")
SEQ, PAR, STEADY = "sequential", "parallel", "steady"

# Each preset is an ordered list of (impl, ops, schedule, dtypes): most important first, so
# that a time budget that runs out drops the least important cells.
_PEERS_SEQ_F64 = [
    ("dynamax", PEER_OPS["dynamax"], SEQ, F64),
    ("cuthbert", PEER_OPS["cuthbert"], SEQ, F64),
    ("numpy", PEER_OPS["numpy"], SEQ, F64),
    ("pykalman", PEER_OPS["pykalman"], SEQ, F64),
    ("check", ("filter",), SEQ, F64),
]
_N_SWEEP = [(1_000, 21), (10_000, 21), (100_000, 21), (10_000, 3), (10_000, 63)]
# On 2 CPU cores the D sweep runs at N = 2,000: one D = 63 filter step costs ~60x a D = 21
# step there (20 s per call at N = 1e4).
_CPU_SWEEP = [(1_000, 21), (10_000, 21), (100_000, 21), (2_000, 3), (2_000, 21), (2_000, 63)]
PRESETS = {
    # The default CPU suite, about 10 minutes on 2 idle cores (the 880 s budget drops the tail
    # on a busy machine): every jaxssm op on its default sequential path (steady-state fast
    # path) and on the full recursion, in both dtypes; 100 EM iterations; the peers'
    # sequential paths; the parallel filters (on 2 cores a parallel filter costs ~10x the
    # sequential one and compiles for 20-60 s); the sweep; then the parallel smoother /
    # E-step / float32 filter and 100 full-recursion EM iterations. `--all`: the whole grid.
    "full": [
        ("jaxssm", JAX_OPS, STEADY, F64),
        ("jaxssm", JAX_OPS, SEQ, F64),
        *_PEERS_SEQ_F64,
        ("jaxssm", JAX_OPS, STEADY, F32),
        ("jaxssm", JAX_OPS, SEQ, F32),
        ("dynamax", ("filter", "smoother"), SEQ, F32),
        ("cuthbert", ("filter",), SEQ, F32),
        ("jaxssm", ("em_100",), STEADY, BOTH),
        ("jaxssm", ("filter",), PAR, F64),
        ("dynamax", ("filter",), PAR, F64),
        ("cuthbert", ("filter",), PAR, F64),
        ("sweep", [("jaxssm", STEADY), ("jaxssm", SEQ)], _CPU_SWEEP, F64),
        ("sweep", [("jaxssm", PAR)], [(1_000, 21), (10_000, 21), (2_000, 3)], F64),
        ("jaxssm", ("smoother", "e_step"), PAR, F64),
        ("jaxssm", ("filter",), PAR, F32),
        ("jaxssm", ("em_100",), SEQ, F64),
        ("sweep", [("dynamax", SEQ)], _CPU_SWEEP, F64),
    ],
    # Everything, on any device (over an hour on 2 CPU cores).
    "all": [
        ("jaxssm", JAX_OPS, STEADY, BOTH),
        ("jaxssm", JAX_OPS, SEQ, BOTH),
        *_PEERS_SEQ_F64,
        ("dynamax", PEER_OPS["dynamax"], SEQ, F32),
        ("cuthbert", PEER_OPS["cuthbert"], SEQ, F32),
        ("jaxssm", JAX_OPS, PAR, BOTH),
        ("dynamax", ("filter", "smoother"), PAR, BOTH),
        ("cuthbert", ("filter", "smoother"), PAR, BOTH),
        ("jaxssm", ("em_100",), STEADY, BOTH),
        ("jaxssm", ("em_100",), SEQ, BOTH),
        ("jaxssm", ("em_100",), PAR, BOTH),
        ("sweep", [("jaxssm", STEADY), ("jaxssm", SEQ), ("jaxssm", PAR), ("dynamax", SEQ),
                   ("cuthbert", SEQ)], _CPU_SWEEP, F64),
    ],
    "quick": [
        ("jaxssm", JAX_OPS + ("em_100",), STEADY, F64),
        ("jaxssm", ("filter", "em_iter"), SEQ, F64),
        ("dynamax", ("filter",), SEQ, F64),
        ("cuthbert", ("filter",), SEQ, F64),
        ("numpy", ("filter",), SEQ, F64),
        ("pykalman", ("filter",), SEQ, F64),
        ("jaxssm", ("filter",), PAR, F64),
        ("sweep", [("jaxssm", STEADY)], [(1_000, 21), (4_000, 21), (1_000, 3)], F64),
    ],
    # GPU: the parallel schedule first (what a GPU is for), then the sequential ones (slow on
    # a GPU: one kernel sequence per step), peers, 100 EM iterations, a float32 sweep up to
    # N = 1e6; the budget drops the tail.
    "gpu": [
        ("jaxssm", JAX_OPS, PAR, BOTH),
        ("jaxssm", ("filter", "smoother"), STEADY, BOTH),
        ("jaxssm", ("filter", "smoother"), SEQ, BOTH),
        ("dynamax", ("filter", "smoother"), PAR, BOTH),
        ("cuthbert", ("filter", "smoother"), PAR, BOTH),
        ("dynamax", PEER_OPS["dynamax"], SEQ, BOTH),
        ("cuthbert", PEER_OPS["cuthbert"], SEQ, BOTH),
        ("jaxssm", ("em_100",), PAR, BOTH),
        ("jaxssm", ("em_100",), STEADY, BOTH),
        ("sweep", [("jaxssm", PAR), ("jaxssm", STEADY), ("jaxssm", SEQ), ("dynamax", PAR),
                   ("cuthbert", PAR)], _N_SWEEP, F32),
        ("jaxssm", ("e_step", "em_iter", "mle_step"), STEADY, BOTH),
        ("jaxssm", ("e_step", "em_iter", "mle_step"), SEQ, BOTH),
        ("numpy", ("filter",), SEQ, F64),
        ("pykalman", ("filter",), SEQ, F64),
        ("check", ("filter",), SEQ, F64),
        ("sweep", [("jaxssm", PAR), ("dynamax", PAR), ("cuthbert", PAR)],
         [(1_000_000, 21)], F32),
        ("jaxssm", ("em_100",), SEQ, F32),
    ],
}


def plan(args) -> list[dict]:
    """The ordered list of cells for this mode, filtered by --impls/--ops/--dtypes/...

    A preset entry is ``(impl, ops, schedule, dtypes)`` for the main workload (N x D SARCOS),
    ``("check", ...)`` for jaxssm on pykalman's subset (the agreement check), or
    ``("sweep", [(impl, schedule), ...], [(N, D), ...], dtypes)`` for scaling-sweep filters on
    simulated data (N outer, then dtype, then implementation).
    """
    N, D = args.N, args.D
    cells: list[dict] = []

    def keep(impl, op, schedule, dtype):
        return (impl in args.impls and op in args.ops and schedule in args.schedules
                and dtype in args.dtypes)

    for entry in PRESETS[args.preset]:
        if entry[0] == "sweep":
            _, pairs, confs, dtypes = entry
            if args.no_sweep:
                continue
            for n, d in confs:
                for dtype in dtypes:
                    for impl, schedule in pairs:
                        if not (impl in args.impls and schedule in args.schedules
                                and dtype in args.sweep_dtypes):
                            continue
                        spec = _spec(impl, "filter", schedule, dtype, n, d, "simulated",
                                     "sweep", args,
                                     timeout=args.parallel_timeout if schedule == PAR else None)
                        spec["min_runs"] = min(spec["min_runs"], 3)
                        cells.append(spec)
            continue
        impl, ops, schedule, dtypes = entry
        if impl == "check":
            if "pykalman" in args.impls and N > 4_448 and "float64" in args.dtypes:
                spec = _spec("jaxssm", "filter", SEQ, "float64", N, D, "sarcos", "check", args)
                spec["subset"] = 4_448
                cells.append(spec)
            continue
        for dtype in dtypes:
            for op in ops:
                if not keep(impl, op, schedule, dtype):
                    continue
                timeout = args.em100_timeout if op == "em_100" else (
                    args.parallel_timeout if schedule == PAR else None)
                cells.append(_spec(impl, op, schedule, dtype, N, D, "sarcos", "main", args,
                                   timeout=timeout))
    return cells


def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        return (sha or "unknown") + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions(python: str) -> dict:
    code = (
        "import json, importlib.metadata as md\n"
        "out = {}\n"
        "for p in ['jax', 'jaxlib', 'numpy', 'scipy', 'optax', 'dynamax', 'cuthbert',"
        " 'pykalman']:\n"
        "    try: out[p] = md.version(p)\n"
        "    except Exception: out[p] = None\n"
        "try:\n"
        "    import jax; d = jax.devices()[0]\n"
        "    out['jax_device'] = f'{d.platform}:{getattr(d, \"device_kind\", \"\")}'\n"
        "    out['jax_device_count'] = jax.device_count()\n"
        "except Exception as e: out['jax_device'] = repr(e)\n"
        "try:\n"
        "    import jaxssm; out['jaxssm'] = jaxssm.__version__; out['jaxssm_public'] ="
        " sorted(jaxssm.__all__)\n"
        "except Exception as e: out['jaxssm'] = repr(e)\n"
        "print(json.dumps(out))\n"
    )
    try:
        res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120,
                             cwd=str(ROOT))
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError, IndexError):
        return {}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu_name() -> str | None:
    try:
        query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]
        res = subprocess.run(query, capture_output=True, text=True, timeout=20)
        return res.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def _fmt_s(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 0.1:
        return f"{x:.2f}"
    if x >= 0.001:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} us"


def _fmt_ratio(a, b) -> str:
    if not a or not b:
        return "-"
    x = a / b
    return f"{x:.2g}" if x < 0.1 else f"{x:.2f}"


def _key(r):
    s = r["spec"]
    n = s.get("subset") or s["N"]
    return (s["impl"], s["op"], s["schedule"], s["dtype"], n, s["D"], s["kind"])


def _status_text(r) -> str:
    st = r.get("status")
    if st == "ok":
        return "ok"
    if st == "unavailable":
        return r.get("reason", "unavailable")
    return r.get("reason", st or "?")


def _cell_text(r) -> str:
    if r is None:
        return "-"
    if r.get("status") == "ok":
        t = _fmt_s(r["median_s"])
        if r.get("scale", 1.0) != 1.0:
            t += " (extrap.)"
        return t
    if r.get("status") == "timeout":
        return "hung" if r["reason"].startswith("hung") else "timeout"
    if r.get("status") == "unavailable":
        return "n/a"
    if r.get("status") == "skipped":
        return "skipped"
    return "error"


def agreement_rows(results: list[dict]) -> list[tuple]:
    """(N, D, kind, impl, op, schedule, dtype, loglik, minus reference, relative) rows.

    The reference is jaxssm's sequential float64 filter on the same (N, D, kind) data; where
    that cell did not run, jaxssm's parallel float64 filter, else the numpy loop (the rows
    then carry "ref=..." in their schedule column).
    """
    refs: dict = {}
    priority = [("jaxssm", "sequential"), ("jaxssm", "parallel"), ("numpy", "sequential")]
    for rank, (impl, sched) in reversed(list(enumerate(priority))):
        for r in results:
            s = r["spec"]
            if (s["impl"] == impl and s["op"] == "filter" and s["schedule"] == sched
                    and s["dtype"] == "float64" and r.get("status") == "ok" and "loglik" in r):
                refs[(r.get("num_steps_run", s["N"]), s["D"], s["kind"])] = (
                    r["loglik"], rank, f"{impl} {sched}")
    rows = []
    for r in results:
        if r.get("status") != "ok" or "loglik" not in r:
            continue
        s = r["spec"]
        n_run = r.get("num_steps_run", s["N"])
        ref, rank, ref_name = refs.get((n_run, s["D"], s["kind"]), (None, 0, ""))
        diff = r["loglik"] - ref if ref is not None else None
        rel = abs(diff) / abs(ref) if diff is not None and ref else None
        sched = s["schedule"] + (f" (ref={ref_name})" if rank else "")
        rows.append((n_run, s["D"], s["kind"], s["impl"], s["op"], sched, s["dtype"],
                     r["loglik"], diff, rel))
    rows.sort(key=lambda t: (t[2], t[0], t[1], t[6], t[3], t[4], t[5]))
    return rows


def render_markdown(meta: dict, results: list[dict]) -> str:
    idx = {_key(r): r for r in results}
    lines: list[str] = []
    add = lines.append
    add(f"# jaxssm benchmarks: {meta['title']}")
    add("")
    add(f"- Device: **{meta['device']}**; JAX device `{meta['versions'].get('jax_device')}`")
    v = meta["versions"]
    add(f"- jax {v.get('jax')} / jaxlib {v.get('jaxlib')}, jaxssm {v.get('jaxssm')}, numpy "
        f"{v.get('numpy')}, scipy {v.get('scipy')}; peers: dynamax {v.get('dynamax')}, "
        f"cuthbert {v.get('cuthbert')}, pykalman {v.get('pykalman')} (None = not installed)")
    add(f"- git commit `{meta['git_commit']}`, {meta['date']}, Python {meta['python']}")
    add(f"- Command: `{meta['command']}` (total wall time {meta['wall_s']:.0f} s)")
    add(f"- Data (main table): {meta['data_source']}; N = {meta['N']:,}, D = Dy = {meta['D']}; "
        "dense model (A = VAR(1) least-squares fit of the series, Q = its residual covariance, "
        "H = I, R = P0 = kron(diag(0.01, 0.01, 1), I_7)); data+model fingerprint "
        f"`{meta.get('fingerprint')}`")
    add("- Timing: JAX functions jitted and compiled ahead of time (compile time reported "
        "apart); one untimed warm-up call when a call takes under 1 s (longer: the first call "
        "after compilation is the first timed run); the median of `runs` calls, each ended by "
        "`jax.block_until_ready`. Each cell runs in its own process: peak RSS = that "
        "process's `ru_maxrss`, which includes the Python/JAX runtime (about 0.2-0.3 GB)"
        + ("; device peak = the GPU allocator's `peak_bytes_in_use`." if meta.get("gpu")
           else "."))
    if meta.get("gpu"):
        add("- The numpy loop and pykalman run on the host CPU; their ratios compare devices.")
    add("- hung = the cell's process sat at 0% CPU (killed; the phase it had reached is in the "
        "cell list), timeout = killed while still computing, n/a = not installed or not "
        "offered by that library, skipped = the run's time budget was spent.")
    add(f"- {meta['noise_note']}")
    add("- Schedules: " + "; ".join(f"**{SHORT[k]}** = {v}" for k, v in SCHEDULE_LABELS.items())
        + ". jaxssm's default sequential functions switch to the steady-state fast path once "
        "the filter covariances have converged (exact to within the library's 1e-10 "
        "agreement tolerance; see jaxssm/_steady.py); `steady_state=False` forces the full "
        "recursion, which does the same work as the peers. Peers have no steady-state path: "
        "the steady rows are compared with their sequential cells.")
    add("- Ratio = jaxssm time / peer time on the same operation, schedule and dtype in this "
        "run (below 1: jaxssm is faster). On CPU the ratio of process CPU times (all threads, "
        "median over the same runs) follows in parentheses: it is less sensitive to other "
        "load on a shared machine than wall time, but counts work on all cores, not latency.")
    add("")

    N, D = meta["N"], meta["D"]
    ops = [op for op in OP_LABELS if any(r["spec"]["op"] == op and r["spec"]["group"] == "main"
                                         for r in results)]
    for dtype in meta["dtypes"]:
        if not any(r["spec"]["dtype"] == dtype and r["spec"]["group"] == "main"
                   for r in results):
            continue
        add(f"## N = {N:,}, D = {D}, {dtype}: median seconds per call")
        add("")
        hdr = "| operation | schedule | jaxssm | compile | runs | peak RSS MB |"
        sep = "| --- | --- | ---: | ---: | ---: | ---: |"
        if meta.get("gpu"):
            hdr += " device peak MB |"
            sep += " ---: |"
        for p in PEERS:
            hdr += f" {p} | jaxssm/{p} |" if meta.get("gpu") else \
                f" {p} | jaxssm/{p} wall (CPU time) |"
            sep += " ---: | ---: |"
        add(hdr)
        add(sep)
        for op in ops:
            for sched in SCHEDULES:
                r = idx.get(("jaxssm", op, sched, dtype, N, D, "sarcos"))
                peer_sched = SEQ if sched == STEADY else sched
                peer_cells = {p: idx.get((p, op, peer_sched, dtype, N, D, "sarcos"))
                              for p in PEERS}
                if r is None and not any(peer_cells.values()):
                    continue
                ok = r is not None and r.get("status") == "ok"
                row = (f"| {OP_LABELS[op]} | {SHORT[sched]} | {_cell_text(r)} | "
                       f"{_fmt_s(r.get('compile_s')) if ok else '-'} | "
                       f"{r.get('runs', '-') if ok else '-'} | "
                       f"{r['peak_rss_mb']:.0f} |" if ok else
                       f"| {OP_LABELS[op]} | {SHORT[sched]} | {_cell_text(r)} | - | - | - |")
                if meta.get("gpu"):
                    row += f" {r['device_peak_mb']:.0f} |" if ok and "device_peak_mb" in r \
                        else " - |"
                for p in PEERS:
                    pc = peer_cells[p]
                    pok = pc is not None and pc.get("status") == "ok"
                    ratio = _fmt_ratio(r["median_s"], pc["median_s"]) if ok and pok else "-"
                    if ok and pok and not meta.get("gpu") and "median_cpu_s" in r \
                            and "median_cpu_s" in pc:
                        ratio += f" ({_fmt_ratio(r['median_cpu_s'], pc['median_cpu_s'])})"
                    row += f" {_cell_text(pc)} | {ratio} |"
                add(row)
        add("")

    add("## Log-likelihood agreement (same data, conventions mapped)")
    add("")
    add("Reference: jaxssm sequential filter in float64 on the same (N, D) data. dynamax and "
        "pykalman observe their first state, so they were given the prior of x_1, "
        "(A m0, A P0 A^T + Q); cuthbert and the numpy loop use jaxssm's convention. "
        "dynamax adds 1e-9 I to every matrix it Cholesky-solves with (`psd_solve`'s "
        "`diagonal_boost`): with that boost set to 0 its sequential log-likelihood equals "
        "jaxssm's to round-off (checked at N = 1,000, float64), so its difference here is "
        "that jitter. The sweep rows compare on the simulated data of the same (N, D).")
    add("")
    add("| N | D | implementation | op | schedule | dtype | log-likelihood | minus reference "
        "| relative |")
    add("| ---: | ---: | --- | --- | --- | --- | ---: | ---: | ---: |")
    rows = agreement_rows(results)
    for n, d, _kind, impl, op, sched, dtype, ll, diff, rel in rows:
        add(f"| {n:,} | {d} | {impl} | {op} | {sched} | {dtype} | {ll:.6f} | "
            f"{'-' if diff is None else f'{diff:.3g}'} | {'-' if rel is None else f'{rel:.2g}'} |")
    add("")

    sweep = [r for r in results if r["spec"]["group"] == "sweep"]
    if sweep:
        add("## Scaling sweep: filter, simulated data from a random dense model, median seconds")
        add("")
        impls = []
        for r in sweep:
            k = (r["spec"]["impl"], r["spec"]["schedule"])
            if k not in impls:
                impls.append(k)
        hdr = "| dtype | N | D |" + "".join(
            f" {i} {SHORT.get(s, s) if i == 'jaxssm' else s} |" for i, s in impls)
        add(hdr + " jaxssm full seq / par |")
        add("| --- | ---: | ---: |" + " ---: |" * len(impls) + " ---: |")
        confs = []
        for r in sweep:
            c = (r["spec"]["dtype"], r["spec"]["N"], r["spec"]["D"])
            if c not in confs:
                confs.append(c)
        for dtype, n, d in confs:
            row = f"| {dtype} | {n:,} | {d} |"
            for i, s in impls:
                row += f" {_cell_text(idx.get((i, 'filter', s, dtype, n, d, 'simulated')))} |"
            a = idx.get(("jaxssm", "filter", "sequential", dtype, n, d, "simulated"))
            b = idx.get(("jaxssm", "filter", "parallel", dtype, n, d, "simulated"))
            ok = a and b and a.get("status") == "ok" and b.get("status") == "ok"
            row += f" {_fmt_ratio(a['median_s'], b['median_s']) if ok else '-'} |"
            add(row)
        add("")
        add("Peak RSS (MB) and compile time of the sweep cells are in the full cell list below.")
        add("")

    add("## Every cell")
    add("")
    add("| impl | op | schedule | dtype | N | D | median | min | CPU time | runs | compile "
        "| peak RSS MB | status / note |")
    add("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |")
    for r in results:
        s = r["spec"]
        ok = r.get("status") == "ok"
        note = r.get("note", "") if ok else _status_text(r)
        if ok and r.get("compile_kind", "aot") != "aot":
            note += f"; compile column = {r['compile_kind']}"
        dev_mem = f" (device {r['device_peak_mb']:.0f})" if ok and "device_peak_mb" in r else ""
        rss = f"{r['peak_rss_mb']:.0f}" if ok else "-"
        n_text = f"{s['subset']:,} of {s['N']:,}" if s.get("subset") else f"{s['N']:,}"
        add(f"| {s['impl']} | {s['op']} | {s['schedule']} | {s['dtype']} | {n_text} | "
            f"{s['D']} | {_fmt_s(r.get('median_s')) if ok else '-'} | "
            f"{_fmt_s(r.get('min_s')) if ok else '-'} | "
            f"{_fmt_s(r.get('median_cpu_s')) if ok else '-'} | "
            f"{r.get('runs', '-') if ok else '-'} | "
            f"{_fmt_s(r.get('compile_s')) if ok else '-'} | "
            f"{rss}{dev_mem} | {note.replace('|', '/')} |")
    add("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="small N, float64, < 2 min on 2 cores")
    p.add_argument("--gpu", action="store_true",
                   help="GPU preset: every op, both dtypes and schedules, bigger sweep")
    p.add_argument("--out", default=str(HERE / "results" / "local"), help="output folder")
    p.add_argument("--name", default=None, help="file stem of the outputs (default: the mode)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the worker processes")
    p.add_argument("--N", type=int, default=None, help="steps (default 44,484; --quick 1,000)")
    p.add_argument("--D", type=int, default=21, help="state dimension of the main table (<= 21)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per cell after compilation")
    p.add_argument("--max-cell-seconds", type=float, default=None,
                   help="fewer timed runs (not below the minimum) when they would take longer "
                   "(default 15; --quick 3)")
    p.add_argument("--peer-min-runs", type=int, default=3,
                   help="minimum timed runs of a peer's cell (jaxssm cells always get --runs)")
    p.add_argument("--timeout", type=float, default=None, help="per-cell timeout in s (300)")
    p.add_argument("--parallel-timeout", type=float, default=None,
                   help="timeout of parallel-schedule cells in s (240; --quick 40)")
    p.add_argument("--em100-timeout", type=float, default=600.0)
    p.add_argument("--idle-timeout", type=float, default=20.0,
                   help="a cell whose process makes no CPU progress this long is reported hung")
    p.add_argument("--budget", type=float, default=None,
                   help="total wall-clock budget in s; cells left when it runs out are skipped "
                   "(default: 880 full, 115 quick, 450 gpu, none for --all)")
    p.add_argument("--impls", default="jaxssm,dynamax,cuthbert,numpy,pykalman")
    p.add_argument("--ops", default="filter,smoother,e_step,em_iter,em_100,mle_step")
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--schedules", default="steady,sequential,parallel",
                   help="jaxssm: steady = default sequential path with the steady-state fast "
                   "path, sequential = full recursion (steady_state=False); peers: sequential, "
                   "parallel")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--sweep-dtypes", default="float64,float32",
                   help="dtypes of the sweep, within the preset's (CPU: float64; GPU: float32)")
    p.add_argument("--all", action="store_true",
                   help="the whole grid (every op, schedule, dtype; no budget unless given)")
    a = p.parse_args(argv)
    if a.quick + a.gpu + a.all > 1:
        p.error("--quick, --gpu and --all are exclusive")
    a.preset = "quick" if a.quick else ("gpu" if a.gpu else ("all" if a.all else "full"))
    defaults = {  # N, max_cell_seconds, timeout, parallel_timeout, budget
        "full": (44_484, 15.0, 300.0, 240.0, 880.0),
        "quick": (1_000, 2.0, 60.0, 40.0, 115.0),
        "all": (44_484, 15.0, 900.0, 600.0, 0.0),
        "gpu": (44_484, 5.0, 240.0, 180.0, 450.0),
    }[a.preset]
    for name, value in zip(("N", "max_cell_seconds", "timeout", "parallel_timeout", "budget"),
                           defaults, strict=True):
        if getattr(a, name) is None:
            setattr(a, name, value)
    if a.quick and a.idle_timeout == 20.0:
        a.idle_timeout = 10.0
    if a.budget <= 0:
        a.budget = None
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    a.impls, a.ops = split(a.impls), split(a.ops)
    a.dtypes, a.schedules = split(a.dtypes), split(a.schedules)
    a.sweep_dtypes = split(a.sweep_dtypes)
    return a


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        _worker_main(argv[1])
        return 0
    if argv and argv[0] == "--render":
        # Re-write the markdown of an existing results JSON (no cell is run).
        path = Path(argv[1])
        data = json.loads(path.read_text())
        path.with_suffix(".md").write_text(render_markdown(data["meta"], data["results"]))
        print(f"[bench] wrote {path.with_suffix('.md')}")
        return 0
    args = _parse(argv)
    mode = args.preset
    name = args.name or mode
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))

    t_start = time.perf_counter()
    versions = _versions(args.python)
    cells = plan(args)
    gpu = _gpu_name()
    jax_dev = str(versions.get("jax_device", ""))
    on_gpu = jax_dev.lower().startswith(("gpu", "cuda"))
    if on_gpu:
        gpu_label = gpu or jax_dev.split(":", 1)[-1]
        device = f"GPU {gpu_label} (host CPU: {_cpu_model()}, {os.cpu_count()} cores)"
    else:
        device = f"CPU {_cpu_model()}, {os.cpu_count()} cores"
    print(f"[bench] {mode}: {len(cells)} cells on {device}; jax {versions.get('jax')}",
          flush=True)
    results: list[dict] = []
    meta = {
        "title": f"{mode} run",
        "mode": mode,
        "device": device,
        "gpu": on_gpu,
        "versions": versions,
        "git_commit": _git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "command": "python benchmarks/run.py " + " ".join(argv),
        "N": args.N,
        "D": args.D,
        "dtypes": args.dtypes,
        "noise_note": (
            "Compare ratios within one run, not across runs." if on_gpu else
            "Timings are noisy: this 2-core machine was shared with other work while the "
            "suite ran (wall times move by up to 2-3x between runs); compare ratios within "
            "one run, not across runs."),
    }

    def dump():
        meta["wall_s"] = time.perf_counter() - t_start
        main_ok = [r for r in results if r["spec"]["group"] == "main" and "data_source" in r]
        meta["data_source"] = main_ok[0]["data_source"] if main_ok else "-"
        meta["fingerprint"] = main_ok[0].get("fingerprint") if main_ok else None
        (out_dir / f"{name}.json").write_text(json.dumps({"meta": meta, "results": results},
                                                         indent=1))
        (out_dir / f"{name}.md").write_text(render_markdown(meta, results))

    for i, spec in enumerate(cells):
        elapsed = time.perf_counter() - t_start
        label = (f"{spec['impl']} {spec['op']} {spec['schedule']} {spec['dtype']} "
                 f"N={spec.get('subset') or spec['N']} D={spec['D']}")
        if args.budget is not None and elapsed > args.budget - 3:
            results.append({"spec": spec, "status": "skipped",
                            "reason": f"skipped: time budget of {args.budget:.0f} s spent"})
            print(f"[{i + 1}/{len(cells)}] {label}: skipped (budget)", flush=True)
            continue
        timeout = spec.pop("timeout") or args.timeout
        by_budget = args.budget is not None and args.budget - elapsed < timeout
        if by_budget:
            timeout = max(5.0, args.budget - elapsed)
        res = _run_cell(spec, args.python, timeout, env, args.idle_timeout)
        if by_budget and res.get("status") == "timeout" and "still computing" in res["reason"]:
            res["status"] = "skipped"
            res["reason"] = (f"stopped: the time budget of {args.budget:.0f} s ran out during "
                             f"this cell ({res['reason']})")
        results.append(res)
        if res.get("status") == "ok":
            msg = (f"median {_fmt_s(res['median_s'])} x{res['runs']}, compile "
                   f"{_fmt_s(res.get('compile_s'))}, peak {res['peak_rss_mb']:.0f} MB"
                   + (f", loglik {res['loglik']:.4f}" if "loglik" in res else ""))
        else:
            msg = _status_text(res)
        print(f"[{i + 1}/{len(cells)}] {label}: {msg}  ({res.get('wall_s', 0):.1f} s)",
              flush=True)
        dump()
    dump()
    print("[bench] log-likelihood agreement (reference: jaxssm sequential float64 filter):")
    for n, d, kind, impl, op, sched, dtype, ll, diff, rel in agreement_rows(results):
        flag = ""
        if rel is not None and rel > (1e-6 if dtype == "float64" else 1e-3):
            flag = "  <-- DISAGREES"
        print(f"  {kind:9s} N={n:<7d} D={d:<3d} {impl:9s} {op:9s} {sched:10s} {dtype}: "
              f"{ll:.6f}  diff {'-' if diff is None else f'{diff:+.3g}'}  "
              f"rel {'-' if rel is None else f'{rel:.2g}'}{flag}")
    print(f"[bench] wrote {out_dir / (name + '.json')} and {out_dir / (name + '.md')} "
          f"in {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
