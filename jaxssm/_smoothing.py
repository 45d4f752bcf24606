"""Sequential Rauch-Tung-Striebel smoother (reverse ``lax.scan``)."""

from __future__ import annotations

from typing import NamedTuple

import jax
from jax.typing import ArrayLike

from jaxssm import steps
from jaxssm._filtering import FilterResult
from jaxssm._model import LGSSM, validate_observations, validate_params

__all__ = ["SmootherResult", "rts_smoother", "rts_smoother_from_filter"]


class SmootherResult(NamedTuple):
    """Output of a smoother over ``k = 0..N``.

    Attributes:
        means: smoothed means ``E[x_k | y_1:N]``, ``[N+1, D]``.
        covs: smoothed covariances, ``[N+1, D, D]``.
        gains: smoother gains ``G_k``, ``k = 0..N-1``, ``[N, D, D]``, with
            ``m_k^s = m_k + G_k (m_{k+1}^s - A m_k)``. The lag-one cross-covariance is
            ``Cov(x_{k+1}, x_k | y_1:N) = covs[k+1] @ gains[k].T``.
        log_likelihood: ``log p(y_1:N)``, a scalar.
    """

    means: jax.Array
    covs: jax.Array
    gains: jax.Array
    log_likelihood: jax.Array


def _smooth(params: LGSSM, filtered: FilterResult) -> SmootherResult:
    """Unchecked backward pass over a :class:`FilterResult`."""

    def body(carry, inputs):
        next_mean, next_cov = carry
        filt_mean, filt_cov, pred_mean, pred_cov = inputs
        out = steps.smooth_step(
            filt_mean, filt_cov, pred_mean, pred_cov, next_mean, next_cov, params.A
        )
        return (out.mean, out.cov), out

    last = (filtered.means[-1], filtered.covs[-1])
    inputs = (filtered.means[:-1], filtered.covs[:-1], filtered.pred_means, filtered.pred_covs)
    _, out = jax.lax.scan(body, last, inputs, reverse=True)
    means = jax.numpy.concatenate([out.mean, filtered.means[-1:]], axis=0)
    covs = jax.numpy.concatenate([out.cov, filtered.covs[-1:]], axis=0)
    return SmootherResult(means, covs, out.gain, filtered.log_likelihood)


_smooth_jit = jax.jit(_smooth)
def _filter_smooth(params: LGSSM, ys: jax.Array, schedule: str) -> SmootherResult:
    from jaxssm import _schedules

    return _schedules.smoother_fn(schedule)(params, ys)


_filter_smooth_jit = jax.jit(_filter_smooth, static_argnames="schedule")


def rts_smoother(params: LGSSM, ys: ArrayLike, *, steady_state: bool = True) -> SmootherResult:
    """Kalman filter followed by a Rauch-Tung-Striebel backward pass (both ``lax.scan``).

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``y_1..y_N``, ``[N, Dy]``.
        steady_state: use the steady-state fast path (default ``True``; see
            :func:`~jaxssm.kalman_filter`): the filter and smoother covariances and gains are
            computed until they converge to round-off at both ends of the series and reused
            in between, so only the means run over the whole series. Results equal the full
            recursion's to round-off, with an automatic fallback to it. ``False`` always
            runs the full recursion.

    Returns:
        :class:`SmootherResult` with ``means [N+1, D]``, ``covs [N+1, D, D]``,
        ``gains [N, D, D]`` and ``log_likelihood []``; row 0 is ``p(x_0 | y_1:N)``.

    References:
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorem 8.2.
    """
    from jaxssm._schedules import resolve

    schedule = resolve("sequential", steady_state)
    params = validate_params(params)
    ys = validate_observations(ys, params)
    return _filter_smooth_jit(params, ys, schedule=schedule)


def rts_smoother_from_filter(params: LGSSM, filtered: FilterResult) -> SmootherResult:
    """RTS backward pass over the output of :func:`~jaxssm.kalman_filter`.

    For a caller who already filtered with the same ``params`` (sequential or parallel
    filter) and should not filter twice.

    Args:
        params: the :class:`~jaxssm.LGSSM` the filter ran with.
        filtered: a :class:`~jaxssm.FilterResult`.

    Returns:
        :class:`SmootherResult`, as :func:`rts_smoother`.
    """
    params = validate_params(params)
    if not isinstance(filtered, FilterResult):
        raise TypeError(f"filtered must be a jaxssm.FilterResult, got {type(filtered).__name__}")
    D = params.A.shape[0]
    n = filtered.pred_means.shape[0] if filtered.pred_means.ndim == 2 else None
    if n is None or filtered.means.shape != (n + 1, D) or filtered.pred_covs.shape != (n, D, D):
        raise ValueError(
            "filtered must hold means [N+1, D], covs [N+1, D, D], pred_means [N, D] and "
            f"pred_covs [N, D, D] with D = {D}, got means {tuple(filtered.means.shape)}, "
            f"pred_means {tuple(filtered.pred_means.shape)}, "
            f"pred_covs {tuple(filtered.pred_covs.shape)}"
        )
    return _smooth_jit(params, filtered)
