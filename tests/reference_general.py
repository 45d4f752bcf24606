"""An independent reference for the general model: plain numpy, no jaxssm code.

The model of DESIGN.md with every term per step::

    x_0 ~ N(m0, P0)
    x_k = A_k x_{k-1} + c_k + q_k,  q_k ~ N(0, Q_k)      c_k = B_k u_k + b_k
    y_k = H_k x_k + e_k + r_k,      r_k ~ N(0, R_k)      e_k = D_k u_k + d_k

is written as one affine map of the independent Gaussian vector
``w = (x_0, q_1..q_N, r_1..r_N)``: ``z = (x_0..x_N, y_1..y_N) = M w + s``. Its mean is
``M E[w] + s`` and its covariance ``M Cov(w) M^T`` (singular covariances need no special
case). Filtering, prediction, smoothing, the log-likelihood and the EM expectations all
come from conditioning this joint on the observed (non-NaN) entries of the right steps.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class GeneralModel(NamedTuple):
    """Per-step arrays: A [N, D, D], c [N, D], Q [N, D, D], H [N, Dy, D], e [N, Dy], R [N, ...]."""

    m0: np.ndarray
    P0: np.ndarray
    A: np.ndarray
    c: np.ndarray
    Q: np.ndarray
    H: np.ndarray
    e: np.ndarray
    R: np.ndarray


def per_step(N: int, *, m0, P0, A, Q, H, R, B=None, b=None, D=None, d=None, inputs=None):
    """A :class:`GeneralModel` from LGSSM-style fields (each constant or with a leading N)."""

    def steps(x, ndim):
        x = np.asarray(x, np.float64)
        return x if x.ndim == ndim + 1 else np.broadcast_to(x, (N,) + x.shape).copy()

    A_, Q_, H_, R_ = steps(A, 2), steps(Q, 2), steps(H, 2), steps(R, 2)
    Dx, Dy = A_.shape[-1], H_.shape[-2]
    c = np.zeros((N, Dx))
    e = np.zeros((N, Dy))
    if B is not None:
        c += np.einsum("nij,nj->ni", steps(B, 2), inputs)
    if b is not None:
        c += steps(b, 1)
    if D is not None:
        e += np.einsum("nij,nj->ni", steps(D, 2), inputs)
    if d is not None:
        e += steps(d, 1)
    return GeneralModel(np.asarray(m0, float), np.asarray(P0, float), A_, c, Q_, H_, e, R_)


def joint(model: GeneralModel):
    """Mean ``[n]`` and covariance ``[n, n]`` of ``z = (x_0..x_N, y_1..y_N)`` (flattened)."""
    m0, P0, A, c, Q, H, e, R = model
    N, Dy, D = H.shape
    nw = D + N * D + N * Dy
    nz = (N + 1) * D + N * Dy
    M = np.zeros((nz, nw))
    s = np.zeros(nz)
    mw = np.zeros(nw)
    mw[:D] = m0
    Sw = np.zeros((nw, nw))
    Sw[:D, :D] = P0
    for k in range(N):
        Sw[D + k * D : D + (k + 1) * D, D + k * D : D + (k + 1) * D] = Q[k]
        o = D + N * D + k * Dy
        Sw[o : o + Dy, o : o + Dy] = R[k]
    M[:D, :D] = np.eye(D)
    for k in range(1, N + 1):
        rows = slice(k * D, (k + 1) * D)
        prev = slice((k - 1) * D, k * D)
        M[rows] = A[k - 1] @ M[prev]
        M[rows, D + (k - 1) * D : D + k * D] += np.eye(D)
        s[rows] = A[k - 1] @ s[prev] + c[k - 1]
        yrows = slice((N + 1) * D + (k - 1) * Dy, (N + 1) * D + k * Dy)
        M[yrows] = H[k - 1] @ M[rows]
        o = D + N * D + (k - 1) * Dy
        M[yrows, o : o + Dy] += np.eye(Dy)
        s[yrows] = H[k - 1] @ s[rows] + e[k - 1]
    mean = M @ mw + s
    cov = M @ Sw @ M.T
    return mean, 0.5 * (cov + cov.T)


def _condition(mean, cov, idx, values):
    """Moments of ``z`` given ``z[idx] = values`` and ``log p(values)`` (Cholesky solves)."""
    if idx.size == 0:
        return mean, cov, 0.0
    S = cov[np.ix_(idx, idx)]
    L = np.linalg.cholesky(S)
    C = cov[:, idx]
    K = np.linalg.solve(L.T, np.linalg.solve(L, C.T)).T
    v = values - mean[idx]
    z = np.linalg.solve(L, v)
    ll = -0.5 * z @ z - np.sum(np.log(np.diag(L))) - 0.5 * idx.size * np.log(2 * np.pi)
    post = cov - K @ C.T
    return mean + K @ v, 0.5 * (post + post.T), ll


class GeneralPosterior(NamedTuple):
    filter_means: np.ndarray  # [N+1, D]
    filter_covs: np.ndarray
    pred_means: np.ndarray  # [N, D]
    pred_covs: np.ndarray
    smooth_means: np.ndarray  # [N+1, D]
    smooth_covs: np.ndarray
    smooth_cross: np.ndarray  # [N, D, D], Cov(x_{k+1}, x_k | y)
    log_likelihood: float
    mean: np.ndarray  # E[z | y_obs], z = (x, y)
    second: np.ndarray  # E[z z^T | y_obs]


def posterior(model: GeneralModel, ys: np.ndarray) -> GeneralPosterior:
    """Exact moments given the observed entries of ``ys [N, Dy]`` (NaN: missing)."""
    ys = np.asarray(ys, np.float64)
    N, Dy = ys.shape
    D = model.A.shape[-1]
    mean, cov = joint(model)
    nx = (N + 1) * D
    yflat = ys.reshape(-1)
    seen = ~np.isnan(yflat)

    def given(upto):
        idx = np.flatnonzero(seen & (np.arange(N * Dy) < upto * Dy))
        return _condition(mean, cov, nx + idx, yflat[idx])

    def xb(v, k):
        return v[k * D : (k + 1) * D]

    def cb(S, k, j):
        return S[k * D : (k + 1) * D, j * D : (j + 1) * D]

    fm, fc, pm, pc = [], [], [], []
    for k in range(N + 1):
        m, S, _ = given(k)
        fm.append(xb(m, k))
        fc.append(cb(S, k, k))
        if k >= 1:
            m, S, _ = given(k - 1)
            pm.append(xb(m, k))
            pc.append(cb(S, k, k))
    m, S, ll = given(N)
    return GeneralPosterior(
        np.stack(fm),
        np.stack(fc),
        np.stack(pm),
        np.stack(pc),
        np.stack([xb(m, k) for k in range(N + 1)]),
        np.stack([cb(S, k, k) for k in range(N + 1)]),
        np.stack([cb(S, k + 1, k) for k in range(N)]),
        ll,
        m,
        S + np.outer(m, m),
    )


def em_stats(model: GeneralModel, ys: np.ndarray, inputs=None) -> dict:
    """The E-step's expectations (normalised by N) with ``v_k = [u_k; 1]``.

    Missing observations are latent: every ``E[.]`` is under ``p(x, y_missing | y_obs)``.
    """
    ys = np.asarray(ys, np.float64)
    N, Dy = ys.shape
    D = model.A.shape[-1]
    post = posterior(model, ys)
    Z = post.second
    nx = (N + 1) * D

    def x(k):
        return slice(k * D, (k + 1) * D)

    def y(k):  # y_k, k = 1..N
        return slice(nx + (k - 1) * Dy, nx + k * Dy)

    v = np.ones((N, 1)) if inputs is None else np.concatenate([inputs, np.ones((N, 1))], 1)
    ks = range(1, N + 1)
    Ey = [post.mean[y(k)] for k in ks]
    return dict(
        Sigma=sum(Z[x(k), x(k)] for k in ks) / N,
        Phi=sum(Z[x(k - 1), x(k - 1)] for k in ks) / N,
        B=sum(Z[y(k), x(k)] for k in ks) / N,
        C=sum(Z[x(k), x(k - 1)] for k in ks) / N,
        D=sum(Z[y(k), y(k)] for k in ks) / N,
        m0_smoothed=post.smooth_means[0],
        P0_smoothed=post.smooth_covs[0],
        U=v.T @ v / N,
        XU=sum(np.outer(post.smooth_means[k], v[k - 1]) for k in ks) / N,
        XpU=sum(np.outer(post.smooth_means[k - 1], v[k - 1]) for k in ks) / N,
        YU=sum(np.outer(Ey[k - 1], v[k - 1]) for k in ks) / N,
        log_likelihood=post.log_likelihood,
    )
