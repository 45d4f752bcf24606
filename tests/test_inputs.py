"""Inputs, offsets and time-varying matrices (the general model of DESIGN.md).

Reference: the dense joint Gaussian of the whole model (tests/reference.py), built
from the model's own definition as one affine map of independent noise and conditioned on
the observed entries by plain linear algebra. Tolerance rtol 1e-10 in float64: the
recursions and the dense solves agree to about 1e-13 on these well-conditioned short
series; 1e-10 leaves room for the conditioning of the larger joint systems while still
catching any wrong term (a missing offset moves results at O(1)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxssm as ssm
from jaxssm._learn import mstep as _mstep
from tests.helpers import assert_close
from tests.reference import (
    dense_posterior,
    dense_sufficient_stats,
    general,
    random_model,
    random_spd,
)

RTOL = 1e-10
N = 9
D, DY, DU = 3, 2, 2


def _fields(rng, *, inputs=True, offsets=True, varying=(), singular_q=False):
    """LGSSM keyword fields of a random model and its inputs."""
    base = random_model(rng, D, DY)
    f = dict(m0=base.m0, P0=base.P0, A=base.A, Q=base.Q, H=base.H, R=base.R)
    if singular_q:  # rank-one process noise: the smoother needs the semidefinite solve
        g = rng.standard_normal(D)
        f["Q"] = 0.3 * np.outer(g, g)
    if inputs:
        f["B"] = rng.standard_normal((D, DU))
        f["D"] = rng.standard_normal((DY, DU))
    if offsets:
        f["b"] = rng.standard_normal(D)
        f["d"] = rng.standard_normal(DY)
    for name in varying:
        x = f[name]
        if name in ("Q", "R"):
            f[name] = np.stack([random_spd(rng, x.shape[0], 0.5) for _ in range(N)])
        elif name == "A":
            f[name] = np.stack([0.9 * random_model(rng, D, DY).A for _ in range(N)])
        else:
            f[name] = x[None] + 0.3 * rng.standard_normal((N,) + x.shape)
    u = rng.standard_normal((N, DU)) if inputs else None
    return f, u


def _params(f):
    return ssm.LGSSM(**{k: jnp.asarray(v) for k, v in f.items() if v is not None})


def _ys(rng, f, u, missing=0.0):
    """Observations simulated from the model itself (numpy loop), with some entries NaN."""
    g = general(f, N, u)
    x = rng.multivariate_normal(g.m0, g.P0)
    ys = np.zeros((N, DY))
    for k in range(N):
        noise = rng.multivariate_normal(np.zeros(D), g.Q[k] + 0 * np.eye(D), method="eigh")
        x = g.A[k] @ x + g.c[k] + noise
        ys[k] = g.H[k] @ x + g.e[k] + rng.multivariate_normal(np.zeros(DY), g.R[k])
    if missing:
        ys[rng.uniform(size=ys.shape) < missing] = np.nan
        ys[0, 0] = np.nan
        ys[N // 2] = np.nan
    return ys


CASES = {
    "inputs+offsets": dict(),
    "offsets only": dict(inputs=False),
    "inputs only": dict(offsets=False),
    "time-varying A,Q,H,R": dict(varying=("A", "Q", "H", "R")),
    "time-varying B,b,D,d": dict(varying=("B", "b", "D", "d")),
    "singular Q + inputs": dict(singular_q=True),
}


@pytest.fixture(params=list(CASES), scope="module")
def case(request):
    rng = np.random.default_rng(list(CASES).index(request.param) + 11)
    f, u = _fields(rng, **CASES[request.param])
    ys = _ys(rng, f, u, missing=0.2)
    return f, u, ys, dense_posterior(f, ys, u)


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_filter_and_smoother_match_dense_oracle(case, method):
    f, u, ys, ref = case
    p = _params(f)
    y = jnp.asarray(ys)
    uu = None if u is None else jnp.asarray(u)
    filt = ssm.kalman_filter(p, y, inputs=uu, method=method)
    sm = ssm.rts_smoother(p, y, inputs=uu, method=method)
    assert_close(filt.means, ref.filter_means, RTOL)
    assert_close(filt.covs, ref.filter_covs, RTOL)
    assert_close(filt.pred_means, ref.pred_means, RTOL)
    assert_close(filt.pred_covs, ref.pred_covs, RTOL)
    assert_close(sm.means, ref.smooth_means, RTOL)
    assert_close(sm.covs, ref.smooth_covs, RTOL)
    cross = jnp.einsum("kij,klj->kil", sm.covs[1:], sm.gains)
    assert_close(cross, ref.smooth_cross, RTOL)
    np.testing.assert_allclose(float(filt.log_likelihood), ref.log_likelihood, rtol=RTOL)
    np.testing.assert_allclose(float(sm.log_likelihood), ref.log_likelihood, rtol=RTOL)
    ll = ssm.log_likelihood(p, y, inputs=uu, method=method)
    np.testing.assert_allclose(float(ll), ref.log_likelihood, rtol=RTOL)


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_e_step_matches_dense_expectations(case, method):
    f, u, ys, _ = case
    p = _params(f)
    uu = None if u is None else jnp.asarray(u)
    stats, ll = ssm.e_step(p, jnp.asarray(ys), inputs=uu, method=method)
    ref = dense_sufficient_stats(f, ys, u)
    for name in ("Sigma", "Phi", "B", "C", "D", "U", "XU", "XpU", "YU"):
        assert_close(getattr(stats, name), ref[name], RTOL, err_msg=name)
    assert_close(stats.m0_smoothed, ref["m0_smoothed"], RTOL)
    assert_close(stats.P0_smoothed, ref["P0_smoothed"], RTOL)
    np.testing.assert_allclose(float(ll), ref["log_likelihood"], rtol=RTOL)


def test_known_initial_state_and_drift():
    """A random walk with drift from a known start (P0 = 0): the dense oracle at 1e-10."""
    f = dict(
        m0=np.array([1.0]),
        P0=np.zeros((1, 1)),
        A=np.eye(1),
        Q=np.array([[0.1]]),
        H=np.eye(1),
        R=np.array([[0.5]]),
        b=np.array([0.7]),
    )
    rng = np.random.default_rng(3)
    ys = (1.0 + 0.7 * np.arange(1, N + 1) + rng.standard_normal(N))[:, None]
    ref = dense_posterior(f, ys)
    sm = ssm.rts_smoother(_params(f), jnp.asarray(ys))
    assert_close(sm.means, ref.smooth_means, RTOL)
    assert_close(sm.covs, ref.smooth_covs, RTOL, atol_scale=1e-8)
    np.testing.assert_allclose(float(sm.log_likelihood), ref.log_likelihood, rtol=RTOL)


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_ar2_with_intercept_in_companion_form(method):
    """AR(2) with an intercept: singular Q = diag(s2, 0), offset b = [c, 0], a noisy sensor."""
    f = dict(
        m0=np.array([0.5, 0.2]),
        P0=np.array([[1.0, 0.3], [0.3, 1.0]]),
        A=np.array([[0.6, 0.3], [1.0, 0.0]]),
        Q=np.diag([0.2, 0.0]),
        H=np.array([[1.0, 0.0]]),
        R=np.array([[0.05]]),
        b=np.array([1.5, 0.0]),
    )
    rng = np.random.default_rng(31)
    ys = 4.0 + rng.standard_normal((N, 1))
    ys[3] = np.nan
    ref = dense_posterior(f, ys)
    sm = ssm.rts_smoother(_params(f), jnp.asarray(ys), method=method)
    assert_close(sm.means, ref.smooth_means, RTOL)
    assert_close(sm.covs, ref.smooth_covs, RTOL)
    np.testing.assert_allclose(float(sm.log_likelihood), ref.log_likelihood, rtol=RTOL)


# --- the steady-state path with offsets, against the full recursion --------------------------


@pytest.mark.parametrize("missing", [False, True])
def test_steady_path_with_inputs_matches_full_recursion(missing):
    rng = np.random.default_rng(5)
    f, _ = _fields(rng)
    n = 600
    u = rng.standard_normal((n, DU))
    p = _params(f)
    xs, ys = ssm.sample(jax.random.key(0), p, n, inputs=jnp.asarray(u))
    ys = np.array(ys)
    if missing:
        ys[100:140] = np.nan
        ys[300, 0] = np.nan
    y, uu = jnp.asarray(ys), jnp.asarray(u)
    fast = ssm.rts_smoother(p, y, inputs=uu, steady_state=True)
    full = ssm.rts_smoother(p, y, inputs=uu, steady_state=False)
    for a, b in zip(fast, full, strict=True):
        assert_close(a, b, RTOL)
    s_fast, ll_fast = ssm.e_step(p, y, inputs=uu, steady_state=True)
    s_full, ll_full = ssm.e_step(p, y, inputs=uu, steady_state=False)
    for name in s_fast._fields:
        assert_close(getattr(s_fast, name), getattr(s_full, name), RTOL, err_msg=name)
    np.testing.assert_allclose(float(ll_fast), float(ll_full), rtol=RTOL)
    filt = ssm.kalman_filter(p, y, inputs=uu, steady_state=True)
    assert_close(filt.pred_means, full_filter(p, y, uu).pred_means, RTOL)


def full_filter(p, y, u):
    return ssm.kalman_filter(p, y, inputs=u, steady_state=False)


# --- M-step -----------------------------------------------------------------------------------


def _grad_expected(params, stats, names):
    def objective(sub):
        return _mstep._expected_log_joint(params._replace(**sub), stats)

    return jax.grad(objective)({n: getattr(params, n) for n in names})


@pytest.mark.parametrize(
    "update",
    [
        ("A", "B", "b", "Q", "H", "D", "d", "R", "m0", "P0"),
        ("A", "Q"),
        ("B", "b"),
        ("b", "d", "Q", "R"),
        ("H", "D", "R"),
    ],
)
def test_m_step_is_a_stationary_point_and_holds_the_rest(update):
    rng = np.random.default_rng(8)
    f, u = _fields(rng)
    ys = _ys(rng, f, u, missing=0.1)
    p = _params(f)
    stats, _ = ssm.e_step(p, jnp.asarray(ys), inputs=jnp.asarray(u))
    new = ssm.m_step(p, stats, update=update)
    free = [n for n in update if n not in ("Q", "R", "P0")]
    grads = _grad_expected(new, stats, free)
    for n in free:
        scale = np.max(np.abs(np.asarray(getattr(new, n)))) + 1.0
        np.testing.assert_allclose(np.asarray(grads[n]), 0.0, atol=1e-8 * scale, err_msg=n)
    # Covariances: the stationarity of Q, R, P0 (symmetric gradients) as well.
    covs = [n for n in update if n in ("Q", "R", "P0")]
    if covs:
        g = _grad_expected(new, stats, covs)
        for n in covs:
            np.testing.assert_allclose(np.asarray(g[n]), 0.0, atol=1e-7, err_msg=n)
    for n in p._fields:
        if n not in update:
            np.testing.assert_array_equal(np.asarray(getattr(new, n)), np.asarray(getattr(p, n)))
    # And it does not lower the objective.
    assert float(_mstep._expected_log_joint(new, stats)) >= float(
        _mstep._expected_log_joint(p, stats)
    )


def test_em_is_monotone_and_recovers_b_and_B():
    rng = np.random.default_rng(21)
    true = dict(
        m0=np.zeros(2),
        P0=np.eye(2),
        A=np.array([[0.8, 0.1], [-0.2, 0.7]]),
        Q=0.05 * np.eye(2),
        H=np.eye(2),
        R=0.1 * np.eye(2),
        B=np.array([[1.0, -0.5], [0.3, 0.8]]),
        b=np.array([0.4, -0.2]),
    )
    n = 4000
    u = rng.standard_normal((n, 2))
    _, ys = ssm.sample(jax.random.key(1), _params(true), n, inputs=jnp.asarray(u))
    start = _params(dict(true, A=0.5 * np.eye(2), Q=np.eye(2), B=np.zeros((2, 2)), b=None))
    fitted, info = ssm.fit_em(
        start, ys, inputs=jnp.asarray(u), num_iters=60, update=("A", "B", "b", "Q")
    )
    lls = np.asarray(info.log_likelihoods)
    assert np.all(np.diff(lls) >= -1e-8 * np.abs(lls[1:]))
    assert float(info.log_likelihood) >= lls[-1] - 1e-8 * abs(lls[-1])
    np.testing.assert_allclose(np.asarray(fitted.B), true["B"], atol=0.05)
    np.testing.assert_allclose(np.asarray(fitted.b), true["b"], atol=0.05)
    np.testing.assert_allclose(np.asarray(fitted.A), true["A"], atol=0.05)
    # The same fit with the inputs ignored is worse by far.
    plain, info_plain = ssm.fit_em(start._replace(B=None), ys, num_iters=60)
    assert float(info.log_likelihood) > float(info_plain.log_likelihood) + 100


def test_em_observation_side_offsets_monotone():
    rng = np.random.default_rng(4)
    f, u = _fields(rng)
    p = _params(f)
    u = jnp.asarray(rng.standard_normal((300, DU)))
    _, ys = ssm.sample(jax.random.key(2), p, 300, inputs=u)
    start = p._replace(D=jnp.zeros((DY, DU)), d=None, H=p.H + 0.3)
    _, info = ssm.fit_em(start, ys, inputs=u, num_iters=15, update=("H", "D", "d", "R"))
    lls = np.asarray(info.log_likelihoods)
    assert np.all(np.diff(lls) >= -1e-8 * np.abs(lls[1:]))


# --- gradients, vmap, jit ---------------------------------------------------------------------


def test_gradients_match_finite_differences(case):
    f, u, ys, _ = case
    p = _params(f)
    y = jnp.asarray(ys)
    uu = None if u is None else jnp.asarray(u)
    names = [n for n in ("B", "b", "D", "d", "A") if f.get(n) is not None]

    def ll(sub):
        return ssm.log_likelihood(p._replace(**sub), y, inputs=uu)

    sub = {n: getattr(p, n) for n in names}
    g = jax.grad(ll)(sub)
    h = 1e-6
    for n in names:
        x = np.asarray(sub[n])
        idx = tuple(0 for _ in x.shape)
        e = np.zeros_like(x)
        e[idx] = h
        up = float(ll(dict(sub, **{n: jnp.asarray(x + e)})))
        down = float(ll(dict(sub, **{n: jnp.asarray(x - e)})))
        np.testing.assert_allclose(float(np.asarray(g[n])[idx]), (up - down) / (2 * h), rtol=1e-6)


def test_batch_with_inputs_equals_sum_of_sequences():
    rng = np.random.default_rng(9)
    f, _ = _fields(rng)
    p = _params(f)
    u = jnp.asarray(rng.standard_normal((3, N, DU)))
    ys = jnp.stack([ssm.sample(jax.random.key(i), p, N, inputs=u[i])[1] for i in range(3)])
    total = ssm.log_likelihood(p, ys, inputs=u)
    each = sum(float(ssm.log_likelihood(p, ys[i], inputs=u[i])) for i in range(3))
    np.testing.assert_allclose(float(total), each, rtol=1e-12)
    stats, _ = ssm.e_step(p, ys, inputs=u)
    per = [ssm.e_step(p, ys[i], inputs=u[i])[0] for i in range(3)]
    assert_close(stats.YU, np.mean([np.asarray(s.YU) for s in per], axis=0), 1e-12)
    vm = jax.vmap(lambda y, uu: ssm.log_likelihood(p, y, inputs=uu))(ys, u)
    np.testing.assert_allclose(float(jnp.sum(vm)), each, rtol=1e-12)


def test_jit_of_the_public_entry_points():
    rng = np.random.default_rng(10)
    f, u = _fields(rng, varying=("H",))
    p, uu = _params(f), jnp.asarray(u)
    ys = jnp.asarray(_ys(rng, f, u))
    eager = ssm.rts_smoother(p, ys, inputs=uu)
    jitted = jax.jit(lambda p, y, u: ssm.rts_smoother(p, y, inputs=u))(p, ys, uu)
    for a, b in zip(eager, jitted, strict=True):
        assert_close(a, b, 1e-13)


# --- sampling, forecasting, posterior draws, diagnostics --------------------------------------


def test_sample_follows_the_model_exactly_without_noise():
    rng = np.random.default_rng(12)
    f, u = _fields(rng, varying=("A", "b", "H"))
    # No state noise; observation noise at 1e-100 (R = 0 has no density, which the
    # validation refuses): the draw is the model's deterministic path.
    f = dict(f, P0=np.zeros((D, D)), Q=np.zeros((D, D)), R=1e-200 * np.eye(DY))
    xs, ys = ssm.sample(jax.random.key(0), _params(f), N, inputs=jnp.asarray(u))
    g = general(f, N, u)
    x = g.m0
    for k in range(N):
        x = g.A[k] @ x + g.c[k]
        np.testing.assert_allclose(np.asarray(xs[k + 1]), x, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(np.asarray(ys[k]), g.H[k] @ x + g.e[k], rtol=1e-13, atol=1e-13)


def test_forecast_with_future_inputs_matches_dense_oracle():
    rng = np.random.default_rng(13)
    f, u = _fields(rng)
    h = 4
    n = N - h
    ys = _ys(rng, f, u, missing=0.1)
    ys[n:] = np.nan
    ref = dense_posterior(f, ys, u)  # the future as missing data
    p = _params(f)
    fc = ssm.forecast(
        p, jnp.asarray(ys[:n]), h, inputs=jnp.asarray(u[:n]), future_inputs=jnp.asarray(u[n:])
    )
    assert_close(fc.means, ref.smooth_means[n + 1 :], RTOL)
    assert_close(fc.covs, ref.smooth_covs[n + 1 :], RTOL)
    g = general(f, N, u)
    obs_means = np.einsum("ij,kj->ki", f["H"], ref.smooth_means[n + 1 :]) + g.e[n:]
    assert_close(fc.obs_means, obs_means, RTOL)
    xs, yf = ssm.forecast_sample(
        jax.random.key(0),
        p,
        jnp.asarray(ys[:n]),
        h,
        inputs=jnp.asarray(u[:n]),
        future_inputs=jnp.asarray(u[n:]),
    )
    assert xs.shape == (h, D) and yf.shape == (h, DY)
    with pytest.raises(ValueError, match="future_inputs"):
        ssm.forecast(p, jnp.asarray(ys[:n]), h, inputs=jnp.asarray(u[:n]))


def test_posterior_draws_have_the_dense_posterior_mean():
    rng = np.random.default_rng(14)
    f, u = _fields(rng, varying=("A",))
    ys = _ys(rng, f, u, missing=0.1)
    ref = dense_posterior(f, ys, u)
    p, y, uu = _params(f), jnp.asarray(ys), jnp.asarray(u)
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = jax.vmap(lambda k: ssm.posterior_sample(k, p, y, inputs=uu))(keys)
    se = np.sqrt(np.einsum("kii->ki", ref.smooth_covs) / keys.shape[0])
    assert np.all(np.abs(np.asarray(draws.mean(0)) - ref.smooth_means) < 6 * se + 1e-12)
    seq = ssm.posterior_sample(keys[0], p, y, inputs=uu)
    par = ssm.posterior_sample(keys[0], p, y, inputs=uu, method="parallel")
    assert_close(seq, par, RTOL)


def test_filter_diagnostics_use_the_offsets():
    rng = np.random.default_rng(15)
    f, u = _fields(rng, varying=("H",))
    ys = _ys(rng, f, u)
    p, y, uu = _params(f), jnp.asarray(ys), jnp.asarray(u)
    filt = ssm.kalman_filter(p, y, inputs=uu)
    diag = ssm.filter_diagnostics(p, y, filt, inputs=uu)
    g = general(f, N, u)
    innov = ys - np.einsum("kij,kj->ki", g.H, np.asarray(filt.pred_means)) - g.e
    assert_close(diag.innovations, innov, 1e-12)
    np.testing.assert_allclose(
        float(jnp.sum(diag.log_likelihoods)), float(filt.log_likelihood), rtol=1e-12
    )


def test_fit_mle_trains_gains_and_offsets():
    rng = np.random.default_rng(16)
    f, u = _fields(rng)
    p, uu = _params(f), jnp.asarray(u)
    ys = jnp.asarray(_ys(rng, f, u))
    import optax

    start = p._replace(B=jnp.zeros((D, DU)), d=None)
    fitted, info = ssm.fit_mle(
        start, ys, inputs=uu, optimizer=optax.adam(0.05), num_iters=40, update=("B", "d")
    )
    assert float(info.log_likelihood) > float(info.log_likelihoods[0])
    np.testing.assert_array_equal(np.asarray(fitted.A), np.asarray(p.A))


# --- clear errors -----------------------------------------------------------------------------


def test_errors_name_the_argument():
    rng = np.random.default_rng(17)
    f, u = _fields(rng)
    p, uu = _params(f), jnp.asarray(u)
    ys = jnp.asarray(_ys(rng, f, u))
    with pytest.raises(ValueError, match="inputs must be given"):
        ssm.kalman_filter(p, ys)
    with pytest.raises(ValueError, match=r"inputs must have shape \[N, Du\]"):
        ssm.kalman_filter(p, ys, inputs=uu[:-1])
    plain = p._replace(B=None, D=None)
    with pytest.raises(ValueError, match="neither B nor D"):
        ssm.kalman_filter(plain, ys, inputs=uu)
    with pytest.raises(ValueError, match="inputs must be finite"):
        ssm.kalman_filter(p, ys, inputs=uu.at[2, 1].set(jnp.nan))
    with pytest.raises(ValueError, match="same number of input columns"):
        ssm.LGSSM  # noqa: B018
        ssm.kalman_filter(p._replace(D=jnp.zeros((DY, DU + 1))), ys, inputs=uu)
    tv = p._replace(H=jnp.stack([p.H] * (N + 1)))
    with pytest.raises(ValueError, match="time-varying H"):
        ssm.kalman_filter(tv, ys, inputs=uu)
    tv = p._replace(H=jnp.stack([p.H] * N))
    with pytest.raises(ValueError, match="steady_state=True needs a time-invariant model"):
        ssm.kalman_filter(tv, ys, inputs=uu, steady_state=True)
    with pytest.raises(ValueError, match="steady_state=True needs a time-invariant model"):
        ssm.kalman_filter(tv, ys, inputs=uu, method="parallel", steady_state=True)
    with pytest.raises(ValueError, match="cannot update H"):
        ssm.fit_em(tv, ys, inputs=uu, num_iters=2, update=("H", "R"))
    with pytest.raises(ValueError, match="forecast needs"):
        ssm.forecast(tv, ys, 2, inputs=uu, future_inputs=uu[:2])
    with pytest.raises(ValueError, match="time-invariant fields only"):
        import optax

        ssm.fit_mle(tv, ys, inputs=uu, optimizer=optax.adam(0.1), num_iters=2, update=("H",))
    with pytest.raises(ValueError, match="no inputs were given"):
        ssm.fit_em(plain, ys, num_iters=2, update=("B",))
    with pytest.raises(ValueError, match=r"b must have shape \[D\]"):
        ssm.kalman_filter(p._replace(b=jnp.zeros(D + 1)), ys, inputs=uu)


def test_time_varying_em_on_the_other_side_is_allowed():
    """Known, changing H and R with (A, Q) learnt: the transition M-step needs no H."""
    rng = np.random.default_rng(18)
    f, u = _fields(rng, inputs=False, offsets=False, varying=("H", "R"))
    p = _params(f)
    ys = jnp.asarray(_ys(rng, f, None))
    _, info = ssm.fit_em(p, ys, num_iters=10, update=("A", "Q"))
    lls = np.asarray(info.log_likelihoods)
    assert np.all(np.diff(lls) >= -1e-8 * np.abs(lls[1:]))
