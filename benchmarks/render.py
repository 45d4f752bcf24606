"""The one renderer of the benchmark pages: ``benchmarks/results/*.json`` to markdown.

Every benchmark script writes its measurements as JSON under ``benchmarks/results/``; this
script turns each JSON file into one page of the documentation site: what was measured, the
command that measures it, the tables of the file's records, and the machine it ran on.
``cpu.json`` (``benchmarks/run.py``) keeps its own report layout (``report.render_markdown``);
every other file is rendered by the same generic rules (a list of records is a table, a
mapping of records is a table keyed by name, scalars are a two-column table). Plain Python:
no jax, nothing is run or fetched.

The docs build calls it as a hook (``docs/hooks.py``): the pages exist only in the built
site. To look at them without MkDocs::

    python benchmarks/render.py --out /tmp/bench-pages    # one NAME.md per results/NAME.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: What each results file measures and the command that (re)writes it. A JSON file not
#: listed here still gets a page, titled by its name, without a command.
PAGES: dict[str, tuple[str, str, str]] = {
    "cpu": (
        "CPU suite: jaxssm against its peers",
        "python benchmarks/run.py --out benchmarks/results --name cpu --budget 1800",
        "Filter, smoother, E-step, EM iterations and one MLE gradient step at N = 44,484, "
        "D = 21 on the SARCOS stand-in, jaxssm's three schedules against dynamax, cuthbert, "
        "a numpy loop and pykalman (peers from a separate environment, "
        "`benchmarks/README.md`).",
    ),
    "time_to_max": (
        "Time to the maximum likelihood",
        "python benchmarks/time_to_max.py",
        "Time and E-steps to within 0.1 nat and 1e-6 relative of the best log-likelihood on "
        "the SARCOS test split (learning A, Q): plain EM, SQUAREM, `fit` and L-BFGS, from "
        "the white-noise start and from `initialize`.",
    ),
    "em_floor": (
        "One EM iteration against the floor of its work",
        "python benchmarks/em_floor.py --peer-python .venv-bench/bin/python",
        "One EM iteration inside `fit_em` at N = 44,484 against the floor of the same work "
        "(two matvec chains as plain scans and four `[D, N] @ [N, D]` products), dynamax's "
        "EM iteration, and what a fresh process pays to compile `fit_em(100)` with a cold and "
        "a warm persistent compilation cache.",
    ),
    "compile_options": (
        "The CPU compiler option",
        "python benchmarks/compile_options.py --repeats 3",
        "The library's per-program CPU option (`xla_cpu_use_fusion_emitters=False`) against "
        "XLA's defaults: XLA compile time, added peak memory and run time of `fit_em(100)`, "
        "`rts_smoother` and `e_step` at N = 44,484, each cell a fresh process.",
    ),
    "data_sums": (
        "Data-only statistics once per fit",
        "python benchmarks/data_sums.py --out benchmarks/results",
        "The EM loop with the data-only sums computed once per fit against once per "
        'iteration, for `update=("A", "Q")` and `("A", "Q", "H", "R")`.',
    ),
    "parallel_steady": (
        "The steady-state path on the parallel schedule",
        "python benchmarks/parallel_steady.py",
        "Filter + smoother and one E-step on the sequential, steady, parallel and "
        "parallel-steady schedules (compile and run times, error of the means), and the "
        "mean recursion's plain, blocked and doubling forms.",
    ),
    "parallel_schedules": (
        "Sequential against parallel schedules",
        "python benchmarks/parallel_schedules.py",
        "Sequential and parallel filter and smoother: time and float32 error "
        "(an older run: its random model predates `workloads.random_dense_model`).",
    ),
    "missing_data": (
        "Missing entries on the default path",
        "python benchmarks/missing_data.py --N 44484 --D 21 --runs 3",
        "Filter + smoother and one EM iteration with missing rows, against the fully "
        "observed fast path and the full recursion.",
    ),
    "sharding": (
        "Chunked and time-sharded schedules",
        "python benchmarks/sharding.py --devices 2",
        "The chunked and time-sharded filter + smoother and a sharded-batch E-step against "
        "one device (forced host devices on a CPU show correctness, not speed).",
    ),
    "score": (
        "The score by Fisher's identity",
        "python benchmarks/score.py --out benchmarks/results",
        "`score` (one E-step) against `jax.grad(log_likelihood)` at N = 44,484, and the "
        "gradient through the steady-state fast path alone (what `fit` and `fit_mle` take on "
        "fully observed data).",
    ),
    "sarcos_inputs": (
        "SARCOS with the joint torques as inputs",
        "python benchmarks/sarcos_inputs.py",
        "EM on the first 3,000 steps of the test split with and without the joint torques as "
        "inputs, and the one-step-ahead RMSE on those steps and the 1,448 after them.",
    ),
    "time_to_max_standin": (
        "Time to the maximum likelihood: the 44,484-step stand-in",
        "python benchmarks/time_to_max.py --standin --starts initialize --accel-iters 1000 "
        "--mle-iters 20 --reference-grads 0",
        "The same comparison on the 44,484-step stand-in from `initialize` (where `fit` does "
        "not yet reach the maximum: see the notes in `results/time_to_max_standin.md`).",
    ),
    "time_to_max_simulated": (
        "Time to the maximum likelihood: 44,484 simulated steps",
        "python benchmarks/time_to_max.py --simulated --starts initialize --accel-iters 1000 "
        "--mle-iters 20 --reference-grads 1000",
        "The same comparison on 44,484 steps drawn from `fit`'s maximum on the test split (a "
        "series the model class can produce, of the training split's length), from "
        "`initialize`.",
    ),
    "standard_errors": (
        "Standard errors: the two routes of the observed information",
        "python benchmarks/standard_errors.py --steps 1000 --update A --runs 2",
        "The observed information of `standard_errors` by forward differentiation of the "
        "Fisher-identity score and by `jax.hessian` of the filter, side by side, at SARCOS "
        "dimensions (D = 21) on the first 1,000 steps of the test split.",
    ),
    "sqrt_form": (
        "The square-root form",
        "python benchmarks/sqrt_form.py --runs 5 --parallel-cost 2000 --out benchmarks/results",
        '`form="sqrt"` against `form="cov"`: float32 accuracy on a stiff model and on vague '
        "priors (against float64 on the same data), sequential, parallel and steady-state "
        "(`steady_state=True`), and the cost of the filter + smoother at SARCOS size in "
        "float64 and float32, full recursions and steady-state fast paths.",
    ),
    "compare_trees": (
        "One EM iteration in two source trees",
        "python benchmarks/compare_trees.py OLD_TREE NEW_TREE --rounds 4 --out results/x.json",
        "A refactor check: one EM iteration inside `fit_em` in two source trees, fresh "
        "processes in alternating order.",
    ),
}

#: Keys whose mapping describes the machine and the run; rendered last.
_MACHINE_KEYS = ("machine", "meta")
#: Headings for the keys the scripts share.
_HEADINGS = {"rows": "Results", "machine": "Machine and run", "meta": "Run"}
_MAX_LIST = 12
_MAX_COLUMNS = 10


def fmt(x) -> str:
    """One table cell: numbers to 6 significant digits, lists joined, None as a dash."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}" if abs(x) >= 10_000 else str(x)
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        if abs(x) >= 1e4:
            return f"{x:,.0f}" if x == int(x) else f"{x:,.1f}"
        return f"{x:.6g}"
    if isinstance(x, (list, tuple)):
        if len(x) > _MAX_LIST:
            head = ", ".join(fmt(v) for v in x[:4])
            return f"{head}, ... ({len(x)} values)"
        return ", ".join(fmt(v) for v in x)
    if isinstance(x, dict):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in x.items())
    return str(x).replace("|", "\\|").replace("\n", " ")


def _is_scalar(x) -> bool:
    return not isinstance(x, (dict, list, tuple)) or (
        isinstance(x, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in x)
    )


def _is_record(x) -> bool:
    """A mapping that fits one table row (flat mappings inside go into one cell)."""
    return isinstance(x, dict) and all(
        _is_scalar(v) or (isinstance(v, dict) and all(_is_scalar(w) for w in v.values()))
        for v in x.values()
    )


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return out + [""]


def _transposed(records: list[dict], cols: list[str]) -> list[str]:
    """A wide list of records as one column per record, labelled by its leading strings."""
    keys = [c for c in cols[:2] if all(isinstance(r.get(c), str) for r in records)]
    labels = [" / ".join(r[k] for k in keys) or str(i) for i, r in enumerate(records)]
    rest = [c for c in cols if c not in keys]
    return _table(["", *labels], [[c, *(r.get(c) for r in records)] for c in rest])


def _columns(records) -> list[str]:
    cols: list[str] = []
    for r in records:
        cols += [k for k in r if k not in cols]
    return cols


def render_value(value, title: str, level: int) -> list[str]:
    """The markdown of one JSON value under a heading of ``level``."""
    head = [f"{'#' * level} {title}", ""] if title else []
    if _is_scalar(value):
        return head + [fmt(value), ""]
    if isinstance(value, list) and all(_is_record(r) for r in value):
        cols = _columns(value)
        if len(cols) > _MAX_COLUMNS and len(value) <= _MAX_COLUMNS:
            return head + _transposed(value, cols)
        return head + _table(cols, [[r.get(c) for c in cols] for r in value])
    if isinstance(value, dict) and value and all(_is_record(r) for r in value.values()):
        cols = _columns(value.values())
        return head + _table(
            ["", *cols], [[k, *(r.get(c) for c in cols)] for k, r in value.items()]
        )
    if isinstance(value, dict):
        scalars = {k: v for k, v in value.items() if _is_scalar(v)}
        out = head + (
            _table(["", "value"], [[k, v] for k, v in scalars.items()]) if scalars else []
        )
        for k, v in value.items():
            if k not in scalars:
                out += render_value(v, f"{title}: {k}" if title else k, min(level + 1, 4))
        return out
    out = head  # a list of mixed items
    for i, v in enumerate(value):
        out += render_value(v, f"{title} [{i}]", min(level + 1, 4))
    return out


def render(name: str, data: dict) -> str:
    """The page of ``results/NAME.json``."""
    title, command, what = PAGES.get(name, (name, "", ""))
    lines = [f"# {title}", ""]
    if what:
        lines += [what, ""]
    if command:
        lines += ["Measured with:", "", "```bash", command, "```", ""]
    lines += [
        f"Source: `benchmarks/results/{name}.json`, rendered by `benchmarks/render.py`. One "
        "run on the machine described at the end of the page; on a shared machine timings "
        "vary from run to run.",
        "",
    ]
    if name == "cpu":
        sys.path.insert(0, str(HERE))
        import report  # benchmarks/report.py: run.py's table layout

        body = report.render_markdown(data["meta"], data["results"])
        lines += [ln for ln in body.splitlines() if not ln.startswith("# ")]
        return "\n".join(lines) + "\n"
    scalars = {k: v for k, v in data.items() if _is_scalar(v) and k not in _MACHINE_KEYS}
    if scalars:
        lines += ["## Settings", ""] + _table(["", "value"], [[k, v] for k, v in scalars.items()])
    for key, value in data.items():
        if key not in _MACHINE_KEYS and key not in scalars:
            lines += render_value(value, _HEADINGS.get(key, key), 2)
    for key in _MACHINE_KEYS:
        if key in data:
            lines += render_value(data[key], _HEADINGS[key], 2)
    return "\n".join(lines) + "\n"


def render_all(results: Path = RESULTS) -> dict[str, str]:
    """``{name: markdown}`` for every ``results/NAME.json``, sorted by name."""
    return {
        p.stem: render(p.stem, json.loads(p.read_text())) for p in sorted(results.glob("*.json"))
    }


def main(argv: list[str] | None = None) -> int:
    """Write ``NAME.md`` for every ``results/NAME.json`` into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in render_all(args.results).items():
        (args.out / f"{name}.md").write_text(text)
        print(args.out / f"{name}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
