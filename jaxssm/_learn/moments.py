r"""Moment estimators' numpy helpers for the data-driven starts: PSD projections, solves, data.

Host-side float64 numpy, used by :mod:`jaxssm._learn.initialize` (the regression start) and
:mod:`jaxssm._learn.subspace` (the subspace start): they run once per fit on concrete arrays.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "largest_feasible",
    "sym",
    "floor_cov",
    "clip_psd",
    "mean_variance",
    "spectral_radius",
    "right_solve",
    "inv_sqrt",
    "stationary_cov",
    "moments",
    "regression",
    "shrink",
    "symmetric_solve",
    "feasible",
    "to_stable",
    "sequences",
    "stack",
    "lstsq",
    "var1",
]

#: Eigenvalue floor of estimated covariances, relative to their scale.
COV_FLOOR = 1e-6
#: Relative singular-value cut-off of the least-squares solves.
RCOND = 1e-12


def sym(S: np.ndarray) -> np.ndarray:
    """Return the symmetric part of ``S``."""
    return 0.5 * (S + S.T)


def floor_cov(S: np.ndarray, scale: float) -> np.ndarray:
    """``S`` projected to the PSD cone with eigenvalues at least ``COV_FLOOR * scale``.

    ``scale`` is the larger of ``S``'s largest eigenvalue and the given positive reference.
    """
    lam, U = np.linalg.eigh(sym(S))
    scale = max(float(lam[-1]), float(scale), np.finfo(np.float64).tiny)
    return sym((U * np.maximum(lam, COV_FLOOR * scale)) @ U.T)


def clip_psd(S: np.ndarray) -> np.ndarray:
    """``S`` projected to the PSD cone (negative eigenvalues set to zero)."""
    lam, U = np.linalg.eigh(sym(S))
    return sym((U * np.maximum(lam, 0.0)) @ U.T)


def mean_variance(X: np.ndarray) -> float:
    """Return the mean variance of the columns of ``X`` (a scale for covariance floors)."""
    return float(np.mean(np.var(X, axis=0)))


def spectral_radius(A: np.ndarray) -> float:
    """Return the largest eigenvalue modulus of ``A`` (0 for an empty matrix)."""
    return float(np.max(np.abs(np.linalg.eigvals(A)))) if A.size else 0.0


def right_solve(G: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``rhs G^{-1}`` for a symmetric ``G`` by eigen-decomposition (``G^+`` where singular)."""
    lam, U = np.linalg.eigh(sym(G))
    keep = lam > RCOND * max(float(np.max(np.abs(lam))), np.finfo(np.float64).tiny)
    inv = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
    return ((rhs @ U) * inv) @ U.T


def inv_sqrt(G: np.ndarray) -> np.ndarray:
    """Return ``G^{-1/2}`` of a symmetric PSD ``G`` (pseudo-inverse square root where singular)."""
    lam, U = np.linalg.eigh(sym(G))
    keep = lam > RCOND * max(float(np.max(lam)), np.finfo(np.float64).tiny)
    return (U * np.where(keep, 1.0 / np.sqrt(np.where(keep, lam, 1.0)), 0.0)) @ U.T


def stationary_cov(A: np.ndarray, Q: np.ndarray) -> np.ndarray | None:
    """Solve ``P = A P A^T + Q`` by doubling (``sum_j A^j Q A^jT``); ``None``: ``A`` unstable."""
    if spectral_radius(A) >= 1.0:
        return None
    P, Ak = Q.copy(), A.copy()
    for _ in range(64):
        P = sym(P + Ak @ P @ Ak.T)
        Ak = Ak @ Ak
        if np.max(np.abs(Ak)) < 1e-17:
            break
    return P


def moments(t: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the second moments ``t^T t / n``, ``t^T z / n``, ``z^T z / n`` of row samples."""
    n = t.shape[0]
    return sym(t.T @ t) / n, t.T @ z / n, sym(z.T @ z) / n


def regression(Stt, Stz, Szz, free, M_fixed):
    """Coefficients ``M`` (free columns solved, others ``M_fixed``) and ``E[(t-Mz)(t-Mz)^T]``."""
    M = M_fixed.copy()
    if free.any():
        X = ~free
        target = Stz[:, free] - M[:, X] @ Szz[np.ix_(X, free)]
        M[:, free] = right_solve(Szz[np.ix_(free, free)], target)
    StzMt = Stz @ M.T
    return M, sym(Stt - StzMt - StzMt.T + M @ Szz @ M.T)


def largest_feasible(ok) -> float:
    """Return the largest ``x`` in ``[0, 1]`` with ``ok(x)``, for ``ok(0)`` true and monotone.

    ``1`` when ``ok(1)``; otherwise 40 bisection steps, keeping the feasible end.
    """
    if ok(1.0):
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def shrink(Szz: np.ndarray, Wz: np.ndarray) -> float:
    """Return the largest ``alpha <= 1`` with ``Szz - alpha Wz`` safely positive definite.

    An overstated noise (or a short series) can make the corrected moment indefinite; the
    correction is then scaled back until the smallest eigenvalue is ``1e-6`` of the largest.
    """

    def ok(a):
        lam = np.linalg.eigvalsh(sym(Szz - a * Wz))
        return lam[0] > 1e-6 * max(float(lam[-1]), np.finfo(np.float64).tiny)

    return largest_feasible(ok)


def symmetric_solve(A: np.ndarray, H: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Return the least-squares, least-norm symmetric ``P`` with ``A P H^T = G``.

    Solved over the ``D (D + 1) / 2`` free entries (row-major ``vec(A P H^T) = (A kron H)
    vec(P)``); for a large system (over 2e7 coefficients), ``sym(A^+ G H^{+T})`` instead.
    """
    D, Dy = A.shape[0], H.shape[0]
    iu = np.triu_indices(D)
    if D * Dy * iu[0].size > 2e7:
        return sym(np.linalg.pinv(A) @ G @ np.linalg.pinv(H).T)
    dup = np.zeros((D * D, iu[0].size))
    dup[iu[0] * D + iu[1], np.arange(iu[0].size)] = 1.0
    dup[iu[1] * D + iu[0], np.arange(iu[0].size)] = 1.0
    p = np.linalg.lstsq(np.kron(A, H) @ dup, G.ravel(), rcond=None)[0]
    return (dup @ p).reshape(D, D)


def feasible(pairs) -> float:
    """Return the largest ``beta`` in ``[0, 1]`` with every ``base + beta step`` PSD.

    Each ``base`` is PSD (``beta = 0`` is feasible); bisection on the smallest eigenvalues.
    """

    def ok(beta):
        return all(
            np.linalg.eigvalsh(sym(base + beta * step))[0]
            >= -1e-12 * max(float(np.max(np.abs(base))), 1e-300)
            for base, step in pairs
        )

    return largest_feasible(ok)


def to_stable(A_new, A_data, refit):
    """Blend ``A_new`` toward the data's own least-squares ``A_data`` until it is stable.

    Only when ``A_data`` is stable (the data are): the result has spectral radius at most
    ``(1 + rho(A_data)) / 2``. ``refit(alpha)`` returns the coefficients for a blend weight.
    """
    rho_data = spectral_radius(A_data)
    if spectral_radius(A_new) < 1.0 or rho_data >= 1.0:
        return refit(1.0)
    cap = 0.5 * (1.0 + rho_data)
    return refit(largest_feasible(lambda a: spectral_radius(A_data + a * (A_new - A_data)) <= cap))


def sequences(ys, inputs):
    """Float64 sequences with trailing all-NaN rows dropped and gaps filled by column means."""
    Y = np.asarray(ys, np.float64)
    U = None if inputs is None else np.asarray(inputs, np.float64)
    if Y.ndim == 2:
        Y = Y[None]
        U = None if U is None else U[None]
    observed = ~np.isnan(Y)
    counts = observed.sum(axis=(0, 1))
    if np.any(counts == 0):
        j = int(np.argmin(counts))
        raise ValueError(f"column {j} of ys is never observed: nothing to estimate it from")
    fill = np.where(observed, Y, 0.0).sum(axis=(0, 1)) / counts
    seqs = []
    for b in range(Y.shape[0]):
        rows = np.flatnonzero(observed[b].any(axis=1))
        n = 0 if rows.size == 0 else int(rows[-1]) + 1
        if n:
            y = np.where(observed[b, :n], Y[b, :n], fill)
            seqs.append((y, None if U is None else U[b, :n]))
    return seqs


def stack(parts):
    """Concatenate row blocks."""
    return np.concatenate(parts, axis=0)


def lstsq(Z: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Coefficients ``M`` of the least-squares regression ``T ~ Z M^T``."""
    if Z.shape[1] == 0:
        return np.zeros((T.shape[1], 0))
    return right_solve(sym(Z.T @ Z), T.T @ Z)


def var1(seqs) -> np.ndarray:
    """Return the least-squares VAR(1) matrix of the (gap-filled) observations."""
    Y0 = stack([y[:-1] for y, _ in seqs])
    Y1 = stack([y[1:] for y, _ in seqs])
    return np.linalg.lstsq(Y0, Y1, rcond=None)[0].T
