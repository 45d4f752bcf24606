r"""Closed-form M-steps under structures (Holmes 2012): weighted regressions and patterns.

**Regressions with linear constraints.** A regression ``t_k = M z_k + noise``, noise
``N(0, S)``, with ``M [r, p]`` (``[A, B, b]`` or ``[H, D, d]``, or ``m0`` with ``z = 1``)
enters EM's objective through

.. math::

    -\tfrac N2 \mathrm{tr}\, S^{-1} (T - C M^T - M C^T + M Z M^T),

with the statistics ``T = E[t t^T]``, ``C = E[t z^T]``, ``Z = E[z z^T]``. In the row-major
vectorisation ``m = vec_r(M)``, ``tr(W M Z M^T) = m^T (W \otimes Z) m`` and
``tr(W C M^T) = m^T vec_r(W C)`` (``W = S^{-1}``). With the structures of the blocks written
together as ``m = g + G theta`` (fixed blocks in ``g``, full blocks as identity columns of
``G``, :class:`~jaxssm._base.structure.Affine` blocks as their ``f`` and ``D``), the
maximiser over ``theta`` is the generalised least squares

.. math::

    G^T (W \otimes Z) G \, \theta = G^T \big(vec_r(W C) - (W \otimes Z) g\big),

Holmes (2012)'s constrained update, here in the time convention of DESIGN.md (``z_k =
[x_{k-1}; u_k; 1]`` for the transition, ``[x_k; u_k; 1]`` for the observation). ``(W
\otimes Z) vec_r(X) = vec_r(W X Z)``, so the Kronecker product is never formed. When every
block is full the weight cancels and the unweighted normal equations of
:mod:`jaxssm._learn.mstep` apply; with a structure, ``W`` is the current covariance's
inverse (a pseudo-inverse: rows with zero variance carry no weight), which makes the
mean-side step a conditional maximiser given the covariance (ECM) when both are learned.

**Covariance patterns.** For a diagonal covariance the Gaussian term separates over the
diagonal entries, so the maximiser over a :class:`~jaxssm._base.structure.Pattern` is
``q_j = mean_{i in group j} S_ii / c_i`` of the unconstrained update ``S``: ``"diagonal"``
keeps the diagonal of ``S``, ``"scalar"`` is ``tr(S) / n`` times ``I``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxssm._base.linalg import LAPACK, symmetrize
from jaxssm._base.structure import Affine, Pattern

__all__ = ["pseudo_inverse", "weighted_regression", "weighted_mean", "pattern_update"]


def pseudo_inverse(S: jax.Array) -> jax.Array:
    """Invert a symmetric PSD ``S`` on its range (eigenvalues below ``n eps max`` dropped)."""
    w, V = jnp.linalg.eigh(symmetrize(S))
    cut = w.shape[0] * jnp.finfo(S.dtype).eps * jnp.max(jnp.abs(w))
    keep = w > cut
    inv = jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)
    return symmetrize((V * inv[None, :]) @ V.T)


def weighted_regression(
    cross: jax.Array,
    zz: jax.Array,
    blocks: list,
    structures: list,
    W: jax.Array,
) -> list:
    """Return the constrained maximiser of one regression's blocks (module docstring).

    Args:
        cross: ``C = E[t z^T]``, ``[r, p]``.
        zz: ``Z = E[z z^T]``, ``[p, p]``.
        blocks: the current blocks, each ``[r, c_i]`` (a vector block ``[r]`` is a column),
            whose columns make ``z``.
        structures: per block ``None`` (held fixed), ``"full"`` or an
            :class:`~jaxssm._base.structure.Affine` (static).
        W: the weight ``S^{-1}`` (a pseudo-inverse), ``[r, r]``.

    Returns:
        The new blocks, in the blocks' own shapes (a fixed block is returned unchanged).
    """
    dtype = cross.dtype
    r, p = cross.shape
    mats = [b if b.ndim == 2 else b[:, None] for b in blocks]
    widths = [m.shape[1] for m in mats]
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(int)
    # Positions of each block's entries (row-major in the block) in vec_r(M).
    positions = [
        (np.arange(r)[:, None] * p + s + np.arange(w)[None, :]).reshape(-1)
        for s, w in zip(starts, widths, strict=True)
    ]
    cols, g_fixed, offsets = [], np.zeros(r * p), []
    g = jnp.zeros(r * p, dtype)
    k = 0
    for pos, m, s in zip(positions, mats, structures, strict=True):
        if s is None:
            g = g.at[pos].set(m.reshape(-1))
            offsets.append(None)
            continue
        G = np.eye(pos.size) if s == "full" else s.G
        block = np.zeros((r * p, G.shape[1]))
        block[pos] = G
        if isinstance(s, Affine):
            g_fixed[pos] = s.f
        cols.append(block)
        offsets.append((k, G.shape[1]))
        k += G.shape[1]
    Gfull = np.concatenate(cols, axis=1)  # [r p, K]
    Gm = jnp.asarray(Gfull.T.reshape(k, r, p), dtype)
    g = (g + jnp.asarray(g_fixed, dtype)).reshape(r, p)
    KG = jnp.einsum("ab,kbc,cd->kad", W, Gm, zz)  # (W kron Z) G, column by column
    lhs = symmetrize(jnp.einsum("kad,lad->kl", Gm, KG))
    resid = W @ (cross - g @ zz)
    rhs = jnp.einsum("kad,ad->k", Gm, resid)
    theta = LAPACK.cho_solve(LAPACK.cholesky(lhs), rhs)
    out = []
    for b, s, off in zip(blocks, structures, offsets, strict=True):
        if s is None:
            out.append(b)
            continue
        t = theta[off[0] : off[0] + off[1]]
        if isinstance(s, Affine):
            out.append(s.value(t, dtype))
        else:
            out.append(t.reshape(b.shape))
    return out


def weighted_mean(target: jax.Array, structure: Affine, W: jax.Array) -> jax.Array:
    """Maximise ``-(t - m)^T W (t - m) / 2`` over ``m = f + G beta`` (``m0``)."""
    dtype = target.dtype
    G = jnp.asarray(structure.G, dtype)
    f = jnp.asarray(structure.f, dtype)
    WG = W @ G
    lhs = symmetrize(G.T @ WG)
    beta = LAPACK.cho_solve(LAPACK.cholesky(lhs), WG.T @ (target - f))
    return structure.value(beta, dtype)


def pattern_update(S: jax.Array, pattern: Pattern) -> jax.Array:
    """Maximise ``-log|Q| - tr(Q^{-1} S)`` over ``pattern`` (module docstring)."""
    return pattern.value(pattern.coordinates(S), S.dtype)
