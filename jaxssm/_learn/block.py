"""The small directions' block of :mod:`jaxssm._learn.boundary`: its indices and preconditioner.

Along the small directions of a covariance (eigenvalues at most ``rank_tol * lambda_max``)
the complete-data information that scales the boundary stage's coordinates overstates the
observed information by orders of magnitude. These functions pick those coordinates out of
the stage's flat vector and build the map ``M^{-1/2}`` from their exact Hessian ``-M``
(forward differences of the gradient), in which the block's Hessian is about the identity.
"""

from __future__ import annotations

import numpy as np

from jaxssm._base.types import LGSSM
from jaxssm._learn.frame import COVARIANCES, SCALE, eigh

__all__ = ["small_directions", "block_indices", "block_hessian", "block_map"]

#: Finite-difference step of the block Hessian, in the frame's coordinates (about one
#: standard error each).
BLOCK_STEP = 1e-4
#: Curvatures of the block below this (the frame's unit: one complete-data standard error)
#: are raised to it: round-off, and the flat directions of ``L`` (rotations of its columns).
CURVATURE_FLOOR = 1e-5


def small_directions(params: LGSSM, rank_tol: float, floor: float) -> dict:
    """``{cov: (small, kept)}``: masks over each covariance's eigenvalues (ascending).

    ``small``: at most ``rank_tol * lambda_max`` (held at zero or kept); ``kept``: above the
    stage's threshold ``floor * lambda_max``. For every covariance: each scales its fields
    whether or not it is itself updated.
    """
    out = {}
    for cov in COVARIANCES:
        w, _ = eigh(getattr(params, cov))
        top = max(w[-1], 0.0)
        out[cov] = (w <= rank_tol * top, w > floor * top)
    return out


def block_indices(flat, small: dict) -> np.ndarray:
    """Flat indices of the coordinates along the small directions (the block).

    ``flat``: the stage's flattening (``names``, ``sizes``, ``shapes``). The rows of a
    field's coordinates along its scaling covariance's small directions (the first axis is
    that covariance's eigenvector basis, ascending), and the columns of a covariance's
    factor that are small and kept (a held column is masked).
    """
    out, offset = [], 0
    for name, size in zip(flat.names, flat.sizes, strict=True):
        mask = np.zeros(flat.shapes[name], bool)
        if name in COVARIANCES:
            is_small, kept = small[name]
            mask[:, is_small & kept] = True
        else:
            mask[small[SCALE[name]][0]] = True
        out.append(offset + np.flatnonzero(mask.ravel()))
        offset += size
    return np.concatenate(out) if out else np.zeros(0, int)


def block_hessian(grad, x0: np.ndarray, g0: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Return the Hessian of the objective on the coordinates ``idx`` at ``x0`` (symmetrised).

    Forward differences of the exact gradient ``grad`` (``g0 = grad(x0)``), one gradient per
    coordinate: the stage's gradient is reverse mode only (its fast path is a
    ``custom_vjp``), so there is no forward-over-reverse product.
    """
    hess = np.empty((idx.size, idx.size))
    for a, i in enumerate(idx):
        e = x0.copy()
        e[i] += BLOCK_STEP
        hess[:, a] = ((grad(e) - g0) / BLOCK_STEP)[idx]
    return 0.5 * (hess + hess.T)


def block_map(grad, x0: np.ndarray, g0: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``M^{-1/2}``, ``M`` the negated block Hessian, eigenvalues raised to the floor.

    In the new coordinates ``u`` (``x[idx] = M^{-1/2} u``) the block's Hessian is about the
    identity at ``x0``, like the rest of the frame's; the absolute values keep the map real
    where round-off or a flat rotation of ``L``'s columns gives a small negative curvature.
    """
    mu, u = np.linalg.eigh(-block_hessian(grad, x0, g0, idx))
    return (u / np.sqrt(np.maximum(np.abs(mu), CURVATURE_FLOOR))) @ u.T
