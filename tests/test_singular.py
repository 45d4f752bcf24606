"""Singular (positive semi-definite) P0, Q and R against the dense joint Gaussian oracle.

The models people bring: an AR(2) in companion form (``Q = diag(s2, 0)``), observed with
noise and exactly; a local linear trend with noise on the slope only; a known initial state
(``P0 = 0``); a noise-free sensor (``R`` singular, the innovation covariance still positive
definite). ``reference.dense_posterior`` needs no factor of ``P0`` or ``Q``: they enter only
through the joint covariance of ``(x_0..x_N, y_1..y_N)``, and the conditioning uses only
the Cholesky factor of the observations' covariance, positive definite in every case here.

Tolerances: rtol 1e-10 in float64 (with the absolute floor of ``helpers.assert_close`` at
1e-2 of that times the array's largest entry, for entries that are exactly zero in the
oracle); the same as the positive-definite oracle tests. Positive controls assert that the
predicted covariance really is singular, i.e. that the semi-definite branch of the smoother
gain ran.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from reference import Model, dense_posterior, random_model, random_spd

import jaxssm as ssm
from jaxssm import steps

RTOL = 1e-10
N = 12
SCHEDULES = {
    "sequential": dict(steady_state=False),
    "steady": dict(steady_state=True),
    "parallel": dict(method="parallel"),
}


def _ar2(r):
    phi1, phi2, s2 = 0.6, 0.3, 0.5
    return Model(
        m0=np.array([0.3, -0.2]),
        P0=np.array([[1.0, 0.4], [0.4, 1.0]]),
        A=np.array([[phi1, phi2], [1.0, 0.0]]),
        Q=np.diag([s2, 0.0]),
        H=np.array([[1.0, 0.0]]),
        R=np.array([[r]]),
    )


def _local_linear_trend(P0):
    return Model(
        m0=np.array([1.0, 0.1]),
        P0=P0,
        A=np.array([[1.0, 1.0], [0.0, 1.0]]),
        Q=np.diag([0.0, 0.05]),
        H=np.array([[1.0, 0.0]]),
        R=np.array([[0.2]]),
    )


def _known_initial_state():
    model = random_model(np.random.default_rng(5), 3, 2)
    return model._replace(P0=np.zeros((3, 3)))


def _noise_free_sensor():
    model = random_model(np.random.default_rng(6), 3, 2)
    return model._replace(R=np.diag([0.3, 0.0]))


def _rank_one_q():
    rng = np.random.default_rng(7)
    model = random_model(rng, 3, 1)
    v = rng.standard_normal(3)
    return model._replace(Q=np.outer(v, v), P0=random_spd(rng, 3))


MODELS = {
    "ar2_noisy": lambda: _ar2(0.1),
    "ar2_exact": lambda: _ar2(0.0),  # y_k = x_k exactly: every predicted covariance singular
    "llt_slope_noise": lambda: _local_linear_trend(np.diag([1.0, 0.5])),
    "llt_known_start": lambda: _local_linear_trend(np.zeros((2, 2))),
    "known_initial_state": _known_initial_state,
    "noise_free_sensor": _noise_free_sensor,
    "rank_one_q": _rank_one_q,
}


def _data(model):
    """Observations from a fixed seed (any finite ys is fine for the conditioning identity)."""
    rng = np.random.default_rng(11)
    D, Dy = model.A.shape[0], model.H.shape[0]
    lam, V = np.linalg.eigh(model.Q)
    factor = V * np.sqrt(np.maximum(lam, 0.0))
    x = model.m0.copy()
    ys = []
    for _ in range(N):
        x = model.A @ x + factor @ rng.standard_normal(D)
        ys.append(model.H @ x + np.sqrt(np.diag(model.R)) * rng.standard_normal(Dy))
    return np.stack(ys)


# Every model on the full sequential recursion; the steady-state and parallel schedules (a
# compilation each per shape, 10-40 s on 2 cores) on the cases that stress them most, all
# but one under `-m slow`.
_SLOW = pytest.mark.slow
ORACLE_CASES = (
    [(name, "sequential") for name in MODELS]
    + [("ar2_exact", "steady")]
    + [pytest.param(n, "steady", marks=_SLOW) for n in ("llt_known_start", "noise_free_sensor")]
    + [
        pytest.param(n, "parallel", marks=_SLOW)
        for n in ("ar2_exact", "llt_known_start", "noise_free_sensor")
    ]
)


@pytest.mark.parametrize("name, schedule", ORACLE_CASES)
def test_against_dense_oracle(name, schedule):
    model = MODELS[name]()
    ys = _data(model)
    ref = dense_posterior(model, ys)
    params = to_params(model)
    ssm.validate_params(params)  # singular PSD covariances are accepted
    kw = SCHEDULES[schedule]
    filt = ssm.kalman_filter(params, jnp.asarray(ys), **kw)
    sm = ssm.rts_smoother(params, jnp.asarray(ys), **kw)
    assert_close(filt.means, ref.filter_means, RTOL, err_msg="filter means")
    assert_close(filt.covs, ref.filter_covs, RTOL, err_msg="filter covs")
    assert_close(filt.pred_means, ref.pred_means, RTOL, err_msg="pred means")
    assert_close(filt.pred_covs, ref.pred_covs, RTOL, err_msg="pred covs")
    assert_close(sm.means, ref.smooth_means, RTOL, err_msg="smoothed means")
    assert_close(sm.covs, ref.smooth_covs, RTOL, err_msg="smoothed covs")
    cross = jnp.einsum("kij,klj->kil", sm.covs[1:], sm.gains)
    assert_close(cross, ref.smooth_cross, RTOL, err_msg="cross-covariances")
    np.testing.assert_allclose(float(filt.log_likelihood), ref.log_likelihood, rtol=RTOL)
    np.testing.assert_allclose(
        float(ssm.log_likelihood(params, jnp.asarray(ys), **kw)), ref.log_likelihood, rtol=RTOL
    )
    assert np.all(np.isfinite(np.asarray(sm.gains)))


@pytest.mark.parametrize("name", ["ar2_exact", "llt_known_start"])
def test_positive_control_predicted_covariance_is_singular(name):
    """The cases above really exercise the semi-definite branch of the smoother gain."""
    model = MODELS[name]()
    ref = dense_posterior(model, _data(model))
    smallest = min(np.linalg.eigvalsh(P)[0] / np.linalg.eigvalsh(P)[-1] for P in ref.pred_covs)
    assert smallest < 1e-14


def test_smoother_gain_is_exact_on_the_range():
    """G P^- = P A^T for a singular P^- (G is not unique; this is what the smoother needs)."""
    model = _ar2(0.0)
    A = jnp.asarray(model.A)
    cov = jnp.diag(jnp.array([0.0, 0.7]))  # x1 known exactly after an exact observation
    pred = steps.predict_cov(cov, A, jnp.asarray(model.Q))
    assert np.linalg.eigvalsh(np.asarray(pred))[0] == 0.0
    assert not np.all(np.isfinite(np.asarray(jnp.linalg.cholesky(pred))))  # Cholesky fails
    G = steps.smoother_gain(cov, pred, A)
    assert_close(G @ pred, cov @ A.T, RTOL)
    # Against the pseudo-inverse gain: the same on the range of P^-.
    G_pinv = np.asarray(cov @ A.T) @ np.linalg.pinv(np.asarray(pred))
    assert_close(G @ pred, G_pinv @ np.asarray(pred), RTOL)
    # Zero predicted covariance (P = 0, Q = 0): the gain is zero, not NaN.
    zero = jnp.zeros((2, 2))
    np.testing.assert_array_equal(steps.smoother_gain(zero, zero, A), np.zeros((2, 2)))


def test_smoother_gain_positive_definite_case_unchanged():
    """The positive-definite branch is the Cholesky solve, bit for bit."""
    rng = np.random.default_rng(0)
    model = random_model(rng, 4, 2)
    cov, pred = jnp.asarray(random_spd(rng, 4)), jnp.asarray(random_spd(rng, 4))
    A = jnp.asarray(model.A)
    expected = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(pred), True), A @ cov).T
    np.testing.assert_array_equal(steps.smoother_gain(cov, pred, A), expected)


@pytest.mark.parametrize("name", ["ar2_exact", "llt_known_start"])
def test_under_jit_and_vmap(name):
    model = MODELS[name]()
    ys = jnp.asarray(_data(model))
    ref = dense_posterior(model, np.asarray(ys))
    params = to_params(model)
    sm = jax.jit(ssm.rts_smoother)(params, ys)
    assert_close(sm.means, ref.smooth_means, RTOL)
    batched = jax.vmap(ssm.rts_smoother, in_axes=(None, 0))(params, jnp.stack([ys, ys]))
    assert_close(batched.covs[1], ref.smooth_covs, RTOL)


def test_fit_em_on_companion_ar2():
    """EM for A from a companion-form start: finite, monotone (Q stays singular, fixed)."""
    model = _ar2(0.1)
    ys = jnp.asarray(_data(model))
    params = to_params(model)._replace(A=jnp.array([[0.2, 0.1], [1.0, 0.0]]))
    _, info = ssm.fit_em(params, ys, num_iters=5, update=("A",))
    lls = np.asarray(info.log_likelihoods)
    assert np.all(np.isfinite(lls)) and np.all(np.diff(lls) >= -1e-9 * np.abs(lls[:-1]))


SAMPLE_MODELS = ["ar2_exact", "llt_known_start", "known_initial_state", "noise_free_sensor"]


@pytest.mark.parametrize("name", SAMPLE_MODELS)
def test_sample_with_singular_covariances(name):
    """Draws are finite and respect the singular directions exactly (jit and eager)."""
    model = MODELS[name]()
    params = to_params(model)
    for fn in (ssm.sample, jax.jit(ssm.sample, static_argnums=2)):
        xs, ys = fn(jax.random.PRNGKey(0), params, 50)
        xs, ys = np.asarray(xs), np.asarray(ys)
        assert np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))
        if name == "ar2_exact":  # second state is the lagged first, exactly
            np.testing.assert_allclose(xs[1:, 1], xs[:-1, 0], rtol=0, atol=1e-14)
            np.testing.assert_allclose(ys[:, 0], xs[1:, 0], rtol=0, atol=1e-14)
        if name == "llt_known_start":  # known x_0; level moves by the slope exactly
            np.testing.assert_array_equal(xs[0], model.m0)
            np.testing.assert_allclose(xs[1:, 0], xs[:-1, 0] + xs[:-1, 1], rtol=1e-13)
        if name == "known_initial_state":
            np.testing.assert_array_equal(xs[0], model.m0)
        if name == "noise_free_sensor":
            np.testing.assert_allclose(ys[:, 1], xs[1:] @ model.H[1], rtol=1e-12, atol=1e-14)


def test_sample_moments_with_singular_q():
    """Monte-Carlo check of the PSD factor: the one-step noise covariance is Q (rank one)."""
    model = _rank_one_q()
    params = to_params(model)._replace(A=jnp.zeros((3, 3)), P0=jnp.zeros((3, 3)))
    xs, _ = ssm.sample(jax.random.PRNGKey(1), params, 20000)
    emp = np.cov(np.asarray(xs[1:]).T)
    np.testing.assert_allclose(emp, model.Q, atol=0.05 * np.max(np.abs(model.Q)))
    # Singular direction: no spread at all orthogonal to v.
    w = np.linalg.svd(model.Q)[0][:, 1:]
    assert np.max(np.abs(np.asarray(xs[1:]) @ w)) < 1e-10


def test_singular_first_innovation_is_a_clear_error():
    """R singular where the prior and Q give no variance either: S_1 singular, said eagerly."""
    model = _ar2(0.0)._replace(P0=np.zeros((2, 2)), A=np.array([[0.0, 0.0], [1.0, 0.0]]))
    params = to_params(model._replace(Q=np.diag([0.0, 0.5])))  # H x = x_1 gets no variance
    with pytest.raises(ValueError, match=r"^R is singular and so is the innovation covariance"):
        ssm.kalman_filter(params, jnp.zeros((3, 1)))
    # Under jit nothing is checked: the Cholesky factor of S_1 = 0 is NaN, so is log p(y).
    assert np.isnan(float(jax.jit(ssm.log_likelihood)(params, jnp.zeros((3, 1)))))


@pytest.mark.parametrize("name", ["ar2_exact", "llt_known_start"])
def test_float32_singular_models_stay_finite_and_close(name):
    """float32: round-off pivots are caught by the D eps test; results track float64.

    Tolerance 1e-4 of the largest smoothed mean (float32 eps 1.2e-7 times the growth of a
    12-step recursion with unit-scale covariances).
    """
    model = MODELS[name]()
    ys = _data(model)
    ref = dense_posterior(model, ys)
    sm = ssm.rts_smoother(to_params(model, jnp.float32), jnp.asarray(ys, jnp.float32))
    assert sm.means.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(sm.gains)))
    scale = np.max(np.abs(ref.smooth_means))
    np.testing.assert_allclose(np.asarray(sm.means), ref.smooth_means, rtol=0, atol=1e-4 * scale)
