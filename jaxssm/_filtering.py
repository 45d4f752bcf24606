"""Sequential Kalman filter (``lax.scan``) and the log-likelihood entry point."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxssm import steps
from jaxssm._model import LGSSM, validate_observations, validate_params

__all__ = ["FilterResult", "kalman_filter", "log_likelihood"]


class FilterResult(NamedTuple):
    """Output of a Kalman filter over ``k = 0..N``.

    Attributes:
        means: filtered means ``E[x_k | y_1:k]``, ``[N+1, D]``; row 0 is ``m0``.
        covs: filtered covariances, ``[N+1, D, D]``; row 0 is ``P0``.
        pred_means: predicted means ``E[x_k | y_1:k-1]`` for ``k = 1..N``, ``[N, D]``.
        pred_covs: predicted covariances for ``k = 1..N``, ``[N, D, D]``.
        log_likelihood: ``log p(y_1:N)``, a scalar.
    """

    means: jax.Array
    covs: jax.Array
    pred_means: jax.Array
    pred_covs: jax.Array
    log_likelihood: jax.Array


def _filter(params: LGSSM, ys: jax.Array) -> FilterResult:
    """Unchecked filter body (shared by the public function and the EM/MLE loops)."""

    def body(carry, y):
        mean, cov, ll = carry
        pred = steps.predict(mean, cov, params.A, params.Q)
        upd = steps.update(pred.mean, pred.cov, params.H, params.R, y)
        return (upd.mean, upd.cov, ll + upd.log_likelihood), (
            upd.mean,
            upd.cov,
            pred.mean,
            pred.cov,
        )

    init = (params.m0, params.P0, jnp.zeros((), params.m0.dtype))
    (_, _, ll), (means, covs, pred_means, pred_covs) = jax.lax.scan(body, init, ys)
    means = jnp.concatenate([params.m0[None], means], axis=0)
    covs = jnp.concatenate([params.P0[None], covs], axis=0)
    return FilterResult(means, covs, pred_means, pred_covs, ll)


def _filter_by_schedule(params: LGSSM, ys: jax.Array, schedule: str) -> FilterResult:
    from jaxssm import _schedules

    return _schedules.filter_fn(schedule)(params, ys)


def _log_likelihood_by_schedule(params: LGSSM, ys: jax.Array, schedule: str) -> jax.Array:
    from jaxssm import _schedules

    return _schedules.log_likelihood_fn(schedule)(params, ys)


_filter_jit = jax.jit(_filter_by_schedule, static_argnames="schedule")
_log_likelihood_jit = jax.jit(_log_likelihood_by_schedule, static_argnames="schedule")

def kalman_filter(params: LGSSM, ys: ArrayLike, *, steady_state: bool = True) -> FilterResult:
    """Kalman filter as one ``jax.lax.scan`` over ``y_1..y_N``.

    Works under ``jit``, ``vmap`` (over params and/or ``ys``) and ``grad``; the dtype of the
    results follows the inputs. Shapes and dtypes are checked at trace time; when the
    parameters are concrete, ``P0``, ``Q`` and ``R`` are also checked to be symmetric positive
    definite.

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``y_1..y_N``, ``[N, Dy]``, N >= 1.
        steady_state: use the steady-state fast path (default ``True``): the data-independent
            covariance recursion runs until it has converged to round-off (relative change
            below ``1e4 * eps``, within 1,000 steps), then only the means run, with the
            converged gains (``O(N D^2)`` instead of ``O(N D^3)``). The results equal the full
            recursion's to round-off; when the covariances do not converge within the bound,
            or the series is short, the full recursion runs instead (decided on device, so it
            works under ``jit``/``vmap``/``grad``). ``False`` always runs the full recursion.

    Returns:
        :class:`FilterResult` with ``means [N+1, D]``, ``covs [N+1, D, D]``,
        ``pred_means [N, D]``, ``pred_covs [N, D, D]`` and ``log_likelihood []``.

    References:
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorem 4.2.
    """
    from jaxssm._schedules import resolve

    schedule = resolve("sequential", steady_state)
    params = validate_params(params)
    ys = validate_observations(ys, params)
    return _filter_jit(params, ys, schedule=schedule)


def log_likelihood(
    params: LGSSM, ys: ArrayLike, *, method: str = "sequential", steady_state: bool = True
) -> jax.Array:
    """Log marginal likelihood ``log p(y_1:N)`` of the model.

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``[N, Dy]``.
        method: ``"sequential"`` (``lax.scan``) or ``"parallel"``
            (``lax.associative_scan``); both give the same value up to round-off.
        steady_state: with ``method="sequential"``, use the steady-state fast path (default;
            see :func:`kalman_filter`). Ignored by ``method="parallel"``.

    Returns:
        A scalar with the dtype of the inputs.
    """
    from jaxssm._schedules import resolve

    schedule = resolve(method, steady_state)
    params = validate_params(params)
    ys = validate_observations(ys, params)
    return _log_likelihood_jit(params, ys, schedule=schedule)
