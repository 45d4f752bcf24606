"""Independent references for the tests: plain numpy, no jaxssm code.

One dense oracle serves every model the library fits. The model of DESIGN.md with every
term per step::

    x_0 ~ N(m0, P0)
    x_k = A_k x_{k-1} + c_k + q_k,  q_k ~ N(0, Q_k)      c_k = B_k u_k + b_k
    y_k = H_k x_k + e_k + r_k,      r_k ~ N(0, R_k)      e_k = D_k u_k + d_k

(the plain model is the case of no inputs or offsets and the same matrices every step) is
written as one affine map of the independent Gaussian vector ``w = (x_0, q_1..q_N,
r_1..r_N)``: ``z = (x_0..x_N, y_1..y_N) = M w + s``, with mean ``M E[w] + s`` and covariance
``M Cov(w) M^T`` (singular covariances need no special case). Filtering, prediction,
smoothing, the log-likelihood and the EM expectations all come from conditioning this joint
on the observed (non-NaN) entries of the right steps.

- ``dense_posterior``: that oracle's moments; ``dense_sufficient_stats``: the E-step's.
- ``general`` / ``joint``: a model in per-step form, and the dense joint it defines.
- ``numpy_filter`` / ``numpy_smoother``: the textbook recursions as Python loops.
- ``random_model`` / ``simulate``: well-conditioned random plain models and draws from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np


class Model(NamedTuple):
    m0: np.ndarray
    P0: np.ndarray
    A: np.ndarray
    Q: np.ndarray
    H: np.ndarray
    R: np.ndarray


def random_spd(rng: np.random.Generator, d: int, scale: float = 1.0) -> np.ndarray:
    """A random SPD matrix with eigenvalues in [0.2, 1.2] * scale."""
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return scale * (U * rng.uniform(0.2, 1.2, size=d)) @ U.T


def random_model(rng: np.random.Generator, D: int, Dy: int, mean_scale: float = 1.0) -> Model:
    """A random stable model: spectral radius of A at most 0.95, SPD covariances."""
    A = rng.standard_normal((D, D))
    A *= 0.95 / max(np.max(np.abs(np.linalg.eigvals(A))), 1e-3)
    return Model(
        m0=mean_scale * rng.standard_normal(D),
        P0=random_spd(rng, D),
        A=A,
        Q=random_spd(rng, D, 0.5),
        H=rng.standard_normal((Dy, D)),
        R=random_spd(rng, Dy, 0.5),
    )


def unobserved_unit_root(model: Model) -> Model:
    """``model`` with its last state component made a unit root that no observation sees:
    that component's variance grows without bound, so the Riccati recursion never settles."""
    A = np.array(model.A)
    A[:, -1] = 0.0
    A[-1, :] = 0.0
    A[-1, -1] = 1.0
    H = np.array(model.H)
    H[:, -1] = 0.0
    return model._replace(A=A, H=H)


def simulate(rng: np.random.Generator, model: Model, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw x_0..x_N and y_1..y_N with numpy."""
    D, Dy = model.A.shape[0], model.H.shape[0]
    xs = np.zeros((N + 1, D))
    xs[0] = rng.multivariate_normal(model.m0, model.P0)
    for k in range(1, N + 1):
        xs[k] = model.A @ xs[k - 1] + rng.multivariate_normal(np.zeros(D), model.Q)
    ys = xs[1:] @ model.H.T + rng.multivariate_normal(np.zeros(Dy), model.R, size=N)
    return xs, ys


# ---------------------------------------------------------------------------------------------
# The dense oracle
# ---------------------------------------------------------------------------------------------


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


def general(model, N: int, inputs=None) -> GeneralModel:
    """``model`` in per-step form over N steps.

    ``model`` is a :class:`GeneralModel` (returned as it is), or LGSSM-style fields ``m0, P0,
    A, Q, H, R`` and optionally ``B, b, D, d`` (a :class:`Model` or other named tuple, or a
    dict; a field ``None`` is absent), each constant or with a leading N; ``inputs [N, Du]``
    feed ``B`` and ``D``.
    """
    if isinstance(model, GeneralModel):
        return model
    f = dict(model) if isinstance(model, Mapping) else model._asdict()

    def steps(name, ndim):
        x = np.asarray(f[name], np.float64)
        return x if x.ndim == ndim + 1 else np.broadcast_to(x, (N,) + x.shape).copy()

    def given(name):
        return f.get(name) is not None

    A, Q, H, R = steps("A", 2), steps("Q", 2), steps("H", 2), steps("R", 2)
    c = np.zeros((N, A.shape[-1]))
    e = np.zeros((N, H.shape[-2]))
    if given("B"):
        c += np.einsum("nij,nj->ni", steps("B", 2), inputs)
    if given("b"):
        c += steps("b", 1)
    if given("D"):
        e += np.einsum("nij,nj->ni", steps("D", 2), inputs)
    if given("d"):
        e += steps("d", 1)
    m0, P0 = np.asarray(f["m0"], np.float64), np.asarray(f["P0"], np.float64)
    return GeneralModel(m0, P0, A, c, Q, H, e, R)


def joint(model: GeneralModel) -> tuple[np.ndarray, np.ndarray]:
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


def _condition(mean, cov, idx, values, keep):
    """Moments of ``z[keep]`` given ``z[idx] = values``, and ``log p(values)``.

    Cholesky solves; the conditioned entries of ``z[keep]`` are set to their values exactly
    (with zero variance).
    """
    m, S = mean[keep], cov[np.ix_(keep, keep)]
    if idx.size == 0:
        return m, S, 0.0
    L = np.linalg.cholesky(cov[np.ix_(idx, idx)])
    W = np.linalg.solve(L, cov[np.ix_(idx, keep)])  # L^{-1} Cov(z[idx], z[keep])
    v = np.linalg.solve(L, values - mean[idx])
    ll = -0.5 * v @ v - np.sum(np.log(np.diag(L))) - 0.5 * idx.size * np.log(2 * np.pi)
    m = m + W.T @ v
    S = S - W.T @ W
    known = np.full(mean.size, np.nan)
    known[idx] = values
    hit = ~np.isnan(known[keep])
    m[hit] = known[keep][hit]
    S[hit] = 0.0
    S[:, hit] = 0.0
    return m, 0.5 * (S + S.T), ll


class DensePosterior(NamedTuple):
    """Exact moments given the observed entries (``y_obs``) of the right steps."""

    filter_means: np.ndarray  # [N+1, D], E[x_k | y_obs of 1..k]
    filter_covs: np.ndarray  # [N+1, D, D]
    pred_means: np.ndarray  # [N, D], E[x_k | y_obs of 1..k-1], k = 1..N
    pred_covs: np.ndarray  # [N, D, D]
    smooth_means: np.ndarray  # [N+1, D], E[x_k | y_obs]
    smooth_covs: np.ndarray  # [N+1, D, D]
    smooth_cross: np.ndarray  # [N, D, D], Cov(x_{k+1}, x_k | y_obs), k = 0..N-1
    log_likelihood: float  # log p(y_obs)
    joint_mean: np.ndarray  # E[x_0..x_N | y_obs] flattened, [(N+1) D]
    joint_cov: np.ndarray  # Cov[x_0..x_N | y_obs], [(N+1) D, (N+1) D]
    obs_means: np.ndarray  # [N, Dy], E[y_k | y_obs] (the observed entries themselves)
    obs_covs: np.ndarray  # [N, Dy, Dy], Cov(y_k | y_obs) (zero on observed entries)
    obs_cross: np.ndarray  # [N, Dy, D], Cov(y_k, x_k | y_obs)

    @property
    def post(self) -> DensePosterior:
        """Itself: the old ``dense_posterior_missing(...).post`` reads the same."""
        return self


def dense_posterior(model, ys, inputs=None) -> DensePosterior:
    """Exact moments of ``model`` (see :func:`general`) given the non-NaN entries of ``ys``.

    Filtering moments at k condition on the observed entries of y_1..y_k, predictions on
    those of y_1..y_{k-1}; log p is the density of all observed entries.
    """
    ys = np.asarray(ys, np.float64)
    N, Dy = ys.shape
    g = general(model, N, inputs)
    D = g.A.shape[-1]
    mean, cov = joint(g)
    nx = (N + 1) * D
    yflat = ys.reshape(-1)
    seen = np.flatnonzero(~np.isnan(yflat))

    def given(upto, keep):
        idx = seen[seen < upto * Dy]
        return _condition(mean, cov, nx + idx, yflat[idx], keep)

    fm, fc, pm, pc = [], [], [], []
    for k in range(N + 1):  # given y_1..y_k: x_k filtered and x_{k+1} predicted
        m, S, _ = given(k, np.arange(k * D, min(k + 2, N + 1) * D))
        fm.append(m[:D])
        fc.append(S[:D, :D])
        if k < N:
            pm.append(m[D:])
            pc.append(S[D:, D:])
    m, S, ll = given(N, np.arange(mean.size))

    def x(k):
        return slice(k * D, (k + 1) * D)

    def y(k):  # y_k, k = 1..N
        return slice(nx + (k - 1) * Dy, nx + k * Dy)

    steps = range(1, N + 1)
    return DensePosterior(
        filter_means=np.stack(fm),
        filter_covs=np.stack(fc),
        pred_means=np.stack(pm),
        pred_covs=np.stack(pc),
        smooth_means=np.stack([m[x(k)] for k in range(N + 1)]),
        smooth_covs=np.stack([S[x(k), x(k)] for k in range(N + 1)]),
        smooth_cross=np.stack([S[x(k + 1), x(k)] for k in range(N)]),
        log_likelihood=ll,
        joint_mean=m[:nx],
        joint_cov=S[:nx, :nx],
        obs_means=m[nx:].reshape(N, Dy),
        obs_covs=np.stack([S[y(k), y(k)] for k in steps]),
        obs_cross=np.stack([S[y(k), x(k)] for k in steps]),
    )


# The name test_sharding.py imports: dense_posterior(...).post is the posterior itself.
dense_posterior_missing = dense_posterior


def dense_sufficient_stats(model, ys, inputs=None, length: int | None = None) -> dict:
    """The E-step's expectations (normalised by the length) from :func:`dense_posterior`.

    With ``v_k = [u_k; 1]`` (``v_k = 1`` without inputs) and sums over k = 1..length
    (default N; a ragged sequence's observed length)::

        Sigma = mean E[x_k x_k^T]    Phi = mean E[x_{k-1} x_{k-1}^T]    C = mean E[x_k x_{k-1}^T]
        B = mean E[y_k x_k^T]        D = mean E[y_k y_k^T]              U = mean v_k v_k^T
        XU = mean E[x_k] v_k^T       XpU = mean E[x_{k-1}] v_k^T        YU = mean E[y_k] v_k^T

    Missing observations are latent: every ``E[.]`` is under ``p(x, y_missing | y_obs)``.
    """
    post = dense_posterior(model, ys, inputs)
    N = len(post.obs_means) if length is None else length
    D = post.smooth_means.shape[-1]
    second = post.joint_cov + np.outer(post.joint_mean, post.joint_mean)
    xm, ym = post.smooth_means, post.obs_means
    v = np.ones((N, 1)) if inputs is None else np.concatenate([inputs[:N], np.ones((N, 1))], 1)

    def xx(k, j):
        return second[k * D : (k + 1) * D, j * D : (j + 1) * D]

    ks = range(1, N + 1)
    return dict(
        Sigma=sum(xx(k, k) for k in ks) / N,
        Phi=sum(xx(k - 1, k - 1) for k in ks) / N,
        B=sum(post.obs_cross[k - 1] + np.outer(ym[k - 1], xm[k]) for k in ks) / N,
        C=sum(xx(k, k - 1) for k in ks) / N,
        D=sum(post.obs_covs[k - 1] + np.outer(ym[k - 1], ym[k - 1]) for k in ks) / N,
        m0_smoothed=post.smooth_means[0],
        P0_smoothed=post.smooth_covs[0],
        U=v.T @ v / N,
        XU=sum(np.outer(xm[k], v[k - 1]) for k in ks) / N,
        XpU=sum(np.outer(xm[k - 1], v[k - 1]) for k in ks) / N,
        YU=sum(np.outer(ym[k - 1], v[k - 1]) for k in ks) / N,
        log_likelihood=post.log_likelihood,
    )


# ---------------------------------------------------------------------------------------------
# The textbook loops
# ---------------------------------------------------------------------------------------------


def numpy_filter(model: Model, ys: np.ndarray):
    """Textbook Kalman filter as a Python loop (explicit solves, no Cholesky tricks)."""
    m0, P0, A, Q, H, R = (np.asarray(x, np.float64) for x in model[:6])
    m, P = m0.copy(), P0.copy()
    means, covs, pmeans, pcovs = [m0], [P0], [], []
    ll = 0.0
    for y in np.asarray(ys, np.float64):
        m, P = A @ m, A @ P @ A.T + Q
        pmeans.append(m)
        pcovs.append(P)
        S = H @ P @ H.T + R
        v = y - H @ m
        K = np.linalg.solve(S, H @ P).T
        ll += -0.5 * (v @ np.linalg.solve(S, v) + np.linalg.slogdet(2 * np.pi * S)[1])
        m = m + K @ v
        P = P - K @ S @ K.T
        means.append(m)
        covs.append(P)
    return np.stack(means), np.stack(covs), np.stack(pmeans), np.stack(pcovs), ll


def numpy_smoother(model: Model, ys: np.ndarray):
    """Textbook RTS smoother as a Python loop over ``numpy_filter``'s output."""
    A = np.asarray(model.A, np.float64)
    fm, fc, pm, pc, ll = numpy_filter(model, ys)
    N = len(ys)
    sm, sc = fm.copy(), fc.copy()
    gains = np.zeros((N,) + A.shape)
    for k in range(N - 1, -1, -1):
        G = np.linalg.solve(pc[k], A @ fc[k]).T
        sm[k] = fm[k] + G @ (sm[k + 1] - pm[k])
        sc[k] = fc[k] + G @ (sc[k + 1] - pc[k]) @ G.T
        gains[k] = G
    return sm, sc, gains, ll
