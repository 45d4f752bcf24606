"""The ``jaxssm`` command: fit the exercise's model to SARCOS (or your own series).

``jaxssm fit`` with no arguments runs exercise 12 end to end on the bundled SARCOS test
split: the exercise's set-up (:func:`jaxssm.exercise_setup`), EM for ``(A, Q)`` from the
white-noise start, then writes the fitted parameters, the log-likelihood trace, a plot of
data against the smoothed estimate and a summary into a new folder.

Exit status: 0 on success, 2 for a usage error (unknown option, bad value, an output folder
that is not empty), 1 when the data cannot be used or the run fails. Errors are one line on
stderr; ``--debug`` shows the traceback instead.

This module is an application, not library code: it is the one place in jaxssm that
changes JAX's configuration (x64 for ``--dtype float64``), in its own process.
"""

from __future__ import annotations

import argparse
import datetime
import io
import math
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import jax
import numpy as np
import optax

import jaxssm
from jaxssm import datasets
from jaxssm._em import CONVERGED, DECREASED
from jaxssm._exercise import exercise_setup
from jaxssm._version import __version__
from jaxssm.datasets import _to_data

__all__ = ["main", "build_parser"]

PROG = "jaxssm"
PARAM_NAMES = ("m0", "P0", "A", "Q", "H", "R")
DEFAULT_ITERS = 100
DEFAULT_LR = 3e-2
DEFAULT_WINDOW_START = 1000
DEFAULT_WINDOW_LEN = 50
OUTPUT_FILES = ("params.npz", "log_likelihood.csv", "fit.png", "summary.txt")


class UsageError(Exception):
    """A bad command line (exit status 2)."""


class InputError(Exception):
    """Data that cannot be used, or a run that failed (exit status 1)."""


# ---------------------------------------------------------------------------------------------
# Command-line parsing
# ---------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage block) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _update_names(text: str) -> tuple[str, ...]:
    """``"A,Q"`` -> ``("A", "Q")``, checked against the LGSSM field names."""
    names = tuple(n.strip() for n in text.split(","))
    if not text.strip() or any(not n for n in names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names from {','.join(PARAM_NAMES)}, got {text!r}"
        )
    unknown = [n for n in names if n not in PARAM_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown parameter name(s) {', '.join(unknown)}; choose from {','.join(PARAM_NAMES)}"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"parameter names must not repeat, got {text!r}")
    return tuple(n for n in PARAM_NAMES if n in names)


def _window(text: str) -> tuple[int, int]:
    """``"1000:1050"`` -> ``(1000, 1050)`` (checked against the data length later)."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = int(parts[0]), int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START:STOP with integers 0 <= START < STOP, got {text!r}"
        ) from None
    if not 0 <= start < stop:
        raise argparse.ArgumentTypeError(
            f"expected START:STOP with integers 0 <= START < STOP, got {text!r}"
        )
    return start, stop


def build_parser() -> argparse.ArgumentParser:
    """Return the ``jaxssm`` argument parser (subcommand ``fit``)."""
    parser = _Parser(
        prog=PROG,
        description=(
            "Linear-Gaussian state-space models in JAX. `jaxssm fit` runs the SARCOS "
            "exercise: EM (or gradient-based maximum likelihood) for the transition model "
            "of a 21-dimensional robot-arm series, with plots."
        ),
        epilog="Exit status: 0 success, 1 unusable data or failed run, 2 usage error.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__} (jax {jax.__version__})"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    fit = commands.add_parser(
        "fit",
        help="fit the exercise's model to SARCOS or to your own [N, 21] series",
        description=(
            "Fit the exercise's model: m0 = first data row, H = I, R = P0 = "
            "kron(diag(0.01, 0.01, 1), I_J), learning (A, Q) from the white-noise start "
            "A = 0, Q = 0.01 diag(u), u ~ Uniform(0, 1) drawn with --seed. Writes "
            "params.npz, log_likelihood.csv, fit.png and summary.txt into --out."
        ),
        epilog="Exit status: 0 success, 1 unusable data or failed run, 2 usage error.",
        allow_abbrev=False,
    )
    fit.add_argument(
        "--data",
        default="test",
        metavar="FILE|test|train",
        help=(
            "'test' (default): the SARCOS test split bundled with jaxssm (4,449 rows); "
            "'train': the SARCOS training split (44,484 rows, from $JAXSSM_DATA_DIR, the "
            "cache, or downloaded); or a .npz/.mat/.npy/.csv/.txt file holding an [N, 21] "
            "or [N, 28] array (SARCOS column order; extra torque columns are ignored)"
        ),
    )
    fit.add_argument(
        "--iters",
        type=_positive_int,
        default=DEFAULT_ITERS,
        help=f"EM iterations, or optimiser steps for --method mle (default {DEFAULT_ITERS})",
    )
    fit.add_argument(
        "--method",
        choices=("em", "mle"),
        default="em",
        help="em: expectation-maximisation (default); mle: gradient ascent on log p(y)",
    )
    fit.add_argument(
        "--optimizer",
        choices=("adam", "lbfgs"),
        default=None,
        help="optax optimiser for --method mle (default adam)",
    )
    fit.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help=f"learning rate of --optimizer adam (default {DEFAULT_LR:g})",
    )
    fit.add_argument(
        "--schedule",
        choices=("sequential", "parallel"),
        default="sequential",
        help=(
            "sequential (lax.scan, default) or time-parallel (lax.associative_scan; for "
            "GPUs, slower on a few CPU cores) filter and smoother"
        ),
    )
    fit.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float64",
        help="floating-point precision (default float64)",
    )
    fit.add_argument(
        "--update",
        type=_update_names,
        default=("A", "Q"),
        metavar="NAMES",
        help=f"comma-separated parameters to learn, from {','.join(PARAM_NAMES)} (default A,Q)",
    )
    fit.add_argument(
        "--window",
        type=_window,
        default=None,
        metavar="START:STOP",
        help=("data rows to plot (default 1000:1050, or the last 50 rows of a shorter series)"),
    )
    fit.add_argument(
        "--seed", type=_nonnegative_int, default=0, help="seed of the random Q start (default 0)"
    )
    fit.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: a new folder jaxssm-fit-YYYYmmdd-HHMMSS here)",
    )
    fit.add_argument(
        "--force",
        action="store_true",
        help="write into --out even if it is not empty (its files of the same names are replaced)",
    )
    fit.add_argument("--no-plot", action="store_true", help="do not write fit.png")
    fit.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the ``jaxssm`` command with ``argv`` (default ``sys.argv[1:]``).

    Args:
        argv: the arguments after the program name.

    Returns:
        The exit status: 0 success, 1 unusable data or failed run, 2 usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error (already printed)
        return _exit_code(exit_.code)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _fit(args)
    except UsageError as err:
        _error(f"{PROG} fit: error: {err} (see {PROG} fit --help)")
        return 2
    except KeyboardInterrupt:
        _error(f"{PROG}: interrupted")
        return 130
    except Exception as err:
        if args.debug:
            raise
        if isinstance(err, InputError):
            message = str(err)
        else:
            message = f"{type(err).__name__}: {err}"
        _error(f"{PROG} fit: error: {_one_line(message)}")
        return 1


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


def _one_line(message: str) -> str:
    """Collapse whitespace and newlines so a message prints as one line."""
    return " ".join(str(message).split())


def _error(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# jaxssm fit
# ---------------------------------------------------------------------------------------------


class _Data(NamedTuple):
    Y: Any  # numpy [N+1, 21] float64
    name: str  # for the summary
    label: str  # short, for the plot title


def _fit(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    _check_options(args)
    out = _resolve_out(args.out, args.force)

    if args.dtype == "float64":
        # The command is an application, not the library: enabling x64 here affects only
        # this process (the jaxssm library itself never changes JAX's configuration).
        jax.config.update("jax_enable_x64", True)

    data = _load_data(args.data)
    num_rows = data.Y.shape[0]
    if num_rows < 2:
        raise InputError(f"{data.name}: need at least 2 rows (the first is m0), got {num_rows}")
    window = _resolve_window(args.window, num_rows)

    setup = exercise_setup(data.Y, jax.random.PRNGKey(args.seed), dtype=args.dtype)
    params0, ys = setup
    num_steps, dim = ys.shape
    what = _describe_method(args)
    _note(
        f"{PROG} fit: {data.name}: N = {num_steps} steps (row 0 is m0), D = {dim}, "
        f"{args.dtype}; {what}"
    )

    t_fit = time.perf_counter()
    run = _run_em if args.method == "em" else _run_mle
    fitted, trace, iterations, status_note = run(params0, ys, args)
    fit_seconds = time.perf_counter() - t_fit
    ll_before, ll_after = float(trace[0]), float(trace[-1])
    _note(
        f"log-likelihood {ll_before:.6g} -> {ll_after:.6g} in {fit_seconds:.1f} s "
        f"(compile + run){status_note}"
    )

    out.mkdir(parents=True, exist_ok=True)
    written = []
    np.savez(
        out / "params.npz", **{name: np.asarray(getattr(fitted, name)) for name in PARAM_NAMES}
    )
    written.append("params.npz")
    _write_trace(out / "log_likelihood.csv", trace)
    written.append("log_likelihood.csv")

    plot_note = ""
    if args.no_plot:
        plot_note = "not written (--no-plot)"
    else:
        plot_note = _write_plot(out / "fit.png", fitted, ys, data, window, args)
        if plot_note == "":
            written.append("fit.png")
        else:
            _note(f"fit.png {plot_note}")

    total_seconds = time.perf_counter() - t_start
    summary = _summary(
        data=data,
        num_steps=num_steps,
        dim=dim,
        args=args,
        what=what,
        iterations=iterations,
        ll_before=ll_before,
        ll_after=ll_after,
        status_note=status_note,
        fit_seconds=fit_seconds,
        total_seconds=total_seconds,
        window=window,
        plot_note=plot_note,
        device=str(jax.devices()[0].platform),
    )
    (out / "summary.txt").write_text(summary)
    written.append("summary.txt")
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    if args.method == "em":
        for flag, value in (("--optimizer", args.optimizer), ("--lr", args.lr)):
            if value is not None:
                raise UsageError(f"{flag} applies to --method mle only")
    if args.optimizer == "lbfgs" and args.lr is not None:
        raise UsageError("--lr applies to --optimizer adam only (lbfgs uses a line search)")


def _default_out() -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path.cwd() / f"jaxssm-fit-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _resolve_out(out: Path | None, force: bool) -> Path:
    if out is None:
        return _default_out()
    out = out.expanduser()
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()) and not force:
            raise UsageError(
                f"--out {out} exists and is not empty; choose another folder or pass --force"
            )
    return out


def _load_data(spec: str) -> _Data:
    try:
        if spec == "test":
            loaded = datasets.load_sarcos("test")
            name = f"{loaded.name} (SARCOS test split, bundled)"
            return _Data(loaded.inputs, name, "SARCOS test split")
        if spec == "train":
            try:
                loaded = datasets.load_sarcos("train")
            except FileNotFoundError as err:
                cause = err.__cause__
                reason = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
                raise InputError(
                    "--data train: the SARCOS training split is not on this machine and could "
                    f"not be downloaded{reason}; put sarcos_inv.mat or sarcos_inv.npz in "
                    f"$JAXSSM_DATA_DIR or {datasets._cache_dir()}, or pass --data FILE"
                ) from err
            name = f"{loaded.name} (SARCOS training split)"
            return _Data(loaded.inputs, name, "SARCOS training split")
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InputError(
                f"--data {spec}: no such file (give a .npz/.mat/.npy/.csv/.txt file, "
                "'test' or 'train')"
            )
        suffix = path.suffix.lower()
        if suffix in (".npz", ".mat"):
            loaded = datasets.load_sarcos("test", path=path)
        elif suffix == ".npy":
            loaded = _to_data(np.load(path, allow_pickle=False), str(path), str(path))
        elif suffix in (".csv", ".txt"):
            delimiter = "," if suffix == ".csv" else None
            array = np.loadtxt(path, delimiter=delimiter, ndmin=2, comments="#")
            loaded = _to_data(array, str(path), str(path))
        else:
            raise InputError(
                f"--data {spec}: unsupported file type {path.suffix!r}; use .npz, .mat, .npy, "
                ".csv or .txt"
            )
        return _Data(loaded.inputs, str(path), path.name)
    except InputError:
        raise
    except (OSError, ValueError, ImportError, EOFError) as err:
        raise InputError(f"--data {spec}: {err}") from err


def _resolve_window(window: tuple[int, int] | None, num_rows: int) -> tuple[int, int]:
    if window is None:
        length = min(DEFAULT_WINDOW_LEN, num_rows)
        start = min(DEFAULT_WINDOW_START, num_rows - length)
        return start, start + length
    start, stop = window
    if stop > num_rows:
        raise UsageError(
            f"--window {start}:{stop} reaches past the data's {num_rows} rows "
            f"(need STOP <= {num_rows})"
        )
    return start, stop


def _describe_method(args: argparse.Namespace) -> str:
    names = ", ".join(args.update)
    if args.method == "em":
        return f"EM for {names}, {args.iters} iterations, {args.schedule} schedule"
    optimizer = args.optimizer or "adam"
    if optimizer == "adam":
        optimizer = f"adam(lr={args.lr if args.lr is not None else DEFAULT_LR:g})"
    return f"MLE for {names} with {optimizer}, {args.iters} steps, {args.schedule} schedule"


class _ProgressBar:
    """Text progress bar with the log-likelihood, on stderr.

    Redrawn in place (carriage return) on a terminal; elsewhere (logs, pipes) a line about
    every tenth of the run.
    """

    def __init__(self, total: int, label: str, stream=None, width: int = 28):
        self.total, self.label, self.width = total, label, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = max(1, total // 10)
        self.start = time.perf_counter()
        self.drawn = False

    def __call__(self, iteration, log_likelihood) -> None:
        done = int(iteration) + 1
        ll = float(log_likelihood)
        filled = round(self.width * done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        text = f"{self.label} [{bar}] {done}/{self.total}  log-likelihood {ll:.6g}  {elapsed:.1f} s"
        if self.tty:
            self.stream.write("\r" + text + "\033[K")
            self.drawn = True
        elif done == 1 or done == self.total or done % self.every == 0:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


# fit_em compiles its loop for a given callback object; one module-level function that
# forwards to the current bar lets repeated runs in one process (tests) reuse that loop.
_active_bar: _ProgressBar | None = None


def _progress(iteration, log_likelihood) -> None:
    if _active_bar is not None:
        _active_bar(iteration, log_likelihood)


def _jitted(fn, **kwargs):
    """``jax.jit(fn, **kwargs)``, created once per function (repeated runs reuse it)."""
    key = (fn, tuple(sorted(kwargs.items())))
    if key not in _JIT_CACHE:
        _JIT_CACHE[key] = jax.jit(fn, **kwargs)
    return _JIT_CACHE[key]


_JIT_CACHE: dict = {}


def _run_em(params0, ys, args):
    global _active_bar
    _active_bar = bar = _ProgressBar(args.iters, "EM")
    try:
        fitted, info = jaxssm.fit_em_with_info(
            params0,
            ys,
            num_iters=args.iters,
            update=args.update,
            method=args.schedule,
            callback=_progress,
        )
        info = jaxssm.EMInfo(*(np.asarray(x) for x in info))
    finally:
        _active_bar = None
        bar.close()
    # trace[i] = log p(y | theta_i) for the parameters evaluated, ending with the returned
    # ones (see fit_em's docstring for which parameters it returns when it stops early).
    count = int(info.num_iters)
    trace = np.asarray(info.log_likelihoods[:count], dtype=np.float64)
    ll_after = float(info.log_likelihood)
    status = int(info.status)
    note = ""
    if status == DECREASED:
        note = (
            f"; EM stopped after {count} iterations: the log-likelihood fell by "
            f"{float(info.decrease):.3g} (numerical breakdown; try --dtype float64); "
            "the last good parameters are kept"
        )
        if trace[-1] != ll_after:  # a decrease inside the loop: drop the offending value
            trace = trace[:-1]
    elif status == CONVERGED:
        note = f"; converged after {count} iterations"
    else:  # all iterations ran: the returned parameters are one M-step past the trace
        trace = np.append(trace, ll_after)
    if not np.isfinite(ll_after):
        raise InputError(f"EM failed: the fitted log-likelihood is {ll_after}")
    return fitted, trace, count, note


def _run_mle(params0, ys, args):
    if (args.optimizer or "adam") == "adam":
        optimizer = optax.adam(args.lr if args.lr is not None else DEFAULT_LR)
    else:
        optimizer = optax.lbfgs()
    _note(f"MLE: {args.iters} optimiser steps as one compiled loop (no per-step progress) ...")
    fitted, lls = jaxssm.fit_mle(
        params0,
        ys,
        optimizer=optimizer,
        num_steps=args.iters,
        update=args.update,
        method=args.schedule,
    )
    # Under jit the value checks are skipped: an optimum on the boundary can leave a nearly
    # singular covariance, which is still usable for the log-likelihood and the plot.
    log_likelihood = _jitted(jaxssm.log_likelihood, static_argnames="method")
    ll_after = float(log_likelihood(fitted, ys, method=args.schedule))
    if not np.isfinite(ll_after):
        raise InputError(
            f"MLE failed: the fitted log-likelihood is {ll_after} (try a smaller --lr)"
        )
    # trace[i] = log p(y | theta_i), i = 0..num_steps, the last entry the returned parameters.
    trace = np.append(np.asarray(lls, dtype=np.float64), ll_after)
    return fitted, trace, args.iters, ""


def _write_trace(path: Path, trace) -> None:
    """CSV of ``iteration, log p(y | theta_iteration)``; the last row is the fitted model."""
    lines = ["iteration,log_likelihood"]
    lines += [f"{i},{float(v)!r}" for i, v in enumerate(trace)]
    path.write_text("\n".join(lines) + "\n")


def _write_plot(path: Path, fitted, ys, data: _Data, window, args) -> str:
    """Write the plot; return "" on success or a note saying why it was skipped."""
    try:
        import matplotlib
    except ImportError:
        return 'not written: matplotlib is not installed (pip install "jaxssm[plot]")'
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxssm.plotting import plot_fit

    smoother = jaxssm.rts_smoother
    if args.schedule == "parallel":
        smoother = jaxssm.parallel_rts_smoother
    # jit: skip the value checks (see _run_mle); shapes are still checked at trace time.
    smoothed = _jitted(smoother)(fitted, ys)
    start, stop = window
    if not (
        np.all(np.isfinite(np.asarray(smoothed.means[start:stop])))
        and np.all(np.isfinite(np.asarray(smoothed.covs[start:stop])))
    ):
        return "not written: the smoother of the fitted model is not finite in the window"
    title = (
        f"{data.label}: data (x) and smoothed estimate (mean $\\pm$ 2 sd) after "
        f"{args.method.upper()}, {args.iters} iterations"
    )
    fig = plot_fit(data.Y, smoothed, (start, stop), title=title)
    try:
        _save_png(fig, path)
    finally:
        plt.close(fig)
    return ""


def _save_png(fig, path: Path, dpi: int = 90) -> None:
    """Save ``fig`` as a 256-colour PNG (a third of the RGBA size, no visible change)."""
    try:
        from PIL import Image  # a dependency of matplotlib
    except ImportError:
        fig.savefig(path, dpi=dpi)
        return
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        palette.save(path, format="png", optimize=True)


def _summary(
    *,
    data: _Data,
    num_steps,
    dim,
    args,
    what,
    iterations,
    ll_before,
    ll_after,
    status_note,
    fit_seconds,
    total_seconds,
    window,
    plot_note,
    device,
) -> str:
    optimizer = "-"
    if args.method == "mle":
        optimizer = args.optimizer or "adam"
        if optimizer == "adam":
            optimizer += f" (lr {args.lr if args.lr is not None else DEFAULT_LR:g})"
    lines = [
        f"jaxssm {__version__} fit (jax {jax.__version__}, {device})",
        f"data: {data.name}",
        f"N: {num_steps} observed steps (data rows 1..{num_steps}; row 0 is m0)",
        f"D: {dim}",
        f"dtype: {args.dtype}",
        f"method: {args.method} (update {','.join(args.update)})",
        f"optimizer: {optimizer}",
        f"schedule: {args.schedule}",
        f"iterations: {iterations} of {args.iters}{status_note}",
        f"seed: {args.seed}",
        f"log-likelihood before: {ll_before!r}",
        f"log-likelihood after: {ll_after!r}",
        f"wall time: fit {fit_seconds:.1f} s (compile + run), command {total_seconds:.1f} s "
        "(after import)",
        f"plot window: rows {window[0]}:{window[1]}" + (f" ({plot_note})" if plot_note else ""),
        f"command: {PROG} fit {' '.join(_quote(a) for a in _argv_of(args))}".rstrip(),
    ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return text if text and all(c.isalnum() or c in "-_.,:/=" for c in text) else repr(text)


def _argv_of(args: argparse.Namespace) -> list[str]:
    """Reconstruct the options in effect as command-line arguments (for the summary)."""
    out = ["--data", args.data, "--iters", str(args.iters), "--method", args.method]
    if args.method == "mle":
        out += ["--optimizer", args.optimizer or "adam"]
        if (args.optimizer or "adam") == "adam":
            out += ["--lr", f"{args.lr if args.lr is not None else DEFAULT_LR:g}"]
    out += [
        "--schedule",
        args.schedule,
        "--dtype",
        args.dtype,
        "--update",
        ",".join(args.update),
        "--seed",
        str(args.seed),
    ]
    if args.window is not None:
        out += ["--window", f"{args.window[0]}:{args.window[1]}"]
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
