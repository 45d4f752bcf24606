r"""Square-root associative elements of the Kalman filter and RTS smoother, and their operators.

The elements of :mod:`jaxssm._blocks.elements` with every covariance-like quantity carried
as a factor (Yaghoobi, Corenflos, Hassan and Sarkka): a filtering element is
``(A, b, U, eta, Z)`` with ``C = U U^T`` and ``J = Z Z^T``, a smoothing element
``(E, g, F)`` with ``L = F F^T``. Every factor is re-triangularised with
:func:`jaxssm._base.tria.tria_batched` (these functions are vmapped over time), so the
covariances the scan returns are positive semi-definite by construction.

**Generic filtering element** (``k >= 2``, state offset ``c``; missing entries masked as in
:func:`jaxssm._blocks.sqrt_steps.update`)::

    tria([[H L_Q, L_R'], [L_Q, 0]]) = [[L_S, 0], [G, U]]

with ``S = H Q H^T + R = L_S L_S^T`` (positive definite: the parallel schedule's condition),
``G = K L_S``; with ``V = L_S^{-1} H A`` and ``z = L_S^{-1} (y - H c)``: ``A_k = A - G V``,
``b = c + G z``, ``eta = V^T z`` and ``Z = tria(V^T)``. The first element is the square-root
predict and update of ``(m0, L_0)``: ``(0, m_1, L_1, 0, 0)``.

**Filtering operator** (``i`` earlier, ``j`` later)::

    tria([[U_i^T Z_j, I], [Z_j, 0]]) = [[X11, 0], [X21, X22]]

then ``(I + C_i J_j)^{-1} = I - U_i X11^{-T} X21^T`` (Woodbury; ``X11 X11^T = I + U_i^T J_j
U_i`` is positive definite) and

.. math::

    A = A_j (I - U_i X_{11}^{-T} X_{21}^T) A_i, \quad
    b = A_j (I - U_i X_{11}^{-T} X_{21}^T)(b_i + U_i U_i^T \eta_j) + b_j, \quad
    U = \operatorname{tria}([A_j U_i X_{11}^{-T}, U_j]),

    \eta = A_i^T (I - X_{21} X_{11}^{-1} U_i^T)(\eta_j - Z_j Z_j^T b_i) + \eta_i, \quad
    Z = \operatorname{tria}([A_i^T X_{22}, Z_i]).

**Smoothing element** ``k < N``: one square-root RTS step
(:func:`jaxssm._blocks.sqrt_steps.smooth_step`) from a zero next mean and factor, so
``(E, g, F) = (G_k, m_k - G_k m_{k+1}^-, F_k)``; the last is ``(0, m_N, L_N)``.
**Smoothing operator**: ``E = E_i E_j``, ``g = E_i g_j + g_i``, ``F = tria([E_i F_j, F_i])``.

References:
    A. Yaghoobi, S. Corenflos, S. Hassan and S. Sarkka, "Parallel square-root statistical
    linear regression for inference in nonlinear state space models", SIAM J. Sci. Comput.
    (2025), arXiv:2207.00426; S. Sarkka and A. F. Garcia-Fernandez, "Temporal
    parallelization of Bayesian smoothers", IEEE TAC 66(1), 2021.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxssm._base.linalg import BATCHED as LA
from jaxssm._base.tria import tria_batched as tri

__all__ = [
    "SqrtFilterElement",
    "SqrtSmoothElement",
    "filter_element",
    "filter_combine",
    "smooth_combine",
]


class SqrtFilterElement(NamedTuple):
    """A square-root filtering element: ``N(x_k; A x_j + b, U U^T)``, ``N_I(x_j; eta, Z Z^T)``.

    Attributes:
        A: ``[D, D]``.
        b: ``[D]``.
        U: ``[D, D]``, lower triangular.
        eta: ``[D]``.
        Z: ``[D, D]``, lower triangular.
    """

    A: jax.Array
    b: jax.Array
    U: jax.Array
    eta: jax.Array
    Z: jax.Array


class SqrtSmoothElement(NamedTuple):
    """A square-root smoothing element: ``N(x_k; E x_l + g, F F^T)``.

    Attributes:
        E: ``[D, D]``.
        g: ``[D]``.
        F: ``[D, D]``, lower triangular.
    """

    E: jax.Array
    g: jax.Array
    F: jax.Array


def filter_element(
    A: jax.Array,
    c: jax.Array | None,
    chol_Q: jax.Array,
    H: jax.Array,
    chol_R: jax.Array,
    y: jax.Array,
) -> SqrtFilterElement:
    """Build the generic square-root filtering element of one step (see the module docstring).

    Args:
        A: ``[D, D]``.
        c: the step's state offset ``[D]``, or ``None``.
        chol_Q: a factor of ``Q`` ``[D, D]``.
        H: ``[Dy, D]``.
        chol_R: a factor of ``R`` ``[Dy, Dy]``.
        y: ``[Dy]``, NaN where missing.

    Returns:
        The :class:`SqrtFilterElement`.
    """
    Dy, D = H.shape
    observed = ~jnp.isnan(y)
    zero = jnp.zeros((), A.dtype)
    H0 = jnp.where(observed[:, None], H, zero)
    r = jnp.where(observed, y, zero) if c is None else jnp.where(observed, y - H @ c, zero)
    fill = jnp.diag(jnp.where(observed, zero, jnp.ones((), A.dtype)))
    top = jnp.concatenate([jnp.where(observed[:, None], chol_R, zero), fill, H0 @ chol_Q], axis=1)
    bottom = jnp.concatenate([jnp.zeros((D, 2 * Dy), A.dtype), chol_Q], axis=1)
    T = tri(jnp.concatenate([top, bottom], axis=0))
    chol_S, G, U = T[:Dy, :Dy], T[Dy:, :Dy], T[Dy:, Dy:]
    Vz = LA.solve_lower(chol_S, jnp.concatenate([H0 @ A, r[:, None]], axis=1))
    V, z = Vz[:, :-1], Vz[:, -1]
    b = G @ z if c is None else c + G @ z
    return SqrtFilterElement(A - G @ V, b, U, V.T @ z, tri(V.T))


def filter_combine(earlier: SqrtFilterElement, later: SqrtFilterElement) -> SqrtFilterElement:
    """Combine two consecutive square-root filtering elements (module docstring)."""
    Ai, bi, Ui, etai, Zi = earlier
    Aj, bj, Uj, etaj, Zj = later
    D = Ai.shape[-1]
    eye = jnp.eye(D, dtype=Ai.dtype)
    X = tri(
        jnp.concatenate(
            [
                jnp.concatenate([Ui.T @ Zj, eye], axis=1),
                jnp.concatenate([Zj, jnp.zeros_like(Zj)], axis=1),
            ],
            axis=0,
        )
    )
    X11, X21, X22 = X[:D, :D], X[D:, :D], X[D:, D:]
    W = LA.solve_lower(X11, Ui.T)  # X11^{-1} U_i^T; its transpose is U_i X11^{-T}
    T = LA.solve_lower_t(X11, X21.T)  # X11^{-T} X21^T

    def minv(v):  # (I + C_i J_j)^{-1} v
        return v - Ui @ (T @ v)

    def minv_t(v):  # (I + J_j C_i)^{-1} v
        return v - X21 @ (W @ v)

    return SqrtFilterElement(
        A=Aj @ minv(Ai),
        b=Aj @ minv(bi + Ui @ (Ui.T @ etaj)) + bj,
        U=tri(jnp.concatenate([Aj @ W.T, Uj], axis=1)),
        eta=Ai.T @ minv_t(etaj - Zj @ (Zj.T @ bi)) + etai,
        Z=tri(jnp.concatenate([Ai.T @ X22, Zi], axis=1)),
    )


def smooth_combine(later: SqrtSmoothElement, earlier: SqrtSmoothElement) -> SqrtSmoothElement:
    """Combine two consecutive square-root smoothing elements.

    ``later`` comes first, as ``lax.associative_scan(..., reverse=True)`` passes them.
    """
    return SqrtSmoothElement(
        E=earlier.E @ later.E,
        g=earlier.E @ later.g + earlier.g,
        F=tri(jnp.concatenate([earlier.E @ later.F, earlier.F], axis=1)),
    )
