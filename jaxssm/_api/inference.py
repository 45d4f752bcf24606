"""Public inference entry points: filter, smoother and log-likelihood.

Each checks its arguments (:func:`jaxssm._args.prologue.prologue`: the schedule first, then
shapes and dtypes at trace time, covariance values when concrete) and hands the resolved
schedule to the dispatcher (:mod:`jaxssm._schedules.dispatch`), which picks the schedule that
runs on the checked data, the time-sharded one included.
"""

from __future__ import annotations

import jax
from jax.typing import ArrayLike

from jaxssm._args.prologue import prologue
from jaxssm._base.types import LGSSM, FilterResult, SmootherResult
from jaxssm._schedules import dispatch as _dispatch

__all__ = ["kalman_filter", "rts_smoother", "rts_smoother_from_filter", "log_likelihood"]


def kalman_filter(
    params: LGSSM,
    ys: ArrayLike,
    *,
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
) -> FilterResult:
    """Kalman filter over ``y_1..y_N``.

    Works under ``jit``, ``vmap`` (over params and/or ``ys``) and ``grad``; the dtype of the
    results follows the inputs.

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``y_1..y_N``, ``[N, Dy]``, N >= 1; NaN marks a missing entry.
        inputs: ``u_1..u_N``, ``[N, Du]``: required when ``params`` has ``B`` or ``D``, an
            error otherwise.
        method: ``"sequential"`` (``lax.scan``) or ``"parallel"`` (``lax.associative_scan``,
            ``O(log N)`` span); the same results to round-off. With ``"parallel"``, a
            concrete ``ys`` sharded over time on a mesh axis runs the time-sharded schedule
            (:func:`jaxssm.sharding.time_sharding`).
        steady_state: ``None`` (default): the steady-state fast path on the sequential
            schedule for ``N >= 2048`` (the full associative scan with ``"parallel"``);
            ``True``: the fast path for any ``N`` that holds it, on ``"parallel"`` with its
            mean recursions as log-depth associative scans; ``False``: the full recursion.
            Exact to round-off either way; see "Schedules" in the README.

    Returns:
        :class:`~jaxssm.FilterResult` with ``means [N+1, D]``, ``covs [N+1, D, D]``,
        ``pred_means [N, D]``, ``pred_covs [N, D, D]`` and ``log_likelihood []``.

    Raises:
        ValueError: a bad ``method``, ``steady_state=True`` with a time-varying model, or a
            shape that does not match (the message names the argument and the expected shape).
        TypeError: a non-floating or mismatched dtype, or a non-bool ``steady_state``.

    References:
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorem 4.2; S. Sarkka and
        A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian smoothers", IEEE TAC
        66(1), 2021.
    """
    params, ys, inputs, schedule = prologue(
        params, ys, inputs, method=method, steady_state=steady_state
    )
    return _dispatch.filter(params, ys, schedule, inputs=inputs)


def rts_smoother(
    params: LGSSM,
    ys: ArrayLike,
    *,
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
) -> SmootherResult:
    """Kalman filter followed by a Rauch-Tung-Striebel backward pass.

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``y_1..y_N``, ``[N, Dy]``.
        inputs: as in :func:`~jaxssm.kalman_filter`.
        method: as in :func:`~jaxssm.kalman_filter`.
        steady_state: as in :func:`~jaxssm.kalman_filter`.

    Returns:
        :class:`~jaxssm.SmootherResult` with ``means [N+1, D]``, ``covs [N+1, D, D]``,
        ``gains [N, D, D]`` and ``log_likelihood []``; row 0 is ``p(x_0 | y_1:N)``.

    Raises:
        ValueError, TypeError: as :func:`~jaxssm.kalman_filter`.

    References:
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorem 8.2; Sarkka and
        Garcia-Fernandez (2021).
    """
    params, ys, inputs, schedule = prologue(
        params, ys, inputs, method=method, steady_state=steady_state
    )
    return _dispatch.smooth(params, ys, schedule, inputs=inputs)


def rts_smoother_from_filter(
    params: LGSSM, filtered: FilterResult, *, method: str = "sequential"
) -> SmootherResult:
    """RTS backward pass over the output of :func:`~jaxssm.kalman_filter`.

    For a caller who already filtered with the same ``params`` and should not filter twice.

    Args:
        params: the :class:`~jaxssm.LGSSM` the filter ran with.
        filtered: a :class:`~jaxssm.FilterResult`.
        method: ``"sequential"`` (a reverse ``lax.scan``) or ``"parallel"`` (a reverse
            ``lax.associative_scan``); the same result to round-off.

    Returns:
        :class:`~jaxssm.SmootherResult`, as :func:`~jaxssm.rts_smoother`.
    """
    params, _, _, schedule = prologue(params, method=method, steady_state=False)
    if not isinstance(filtered, FilterResult):
        raise TypeError(f"filtered must be a jaxssm.FilterResult, got {type(filtered).__name__}")
    D = params.A.shape[-1]
    n = filtered.pred_means.shape[0] if filtered.pred_means.ndim == 2 else None
    if n is None or filtered.means.shape != (n + 1, D) or filtered.pred_covs.shape != (n, D, D):
        raise ValueError(
            "filtered must hold means [N+1, D], covs [N+1, D, D], pred_means [N, D] and "
            f"pred_covs [N, D, D] with D = {D}, got means {tuple(filtered.means.shape)}, "
            f"pred_means {tuple(filtered.pred_means.shape)}, "
            f"pred_covs {tuple(filtered.pred_covs.shape)}"
        )
    return _dispatch.smooth_filtered(params, filtered, schedule)


def log_likelihood(
    params: LGSSM,
    ys: ArrayLike,
    *,
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
) -> jax.Array:
    """Log marginal likelihood ``log p(y_1:N)`` of the model.

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``[N, Dy]``, or a batch ``[B, N, Dy]`` of independent sequences
            (the sum of their log-likelihoods is returned).
        inputs: as in :func:`~jaxssm.kalman_filter` (``[B, N, Du]`` with a batch).
        method: as in :func:`~jaxssm.kalman_filter`.
        steady_state: as in :func:`~jaxssm.kalman_filter`.

    Returns:
        A scalar with the dtype of the inputs.

    Raises:
        ValueError, TypeError: as :func:`~jaxssm.kalman_filter`.
    """
    params, ys, inputs, schedule = prologue(
        params, ys, inputs, method=method, steady_state=steady_state, allow_batch=True
    )
    return _dispatch.log_likelihood(params, ys, schedule, inputs=inputs)
