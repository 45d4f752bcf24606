"""Independent references for the tests: plain numpy, no jaxssm code.

- ``dense_posterior``: the joint Gaussian of (x_0..x_N, y_1..y_N) written out as one big
  mean vector and covariance matrix, conditioned by plain linear algebra. Gives the exact
  filtering and smoothing marginals, lag-one cross-covariances and log p(y_1:N).
- ``numpy_filter`` / ``numpy_smoother``: the textbook recursions as Python loops.
- ``random_model``: well-conditioned random models for the tests.
"""

from __future__ import annotations

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


class DensePosterior(NamedTuple):
    filter_means: np.ndarray  # [N+1, D], E[x_k | y_1:k]
    filter_covs: np.ndarray  # [N+1, D, D]
    pred_means: np.ndarray  # [N, D], E[x_k | y_1:k-1], k = 1..N
    pred_covs: np.ndarray  # [N, D, D]
    smooth_means: np.ndarray  # [N+1, D], E[x_k | y_1:N]
    smooth_covs: np.ndarray  # [N+1, D, D]
    smooth_cross: np.ndarray  # [N, D, D], Cov(x_{k+1}, x_k | y_1:N), k = 0..N-1
    log_likelihood: float
    joint_mean: np.ndarray  # E[x_0..x_N | y_1:N] flattened, [(N+1) D]
    joint_cov: np.ndarray  # Cov[x_0..x_N | y_1:N], [(N+1) D, (N+1) D]


def prior_moments(model: Model, N: int) -> tuple[np.ndarray, ...]:
    """Mean and covariance of the stacked states x_0..x_N and observations y_1..y_N."""
    m0, P0, A, Q, H, R = model
    D, Dy = A.shape[0], H.shape[0]
    mx = np.zeros((N + 1, D))
    mx[0] = m0
    for k in range(1, N + 1):
        mx[k] = A @ mx[k - 1]
    # Cov(x_k, x_j) = A^{k-j} Cov(x_j, x_j) for k >= j.
    marg = [P0]
    for _ in range(N):
        marg.append(A @ marg[-1] @ A.T + Q)
    Sxx = np.zeros(((N + 1) * D, (N + 1) * D))
    for j in range(N + 1):
        block = marg[j]
        for k in range(j, N + 1):
            Sxx[k * D : (k + 1) * D, j * D : (j + 1) * D] = block
            Sxx[j * D : (j + 1) * D, k * D : (k + 1) * D] = block.T
            block = A @ block
    # Observations y_1..y_N select states 1..N.
    Hbig = np.zeros((N * Dy, (N + 1) * D))
    for k in range(1, N + 1):
        Hbig[(k - 1) * Dy : k * Dy, k * D : (k + 1) * D] = H
    Syy = Hbig @ Sxx @ Hbig.T + np.kron(np.eye(N), R)
    Sxy = Sxx @ Hbig.T
    my = Hbig @ mx.reshape(-1)
    return mx.reshape(-1), Sxx, my, Syy, Sxy


def _condition(mx, Sxx, my, Syy, Sxy, y):
    """Posterior of x given y = (the rows of) y, by Cholesky solves."""
    if y.size == 0:
        return mx, Sxx
    L = np.linalg.cholesky(Syy)
    K = np.linalg.solve(L.T, np.linalg.solve(L, Sxy.T)).T
    mean = mx + K @ (y - my)
    cov = Sxx - K @ Sxy.T
    return mean, 0.5 * (cov + cov.T)


def _mvn_logpdf(y, mean, cov):
    L = np.linalg.cholesky(cov)
    z = np.linalg.solve(L, y - mean)
    return -0.5 * z @ z - np.sum(np.log(np.diag(L))) - 0.5 * y.size * np.log(2 * np.pi)


def dense_posterior(model: Model, ys: np.ndarray) -> DensePosterior:
    """Exact filtering/smoothing marginals and log p(y) from the dense joint Gaussian."""
    ys = np.asarray(ys, dtype=np.float64)
    N, Dy = ys.shape
    D = model.A.shape[0]
    mx, Sxx, my, Syy, Sxy = prior_moments(model, N)
    yflat = ys.reshape(-1)

    def block(v, k):
        return v[k * D : (k + 1) * D]

    def cblock(S, k, j):
        return S[k * D : (k + 1) * D, j * D : (j + 1) * D]

    fm, fc, pm, pc = [], [], [], []
    for k in range(N + 1):
        n_obs = k * Dy  # y_1..y_k
        mean, cov = _condition(
            mx, Sxx, my[:n_obs], Syy[:n_obs, :n_obs], Sxy[:, :n_obs], yflat[:n_obs]
        )
        fm.append(block(mean, k))
        fc.append(cblock(cov, k, k))
        if k >= 1:
            n_prev = (k - 1) * Dy
            mean_p, cov_p = _condition(
                mx, Sxx, my[:n_prev], Syy[:n_prev, :n_prev], Sxy[:, :n_prev], yflat[:n_prev]
            )
            pm.append(block(mean_p, k))
            pc.append(cblock(cov_p, k, k))
    sm_flat, sc_full = _condition(mx, Sxx, my, Syy, Sxy, yflat)
    sm = np.stack([block(sm_flat, k) for k in range(N + 1)])
    sc = np.stack([cblock(sc_full, k, k) for k in range(N + 1)])
    cross = np.stack([cblock(sc_full, k + 1, k) for k in range(N)])
    return DensePosterior(
        filter_means=np.stack(fm),
        filter_covs=np.stack(fc),
        pred_means=np.stack(pm),
        pred_covs=np.stack(pc),
        smooth_means=sm,
        smooth_covs=sc,
        smooth_cross=cross,
        log_likelihood=_mvn_logpdf(yflat, my, Syy),
        joint_mean=sm_flat,
        joint_cov=sc_full,
    )


def dense_sufficient_stats(model: Model, ys: np.ndarray) -> dict:
    """The exercise's EM statistics (normalised by N) as exact posterior expectations.

    Sigma = 1/N sum_{k=1..N} E[x_k x_k^T], Phi = 1/N sum_{k=1..N} E[x_{k-1} x_{k-1}^T],
    B = 1/N sum y_k E[x_k]^T, C = 1/N sum E[x_k x_{k-1}^T], D = 1/N sum y_k y_k^T,
    all expectations under p(x_0:N | y_1:N), taken from the dense joint posterior.
    """
    post = dense_posterior(model, ys)
    N = ys.shape[0]
    D = model.A.shape[0]
    second = post.joint_cov + np.outer(post.joint_mean, post.joint_mean)

    def block(k, j):
        return second[k * D : (k + 1) * D, j * D : (j + 1) * D]

    return dict(
        Sigma=sum(block(k, k) for k in range(1, N + 1)) / N,
        Phi=sum(block(k - 1, k - 1) for k in range(1, N + 1)) / N,
        B=sum(np.outer(ys[k - 1], post.smooth_means[k]) for k in range(1, N + 1)) / N,
        C=sum(block(k, k - 1) for k in range(1, N + 1)) / N,
        D=sum(np.outer(y, y) for y in ys) / N,
        m0_smoothed=post.smooth_means[0],
        P0_smoothed=post.smooth_covs[0],
        log_likelihood=post.log_likelihood,
    )


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


# ---------------------------------------------------------------------------------------------
# Missing entries: NaN in ys means "not observed"
# ---------------------------------------------------------------------------------------------


class DenseMissing(NamedTuple):
    post: DensePosterior  # moments conditioned on the observed entries only
    y_means: np.ndarray  # [N, Dy], E[y_k | y_obs]
    yx: np.ndarray  # [N, Dy, D], E[y_k x_k^T | y_obs]
    yy: np.ndarray  # [N, Dy, Dy], E[y_k y_k^T | y_obs]


def dense_posterior_missing(model: Model, ys: np.ndarray) -> DenseMissing:
    """The dense joint Gaussian of (x_0..x_N, y_1..y_N) conditioned on the non-NaN entries.

    Filtering moments at k condition on the observed entries of y_1..y_k, predictions on
    those of y_1..y_{k-1}; log p is the density of all observed entries. The moments of the
    observations (missing ones included) come from the same joint, with the observations
    appended to the state vector.
    """
    ys = np.asarray(ys, dtype=np.float64)
    N, Dy = ys.shape
    D = model.A.shape[0]
    mx, Sxx, my, Syy, Sxy = prior_moments(model, N)
    yflat = ys.reshape(-1)
    seen = ~np.isnan(yflat)
    nx = (N + 1) * D
    # Joint of z = (x, y): mean mz, covariance Szz.
    mz = np.concatenate([mx, my])
    Szz = np.block([[Sxx, Sxy], [Sxy.T, Syy]])

    def cond(upto_step):
        idx = np.flatnonzero(seen & (np.arange(N * Dy) < upto_step * Dy))
        cols = nx + idx
        return _condition(mz, Szz, mz[cols], Szz[np.ix_(cols, cols)], Szz[:, cols], yflat[idx])

    def xb(v, k):
        return v[k * D : (k + 1) * D]

    def xc(S, k, j):
        return S[k * D : (k + 1) * D, j * D : (j + 1) * D]

    fm, fc, pm, pc = [], [], [], []
    for k in range(N + 1):
        mean, cov = cond(k)
        fm.append(xb(mean, k))
        fc.append(xc(cov, k, k))
        if k >= 1:
            mean_p, cov_p = cond(k - 1)
            pm.append(xb(mean_p, k))
            pc.append(xc(cov_p, k, k))
    mean, cov = cond(N)
    sm = np.stack([xb(mean, k) for k in range(N + 1)])
    sc = np.stack([xc(cov, k, k) for k in range(N + 1)])
    cross = np.stack([xc(cov, k + 1, k) for k in range(N)])
    idx = np.flatnonzero(seen)
    ll = _mvn_logpdf(yflat[idx], my[idx], Syy[np.ix_(idx, idx)]) if idx.size else 0.0
    y_means, yx, yy = [], [], []
    for k in range(1, N + 1):
        ys_k = slice(nx + (k - 1) * Dy, nx + k * Dy)
        xs_k = slice(k * D, (k + 1) * D)
        ym = mean[ys_k]
        y_means.append(ym)
        yx.append(cov[ys_k, xs_k] + np.outer(ym, mean[xs_k]))
        yy.append(cov[ys_k, ys_k] + np.outer(ym, ym))
    post = DensePosterior(
        filter_means=np.stack(fm),
        filter_covs=np.stack(fc),
        pred_means=np.stack(pm),
        pred_covs=np.stack(pc),
        smooth_means=sm,
        smooth_covs=sc,
        smooth_cross=cross,
        log_likelihood=ll,
        joint_mean=mean[:nx],
        joint_cov=cov[:nx, :nx],
    )
    return DenseMissing(post, np.stack(y_means), np.stack(yx), np.stack(yy))


def dense_stats_missing(model: Model, ys: np.ndarray, length: int | None = None) -> dict:
    """EM statistics with missing observations treated as latent, from the dense joint.

    Sums run over k = 1..length (default N; a ragged sequence's observed length).
    """
    ref = dense_posterior_missing(model, ys)
    post = ref.post
    N = ys.shape[0] if length is None else length
    D = model.A.shape[0]
    second = post.joint_cov + np.outer(post.joint_mean, post.joint_mean)

    def block(k, j):
        return second[k * D : (k + 1) * D, j * D : (j + 1) * D]

    ks = range(1, N + 1)
    return dict(
        Sigma=sum(block(k, k) for k in ks) / N,
        Phi=sum(block(k - 1, k - 1) for k in ks) / N,
        B=sum(ref.yx[k - 1] for k in ks) / N,
        C=sum(block(k, k - 1) for k in ks) / N,
        D=sum(ref.yy[k - 1] for k in ks) / N,
        m0_smoothed=post.smooth_means[0],
        P0_smoothed=post.smooth_covs[0],
        log_likelihood=post.log_likelihood,
    )
