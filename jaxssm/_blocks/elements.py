r"""Associative elements of the Kalman filter and the RTS smoother, and their operators.

The filter and the smoother are each an all-prefix "sum" of per-step elements under an
associative operator (Sarkka and Garcia-Fernandez, 2021). This module holds one element
(one step) and one combination (one pair); the schedules map them over time and scan them
(:mod:`jaxssm._schedules.parallel`, :mod:`jaxssm._schedules.chunked`).

**Filtering element** ``k`` (``k = 1..N``) represents ``p(x_k | x_{k-1}, y_k)`` together with
the likelihood of ``x_{k-1}`` given ``y_k``:

.. math::

    p(x_k | x_{k-1}, y_k) = N(x_k; A_k x_{k-1} + b_k, C_k), \qquad
    p(y_k | x_{k-1}) \propto N_I(x_{k-1}; \eta_k, J_k)

(``N_I`` in information form). With ``S = H Q H^T + R`` and ``K = Q H^T S^{-1}``:
``A_k = (I - K H) A``, ``b_k = K y_k``, ``C_k = (I - K H) Q``,
``eta_k = A^T H^T S^{-1} y_k``, ``J_k = A^T H^T S^{-1} H A``. A state offset ``c_k`` (the
step's ``B u_k + b``) makes it the update of ``N(A x + c_k, Q)``: ``b_k = c_k + K (y_k - H
c_k)`` and ``eta_k`` from ``y_k - H c_k``. The first element conditions on the known prior
instead: ``A_1 = 0``, ``(b_1, C_1)`` are the ordinary predict and update of ``(m0, P0)`` with
``y_1``, ``eta_1 = 0``, ``J_1 = 0``. Missing entries (NaN) are masked with
:func:`jaxssm.steps.mask_observation` (zero rows of ``H``, unit noise), so the element of an
all-NaN step is the pure prediction ``(A, c, Q, 0, 0)``.

**Smoothing element** ``k`` (``k = 0..N``) represents ``p(x_k | x_{k+1}, y_{1:k}) =
N(x_k; E_k x_{k+1} + g_k, L_k)``: ``E_k`` is the RTS gain ``G_k``,
``g_k = m_k - G_k m_{k+1}^-`` and ``L_k = P_k - G_k P_{k+1}^- G_k^T``, i.e. one backward RTS
step (:func:`jaxssm.steps.smooth_step`) taken from a zero "next" mean and covariance. The
last element is the final filtered distribution (``E_N = 0``).

The per-step algebra is that of :mod:`jaxssm.steps` with the linear algebra
:data:`jaxssm._base.linalg.BATCHED` (safe to vmap over time on CPU). No matrix is inverted:
the innovation and predicted covariances are factored by Cholesky, and the ``I + C_i J_j``
of the filtering operator, which is not symmetric, is solved with partial pivoting. Every
covariance-like output is symmetrised. The functions are unbatched and unchecked: callers
vmap them (an operator for ``lax.associative_scan`` as ``jax.vmap(filter_combine)``) inside
``jit``.

References:
    S. Sarkka and A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian smoothers",
    IEEE Transactions on Automatic Control 66(1):299-306, 2021.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._base.linalg import BATCHED as LA
from jaxssm._base.linalg import symmetrize
from jaxssm._base.types import LGSSM

__all__ = [
    "FilterElement",
    "SmoothElement",
    "filter_element",
    "first_filter_element",
    "smooth_element",
    "log_likelihood_step",
    "filter_combine",
    "smooth_combine",
]


class FilterElement(NamedTuple):
    r"""A filtering element (or a combination of consecutive ones).

    Represents ``N(x_k; A x_j + b, C)`` and the likelihood ``N_I(x_j; eta, J)`` of the
    observations it covers, as a function of the state ``x_j`` before its first step.

    Attributes:
        A: ``[D, D]``.
        b: ``[D]``.
        C: ``[D, D]``, symmetric positive semi-definite.
        eta: ``[D]``.
        J: ``[D, D]``, symmetric positive semi-definite.
    """

    A: jax.Array
    b: jax.Array
    C: jax.Array
    eta: jax.Array
    J: jax.Array


class SmoothElement(NamedTuple):
    r"""A smoothing element (or a combination): ``N(x_k; E x_l + g, L)`` for a later ``x_l``.

    Attributes:
        E: ``[D, D]``.
        g: ``[D]``.
        L: ``[D, D]``, symmetric positive semi-definite.
    """

    E: jax.Array
    g: jax.Array
    L: jax.Array


# --- elements (one step) ----------------------------------------------------------------------


def filter_element(params: LGSSM, y: jax.Array) -> FilterElement:
    r"""Build the generic filtering element (``k >= 2``): ``x_k`` given ``y_k`` and ``x_{k-1}``.

    ``(b, C)`` is the measurement update of ``N(c, Q)`` with ``y``
    (:func:`jaxssm.steps.update_cov` and its mean half); ``A``, ``eta`` and ``J`` share its
    Cholesky factor ``S = H Q H^T + R = L L^T``: with ``W = L^{-1} H Q``, ``V = L^{-1} H A``
    and ``z = L^{-1} (y - H c)``, ``(I - K H) A = A - W^T V``, ``b = c + W^T z``,
    ``C = Q - W^T W``, ``eta = V^T z`` and ``J = V^T V``.

    Args:
        params: one step's :class:`~jaxssm.LGSSM`: ``A``, ``Q``, ``H``, ``R`` and the state
            offset ``b`` (``c``, ``[D]``, or ``None`` for none) of step ``k``; ``m0`` gives
            the shape and dtype of the state.
        y: ``y_k``, ``[Dy]``, NaN where missing.

    Returns:
        The :class:`FilterElement` of step ``k``.
    """
    A, Q, c = params.A, params.Q, params.b
    if c is not None:  # the step's state offset: the update of N(A x + c, Q) with y
        y = y - params.H @ c  # NaN entries stay NaN
    obs = steps.mask_observation(y, params.H, params.R)
    H, y = obs.H, obs.y
    half = steps.update_cov(Q, H, obs.R, LA)
    Vz = LA.solve_lower(half.chol, jnp.concatenate([H @ A, y[:, None]], axis=1))
    V, z = Vz[:, :-1], Vz[:, -1]
    W = half.obs_factor
    return FilterElement(
        A=A - W.T @ V,
        b=steps.update_mean(jnp.zeros_like(params.m0) if c is None else c, W, z),
        C=half.cov,
        eta=V.T @ z,
        J=symmetrize(V.T @ V),
    )


def first_filter_element(params: LGSSM, y: jax.Array) -> FilterElement:
    """Build the first filtering element: predict and update ``(m0, P0)``, no ``x_0`` term.

    Args:
        params: the first step's :class:`~jaxssm.LGSSM` (with ``m0``, ``P0``).
        y: ``y_1``, ``[Dy]``, NaN where missing.

    Returns:
        ``FilterElement(0, m_1, P_1, 0, 0)`` with the filtered moments of step 1.
    """
    pred = steps.predict(params.m0, params.P0, params.A, params.Q, params.b)
    upd = steps.update(pred.mean, pred.cov, params.H, params.R, y, LA)
    zeros = jnp.zeros_like(params.A)
    return FilterElement(zeros, upd.mean, upd.cov, jnp.zeros_like(params.m0), zeros)


def smooth_element(
    mean: jax.Array,
    cov: jax.Array,
    next_pred_mean: jax.Array,
    next_pred_cov: jax.Array,
    A: jax.Array,
) -> SmoothElement:
    """Build the smoothing element of step ``k < N``: an RTS step from a zero next state.

    ``E_k = G_k``, ``g_k = m_k + G_k (0 - m_{k+1}^-)`` and
    ``L_k = P_k + G_k (0 - P_{k+1}^-) G_k^T`` (:func:`jaxssm.steps.smoother_gain`,
    :func:`~jaxssm.steps.smooth_mean`, :func:`~jaxssm.steps.smooth_cov`).

    Args:
        mean: filtered mean ``m_k``, ``[D]``.
        cov: filtered covariance ``P_k``, ``[D, D]``.
        next_pred_mean: predicted mean ``m_{k+1}^-``, ``[D]``.
        next_pred_cov: predicted covariance ``P_{k+1}^-``, ``[D, D]``.
        A: transition matrix of step ``k + 1``, ``[D, D]``.

    Returns:
        The :class:`SmoothElement` ``(G_k, g_k, L_k)``.
    """
    gain = steps.smoother_gain(cov, next_pred_cov, A, LA)
    return SmoothElement(
        E=gain,
        g=steps.smooth_mean(mean, next_pred_mean, jnp.zeros_like(mean), gain),
        L=steps.smooth_cov(cov, next_pred_cov, jnp.zeros_like(cov), gain),
    )


def log_likelihood_step(
    mean: jax.Array, cov: jax.Array, H: jax.Array, R: jax.Array, y: jax.Array
) -> jax.Array:
    """``log N(y; H m^-, H P^- H^T + R)`` of the observed entries of ``y`` (a scalar).

    The log-likelihood term of :func:`jaxssm.steps.update`, without the update.

    Args:
        mean: predicted mean ``m^-``, ``[D]``.
        cov: predicted covariance ``P^-``, ``[D, D]``.
        H: ``[Dy, D]``.
        R: ``[Dy, Dy]``.
        y: ``[Dy]``, NaN where missing (an all-NaN ``y`` gives 0).

    Returns:
        The log predictive density of the observed entries of ``y``.
    """
    obs = steps.mask_observation(y, H, R)
    chol = steps.innovation_chol(cov, obs.H, obs.R, LA)
    z = steps.whitened_innovation(mean, obs.y, obs.H, chol, LA)
    return steps.log_normal_whitened(z, chol, obs.num_observed)


# --- associative operators (one pair) ---------------------------------------------------------


def filter_combine(earlier: FilterElement, later: FilterElement) -> FilterElement:
    r"""Combine two consecutive filtering elements (``earlier`` covers the earlier steps).

    With ``M = I + C_i J_j`` (``i`` earlier, ``j`` later), and ``(I + J_j C_i)^{-1} = M^{-T}``:

    .. math::

        A = A_j M^{-1} A_i, \quad b = A_j M^{-1} (b_i + C_i \eta_j) + b_j, \quad
        C = A_j M^{-1} C_i A_j^T + C_j,

        \eta = A_i^T M^{-T} (\eta_j - J_j b_i) + \eta_i, \quad
        J = A_i^T M^{-T} J_j A_i + J_i.

    One solve with ``M`` gives everything: ``X = M^{-1} [A_i, b_i + C_i eta_j, C_i]``, and
    ``A_i^T M^{-T} = (M^{-1} A_i)^T`` is the first block of ``X`` transposed. The identity
    is ``(I, 0, 0, 0, 0)``.

    Args:
        earlier: the element of the earlier steps ``i``.
        later: the element of the steps ``j`` right after.

    Returns:
        The :class:`FilterElement` of the steps of both.
    """
    Ai, bi, Ci, etai, Ji = earlier
    Aj, bj, Cj, etaj, Jj = later
    D = Ai.shape[-1]
    eye = jnp.eye(D, dtype=Ai.dtype)
    X = LA.solve(eye + Ci @ Jj, jnp.concatenate([Ai, (bi + Ci @ etaj)[:, None], Ci], axis=1))
    MinvAi, Minvb, MinvC = X[:, :D], X[:, D], X[:, D + 1 :]
    return FilterElement(
        A=Aj @ MinvAi,
        b=Aj @ Minvb + bj,
        C=symmetrize(Aj @ MinvC @ Aj.T + Cj),
        eta=MinvAi.T @ (etaj - Jj @ bi) + etai,
        J=symmetrize(MinvAi.T @ Jj @ Ai + Ji),
    )


def smooth_combine(later: SmoothElement, earlier: SmoothElement) -> SmoothElement:
    r"""Combine two consecutive smoothing elements.

    ``lax.associative_scan(..., reverse=True)`` runs over time backwards, so its first
    argument is the *later* element ``j``, conditioning on ``x`` at the later time, and the
    second the earlier one ``i``:

    .. math::

        E = E_i E_j, \quad g = E_i g_j + g_i, \quad L = E_i L_j E_i^T + L_i.

    The identity is ``(I, 0, 0)``.

    Args:
        later: the element of the later steps ``j``.
        earlier: the element of the steps ``i`` right before.

    Returns:
        The :class:`SmoothElement` of the steps of both.
    """
    return SmoothElement(
        E=earlier.E @ later.E,
        g=earlier.E @ later.g + earlier.g,
        L=symmetrize(earlier.E @ later.L @ earlier.E.T + earlier.L),
    )
