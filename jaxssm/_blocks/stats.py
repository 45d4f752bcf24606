r"""EM sufficient statistics from smoothed moments, for one sequence or pooled over a batch.

The statistics (:class:`~jaxssm.SufficientStats`) are sums over ``k = 1..N`` of per-step
terms. :func:`from_sums` forms them from the covariance sums and the smoothed means, so that
each schedule supplies the sums its own way: the full recursions sum ``[N+1, D, D]``
arrays (:func:`from_smoother`), the steady-state path adds transient sums to
``count x`` its converged terms. The sums of outer products of means and observations are
``[D, N] @ [N, D]`` products.

Missing entries (NaN in ``ys``): the missing observations are latent like the states, so the
statistics of ``y`` become conditional expectations given the observed entries,
``B = (1/N) sum_k E[y_k x_k^T | y_obs]`` and ``D = (1/N) sum_k E[y_k y_k^T | y_obs]``
(Shumway and Stoffer, *Time Series Analysis and Its Applications*, section 6.4), computed with
the current ``H, R``; the M-step's closed forms are then unchanged and each EM iteration
still cannot lower ``log p(y_obs)``. Trailing all-NaN rows are not part of the sequence: the
sums run to the last row with an observed entry, and ``num_steps`` is that length, so a
ragged batch padded with NaN rows pools as sequences of their own lengths.

Inputs and offsets: the schedules run on ``ys - e`` (:func:`jaxssm._base.model.reduce`), so the
statistics functions take the observation offsets ``e [N, Dy]`` and add them back to the
(imputed) observations, and the augmented inputs ``v [N, Du + 1]`` for the sums ``U``,
``XU``, ``XpU`` and ``YU`` of :class:`~jaxssm.SufficientStats`; both ``None`` for the plain
model, whose statistics are then exactly those of the plain sums.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._base.linalg import LAPACK, symmetrize
from jaxssm._base.types import SmootherResult, SufficientStats

__all__ = [
    "data_sums",
    "from_sums",
    "from_smoother",
    "from_sums_missing",
    "imputation_step",
    "observed_length",
    "pool",
]


def _input_sums(means, ys, v, weights, scale) -> dict:
    """Return the input sums ``U, XU, XpU, YU`` of ``v [N, p]``; ``{}`` for ``v = None``."""
    if v is None:
        return {}
    vw = v if weights is None else v * weights[:, None]
    return {
        "U": symmetrize(vw.T @ v) * scale,
        "XU": means[1:].T @ vw * scale,
        "XpU": means[:-1].T @ vw * scale,
        "YU": ys.T @ vw * scale,
    }


def data_sums(ys: jax.Array, v: jax.Array | None) -> dict:
    """Return the statistics that depend on the data alone (``ys`` with every entry observed).

    ``D = (1/N) sum_k y_k y_k^T`` and, with augmented inputs ``v``, ``U = (1/N) sum_k v_k
    v_k^T`` and ``YU = (1/N) sum_k y_k v_k^T``: what :func:`from_sums` computes for them at
    any parameters (it adds the offsets back, so its ``y`` is the data). An EM loop computes
    them once, outside the loop (XLA does not move them out of the loop's conditionals), and
    uses them in place of the E-step's own. For a batch ``ys [B, N, Dy]`` (``v [B, N, Du +
    1]``) they are pooled as :func:`pool` pools sequences of equal length: sums over all
    ``B N`` steps over ``B N``. With a missing entry ``D`` depends on ``H, R``; do not use it.
    """
    y2 = ys.reshape(-1, ys.shape[-1])  # all B N steps
    steps = y2.shape[0]
    scale = 1.0 / steps
    out = {"D": symmetrize(y2.T @ y2) / steps}  # the arithmetic of from_sums and _input_sums
    if v is not None:
        v2 = v.reshape(-1, v.shape[-1])
        out["U"] = symmetrize(v2.T @ v2) * scale
        out["YU"] = y2.T @ v2 * scale
    return out


def from_sums(
    cov_sum_now: jax.Array,
    cov_sum_prev: jax.Array,
    cross_sum: jax.Array,
    means: jax.Array,
    ys: jax.Array,
    P0_smoothed: jax.Array,
    e: jax.Array | None = None,
    v: jax.Array | None = None,
) -> SufficientStats:
    """Statistics of one sequence (unchecked, jittable).

    Args:
        cov_sum_now: ``sum_{k=1..N} P_k^s``, ``[D, D]``.
        cov_sum_prev: ``sum_{k=0..N-1} P_k^s``, ``[D, D]``.
        cross_sum: ``sum_{k=1..N} P_k^s G_{k-1}^T``, ``[D, D]``.
        means: smoothed means ``m_k^s``, ``k = 0..N``, ``[N+1, D]``.
        ys: ``[N, Dy]`` (shifted by ``-e`` when ``e`` is given).
        P0_smoothed: ``P_0^s``, ``[D, D]``.
        e: observation offsets ``[N, Dy]`` to add back to ``ys``, or ``None``.
        v: augmented inputs ``[N, Du + 1]``, or ``None``.
    """
    n = ys.shape[0]
    if e is not None:
        ys = ys + e
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
        **_input_sums(means, ys, v, None, 1.0 / n),
    )


def observed_length(ys: jax.Array) -> jax.Array:
    """Return the 1-based index of the last row of ``ys [N, Dy]`` with an observed entry, or 0."""
    any_obs = jnp.any(~jnp.isnan(ys), axis=-1)
    idx = jnp.arange(1, ys.shape[0] + 1, dtype=jnp.int32)
    return jnp.max(jnp.where(any_obs, idx, 0))


def _imputed_moments(y, mean, cov, H, R):
    """``E[y | y_obs]`` and the conditional covariances ``Cov(y, x)``, ``Cov(y)`` at one step.

    With the observed set ``O`` and the missing set ``M``, the observation noise of ``M``
    given that of ``O`` has mean ``F r_O`` with ``F = R_MO R_OO^{-1}`` and covariance
    ``R_MM - F R_OM``; the missing ``y_M = H_M x + r_M`` is therefore, given the data,
    ``(H_M - F H_O) x + F y_O + noise``. Written at full size with zero rows and columns
    (``Rt = mask_observation(y, H, R).R`` is ``R_OO`` on ``O`` and ``I`` on ``M``):
    ``F = (I - O) R O Rt^{-1} O``, ``J = (I - O) H - F H``,
    ``E[y] = y_O + (I - O) H m + F (y_O - H m)``, ``Cov(y, x) = J P``,
    ``Cov(y) = J P J^T + (I - O) R (I - O) - F R (I - O)``. Observed rows are exact data.
    """
    obs = steps.mask_observation(y, H, R)
    o = obs.observed.astype(R.dtype)
    miss = 1.0 - o
    Rt_inv = LAPACK.cho_solve(LAPACK.cholesky(obs.R), jnp.diag(o))  # Rt^{-1} O
    F = miss[:, None] * (R @ (o[:, None] * Rt_inv))
    Hm = H @ mean
    y_hat = obs.y + miss * Hm + F @ (obs.y - Hm)
    J = miss[:, None] * H - F @ H
    JP = J @ cov
    cov_yy = JP @ J.T + (miss[:, None] * R - F @ R) * miss[None, :]
    return y_hat, JP, symmetrize(cov_yy)


def _from_smoother_missing(smoothed: SmootherResult, ys, H, R, e=None, v=None) -> SufficientStats:
    """:func:`from_smoother` for ``ys`` with NaN entries (see the module docstring)."""
    covs, means = smoothed.covs, smoothed.means
    N = ys.shape[0]
    n = observed_length(ys)
    w = (jnp.arange(1, N + 1, dtype=jnp.int32) <= n).astype(means.dtype)  # step k = 1..N

    Dy, D = H.shape[-2:]
    zeros = (jnp.zeros((Dy, D), means.dtype), jnp.zeros((Dy, Dy), means.dtype))
    H_steps = H if H.ndim == 3 else None  # time-varying: one per step
    R_steps = R if R.ndim == 3 else None

    def body(carry, inputs):
        # Rows without a missing entry are data: only rows with one pay for the imputation.
        y, m, P, wk, Hk, Rk = inputs
        Hk = H if Hk is None else Hk
        Rk = R if Rk is None else Rk
        y_hat, cov_yx, cov_yy = imputation_step(y, m, P, Hk, Rk)
        return (carry[0] + wk * cov_yx, carry[1] + wk * cov_yy), y_hat

    inputs = (ys, means[1:], covs[1:], w, H_steps, R_steps)
    (cov_yx, cov_yy), y_hat = jax.lax.scan(body, zeros, inputs)
    wc = w[:, None, None]
    cross = jnp.sum(jax.vmap(lambda c, g: c @ g.T)(covs[1:], smoothed.gains) * wc, axis=0)
    return from_sums_missing(
        jnp.sum(covs[1:] * wc, axis=0),
        jnp.sum(covs[:-1] * wc, axis=0),
        cross,
        means,
        y_hat,
        cov_yx,
        cov_yy,
        w,
        n,
        covs[0],
        e,
        v,
    )


def imputation_step(y, mean, cov, H, R):
    """One row's ``(E[y], Cov(y, x), Cov(y))`` given the data: zeros for a fully observed row.

    A ``lax.cond``, so rows without a missing entry cost nothing but the test.
    """
    Dy, D = H.shape
    zeros = (jnp.zeros((Dy, D), cov.dtype), jnp.zeros((Dy, Dy), cov.dtype))
    return jax.lax.cond(
        jnp.any(jnp.isnan(y)),
        lambda: _imputed_moments(y, mean, cov, H, R),
        lambda: (y, *zeros),
    )


def from_sums_missing(
    cov_sum_now,
    cov_sum_prev,
    cross_sum,
    means,
    y_hat,
    cov_yx,
    cov_yy,
    weights,
    length,
    P0s,
    e=None,
    v=None,
) -> SufficientStats:
    """Statistics of one sequence with missing entries from weighted sums (unchecked).

    Args:
        cov_sum_now: ``sum_k w_k P_k^s`` over ``k = 1..N``.
        cov_sum_prev: ``sum_k w_k P_{k-1}^s``.
        cross_sum: ``sum_k w_k P_k^s G_{k-1}^T``.
        means: smoothed means ``[N+1, D]``.
        y_hat: ``E[y_k | y_obs]``, ``[N, Dy]``.
        cov_yx: ``sum_k w_k Cov(y_k, x_k | y_obs)``.
        cov_yy: ``sum_k w_k Cov(y_k | y_obs)``.
        weights: ``w_k = [k <= length]``, ``[N]``.
        length: the observed length (int32).
        P0s: ``P_0^s``.
        e: observation offsets ``[N, Dy]`` to add back to ``y_hat``, or ``None``.
        v: augmented inputs ``[N, Du + 1]``, or ``None``.
    """
    w = weights
    scale = 1.0 / jnp.maximum(length, 1).astype(means.dtype)
    if e is not None:
        y_hat = y_hat + e
    now, prev = means[1:] * w[:, None], means[:-1]
    y_w = y_hat * w[:, None]
    return SufficientStats(
        Sigma=symmetrize(cov_sum_now + now.T @ means[1:]) * scale,
        Phi=symmetrize(cov_sum_prev + (prev * w[:, None]).T @ prev) * scale,
        B=(y_w.T @ means[1:] + cov_yx) * scale,
        C=(cross_sum + now.T @ prev) * scale,
        D=symmetrize(y_w.T @ y_hat + cov_yy) * scale,
        m0_smoothed=means[0],
        P0_smoothed=P0s,
        num_steps=length,
        **_input_sums(means, y_hat, v, w, scale),
    )


def from_smoother(
    smoothed: SmootherResult,
    ys: jax.Array,
    H: jax.Array,
    R: jax.Array,
    e: jax.Array | None = None,
    v: jax.Array | None = None,
) -> SufficientStats:
    """Statistics of one sequence from a full :class:`~jaxssm.SmootherResult`.

    The lag-one cross-covariances are ``Cov(x_k, x_{k-1} | y) = P_k^s G_{k-1}^T``. ``H, R``
    are the parameters the smoother ran with (``[N, ...]`` when time-varying); they enter
    only when ``ys`` has NaN entries (a ``lax.cond``: a fully observed series takes the
    plain sums, bitwise as before). ``e`` and ``v``: see the module docstring.
    """
    return jax.lax.cond(
        jnp.any(jnp.isnan(ys)),
        lambda: _from_smoother_missing(smoothed, ys, H, R, e, v),
        lambda: _from_smoother_observed(smoothed, ys, e, v),
    )


def _from_smoother_observed(smoothed: SmootherResult, ys, e=None, v=None) -> SufficientStats:
    """:func:`from_smoother` for a fully observed ``ys``."""
    covs = smoothed.covs
    # A vmapped product summed over time: faster than the equivalent einsum on CPU (the
    # benchmark pages, "Smaller measurements").
    cross = jnp.sum(jax.vmap(lambda c, g: c @ g.T)(covs[1:], smoothed.gains), axis=0)
    return from_sums(
        jnp.sum(covs[1:], axis=0),
        jnp.sum(covs[:-1], axis=0),
        cross,
        smoothed.means,
        ys,
        covs[0],
        e,
        v,
    )


def pool(stats: SufficientStats) -> SufficientStats:
    """Pool per-sequence statistics with a leading batch axis ``[B, ...]``.

    The normalised sums are averaged over sequences with weights ``num_steps_b / sum_b
    num_steps_b`` (the plain mean when all lengths are equal, bitwise), so that sequences of
    different observed lengths pool as the sum over all their steps; the initial-state
    moments are pooled as in :class:`~jaxssm.SufficientStats`' docstring, so that the M-step
    maximises the joint objective.
    """
    m0 = jnp.mean(stats.m0_smoothed, axis=0)
    dev = stats.m0_smoothed - m0[None, :]  # [B, D]
    P0 = jnp.mean(stats.P0_smoothed, axis=0) + dev.T @ dev / dev.shape[0]
    lengths = stats.num_steps
    total = jnp.sum(lengths)
    weights = lengths.astype(stats.Sigma.dtype) / jnp.maximum(total, 1).astype(stats.Sigma.dtype)

    def average(x):
        if x is None:
            return None
        weighted = jnp.tensordot(weights, x, axes=1)
        return jax.lax.cond(
            jnp.all(lengths == lengths[0]), lambda: jnp.mean(x, axis=0), lambda: weighted
        )

    return SufficientStats(
        Sigma=average(stats.Sigma),
        Phi=average(stats.Phi),
        B=average(stats.B),
        C=average(stats.C),
        D=average(stats.D),
        m0_smoothed=m0,
        P0_smoothed=symmetrize(P0),
        num_steps=total,
        U=average(stats.U),
        XU=average(stats.XU),
        XpU=average(stats.XpU),
        YU=average(stats.YU),
    )
