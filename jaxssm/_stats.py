r"""EM sufficient statistics from smoothed moments, for one sequence or pooled over a batch.

The statistics (:class:`~jaxssm.SufficientStats`) are sums over ``k = 1..N`` of per-step
terms. :func:`from_sums` forms them from the covariance sums and the smoothed means, so that
each schedule supplies the sums its own way: the full recursions sum ``[N+1, D, D]``
arrays (:func:`from_smoother`), the steady-state path adds transient sums to
``count x`` its converged terms. The sums of outer products of means and observations are
``[D, N] @ [N, D]`` products.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssm._linalg import symmetrize
from jaxssm._types import SmootherResult, SufficientStats

__all__ = ["from_sums", "from_smoother", "pool"]


def from_sums(
    cov_sum_now: jax.Array,
    cov_sum_prev: jax.Array,
    cross_sum: jax.Array,
    means: jax.Array,
    ys: jax.Array,
    P0_smoothed: jax.Array,
) -> SufficientStats:
    """Statistics of one sequence (unchecked, jittable).

    Args:
        cov_sum_now: ``sum_{k=1..N} P_k^s``, ``[D, D]``.
        cov_sum_prev: ``sum_{k=0..N-1} P_k^s``, ``[D, D]``.
        cross_sum: ``sum_{k=1..N} P_k^s G_{k-1}^T``, ``[D, D]``.
        means: smoothed means ``m_k^s``, ``k = 0..N``, ``[N+1, D]``.
        ys: ``[N, Dy]``.
        P0_smoothed: ``P_0^s``, ``[D, D]``.
    """
    n = ys.shape[0]
    now, prev = means[1:], means[:-1]
    mm_now = now.T @ now
    # sum_{k=0..N-1} m_k m_k^T differs from the sum over k = 1..N by two outer products.
    mm_prev = mm_now + jnp.outer(means[0], means[0]) - jnp.outer(means[-1], means[-1])
    return SufficientStats(
        Sigma=symmetrize(cov_sum_now + mm_now) / n,
        Phi=symmetrize(cov_sum_prev + mm_prev) / n,
        B=ys.T @ now / n,
        C=(cross_sum + now.T @ prev) / n,
        D=symmetrize(ys.T @ ys) / n,
        m0_smoothed=means[0],
        P0_smoothed=P0_smoothed,
        num_steps=jnp.asarray(n, dtype=jnp.int32),
    )


def from_smoother(smoothed: SmootherResult, ys: jax.Array) -> SufficientStats:
    """Statistics of one sequence from a full :class:`~jaxssm.SmootherResult`.

    The lag-one cross-covariances are ``Cov(x_k, x_{k-1} | y) = P_k^s G_{k-1}^T``.
    """
    covs = smoothed.covs
    # A vmapped product summed over time: 3.5x faster than the equivalent einsum on CPU at
    # N = 44,484, D = 21 (0.15 s against 0.54 s, measured side by side).
    cross = jnp.sum(jax.vmap(lambda c, g: c @ g.T)(covs[1:], smoothed.gains), axis=0)
    return from_sums(
        jnp.sum(covs[1:], axis=0), jnp.sum(covs[:-1], axis=0), cross, smoothed.means, ys, covs[0]
    )


def pool(stats: SufficientStats) -> SufficientStats:
    """Pool per-sequence statistics with a leading batch axis ``[B, ...]`` (equal lengths).

    The normalised sums average over sequences; the initial-state moments are pooled as in
    :class:`~jaxssm.SufficientStats`' docstring, so that the M-step maximises the joint
    objective.
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
