"""The ``jaxssm`` command: fit the exercise's model to SARCOS (or your own series).

``jaxssm fit`` with no arguments answers exercise 12's question on the bundled SARCOS test
split: the exercise's set-up (:func:`jaxssm.datasets.exercise_setup`), then the
maximum-likelihood ``(A, Q)`` by :func:`jaxssm.fit`, to convergence, from
:func:`jaxssm.initialize`'s start; it writes the fitted parameters, the log-likelihood trace, a
plot of data against the smoothed estimate and a summary into a new folder. ``--start white``
starts from the exercise's white noise instead, ``--method em`` runs the exercise's plain EM
for ``--iters`` iterations and ``--method mle`` gradient ascent.

Exit status: 0 on success, 2 for a usage error (unknown option, bad value, an output folder
that is not empty), 1 when the data cannot be used or the run fails. Errors are one line on
stderr; ``--debug`` shows the traceback instead.

This module is an application, not library code: it is the one place in jaxssm that
changes JAX's configuration, in its own process: x64 for ``--dtype float64``, and JAX's
persistent compilation cache (:func:`jaxssm._cli.data.enable_compilation_cache`), so that a
second ``jaxssm fit`` with the same shapes and options loads the compiled loop from disk
instead of compiling it again. The cache folder is ``$JAXSSM_COMPILATION_CACHE`` if set
(``off`` or an empty value disables it), else ``xla/`` in jaxssm's cache folder
(:func:`jaxssm.datasets.cache_dir`, ``~/.cache/jaxssm/xla``); a cache folder the user set for
JAX itself (``JAX_COMPILATION_CACHE_DIR``) is left as it is.

The parts live in :mod:`jaxssm._cli`: ``options`` (the parser), ``data`` (data, output
folder, cache), ``run`` (the start and the fit) and ``outputs`` (the files written).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxssm as ssm
from jaxssm import datasets
from jaxssm._cli.data import enable_compilation_cache, load_data, resolve_out, resolve_window
from jaxssm._cli.options import (
    PROG,
    InputError,
    UsageError,
    build_parser,
    one_line,
    resolve_options,
    say,
)
from jaxssm._cli.outputs import (
    command_line,
    write_forecast,
    write_params,
    write_plot,
    write_summary,
    write_trace,
)
from jaxssm._cli.run import build_start, describe_method, run_method

__all__ = ["main", "build_parser"]


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
        say(f"{PROG} fit: error: {one_line(str(err))} (see {PROG} fit --help)")
        return 2
    except KeyboardInterrupt:
        say(f"{PROG}: interrupted")
        return 130
    except Exception as err:
        if args.debug:
            raise
        message = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
        say(f"{PROG} fit: error: {one_line(message)}")
        return 1


def _setup(args: argparse.Namespace):
    """Load the data and build the exercise's set-up (with the torques as inputs if asked)."""
    Y, torques, data_name, data_label = load_data(args.data)
    if Y.shape[0] < 2:
        raise InputError(f"{data_name}: need at least 2 rows (the first is m0), got {Y.shape[0]}")
    _check_values(Y, data_name, args.dtype)
    window = resolve_window(args.window, Y.shape[0])
    try:
        params0, ys = datasets.exercise_setup(Y, jax.random.PRNGKey(args.seed), dtype=args.dtype)
    except ValueError as err:
        raise InputError(f"{data_name}: {err}") from err
    # exercise_setup fills a missing entry of the first row (m0) with its column's mean.
    args.m0_filled = [int(j) for j in np.flatnonzero(np.isnan(Y[0]))]
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
        params0 = params0._replace(B=jnp.zeros((ys.shape[1], torques.shape[1]), params0.A.dtype))
    return Y, ys, params0, window, data_name, data_label


def _convergence_note(result) -> str | None:
    """Return the red line of fit.png: ``None`` for a converged fit, else how it stopped."""
    if result.converged:
        return None
    text = result.note.lstrip("; ")
    if not text:
        return "not converged (no convergence test: --method mle runs all --iters steps)"
    return text if text.startswith("not converged") else f"not converged: {text}"


def _m0_text(filled: list[int], num_rows: int) -> str:
    """Return the summary's m0 line: data row 0, and which of its NaN entries were filled."""
    if not filled:
        return "data row 0"
    return (
        f"data row 0, with its missing (NaN) entries in columns {filled} replaced by their "
        f"column's mean over the {num_rows} rows (0 for a column with no observed entry)"
    )


def _check_values(Y: np.ndarray, data_name: str, dtype: str) -> None:
    """Reject data with nothing observed, or too large to square in ``dtype``.

    The log-likelihood and the EM statistics square the data (``y y^T`` summed over N rows);
    values beyond ``sqrt(max / (N D))`` of the dtype overflow to ``inf`` there.
    """
    with np.errstate(invalid="ignore"):
        observed = Y[1:][~np.isnan(Y[1:])]
    if observed.size == 0:
        raise InputError(
            f"{data_name}: every value after the first row is NaN (missing): there is nothing "
            "to fit (check the file's columns and its missing-value marker)"
        )
    biggest = float(np.max(np.abs(Y[~np.isnan(Y)])))
    limit = float(np.sqrt(np.finfo(dtype).max / Y.size))
    if not biggest <= limit:
        scale = 10.0 ** int(np.ceil(np.log10(biggest)))
        raise InputError(
            f"{data_name}: the data reach {biggest:.3g} in absolute value; in {dtype} their "
            f"squares overflow (above {limit:.3g} the log-likelihood and the EM statistics "
            f"are inf): rescale the data, e.g. divide them by {scale:.0e}"
        )


def _fit(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    resolve_options(args)
    out = resolve_out(args.out, args.force)
    if args.dtype == "float64":
        # The command is an application, not the library: enabling x64 here affects only
        # this process (the jaxssm library itself never changes JAX's configuration).
        jax.config.update("jax_enable_x64", True)
    enable_compilation_cache()

    Y, ys, params0, window, data_name, data_label = _setup(args)
    num_steps, dim = ys.shape
    say(
        f"{PROG} fit: {data_name}: N = {num_steps} steps (row 0 is m0), D = {dim}, "
        f"{args.dtype}; {describe_method(args)}"
    )
    if args.m0_filled:
        say(f"m0: {_m0_text(args.m0_filled, num_steps + 1)}")
    params0, start_seconds = build_start(params0, ys, args)
    if args.start == "data":
        say(f"start: jaxssm.initialize's estimate from the data ({start_seconds:.1f} s)")

    t_fit = time.perf_counter()
    result = run_method(params0, ys, args)
    fit_seconds = time.perf_counter() - t_fit
    ll_before, ll_after = float(result.trace[0]), float(result.trace[-1])
    fitted = result.params
    e_steps = result.e_steps
    took = f"{fit_seconds:.1f} s (compile + run" + (f", {e_steps} E-steps)" if e_steps else ")")
    say(f"log-likelihood {ll_before:.6g} -> {ll_after:.6g} in {took}{result.note}")
    for line in result.printed:
        say(line)

    out.mkdir(parents=True, exist_ok=True)
    write_params(out / "params.npz", fitted)
    write_trace(out / "log_likelihood.csv", result.step_name, result.steps, result.trace)
    written = ["params.npz", "log_likelihood.csv"]
    if args.no_plot:
        plot_note = "not written (--no-plot)"
    else:
        if e_steps is not None:
            how = f"fit ({e_steps} E-steps)"
        else:
            how = f"{args.method.upper()}, {args.iters} iterations"
        title = f"{data_label}: data (x) and smoothed estimate (mean $\\pm$ 2 sd) after {how}"
        plot_note = write_plot(
            out / "fit.png",
            fitted,
            ys,
            Y,
            window,
            args.schedule,
            title,
            args.input_array,
            note=_convergence_note(result),
        )
        if plot_note:
            say(f"fit.png {plot_note}")
        else:
            written.append("fit.png")

    forecast_note = "-"
    if args.forecast is not None:
        forecast_note = write_forecast(out, fitted, ys, Y, args, written)

    optimizer = "-"
    if args.method == "mle":
        optimizer = args.optimizer or "adam"
        if optimizer == "adam":
            optimizer += f" (lr {args.lr:g})"
    start = "data (jaxssm.initialize)" if args.start == "data" else "white (the exercise's)"
    if args.start == "data":
        start += f", {start_seconds:.2f} s"
    header = f"jaxssm {ssm.__version__} fit (jax {jax.__version__}, {jax.devices()[0].platform})"
    summary = [
        ("data", data_name),
        ("N", f"{num_steps} observed steps (data rows 1..{num_steps}; row 0 is m0)"),
        ("D", dim),
        ("dtype", args.dtype),
        ("method", f"{args.method} (update {args.update})"),
        ("start", start),
        ("m0", _m0_text(args.m0_filled, num_steps + 1)),
        ("inputs", args.inputs),
        ("optimizer", optimizer),
        ("schedule", args.schedule),
        *result.summary,
        ("seed", args.seed),
        ("log-likelihood before", repr(ll_before)),
        ("log-likelihood after", repr(ll_after)),
        (
            "wall time",
            f"fit {took}, command {time.perf_counter() - t_start:.1f} s (after import)",
        ),
        ("plot window", f"rows {window[0]}:{window[1]}" + (f" ({plot_note})" if plot_note else "")),
        ("forecast", forecast_note),
        ("command", command_line(args)),
    ]
    write_summary(out / "summary.txt", header, summary)
    written.append("summary.txt")
    print(f"wrote {', '.join(written)} to {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
