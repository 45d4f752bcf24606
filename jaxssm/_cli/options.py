"""The ``jaxssm`` command line: its options, their defaults and checks, and its two errors."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import NoReturn

import jax
import jax.numpy as jnp

import jaxssm as ssm

__all__ = [
    "PROG",
    "PARAM_NAMES",
    "DEFAULT_ITERS",
    "DEFAULT_MAX_ITERS",
    "DEFAULT_LR",
    "DEFAULT_TOL",
    "UsageError",
    "update_argument",
    "project_start",
    "InputError",
    "build_parser",
    "resolve_options",
    "one_line",
    "say",
]

PROG = "jaxssm"
PARAM_NAMES = ssm.PARAMETER_NAMES
#: EM iterations or optimiser steps of ``--method em`` and ``--method mle``.
DEFAULT_ITERS = 100
#: The E-step budget of ``--method fit``.
DEFAULT_MAX_ITERS = 10_000
DEFAULT_LR = 3e-2
#: EM and fit stop when log p(y) rises by at most this fraction of |log p(y)| (per iteration
#: for EM, per SQUAREM cycle for fit, which also needs a small scaled gradient).
DEFAULT_TOL = 1e-8


class UsageError(Exception):
    """A bad command line (exit status 2)."""


class InputError(Exception):
    """Data that cannot be used, or a run that failed (exit status 1)."""


def one_line(message: str) -> str:
    """Collapse whitespace and newlines so a message prints as one line."""
    return " ".join(str(message).split())


def say(line: str) -> None:
    """Print a note or an error on stderr."""
    print(line, file=sys.stderr, flush=True)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage block) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


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
_budget = _checked(int, lambda v: v >= 3, "an integer >= 3 (one SQUAREM cycle)")
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
            "exercise: the maximum-likelihood transition model of a 21-dimensional robot-arm "
            "series, to convergence (or plain EM, or gradient ascent), with plots."
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
            "kron(diag(0.01, 0.01, 1), I_J), learning (A, Q). By default it runs jaxssm.fit "
            "(SQUAREM-accelerated EM) to convergence from a start estimated from the data; "
            "--start white starts from the exercise's white noise instead, and --method em "
            "runs the exercise's plain EM for --iters iterations. Writes params.npz, "
            "log_likelihood.csv, fit.png and summary.txt into --out."
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
        "--method",
        choices=("fit", "em", "mle"),
        default="fit",
        help=(
            "fit (default): jaxssm.fit, SQUAREM-accelerated EM run until both the relative "
            "log-likelihood change and the scaled gradient are below --tol; em: the "
            "exercise's plain EM, --iters iterations; mle: gradient ascent on log p(y) with "
            "optax, --iters steps"
        ),
    )
    add(
        "--start",
        choices=("data", "white"),
        default="data",
        help=(
            "the start of the learned parameters. data (default, the fastest route to the "
            "answer): jaxssm.initialize's estimate from the data (for (A, Q): the regression "
            "of each row on the previous one, corrected for the known noise R); white: the "
            "exercise's white noise, A = 0 and Q = 0.01 diag(u) with u ~ Uniform[eps, 1) "
            "(eps of float32, so that Q is never singular) drawn with --seed. Parameters "
            "not learned keep the exercise's values"
        ),
    )
    add(
        "--max-iters",
        type=_budget,
        default=None,
        metavar="N",
        help=(
            f"the E-step budget of --method fit (default {DEFAULT_MAX_ITERS}); it stops "
            "sooner once converged"
        ),
    )
    add(
        "--iters",
        type=_positive_int,
        default=None,
        help=(
            f"EM iterations of --method em, or optimiser steps of --method mle "
            f"(default {DEFAULT_ITERS})"
        ),
    )
    add(
        "--tol",
        type=_nonnegative_float,
        default=None,
        help=(
            "relative tolerance (default "
            f"{DEFAULT_TOL:g}). fit: converged once a SQUAREM cycle raises the "
            "log-likelihood by at most TOL times its size and half the squared scaled "
            "gradient is at most TOL times its size; em: stops once an iteration raises it by "
            "at most TOL times its size (0 runs all --iters). The summary says whether it "
            "converged, or how far from converged it stopped"
        ),
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
            "A,B,Q with --inputs torques); NAME:STRUCTURE gives a structure, full, diagonal "
            "or scalar (e.g. A,Q,R:diagonal; --method em and mle)"
        ),
    )
    add(
        "--inputs",
        choices=("none", "torques"),
        default="none",
        help=(
            "none (default): the exercise's model; torques: the 7 joint torques of each row "
            "(SARCOS columns 21-27) drive the state, x_k = A x_{k-1} + B u_k + q_k, with B "
            "learnt (from zero with --start white; needs a 28-column data file)"
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
    add(
        "--seed",
        type=_nonnegative_int,
        default=0,
        help="seed of the white-noise Q (default 0; --start white, or Q not learned)",
    )
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


def update_argument(text: str):
    """``--update`` as the library's ``update=``: names, or ``{name: structure}``.

    ``A,Q`` gives ``("A", "Q")``; an item ``NAME:STRUCTURE`` (``full``, ``diagonal``,
    ``scalar``) makes the whole a mapping, the plain names in it ``"full"``: ``A,Q,R:diagonal``
    gives ``{"A": "full", "Q": "full", "R": "diagonal"}``. The library checks the result.

    Raises:
        UsageError: an item with more than one ``:``.
    """
    items = [item.strip() for item in text.split(",")]
    if not any(":" in item for item in items):
        return tuple(items)
    out = {}
    for item in items:
        parts = [p.strip() for p in item.split(":")]
        if len(parts) > 2:
            raise UsageError(f"--update {text}: {item!r} is not NAME or NAME:STRUCTURE")
        out[parts[0]] = parts[1] if len(parts) == 2 else "full"
    return out


def project_start(params: ssm.LGSSM, update) -> ssm.LGSSM:
    """``params`` with the ``diagonal`` / ``scalar`` fields of ``update`` made so.

    For a start estimated without the structures (``--start data``): the diagonal, or its
    mean times the identity. Names (a tuple) leave ``params`` as it is.
    """
    if not isinstance(update, dict):
        return params
    new = {}
    for name, structure in update.items():
        x = getattr(params, name, None)
        if x is None or structure == "full" or jnp.ndim(x) != 2:
            continue  # the library reports what does not fit
        if structure == "diagonal":
            new[name] = jnp.diag(jnp.diagonal(x))
        elif structure == "scalar":
            new[name] = jnp.mean(jnp.diagonal(x)) * jnp.eye(x.shape[0], dtype=x.dtype)
    return params._replace(**new)


def resolve_options(args: argparse.Namespace) -> None:
    """Check the options that depend on each other and fill in their defaults, in place.

    Raises:
        UsageError: an option that does not apply to the chosen method or combination.
    """
    if args.update is None:
        args.update = "A,B,Q" if args.inputs == "torques" else "A,Q"
    args.update = ",".join(name.strip() for name in args.update.split(","))
    if args.inputs == "torques" and args.forecast is not None:
        raise UsageError(
            "--forecast with --inputs torques would need the torques of the future steps; "
            "forecast without inputs, or call jaxssm.forecast(..., future_inputs=...)"
        )
    method = args.method
    if method != "mle" and (args.optimizer is not None or args.lr is not None):
        raise UsageError(
            f"{'--optimizer' if args.optimizer else '--lr'} applies to --method mle only"
        )
    if method == "mle" and args.tol is not None:
        raise UsageError("--tol applies to --method fit and em only (MLE runs all --iters steps)")
    if args.optimizer == "lbfgs" and args.lr is not None:
        raise UsageError("--lr applies to --optimizer adam only (lbfgs uses a line search)")
    if method == "fit" and args.iters is not None:
        raise UsageError(
            "--iters applies to --method em and mle only; --method fit stops once converged, "
            "within --max-iters E-steps"
        )
    if method != "fit" and args.max_iters is not None:
        raise UsageError(f"--max-iters applies to --method fit only (--method {method}: --iters)")
    if method == "fit":
        args.max_iters = DEFAULT_MAX_ITERS if args.max_iters is None else args.max_iters
    else:
        args.iters = DEFAULT_ITERS if args.iters is None else args.iters
    if args.tol is None and method != "mle":
        args.tol = DEFAULT_TOL
    if args.lr is None and method == "mle" and (args.optimizer or "adam") == "adam":
        args.lr = DEFAULT_LR
