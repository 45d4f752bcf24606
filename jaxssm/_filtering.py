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


_filter_jit = jax.jit(_filter)
# Only the scalar leaves the compiled function, so XLA drops the stored moments.
_log_likelihood_jit = jax.jit(lambda params, ys: _filter(params, ys).log_likelihood)


def kalman_filter(params: LGSSM, ys: ArrayLike) -> FilterResult:
    """Kalman filter as one ``jax.lax.scan`` over ``y_1..y_N``.

    Works under ``jit``, ``vmap`` (over params and/or ``ys``) and ``grad``; the dtype of the
    results follows the inputs. Shapes and dtypes are checked at trace time; when the
    parameters are concrete, ``P0``, ``Q`` and ``R`` are also checked to be symmetric positive
    definite.

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``y_1..y_N``, ``[N, Dy]``, N >= 1.

    Returns:
        :class:`FilterResult` with ``means [N+1, D]``, ``covs [N+1, D, D]``,
        ``pred_means [N, D]``, ``pred_covs [N, D, D]`` and ``log_likelihood []``.

    References:
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorem 4.2.
    """
    params = validate_params(params)
    ys = validate_observations(ys, params)
    return _filter_jit(params, ys)


def _check_method(method: str) -> None:
    if method not in ("sequential", "parallel"):
        raise ValueError(f"method must be 'sequential' or 'parallel', got {method!r}")


def log_likelihood(params: LGSSM, ys: ArrayLike, *, method: str = "sequential") -> jax.Array:
    """Log marginal likelihood ``log p(y_1:N)`` of the model.

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``[N, Dy]``.
        method: ``"sequential"`` (``lax.scan``) or ``"parallel"``
            (``lax.associative_scan``); both give the same value up to round-off.

    Returns:
        A scalar with the dtype of the inputs.
    """
    _check_method(method)
    params = validate_params(params)
    ys = validate_observations(ys, params)
    if method == "parallel":
        from jaxssm._parallel import _parallel_log_likelihood_jit

        return _parallel_log_likelihood_jit(params, ys)
    return _log_likelihood_jit(params, ys)
