r"""Per-step algebra of the square-root form: predict, masked update and RTS step on factors.

Every covariance is carried as a lower-triangular factor ``L`` with ``P = L L^T`` and
every step re-triangularises a block of factors with :func:`jaxssm._base.tria.tria` (a QR
factorisation), so the covariances it stands for are positive semi-definite by
construction, in any precision. Factors of the model's covariances (``Q``, ``R``, ``P0``,
which may be singular) come from :func:`jaxssm._base.linalg.psd_cholesky`. Each function
acts on one step and is unbatched.

* **Predict.** ``L^- = tria([A L, L_Q])``: ``L^- L^{-T} = A P A^T + Q``.
* **Update** (NaN entries of ``y`` masked by :func:`jaxssm.steps.mask_observation`)::

      tria([[L_R, H L^-], [0, L^-]]) = [[L_S, 0], [K L_S, L]]

  with ``S = H P^- H^T + R = L_S L_S^T``, the gain ``K = P^- H^T S^{-1}`` and ``L`` the
  filtered factor; ``z = L_S^{-1} (y - H m^-)``, ``m = m^- + (K L_S) z`` and the
  log-density ``-z^T z / 2 - sum log diag L_S - n log(2 pi) / 2`` of the observed entries.
* **RTS step**::

      tria([[A L_k, L_Q], [L_k, 0]]) = [[L^-_{k+1}, 0], [Y, Z]]

  with ``Y L^{-T}_{k+1} = P_k A^T``; where ``P^-_{k+1}`` is positive definite (the pivot
  rule of :func:`jaxssm.steps.smoother_gain`) ``Z Z^T = P_k - G_k P^-_{k+1} G_k^T``, the
  gain is ``G_k = Y (L^-_{k+1})^{-1}`` and ``L^s_k = tria([G_k L^s_{k+1}, Z])``. Where it is
  singular, the factor of the joint block is not unique (``Y`` may carry a component in the
  kernel of ``L^-_{k+1}``, and ``Z`` then misses it), so the step takes the gain from the
  solve that is exact on the range of ``P^-_{k+1}`` (:func:`jaxssm._base.linalg.psd_solve`)
  and the Joseph form ``L^s_k = tria([(I - G_k A) L_k, G_k L_Q, G_k L^s_{k+1}])``, which
  holds for any gain with ``G_k P^-_{k+1} = P_k A^T``.

References:
    S. Sarkka and L. Svensson, *Bayesian Filtering and Smoothing*, 2nd ed. (2023),
    section 6.6 and 12.4 (square-root Kalman filter and RTS smoother); A. Yaghoobi,
    S. Corenflos, S. Hassan, S. Sarkka, "Parallel square-root statistical linear
    regression for inference in nonlinear state space models", SIAM J. Sci. Comput. (2025).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._base.linalg import LAPACK, Linalg, pivot_tolerance, psd_cholesky, psd_solve, symmetrize
from jaxssm._base.tria import tria

__all__ = [
    "SqrtUpdate",
    "Innovation",
    "innovation",
    "SqrtSmoothStep",
    "factor",
    "predict_factor",
    "predict_factor_q",
    "update",
    "smooth_step",
    "smoother_gain",
]


class SqrtUpdate(NamedTuple):
    """Result of a square-root measurement update.

    Attributes:
        mean: filtered mean ``[D]``.
        chol: filtered factor ``L`` (``P = L L^T``), lower triangular ``[D, D]``.
        log_likelihood: the log predictive density of the observed entries, a scalar.
    """

    mean: jax.Array
    chol: jax.Array
    log_likelihood: jax.Array


class SqrtSmoothStep(NamedTuple):
    """Result of one backward square-root RTS step.

    Attributes:
        mean: smoothed mean ``m_k^s`` ``[D]``.
        chol: smoothed factor ``L_k^s``, lower triangular ``[D, D]``.
        gain: the smoother gain ``G_k`` ``[D, D]``.
    """

    mean: jax.Array
    chol: jax.Array
    gain: jax.Array


def factor(C: jax.Array) -> jax.Array:
    """Lower-triangular ``F`` with ``F F^T = C`` for a symmetric PSD ``C`` (singular allowed).

    :func:`jaxssm._base.linalg.psd_cholesky` of ``(C + C^T) / 2``, so that a gradient with
    respect to ``C`` is symmetric, as the covariance form's. Where ``C`` is singular, the
    derivative in a direction ``v v^T`` with ``v`` outside its range does not exist for any
    factor (``F`` moves like a square root there) and is dropped: a gradient at a singular
    ``C`` is exact for tangents ``dC`` with ``v^T dC v = 0`` on its kernel (those of
    ``C = L L^T`` moved through ``L``). :func:`predict_factor_q` takes ``Q``'s tangent from
    ``Q`` itself instead.
    """
    return psd_cholesky(symmetrize(C))


def predict_factor(chol: jax.Array, A: jax.Array, chol_Q: jax.Array, tri=tria) -> jax.Array:
    """Return ``tria([A L, L_Q])``, the factor of ``A L L^T A^T + L_Q L_Q^T``, ``[D, D]``.

    ``tri`` is the form of :func:`~jaxssm._base.tria.tria` to use (here and below:
    :func:`~jaxssm._base.tria.tria_batched` where the step is vmapped over time).
    """
    return tri(jnp.concatenate([A @ chol, chol_Q], axis=1))


@jax.custom_jvp
def predict_factor_q(chol: jax.Array, A: jax.Array, Q: jax.Array, chol_Q: jax.Array) -> jax.Array:
    """:func:`predict_factor` whose derivative takes ``Q`` itself, not its factor.

    ``chol_Q`` must be ``factor(Q)``; its tangent is not used. Where the predicted factor
    ``L^-`` is invertible (by the rule of :func:`jaxssm._base.tria.tria`'s JVP) the tangent
    is ``L^- Phi((L^-)^{-1} dP^- (L^-)^{-T})`` with
    ``dP^- = A dP A^T + dA P A^T + A P dA^T + dQ``: exact also for a singular ``Q`` moved out
    of its range (which no factor of ``Q`` can carry). Elsewhere it is the tangent through
    ``tria`` and ``chol_Q``'s own tangent.
    """
    return predict_factor(chol, A, chol_Q)


@predict_factor_q.defjvp
def _predict_factor_q_jvp(primals, tangents):
    chol, A, Q, chol_Q = primals
    dchol, dA, dQ, dchol_Q = tangents
    L, through_factor = jax.jvp(
        lambda c, a, lq: predict_factor(c, a, lq), (chol, A, chol_Q), (dchol, dA, dchol_Q)
    )
    n = L.shape[0]
    d = jnp.diagonal(L)
    invertible = jnp.all(d > n * float(jnp.finfo(L.dtype).eps) * jnp.max(d))
    safe = jnp.where(invertible, L, jnp.eye(n, dtype=L.dtype))
    P = chol @ chol.T
    dP = dchol @ chol.T
    APAt = A @ (dP + dP.T) @ A.T
    dPA = dA @ P @ A.T
    dpred = APAt + dPA + dPA.T + symmetrize(dQ)
    X = LAPACK.solve_lower(safe, LAPACK.solve_lower(safe, dpred).T)  # L^-1 dP^- L^-T
    phi = jnp.tril(X, -1) + 0.5 * jnp.diag(jnp.diagonal(X))
    return L, jnp.where(invertible, safe @ phi, through_factor)


class Innovation(NamedTuple):
    """The square-root innovation block of an update (:func:`innovation`).

    Attributes:
        H: ``H`` with the rows of missing entries zero ``[Dy, D]``.
        y: ``y`` with missing entries zero ``[Dy]``.
        chol_S: factor of the innovation covariance (identity on missing entries) ``[Dy, Dy]``.
        gain: ``K L_S`` (``K`` the Kalman gain) ``[D, Dy]``.
        chol: the filtered factor ``[D, D]``.
    """

    H: jax.Array
    y: jax.Array
    chol_S: jax.Array
    gain: jax.Array
    chol: jax.Array


def innovation(
    chol: jax.Array, H: jax.Array, chol_R: jax.Array, y: jax.Array, tri=tria
) -> Innovation:
    """Covariance half of :func:`update`: ``tria([[L_R', H L^-], [0, L^-]])`` and its blocks.

    Args:
        chol: predicted factor ``L^-`` ``[D, D]``.
        H: ``[Dy, D]``.
        chol_R: a factor of ``R`` ``[Dy, Dy]``.
        y: ``[Dy]``, NaN where missing.
        tri: the form of ``tria``.

    Returns:
        :class:`Innovation`.
    """
    Dy, D = H.shape
    observed = ~jnp.isnan(y)
    zero = jnp.zeros((), chol.dtype)
    y0 = jnp.where(observed, y, jnp.zeros((), y.dtype))
    H0 = jnp.where(observed[:, None], H, zero)
    fill = jnp.diag(jnp.where(observed, zero, jnp.ones((), chol.dtype)))
    top = jnp.concatenate([jnp.where(observed[:, None], chol_R, zero), fill, H0 @ chol], axis=1)
    bottom = jnp.concatenate([jnp.zeros((D, 2 * Dy), chol.dtype), chol], axis=1)
    T = tri(jnp.concatenate([top, bottom], axis=0))
    return Innovation(H0, y0, T[:Dy, :Dy], T[Dy:, :Dy], T[Dy:, Dy:])


def update(
    mean: jax.Array,
    chol: jax.Array,
    H: jax.Array,
    chol_R: jax.Array,
    y: jax.Array,
    tri=tria,
    la: Linalg = LAPACK,
) -> SqrtUpdate:
    """Square-root measurement update with one observation (NaN entries missing).

    The missing entries are masked as in :func:`jaxssm.steps.mask_observation` without
    refactoring ``R``: with ``O`` the 0/1 diagonal of the observed entries,
    ``[O L_R, I - O]`` is a factor of the masked ``R`` (``R_OO`` on the observed entries, the
    identity on the missing ones).

    Args:
        mean: predicted mean ``m^-`` ``[D]``.
        chol: predicted factor ``L^-`` ``[D, D]``.
        H: ``[Dy, D]``.
        chol_R: a factor of ``R`` (``L_R L_R^T = R``; singular allowed: the innovation
            covariance of the observed entries must be positive definite), ``[Dy, Dy]``.
        y: ``[Dy]``, NaN where missing.
        tri: the form of ``tria``.
        la: the linear algebra of the triangular solve.

    Returns:
        :class:`SqrtUpdate`.
    """
    inn = innovation(chol, H, chol_R, y, tri)
    z = la.solve_lower(inn.chol_S, (inn.y - inn.H @ mean)[:, None])[:, 0]
    num_observed = jnp.sum(~jnp.isnan(y)).astype(y.dtype)
    log_lik = steps.log_normal_whitened(z, inn.chol_S, num_observed)
    return SqrtUpdate(mean + inn.gain @ z, inn.chol, log_lik)


def smooth_step(
    mean: jax.Array,
    chol: jax.Array,
    next_pred_mean: jax.Array,
    next_mean: jax.Array,
    next_chol: jax.Array,
    A: jax.Array,
    chol_Q: jax.Array,
    tri=tria,
    la: Linalg = LAPACK,
) -> SqrtSmoothStep:
    """One backward square-root RTS step from ``k + 1`` to ``k``.

    Args:
        mean: filtered mean ``m_k`` ``[D]``.
        chol: filtered factor ``L_k`` ``[D, D]``.
        next_pred_mean: ``m^-_{k+1}`` ``[D]``.
        next_mean: smoothed mean ``m^s_{k+1}`` ``[D]``.
        next_chol: smoothed factor ``L^s_{k+1}`` ``[D, D]``.
        A: transition of step ``k + 1`` ``[D, D]``.
        chol_Q: factor of ``Q`` of step ``k + 1`` ``[D, D]``.
        tri: the form of ``tria``.
        la: the linear algebra of the triangular solve.

    Returns:
        :class:`SqrtSmoothStep`.
    """
    ok, chol_pred, Y, Z, safe = _joint(chol, A, chol_Q, tri)

    def regular():
        gain = la.solve_lower_t(safe, Y.T).T
        return gain, tri(jnp.concatenate([gain @ next_chol, Z], axis=1))

    def singular():
        gain = _range_gain(chol_pred, Y)
        blocks = [chol - gain @ (A @ chol), gain @ chol_Q, gain @ next_chol]
        return gain, tri(jnp.concatenate(blocks, axis=1))

    gain, chol_s = jax.lax.cond(ok, regular, singular)
    return SqrtSmoothStep(mean + gain @ (next_mean - next_pred_mean), chol_s, gain)


def _joint(chol: jax.Array, A: jax.Array, chol_Q: jax.Array, tri):
    """Return the RTS step's joint block ``tria([[A L_k, L_Q], [L_k, 0]])`` in parts.

    ``(ok, L^-, Y, Z, safe)``: ``ok`` whether ``P^-_{k+1}`` is positive definite by the pivot
    rule of :func:`jaxssm.steps.smoother_gain`, ``safe`` ``L^-`` where ``ok`` and the identity
    elsewhere.
    """
    D = chol.shape[0]
    top = jnp.concatenate([A @ chol, chol_Q], axis=1)
    bottom = jnp.concatenate([chol, jnp.zeros_like(chol)], axis=1)
    T = tri(jnp.concatenate([top, bottom], axis=0))
    chol_pred, Y, Z = T[:D, :D], T[D:, :D], T[D:, D:]
    d = jnp.diagonal(chol_pred)
    ok = jnp.all(d * d > pivot_tolerance(chol_pred @ chol_pred.T, equilibrate=True))
    safe = jnp.where(ok, chol_pred, jnp.eye(D, dtype=chol.dtype))
    return ok, chol_pred, Y, Z, safe


def _range_gain(chol_pred: jax.Array, Y: jax.Array) -> jax.Array:
    """Return the gain exact on the range of a singular ``P^-_{k+1} = L^- L^{-T}``."""
    return psd_solve(chol_pred @ chol_pred.T, chol_pred @ Y.T).T


def smoother_gain(
    chol: jax.Array, A: jax.Array, chol_Q: jax.Array, tri=tria, la: Linalg = LAPACK
) -> tuple[jax.Array, jax.Array]:
    """Return the RTS step's gain ``G_k`` and a factor ``C_k`` of its data-free part.

    ``C_k C_k^T = P_k - G_k P^-_{k+1} G_k^T`` (for a singular ``P^-_{k+1}`` in the Joseph
    form ``(I - G_k A) P_k (I - G_k A)^T + G_k Q G_k^T``), so that the smoothed factor of
    :func:`smooth_step` is ``L^s_k = tria([G_k L^s_{k+1}, C_k])``: the step with ``L^s_{k+1}``
    left free, for the steady-state schedule, whose gains do not depend on it. ``C_k`` is
    ``[Z, 0]`` where ``P^-_{k+1}`` is positive definite, ``[(I - G_k A) L_k, G_k L_Q]``
    elsewhere (:func:`smooth_step`'s two cases).

    Args:
        chol: filtered factor ``L_k`` ``[D, D]``.
        A: transition of step ``k + 1`` ``[D, D]``.
        chol_Q: factor of ``Q`` of step ``k + 1`` ``[D, D]``.
        tri: the form of ``tria``.
        la: the linear algebra of the triangular solve.

    Returns:
        ``(G_k [D, D], C_k [D, 2D])``.
    """
    ok, chol_pred, Y, Z, safe = _joint(chol, A, chol_Q, tri)

    def regular():
        return la.solve_lower_t(safe, Y.T).T, jnp.concatenate([Z, jnp.zeros_like(Z)], axis=1)

    def singular():
        gain = _range_gain(chol_pred, Y)
        return gain, jnp.concatenate([chol - gain @ (A @ chol), gain @ chol_Q], axis=1)

    return jax.lax.cond(ok, regular, singular)
