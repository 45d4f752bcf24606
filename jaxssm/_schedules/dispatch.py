"""Which schedule runs: the one place that owns ``method``, ``steady_state`` and the fallback.

Public entry points take ``method="sequential" | "parallel"`` and
``steady_state=None | True | False`` and hand them to :func:`resolve`
(:mod:`jaxssm._args.schedule`), which checks them and returns a static
:class:`~jaxssm._args.schedule.Schedule`; the functions here take it or its name:

* ``"auto"`` (``method="sequential"``, ``steady_state=None``, the default): the steady-state
  fast path for series of at least :data:`MIN_STEADY_STEPS` steps, the full sequential
  recursion for shorter ones (there the fast path saves milliseconds and costs seconds of
  compilation). The rule depends on the shape only, so it is static.
* ``"steady"`` (``steady_state=True``): the fast path whenever the series holds its three
  regions (:func:`jaxssm._schedules.steady.transient_bound` > 0).
* ``"sequential"`` (``steady_state=False``): the full ``lax.scan`` recursion.
* ``"parallel"`` (``method="parallel"``, ``steady_state=None`` or ``False``): the
  associative scan over every step.
* ``"parallel_steady"`` (``method="parallel"``, ``steady_state=True``): the steady-state
  schedule with its mean recursions over the series as log-depth associative scans of
  their affine maps (:func:`jaxssm._schedules.steady._doubling_recursion`) and the full associative
  scan as its fallback. Opt-in: whether it beats the full associative scan on an
  accelerator is measured by ``benchmarks/gpu.sh`` and not yet known.

The fast path is exact only once the covariances have converged, which is known on device:
:func:`_steady_or_full` is the single ``lax.cond`` that picks the fast result or the full
recursion. The functions here are jitted with the schedule static, unchecked, and take
``ys [N, Dy]``; :func:`log_likelihood` and :func:`stats` also take a batch ``[B, N, Dy]``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxssm._args.schedule import METHODS, Schedule, is_parallel, resolve, schedule_name
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.types import LGSSM, FilterResult, SmootherResult, SufficientStats
from jaxssm._blocks import stats as _stats
from jaxssm._schedules import gappy as _gap
from jaxssm._schedules import parallel as _parallel
from jaxssm._schedules import sequential as _sequential
from jaxssm._schedules import settle as _settle
from jaxssm._schedules import steady as _steady

__all__ = [
    "MIN_STEADY_STEPS",
    "METHODS",
    "resolve",
    "run",
    "filter",
    "smooth",
    "smooth_filtered",
    "log_likelihood",
    "stats",
    "prepare",
    "FALLBACKS",
    "is_parallel",
]

#: With ``steady_state=None``, series shorter than this run the full recursion.
MIN_STEADY_STEPS = 2048

#: How the steady-state schedule covers what its fast path does not (see :func:`run`).
FALLBACKS = ("cond", "defer", "gappy")


def _fast_bound(schedule: str, num_steps: int, max_transient: int) -> int:
    """Return the steady-state bound ``T`` to use, or 0 for the full recursion (static)."""
    if schedule == "auto" and num_steps < MIN_STEADY_STEPS:
        return 0
    if schedule in ("auto", "steady", "parallel_steady"):
        return _settle.transient_bound(num_steps, max_transient)
    return 0


def _full(kind: str, params: LGSSM, ys: jax.Array, schedule: str, e=None, v=None):
    """Run the full recursion of the sequential or the parallel schedule for one result.

    ``params`` and ``ys`` are reduced (:func:`jaxssm._base.model.reduce`); ``e`` and ``v`` are
    the observation offsets and augmented inputs the statistics need.
    """
    mod = _parallel if is_parallel(schedule) else _sequential
    filtered = mod.filter(params, ys)
    if kind == "filter":
        return filtered
    if kind == "log_likelihood":
        return filtered.log_likelihood  # under jit, XLA drops the unused moments
    smoothed = mod.smooth(params, filtered)
    if kind == "smooth":
        return smoothed
    stats = _stats.from_smoother(smoothed, ys, params.H, params.R, e, v)
    return stats, smoothed.log_likelihood


def _gappy(kind: str, params: LGSSM, ys: jax.Array, point, converged, rtol, e=None, v=None):
    """Run the gap-aware steady-state path for one kind."""
    if kind == "filter":
        return _gap.gappy_filter(params, ys, point, converged, rtol)[0]
    # The statistics recompute the predicted covariances (half the pass's [N, D, D] memory).
    keep = kind == "smooth"
    fwd = _gap.gappy_forward(params, ys, point, converged, rtol, keep_pred_covs=keep)
    if kind == "log_likelihood":
        return fwd.log_likelihood
    if kind == "smooth":
        return _gap.gappy_smooth(params, fwd, point, converged, rtol)
    stats = _gap.gappy_stats(params, ys, fwd, point, converged, rtol, e, v)
    return stats, fwd.log_likelihood


def prepare(ys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Return the parameter-free inputs of the fast path's choice, to compute once per loop.

    Returns ``(observed, ys_fast)``: whether every entry of ``ys`` (``[N, Dy]`` or a batch
    ``[B, N, Dy]``, then ``observed`` is ``[B]``) is observed, and ``ys`` with NaN replaced by
    zeros. :func:`run` computes them itself when not given; ``fit_em`` passes them in so
    that its loop does not recompute them every iteration (XLA does not hoist them out of the
    loop's conditionals).
    """
    missing = jnp.isnan(ys)
    return ~jnp.any(missing, axis=(-2, -1)), jnp.where(missing, jnp.zeros((), ys.dtype), ys)


def _steady_or_full(
    kind: str,
    params: LGSSM,
    ys: jax.Array,
    T: int,
    rtol,
    e=None,
    v=None,
    prepared=None,
    fallback: str = "cond",
    schedule: str = "auto",
):
    """Return the fast path's result if it applies, else the gap-aware recursion's.

    This is the one ``lax.cond`` of the steady-state schedule. The fast path
    (:mod:`jaxssm._schedules.steady`'s three regions) applies when the covariances converged within
    ``T`` steps and every entry of ``ys`` is observed. Otherwise the gap-aware recursion
    runs (:func:`jaxssm._schedules.steady.gappy_filter`): full masked steps at the start, at every
    missing entry and after it until the covariance is back at the fixed point, steady
    steps elsewhere; when the transient did not end within ``T`` steps it takes the full
    step everywhere, i.e. it is the full sequential recursion. The fast path is given
    ``ys`` with NaNs replaced by zeros: its result is then discarded, but finite, so it
    cannot put NaN into gradients through the ``cond``. ``prepared`` is :func:`prepare` of
    the data before the observation offsets ``e`` are taken off (``None``: computed here).

    Small results (the log-likelihood, the statistics) are computed before the ``cond`` so
    that only they enter it; the ``[T, D, D]`` covariance side would be copied into it (the
    gap-aware branch gets only the converged quantities). Under a ``vmap`` over parameters
    the predicate is batched and both branches run.

    ``fallback="gappy"`` (the caller knows ``ys`` has missing entries) runs the gap-aware
    recursion alone, and ``fallback="defer"`` (the caller knows every entry is observed)
    the fast path alone, returning ``(result, converged)``: no ``cond``, and a program that
    holds one of the two paths instead of both.

    On ``schedule="parallel_steady"`` the fast path's mean recursions are log-depth scans
    and the fallback is the full associative scan (:mod:`jaxssm._schedules.parallel`) instead of the
    gap-aware recursion, which is sequential.
    """
    parallel = is_parallel(schedule)
    if fallback == "gappy" and parallel:
        return _full(kind, params, ys, "parallel", e, v)
    if kind in ("filter", "log_likelihood"):
        side = _settle.filter_side(params, T, rtol)
        converged = side.converged
    else:
        side = _settle.smoother_side(params, T, rtol)
        converged = side.info.converged
    point = _gap.steady_point(side)

    def fallback_fn(p, y, pt, c):
        """Run the gap-aware recursion, or the full associative scan on a parallel schedule."""
        if parallel:
            return _full(kind, p, y, "parallel", e, v)
        return _gappy(kind, p, y, pt, c, rtol, e, v)

    if fallback == "gappy":
        return fallback_fn(params, ys, point, converged)
    fast_fn = partial(
        {
            "filter": _steady.filter,
            "log_likelihood": _steady.log_likelihood,
            "smooth": _steady.smooth,
            "stats": partial(_steady.stats, e=e, v=v),
        }[kind],
        form="doubling" if parallel else None,
    )
    if fallback == "defer":
        return fast_fn(params, ys, side), converged
    if prepared is None:
        observed, ys_fast = prepare(ys)
    else:
        observed, ys_fast = prepared
        if e is not None:
            ys_fast = ys_fast - e
    ok = converged & observed

    if kind in ("log_likelihood", "stats"):
        fast = fast_fn(params, ys_fast, side)
        return jax.lax.cond(
            ok,
            lambda f, p, y, pt, c: f,
            lambda f, p, y, pt, c: fallback_fn(p, y, pt, c),
            fast,
            params,
            ys,
            point,
            converged,
        )
    return jax.lax.cond(
        ok,
        lambda p, y, yf, s, pt, c: fast_fn(p, yf, s),
        lambda p, y, yf, s, pt, c: fallback_fn(p, y, pt, c),
        params,
        ys,
        ys_fast,
        side,
        point,
        converged,
    )


@partial(_compile.jit, static_argnames=("kind", "schedule", "max_transient", "rtol", "fallback"))
def run(
    kind: str,
    params: LGSSM,
    ys: jax.Array,
    schedule: Schedule | str = "auto",
    max_transient: int = _settle.DEFAULT_MAX_TRANSIENT,
    rtol: float | None = None,
    inputs: jax.Array | None = None,
    prepared: tuple[jax.Array, jax.Array] | None = None,
    fallback: str = "cond",
):
    """Compute one ``kind`` of result on ``schedule`` (jitted; everything but arrays static).

    Args:
        kind: ``"filter"`` (a :class:`~jaxssm.FilterResult`), ``"smooth"`` (a
            :class:`~jaxssm.SmootherResult`), ``"log_likelihood"`` (a scalar) or ``"stats"``
            (``(SufficientStats, log_likelihood)``).
        params: an :class:`~jaxssm.LGSSM` (unchecked).
        ys: ``[N, Dy]``; for ``"log_likelihood"`` and ``"stats"`` also a batch
            ``[B, N, Dy]`` (log-likelihoods summed, statistics pooled).
        schedule: a :class:`~jaxssm._args.schedule.Schedule` from :func:`resolve`, or its
            name.
        max_transient: the steady-state path's bound on each transient.
        rtol: its convergence tolerance (``None``: ``1e4 * eps``).
        inputs: ``u_1..u_N`` ``[N, Du]`` (``[B, N, Du]`` with a batch), or ``None``.
        prepared: :func:`prepare` of ``ys``, or ``None`` (computed here if needed).
        fallback: what covers the cases the steady-state fast path does not (missing entries,
            a transient longer than the bound). ``"cond"``: the gap-aware recursion in a
            ``lax.cond``, chosen on device. ``"gappy"``: the caller knows ``ys`` has a
            missing entry, and the gap-aware recursion runs alone. ``"defer"``: the caller
            knows every entry is observed; the fast path runs alone and ``run`` returns
            ``(result, ok)``, ``ok`` saying whether it applied (the covariances converged
            within the bound; always true off the steady-state schedule). A result with
            ``ok`` false is not the answer: the caller reruns with ``"cond"``.

    A model with inputs or offsets is reduced to the schedules' form
    (:func:`jaxssm._base.model.reduce`); one with time-varying ``A, Q, H`` or ``R`` runs the full
    recursion (``schedule="steady"`` is then an error).
    """
    schedule = schedule_name(schedule)
    varying = _model.has_time_varying_matrices(params)
    if varying and schedule in ("steady", "parallel_steady"):
        names = ", ".join(_model.time_varying_names(params))
        raise ValueError(
            f"steady_state=True needs a time-invariant model, got time-varying {names}; "
            "pass steady_state=None or False"
        )
    extended = _model.uses_input_sums(params, inputs)

    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    if ys.ndim != 2 and kind not in ("log_likelihood", "stats"):
        raise ValueError(f"{kind} takes ys [N, Dy], got shape {ys.shape}")

    def one(y, u, prep):
        core, y_s, e = _model.reduce(params, y, u)
        v = _model.augmented_inputs(u, y.shape[:-1], y.dtype) if extended else None
        T = 0 if varying else _fast_bound(schedule, y.shape[0], max_transient)
        if T:
            return _steady_or_full(kind, core, y_s, T, rtol, e, v, prep, fallback, schedule)
        out = _full(kind, core, y_s, schedule, e, v)
        return (out, jnp.array(True)) if fallback == "defer" else out

    if ys.ndim == 2:
        return one(ys, inputs, prepared)
    batched = jax.vmap(one)(ys, inputs, prepared)
    if fallback == "defer":
        # With every entry observed the covariances do not depend on the data, so ``ok`` is
        # the same for all sequences; ``all`` also covers a batched parameter.
        batched, oks = batched
    if kind == "log_likelihood":
        out = jnp.sum(batched)
    else:
        per_sequence, lls = batched
        out = _stats.pool(per_sequence), jnp.sum(lls)
    return (out, jnp.all(oks)) if fallback == "defer" else out


def filter(params: LGSSM, ys: jax.Array, schedule: str = "auto", **options) -> FilterResult:
    """Kalman filter of ``ys [N, Dy]`` on ``schedule`` (``options``: as :func:`run`)."""
    return run("filter", params, ys, schedule, **options)


def smooth(params: LGSSM, ys: jax.Array, schedule: str = "auto", **options) -> SmootherResult:
    """Filter and RTS smoother of ``ys [N, Dy]`` on ``schedule``."""
    return run("smooth", params, ys, schedule, **options)


def log_likelihood(params: LGSSM, ys: jax.Array, schedule: str = "auto", **options) -> jax.Array:
    """``log p(y)`` of ``ys [N, Dy]``, or the sum over a batch ``[B, N, Dy]``."""
    return run("log_likelihood", params, ys, schedule, **options)


def stats(
    params: LGSSM, ys: jax.Array, schedule: str = "auto", **options
) -> tuple[SufficientStats, jax.Array]:
    """EM statistics and ``log p(y)`` of ``ys [N, Dy]``; a batch ``[B, N, Dy]`` is pooled."""
    return run("stats", params, ys, schedule, **options)


@partial(_compile.jit, static_argnames="schedule")
def smooth_filtered(
    params: LGSSM, filtered: FilterResult, schedule: Schedule | str
) -> SmootherResult:
    """RTS backward pass over a :class:`~jaxssm.FilterResult` (sequential or parallel).

    The backward pass uses ``A`` only (the offsets are in the filter's predicted means).
    """
    mod = _parallel if is_parallel(schedule) else _sequential
    core = params._replace(B=None, b=None, D=None, d=None)
    return mod.smooth(core, filtered)
