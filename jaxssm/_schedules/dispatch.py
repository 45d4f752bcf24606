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
settle, i.e. the full recursion). Which one applies is known on device; a program holds
the :class:`Paths` its caller asks for:

* :attr:`Paths.BOTH` (the default): both, and the one ``lax.cond`` that picks;
* :attr:`Paths.FAST`: the caller knows every entry is observed; the fast path alone, whose
  result is the answer only where :attr:`~jaxssm.ScheduleInfo.fast_path` is true;
* :attr:`Paths.GAP_AWARE`: the caller knows ``ys`` has a missing entry; the fallback alone.

A program with one path compiles in less time than one with both.

**Contract.** :func:`run` computes one :class:`Kind` of result and always returns
``(result, info)``, ``info`` a :class:`~jaxssm.ScheduleInfo` saying which path ran.
:func:`filter`, :func:`smooth`, :func:`log_likelihood` and :func:`stats` are :func:`run`
without the info, for the entry points whose public results do not carry it. An EM loop
runs its E-steps through a plan made once on the host (:func:`prepare_stats`: the paths
the data need, the data-only sums) and one call per iteration (:func:`stats_step`).
Everything here is unchecked: the arguments come from the entry points' prologue.
"""

from __future__ import annotations

import dataclasses
import enum
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxssm._args.schedule import METHODS, Schedule, by_name, is_parallel, resolve
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.types import (
    LGSSM,
    FilterResult,
    ScheduleInfo,
    SmootherResult,
    SufficientStats,
)
from jaxssm._blocks import stats as _stats
from jaxssm._schedules import chunked as _chunked
from jaxssm._schedules import diffuse as _diffuse
from jaxssm._schedules import gappy as _gap
from jaxssm._schedules import parallel as _parallel
from jaxssm._schedules import sequential as _sequential
from jaxssm._schedules import settle as _settle
from jaxssm._schedules import sqrt as _sqrt
from jaxssm._schedules import steady as _steady

__all__ = [
    "MIN_STEADY_STEPS",
    "METHODS",
    "Kind",
    "Paths",
    "FastData",
    "StatsPlan",
    "resolve",
    "is_parallel",
    "place",
    "prepare",
    "run",
    "filter",
    "smooth",
    "smooth_filtered",
    "log_likelihood",
    "stats",
    "prepare_stats",
    "stats_step",
    "with_fallback",
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
    if schedule.form == "sqrt":  # the full square-root recursion (no steady-state path)
        return 0
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
    associative scan (the gap-aware recursion is sequential).
    """
    if paths is Paths.GAP_AWARE and parallel:
        return _full(kind, params, ys, True, e, v), _full_info(kind, ys.shape[0])
    if kind in (Kind.FILTER, Kind.LOG_LIKELIHOOD):
        side = _settle.filter_side(params, T, rtol)
        converged = side.converged
        transients = (side.transient, jnp.int32(0))
    else:
        side = _settle.smoother_side(params, T, rtol)
        converged = side.info.converged
        transients = (side.info.filter_transient, side.info.smoother_transient)
    point = _gap.steady_point(side)

    def info(fast_path):
        return ScheduleInfo(fast_path, *transients, jnp.int32(T))

    def fallback(p, y, pt, c):
        if parallel:
            return _full(kind, p, y, True, e, v)
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
    if schedule.steady_state and _model.has_time_varying_matrices(params):
        names = ", ".join(_model.time_varying_names(params))
        raise ValueError(
            f"steady_state=True needs a time-invariant model, got time-varying {names}; "
            "pass steady_state=None or False"
        )
    if ys.ndim != 2 and kind not in (Kind.LOG_LIKELIHOOD, Kind.STATS):
        raise ValueError(f"{kind.value} takes ys [N, Dy], got shape {ys.shape}")
    extended = _model.uses_input_sums(params, inputs)
    T = _bound(schedule, params, ys.shape[-2], max_transient)

    def one(y, u, fd):
        core, y_s, e = _model.reduce(params, y, u)
        v = _model.augmented_inputs(u, y.shape[:-1], y.dtype) if extended else None
        if T:
            return _steady_schedule(kind, core, y_s, T, rtol, e, v, fd, paths, schedule.parallel)
        sqrt = schedule.form == "sqrt"
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


# ---------------------------------------------------------------------------------------------
# The E-steps of an EM loop: a plan made once on the host, one call per iteration
# ---------------------------------------------------------------------------------------------


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["ys", "inputs", "fast", "sums"],
    meta_fields=["schedule", "paths", "diffuse"],
)
@dataclasses.dataclass(frozen=True)
class StatsPlan:
    """What every E-step of a loop needs besides the parameters (:func:`prepare_stats`).

    A pytree whose ``schedule`` and ``paths`` are static (part of its structure): passed to
    a jitted loop, different paths compile different programs.

    Attributes:
        ys: ``[N, Dy]`` or ``[B, N, Dy]``.
        inputs: ``[N, Du]`` (``[B, N, Du]``), or ``None``.
        fast: :class:`FastData` of ``ys`` for a program holding both paths, else ``None``.
        sums: with every entry of ``ys`` observed (known on the host), the statistics that
            depend on the data alone (``D``, and ``U, YU`` of ``v = [u; 1]``,
            :func:`jaxssm._blocks.stats.data_sums`), computed once; else ``None``.
        schedule: the :class:`~jaxssm._args.schedule.Schedule`.
        paths: the :class:`Paths` of the steady-state schedule the E-step's program holds.
        diffuse: the diffuse components of ``P0`` (:mod:`jaxssm._schedules.diffuse`): the
            E-step is then the exact diffuse smoother's; ``()`` for none.
    """

    ys: jax.Array
    inputs: jax.Array | None
    fast: FastData | None
    sums: dict | None
    schedule: Schedule
    paths: Paths
    diffuse: tuple[int, ...] = ()


def _missing_on_device(ys: jax.Array):
    nan = jnp.isnan(ys)
    return jnp.any(nan), jnp.all(nan)


_missing_jit = _compile.jit(_missing_on_device)


def _missing(ys: jax.Array) -> tuple[bool, bool]:
    """Whether any and whether every entry of concrete ``ys`` is NaN.

    On the host with numpy when ``ys`` lives in this process's CPU memory (no copy, no
    compilation), else one small compiled program on its devices.
    """
    if ys.is_fully_addressable and all(d.platform == "cpu" for d in ys.devices()):
        nan = np.isnan(np.asarray(ys))
        return bool(nan.any()), bool(nan.all())
    some, every = _missing_jit(ys)
    return bool(some), bool(every)


@partial(_compile.jit, static_argnames="extended")
def _data_sums(ys: jax.Array, inputs: jax.Array | None, extended: bool) -> dict:
    v = _model.augmented_inputs(inputs, ys.shape[:-1], ys.dtype) if extended else None
    return _stats.data_sums(ys, v)


def _is_traced(tree) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def prepare_stats(
    params: LGSSM,
    ys: jax.Array,
    inputs: jax.Array | None,
    schedule: Schedule | str,
    diffuse: tuple[int, ...] = (),
) -> StatsPlan:
    """Plan the E-steps of a loop over ``ys`` on ``schedule`` (on the host, once).

    Concrete ``ys`` with a missing entry: the gap-aware recursion alone. Concrete ``ys``,
    ``params`` and ``inputs`` with every entry observed: the fast path alone, and the
    data-only statistics computed here, once. Under a transformation (traced arrays): both
    paths in one program, chosen on device. Where the schedule has no fast path for this
    series (:data:`MIN_STEADY_STEPS`, ``steady_state=False``, a time-varying model) the
    full recursion runs either way.

    Args:
        params: the loop's starting :class:`~jaxssm.LGSSM` (checked): its structure and
            whether it is traced.
        ys: ``[N, Dy]`` or ``[B, N, Dy]`` (checked).
        inputs: ``[N, Du]`` (``[B, N, Du]``) or ``None`` (checked).
        schedule: the resolved :class:`~jaxssm._args.schedule.Schedule`.
        diffuse: the diffuse components of ``P0`` (concrete): the E-step is then the exact
            diffuse smoother's (:mod:`jaxssm._schedules.diffuse`), one path.

    Returns:
        A :class:`StatsPlan` for :func:`stats_step`.

    Raises:
        ValueError: concrete ``ys`` has no observed entry (all NaN).
    """
    schedule = by_name(schedule)
    if diffuse:
        return StatsPlan(ys, inputs, None, None, schedule, Paths.GAP_AWARE, tuple(diffuse))
    T = _bound(schedule, params, ys.shape[-2], _settle.DEFAULT_MAX_TRANSIENT)
    if isinstance(ys, jax.core.Tracer):
        return StatsPlan(ys, inputs, prepare(ys) if T else None, None, schedule, Paths.BOTH)
    some, every = _missing(ys)
    if every:
        raise ValueError("ys has no observed entry (all NaN): there is nothing to fit")
    if some:
        return StatsPlan(ys, inputs, None, None, schedule, Paths.GAP_AWARE)
    if _is_traced((params, inputs)):
        return StatsPlan(ys, inputs, prepare(ys) if T else None, None, schedule, Paths.BOTH)
    sums = _data_sums(ys, inputs, _model.uses_input_sums(params, inputs))
    return StatsPlan(ys, inputs, None, sums, schedule, Paths.FAST if T else Paths.BOTH)


def stats_step(
    plan: StatsPlan, params: LGSSM
) -> tuple[tuple[SufficientStats, jax.Array], ScheduleInfo]:
    """One E-step of a loop: ``((stats, log p(y)), info)`` at ``params`` (jittable).

    The statistics of :func:`stats`, with the plan's data-only sums in place of the
    E-step's own (XLA then drops those). On a plan with :attr:`Paths.FAST` the result is
    the answer only where ``info.fast_path`` is true; elsewhere the loop goes on with
    :func:`with_fallback` of the plan.
    """
    if plan.diffuse:
        out_ll = _diffuse.stats_unchecked(params, plan.ys, plan.inputs, plan.diffuse)
        return out_ll, _full_info(Kind.STATS, plan.ys.shape[-2])
    (out, ll), info = run(
        Kind.STATS,
        params,
        plan.ys,
        plan.schedule,
        inputs=plan.inputs,
        fast=plan.fast,
        paths=plan.paths,
    )
    if plan.sums is not None:
        out = out._replace(**plan.sums)
    return (out, ll), info


def with_fallback(plan: StatsPlan) -> StatsPlan:
    """Return ``plan`` with both paths: for the E-steps a fast-path-only plan did not cover."""
    return dataclasses.replace(plan, fast=prepare(plan.ys), paths=Paths.BOTH)
