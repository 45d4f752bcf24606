"""Exact diffuse initialisation (``inf`` on the diagonal of ``P0``) against independent limits.

References, each independent of the augmented filter in ``jaxssm/_schedules/diffuse.py``:

* a dense joint-Gaussian oracle in 120-digit arithmetic (mpmath) with the diffuse prior
  variance ``kappa = 1e40``: ``log p_kappa(y) + (q/2) log kappa``, and the smoothed moments,
  lag-one cross-covariances and (on truncated series) filtered and predicted moments. The
  exact relation (module docstring of ``_schedules/diffuse.py``) is
  ``log p_kappa = L_d - (q/2) log kappa - log|S_N + I/kappa|/2 + ... ``, so at
  ``kappa = 1e40`` the oracle is the limit to ~1e-38: tolerance rtol 1e-9 (the issue's),
  measured agreement 1e-15 to 1e-13;
* Richardson extrapolation (degree 3 in ``1/c``) of jaxssm's ordinary float64 smoother at
  ``P0 = P_* + c W W^T``, ``c = 1e2 .. 1e5`` (the expansion in ``1/c`` has no ``log c`` term
  once ``(q/2) log c`` is added to the log-likelihood): its round-off is ``c eps`` relative
  and the truncation ``O(1e-14)``; rtol 1e-9 of each array's largest entry (measured
  <= 1.1e-10);
* statsmodels' exact diffuse ``UnobservedComponents`` (``llevel``, ``lltrend``): its
  ``loglike`` and smoothed states/covariances, rtol 1e-10 (both exact; measured ~1e-15).
  Time convention: statsmodels' ``alpha_t`` is jaxssm's ``x_t`` (row ``t``); its diffuse
  ``alpha_1`` has ``P_inf = I``, ours ``A A^T`` (from a diffuse ``x_0``), and the diffuse
  log-likelihood changes by ``-log|det A|`` with that choice: 0 for both models
  (``det A = 1``), and a known part of ``alpha_1``'s prior (``Q``) does not change the limit
  when every component is diffuse.

Every model has a gap (a NaN observation) inside the diffuse period.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

import jaxssm as ssm

mp = pytest.importorskip("mpmath")

INF = math.inf


# --- models -----------------------------------------------------------------------------------


def _local_level():
    y = np.array([np.nan, 1.3, 0.4, 2.1, 1.7, np.nan, 2.9, 3.4])[:, None]
    p = dict(m0=[0.7], P0=[[INF]], A=[[1.0]], Q=[[0.3]], H=[[1.0]], R=[[0.5]])
    return p, y


def _local_trend():
    y = np.array([0.2, np.nan, 1.1, 2.5, 3.1, 5.2, 6.0, np.nan, 9.4])[:, None]
    p = dict(
        m0=[0.3, -0.2],
        P0=[[INF, 0.0], [0.0, INF]],
        A=[[1.0, 1.0], [0.0, 1.0]],
        Q=[[0.3, 0.0], [0.0, 0.1]],
        H=[[1.0, 0.0]],
        R=[[0.5]],
    )
    return p, y


def _mixed():
    """D = 3 (one diffuse, two known and correlated), Dy = 2, full R, offsets, missing entries."""
    rng = np.random.default_rng(3)
    A = np.array([[0.9, 0.2, 0.0], [0.1, 0.7, 0.3], [0.0, -0.2, 0.8]])
    Lq = rng.normal(size=(3, 3)) * 0.3
    H = np.array([[1.0, 0.5, 0.0], [0.3, 0.0, 1.0]])
    y = rng.normal(size=(7, 2))
    y[0, :] = np.nan
    y[1, 1] = np.nan
    y[4, 0] = np.nan
    p = dict(
        m0=[5.0, 0.1, -0.3],
        P0=[[INF, 0.0, 0.0], [0.0, 0.6, 0.2], [0.0, 0.2, 0.4]],
        A=A.tolist(),
        Q=(Lq @ Lq.T + 0.05 * np.eye(3)).tolist(),
        H=H.tolist(),
        R=[[0.4, 0.1], [0.1, 0.3]],
        b=[0.2, 0.0, -0.1],
        d=[0.5, -0.4],
    )
    return p, y


MODELS = {"local_level": _local_level, "local_trend": _local_trend, "mixed": _mixed}


def _params(p, P0=None) -> ssm.LGSSM:
    fields = {k: jnp.asarray(np.asarray(v, np.float64)) for k, v in p.items()}
    if P0 is not None:
        fields["P0"] = jnp.asarray(P0)
    return ssm.LGSSM(**fields)


def _diffuse(p):
    P0 = np.asarray(p["P0"], np.float64)
    index = np.flatnonzero(np.isinf(np.diagonal(P0)))
    known = np.where(np.isinf(P0), 0.0, P0)
    return index, known


# --- the 120-digit dense oracle -----------------------------------------------------------------


def dense_limit(p, ys, kappa_exp=40, dps=120):
    """``(log p + q/2 log kappa, means, covs, cross)`` of the joint Gaussian at kappa = 10^exp.

    ``cross[k] = Cov(x_k, x_{k+1} | y)``. Dense: the covariance of ``x_0..x_N`` and the
    observed entries of ``y``, then Gaussian conditioning, all in ``dps``-digit arithmetic.
    """
    mp.mp.dps = dps
    kappa = mp.mpf(10) ** kappa_exp
    index, known = _diffuse(p)
    A, Q, H, R = (np.asarray(p[k], np.float64) for k in ("A", "Q", "H", "R"))
    D, Dy, N = A.shape[0], H.shape[0], ys.shape[0]
    b = np.asarray(p.get("b", np.zeros(D)), np.float64)
    d = np.asarray(p.get("d", np.zeros(Dy)), np.float64)
    f = lambda v: mp.mpf(float(v))  # noqa: E731  (exact: every double is an mpf)
    n = (N + 1) * D
    mean = [f(v) for v in p["m0"]] + [mp.mpf(0)] * (n - D)
    cov = [[mp.mpf(0)] * n for _ in range(n)]
    for i in range(D):
        for j in range(D):
            cov[i][j] = f(known[i, j]) + (kappa if (i == j and i in index) else 0)
    for k in range(1, N + 1):
        cur, prev = k * D, (k - 1) * D
        for i in range(D):
            mean[cur + i] = sum(f(A[i, t]) * mean[prev + t] for t in range(D)) + f(b[i])
        for j in range(k * D):  # Cov(x_k, earlier) = A Cov(x_{k-1}, earlier)
            for i in range(D):
                v = sum(f(A[i, t]) * cov[prev + t][j] for t in range(D))
                cov[cur + i][j] = cov[j][cur + i] = v
        for i in range(D):
            for j in range(D):
                cov[cur + i][cur + j] = sum(
                    f(A[j, u]) * cov[cur + i][prev + u] for u in range(D)
                ) + f(Q[i, j])
    obs = [(k, i) for k in range(N) for i in range(Dy) if not np.isnan(ys[k, i])]
    m = len(obs)
    Cyx = mp.matrix(m, n)
    for a, (k, i) in enumerate(obs):
        for c in range(n):
            Cyx[a, c] = sum(f(H[i, t]) * cov[(k + 1) * D + t][c] for t in range(D))
    Syy, resid = mp.matrix(m, m), mp.matrix(m, 1)
    for a, (k, i) in enumerate(obs):
        mu = sum(f(H[i, t]) * mean[(k + 1) * D + t] for t in range(D)) + f(d[i])
        resid[a] = f(ys[k, i]) - mu
        for c, (k2, i2) in enumerate(obs):
            Syy[a, c] = sum(Cyx[a, (k2 + 1) * D + t] * f(H[i2, t]) for t in range(D)) + (
                f(R[i, i2]) if k == k2 else 0
            )
    Sinv = mp.inverse(Syy)
    w = Sinv * resid
    ll = -(m * mp.log(2 * mp.pi) + mp.log(mp.det(Syy)) + (resid.T * w)[0]) / 2
    ll_d = ll + len(index) * mp.log(kappa) / 2
    post_mean = mp.matrix(mean) + Cyx.T * w
    post_cov = mp.matrix(cov) - Cyx.T * (Sinv * Cyx)

    def block(r, c):
        return np.array([[float(post_cov[r + i, c + j]) for j in range(D)] for i in range(D)])

    means = np.array([[float(post_mean[k * D + i]) for i in range(D)] for k in range(N + 1)])
    covs = np.array([block(k * D, k * D) for k in range(N + 1)])
    cross = np.array([block(k * D, (k + 1) * D) for k in range(N)])
    return float(ll_d), means, covs, cross


# --- exact limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_smoother_equals_dense_limit(name):
    p, y = MODELS[name]()
    sm = ssm.rts_smoother(_params(p), jnp.asarray(y))
    ll, means, covs, cross = dense_limit(p, y)
    assert_close(sm.log_likelihood, ll, 1e-9)
    assert_close(sm.means, means, 1e-9)
    assert_close(sm.covs, covs, 1e-9)
    # gains[k] solves G P_{k+1}^s = Cov(x_k, x_{k+1} | y), as the RTS gain does.
    assert_close(jnp.einsum("kij,kjl->kil", sm.gains, sm.covs[1:]), cross, 1e-9)
    assert_close(ssm.log_likelihood(_params(p), jnp.asarray(y)), ll, 1e-9)


def _entrywise_limit(actual, oracle):
    """``actual`` has +-inf where the oracle's entries are of order kappa, else its values."""
    diffuse = np.abs(oracle) > 1e30
    assert np.array_equal(np.isinf(actual), diffuse)
    assert np.array_equal(np.sign(actual[diffuse]), np.sign(oracle[diffuse]))
    finite = np.where(diffuse, 0.0, oracle)
    assert_close(np.where(diffuse, 0.0, actual), finite, 1e-9)


@pytest.mark.parametrize(
    "name", [pytest.param("local_level", marks=pytest.mark.slow), "local_trend", "mixed"]
)
def test_filter_equals_dense_limit(name):
    """Filtered row k is the oracle's smoothed row k on ``y_1..y_k``; predicted on ``y_1..y_k-1``.

    Rows still diffuse carry ``+-inf`` where the covariance grows like kappa.
    """
    p, y = MODELS[name]()
    f = ssm.kalman_filter(_params(p), jnp.asarray(y))
    saw_inf = False
    for k in range(1, y.shape[0] + 1):
        _, means, covs, _ = dense_limit(p, y[:k])
        assert_close(f.means[k], means[k], 1e-9)
        _entrywise_limit(np.asarray(f.covs[k]), covs[k])
        saw_inf |= bool(np.isinf(f.covs[k]).any())
        hidden = y[:k].copy()
        hidden[k - 1] = np.nan
        _, means, covs, _ = dense_limit(p, hidden)
        assert_close(f.pred_means[k - 1], means[k], 1e-9)
        _entrywise_limit(np.asarray(f.pred_covs[k - 1]), covs[k])
    assert saw_inf  # the gap keeps a component diffuse after the first update
    assert np.all(np.isfinite(f.covs[-1]))


#: The prior variances of the Richardson extrapolations: the truncation error is
#: O(prod 1/c) ~ 1e-14, the ordinary filter's round-off ~ c eps ~ 1e-11 relative.
CS = (1e2, 1e3, 1e4, 1e5)


def _richardson(values, cs=CS):
    """Extrapolate ``v(c) = v + sum_j a_j c^-j`` to ``c -> inf`` (degree ``len(cs) - 1``)."""
    n = len(cs)
    V = np.vander(1.0 / np.asarray(cs), n, increasing=True)
    w = np.linalg.solve(V.T, np.eye(n)[0])
    return sum(wi * np.asarray(v) for wi, v in zip(w, values, strict=True))


@pytest.mark.parametrize("name", MODELS)
def test_limit_of_large_P0(name):
    """The ordinary smoother at ``P0 = P_* + c W W^T``, extrapolated to ``c -> inf``."""
    p, y = MODELS[name]()
    index, known = _diffuse(p)
    q = len(index)
    cs = CS
    runs = []
    for c in cs:
        P0 = known.copy()
        P0[index, index] += c
        runs.append(ssm.rts_smoother(_params(p, P0), jnp.asarray(y), steady_state=False))
    exact = ssm.rts_smoother(_params(p), jnp.asarray(y))
    lls = [r.log_likelihood + 0.5 * q * math.log(c) for r, c in zip(runs, cs, strict=True)]
    assert_close(_richardson(lls, cs), exact.log_likelihood, 1e-9)
    # the uncorrected log-likelihood is far off: the (q/2) log c term is what differs
    assert abs(float(runs[-1].log_likelihood - exact.log_likelihood)) > 1.0
    for field in ("means", "covs"):
        extrapolated = _richardson([getattr(r, field) for r in runs], cs)
        assert_close(extrapolated, getattr(exact, field), 1e-9, atol_scale=1.0)


@pytest.mark.slow
def test_time_varying_with_inputs_is_the_limit_of_large_P0():
    """Time-varying ``Q`` and ``H``, inputs through ``B`` and ``D``: Richardson as above."""
    rng = np.random.default_rng(5)
    N = 7
    p, y = _local_trend()
    y = y[:N]
    Qs = np.stack([np.diag([0.3 + 0.05 * k, 0.1]) for k in range(N)])
    Hs = np.stack([[[1.0, 0.1 * k]] for k in range(N)])
    u = rng.normal(size=(N, 1))
    p = dict(p, Q=Qs, H=Hs, B=[[0.5], [0.1]], D=[[0.3]])
    index, known = _diffuse(p)
    cs = CS
    runs = []
    for c in cs:
        P0 = known.copy()
        P0[index, index] += c
        runs.append(ssm.rts_smoother(_params(p, P0), jnp.asarray(y), inputs=jnp.asarray(u)))
    exact = ssm.rts_smoother(_params(p), jnp.asarray(y), inputs=jnp.asarray(u))
    lls = [r.log_likelihood + 0.5 * len(index) * math.log(c) for r, c in zip(runs, cs, strict=True)]
    assert_close(_richardson(lls, cs), exact.log_likelihood, 1e-9)
    for field in ("means", "covs"):
        extrapolated = _richardson([getattr(r, field) for r in runs], cs)
        assert_close(extrapolated, getattr(exact, field), 1e-9, atol_scale=1.0)


@pytest.mark.parametrize(("level", "name"), [("llevel", "local_level"), ("lltrend", "local_trend")])
def test_statsmodels_exact_diffuse(level, name):
    sm_structural = pytest.importorskip("statsmodels.tsa.statespace.structural")
    p, y = MODELS[name]()
    model = sm_structural.UnobservedComponents(y[:, 0], level, use_exact_diffuse=True)
    Q = np.diagonal(np.asarray(p["Q"]))
    res = model.smooth([p["R"][0][0], *Q])
    ours = ssm.rts_smoother(_params(p), jnp.asarray(y))
    assert_close(ours.log_likelihood, res.llf, 1e-10)
    assert_close(ours.log_likelihood, model.loglike([p["R"][0][0], *Q]), 1e-10)
    assert_close(ours.means[1:], res.smoothed_state.T, 1e-10)
    assert_close(ours.covs[1:], np.moveaxis(res.smoothed_state_cov, -1, 0), 1e-10)
    # after statsmodels' diffuse period the filtered moments agree too
    f = ssm.kalman_filter(_params(p), jnp.asarray(y))
    d = res.nobs_diffuse
    assert_close(f.means[d + 1 :], res.filtered_state.T[d:], 1e-10)
    assert_close(f.covs[d + 1 :], np.moveaxis(res.filtered_state_cov, -1, 0)[d:], 1e-10)


def test_statsmodels_scaling_of_the_diffuse_prior():
    """General ``A``: statsmodels' diffuse ``alpha_1 ~ kappa I`` against our ``kappa A A^T``.

    The smoothed moments are the same limits; the diffuse log-likelihoods differ by exactly
    ``log|det A|`` (module docstring), here -0.7985.
    """
    mlemodel = pytest.importorskip("statsmodels.tsa.statespace.mlemodel")
    y = np.array([np.nan, 1.3, 0.4, 2.1, 1.7, np.nan, 2.9, 3.4])
    A = np.array([[0.9, 0.3], [0.0, 0.5]])
    Q = np.array([[0.3, 0.05], [0.05, 0.2]])
    H = np.array([[1.0, 0.4]])
    model = mlemodel.MLEModel(y, k_states=2)
    for name, value in (("design", H), ("transition", A), ("selection", np.eye(2))):
        model.ssm[name] = value
    model.ssm["state_cov"], model.ssm["obs_cov"] = Q, [[0.5]]
    model.ssm.initialize_diffuse()
    res = model.ssm.smooth()
    p = dict(m0=[0.0, 0.0], P0=[[INF, 0.0], [0.0, INF]], A=A, Q=Q, H=H, R=[[0.5]])
    ours = ssm.rts_smoother(_params(p), jnp.asarray(y[:, None]))
    shift = math.log(abs(np.linalg.det(A)))
    assert_close(ours.log_likelihood + shift, np.sum(res.llf_obs), 1e-10)
    assert_close(ours.means[1:], res.smoothed_state.T, 1e-10)
    assert_close(ours.covs[1:], np.moveaxis(res.smoothed_state_cov, -1, 0), 1e-10)


@pytest.mark.slow
def test_guide_page_runs():
    """docs/guides/diffuse.md: its snippets run, and its printed numbers are these."""
    from docs_snippets import ROOT, run_page

    ns = run_page(ROOT / "docs" / "guides" / "diffuse.md")
    assert abs(float(ns["smoothed"].log_likelihood) - (-9.906614669447201)) < 1e-9
    assert np.isinf(ns["filtered"].covs[1][1, 1])
    assert abs(float(ns["filtered"].covs[1][0, 1]) - 0.25) < 1e-12
    assert float(ns["info"].log_likelihood) > float(ns["info"].log_likelihoods[0])


# --- the other entry points ---------------------------------------------------------------------


def test_prior_mean_of_diffuse_components_is_irrelevant():
    p, y = _mixed()
    a = ssm.rts_smoother(_params(p), jnp.asarray(y))
    p2 = dict(p, m0=[-40.0, *p["m0"][1:]])
    b = ssm.rts_smoother(_params(p2), jnp.asarray(y))
    for field in ("means", "covs", "log_likelihood"):
        assert_close(getattr(b, field), getattr(a, field), 1e-12, atol_scale=1.0)


@pytest.mark.slow
def test_gradient_with_P0_held_constant():
    """``jax.grad`` through the diffuse path (``P0`` closed over) against central differences.

    Step 1e-5 in float64: truncation ~1e-10 and round-off ~1e-11 relative, so rtol 1e-7.
    """
    p, y = _mixed()
    params = _params(p)

    def loglik(Q, R):
        return ssm.log_likelihood(params._replace(Q=Q, R=R), jnp.asarray(y))

    gQ, gR = jax.grad(loglik, argnums=(0, 1))(params.Q, params.R)
    h = 1e-5
    for i, j in ((0, 0), (1, 2), (2, 2)):
        E = jnp.zeros_like(params.Q).at[i, j].set(h).at[j, i].set(h)
        fd = (loglik(params.Q + E, params.R) - loglik(params.Q - E, params.R)) / (2 * h)
        expected = gQ[i, j] + gQ[j, i] if i != j else gQ[i, i]
        assert_close(fd, expected, 1e-7)
    E = jnp.zeros_like(params.R).at[1, 1].set(h)
    fd = (loglik(params.Q, params.R + E) - loglik(params.Q, params.R - E)) / (2 * h)
    assert_close(fd, gR[1, 1], 1e-7)


@pytest.mark.slow
def test_float32_diffuse_is_close_to_float64():
    """float32 with ``inf`` in ``P0``: no large number is formed, so float32 keeps its precision.

    N = 300 local linear trend with a gap at the start. Tolerances: log-likelihood rtol 1e-5
    (a sum of 300 float32 terms; measured 2e-7 at N = 2,000), smoothed variances rtol 1e-4
    (measured 7e-7), means within 1e-2 standard deviations (measured 1.3e-3); every variance
    positive. (With ``P0 = 1e7 I`` the float32 covariance form returns a NaN log-likelihood.)
    """
    rng = np.random.default_rng(0)
    N = 300
    y = np.cumsum(np.cumsum(rng.normal(size=N)) * 0.1) + rng.normal(size=N)
    y[1:4] = np.nan
    p, _ = _local_trend()
    p = dict(p, Q=[[0.3, 0.0], [0.0, 0.01]])
    r64 = ssm.rts_smoother(_params(p), jnp.asarray(y[:, None]))
    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), _params(p))
    r32 = ssm.rts_smoother(p32, jnp.asarray(y[:, None], jnp.float32))
    assert r32.means.dtype == jnp.float32
    var64 = np.diagonal(np.asarray(r64.covs), axis1=1, axis2=2)
    var32 = np.diagonal(np.asarray(r32.covs, np.float64), axis1=1, axis2=2)
    assert np.all(var32 > 0)
    assert_close(float(r32.log_likelihood), r64.log_likelihood, 1e-5)
    assert_close(var32, var64, 1e-4)
    assert np.max(np.abs(np.asarray(r32.means, np.float64) - r64.means) / np.sqrt(var64)) < 1e-2


def test_batch_log_likelihood_is_the_sum():
    p, y = _local_trend()
    y2 = y[::-1].copy()
    params = _params(p)
    total = ssm.log_likelihood(params, jnp.asarray(np.stack([y, y2])))
    one = ssm.log_likelihood(params, jnp.asarray(y)) + ssm.log_likelihood(params, jnp.asarray(y2))
    assert_close(total, one, 1e-12)


def test_forecast_from_the_last_smoothed_moments():
    p, y = _mixed()
    params = _params(p)
    sm = ssm.rts_smoother(params, jnp.asarray(y))
    fc = ssm.forecast(params, jnp.asarray(y), 2)
    A, Q, b = (np.asarray(p[k]) for k in ("A", "Q", "b"))
    m1 = A @ np.asarray(sm.means[-1]) + b
    P1 = A @ np.asarray(sm.covs[-1]) @ A.T + Q
    assert_close(fc.means[0], m1, 1e-12)
    assert_close(fc.covs[0], P1, 1e-12)
    assert_close(fc.means[1], A @ m1 + b, 1e-12)


@pytest.mark.slow
def test_posterior_sample_moments():
    """4,000 draws: their mean and variance agree with the smoother within 5 standard errors."""
    p, y = _local_trend()
    params = _params(p)
    sm = ssm.rts_smoother(params, jnp.asarray(y))
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = np.asarray(jax.vmap(ssm.posterior_sample, in_axes=(0, None, None))(keys, params, y))
    assert np.all(np.isfinite(draws))
    var = np.diagonal(np.asarray(sm.covs), axis1=1, axis2=2)
    z = (draws.mean(0) - np.asarray(sm.means)) / np.sqrt(var / len(keys))
    assert np.max(np.abs(z)) < 5
    zv = (draws.var(0) - var) / (var * np.sqrt(2.0 / len(keys)))
    assert np.max(np.abs(zv)) < 5


@pytest.mark.slow
def test_e_step_is_the_limit_of_large_P0():
    p, y = _local_trend()
    index, known = _diffuse(p)
    cs = CS
    runs = []
    for c in cs:
        P0 = known.copy()
        P0[index, index] += c
        runs.append(ssm.e_step(_params(p, P0), jnp.asarray(y), steady_state=False)[0])
    stats, _ = ssm.e_step(_params(p), jnp.asarray(y))
    for field in ("Sigma", "Phi", "B", "C", "D", "m0_smoothed", "P0_smoothed"):
        extrapolated = _richardson([getattr(r, field) for r in runs], cs)
        assert_close(extrapolated, getattr(stats, field), 1e-9, atol_scale=1.0, err_msg=field)


def test_fit_em_keeps_the_diffuse_prior_and_rises():
    p, y = _local_trend()
    params = _params(p)
    fitted, info = ssm.fit_em(params, jnp.asarray(y), num_iters=8, update=("Q", "R"))
    trace = np.asarray(info.log_likelihoods)
    assert np.all(np.diff(trace) >= -1e-10 * np.abs(trace[:-1]))
    assert trace[-1] > trace[0] + 0.1
    assert np.array_equal(np.asarray(fitted.P0), np.asarray(params.P0))
    assert_close(trace[0], ssm.log_likelihood(params, jnp.asarray(y)), 1e-12)
    assert_close(info.log_likelihood, ssm.log_likelihood(fitted, jnp.asarray(y)), 1e-10)
    with pytest.raises(ValueError, match="update names m0.*diffuse"):
        ssm.fit_em(params, jnp.asarray(y), num_iters=2, update=("m0", "Q"))


@pytest.mark.slow
def test_fit_em_squarem_with_diffuse_P0():
    p, y = _local_trend()
    params = _params(p)
    plain, info = ssm.fit_em(params, jnp.asarray(y), num_iters=8, update=("Q", "R"))
    fast, sq = ssm.fit_em(
        params, jnp.asarray(y), num_iters=8, update=("Q", "R"), accelerate="squarem"
    )
    trace = np.asarray(sq.log_likelihoods)
    finite = trace[np.isfinite(trace)]
    assert np.all(np.diff(finite) >= -1e-10 * np.abs(finite[:-1]))
    assert float(sq.log_likelihood) >= float(info.log_likelihoods[7]) - 1e-9
    assert np.array_equal(np.asarray(fast.P0), np.asarray(params.P0))
    assert_close(sq.log_likelihood, ssm.log_likelihood(fast, jnp.asarray(y)), 1e-10)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("P0", "match"),
    [
        ([[1.0, INF], [INF, INF]], r"inf only on its diagonal.*\(0, 1\)"),
        ([[INF, 0.3], [0.3, 1.0]], r"diffuse component 0 .* otherwise be zero, got P0\[0, 1\]"),
        ([[-INF, 0.0], [0.0, 1.0]], "got -inf at index"),
        ([[np.nan, 0.0], [0.0, INF]], "got nan at index"),
        ([[INF, 0.0], [0.0, -1.0]], "known part"),
    ],
)
def test_bad_diffuse_P0(P0, match):
    p, y = _local_trend()
    with pytest.raises(ValueError, match=match):
        ssm.kalman_filter(_params(p, np.array(P0)), jnp.asarray(y))


def test_unsupported_entry_points_and_schedules():
    p, y = _local_trend()
    params, ys = _params(p), jnp.asarray(y)
    with pytest.raises(ValueError, match=r"P0 has inf on its diagonal.*supported by kalman_filter"):
        ssm.sample(jax.random.key(0), params, 5)
    with pytest.raises(ValueError, match="P0 has inf on its diagonal.*method='sequential'"):
        ssm.kalman_filter(params, ys, method="parallel")
    with pytest.raises(ValueError, match="P0 has inf on its diagonal.*steady_state=True"):
        ssm.rts_smoother(params, ys, steady_state=True)


def test_unidentified_diffuse_component():
    """A diffuse component the observations never see has no posterior: an error."""
    p, y = _local_trend()
    p = dict(p, A=[[1.0, 0.0], [0.0, 1.0]])  # the slope no longer feeds the level
    with pytest.raises(ValueError, match=r"diffuse components \[0, 1\].*not identified"):
        ssm.log_likelihood(_params(p), jnp.asarray(y))
