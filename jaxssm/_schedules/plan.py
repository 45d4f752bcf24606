r"""The E-steps of an EM loop: a plan made once on the host, one call per iteration.

An EM loop runs its E-steps through a :class:`StatsPlan` made once on the host
(:func:`prepare_stats`: the paths of the steady-state schedule the data need, the data-only
sums) and one call per iteration (:func:`stats_step`, :func:`jaxssm._schedules.dispatch.run`
of ``Kind.STATS``); where a fast-path-only plan stops covering the loop, it goes on with
:func:`with_fallback` of the plan. Everything here is unchecked: the arguments come from the
entry points' prologue.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxssm._args.schedule import Schedule, by_name
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.types import LGSSM, ScheduleInfo, SufficientStats
from jaxssm._blocks import stats as _stats
from jaxssm._schedules import diffuse as _diffuse
from jaxssm._schedules import dispatch as _dispatch
from jaxssm._schedules.dispatch import FastData, Kind, Paths

__all__ = [
    "StatsPlan",
    "choose_paths",
    "prepare_stats",
    "stats_step",
    "with_fallback",
    "exact_on_fast_path",
]


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
        fast: :class:`~jaxssm._schedules.dispatch.FastData` of ``ys`` for a program holding
            both paths, else ``None``.
        sums: with every entry of ``ys`` observed (known on the host), the statistics that
            depend on the data alone (``D``, and ``U, YU`` of ``v = [u; 1]``,
            :func:`jaxssm._blocks.stats.data_sums`), computed once; else ``None``.
        schedule: the :class:`~jaxssm._args.schedule.Schedule`.
        paths: the :class:`~jaxssm._schedules.dispatch.Paths` of the steady-state schedule
            the E-step's program holds.
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
    series (:data:`~jaxssm._schedules.dispatch.MIN_STEADY_STEPS`, ``steady_state=False``, a
    time-varying model) the full recursion runs either way.

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
    paths = choose_paths(params, ys, inputs, schedule)
    if paths is Paths.GAP_AWARE:
        if _missing(ys)[1]:
            raise ValueError("ys has no observed entry (all NaN): there is nothing to fit")
        return StatsPlan(ys, inputs, None, None, schedule, Paths.GAP_AWARE)
    if _is_traced((ys, params, inputs)):
        T = _dispatch.steady_bound(schedule, params, ys.shape[-2])
        return StatsPlan(ys, inputs, _dispatch.prepare(ys) if T else None, None, schedule, paths)
    sums = _data_sums(ys, inputs, _model.uses_input_sums(params, inputs))
    return StatsPlan(ys, inputs, None, sums, schedule, paths)


def choose_paths(
    params: LGSSM, ys: jax.Array, inputs: jax.Array | None, schedule: Schedule | str
) -> Paths:
    """Return the :class:`~jaxssm._schedules.dispatch.Paths` a loop over ``ys`` needs (host).

    Concrete ``ys`` with a missing entry: ``Paths.GAP_AWARE``. Concrete ``ys``, ``params``
    and ``inputs`` with every entry observed, on a schedule with a steady-state bound for
    this series (:func:`~jaxssm._schedules.dispatch.steady_bound` ``> 0``): ``Paths.FAST``,
    whose results are the answer only where ``ScheduleInfo.fast_path`` is true. Otherwise
    (traced arrays, or no fast path): ``Paths.BOTH``. The rule of :func:`prepare_stats`.
    """
    if isinstance(ys, jax.core.Tracer):
        return Paths.BOTH
    if _missing(ys)[0]:
        return Paths.GAP_AWARE
    if _is_traced((params, inputs)):
        return Paths.BOTH
    return Paths.FAST if _dispatch.steady_bound(schedule, params, ys.shape[-2]) else Paths.BOTH


def stats_step(
    plan: StatsPlan, params: LGSSM
) -> tuple[tuple[SufficientStats, jax.Array], ScheduleInfo]:
    """One E-step of a loop: ``((stats, log p(y)), info)`` at ``params`` (jittable).

    The statistics of :func:`jaxssm._schedules.dispatch.stats`, with the plan's data-only
    sums in place of the E-step's own (XLA then drops those). On a plan with
    ``Paths.FAST`` the result is the answer only where ``info.fast_path`` is true;
    elsewhere the loop goes on with :func:`with_fallback` of the plan.
    """
    if plan.diffuse:
        out_ll = _diffuse.stats_unchecked(params, plan.ys, plan.inputs, plan.diffuse)
        return out_ll, _dispatch.full_info(Kind.STATS, plan.ys.shape[-2])
    (out, ll), info = _dispatch.run(
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
    return dataclasses.replace(plan, fast=_dispatch.prepare(plan.ys), paths=Paths.BOTH)


def exact_on_fast_path(f: Callable) -> Callable:
    """Return the objective ``theta -> f(theta, Paths.BOTH)``, differentiated one path at a time.

    ``f(theta, paths)`` returns ``(value, info)``: the normalised objective computed through
    :func:`jaxssm._schedules.dispatch.run` with ``paths`` on fully observed data, and that
    run's :class:`~jaxssm.ScheduleInfo`. The returned function's value is
    ``f(theta, Paths.BOTH)``'s. Its gradient is taken through the fast path alone
    (``Paths.FAST``) and, where ``ScheduleInfo.fast_path`` says the fast path does not cover
    ``theta`` (covariances not settled within the bound), through the gap-aware recursion alone
    (``Paths.GAP_AWARE``), inside a ``lax.cond`` on the value-and-gradient pairs: the
    value and gradient of ``Paths.BOTH``, which holds the same two branches. Reverse mode
    through ``Paths.BOTH`` itself keeps the residuals of both branches (partial evaluation
    of its ``lax.cond``) and costs several times the fast path's gradient. Every evaluation,
    a line search's trial points included, is therefore exact. Reverse mode only (a
    ``custom_vjp``).
    """

    def with_info(theta):
        value, info = f(theta, Paths.FAST)
        return value, jnp.all(info.fast_path)

    @jax.custom_vjp
    def value(theta):
        return f(theta, Paths.BOTH)[0]

    def forward(theta):
        (v, covered), g = jax.value_and_grad(with_info, has_aux=True)(theta)
        v, g = jax.lax.cond(
            covered,
            lambda th, v, g: (v, g),
            lambda th, v, g: jax.value_and_grad(lambda t: f(t, Paths.GAP_AWARE)[0])(th),
            theta,
            v,
            g,
        )
        return v, g

    def backward(g, cotangent):
        return (jax.tree.map(lambda x: cotangent * x, g),)

    value.defvjp(forward, backward)
    return value
