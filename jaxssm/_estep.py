r"""EM E-step: the exercise's sufficient statistics as a jitted reduction over time.

The statistics of DESIGN.md ("EM") are sums over ``k = 1..N`` of per-step terms,

.. math::

    (P_k^s + m_k^s m_k^{sT},\ P_{k-1}^s + m_{k-1}^s m_{k-1}^{sT},\ y_k m_k^{sT},\
    P_k^s G_{k-1}^T + m_k^s m_{k-1}^{sT},\ y_k y_k^T).

The sums of outer products of means and observations are computed as matrix products over
the time axis, the covariances are summed over it, and the lag-one cross-covariances
``P_k^s G_{k-1}^T = Cov(x_k, x_{k-1} | y_1:N)`` come from one per-step function vmapped over
``k`` and summed; all of it inside the same compiled function as the smoother.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxssm import _schedules
from jaxssm._model import LGSSM, validate_observations, validate_params
from jaxssm._smoothing import SmootherResult
from jaxssm._stats import SufficientStats
from jaxssm.steps import symmetrize

__all__ = ["e_step"]


def _lag_one_cross_cov(cov: jax.Array, prev_gain: jax.Array) -> jax.Array:
    """``Cov(x_k, x_{k-1} | y_1:N) = P_k^s G_{k-1}^T`` for one step, ``[D, D]``."""
    return cov @ prev_gain.T


def _sequence_stats(smoothed: SmootherResult, ys: jax.Array) -> SufficientStats:
    """Statistics of one sequence from its smoother output (unchecked, jittable).

    Args:
        smoothed: smoother output for ``ys`` (``means [N+1, D]``, ``covs [N+1, D, D]``,
            ``gains [N, D, D]``).
        ys: ``[N, Dy]``.
    """
    n = ys.shape[0]
    means, covs = smoothed.means, smoothed.covs
    now, prev = means[1:], means[:-1]  # m_k^s and m_{k-1}^s for k = 1..N, [N, D]
    # Sums of outer products are matrix products: sum_k a_k b_k^T = a^T b with a, b [N, .].
    # (Measured at N = 44,484, D = 21 on a 2-core CPU: 2-8% less CPU time per E-step than a
    # vmapped per-step function returning all five terms, summed.)
    cross = jnp.sum(jax.vmap(_lag_one_cross_cov)(covs[1:], smoothed.gains), axis=0)
    return SufficientStats(
        Sigma=symmetrize(jnp.sum(covs[1:], axis=0) + now.T @ now) / n,
        Phi=symmetrize(jnp.sum(covs[:-1], axis=0) + prev.T @ prev) / n,
        B=ys.T @ now / n,
        C=(cross + now.T @ prev) / n,
        D=symmetrize(ys.T @ ys) / n,
        m0_smoothed=means[0],
        P0_smoothed=covs[0],
        num_steps=jnp.asarray(n, dtype=jnp.int32),
    )


def _pool(stats: SufficientStats) -> SufficientStats:
    """Pool per-sequence statistics with a leading batch axis ``[B, ...]`` (equal lengths).

    The normalised sums average over sequences; the initial-state moments are pooled as in
    ``SufficientStats``' docstring, so that the M-step maximises the joint objective.
    """
    m0 = jnp.mean(stats.m0_smoothed, axis=0)
    dev = stats.m0_smoothed - m0[None, :]  # [B, D]
    P0 = jnp.mean(stats.P0_smoothed, axis=0) + dev.T @ dev / dev.shape[0]
    return SufficientStats(
        Sigma=jnp.mean(stats.Sigma, axis=0),
        Phi=jnp.mean(stats.Phi, axis=0),
        B=jnp.mean(stats.B, axis=0),
        C=jnp.mean(stats.C, axis=0),
        D=jnp.mean(stats.D, axis=0),
        m0_smoothed=m0,
        P0_smoothed=symmetrize(P0),
        num_steps=jnp.sum(stats.num_steps),
    )


def _e_step(
    params: LGSSM, ys: jax.Array, method: str = _schedules.SEQUENTIAL
) -> tuple[SufficientStats, jax.Array]:
    """Unchecked E-step for ``ys [N, Dy]`` or ``[B, N, Dy]`` (used by the EM loop).

    ``method`` is an internal schedule name (:mod:`jaxssm._schedules`): ``"sequential"``,
    ``"steady"`` or ``"parallel"``.
    """
    one = _schedules.stats_fn(method)
    if ys.ndim == 2:
        return one(params, ys)
    stats, lls = jax.vmap(one, in_axes=(None, 0))(params, ys)
    return _pool(stats), jnp.sum(lls)


_e_step_jit = jax.jit(_e_step, static_argnames="method")


def _log_likelihood(
    params: LGSSM, ys: jax.Array, method: str = _schedules.SEQUENTIAL
) -> jax.Array:
    """Unchecked ``log p(y)`` for ``ys [N, Dy]`` or ``[B, N, Dy]`` (summed over sequences)."""
    one = _schedules.log_likelihood_fn(method)
    if ys.ndim == 2:
        return one(params, ys)
    return jnp.sum(jax.vmap(one, in_axes=(None, 0))(params, ys))


def e_step(
    params: LGSSM, ys: ArrayLike, *, method: str = "sequential", steady_state: bool = True
) -> tuple[SufficientStats, jax.Array]:
    r"""E-step of EM: RTS smoother, then the exercise's statistics (normalised by N).

    .. math::

        \Sigma = \tfrac1N \sum_{k=1}^N (P_k^s + m_k^s m_k^{sT}), \quad
        \Phi = \tfrac1N \sum_{k=1}^N (P_{k-1}^s + m_{k-1}^s m_{k-1}^{sT}), \quad
        B = \tfrac1N \sum_{k=1}^N y_k m_k^{sT},

        C = \tfrac1N \sum_{k=1}^N (P_k^s G_{k-1}^T + m_k^s m_{k-1}^{sT}), \quad
        D = \tfrac1N \sum_{k=1}^N y_k y_k^T.

    The sums over time are one compiled reduction (matrix products over the time axis for the
    outer products, a vmapped per-step product for the lag-one cross-covariances), inside the
    same compiled function as the smoother; a second call with the same shapes does not
    recompile.

    For a batch ``ys [B, N, Dy]`` (B sequences of equal length, independent given the
    parameters) the statistics are pooled: ``Sigma, Phi, B, C, D`` are sums over all
    ``B * N`` steps divided by ``B * N`` (``num_steps = B * N``), ``m0_smoothed`` is the average
    of the sequences' ``E[x_0 | y]`` and ``P0_smoothed = mean_b [P0s_b + (m0s_b - m0_smoothed)
    (m0s_b - m0_smoothed)^T]``, so that :func:`~jaxssm.m_step` returns the joint maximiser over
    all sequences. The returned log-likelihood is then the sum over sequences.

    Args:
        params: an :class:`~jaxssm.LGSSM` (``theta_n``, the parameters the smoother runs with).
        ys: observations ``[N, Dy]``, or a batch ``[B, N, Dy]``.
        method: ``"sequential"`` (``lax.scan``) or ``"parallel"`` (``lax.associative_scan``)
            smoother.
        steady_state: with ``method="sequential"``, use the steady-state fast path (default
            ``True``): covariances, gains and their sums are computed over the transients at
            both ends until they converge to round-off, the middle of the series contributes
            ``count x`` the converged terms, and only the means run over every step, so no
            ``[N, D, D]`` array is formed. Equal to the full recursion to round-off, with an
            automatic fallback to it (see :func:`~jaxssm.kalman_filter`).

    Returns:
        ``(stats, log_likelihood)``: a :class:`~jaxssm.SufficientStats` (``Sigma [D, D]``,
        ``Phi [D, D]``, ``B [Dy, D]``, ``C [D, D]``, ``D [Dy, Dy]``, ``m0_smoothed [D]``,
        ``P0_smoothed [D, D]``, ``num_steps []`` int32) and ``log p(y | params)``, a scalar.

    References:
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Section 12.3.3;
        R. H. Shumway and D. S. Stoffer (1982).
    """
    schedule = _schedules.resolve(method, steady_state)
    params = validate_params(params)
    ys = validate_observations(ys, params, allow_batch=True)
    return _e_step_jit(params, ys, method=schedule)
