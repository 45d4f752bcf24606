"""The markdown report of a benchmark run (``benchmarks/run.py``; ``run.py --render`` re-writes it).

``render_markdown(meta, results)`` turns the run's JSON (``meta``: device, versions, command,
N, D, ...; ``results``: one dict per cell, as the worker wrote it) into the tables of
``benchmarks/results/*.md``: the header, one main table per dtype (jaxssm's three schedules
against the peers, with ratios), the log-likelihood agreement, the scaling sweep and every
cell. Plain Python, no jax.
"""

from __future__ import annotations

import math
import re

SEQ, PAR, STEADY = "sequential", "parallel", "steady"
PEERS = ("dynamax", "cuthbert", "numpy", "pykalman")
SCHEDULES = ("steady", "sequential", "parallel")
SHORT = {"steady": "steady (default)", "sequential": "sequential (full)", "parallel": "parallel"}
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


def fmt_s(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x >= 0.1:
        return f"{x:.0f}" if x >= 100 else (f"{x:.1f}" if x >= 10 else f"{x:.2f}")
    return f"{x * 1e3:.1f} ms" if x >= 0.001 else f"{x * 1e6:.0f} us"


def _fmt_ratio(a, b) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2g}" if a / b < 0.1 else f"{a / b:.2f}"


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _key(r):
    s = r["spec"]
    return (
        *(s[k] for k in ("impl", "op", "schedule", "dtype")),
        s.get("subset") or s["N"],
        s["D"],
        s["kind"],
    )


def is_ok(r) -> bool:
    return r is not None and r.get("status") == "ok"


def status_text(r) -> str:
    return "ok" if is_ok(r) else r.get("reason", r.get("status") or "?")


def _cell_text(r) -> str:
    if r is None:
        return "-"
    if is_ok(r):
        return fmt_s(r["median_s"]) + (" (extrap.)" if r.get("scale", 1.0) != 1.0 else "")
    if r.get("status") == "timeout":
        return "hung" if r["reason"].startswith("hung") else "timeout"
    return {"unavailable": "n/a", "skipped": "skipped"}.get(r.get("status"), "error")


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
            cell = (s["impl"], s["op"], s["schedule"], s["dtype"])
            if cell == (impl, "filter", sched, "float64") and is_ok(r) and "loglik" in r:
                key = (r.get("num_steps_run", s["N"]), s["D"], s["kind"])
                refs[key] = (r["loglik"], rank, f"{impl} {sched}")
    rows = []
    for r in results:
        if not is_ok(r) or "loglik" not in r:
            continue
        s = r["spec"]
        n_run = r.get("num_steps_run", s["N"])
        ref, rank, ref_name = refs.get((n_run, s["D"], s["kind"]), (None, 0, ""))
        diff = r["loglik"] - ref if ref is not None else None
        rel = abs(diff) / abs(ref) if diff is not None and ref else None
        sched = s["schedule"] + (f" (ref={ref_name})" if rank else "")
        rows.append((n_run, s["D"], s["kind"], s["impl"], s["op"], sched, s["dtype"], r["loglik"]))
        rows[-1] += (diff, rel)
    rows.sort(key=lambda t: (t[2], t[0], t[1], t[6], t[3], t[4], t[5]))
    return rows


# The prose of the report; indented lines continue the line above (see _prose).
HEADER = """\
# jaxssm benchmarks: {title}

- Device: **{device}**; JAX device `{jax_device}`
- jax {jax} / jaxlib {jaxlib}, jaxssm {jaxssm}, numpy {numpy}, scipy {scipy}; peers: dynamax
  {dynamax}, cuthbert {cuthbert}, pykalman {pykalman} (None = not installed)
- git commit `{git_commit}`, {date}, Python {python}
- Command: `{command}` (total wall time {wall_s:.0f} s)
- Data (main table): {data_source}; N = {N:,}, D = Dy = {D}; dense model (A = VAR(1)
  least-squares fit of the series, Q = its residual covariance, H = I, R = P0 = kron(diag(0.01,
  0.01, 1), I_7)); data+model fingerprint `{fingerprint}`
- Timing: JAX functions jitted and compiled ahead of time (compile time reported apart); one
  untimed warm-up call when a call takes under 1 s (longer: the first call after compilation is
  the first timed run); the median of `runs` calls, each ended by `jax.block_until_ready`. Each
  cell runs in its own process: peak RSS = that process's `ru_maxrss`, which includes the
  Python/JAX runtime (about 0.2-0.3 GB){gpu_notes}
- hung = the cell's process sat at 0% CPU (killed; the phase it had reached is in the cell
  list), timeout = killed while still computing, n/a = not installed or not offered by that
  library, skipped = the run's time budget was spent.
- {noise_note}
- Schedules: {schedules}. jaxssm's default sequential functions switch to the steady-state fast
  path once the filter covariances have converged (exact to within the library's 1e-10
  agreement tolerance; see jaxssm/_schedules/settle.py); `steady_state=False` forces the full
  recursion, which does the same work as the peers. Peers have no steady-state path: the
  steady rows are compared with their sequential cells.
- Ratio = jaxssm time / peer time on the same operation, schedule and dtype in this run (below
  1: jaxssm is faster). On CPU the ratio of process CPU times (all threads, median over the same
  runs) follows in parentheses: it is less sensitive to other load on a shared machine than wall
  time, but counts work on all cores, not latency.
"""
GPU_NOTES = """; device peak = the GPU allocator's `peak_bytes_in_use`.
- The numpy loop and pykalman run on the host CPU; their ratios compare devices."""
AGREEMENT = """\
## Log-likelihood agreement (same data, conventions mapped)

Reference: jaxssm sequential filter in float64 on the same (N, D) data. dynamax and pykalman
  observe their first state, so they were given the prior of x_1, (A m0, A P0 A^T + Q); cuthbert
  and the numpy loop use jaxssm's convention. dynamax adds 1e-9 I to every matrix it
  Cholesky-solves with (`psd_solve`'s `diagonal_boost`): with that boost set to 0 its sequential
  log-likelihood equals jaxssm's to round-off (checked at N = 1,000, float64), so its difference
  here is that jitter. The sweep rows compare on the simulated data of the same (N, D).

| N | D | implementation | op | schedule | dtype | log-likelihood | minus reference | relative |
| ---: | ---: | --- | --- | --- | --- | ---: | ---: | ---: |
"""
CELLS = """\
## Every cell

| impl | op | schedule | dtype | N | D | median | min | CPU time | runs | compile | peak RSS MB
  | status / note |
| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
"""


def _prose(template: str, **fields) -> list[str]:
    """The lines of ``template`` (indented lines continue the line above), formatted."""
    return re.sub(r"\n  ", " ", template).format(**fields).split("\n")[:-1]


def _main_tables(meta: dict, results: list[dict], idx: dict) -> list[str]:
    N, D, gpu, lines = meta["N"], meta["D"], meta.get("gpu"), []
    main = [r["spec"] for r in results if r["spec"]["group"] == "main"]
    ops = [op for op in OP_LABELS if any(s["op"] == op for s in main)]
    for dtype in [d for d in meta["dtypes"] if any(s["dtype"] == d for s in main)]:
        hdr = ["operation", "schedule", "jaxssm", "compile", "runs", "peak RSS MB"]
        hdr += ["device peak MB"] if gpu else []
        for p in PEERS:
            hdr += [p, f"jaxssm/{p}" if gpu else f"jaxssm/{p} wall (CPU time)"]
        lines += [f"## N = {N:,}, D = {D}, {dtype}: median seconds per call", "", _row(*hdr)]
        lines.append(_row("---", "---", *["---:"] * (len(hdr) - 2)))
        for op in ops:
            for sched in SCHEDULES:
                r = idx.get(("jaxssm", op, sched, dtype, N, D, "sarcos"))
                peer_sched = SEQ if sched == STEADY else sched
                pcs = [idx.get((p, op, peer_sched, dtype, N, D, "sarcos")) for p in PEERS]
                if r is None and not any(pcs):
                    continue
                ok = is_ok(r)
                cells = [OP_LABELS[op], SHORT[sched], _cell_text(r)]
                if ok:
                    cells += [fmt_s(r.get("compile_s")), r.get("runs", "-")]
                    cells += [f"{r['peak_rss_mb']:.0f}"]
                else:
                    cells += ["-"] * 3
                if gpu:
                    cells += [f"{r['device_peak_mb']:.0f}" if ok and "device_peak_mb" in r else "-"]
                for pc in pcs:
                    both = ok and is_ok(pc)
                    ratio = _fmt_ratio(r["median_s"], pc["median_s"]) if both else "-"
                    if both and not gpu and "median_cpu_s" in r and "median_cpu_s" in pc:
                        ratio += f" ({_fmt_ratio(r['median_cpu_s'], pc['median_cpu_s'])})"
                    cells += [_cell_text(pc), ratio]
                lines.append(_row(*cells))
        lines.append("")
    return lines


def _sweep_table(results: list[dict], idx: dict) -> list[str]:
    sweep = [r["spec"] for r in results if r["spec"]["group"] == "sweep"]
    if not sweep:
        return []
    impls = list(dict.fromkeys((s["impl"], s["schedule"]) for s in sweep))
    hdr = [f"{i} {SHORT.get(s, s) if i == 'jaxssm' else s}" for i, s in impls]
    lines = ["## Scaling sweep: filter, simulated data from a random dense model, median seconds"]
    lines += ["", _row("dtype", "N", "D", *hdr, "jaxssm full seq / par")]
    lines += [_row("---", *["---:"] * (len(hdr) + 3))]
    for dtype, n, d in dict.fromkeys((s["dtype"], s["N"], s["D"]) for s in sweep):
        cells = [idx.get((i, "filter", s, dtype, n, d, "simulated")) for i, s in impls]
        a = idx.get(("jaxssm", "filter", "sequential", dtype, n, d, "simulated"))
        b = idx.get(("jaxssm", "filter", "parallel", dtype, n, d, "simulated"))
        ratio = _fmt_ratio(a["median_s"], b["median_s"]) if is_ok(a) and is_ok(b) else "-"
        lines.append(_row(dtype, f"{n:,}", d, *map(_cell_text, cells), ratio))
    note = "Peak RSS (MB) and compile time of the sweep cells are in the full cell list below."
    return [*lines, "", note, ""]


def _cell_list(results: list[dict]) -> list[str]:
    lines = _prose(CELLS)
    for r in results:
        s, ok = r["spec"], is_ok(r)
        note = r.get("note", "") if ok else status_text(r)
        if ok and r.get("compile_kind", "aot") != "aot":
            note += f"; compile column = {r['compile_kind']}"
        rss = f"{r['peak_rss_mb']:.0f}" if ok else "-"
        if ok and "device_peak_mb" in r:
            rss += f" (device {r['device_peak_mb']:.0f})"
        n_text = f"{s['subset']:,} of {s['N']:,}" if s.get("subset") else f"{s['N']:,}"
        nums = ["-"] * 5
        if ok:
            nums = [fmt_s(r.get(k)) for k in ("median_s", "min_s", "median_cpu_s")]
            nums[3:] = [r.get("runs", "-"), fmt_s(r.get("compile_s"))]
        cells = [s["impl"], s["op"], s["schedule"], s["dtype"], n_text, s["D"], *nums, rss]
        lines.append(_row(*cells, note.replace("|", "/")))
    return [*lines, ""]


def render_markdown(meta: dict, results: list[dict]) -> str:
    """The report: header, main tables, log-likelihood agreement, sweep, every cell."""
    idx, v = {_key(r): r for r in results}, meta["versions"]
    names = ("jax", "jaxlib", "jaxssm", "numpy", "scipy", "jax_device", *PEERS[:2], "pykalman")
    fields = {**meta, **{k: v.get(k) for k in names}, "fingerprint": meta.get("fingerprint")}
    fields["gpu_notes"] = GPU_NOTES if meta.get("gpu") else "."
    fields["schedules"] = "; ".join(f"**{SHORT[k]}** = {x}" for k, x in SCHEDULE_LABELS.items())
    lines = _prose(HEADER, **fields) + [""] + _main_tables(meta, results, idx) + _prose(AGREEMENT)
    for n, d, _kind, impl, op, sched, dtype, ll, diff, rel in agreement_rows(results):
        diff, rel = ("-" if x is None else f"{x:{f}}" for x, f in ((diff, ".3g"), (rel, ".2g")))
        lines.append(_row(f"{n:,}", d, impl, op, sched, dtype, f"{ll:.6f}", diff, rel))
    lines += [""] + _sweep_table(results, idx) + _cell_list(results)
    return "\n".join(lines)
