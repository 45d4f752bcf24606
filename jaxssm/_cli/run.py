"""Running the fit for ``jaxssm fit``: the start, then ``fit``, plain EM or MLE, and its report.

Each method returns an :class:`Outcome`: the fitted parameters, the log-likelihood trace the
command writes, the line it prints when the fit ends and the lines the summary adds.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import threading
import time
from typing import NamedTuple

import jax
import numpy as np
from tqdm import tqdm

import jaxssm as ssm
from jaxssm._cli.options import InputError, UsageError, project_start, say, update_argument

__all__ = ["Outcome", "build_start", "describe_method", "run_method", "relative_rise"]


class Outcome(NamedTuple):
    """A finished fit, as the command reports it.

    Attributes:
        params: the fitted :class:`~jaxssm.LGSSM`.
        steps: ``[n]`` int, the x values of the trace (iterations, or E-steps for ``fit``).
        trace: ``[n]`` float64, the log-likelihoods; the first the start's, the last the
            fitted parameters'.
        step_name: the trace's first column, ``"iteration"`` or ``"e_step"``.
        note: how the fit stopped, appended to the printed end line (``"; ..."``).
        summary: ``(key, value)`` lines for summary.txt, in order.
        e_steps: the E-steps ``fit`` ran, or ``None`` for the other methods.
        printed: more lines to print after the end line.
        converged: whether the method's convergence test passed (never for ``mle``, which
            has none); the plot says so when not.
    """

    params: ssm.LGSSM
    steps: np.ndarray
    trace: np.ndarray
    step_name: str
    note: str
    summary: list
    e_steps: int | None = None
    printed: tuple = ()
    converged: bool = False


def describe_method(args: argparse.Namespace) -> str:
    """One line: what the command is about to run."""
    names, start = args.update, f"from the {args.start} start"
    if args.method == "fit":
        return (
            f"fit (SQUAREM-accelerated EM to convergence, tol {args.tol:g}, at most "
            f"{args.max_iters} E-steps) for {names} {start}, {args.schedule} schedule"
        )
    if args.method == "em":
        return (
            f"EM for {names} {start}, at most {args.iters} iterations (tol {args.tol:g}), "
            f"{args.schedule} schedule"
        )
    optimizer = args.optimizer or "adam"
    if optimizer == "adam":
        optimizer = f"adam(lr={args.lr:g})"
    return f"MLE for {names} {start} with {optimizer}, {args.iters} steps, {args.schedule} schedule"


@contextlib.contextmanager
def _library_update_errors(args: argparse.Namespace):
    """Turn the library's rejection of ``update`` into a usage error naming ``--update``."""
    try:
        yield
    except (ValueError, TypeError) as err:
        # The library checks `update` by its one rule before compiling; its errors name
        # `update`. Anything else is not the command line's fault.
        if "update" not in str(err):
            raise
        raise UsageError(f"--update {args.update}: {err}") from err


def build_start(params: ssm.LGSSM, ys, args: argparse.Namespace) -> tuple[ssm.LGSSM, float]:
    """Return the start of the fit for ``--start`` and the seconds it took.

    ``white`` keeps the exercise's set-up ``params``; ``data`` replaces the fields in
    ``--update`` by :func:`jaxssm.initialize`'s estimate from ``ys`` (and the inputs).

    Raises:
        UsageError: ``--update`` is not a valid set of names.
        InputError: the data do not support the estimate (too short, a constant column).
    """
    if args.start == "white":
        return params, 0.0
    t0 = time.perf_counter()
    with _library_update_errors(args):
        try:
            update = update_argument(args.update)
            start = ssm.initialize(params, ys, update=tuple(update), inputs=args.input_array)
            start = project_start(start, update)  # the structures of NAME:STRUCTURE items
        except ValueError as err:
            if "update" in str(err):
                raise
            raise InputError(f"--start data: {err} (or try --start white)") from err
    return start, time.perf_counter() - t0


def run_method(params0: ssm.LGSSM, ys, args: argparse.Namespace) -> Outcome:
    """Run ``--method`` from ``params0``; return its :class:`Outcome`.

    Raises:
        UsageError: ``--update`` is not a valid set of names.
        InputError: the fitted log-likelihood is not finite.
    """
    return {"fit": _run_fit, "em": _run_em, "mle": _run_mle}[args.method](params0, ys, args)


# ---------------------------------------------------------------------------------------------
# --method fit
# ---------------------------------------------------------------------------------------------


def relative_rise(trace: np.ndarray, span: int = 3) -> float:
    """Return the relative rise of the best log-likelihood over the last ``span`` points.

    With ``span = 3`` this is one SQUAREM cycle (two EM steps and an extrapolation), the
    quantity ``fit``'s first convergence test compares with ``tol``. NaN entries (rejected
    extrapolations) are skipped; NaN when fewer than two points were evaluated.
    """
    finite = np.asarray(trace, np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size < 2:
        return math.nan
    k = min(span, finite.size - 1)
    before, best = float(np.max(finite[:-k])), float(np.max(finite))
    return (best - before) / max(abs(before), np.finfo(np.float64).tiny)


@contextlib.contextmanager
def _elapsed(label: str):
    """On a terminal, show ``label: N s`` on stderr, once a second, while the block runs."""
    stream = sys.stderr
    if not stream.isatty():
        yield
        return
    done = threading.Event()
    t0 = time.perf_counter()

    def tick() -> None:
        while not done.wait(1.0):
            print(f"\r{label}: {time.perf_counter() - t0:.0f} s", end="", file=stream, flush=True)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        print("\r\033[K", end="", file=stream, flush=True)


_STOPPED = {
    ssm.FitStatus.CONVERGED: "the relative change and the scaled gradient both passed --tol",
    ssm.FitStatus.MAX_ITERS: "not converged: the loop used its {budget} E-steps (--max-iters)",
    ssm.FitStatus.STALLED: (
        "not converged: stalled, the log-likelihood stopped rising while the scaled gradient "
        "is not small (try --dtype float64)"
    ),
    ssm.FitStatus.DECREASED: (
        "not converged: an EM step lowered the log-likelihood (numerical breakdown; try "
        "--dtype float64); the best point before it is kept"
    ),
}


def _run_fit(params0, ys, args) -> Outcome:
    options = {} if args.input_array is None else {"inputs": args.input_array}
    say(
        f"running jaxssm.fit (compiling, then at most {args.max_iters} E-steps in one compiled "
        "loop; it reports when it ends) ..."
    )
    with _library_update_errors(args), _elapsed("fit"):
        fitted, info = ssm.fit(
            params0,
            ys,
            update=update_argument(args.update),
            tol=args.tol,
            max_iters=args.max_iters,
            method=args.schedule,
            start="params",  # build_start made the start --start asked for
            **options,
        )
        info = jax.tree.map(np.asarray, info)
    ll = float(info.log_likelihood)
    if not math.isfinite(ll):
        raise InputError(
            f"fit failed: the fitted log-likelihood is {ll} (numerical breakdown; try "
            "--dtype float64, or rescale the data)"
        )
    lls = np.asarray(info.log_likelihoods, np.float64)
    steps = np.flatnonzero(np.isfinite(lls))
    trace = lls[steps]
    status = ssm.FitStatus(int(info.status))
    rise = relative_rise(lls)
    grad_norm = float(info.grad_norm)
    gain = 0.5 * grad_norm**2
    threshold = args.tol * abs(ll)
    stopped = _STOPPED[status].format(budget=args.max_iters)
    if status == ssm.FitStatus.MAX_ITERS and int(info.num_e_steps) < args.max_iters - 2:
        # The boundary stage's budget ran out, not the E-steps'.
        stopped = (
            f"not converged: the boundary stage used its {int(info.num_grad_evals)} exact "
            "gradients (fit's max_grad_evals)"
        )
    distance = (
        f"relative change {rise:.2g} over the last SQUAREM cycle, scaled gradient "
        f"{grad_norm:.3g} (predicted gain 0.5 grad_norm^2 = {gain:.2g} nats; tol |log p(y)| = "
        f"{threshold:.2g})"
    )
    if status == ssm.FitStatus.CONVERGED:
        note = f"; converged ({distance})"
    else:
        advice = "; raise --max-iters" if status == ssm.FitStatus.MAX_ITERS else ""
        note = f"; {stopped}; how far from converged: {distance}{advice}"
    e_steps = int(info.num_e_steps)
    summary = [
        (
            "e-steps",
            f"{e_steps} (the loop's budget --max-iters {args.max_iters}, plus one per round "
            f"for the scaled gradient; SQUAREM: {int(info.num_extrapolations)} "
            f"extrapolations, {int(info.num_rejected)} rejected)",
        ),
        ("boundary stage", _boundary_text(info)),
        ("status", f"{status.name} ({stopped})"),
        ("last relative change", f"{rise:.3g} over one SQUAREM cycle (tol {args.tol:g})"),
        (
            "grad_norm",
            f"{grad_norm:.6g} (scaled gradient, sqrt(nats); 0.5 grad_norm^2 = {gain:.3g} nats "
            f"against tol |log p(y)| = {threshold:.3g})",
        ),
        ("free parameters", str(int(info.num_free_params))),
        ("AIC", repr(float(info.aic))),
        ("BIC", repr(float(info.bic))),
    ]
    # The loops' trace (rejected extrapolations and unused E-steps dropped), then the last
    # E-step, which evaluated the returned parameters (their log-likelihood and gradient).
    steps = np.append(steps, max(e_steps - 1, steps[-1] + 1 if steps.size else 0))
    aic_bic = (
        f"AIC {float(info.aic):.6g}, BIC {float(info.bic):.6g} "
        f"({int(info.num_free_params)} free parameters)"
    )
    trace = np.append(trace, ll)
    converged = status == ssm.FitStatus.CONVERGED
    return Outcome(fitted, steps, trace, "e_step", note, summary, e_steps, (aic_bic,), converged)


def _boundary_text(info) -> str:
    """Describe fit's boundary stage: gradients spent, eigenvalues held at zero, KKT check."""
    grads = int(getattr(info, "num_grad_evals", 0))
    dropped = dict(getattr(info, "rank_dropped", {}) or {})
    if not grads and not dropped:
        return "not run (no learned covariance had a vanishing eigenvalue)"
    held = ", ".join(f"{name} {count}" for name, count in dropped.items()) or "none"
    slope = float(getattr(info, "boundary_slope", float("nan")))
    return (
        f"{grads} exact gradients; eigenvalues held at zero: {held}; KKT sign check "
        f"{slope:.3g} (negative: the likelihood falls off the boundary)"
    )


# ---------------------------------------------------------------------------------------------
# --method em and --method mle: the exercise's loops, with a progress bar
# ---------------------------------------------------------------------------------------------


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


def _call_loop(label: str, fit, params0, ys, args, **options):
    """``fit(params0, ys, ...)`` with the progress bar; a bad ``--update`` is a usage error."""
    if args.input_array is not None:
        options["inputs"] = args.input_array
    say(f"compiling the {label} loop (a few seconds) ...")
    with _progress_bar(label, args.iters) as callback, _library_update_errors(args):
        fitted, info = fit(
            params0,
            ys,
            num_iters=args.iters,
            update=update_argument(args.update),
            method=args.schedule,
            callback=callback,
            **options,
        )
        return fitted, jax.tree.map(np.asarray, info)


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


def _run_em(params0, ys, args) -> Outcome:
    options = {} if args.tol == 0 else {"tol": args.tol}
    fitted, info = _call_loop("EM", ssm.fit_em, params0, ys, args, **options)
    # trace[i] = log p(y | theta_i) for the parameters evaluated, ending with the returned
    # ones (see fit_em's docstring for which parameters it returns when it stops early).
    count = int(info.num_iters)
    trace = np.asarray(info.log_likelihoods[:count], dtype=np.float64)
    ll_after = float(info.log_likelihood)
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
        raise InputError(
            f"EM failed: the fitted log-likelihood is {ll_after} (numerical breakdown; try "
            "--dtype float64, or rescale the data)"
        )
    summary = [("iterations", f"{count} of {args.iters}{note}")]
    converged = int(info.status) == ssm.EMStatus.CONVERGED
    return Outcome(
        fitted, np.arange(len(trace)), trace, "iteration", note, summary, converged=converged
    )


def _run_mle(params0, ys, args) -> Outcome:
    import optax  # only for --method mle

    if (args.optimizer or "adam") == "adam":
        optimizer = optax.adam(args.lr)
    else:
        optimizer = optax.lbfgs()
    fitted, info = _call_loop("MLE", ssm.fit_mle, params0, ys, args, optimizer=optimizer)
    if not np.isfinite(info.log_likelihood):
        raise InputError(
            f"MLE failed: the fitted log-likelihood is {info.log_likelihood} (try a smaller --lr)"
        )
    # trace[i] = log p(y | theta_i), i = 0..iters, the last entry the returned parameters.
    trace = np.append(np.asarray(info.log_likelihoods, np.float64), info.log_likelihood)
    status = ssm.MLEStatus(int(info.status))
    if status != ssm.MLEStatus.MAX_ITERS:
        best = int(info.best_iter)
        what = (
            "the optimiser diverged (the last iterate is below the start)"
            if status == ssm.MLEStatus.DIVERGED
            else "the log-likelihood fell over the last steps"
        )
        note = (
            f"; not converged: {what}, the last iterate's log-likelihood is "
            f"{float(info.decrease):.3g} below the best (try a smaller --lr); the best "
            f"iterate ({best}) is kept"
        )
        # The trace up to the returned iterate (the later ones were worse).
        trace = np.asarray(info.log_likelihoods[: best + 1], np.float64)
    else:
        note = _still_rising(trace, "MLE")
    summary = [("iterations", f"{args.iters} of {args.iters}{note}")]
    return Outcome(fitted, np.arange(len(trace)), trace, "iteration", note, summary)
