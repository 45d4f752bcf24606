"""The shared opening of the entry points that accept a diffuse ``P0``.

:func:`~jaxssm.kalman_filter`, :func:`~jaxssm.rts_smoother`, :func:`~jaxssm.log_likelihood`,
:func:`~jaxssm.posterior_sample`, :func:`~jaxssm.forecast` and :func:`~jaxssm.e_step` open the
same way: the
prologue with ``allow_diffuse=True`` (:func:`jaxssm._args.prologue.prologue`), then, when a
concrete ``P0`` has ``inf`` on its diagonal, a check that the schedule is one the exact
diffuse recursion runs (:func:`jaxssm._schedules.diffuse.check_schedule`). :func:`prepare`
is that opening; :func:`diffuse` its second half, for an entry point that checks arguments
of its own in between. What follows differs per entry point and stays there: which diffuse
routine runs, which dispatcher call, and whether the result's finiteness
(:func:`jaxssm._args.results.check_finite_result`) and variances are checked.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from jaxssm._args.prologue import prologue
from jaxssm._args.schedule import Schedule
from jaxssm._base.types import LGSSM
from jaxssm._schedules import diffuse as _diffuse

__all__ = ["Entry", "prepare", "diffuse"]


class Entry(NamedTuple):
    """Checked arguments of an entry point, and the diffuse components of its ``P0``.

    Attributes:
        params, ys, inputs, schedule: as :class:`jaxssm._args.prologue.Prepared`.
        diffuse: the indices of the diffuse components of a concrete ``P0`` (``inf`` on its
            diagonal); ``()`` for none or a traced ``P0``. When non-empty the schedule has
            been checked to run the exact diffuse recursion.
    """

    params: LGSSM
    ys: jax.Array | None
    inputs: jax.Array | None
    schedule: Schedule | None
    diffuse: tuple[int, ...]


def diffuse(params: LGSSM, schedule: Schedule | None, where: str) -> tuple[int, ...]:
    """Return the diffuse components of checked ``params``; check ``schedule`` where any.

    Raises:
        ValueError: a diffuse ``P0`` with a schedule other than the sequential full
            recursion in covariance form (the message names ``where``).
    """
    index = _diffuse.diffuse_index(params.P0)
    if index:
        _diffuse.check_schedule(schedule, where)
    return index


def prepare(
    where: str,
    params,
    ys,
    inputs,
    *,
    method: str,
    steady_state: bool | None,
    form: str = "cov",
    **options,
) -> Entry:
    """Run the prologue with ``allow_diffuse=True``, then :func:`diffuse` (in that order).

    Args:
        where: the entry point's name, for the diffuse schedule's error.
        params: the entry point's ``params``.
        ys: its ``ys``.
        inputs: its ``inputs``.
        method: its ``method``.
        steady_state: its ``steady_state``.
        form: its ``form``.
        options: further keywords of :func:`~jaxssm._args.prologue.prologue`
            (``allow_batch``, ``time_invariant``, ...).

    Returns:
        :class:`Entry` ``(params, ys, inputs, schedule, diffuse)``.

    Raises:
        ValueError, TypeError: as the prologue, then as :func:`diffuse`.
    """
    params, ys, inputs, schedule = prologue(
        params,
        ys,
        inputs,
        method=method,
        steady_state=steady_state,
        form=form,
        allow_diffuse=True,
        **options,
    )
    return Entry(params, ys, inputs, schedule, diffuse(params, schedule, where))
