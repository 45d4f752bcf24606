"""The ``jaxssm`` command: fit the exercise's model to SARCOS (or your own series).

``jaxssm fit`` with no arguments runs exercise 12 end to end on the bundled SARCOS test
split: the exercise's set-up (:func:`jaxssm.datasets.exercise_setup`), EM for ``(A, Q)`` from
the white-noise start, then writes the fitted parameters, the log-likelihood trace, a plot of
data against the smoothed estimate and a summary into a new folder.

Exit status: 0 on success, 2 for a usage error (unknown option, bad value, an output folder
that is not empty), 1 when the data cannot be used or the run fails. Errors are one line on
stderr; ``--debug`` shows the traceback instead.

This module is an application, not library code: it is the one place in jaxssm that
changes JAX's configuration, in its own process: x64 for ``--dtype float64``, and JAX's
persistent compilation cache (:func:`_enable_compilation_cache`), so that a second
``jaxssm fit`` with the same shapes and options loads the compiled EM loop from disk instead
of compiling it again. The cache folder is ``$JAXSSM_COMPILATION_CACHE`` if set (``off`` or
an empty value disables it), else ``xla/`` in jaxssm's cache folder
(:func:`jaxssm.datasets.cache_dir`, ``~/.cache/jaxssm/xla``); a cache folder the user set for
JAX itself (``JAX_COMPILATION_CACHE_DIR``) is left as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import jaxssm as ssm
from jaxssm import datasets

__all__ = ["main", "build_parser"]

PROG = "jaxssm"
PARAM_NAMES = ssm.PARAMETER_NAMES
DEFAULT_ITERS = 100
DEFAULT_LR = 3e-2
#: EM stops when log p(y) rises by at most this fraction of |log p(y)| in one iteration.
DEFAULT_TOL = 1e-8
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


def _checked(convert, accept, expected: str):
    """Return an argparse ``type``: ``convert(text)``, which must satisfy ``accept``."""

    def parse(text: str):
        try:
            value = convert(text)
            ok = accept(value)
        except ValueError:
            ok = False
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_nonnegative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _checked(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
_nonnegative_float = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
_window = _checked(
    lambda text: tuple(int(part) for part in text.split(":")),
    lambda w: len(w) == 2 and 0 <= w[0] < w[1],
    "START:STOP with integers 0 <= START < STOP",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``jaxssm`` argument parser (subcommand ``fit``)."""
    epilog = "Exit status: 0 success, 1 unusable data or failed run, 2 usage error."
    parser = _Parser(
        prog=PROG,
        description=(
            "Linear-Gaussian state-space models in JAX. `jaxssm fit` runs the SARCOS "
            "exercise: EM (or gradient-based maximum likelihood) for the transition model "
            "of a 21-dimensional robot-arm series, with plots."
        ),
        epilog=epilog,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {ssm.__version__} (jax {jax.__version__})"
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
        epilog=epilog,
        allow_abbrev=False,
    )
    add = fit.add_argument
    add(
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
    add(
        "--iters",
        type=_positive_int,
        default=DEFAULT_ITERS,
        help=f"EM iterations, or optimiser steps for --method mle (default {DEFAULT_ITERS})",
    )
    add(
        "--tol",
        type=_nonnegative_float,
        default=None,
        help=(
            "EM stops once an iteration raises the log-likelihood by at most TOL times its "
            f"size (default {DEFAULT_TOL:g}; 0 runs all --iters); the summary says whether "
            "it converged or by how much it was still rising"
        ),
    )
    add(
        "--method",
        choices=("em", "mle"),
        default="em",
        help="em: expectation-maximisation (default); mle: gradient ascent on log p(y)",
    )
    add(
        "--optimizer",
        choices=("adam", "lbfgs"),
        default=None,
        help="optax optimiser for --method mle (default adam)",
    )
    add(
        "--lr",
        type=_positive_float,
        default=None,
        help=f"learning rate of --optimizer adam (default {DEFAULT_LR:g})",
    )
    add(
        "--schedule",
        choices=("sequential", "parallel"),
        default="sequential",
        help=(
            "sequential (lax.scan, default) or time-parallel (lax.associative_scan; for "
            "GPUs, slower on a few CPU cores) filter and smoother"
        ),
    )
    add(
        "--dtype",
        choices=("float32", "float64"),
        default="float64",
        help="floating-point precision (default float64)",
    )
    add(
        "--update",
        default=None,
        metavar="NAMES",
        help=(
            f"comma-separated parameters to learn, from {','.join(PARAM_NAMES)} (default A,Q; "
            "A,B,Q with --inputs torques)"
        ),
    )
    add(
        "--inputs",
        choices=("none", "torques"),
        default="none",
        help=(
            "none (default): the exercise's model; torques: the 7 joint torques of each row "
            "(SARCOS columns 21-27) drive the state, x_k = A x_{k-1} + B u_k + q_k, with B "
            "learnt from zero (needs a 28-column data file)"
        ),
    )
    add(
        "--window",
        type=_window,
        default=None,
        metavar="START:STOP",
        help="data rows to plot (default 1000:1050, or the last 50 rows of a shorter series)",
    )
    add(
        "--forecast",
        type=_positive_int,
        default=None,
        metavar="H",
        help=(
            "also forecast H steps beyond the data with the fitted model: writes forecast.npz "
            "(means, covs, obs_means, obs_covs) and forecast.png (the last 50 rows and the "
            "forecast, mean +/- 2 sd)"
        ),
    )
    add("--seed", type=_nonnegative_int, default=0, help="seed of the random Q start (default 0)")
    add(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: a new folder jaxssm-fit-YYYYmmdd-HHMMSS here)",
    )
    add(
        "--force",
        action="store_true",
        help="write into --out even if it is not empty (its files of the same names are replaced)",
    )
    add("--no-plot", action="store_true", help="do not write fit.png")
    add("--debug", action="store_true", help="show tracebacks of errors")
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
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _fit(args)
    except UsageError as err:
        _say(f"{PROG} fit: error: {_one_line(str(err))} (see {PROG} fit --help)")
        return 2
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return 130
    except Exception as err:
        if args.debug:
            raise
        message = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
        _say(f"{PROG} fit: error: {_one_line(message)}")
        return 1


def _one_line(message: str) -> str:
    """Collapse whitespace and newlines so a message prints as one line."""
    return " ".join(str(message).split())


def _say(line: str) -> None:
    """Print a note or an error on stderr."""
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# jaxssm fit
# ---------------------------------------------------------------------------------------------


def _fit(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    if args.update is None:
        args.update = "A,B,Q" if args.inputs == "torques" else "A,Q"
    args.update = ",".join(name.strip() for name in args.update.split(","))
    if args.inputs == "torques" and args.forecast is not None:
        raise UsageError(
            "--forecast with --inputs torques would need the torques of the future steps; "
            "forecast without inputs, or call jaxssm.forecast(..., future_inputs=...)"
        )
    if args.method == "em" and (args.optimizer is not None or args.lr is not None):
        raise UsageError(
            f"{'--optimizer' if args.optimizer else '--lr'} applies to --method mle only"
        )
    if args.method == "mle" and args.tol is not None:
        raise UsageError("--tol applies to --method em only (MLE runs all --iters steps)")
    if args.optimizer == "lbfgs" and args.lr is not None:
        raise UsageError("--lr applies to --optimizer adam only (lbfgs uses a line search)")
    out = _resolve_out(args.out, args.force)
    if args.dtype == "float64":
        # The command is an application, not the library: enabling x64 here affects only
        # this process (the jaxssm library itself never changes JAX's configuration).
        jax.config.update("jax_enable_x64", True)
    _enable_compilation_cache()

    Y, torques, data_name, data_label = _load_data(args.data)
    if Y.shape[0] < 2:
        raise InputError(f"{data_name}: need at least 2 rows (the first is m0), got {Y.shape[0]}")
    window = _resolve_window(args.window, Y.shape[0])
    params0, ys = datasets.exercise_setup(Y, jax.random.PRNGKey(args.seed), dtype=args.dtype)
    num_steps, dim = ys.shape
    args.input_array = None
    if args.inputs == "torques":
        if torques.shape[1] == 0:
            raise InputError(
                f"--inputs torques: {data_name} has no torque columns (an [N, 21] file); "
                "give the 28-column SARCOS array"
            )
        if not np.all(np.isfinite(torques[1:])):
            raise InputError(f"--inputs torques: {data_name} has non-finite torques")
        # Row k's torques drive step k (u_k with y_k = data row k), as ys = Y[1:].
        args.input_array = jnp.asarray(torques[1:], params0.A.dtype)
        params0 = params0._replace(B=jnp.zeros((dim, torques.shape[1]), params0.A.dtype))
    what = _describe_method(args)
    _say(
        f"{PROG} fit: {data_name}: N = {num_steps} steps (row 0 is m0), D = {dim}, "
        f"{args.dtype}; {what}"
    )

    t_fit = time.perf_counter()
    run = _run_em if args.method == "em" else _run_mle
    fitted, trace, iterations, status_note = run(params0, ys, args)
    fit_seconds = time.perf_counter() - t_fit
    ll_before, ll_after = float(trace[0]), float(trace[-1])
    _say(
        f"log-likelihood {ll_before:.6g} -> {ll_after:.6g} in {fit_seconds:.1f} s "
        f"(compile + run){status_note}"
    )

    out.mkdir(parents=True, exist_ok=True)
    saved = {
        n: np.asarray(getattr(fitted, n)) for n in PARAM_NAMES if getattr(fitted, n) is not None
    }
    np.savez(out / "params.npz", **saved)
    rows = [f"{i},{float(v)!r}" for i, v in enumerate(trace)]
    (out / "log_likelihood.csv").write_text("\n".join(["iteration,log_likelihood", *rows]) + "\n")
    written = ["params.npz", "log_likelihood.csv"]
    if args.no_plot:
        plot_note = "not written (--no-plot)"
    else:
        title = (
            f"{data_label}: data (x) and smoothed estimate (mean $\\pm$ 2 sd) after "
            f"{args.method.upper()}, {args.iters} iterations"
        )
        plot_note = _write_plot(
            out / "fit.png", fitted, ys, Y, window, args.schedule, title, args.input_array
        )
        if plot_note:
            _say(f"fit.png {plot_note}")
        else:
            written.append("fit.png")

    forecast_note = "-"
    if args.forecast is not None:
        forecast_note = _write_forecast(out, fitted, ys, Y, args, written)

    optimizer = "-"
    if args.method == "mle":
        optimizer = args.optimizer or "adam"
        if optimizer == "adam":
            optimizer += f" (lr {_lr(args):g})"
    summary = [
        f"jaxssm {ssm.__version__} fit (jax {jax.__version__}, {jax.devices()[0].platform})",
        f"data: {data_name}",
        f"N: {num_steps} observed steps (data rows 1..{num_steps}; row 0 is m0)",
        f"D: {dim}",
        f"dtype: {args.dtype}",
        f"method: {args.method} (update {args.update})",
        f"inputs: {args.inputs}",
        f"optimizer: {optimizer}",
        f"schedule: {args.schedule}",
        f"iterations: {iterations} of {args.iters}{status_note}",
        f"seed: {args.seed}",
        f"log-likelihood before: {ll_before!r}",
        f"log-likelihood after: {ll_after!r}",
        f"wall time: fit {fit_seconds:.1f} s (compile + run), command "
        f"{time.perf_counter() - t_start:.1f} s (after import)",
        f"plot window: rows {window[0]}:{window[1]}" + (f" ({plot_note})" if plot_note else ""),
        f"forecast: {forecast_note}",
        f"command: {PROG} fit {' '.join(_quote(a) for a in _argv_of(args))}",
    ]
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    written.append("summary.txt")
    print(f"wrote {', '.join(written)} to {out}")
    return 0


#: Environment variable naming the CLI's compilation-cache folder (``off``: no cache).
COMPILATION_CACHE_ENV = "JAXSSM_COMPILATION_CACHE"


def _enable_compilation_cache() -> Path | None:
    """Point JAX's persistent compilation cache at a folder (this process only).

    The folder is ``$JAXSSM_COMPILATION_CACHE``, or ``xla/`` in
    :func:`jaxssm.datasets.cache_dir` when the variable is unset; ``off``, ``0``, ``no`` or
    an empty value disable the cache. A cache folder already configured for JAX
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept. JAX writes an entry only for
    programs that took at least ``jax_persistent_cache_min_compile_time_secs`` (1 s by
    default) to compile, such as the EM loop.

    Returns:
        The cache folder in use, or None.
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    setting = os.environ.get(COMPILATION_CACHE_ENV)
    if setting is not None and setting.strip().lower() in ("", "off", "0", "no", "false"):
        return None
    folder = Path(setting).expanduser() if setting else datasets.cache_dir() / "xla"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder


def _lr(args: argparse.Namespace) -> float:
    return args.lr if args.lr is not None else DEFAULT_LR


def _resolve_out(out: Path | None, force: bool) -> Path:
    if out is None:  # a new folder named after the time, never an existing one
        base = Path.cwd() / f"jaxssm-fit-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        candidate, n = base, 1
        while candidate.exists():
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        return candidate
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(
            f"--out {out} exists and is not empty; choose another folder or pass --force"
        )
    return out


def _load_data(spec: str) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Return the ``[N, 21]`` series, its ``[N, 7]`` torques, a name and a plot label.

    The torques are ``[N, 0]`` for a file that has none.
    """
    try:
        if spec == "test":
            loaded = datasets.load_sarcos("test")
            name = f"{loaded.name} (SARCOS test split, bundled)"
            return loaded.inputs, loaded.torques, name, "SARCOS test split"
        if spec == "train":
            try:
                loaded = datasets.load_sarcos("train")
            except FileNotFoundError as err:
                cause = err.__cause__
                reason = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
                raise InputError(
                    "--data train: the SARCOS training split is not on this machine and could "
                    f"not be downloaded{reason}; put sarcos_inv.mat or sarcos_inv.npz in "
                    f"$JAXSSM_DATA_DIR or {datasets.cache_dir()}, or pass --data FILE"
                ) from err
            name = f"{loaded.name} (SARCOS training split)"
            return loaded.inputs, loaded.torques, name, "SARCOS training split"
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InputError(
                f"--data {spec}: no such file (give a .npz/.mat/.npy/.csv/.txt file, "
                "'test' or 'train')"
            )
        loaded = datasets.load_array(path)
        return loaded.inputs, loaded.torques, str(path), path.name
    except (OSError, ValueError, ImportError, EOFError) as err:
        raise InputError(f"--data: {err}") from err  # the messages name the file


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
    names = args.update
    if args.method == "em":
        return (
            f"EM for {names}, at most {args.iters} iterations (tol {_tol(args):g}), "
            f"{args.schedule} schedule"
        )
    optimizer = args.optimizer or "adam"
    if optimizer == "adam":
        optimizer = f"adam(lr={_lr(args):g})"
    return f"MLE for {names} with {optimizer}, {args.iters} steps, {args.schedule} schedule"


@contextlib.contextmanager
def _progress_bar(label: str, total: int):
    """Yield a ``callback(i, log_likelihood)`` for fit_em/fit_mle that draws a tqdm bar.

    The bar goes to stderr and starts at the first call, after compilation, so a run
    rejected before it starts draws nothing.
    """
    stream, bars = sys.stderr, []

    def callback(i, log_likelihood) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=label, unit="it", file=stream, dynamic_ncols=True))
        bar = bars[0]
        bar.set_postfix_str(f"log-likelihood {float(log_likelihood):.6g}", refresh=False)
        bar.update(int(i) + 1 - bar.n)

    try:
        yield callback
        jax.effects_barrier()  # every callback has run before the bar is closed
    finally:
        for bar in bars:
            bar.close()


def _call_fit(label: str, fit, params0, ys, args, **options):
    """``fit(params0, ys, ...)`` with the progress bar; a bad ``--update`` is a usage error."""
    if args.input_array is not None:
        options["inputs"] = args.input_array
    _say(f"compiling the {label} loop (a few seconds) ...")
    with _progress_bar(label, args.iters) as callback:
        try:
            fitted, info = fit(
                params0,
                ys,
                num_iters=args.iters,
                update=tuple(args.update.split(",")),
                method=args.schedule,
                callback=callback,
                **options,
            )
        except (ValueError, TypeError) as err:
            # The library checks `update` by its one rule before compiling; its errors name
            # `update`. Anything else is not the command line's fault.
            if "update" not in str(err):
                raise
            raise UsageError(f"--update {args.update}: {err}") from err
        return fitted, jax.tree.map(np.asarray, info)


def _tol(args: argparse.Namespace) -> float:
    return DEFAULT_TOL if args.tol is None else args.tol


def _still_rising(trace: np.ndarray, what: str) -> str:
    """Return the note for a run that used all its iterations: what the last one gained."""
    if len(trace) < 2:
        return ""
    gain = float(trace[-1] - trace[-2])
    relative = abs(gain) / max(abs(float(trace[-2])), np.finfo(np.float64).tiny)
    if gain > 0:
        return (
            f"; not converged: {what} reached the iteration limit while the log-likelihood was "
            f"still rising by {gain:.3g} per iteration ({relative:.2g} relative); "
            "raise --iters"
        )
    return f"; {what} reached the iteration limit; the last iteration changed it by {gain:.3g}"


def _run_em(params0, ys, args):
    tol = _tol(args)
    options = {} if tol == 0 else {"tol": tol}
    fitted, info = _call_fit("EM", ssm.fit_em, params0, ys, args, **options)
    # trace[i] = log p(y | theta_i) for the parameters evaluated, ending with the returned
    # ones (see fit_em's docstring for which parameters it returns when it stops early).
    count = int(info.num_iters)
    trace = np.asarray(info.log_likelihoods[:count], dtype=np.float64)
    ll_after = float(info.log_likelihood)
    note = ""
    if int(info.status) == ssm.EMStatus.DECREASED:
        note = (
            f"; EM stopped after {count} iterations: the log-likelihood fell by "
            f"{float(info.decrease):.3g} (numerical breakdown; try --dtype float64); "
            "the last good parameters are kept"
        )
        if trace[-1] != ll_after:  # a decrease inside the loop: drop the offending value
            trace = trace[:-1]
    elif int(info.status) == ssm.EMStatus.CONVERGED:
        note = f"; converged after {count} iterations"
    else:  # all iterations ran: the returned parameters are one M-step past the trace
        trace = np.append(trace, ll_after)
        note = _still_rising(trace, "EM")
    if not np.isfinite(ll_after):
        raise InputError(f"EM failed: the fitted log-likelihood is {ll_after}")
    return fitted, trace, count, note


def _run_mle(params0, ys, args):
    import optax  # only for --method mle

    if (args.optimizer or "adam") == "adam":
        optimizer = optax.adam(_lr(args))
    else:
        optimizer = optax.lbfgs()
    fitted, info = _call_fit("MLE", ssm.fit_mle, params0, ys, args, optimizer=optimizer)
    if not np.isfinite(info.log_likelihood):
        raise InputError(
            f"MLE failed: the fitted log-likelihood is {info.log_likelihood} (try a smaller --lr)"
        )
    # trace[i] = log p(y | theta_i), i = 0..iters, the last entry the returned parameters.
    trace = np.append(np.asarray(info.log_likelihoods, np.float64), info.log_likelihood)
    return fitted, trace, args.iters, _still_rising(trace, "MLE")


def _write_plot(path: Path, fitted, ys, Y, window, schedule: str, title: str, inputs=None) -> str:
    """Write the plot; return "" on success or a note saying why it was skipped."""
    try:
        import matplotlib
    except ImportError:
        return 'not written: matplotlib is not installed (pip install "jaxssm[plot]")'
    matplotlib.use("Agg")

    from jaxssm.plotting import plot_fit

    # Under jit the value checks are skipped: an MLE optimum on the boundary can leave a
    # nearly singular covariance, still usable for the smoother (shapes are still checked).
    smoother = jax.jit(ssm.rts_smoother, static_argnames="method")
    smoothed = smoother(fitted, ys, inputs=inputs, method=schedule)
    start, stop = window
    if not (
        np.all(np.isfinite(np.asarray(smoothed.means[start:stop])))
        and np.all(np.isfinite(np.asarray(smoothed.covs[start:stop])))
    ):
        return "not written: the smoother of the fitted model is not finite in the window"
    fig = plot_fit(Y, smoothed, (start, stop), title=title)
    _save_png(fig, path)
    return ""


def _save_png(fig, path: Path) -> None:
    """Save ``fig`` as a 256-colour PNG (a third of the RGBA size, no visible change); close it."""
    import matplotlib.pyplot as plt

    try:
        from PIL import Image  # a dependency of matplotlib

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90, facecolor="white")
        buffer.seek(0)
        with Image.open(buffer) as image:
            palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
            palette.save(path, format="png", optimize=True)
    finally:
        plt.close(fig)


def _write_forecast(out: Path, fitted, ys, Y, args: argparse.Namespace, written: list) -> str:
    """Write forecast.npz (and forecast.png unless --no-plot); return the summary's note."""
    # Under jit the value checks are skipped, as for the smoother plot.
    fc = jax.jit(ssm.forecast, static_argnums=2, static_argnames="method")(
        fitted, ys, args.forecast, method=args.schedule
    )
    np.savez(out / "forecast.npz", **{n: np.asarray(getattr(fc, n)) for n in fc._fields})
    written.append("forecast.npz")
    note = f"{args.forecast} steps"
    if args.no_plot:
        return note + " (forecast.png not written: --no-plot)"
    if not np.all(np.isfinite(np.asarray(fc.obs_covs))):
        _say("forecast.png not written: the forecast of the fitted model is not finite")
        return note + " (forecast.png not written: not finite)"
    try:
        import matplotlib
    except ImportError:
        return note + " (forecast.png not written: matplotlib is not installed)"
    matplotlib.use("Agg")
    from jaxssm.plotting import plot_forecast

    title = (
        f"data (x) and {args.forecast}-step forecast (mean $\\pm$ 2 sd) after {args.method.upper()}"
    )
    _save_png(plot_forecast(Y, fc, title=title), out / "forecast.png")
    written.append("forecast.png")
    return note


def _quote(text: str) -> str:
    return text if text and all(c.isalnum() or c in "-_.,:/=" for c in text) else repr(text)


def _argv_of(args: argparse.Namespace) -> list[str]:
    """Reconstruct the options in effect as command-line arguments (for the summary)."""
    out = ["--data", args.data, "--iters", str(args.iters), "--method", args.method]
    if args.method == "em":
        out += ["--tol", f"{_tol(args):g}"]
    if args.method == "mle":
        out += ["--optimizer", args.optimizer or "adam"]
        if (args.optimizer or "adam") == "adam":
            out += ["--lr", f"{_lr(args):g}"]
    out += ["--schedule", args.schedule, "--dtype", args.dtype, "--update", args.update]
    if args.inputs != "none":
        out += ["--inputs", args.inputs]
    out += ["--seed", str(args.seed)]
    if args.window is not None:
        out += ["--window", f"{args.window[0]}:{args.window[1]}"]
    if args.forecast is not None:
        out += ["--forecast", str(args.forecast)]
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
