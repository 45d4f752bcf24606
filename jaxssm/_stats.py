"""EM sufficient statistics (the container; computed in jaxssm._estep)."""

from __future__ import annotations

from typing import NamedTuple

import jax

__all__ = ["SufficientStats"]


class SufficientStats(NamedTuple):
    r"""Expected sufficient statistics of the complete-data log-likelihood, normalised by N.

    With smoothed moments ``m_k^s, P_k^s`` and smoother gains ``G_k`` (DESIGN.md, "EM"):

    .. math::

        \Sigma = \tfrac1N \sum_{k=1}^N (P_k^s + m_k^s m_k^{sT}), \quad
        \Phi = \tfrac1N \sum_{k=1}^N (P_{k-1}^s + m_{k-1}^s m_{k-1}^{sT}),

        B = \tfrac1N \sum_{k=1}^N y_k m_k^{sT}, \quad
        C = \tfrac1N \sum_{k=1}^N (P_k^s G_{k-1}^T + m_k^s m_{k-1}^{sT}), \quad
        D = \tfrac1N \sum_{k=1}^N y_k y_k^T.

    Attributes:
        Sigma: ``[D, D]``.
        Phi: ``[D, D]``.
        B: ``[Dy, D]``.
        C: ``[D, D]``.
        D: ``[Dy, Dy]``.
        m0_smoothed: ``E[x_0 | y]``, ``[D]`` (for a batch: the average over sequences).
        P0_smoothed: ``Cov[x_0 | y]``, ``[D, D]`` (for a batch: the average over sequences of
            ``P0s_b + (m0s_b - m0_smoothed)(m0s_b - m0_smoothed)^T``, so that the M-step's
            ``P0 = P0_smoothed`` when ``m0 = m0_smoothed``).
        num_steps: the number of steps N summed over (for a batch: B * N), a scalar.
    """

    Sigma: jax.Array
    Phi: jax.Array
    B: jax.Array
    C: jax.Array
    D: jax.Array
    m0_smoothed: jax.Array
    P0_smoothed: jax.Array
    num_steps: jax.Array
