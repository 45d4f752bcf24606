"""What ``jaxssm fit`` writes: parameters, the trace, plots, the forecast and the summary."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import jax
import numpy as np

import jaxssm as ssm
from jaxssm._cli.options import PARAM_NAMES, PROG, say

__all__ = [
    "OUTPUT_FILES",
    "write_params",
    "write_trace",
    "write_plot",
    "write_forecast",
    "write_summary",
    "command_line",
]

OUTPUT_FILES = ("params.npz", "log_likelihood.csv", "fit.png", "summary.txt")


def write_params(path: Path, params: ssm.LGSSM) -> None:
    """Save the fields of ``params`` that are present (absent ``B, b, D, d`` are left out)."""
    present = [n for n in PARAM_NAMES if getattr(params, n) is not None]
    np.savez(path, **{n: np.asarray(getattr(params, n)) for n in present})


def write_trace(path: Path, step_name: str, steps: np.ndarray, trace: np.ndarray) -> None:
    """Write ``step_name,log_likelihood`` rows (full precision) to a CSV file."""
    rows = [f"{int(i)},{float(v)!r}" for i, v in zip(steps, trace, strict=True)]
    path.write_text("\n".join([f"{step_name},log_likelihood", *rows]) + "\n")


def write_plot(
    path: Path, fitted, ys, Y, window, schedule: str, title: str, inputs=None, note=None
) -> str:
    """Write the plot; return "" on success or a note saying why it was skipped.

    One row of panels per joint (positions, velocities, accelerations), each with the
    residuals ``Y - smoothed mean`` under it; ``note`` (how a fit that did not converge
    stopped) is written in red at the foot.
    """
    try:
        import matplotlib
    except ImportError:
        return 'not written: matplotlib is not installed (pip install "jaxssm[plot]")'
    matplotlib.use("Agg")

    from jaxssm.plotting import plot_fit

    # Under jit the value checks are skipped: an optimum on the boundary can leave a nearly
    # singular covariance, still usable for the smoother (shapes are still checked).
    smoother = jax.jit(ssm.rts_smoother, static_argnames="method")
    smoothed = smoother(fitted, ys, inputs=inputs, method=schedule)
    start, stop = window
    if not (
        np.all(np.isfinite(np.asarray(smoothed.means[start:stop])))
        and np.all(np.isfinite(np.asarray(smoothed.covs[start:stop])))
    ):
        return "not written: the smoother of the fitted model is not finite in the window"
    fig = plot_fit(Y, smoothed, (start, stop), title=title, joints="all", residuals=True, note=note)
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


def write_forecast(out: Path, fitted, ys, Y, args: argparse.Namespace, written: list) -> str:
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
        say("forecast.png not written: the forecast of the fitted model is not finite")
        return note + " (forecast.png not written: not finite)"
    try:
        import matplotlib
    except ImportError:
        return note + " (forecast.png not written: matplotlib is not installed)"
    matplotlib.use("Agg")
    from jaxssm.plotting import plot_forecast

    title = (
        f"data (line) and {args.forecast}-step forecast (mean $\\pm$ 2 sd) after "
        f"{args.method.upper()}, per joint"
    )
    _save_png(plot_forecast(Y, fc, title=title, joints="all"), out / "forecast.png")
    written.append("forecast.png")
    return note


def write_summary(path: Path, header: str, fields: list) -> None:
    """Write ``header``, then ``key: value`` lines, one per ``(key, value)`` in ``fields``."""
    path.write_text(header + "\n" + "".join(f"{key}: {value}\n" for key, value in fields))


def _quote(text: str) -> str:
    return text if text and all(c.isalnum() or c in "-_.,:/=" for c in text) else repr(text)


def command_line(args: argparse.Namespace) -> str:
    """Return the command with the options in effect (defaults filled in), for the summary."""
    out = ["--data", args.data, "--method", args.method, "--start", args.start]
    if args.method == "fit":
        out += ["--max-iters", str(args.max_iters), "--tol", f"{args.tol:g}"]
    else:
        out += ["--iters", str(args.iters)]
    if args.method == "em":
        out += ["--tol", f"{args.tol:g}"]
    if args.method == "mle":
        out += ["--optimizer", args.optimizer or "adam"]
        if (args.optimizer or "adam") == "adam":
            out += ["--lr", f"{args.lr:g}"]
    out += ["--schedule", args.schedule, "--dtype", args.dtype, "--update", args.update]
    if args.inputs != "none":
        out += ["--inputs", args.inputs]
    out += ["--seed", str(args.seed)]
    if args.window is not None:
        out += ["--window", f"{args.window[0]}:{args.window[1]}"]
    if args.forecast is not None:
        out += ["--forecast", str(args.forecast)]
    return f"{PROG} fit {' '.join(_quote(a) for a in out)}"
