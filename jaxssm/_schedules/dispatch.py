r"""Which schedule runs: the one place that owns every schedule and its fallback.

Public entry points resolve ``method="sequential" | "parallel"`` and
``steady_state=None | True | False`` into a :class:`~jaxssm._args.schedule.Schedule`
(:func:`resolve`) and hand it here with the checked data. The schedules:

* ``"auto"`` (``method="sequential"``, ``steady_state=None``, the default): the steady-state
  schedule for series of at least :data:`MIN_STEADY_STEPS` steps, the full sequential
  recursion for shorter ones (there the fast path saves milliseconds and costs seconds of
  compilation). The rule depends on the shape only, so it is static.
* ``"steady"`` (``steady_state=True``): the steady-state schedule whenever the series holds
  its three regions (:func:`jaxssm._schedules.settle.transient_bound` ``> 0``).
* ``"sequential"`` (``steady_state=False``): the full ``lax.scan`` recursion.
* ``"parallel"`` (``method="parallel"``, ``steady_state=None`` or ``False``): the
  associative scan over every step; on a concrete ``ys`` split over time on a mesh axis,
  the time-sharded schedule (:func:`place`, :mod:`jaxssm._schedules.chunked`).
* ``"parallel_steady"`` (``method="parallel"``, ``steady_state=True``): the steady-state
  schedule with its mean recursions as log-depth associative scans of their affine maps
  (:func:`jaxssm._schedules.recursions.linear_recursion`) and the full associative scan as
  its fallback.

**The steady-state schedule.** For a time-invariant model the covariances do not depend on
the data and converge to fixed points; :mod:`jaxssm._schedules.settle` computes their
transients up to a static bound ``T``. The *fast path* (:mod:`jaxssm._schedules.steady`)
is exact when the covariances settled within ``T`` steps and every entry of ``ys`` is
observed; otherwise the *gap-aware recursion* (:mod:`jaxssm._schedules.gappy`) is: full
steps at the start, at each missing entry and after it until the covariance is back at
its fixed point, steady steps elsewhere (full steps everywhere when the covariances did not
settle, i.e. the full recursion). With ``form="sqrt"`` (``steady_state=True`` only: with
``None`` it runs the full square-root recursion) the covariance side runs on factors
(:mod:`jaxssm._schedules.sqrt_steady`) and the fallback is the full square-root recursion of
the method. Which one applies is known on device; a program holds the :class:`Paths` its
caller asks for:

* :attr:`Paths.BOTH` (the default): both, and the one ``lax.cond`` that picks;
* :attr:`Paths.FAST`: the caller knows every entry is observed; the fast path alone, whose
  result is the answer only where :attr:`~jaxssm.ScheduleInfo.fast_path` is true;
* :attr:`Paths.GAP_AWARE`: the caller knows ``ys`` has a missing entry; the fallback alone.

A program with one path compiles in less time than one with both.

**Contract.** :func:`run` computes one :class:`Kind` of result and always returns
``(result, info)``, ``info`` a :class:`~jaxssm.ScheduleInfo` saying which path ran.
:func:`filter`, :func:`smooth`, :func:`log_likelihood` and :func:`stats` are :func:`run`
without the info, for the entry points whose public results do not carry it. An EM loop
runs its E-steps through a plan made once on the host and one call per iteration
(:mod:`jaxssm._schedules.plan`, on :func:`run`, :func:`steady_bound` and :func:`full_info`).
Everything here is unchecked: the arguments come from the entry points' prologue.
"""

from __future__ import annotations

import enum
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxssm._args.schedule import METHODS, Schedule, by_name, is_parallel, resolve
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.types import (
    LGSSM,
    CovFactors,
    FilterResult,
    ScheduleInfo,
    SmootherResult,
    SufficientStats,
)
from jaxssm._blocks import stats as _stats
from jaxssm._schedules import chunked as _chunked
from jaxssm._schedules import gappy as _gap
from jaxssm._schedules import parallel as _parallel
from jaxssm._schedules import sequential as _sequential
from jaxssm._schedules import settle as _settle
from jaxssm._schedules import sqrt as _sqrt
from jaxssm._schedules import sqrt_steady as _sqrt_steady
from jaxssm._schedules import steady as _steady

__all__ = [
    "MIN_STEADY_STEPS",
    "METHODS",
    "Kind",
    "Paths",
    "FastData",
    "resolve",
    "is_parallel",
    "place",
    "prepare",
    "run",
    "run_factors",
    "filter",
    "smooth",
    "smooth_filtered",
    "log_likelihood",
    "stats",
    "steady_bound",
    "full_info",
]

#: With ``steady_state=None``, series shorter than this run the full recursion.
MIN_STEADY_STEPS = 2048


class Kind(enum.Enum):
    """What :func:`run` computes."""

    #: a :class:`~jaxssm.FilterResult`.
    FILTER = "filter"
    #: a :class:`~jaxssm.SmootherResult`.
    SMOOTH = "smooth"
    #: ``log p(y)``, a scalar (summed over a batch).
    LOG_LIKELIHOOD = "log_likelihood"
    #: ``(SufficientStats, log p(y))`` (pooled over a batch).
    STATS = "stats"


class Paths(enum.Enum):
    """Which paths of the steady-state schedule a program holds (see the module docstring).

    Where the schedule has no fast path (``ScheduleInfo.num_transient == 0``) every value
    runs the full recursion.
    """

    BOTH = "both"
    FAST = "fast"
    GAP_AWARE = "gap_aware"


class FastData(NamedTuple):
    """The parameter-free inputs of the fast path's choice (:func:`prepare`).

    Attributes:
        observed: whether every entry of ``ys`` is observed, bool ``[]`` (``[B]`` for a
            batch).
        ys: ``ys`` with NaN replaced by zeros: the fast path's input, whose result the
            ``lax.cond`` discards where an entry is missing, finite so that no NaN reaches
            gradients through it.
    """

    observed: jax.Array
    ys: jax.Array


def prepare(ys: jax.Array) -> FastData:
    """Return :class:`FastData` of ``ys`` (``[N, Dy]`` or ``[B, N, Dy]``).

    :func:`run` computes it itself when not given; a loop passes it in so that it is not
    recomputed every iteration (XLA does not hoist it out of the loop's conditionals).
    """
    missing = jnp.isnan(ys)
    return FastData(
        ~jnp.any(missing, axis=(-2, -1)), jnp.where(missing, jnp.zeros((), ys.dtype), ys)
    )


def place(schedule: Schedule | str, params: LGSSM, ys, inputs=None) -> Schedule:
    """Return the schedule that runs on checked ``params`` and ``ys``, time sharding included.

    ``method="parallel"`` (``steady_state`` not true) on a concrete ``ys [N, Dy]`` split over
    time on a mesh axis (:func:`jaxssm._schedules.chunked.time_sharding`), with a model
    without inputs, offsets or time-varying fields (the chunked schedule's scope), is the
    time-sharded schedule over that axis; every other case is ``schedule`` itself.
    """
    schedule = by_name(schedule)
    if schedule.name != "parallel" or inputs is not None or not _model.is_plain(params):
        return schedule
    if schedule.form == "sqrt":  # the chunked schedule has no square-root form
        return schedule
    on = _chunked.time_sharding(ys)
    return schedule if on is None else schedule._replace(mesh=on[0], axis_name=on[1])


def _bound(schedule: Schedule, params: LGSSM, num_steps: int, max_transient: int) -> int:
    """Return the steady-state bound ``T`` for a series of ``num_steps``, 0 for none (static)."""
    if schedule.steady_state is False or _model.has_time_varying_matrices(params):
        return 0
    if schedule.form == "sqrt" and schedule.steady_state is None:
        return 0  # auto: the full square-root recursion (its steady path only when asked)
    if schedule.steady_state is None and num_steps < MIN_STEADY_STEPS:
        return 0
    return _settle.transient_bound(num_steps, max_transient)


def _full_info(kind: Kind, num_steps: int) -> ScheduleInfo:
    """Return the info of a full recursion: every step a transient step, no bound."""
    n = jnp.int32(num_steps)
    smoothed = kind in (Kind.SMOOTH, Kind.STATS)
    return ScheduleInfo(jnp.array(False), n, n if smoothed else jnp.int32(0), jnp.int32(0))


def _full(kind: Kind, params: LGSSM, ys: jax.Array, parallel: bool, e=None, v=None, sqrt=False):
    """Run the full recursion of the sequential or the parallel schedule for one result.

    ``params`` and ``ys`` are reduced (:func:`jaxssm._base.model.reduce`); ``e`` and ``v`` are
    the observation offsets and augmented inputs the statistics need. ``sqrt``: the
    square-root form of either schedule (:mod:`jaxssm._schedules.sqrt`).
    """
    mod = _parallel if parallel else _sequential
    if sqrt:
        fwd = _sqrt.parallel_filter_factors if parallel else _sqrt.filter_factors
        filtered, factors = fwd(params, ys)
    else:
        filtered = mod.filter(params, ys)
    if kind is Kind.FILTER:
        return filtered
    if kind is Kind.LOG_LIKELIHOOD:
        return filtered.log_likelihood  # under jit, XLA drops the unused moments
    if sqrt:
        bwd = _sqrt.parallel_smooth_factors if parallel else _sqrt.smooth_factors
        smoothed = bwd(params, filtered, factors)[0]
    else:
        smoothed = mod.smooth(params, filtered)
    if kind is Kind.SMOOTH:
        return smoothed
    stats = _stats.from_smoother(smoothed, ys, params.H, params.R, e, v)
    return stats, smoothed.log_likelihood


def _gappy(kind: Kind, params: LGSSM, ys: jax.Array, point, converged, rtol, e=None, v=None):
    """Run the gap-aware steady-state recursion for one result."""
    if kind is Kind.FILTER:
        return _gap.gappy_filter(params, ys, point, converged, rtol)[0]
    # The statistics recompute the predicted covariances (half the pass's [N, D, D] memory).
    keep = kind is Kind.SMOOTH
    fwd = _gap.gappy_forward(params, ys, point, converged, rtol, keep_pred_covs=keep)
    if kind is Kind.LOG_LIKELIHOOD:
        return fwd.log_likelihood
    if kind is Kind.SMOOTH:
        return _gap.gappy_smooth(params, fwd, point, converged, rtol)
    stats = _gap.gappy_stats(params, ys, fwd, point, converged, rtol, e, v)
    return stats, fwd.log_likelihood


def _steady_schedule(
    kind: Kind,
    params: LGSSM,
    ys: jax.Array,
    T: int,
    rtol,
    e,
    v,
    fast: FastData | None,
    paths: Paths,
    parallel: bool,
    sqrt: bool = False,
):
    """Run the steady-state schedule with bound ``T > 0``: ``(result, info)``.

    With :attr:`Paths.BOTH` this is the one ``lax.cond`` of the schedule: the fast path's
    result where the covariances settled within ``T`` steps and every entry of ``ys`` is
    observed, the fallback's elsewhere. The fast path is given ``ys`` with NaNs replaced by
    zeros (``fast``, :func:`prepare` of the data before the offsets ``e`` are taken off;
    ``None``: computed here). Small results (the log-likelihood, the statistics) are
    computed before the ``cond`` so that only they enter it; the ``[T, D, D]`` covariance
    side would be copied into it (the fallback gets only the converged quantities). Under a
    ``vmap`` over parameters the predicate is batched and both branches run.

    The fallback is the gap-aware recursion, or on the parallel schedule the full
    associative scan (the gap-aware recursion is sequential). ``sqrt``: the covariance side
    on factors (:mod:`jaxssm._schedules.sqrt_steady`) and the full square-root recursion of
    the method as the fallback (the gap-aware recursion has no square-root form).
    """
    if paths is Paths.GAP_AWARE and (parallel or sqrt):
        return _full(kind, params, ys, parallel, e, v, sqrt), _full_info(kind, ys.shape[0])
    if kind in (Kind.FILTER, Kind.LOG_LIKELIHOOD):
        if sqrt:
            side = _sqrt_steady.filter_side(params, T, rtol).side
        else:
            side = _settle.filter_side(params, T, rtol)
        converged = side.converged
        transients = (side.transient, jnp.int32(0))
    else:
        if sqrt:
            side = _sqrt_steady.smoother_side(params, T, rtol).side
        else:
            side = _settle.smoother_side(params, T, rtol)
        converged = side.info.converged
        transients = (side.info.filter_transient, side.info.smoother_transient)
    point = _gap.steady_point(side)

    def info(fast_path):
        return ScheduleInfo(fast_path, *transients, jnp.int32(T))

    def fallback(p, y, pt, c):
        if parallel or sqrt:
            return _full(kind, p, y, parallel, e, v, sqrt)
        return _gappy(kind, p, y, pt, c, rtol, e, v)

    if paths is Paths.GAP_AWARE:
        return fallback(params, ys, point, converged), info(jnp.array(False))
    fast_fn = partial(
        {
            Kind.FILTER: _steady.filter,
            Kind.LOG_LIKELIHOOD: _steady.log_likelihood,
            Kind.SMOOTH: _steady.smooth,
            Kind.STATS: partial(_steady.stats, e=e, v=v),
        }[kind],
        form="doubling" if parallel else None,
    )
    if paths is Paths.FAST:
        return fast_fn(params, ys, side), info(converged)
    if fast is None:
        observed, ys_fast = prepare(ys)
    else:
        observed, ys_fast = fast
        if e is not None:
            ys_fast = ys_fast - e
    ok = converged & observed

    if kind in (Kind.LOG_LIKELIHOOD, Kind.STATS):
        result = jax.lax.cond(
            ok,
            lambda f, p, y, pt, c: f,
            lambda f, p, y, pt, c: fallback(p, y, pt, c),
            fast_fn(params, ys_fast, side),
            params,
            ys,
            point,
            converged,
        )
    else:
        result = jax.lax.cond(
            ok,
            lambda p, y, yf, s, pt, c: fast_fn(p, yf, s),
            lambda p, y, yf, s, pt, c: fallback(p, y, pt, c),
            params,
            ys,
            ys_fast,
            side,
            point,
            converged,
        )
    return result, info(ok)


def _time_sharded(kind: Kind, params: LGSSM, ys: jax.Array, schedule: Schedule):
    """Run the chunked schedule, one chunk per device of the schedule's mesh axis."""
    if kind is Kind.STATS or ys.ndim != 2:
        raise ValueError("the time-sharded schedule runs a filter or smoother of ys [N, Dy]")
    mesh, axis_name = schedule.mesh, schedule.axis_name
    fn = _chunked.smooth if kind is Kind.SMOOTH else _chunked.filter
    out = fn(params, ys, mesh.shape[axis_name], mesh, axis_name)
    if kind is Kind.LOG_LIKELIHOOD:
        out = out.log_likelihood
    return out, _full_info(kind, ys.shape[0])


def _check_invariant(schedule: Schedule, params: LGSSM) -> None:
    """Raise where ``steady_state=True`` meets a time-varying model."""
    if schedule.steady_state and _model.has_time_varying_matrices(params):
        names = ", ".join(_model.time_varying_names(params))
        raise ValueError(
            f"steady_state=True needs a time-invariant model, got time-varying {names}; "
            "pass steady_state=None or False"
        )


@partial(_compile.jit, static_argnames=("kind", "schedule", "max_transient", "rtol", "paths"))
def run(
    kind: Kind | str,
    params: LGSSM,
    ys: jax.Array,
    schedule: Schedule | str = "auto",
    max_transient: int = _settle.DEFAULT_MAX_TRANSIENT,
    rtol: float | None = None,
    inputs: jax.Array | None = None,
    fast: FastData | None = None,
    paths: Paths = Paths.BOTH,
) -> tuple[object, ScheduleInfo]:
    """Compute one ``kind`` of result on ``schedule`` (jitted; everything but arrays static).

    Args:
        kind: a :class:`Kind` (or its value): ``FILTER`` (a :class:`~jaxssm.FilterResult`),
            ``SMOOTH`` (a :class:`~jaxssm.SmootherResult`), ``LOG_LIKELIHOOD`` (a scalar) or
            ``STATS`` (``(SufficientStats, log_likelihood)``).
        params: an :class:`~jaxssm.LGSSM` (unchecked).
        ys: ``[N, Dy]``; for ``LOG_LIKELIHOOD`` and ``STATS`` also a batch ``[B, N, Dy]``
            (log-likelihoods summed, statistics pooled).
        schedule: a :class:`~jaxssm._args.schedule.Schedule` (from :func:`resolve`, or
            :func:`place` for the time-sharded one), or its name.
        max_transient: the steady-state schedule's bound on each transient.
        rtol: its convergence tolerance (``None``: ``1e4 * eps``).
        inputs: ``u_1..u_N`` ``[N, Du]`` (``[B, N, Du]`` with a batch), or ``None``.
        fast: :func:`prepare` of ``ys``, or ``None`` (computed here where needed).
        paths: the :class:`Paths` of the steady-state schedule the program holds.

    Returns:
        ``(result, info)``: the result of ``kind`` and a :class:`~jaxssm.ScheduleInfo` (for a
        batch: ``fast_path`` for every sequence, the largest transients). With
        :attr:`Paths.FAST` the result is the answer only where ``info.fast_path`` is true.

    A model with inputs or offsets is reduced to the schedules' form
    (:func:`jaxssm._base.model.reduce`); one with time-varying ``A, Q, H`` or ``R`` runs the
    full recursion (``steady_state=True`` is then an error).
    """
    kind, schedule = Kind(kind), by_name(schedule)
    if schedule.time_sharded:
        return _time_sharded(kind, params, ys, schedule)
    _check_invariant(schedule, params)
    if ys.ndim != 2 and kind not in (Kind.LOG_LIKELIHOOD, Kind.STATS):
        raise ValueError(f"{kind.value} takes ys [N, Dy], got shape {ys.shape}")
    extended = _model.uses_input_sums(params, inputs)
    T = _bound(schedule, params, ys.shape[-2], max_transient)

    def one(y, u, fd):
        core, y_s, e = _model.reduce(params, y, u)
        v = _model.augmented_inputs(u, y.shape[:-1], y.dtype) if extended else None
        sqrt = schedule.form == "sqrt"
        if T:
            return _steady_schedule(
                kind, core, y_s, T, rtol, e, v, fd, paths, schedule.parallel, sqrt
            )
        out = _full(kind, core, y_s, schedule.parallel, e, v, sqrt)
        return out, _full_info(kind, y.shape[0])

    if ys.ndim == 2:
        return one(ys, inputs, fast)
    out, infos = jax.vmap(one)(ys, inputs, fast)
    if kind is Kind.LOG_LIKELIHOOD:
        out = jnp.sum(out)
    else:
        per_sequence, lls = out
        out = _stats.pool(per_sequence), jnp.sum(lls)
    # With every entry observed the covariances do not depend on the data, so fast_path is
    # the same for all sequences; ``all`` also covers a batched parameter.
    info = ScheduleInfo(
        jnp.all(infos.fast_path),
        jnp.max(infos.filter_transient),
        jnp.max(infos.smoother_transient),
        jnp.int32(T),
    )
    return out, info


def filter(params: LGSSM, ys: jax.Array, schedule: Schedule | str = "auto", **options):
    """Kalman filter of ``ys [N, Dy]``: a :class:`~jaxssm.FilterResult`.

    ``schedule`` goes through :func:`place`; ``options`` are those of :func:`run`.
    """
    schedule = place(schedule, params, ys, options.get("inputs"))
    return run(Kind.FILTER, params, ys, schedule, **options)[0]


def smooth(params: LGSSM, ys: jax.Array, schedule: Schedule | str = "auto", **options):
    """Filter and RTS smoother of ``ys [N, Dy]``: a :class:`~jaxssm.SmootherResult`."""
    schedule = place(schedule, params, ys, options.get("inputs"))
    return run(Kind.SMOOTH, params, ys, schedule, **options)[0]


def log_likelihood(params: LGSSM, ys: jax.Array, schedule: Schedule | str = "auto", **options):
    """``log p(y)`` of ``ys [N, Dy]``, or the sum over a batch ``[B, N, Dy]``."""
    schedule = place(schedule, params, ys, options.get("inputs"))
    return run(Kind.LOG_LIKELIHOOD, params, ys, schedule, **options)[0]


def stats(
    params: LGSSM, ys: jax.Array, schedule: Schedule | str = "auto", **options
) -> tuple[SufficientStats, jax.Array]:
    """EM statistics and ``log p(y)`` of ``ys [N, Dy]``; a batch ``[B, N, Dy]`` is pooled."""
    return run(Kind.STATS, params, ys, schedule, **options)[0]


@partial(_compile.jit, static_argnames=("schedule", "smoothed", "max_transient", "rtol"))
def run_factors(
    params: LGSSM,
    ys: jax.Array,
    schedule: Schedule | str,
    smoothed: bool,
    inputs: jax.Array | None = None,
    max_transient: int = _settle.DEFAULT_MAX_TRANSIENT,
    rtol: float | None = None,
) -> tuple[FilterResult | SmootherResult, CovFactors]:
    """Run the square-root filter (``smoothed``: and smoother) of ``ys [N, Dy]`` with factors.

    ``(result, CovFactors)`` on a ``form="sqrt"`` ``schedule`` (jitted): with a steady-state
    bound (:func:`steady_bound`) the fast path where it applies and the full square-root
    recursion elsewhere (:func:`jaxssm._schedules.sqrt_steady.run_factors`); without one the
    full square-root recursion of the method (:func:`jaxssm._schedules.sqrt.run_factors`).
    Options as for :func:`run`.
    """
    schedule = by_name(schedule)
    _check_invariant(schedule, params)
    T = _bound(schedule, params, ys.shape[0], max_transient)
    if not T:
        return _sqrt.run_factors(params, ys, inputs, smoothed, schedule.parallel)
    core, y_s, _ = _model.reduce(params, ys, inputs)
    return _sqrt_steady.run_factors(core, y_s, T, rtol, smoothed, schedule.parallel)


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


def steady_bound(
    schedule: Schedule | str,
    params: LGSSM,
    num_steps: int,
    max_transient: int = _settle.DEFAULT_MAX_TRANSIENT,
) -> int:
    """Return the steady-state bound ``T`` of ``schedule`` for ``num_steps`` (0: none; static)."""
    return _bound(by_name(schedule), params, num_steps, max_transient)


def full_info(kind: Kind | str, num_steps: int) -> ScheduleInfo:
    """Return the :class:`~jaxssm.ScheduleInfo` of a full recursion of ``num_steps`` steps."""
    return _full_info(Kind(kind), num_steps)
