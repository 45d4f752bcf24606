r"""Per-step algebra of the Kalman filter and the Rauch-Tung-Striebel smoother.

Every driver in jaxssm (sequential ``lax.scan``, the time-parallel elements, the EM
statistics) is built from these functions; they are public so that user code can reuse
them. They act on one time step and are unbatched: use :func:`jax.vmap` for batches.

All covariance updates are computed in a form that is symmetric by construction and then
symmetrised again to remove round-off asymmetry. No jitter is added, and no matrix is
inverted: positive-definite systems are solved through Cholesky factors.

References:
    S. Sarkka, *Bayesian Filtering and Smoothing*, Cambridge University Press (2013),
    Theorem 4.2 (Kalman filter) and Theorem 8.2 (RTS smoother).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

__all__ = [
    "Gaussian",
    "UpdateResult",
    "SmoothStepResult",
    "symmetrize",
    "predict",
    "update",
    "smooth_step",
]

_LOG_2PI = 1.8378770664093453  # log(2 pi)


class Gaussian(NamedTuple):
    """A Gaussian's moments: ``mean [D]`` and ``cov [D, D]``."""

    mean: jax.Array
    cov: jax.Array


class UpdateResult(NamedTuple):
    """Result of a measurement update.

    Attributes:
        mean: filtered mean ``[D]``.
        cov: filtered covariance ``[D, D]``.
        log_likelihood: ``log N(y; H m^-, H P^- H^T + R)``, a scalar.
    """

    mean: jax.Array
    cov: jax.Array
    log_likelihood: jax.Array


class SmoothStepResult(NamedTuple):
    """Result of one backward RTS step.

    Attributes:
        mean: smoothed mean at step k ``[D]``.
        cov: smoothed covariance at step k ``[D, D]``.
        gain: smoother gain ``G_k = P_k A^T (P_{k+1}^-)^{-1}``, ``[D, D]``.
    """

    mean: jax.Array
    cov: jax.Array
    gain: jax.Array


def symmetrize(M: jax.Array) -> jax.Array:
    """Return ``(M + M^T) / 2`` (over the last two axes)."""
    return 0.5 * (M + jnp.swapaxes(M, -1, -2))


def predict(mean: jax.Array, cov: jax.Array, A: jax.Array, Q: jax.Array) -> Gaussian:
    """Time update: moments of ``x_k`` given those of ``x_{k-1}``.

    Args:
        mean: ``m_{k-1}``, ``[D]``.
        cov: ``P_{k-1}``, ``[D, D]``.
        A: transition matrix ``[D, D]``.
        Q: process-noise covariance ``[D, D]``.

    Returns:
        ``Gaussian(A m, A P A^T + Q)``.
    """
    return Gaussian(A @ mean, symmetrize(A @ cov @ A.T + Q))


def update(
    mean: jax.Array, cov: jax.Array, H: jax.Array, R: jax.Array, y: jax.Array
) -> UpdateResult:
    r"""Measurement update with one observation, through the Cholesky factor of ``S``.

    With ``S = H P H^T + R = L L^T``, ``W = L^{-1} H P`` and ``z = L^{-1} (y - H m)``:
    ``m^+ = m + W^T z``, ``P^+ = P - W^T W`` and
    ``log p(y) = -z^T z / 2 - sum log diag L - Dy log(2 pi) / 2``.

    Args:
        mean: predicted mean ``m^-``, ``[D]``.
        cov: predicted covariance ``P^-``, ``[D, D]``.
        H: observation matrix ``[Dy, D]``.
        R: observation-noise covariance ``[Dy, Dy]``.
        y: observation ``[Dy]``.

    Returns:
        :class:`UpdateResult` with the filtered moments and the log predictive density of ``y``.
    """
    HP = H @ cov
    S = symmetrize(HP @ H.T + R)
    L = jnp.linalg.cholesky(S)
    W = solve_triangular(L, HP, lower=True)
    z = solve_triangular(L, y - H @ mean, lower=True)
    new_mean = mean + W.T @ z
    new_cov = symmetrize(cov - W.T @ W)
    dy = y.shape[-1]
    log_lik = -0.5 * (z @ z) - jnp.sum(jnp.log(jnp.diagonal(L))) - 0.5 * dy * _LOG_2PI
    return UpdateResult(new_mean, new_cov, log_lik.astype(mean.dtype))


def smooth_step(
    filt_mean: jax.Array,
    filt_cov: jax.Array,
    pred_mean: jax.Array,
    pred_cov: jax.Array,
    next_mean: jax.Array,
    next_cov: jax.Array,
    A: jax.Array,
) -> SmoothStepResult:
    """One backward Rauch-Tung-Striebel step from ``k + 1`` to ``k``.

    Args:
        filt_mean: filtered mean ``m_k``, ``[D]``.
        filt_cov: filtered covariance ``P_k``, ``[D, D]``.
        pred_mean: predicted mean ``m_{k+1}^- = A m_k``, ``[D]``.
        pred_cov: predicted covariance ``P_{k+1}^-``, ``[D, D]``.
        next_mean: smoothed mean ``m_{k+1}^s``, ``[D]``.
        next_cov: smoothed covariance ``P_{k+1}^s``, ``[D, D]``.
        A: transition matrix ``[D, D]``.

    Returns:
        :class:`SmoothStepResult` with ``m_k^s``, ``P_k^s`` and ``G_k``.
    """
    chol = jnp.linalg.cholesky(pred_cov)
    gain = cho_solve((chol, True), A @ filt_cov).T
    mean = filt_mean + gain @ (next_mean - pred_mean)
    cov = symmetrize(filt_cov + gain @ (next_cov - pred_cov) @ gain.T)
    return SmoothStepResult(mean, cov, gain)
