r"""Per-step algebra of the Kalman filter and the Rauch-Tung-Striebel smoother.

Every schedule in jaxssm (the sequential scan, the steady-state fast path, the
associative-scan elements) is built from these functions; they are public so that user
code can reuse them. Each acts on one time step and is unbatched: use :func:`jax.vmap`.

Each step comes in two halves, because the schedules need them apart:

* the **covariance half** (:func:`predict_cov`, :func:`update_cov`, :func:`smoother_gain`,
  :func:`smooth_cov`) does not depend on the data; the steady-state path runs it only until
  it converges;
* the **mean half** (:func:`predict_mean`, :func:`whitened_innovation`, :func:`update_mean`,
  :func:`log_normal_whitened`, :func:`smooth_mean`) runs at every step.

:func:`predict`, :func:`update` and :func:`smooth_step` compose the two halves.

Covariance updates are computed in a form that is symmetric by construction and then
symmetrised again to remove round-off asymmetry. No jitter is added and no matrix is
inverted: positive-definite systems are solved through Cholesky factors. The functions that
factor or solve take ``la``, the linear algebra to use (:mod:`jaxssm._base.linalg`; the default
calls LAPACK, the associative-scan schedule passes a form that is safe to vmap on CPU).

References:
    S. Sarkka, *Bayesian Filtering and Smoothing*, Cambridge University Press (2013),
    Theorem 4.2 (Kalman filter) and Theorem 8.2 (RTS smoother).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxssm._base.linalg import LAPACK, Linalg, pivot_tolerance, psd_solve, symmetrize

__all__ = [
    "LOG_2PI",
    "Gaussian",
    "CovUpdate",
    "MaskedObservation",
    "UpdateResult",
    "SmoothStepResult",
    "symmetrize",
    "predict_mean",
    "predict_cov",
    "predict",
    "mask_observation",
    "innovation_chol",
    "update_cov",
    "kalman_gain",
    "whitened_innovation",
    "update_mean",
    "log_normal_whitened",
    "update",
    "smoother_gain",
    "smooth_mean",
    "smooth_cov",
    "smooth_step",
]

#: ``log(2 pi)``.
LOG_2PI = math.log(2.0 * math.pi)


class Gaussian(NamedTuple):
    """A Gaussian's moments: ``mean [D]`` and ``cov [D, D]``."""

    mean: jax.Array
    cov: jax.Array


class CovUpdate(NamedTuple):
    """Covariance half of a measurement update.

    Attributes:
        chol: lower Cholesky factor ``L`` of the innovation covariance
            ``S = H P^- H^T + R``, ``[Dy, Dy]``.
        obs_factor: ``W = L^{-1} H P^-``, ``[Dy, D]``.
        cov: filtered covariance ``P = P^- - W^T W``, ``[D, D]``.
    """

    chol: jax.Array
    obs_factor: jax.Array
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


# --- time update ------------------------------------------------------------------------------


def predict_mean(mean: jax.Array, A: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """Return the predicted mean ``A m + b``, ``[D]``.

    ``b`` is the step's state offset ``B u_k + b``, ``[D]``, or ``None`` for none.
    """
    return A @ mean if b is None else A @ mean + b


def predict_cov(cov: jax.Array, A: jax.Array, Q: jax.Array) -> jax.Array:
    """Return the predicted covariance ``A P A^T + Q``, symmetrised, ``[D, D]``."""
    return symmetrize(A @ cov @ A.T + Q)


def predict(
    mean: jax.Array, cov: jax.Array, A: jax.Array, Q: jax.Array, b: jax.Array | None = None
) -> Gaussian:
    """Time update: moments of ``x_k`` given those of ``x_{k-1}``.

    Args:
        mean: ``m_{k-1}``, ``[D]``.
        cov: ``P_{k-1}``, ``[D, D]``.
        A: transition matrix ``[D, D]``.
        Q: process-noise covariance ``[D, D]``.
        b: the step's state offset ``B u_k + b``, ``[D]``, or ``None``.

    Returns:
        ``Gaussian(A m + b, A P A^T + Q)``.
    """
    return Gaussian(predict_mean(mean, A, b), predict_cov(cov, A, Q))


# --- measurement update -----------------------------------------------------------------------


class MaskedObservation(NamedTuple):
    """An observation with its missing entries masked out, at fixed shapes.

    Attributes:
        y: ``y`` with missing entries set to 0, ``[Dy]``.
        H: ``H`` with the rows of missing entries set to 0, ``[Dy, D]``.
        R: ``R`` with the rows and columns of missing entries replaced by those of the
            identity, ``[Dy, Dy]``.
        observed: which entries are observed, bool ``[Dy]``.
        num_observed: how many, in the dtype of ``y`` (a scalar).
    """

    y: jax.Array
    H: jax.Array
    R: jax.Array
    observed: jax.Array
    num_observed: jax.Array


def mask_observation(y: jax.Array, H: jax.Array, R: jax.Array) -> MaskedObservation:
    r"""Mask the NaN entries of ``y`` so that an update conditions on the observed ones only.

    With ``O`` the set of observed entries, the masked model observes ``y_O = H_O x + r_O``
    and, for every missing entry ``i``, a fictitious ``0 = 0 x + e_i`` with unit variance,
    independent of the rest. Then ``S = H P H^T + R`` is, up to a permutation, the block
    diagonal ``diag(S_OO, I)``: its Cholesky factor is that of ``S_OO`` on the observed
    entries and the identity on the missing ones, the whitened innovation is 0 there, and
    every update function of this module returns the moments conditioned on ``y_O`` alone,
    with the same shapes as for a full observation (so it jits and vmaps). The fictitious
    entries contribute nothing to ``log |S|`` and ``z^T z``; pass ``num_observed`` to
    :func:`log_normal_whitened` for the constant. A fully observed ``y`` comes back
    unchanged (bitwise), an all-NaN ``y`` gives a pure prediction step.

    The NaNs are replaced with :func:`jax.numpy.where`, so gradients with respect to the
    parameters and the observed entries are finite.

    Args:
        y: observation ``[Dy]``, NaN where missing.
        H: observation matrix ``[Dy, D]``.
        R: observation-noise covariance ``[Dy, Dy]``.

    Returns:
        :class:`MaskedObservation` ``(y, H, R, observed, num_observed)``.
    """
    observed = ~jnp.isnan(y)
    both = observed[:, None] & observed[None, :]
    eye = jnp.eye(y.shape[-1], dtype=R.dtype)
    return MaskedObservation(
        y=jnp.where(observed, y, jnp.zeros((), y.dtype)),
        H=jnp.where(observed[:, None], H, jnp.zeros((), H.dtype)),
        R=jnp.where(both, R, eye),
        observed=observed,
        num_observed=jnp.sum(observed).astype(y.dtype),
    )


def innovation_chol(cov: jax.Array, H: jax.Array, R: jax.Array, la: Linalg = LAPACK) -> jax.Array:
    """Return the lower Cholesky factor ``L`` of ``S = H P^- H^T + R``, ``[Dy, Dy]``."""
    return la.cholesky(symmetrize(H @ cov @ H.T + R))


def update_cov(cov: jax.Array, H: jax.Array, R: jax.Array, la: Linalg = LAPACK) -> CovUpdate:
    r"""Covariance half of the measurement update.

    With ``S = H P^- H^T + R = L L^T`` and ``W = L^{-1} H P^-``: ``P = P^- - W^T W``.

    Args:
        cov: predicted covariance ``P^-``, ``[D, D]``.
        H: observation matrix ``[Dy, D]``.
        R: observation-noise covariance ``[Dy, Dy]``.
        la: the linear algebra to use.

    Returns:
        :class:`CovUpdate` ``(L, W, P)``.
    """
    L = innovation_chol(cov, H, R, la)
    W = la.solve_lower(L, H @ cov)
    return CovUpdate(L, W, symmetrize(cov - W.T @ W))


def kalman_gain(chol: jax.Array, obs_factor: jax.Array, la: Linalg = LAPACK) -> jax.Array:
    """Return the Kalman gain ``K = P^- H^T S^{-1} = (L^{-T} W)^T``, ``[D, Dy]``."""
    return la.solve_lower_t(chol, obs_factor).T


def whitened_innovation(
    mean: jax.Array, y: jax.Array, H: jax.Array, chol: jax.Array, la: Linalg = LAPACK
) -> jax.Array:
    """Return ``z = L^{-1} (y - H m^-)``, the innovation whitened by ``S``'s factor, ``[Dy]``."""
    return la.solve_lower(chol, (y - H @ mean)[:, None])[:, 0]


def update_mean(mean: jax.Array, obs_factor: jax.Array, z: jax.Array) -> jax.Array:
    """Mean half of the measurement update: ``m = m^- + W^T z``, ``[D]``."""
    return mean + obs_factor.T @ z


def log_normal_whitened(
    z: jax.Array, chol: jax.Array, num_observed: jax.Array | None = None
) -> jax.Array:
    """``log N(y; mu, S)`` from ``z = L^{-1} (y - mu)`` and ``S = L L^T``: a scalar.

    ``-z^T z / 2 - sum log diag L - n log(2 pi) / 2`` with ``n = num_observed`` (default
    ``Dy``): after :func:`mask_observation`, the density of the observed entries.

    Args:
        z: whitened residual ``[Dy]``.
        chol: lower Cholesky factor ``L`` of ``S``, ``[Dy, Dy]``.
        num_observed: how many entries the density is over (a scalar), or ``None`` for all.

    Returns:
        The log-density, a scalar.
    """
    n = z.shape[-1] if num_observed is None else num_observed
    return -0.5 * (z @ z) - jnp.sum(jnp.log(jnp.diagonal(chol))) - 0.5 * n * LOG_2PI


def update(
    mean: jax.Array,
    cov: jax.Array,
    H: jax.Array,
    R: jax.Array,
    y: jax.Array,
    la: Linalg = LAPACK,
) -> UpdateResult:
    r"""Measurement update with one observation, through the Cholesky factor of ``S``.

    With ``S = H P H^T + R = L L^T``, ``W = L^{-1} H P`` and ``z = L^{-1} (y - H m)``:
    ``m^+ = m + W^T z``, ``P^+ = P - W^T W`` and
    ``log p(y) = -z^T z / 2 - sum log diag L - Dy log(2 pi) / 2``. NaN entries of ``y`` are
    missing: the update conditions on the observed entries (:func:`mask_observation`) and
    ``log p`` is their density (0 and an unchanged state for an all-NaN ``y``).

    Args:
        mean: predicted mean ``m^-``, ``[D]``.
        cov: predicted covariance ``P^-``, ``[D, D]``.
        H: observation matrix ``[Dy, D]``.
        R: observation-noise covariance ``[Dy, Dy]``.
        y: observation ``[Dy]``, NaN where missing.
        la: the linear algebra to use.

    Returns:
        :class:`UpdateResult` with the filtered moments and the log predictive density of ``y``.
    """
    obs = mask_observation(y, H, R)
    half = update_cov(cov, obs.H, obs.R, la)
    z = whitened_innovation(mean, obs.y, obs.H, half.chol, la)
    log_lik = log_normal_whitened(z, half.chol, obs.num_observed)
    return UpdateResult(update_mean(mean, half.obs_factor, z), half.cov, log_lik)


# --- smoothing --------------------------------------------------------------------------------


def smoother_gain(
    cov: jax.Array, next_pred_cov: jax.Array, A: jax.Array, la: Linalg = LAPACK
) -> jax.Array:
    r"""Return the RTS gain ``G_k = P_k A^T (P_{k+1}^-)^{-1}``, ``[D, D]``.

    A Cholesky solve when ``P_{k+1}^-`` is positive definite: every pivot of its factor
    above the pivot rule of :func:`jaxssm._base.linalg.pivot_tolerance` for the equilibrated
    matrix (``D eps`` times its diagonal entry, independent of the units of each state
    component). Otherwise (a singular predicted covariance: singular ``Q`` or ``P0``,
    noise-free components) a solve that is exact on its range,
    ``G_k = P_k A^T (P_{k+1}^-)^g`` with a generalised inverse built on the same rule
    (:func:`jaxssm._base.linalg.psd_solve`): ``P_k A^T`` always lies in that range, so the
    smoothed moments and the cross-covariances ``P_{k+1}^s G_k^T`` are exact. The choice is
    a ``lax.cond`` (under ``vmap`` both branches run); the generalised-inverse branch calls
    no LAPACK kernel, whatever ``la`` is.

    Args:
        cov: filtered covariance ``P_k``, ``[D, D]``.
        next_pred_cov: predicted covariance ``P_{k+1}^-``, ``[D, D]``.
        A: transition matrix of step ``k + 1``, ``[D, D]``.
        la: the linear algebra of the Cholesky branch.

    Returns:
        ``G_k``, ``[D, D]``.
    """
    C = A @ cov
    L = la.cholesky(next_pred_cov)
    pivots = jnp.diagonal(L)
    ok = jnp.all(pivots * pivots > pivot_tolerance(next_pred_cov, equilibrate=True))
    return jax.lax.cond(
        ok,
        lambda: la.cho_solve(L, C).T,
        lambda: psd_solve(next_pred_cov, C).T,
    )


def smooth_mean(
    mean: jax.Array, next_pred_mean: jax.Array, next_mean: jax.Array, gain: jax.Array
) -> jax.Array:
    """Return ``m_k^s = m_k + G_k (m_{k+1}^s - m_{k+1}^-)``, ``[D]``."""
    return mean + gain @ (next_mean - next_pred_mean)


def smooth_cov(
    cov: jax.Array, next_pred_cov: jax.Array, next_cov: jax.Array, gain: jax.Array
) -> jax.Array:
    """Return ``P_k^s = P_k + G_k (P_{k+1}^s - P_{k+1}^-) G_k^T``, symmetrised, ``[D, D]``."""
    return symmetrize(cov + gain @ (next_cov - next_pred_cov) @ gain.T)


def smooth_step(
    filt_mean: jax.Array,
    filt_cov: jax.Array,
    pred_mean: jax.Array,
    pred_cov: jax.Array,
    next_mean: jax.Array,
    next_cov: jax.Array,
    A: jax.Array,
    la: Linalg = LAPACK,
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
        la: the linear algebra to use.

    Returns:
        :class:`SmoothStepResult` with ``m_k^s``, ``P_k^s`` and ``G_k``.
    """
    gain = smoother_gain(filt_cov, pred_cov, A, la)
    return SmoothStepResult(
        smooth_mean(filt_mean, pred_mean, next_mean, gain),
        smooth_cov(filt_cov, pred_cov, next_cov, gain),
        gain,
    )
