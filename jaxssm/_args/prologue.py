"""The one prologue of the entry points: the schedule, then parameters, data and inputs.

Every public entry point that takes a model checks its arguments in the same order, so that
a call with several bad arguments reports the same first error everywhere:

1. ``method`` and ``steady_state`` (:func:`jaxssm._args.schedule.resolve`);
2. ``params`` (:func:`~jaxssm._args.validation.validate_params`), and what the entry point
   supports of the model (``plain``);
3. ``ys`` against ``params`` (:func:`~jaxssm._args.validation.validate_observations`), or
   the length ``num_steps`` of a series to draw;
4. the model beyond the data (``time_invariant``), and zeros for the absent input gains
   and offsets that ``update`` learns (:func:`jaxssm._base.model.start_absent`);
5. ``inputs`` against ``params`` and ``ys`` (:func:`~jaxssm._args.validation.validate_inputs`).

The entry point's own arguments (a key, a count, a tolerance) are checked before or after,
where each entry point documents it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from jaxssm._args import schedule as _schedule
from jaxssm._args.schedule import Schedule
from jaxssm._args.validation import (
    check_plain_model,
    check_time_invariant,
    check_time_varying_length,
    validate_inputs,
    validate_observations,
    validate_params,
)
from jaxssm._base import model as _model
from jaxssm._base.types import LGSSM

__all__ = ["Prepared", "prologue"]


class Prepared(NamedTuple):
    """Checked arguments of an entry point.

    Attributes:
        params: the :class:`~jaxssm.LGSSM`, every field a JAX array (absent fields ``None``,
            or zeros where ``update`` learns them).
        ys: ``[N, Dy]`` (or ``[B, N, Dy]``) as a JAX array, or ``None`` when not given.
        inputs: ``[N, Du]`` (or ``[B, N, Du]``), or ``None`` for a model without inputs.
        schedule: the resolved :class:`~jaxssm._args.schedule.Schedule`, or ``None`` when the
            entry point has no ``method``.
    """

    params: LGSSM
    ys: jax.Array | None
    inputs: jax.Array | None
    schedule: Schedule | None


def prologue(
    params,
    ys=None,
    inputs=None,
    *,
    method: str | None = None,
    steady_state: bool | None = None,
    form: str = "cov",
    schedule: Schedule | None = None,
    allow_batch: bool = False,
    check_values: bool = True,
    num_steps: int | None = None,
    plain: str | None = None,
    time_invariant: str | None = None,
    update: tuple[str, ...] = (),
    allow_diffuse: bool = False,
) -> Prepared:
    """Check an entry point's model, data and schedule arguments, in the one order.

    Args:
        params: the ``params`` argument.
        ys: the ``ys`` argument, or ``None`` for an entry point without data.
        inputs: the ``inputs`` argument; checked when ``ys`` or ``num_steps`` is given.
        method: ``method=`` of the entry point, resolved with ``steady_state``; ``None`` for
            an entry point without one.
        steady_state: ``steady_state=`` of the entry point.
        form: ``form=`` of the entry point (``"cov"`` or ``"sqrt"``), resolved with them.
        schedule: an already resolved schedule, for an entry point that checks other
            arguments between ``method`` and ``params`` (not with ``method``).
        allow_batch: accept ``ys [B, N, Dy]``.
        check_values: check the values of concrete parameters (finite, PSD covariances).
        num_steps: without ``ys``: the length ``N`` of the series the entry point makes
            (time-varying fields and ``inputs`` must have it).
        plain: the entry point's name when it supports only the model without inputs,
            offsets or time-varying fields.
        time_invariant: the entry point's name when it needs the model beyond step ``N``.
        update: the fields an estimator learns: absent ``B, b, D, d`` among them start at
            zero.
        allow_diffuse: the entry point accepts ``inf`` on the diagonal of a concrete ``P0``
            (exact diffuse initialisation, :mod:`jaxssm._schedules.diffuse`); otherwise such
            a ``P0`` is an error that names the entry points that do.

    Returns:
        :class:`Prepared` ``(params, ys, inputs, schedule)``.

    Raises:
        ValueError, TypeError: the first bad argument, in the order above, with the message
            of the check that failed.
    """
    if method is not None:
        if schedule is not None:
            raise TypeError("prologue takes method= or schedule=, not both")
        schedule = _schedule.resolve(method, steady_state, form)
    params = validate_params(params, check_values=check_values, allow_diffuse=allow_diffuse)
    if plain is not None:
        check_plain_model(params, plain)
    if ys is not None:
        ys = validate_observations(ys, params, allow_batch=allow_batch)
        shape = ys
    elif num_steps is not None:
        check_time_varying_length(params, num_steps, "num_steps")
        shape = jax.ShapeDtypeStruct((num_steps, params.H.shape[-2]), params.A.dtype)
    else:
        shape = None
    if time_invariant is not None:
        check_time_invariant(params, time_invariant)
    if update:
        params = _model.start_absent(params, update, inputs)
    if shape is not None:
        inputs = validate_inputs(inputs, params, shape)
    elif inputs is not None:
        raise TypeError("prologue checks inputs against ys or num_steps; neither was given")
    return Prepared(params, ys, inputs, schedule)
