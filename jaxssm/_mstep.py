r"""EM M-step (closed forms) and the EM objective Q(theta, theta_n) of the exercise.

With the statistics of :func:`~jaxssm.e_step` computed at ``theta_n`` (normalised by N), the
expected complete-data log-likelihood (the exercise's equation (2), with the factor N on the
transition and observation traces that its derivation uses) is

.. math::

    \mathcal{Q}(\theta, \theta_n) =
    &-\tfrac12 \log|2\pi P_0| - \tfrac N2 \log|2\pi Q| - \tfrac N2 \log|2\pi R| \\
    &-\tfrac12 \mathrm{tr}\,P_0^{-1}[P_0^s + (m_0^s - m_0)(m_0^s - m_0)^T] \\
    &-\tfrac N2 \mathrm{tr}\,Q^{-1}[\Sigma - C A^T - A C^T + A \Phi A^T] \\
    &-\tfrac N2 \mathrm{tr}\,R^{-1}[D - B H^T - H B^T + H \Sigma H^T],

and its maximisers, taken in this order (each using the new values before it), are

.. math::

    A = C \Phi^{-1},\ Q = \Sigma - C A^T - A C^T + A \Phi A^T,\
    H = B \Sigma^{-1},\ R = D - H B^T - B H^T + H \Sigma H^T,\
    m_0 = m_0^s,\ P_0 = P_0^s + (m_0^s - m_0)(m_0^s - m_0)^T.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp

from jaxssm._linalg import LAPACK, symmetrize
from jaxssm._types import LGSSM, SufficientStats
from jaxssm._validation import check_update, validate_params
from jaxssm.steps import LOG_2PI

__all__ = ["m_step", "expected_log_joint"]


def _residual_cov(second: jax.Array, cross: jax.Array, M: jax.Array, prev: jax.Array):
    """``second - cross M^T - M cross^T + M prev M^T``, symmetrised.

    The expected outer product of ``a - M b`` when ``E[a a^T] = second``, ``E[a b^T] = cross``
    and ``E[b b^T] = prev``.
    """
    cMt = cross @ M.T
    return symmetrize(second - cMt - cMt.T + M @ prev @ M.T)


def _m_step(params: LGSSM, stats: SufficientStats, update: tuple[str, ...]) -> LGSSM:
    """Unchecked M-step; ``update`` already checked (:func:`jaxssm._validation.check_update`).

    The closed forms are applied in the order A, Q, H, R, m0, P0 whatever the order of
    ``update``.
    """
    m0, P0, A, Q, H, R = params
    if "A" in update:
        # A Phi = C  <=>  Phi A^T = C^T (Phi symmetric).
        A = LAPACK.cho_solve(LAPACK.cholesky(stats.Phi), stats.C.T).T
    if "Q" in update:
        Q = _residual_cov(stats.Sigma, stats.C, A, stats.Phi)
    if "H" in update:
        H = LAPACK.cho_solve(LAPACK.cholesky(stats.Sigma), stats.B.T).T
    if "R" in update:
        R = _residual_cov(stats.D, stats.B, H, stats.Sigma)
    if "m0" in update:
        m0 = stats.m0_smoothed
    if "P0" in update:
        dev = stats.m0_smoothed - m0
        P0 = symmetrize(stats.P0_smoothed + jnp.outer(dev, dev))
    return LGSSM(m0, P0, A, Q, H, R)


_m_step_jit = jax.jit(_m_step, static_argnames="update")


def _check_stats(stats: SufficientStats, params: LGSSM) -> SufficientStats:
    if not isinstance(stats, SufficientStats):
        raise TypeError(f"stats must be a jaxssm.SufficientStats, got {type(stats).__name__}")
    D, Dy = params.A.shape[0], params.H.shape[0]
    expected = {
        "Sigma": (D, D),
        "Phi": (D, D),
        "B": (Dy, D),
        "C": (D, D),
        "D": (Dy, Dy),
        "m0_smoothed": (D,),
        "P0_smoothed": (D, D),
        "num_steps": (),
    }
    out = {}
    for name, shape in expected.items():
        x = jnp.asarray(getattr(stats, name))
        if tuple(x.shape) != shape:
            raise ValueError(
                f"stats.{name} must have shape {shape} (D = {D}, Dy = {Dy} from params), "
                f"got {tuple(x.shape)}"
            )
        if name != "num_steps" and x.dtype != params.A.dtype:
            raise TypeError(
                f"stats.{name} must have the parameters' dtype {params.A.dtype}, got {x.dtype}"
            )
        out[name] = x
    return SufficientStats(**out)


def m_step(
    params: LGSSM, stats: SufficientStats, update: str | Iterable[str] = ("A", "Q")
) -> LGSSM:
    r"""M-step of EM: maximise :func:`expected_log_joint` over the parameters in ``update``.

    Closed forms (DESIGN.md, "EM"), applied in the order A, Q, H, R, m0, P0, each using the
    values updated before it (so ``Q`` uses the new ``A``, ``R`` the new ``H`` and ``P0`` the
    new ``m0``); parameters not in ``update`` are returned unchanged:

    .. math::

        A = C \Phi^{-1}, \quad Q = \Sigma - C A^T - A C^T + A \Phi A^T, \quad
        H = B \Sigma^{-1}, \quad R = D - H B^T - B H^T + H \Sigma H^T,

        m_0 = m_0^s, \quad P_0 = P_0^s + (m_0^s - m_0)(m_0^s - m_0)^T.

    ``Phi^{-1}`` and ``Sigma^{-1}`` are applied through Cholesky solves; ``Q``, ``R`` and
    ``P0`` are symmetrised. The joint maximiser over all parameters, a block-coordinate one
    otherwise (each block is the exact maximiser given the others).

    Args:
        params: the current :class:`~jaxssm.LGSSM` (supplies the entries not updated).
        stats: :class:`~jaxssm.SufficientStats` from :func:`~jaxssm.e_step`.
        update: a parameter name or a tuple of names from ``"m0", "P0", "A", "Q", "H", "R"``
            (any subset, any order; the order of application is fixed as above).

    Returns:
        The updated :class:`~jaxssm.LGSSM`.

    Raises:
        ValueError: ``update`` is empty, repeats or names an unknown parameter; ``stats``
            has shapes that do not match ``params``.
        TypeError: ``update`` is not a name or an iterable of names.

    References:
        Z. Ghahramani and G. E. Hinton, "Parameter estimation for linear dynamical
        systems" (1996); S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Section 12.3.3.
    """
    names = check_update(update)
    params = validate_params(params, check_values=False)
    stats = _check_stats(stats, params)
    return _m_step_jit(params, stats, update=names)


def _expected_log_joint(
    params: LGSSM, stats: SufficientStats, num_sequences: int | jax.Array = 1
) -> jax.Array:
    """Unchecked :func:`expected_log_joint`."""
    m0, P0, A, Q, H, R = params
    dtype = A.dtype
    n = jnp.asarray(stats.num_steps).astype(dtype)
    b = jnp.asarray(num_sequences).astype(dtype)

    def gaussian_term(cov, scatter):
        """``-(log|2 pi cov| + tr(cov^-1 scatter)) / 2`` through a Cholesky factor."""
        chol = LAPACK.cholesky(symmetrize(cov))
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        trace = jnp.trace(LAPACK.cho_solve(chol, scatter))
        return -0.5 * (cov.shape[0] * LOG_2PI + logdet + trace)

    dev = stats.m0_smoothed - m0
    initial = gaussian_term(P0, stats.P0_smoothed + jnp.outer(dev, dev))
    cAt = stats.C @ A.T
    transition = gaussian_term(Q, stats.Sigma - cAt - cAt.T + A @ stats.Phi @ A.T)
    hBt = H @ stats.B.T
    observation = gaussian_term(R, stats.D - hBt - hBt.T + H @ stats.Sigma @ H.T)
    return b * initial + n * (transition + observation)


def expected_log_joint(
    params: LGSSM, stats: SufficientStats, *, num_sequences: int = 1
) -> jax.Array:
    r"""Evaluate the EM objective ``Q(theta, theta_n) = E[log p(x_0:N, y_1:N | theta)]``.

    The expectation is under ``p(x_0:N | y_1:N, theta_n)``, summarised by ``stats`` (from
    ``e_step(theta_n, ys)``); ``params`` is ``theta``. This is the exercise's equation (2) in
    terms of the N-normalised statistics: the transition and observation terms are multiplied
    by ``N = stats.num_steps``, the initial-state term is not:

    .. math::

        -\tfrac12 \log|2\pi P_0| - \tfrac12 \mathrm{tr}\,P_0^{-1}[P_0^s +
        (m_0^s - m_0)(m_0^s - m_0)^T]
        - \tfrac N2 \log|2\pi Q| - \tfrac N2 \mathrm{tr}\,Q^{-1}[\Sigma - C A^T - A C^T +
        A \Phi A^T]
        - \tfrac N2 \log|2\pi R| - \tfrac N2 \mathrm{tr}\,R^{-1}[D - B H^T - H B^T +
        H \Sigma H^T].

    For statistics pooled over ``B`` sequences (``num_steps = B * N``) pass
    ``num_sequences=B``: the initial-state term is then multiplied by ``B``, giving the sum of
    the sequences' objectives. It is differentiable in ``params`` (``jax.grad``); by Fisher's
    identity its gradient at ``theta = theta_n`` equals that of ``log p(y | theta)``.
    ``P0``, ``Q`` and ``R`` are symmetrised before use, so gradients with respect to them are
    symmetric.

    Args:
        params: :class:`~jaxssm.LGSSM` ``theta``.
        stats: :class:`~jaxssm.SufficientStats` computed at ``theta_n``.
        num_sequences: the number of sequences pooled in ``stats`` (``B``).

    Returns:
        A scalar with the parameters' dtype.
    """
    params = validate_params(params, check_values=False)
    stats = _check_stats(stats, params)
    return _expected_log_joint(params, stats, num_sequences)
