"""The square-root form (``form="sqrt"``): ``tria``, its JVP, and the factor-propagating
filter and smoother against the dense oracle, the covariance form and float64.

Tolerances: float64 results against the dense oracle and the covariance form at rtol 1e-10
(both are backward stable; the models are well conditioned, so round-off stays near 1e-13).
Finite differences of ``tria`` are central with ``h = 1e-6``: truncation ``O(h^2)`` and
round-off ``O(eps / h) ~ 1e-10``, so they are held to 1e-7. The float32 tolerances are at
each test, with their reasons.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from helpers import assert_close

import jaxssm as ssm
from jaxssm._args.results import check_variances
from jaxssm._args.schedule import resolve
from jaxssm._base import model
from jaxssm._base.tria import tria
from jaxssm._learn.score import value_and_score
from jaxssm._learn.uncertainty import observed_information
from jaxssm._schedules import dispatch, sqrt_steady

RTOL = 1e-10


# --- tria ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 5), (4, 4), (4, 2)])
def test_tria_is_a_triangular_square_root(shape):
    rng = np.random.default_rng(0)
    M = jnp.asarray(rng.standard_normal(shape))
    L = np.asarray(tria(M))
    assert L.shape == (shape[0], shape[0])
    assert np.all(np.triu(L, 1) == 0)
    assert np.all(np.diagonal(L) >= 0)
    assert_close(L @ L.T, M @ M.T, 1e-13)
    if shape[1] >= shape[0]:  # positive definite: the Cholesky factor itself
        assert_close(L, np.linalg.cholesky(np.asarray(M @ M.T)), 1e-12)


def _fd(f, M, dM, h=1e-6):
    return (f(M + h * dM) - f(M - h * dM)) / (2 * h)


@pytest.mark.parametrize("shape", [(3, 5), (4, 4)])
def test_tria_jvp_full_rank_matches_finite_differences(shape):
    rng = np.random.default_rng(1)
    M, dM = (jnp.asarray(rng.standard_normal(shape)) for _ in range(2))
    L, dL = jax.jvp(tria, (M,), (dM,))
    assert_close(dL, _fd(tria, M, dM), 1e-7)
    assert np.all(np.triu(np.asarray(dL), 1) == 0)  # the Cholesky factor's own tangent


def test_tria_jvp_zero_rows_is_the_exact_derivative():
    """Rank-deficient input whose zero rows stay zero: ``tria`` is differentiable there and
    the JVP (with its zero diagonal entries guarded) is its derivative."""
    rng = np.random.default_rng(2)
    M = jnp.asarray(rng.standard_normal((4, 6))).at[2:].set(0.0)
    dM = jnp.asarray(rng.standard_normal((4, 6))).at[2:].set(0.0)
    L, dL = jax.jvp(tria, (M,), (dM,))
    assert np.all(np.diagonal(np.asarray(L))[2:] == 0)
    assert np.all(np.isfinite(np.asarray(dL)))
    assert_close(dL, _fd(tria, M, dM), 1e-7)
    # the naive derivative (through jnp.linalg.qr's own JVP, which solves with R) is NaN
    naive = jax.jvp(lambda M: jnp.linalg.qr(M.T)[1], (M,), (dM,))[1]
    assert np.all(np.isnan(np.asarray(naive)))


def test_tria_jvp_rank_deficient_is_finite_and_exact_for_the_product():
    """Rank 2 of 4: ``tria`` is not differentiable (its zero columns jump), the naive QR
    derivative divides by zero; the JVP is finite and its tangent of ``L L^T`` is exact."""
    rng = np.random.default_rng(3)
    M = jnp.asarray(rng.standard_normal((4, 2)) @ rng.standard_normal((2, 4)))
    dM = jnp.asarray(rng.standard_normal((4, 4)))
    L, dL = jax.jvp(tria, (M,), (dM,))
    assert np.sum(np.diagonal(np.asarray(L)) > 1e-12) == 2
    assert np.all(np.isfinite(np.asarray(dL)))
    dS = dM @ M.T + M @ dM.T
    assert_close(dL @ L.T + L @ dL.T, dS, 1e-12)

    def outer(M):
        L = tria(M)
        return L @ L.T

    assert_close(jax.jvp(outer, (M,), (dM,))[1], _fd(outer, M, dM), 1e-7)
    g = jax.grad(lambda M: jnp.sum(jnp.sin(outer(M))))(M)
    assert np.all(np.isfinite(np.asarray(g)))


# --- float64: the same results as the covariance form and the dense oracle --------------------


def _model(time_varying: bool):
    """D = 3, Dy = 2, N = 12: singular Q (rank 2), inputs through B and D, offsets b and d,
    a missing entry and a missing row; optionally time-varying A and Q."""
    rng = np.random.default_rng(4)
    N = 12
    m = ref.random_model(rng, 3, 2)
    U, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    Q = (U * np.array([0.5, 0.3, 0.0])) @ U.T
    fields = dict(m._asdict(), Q=Q)
    if time_varying:
        fields["A"] = np.stack([m.A * (1 + 0.05 * np.sin(k)) for k in range(N)])
        fields["Q"] = np.stack([Q * (1 + 0.5 * (k % 3)) for k in range(N)])
    _, ys = ref.simulate(rng, m._replace(Q=m.Q), N)
    ys[3, 0] = np.nan
    ys[7] = np.nan
    u = rng.standard_normal((N, 2))
    fields.update(
        B=rng.standard_normal((3, 2)),
        b=rng.standard_normal(3),
        D=rng.standard_normal((2, 2)),
        d=rng.standard_normal(2),
    )
    params = ssm.LGSSM(**{k: jnp.asarray(v) for k, v in fields.items()})
    return params, fields, jnp.asarray(ys), jnp.asarray(u)


# The parallel square-root schedule compiles in about 15 s on CPU (its QR is a loop there):
# its tests are slow.
PARALLEL = pytest.param("parallel", marks=pytest.mark.slow)


@pytest.mark.parametrize(
    ("time_varying", "method"),
    [
        (False, "sequential"),
        pytest.param(True, "sequential", marks=pytest.mark.slow),
        pytest.param(False, "parallel", marks=pytest.mark.slow),
        pytest.param(True, "parallel", marks=pytest.mark.slow),
    ],
)
def test_sqrt_equals_dense_oracle_and_cov_form(time_varying, method):
    params, fields, ys, u = _model(time_varying)
    dense = ref.dense_posterior(fields, np.asarray(ys), np.asarray(u))
    f = ssm.kalman_filter(params, ys, inputs=u, form="sqrt", method=method)
    s = ssm.rts_smoother(params, ys, inputs=u, form="sqrt", method=method)
    assert_close(f.means, dense.filter_means, RTOL)
    assert_close(f.covs, dense.filter_covs, RTOL)
    assert_close(f.pred_means, dense.pred_means, RTOL)
    assert_close(f.pred_covs, dense.pred_covs, RTOL)
    assert_close(f.log_likelihood, dense.log_likelihood, RTOL)
    assert_close(s.means, dense.smooth_means, RTOL)
    assert_close(s.covs, dense.smooth_covs, RTOL)
    assert_close(jnp.einsum("nij,nkj->nik", s.covs[1:], s.gains), dense.smooth_cross, RTOL)
    assert_close(s.log_likelihood, dense.log_likelihood, RTOL)
    cov = ssm.rts_smoother(params, ys, inputs=u, form="cov", steady_state=False)
    for a, b in zip(s, cov, strict=True):
        assert_close(a, b, RTOL)
    ll = ssm.log_likelihood(params, ys, inputs=u, form="sqrt", method=method)
    assert_close(ll, dense.log_likelihood, RTOL)


@pytest.mark.parametrize("method", ["sequential", PARALLEL])
def test_sqrt_singular_predicted_covariances(method):
    """``P0 = 0`` and a rank-1 ``Q`` with D = 2 < Dy = 3: the predicted covariance is singular
    at step 1 (the smoother's range-exact gain and Joseph-form factor), against the dense
    oracle at rtol 1e-10 (measured 2e-15)."""
    rng = np.random.default_rng(11)
    m = ref.random_model(rng, 2, 3)
    _, ys = ref.simulate(rng, m, 10)
    ys[2, 1] = np.nan
    ys[5] = np.nan
    m = m._replace(P0=np.zeros((2, 2)), Q=np.outer([1.0, 0.5], [1.0, 0.5]))
    params = ssm.LGSSM(*(jnp.asarray(x) for x in m))
    dense = ref.dense_posterior(m, ys)
    s = ssm.rts_smoother(params, jnp.asarray(ys), form="sqrt", method=method)
    assert_close(s.means, dense.smooth_means, RTOL)
    assert_close(s.covs, dense.smooth_covs, RTOL)
    assert_close(jnp.einsum("nij,nkj->nik", s.covs[1:], s.gains), dense.smooth_cross, RTOL)
    assert_close(s.log_likelihood, dense.log_likelihood, RTOL)


@pytest.mark.parametrize("method", ["sequential", PARALLEL])
def test_sqrt_steady_state_none_runs_the_full_square_root_recursion(method):
    """``steady_state=None`` with ``form="sqrt"``: the full square-root recursion of the
    method whatever ``N``, and its ScheduleInfo says so (no transient bound)."""
    rng = np.random.default_rng(5)
    m = ref.random_model(rng, 2, 1)
    _, ys = ref.simulate(rng, m, 40)
    params = ssm.LGSSM(*(jnp.asarray(x) for x in m))
    ys = jnp.asarray(ys)
    seq = ssm.rts_smoother(params, ys, steady_state=False)
    out, info = dispatch.run("smooth", params, ys, resolve(method, None, "sqrt"))
    assert int(info.num_transient) == 0 and not bool(info.fast_path)
    for a, b in zip(out, seq, strict=True):
        assert_close(a, b, RTOL)
    ll = ssm.log_likelihood(params, ys, form="sqrt", method=method)
    assert_close(ll, seq.log_likelihood, RTOL)
    long = dispatch.steady_bound(resolve(method, None, "sqrt"), params, dispatch.MIN_STEADY_STEPS)
    assert long == 0


@pytest.mark.slow
def test_sqrt_batch_e_step_and_posterior_sample_equal_cov():
    params, _, ys, u = _model(False)
    batch, ubatch = jnp.stack([ys, ys[::-1]]), jnp.stack([u, u[::-1]])
    assert_close(
        ssm.log_likelihood(params, batch, inputs=ubatch, form="sqrt"),
        ssm.log_likelihood(params, batch, inputs=ubatch),
        RTOL,
    )
    stats, ll = ssm.e_step(params, ys, inputs=u, form="sqrt")
    stats_c, ll_c = ssm.e_step(params, ys, inputs=u, steady_state=False)
    assert_close(ll, ll_c, RTOL)
    for a, b in zip(stats, stats_c, strict=True):
        if a is not None:
            assert_close(a, b, RTOL)
    # The backward draw factors the conditional covariances, singular here (rank-2 Q):
    # round-off differences of 1e-16 in them move the draw by up to ~1e-9.
    key = jax.random.key(0)
    assert_close(
        ssm.posterior_sample(key, params, ys, inputs=u, form="sqrt"),
        ssm.posterior_sample(key, params, ys, inputs=u, steady_state=False),
        1e-8,
    )


@pytest.mark.slow
def test_fit_em_sqrt_equals_cov():
    rng = np.random.default_rng(6)
    m = ref.random_model(rng, 2, 2)
    _, ys = ref.simulate(rng, m, 30)
    ys[4, 1] = np.nan
    params = ssm.LGSSM(*(jnp.asarray(x) for x in m))
    kw = dict(num_iters=4, update=("A", "Q", "R"), steady_state=False)
    p_s, info_s = ssm.fit_em(params, jnp.asarray(ys), form="sqrt", **kw)
    p_c, info_c = ssm.fit_em(params, jnp.asarray(ys), **kw)
    assert_close(info_s.log_likelihoods, info_c.log_likelihoods, 1e-9)
    for a, b in zip(p_s, p_c, strict=True):
        assert_close(a, b, 1e-9)


def test_factors():
    params, _, ys, u = _model(False)
    f, fac = ssm.kalman_filter(params, ys, inputs=u, form="sqrt", factors=True)
    assert isinstance(fac, ssm.CovFactors)
    for L, P in ((fac.covs, f.covs), (fac.pred_covs, f.pred_covs)):
        L = np.asarray(L)
        assert np.all(np.triu(L, 1) == 0) and np.all(np.diagonal(L, axis1=1, axis2=2) >= 0)
        assert_close(L @ np.swapaxes(L, 1, 2), P, 1e-14)
    s, sfac = ssm.rts_smoother(params, ys, inputs=u, form="sqrt", factors=True)
    assert sfac.pred_covs is None
    assert_close(sfac.covs @ jnp.swapaxes(sfac.covs, 1, 2), s.covs, 1e-14)


def test_bad_form_arguments():
    params, _, ys, u = _model(False)
    with pytest.raises(ValueError, match="form must be 'cov' or 'sqrt'"):
        ssm.kalman_filter(params, ys, inputs=u, form="chol")
    with pytest.raises(ValueError, match="form must be 'cov' or 'sqrt'"):
        ssm.fit_em(params, ys, inputs=u, num_iters=2, form=None)
    with pytest.raises(ValueError, match="factors=True needs form='sqrt'"):
        ssm.kalman_filter(params, ys, inputs=u, factors=True)
    with pytest.raises(TypeError, match="factors must be True or False"):
        ssm.rts_smoother(params, ys, inputs=u, form="sqrt", factors=1)


# --- form= on score, standard errors and forecast --------------------------------------------


def _plain_model(N, D=2, Dy=2, seed=7):
    """A random stable model with positive definite Q, R, P0 (Fisher's identity holds through
    each) and ``N`` draws with one missing entry."""
    rng = np.random.default_rng(seed)
    m = ref.random_model(rng, D, Dy)
    _, ys = ref.simulate(rng, m, N)
    ys[N // 3, 0] = np.nan
    return ssm.LGSSM(*(jnp.asarray(x) for x in m)), jnp.asarray(ys)


def _not_bitwise_equal(a, b):
    """Whether two float64 results differ anywhere: the two forms round differently, so a
    bitwise-equal pair means one program ran twice (``form`` not passed through)."""
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in leaves)


def test_score_and_value_and_score_sqrt_equal_cov():
    """The score through the square-root E-step equals the covariance form's, every field, to
    rtol 1e-10 (both are the closed-form gradient of statistics that agree to round-off)."""
    params, ys = _plain_model(15, D=3)
    update = ("m0", "P0", "A", "Q", "H", "R")
    ll_s, g_s = value_and_score(params, ys, update=update, form="sqrt")
    ll_c, g_c = value_and_score(params, ys, update=update, form="cov")
    assert_close(ll_s, ll_c, RTOL)
    for name in update:
        assert_close(getattr(g_s, name), getattr(g_c, name), RTOL, err_msg=name)
    assert _not_bitwise_equal(g_s, g_c)
    g = ssm.score(params, ys, update=update, form="sqrt")  # score passes form on
    assert not _not_bitwise_equal(g, g_s)


def _observed_information_equal(route):
    params, ys = _plain_model(200)
    info_s, labels_s = observed_information(params, ys, update="A", form="sqrt", route=route)
    info_c, labels_c = observed_information(params, ys, update="A", route=route)
    assert labels_s == labels_c
    assert_close(info_s, info_c, RTOL)
    assert _not_bitwise_equal(info_s, info_c)
    return params, ys


def test_standard_errors_sqrt_equal_cov():
    """The observed information by ``jax.jacfwd`` of the Fisher-identity score (the route
    ``standard_errors`` takes here: Q positive definite) and the standard errors on the
    square-root form equal the covariance form's to rtol 1e-10 (A only, N = 200)."""
    params, ys = _observed_information_equal("score")
    se_s = ssm.standard_errors(params, ys, update="A", form="sqrt")
    se_c = ssm.standard_errors(params, ys, update="A", form="cov")
    assert se_s.Q is None
    assert_close(se_s.A, se_c.A, RTOL)
    assert _not_bitwise_equal(se_s.A, se_c.A)


@pytest.mark.slow
def test_observed_information_hessian_route_sqrt_equal_cov():
    """``jax.hessian`` of the square-root filter's log-likelihood equals the covariance
    form's, rtol 1e-10 (A only, N = 200)."""
    _observed_information_equal("hessian")


def test_forecast_sqrt_equals_cov():
    """The forecast from the square-root filter (its last covariance rebuilt from the factor,
    the prediction steps in covariance form) equals the covariance form's, rtol 1e-10: inputs,
    offsets, singular Q, missing entries."""
    params, _, ys, u = _model(False)
    future = jnp.asarray(np.random.default_rng(8).standard_normal((4, 2)))
    kw = dict(inputs=u, future_inputs=future)
    f_s = ssm.forecast(params, ys, 4, form="sqrt", **kw)
    f_c = ssm.forecast(params, ys, 4, form="cov", steady_state=False, **kw)
    for a, b, name in zip(f_s, f_c, ssm.Forecast._fields, strict=True):
        assert_close(a, b, RTOL, err_msg=name)
    assert _not_bitwise_equal(f_s, f_c)


def test_bad_form_on_score_standard_errors_and_forecast():
    params, ys = _plain_model(6)
    for call in (
        lambda: ssm.score(params, ys, form="chol"),
        lambda: value_and_score(params, ys, form=None),
        lambda: ssm.standard_errors(params, ys, update="A", form="Sqrt"),
        lambda: observed_information(params, ys, update="A", form=1),
        lambda: ssm.forecast(params, ys, 2, form="chol"),
    ):
        with pytest.raises(ValueError, match="form must be 'cov' or 'sqrt'"):
            call()


def test_grad_log_likelihood_sqrt_equals_cov_small():
    """float64 gradients of the two forms agree to round-off on a plain model with a missing
    row and a rank-1 ``Q`` (measured 1e-15; the slow test below adds inputs and the parallel
    schedule)."""
    rng = np.random.default_rng(8)
    m = ref.random_model(rng, 2, 1)
    _, ys = ref.simulate(rng, m, 8)
    ys[2] = np.nan
    params, ys = ssm.LGSSM(*(jnp.asarray(x) for x in m)), jnp.asarray(ys)
    params = params._replace(Q=jnp.asarray(np.outer([1.0, 0.3], [1.0, 0.3])))

    def grad(form):
        return jax.grad(lambda p: ssm.log_likelihood(p, ys, form=form, steady_state=False))(params)

    for a, b in zip(grad("sqrt"), grad("cov"), strict=True):
        assert_close(a, b, 1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_grad_log_likelihood_sqrt_equals_cov(method):
    """float64 gradients of the two forms agree to round-off: every field, with inputs and
    missing entries (positive definite covariances); and at a rank-2 ``Q`` moved through its
    factor ``Q = L L^T`` (the tangents the factor represents: see ``sqrt_steps.factor``)."""
    params, _, ys, u = _model(False)
    rng = np.random.default_rng(7)
    params = params._replace(Q=jnp.asarray(ref.random_spd(rng, 3, 0.5)))

    def grad(form, p):
        return jax.grad(lambda p: ssm.log_likelihood(p, ys, inputs=u, form=form, method=method))(p)

    for a, b in zip(grad("sqrt", params), grad("cov", params), strict=True):
        assert_close(a, b, 1e-9)
    F = jnp.asarray(rng.standard_normal((3, 2)))

    def grad_factor(form):
        def f(F):
            p = params._replace(Q=F @ F.T)
            return ssm.log_likelihood(p, ys, inputs=u, form=form, method=method)

        return jax.grad(f)(F)

    assert_close(grad_factor("sqrt"), grad_factor("cov"), 1e-9)
    if method == "sequential":  # the predict step differentiates with respect to Q itself
        singular = params._replace(Q=F @ F.T)
        for a, b in zip(grad("sqrt", singular), grad("cov", singular), strict=True):
            assert_close(a, b, 1e-9)


# --- the steady-state schedule on factors (steady_state=True) --------------------------------


def _steady_model(missing: bool = False):
    """D = 3, Dy = 2, N = 300 (bound T = 100: the three regions of the steady-state schedule
    exist, and the transients settle in about 30 steps): a singular ``Q`` (rank 2), inputs
    through ``B`` and ``D``, offsets ``b`` and ``d``; optionally one missing entry."""
    rng = np.random.default_rng(12)
    N = 300
    m = ref.random_model(rng, 3, 2)
    U, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    Q = (U * np.array([0.5, 0.3, 0.0])) @ U.T
    _, ys = ref.simulate(rng, m, N)
    if missing:
        ys[150, 1] = np.nan
    fields = dict(
        m._asdict(),
        Q=Q,
        B=rng.standard_normal((3, 2)),
        b=rng.standard_normal(3),
        D=rng.standard_normal((2, 2)),
        d=rng.standard_normal(2),
    )
    params = ssm.LGSSM(**{k: jnp.asarray(v) for k, v in fields.items()})
    return params, jnp.asarray(ys), jnp.asarray(rng.standard_normal((N, 2)))


STEADY_SQRT = resolve("sequential", True, "sqrt")


def _assert_all_close(a, b, rtol=RTOL):
    for x, y in zip(a, b, strict=True):
        assert_close(x, y, rtol)


def test_sqrt_steady_state_smoother_equals_full_recursion():
    """``steady_state=True, form="sqrt"`` runs the fast path (the covariance side on
    factors; ScheduleInfo says so) and its smoother equals the covariance form's full
    recursion to rtol 1e-10 (measured 3e-13: the fast path takes the covariances as settled
    once a round changed by at most ``1e4 eps`` on the correlation scale), with inputs,
    offsets and a rank-2 ``Q``. The slow tests below add the E-step, the filter, the
    log-likelihood, the factors, the parallel schedule and gradients."""
    params, ys, u = _steady_model()
    s, info = dispatch.run(dispatch.Kind.SMOOTH, params, ys, STEADY_SQRT, inputs=u)
    assert bool(info.fast_path) and int(info.num_transient) == 100
    assert 0 < int(info.filter_transient) < 100 and 0 < int(info.smoother_transient) < 100
    _assert_all_close(s, ssm.rts_smoother(params, ys, inputs=u, steady_state=False))


@pytest.mark.slow
def test_sqrt_steady_state_smoother_and_e_step_equal_cov_steady_and_full():
    """The smoother and the E-step statistics of the square-root fast path against the
    covariance form's fast path and its full recursion, rtol 1e-10."""
    params, ys, u = _steady_model()
    s = ssm.rts_smoother(params, ys, inputs=u, steady_state=True, form="sqrt")
    _assert_all_close(s, ssm.rts_smoother(params, ys, inputs=u, steady_state=True))
    stats, ll = ssm.e_step(params, ys, inputs=u, steady_state=True, form="sqrt")
    assert_close(ll, s.log_likelihood, RTOL)
    for steady in (True, False):
        stats_c, ll_c = ssm.e_step(params, ys, inputs=u, steady_state=steady)
        assert_close(ll, ll_c, RTOL)
        _assert_all_close(stats, stats_c)


def test_sqrt_steady_state_missing_entry_falls_back_to_the_full_sqrt_recursion():
    """A missing entry rules the fast path out (ScheduleInfo: ``fast_path`` false, the bound
    still 100); the fallback is the full square-root recursion, equal to it and to the
    covariance form's full recursion to rtol 1e-10."""
    params, ys, u = _steady_model(missing=True)
    s, info = dispatch.run(dispatch.Kind.SMOOTH, params, ys, STEADY_SQRT, inputs=u)
    assert not bool(info.fast_path) and int(info.num_transient) == 100
    full = resolve("sequential", False, "sqrt")
    _assert_all_close(s, dispatch.run(dispatch.Kind.SMOOTH, params, ys, full, inputs=u)[0])
    _assert_all_close(s, ssm.rts_smoother(params, ys, inputs=u, steady_state=False))


@pytest.mark.slow
def test_sqrt_steady_state_filter_likelihood_and_factors():
    """The filter, the log-likelihood and ``factors=True`` on the fast path: equal to the
    covariance form's fast path and full recursion and to the full square-root recursion's
    factors (unique here: the covariances are positive definite) to rtol 1e-10; the factors
    are lower triangular with a nonnegative diagonal and rebuild the covariances."""
    params, ys, u = _steady_model()
    f = ssm.kalman_filter(params, ys, inputs=u, steady_state=True, form="sqrt")
    _assert_all_close(f, ssm.kalman_filter(params, ys, inputs=u, steady_state=True))
    _assert_all_close(f, ssm.kalman_filter(params, ys, inputs=u, steady_state=False))
    ll = ssm.log_likelihood(params, ys, inputs=u, steady_state=True, form="sqrt")
    assert_close(ll, f.log_likelihood, RTOL)
    # The fast path's own factors, assembled outside the lax.cond that picks them (whose
    # fallback would give the same values).
    core, y_s, _ = model.reduce(params, ys, u)
    N = ys.shape[0]

    @jax.jit
    def fast(core):
        fs, ff = sqrt_steady.filter_side(core, 100)
        side, sf = sqrt_steady.smoother_side(core, 100)
        return sqrt_steady.filter_factors(fs, ff, N), sqrt_steady.smoother_factors(side, sf, N)

    for smoother, own in zip((ssm.kalman_filter, ssm.rts_smoother), fast(core), strict=True):
        kw = dict(inputs=u, form="sqrt", factors=True)
        res, fac = smoother(params, ys, steady_state=True, **kw)
        res_full, fac_full = smoother(params, ys, steady_state=False, **kw)
        _assert_all_close(res, res_full)
        _assert_all_close(fac, fac_full)
        _assert_all_close(own, fac_full)
        for L, P in ((fac.covs, res.covs), (fac.pred_covs, getattr(res, "pred_covs", None))):
            if L is None:
                continue
            L = np.asarray(L)
            assert np.all(np.triu(L, 1) == 0) and np.all(np.diagonal(L, axis1=1, axis2=2) >= 0)
            assert_close(L @ np.swapaxes(L, 1, 2), P, 1e-14)
    # a missing entry: the factors of the full square-root recursion
    params_m, ys_m, u_m = _steady_model(missing=True)
    res, fac = ssm.rts_smoother(
        params_m, ys_m, inputs=u_m, steady_state=True, form="sqrt", factors=True
    )
    _assert_all_close(
        fac, ssm.rts_smoother(params_m, ys_m, inputs=u_m, form="sqrt", factors=True)[1]
    )
    varying = params._replace(A=jnp.stack([params.A] * ys.shape[0]))
    with pytest.raises(ValueError, match="steady_state=True needs a time-invariant model"):
        ssm.kalman_filter(varying, ys, inputs=u, steady_state=True, form="sqrt", factors=True)


@pytest.mark.slow
def test_sqrt_steady_state_parallel_equals_cov():
    """``method="parallel", steady_state=True, form="sqrt"``: the fast path with log-depth
    mean recursions, and the full square-root associative scan as its fallback, against the
    covariance form's full recursion at rtol 1e-10."""
    params, ys, u = _steady_model()
    sched = resolve("parallel", True, "sqrt")
    s, info = dispatch.run(dispatch.Kind.SMOOTH, params, ys, sched, inputs=u)
    assert bool(info.fast_path)
    _assert_all_close(s, ssm.rts_smoother(params, ys, inputs=u, steady_state=False))
    params_m, ys_m, u_m = _steady_model(missing=True)
    s, info = dispatch.run(dispatch.Kind.SMOOTH, params_m, ys_m, sched, inputs=u_m)
    assert not bool(info.fast_path)
    _assert_all_close(s, ssm.rts_smoother(params_m, ys_m, inputs=u_m, steady_state=False))


@pytest.mark.slow
def test_sqrt_steady_state_grad_and_fit_em_equal_cov():
    """float64 gradients of the fast path's log-likelihood in the two forms agree to 1e-8
    relative (every field, inputs and offsets, an SPD ``Q`` and the rank-2 ``Q`` moved
    through ``Q = F F^T``); four EM iterations on the fast path agree with the covariance
    form to 1e-9 (the statistics agree to round-off; the M-step's solves amplify it a
    little)."""
    params, ys, u = _steady_model()
    rng = np.random.default_rng(13)
    spd = params._replace(Q=jnp.asarray(ref.random_spd(rng, 3, 0.5)))

    def grad(form, p):
        def f(p):
            return ssm.log_likelihood(p, ys, inputs=u, form=form, steady_state=True)

        return jax.grad(f)(p)

    _assert_all_close(grad("sqrt", spd), grad("cov", spd), 1e-8)
    F = jnp.asarray(rng.standard_normal((3, 2)))

    def grad_factor(form):
        def f(F):
            p = params._replace(Q=F @ F.T)
            return ssm.log_likelihood(p, ys, inputs=u, form=form, steady_state=True)

        return jax.grad(f)(F)

    assert_close(grad_factor("sqrt"), grad_factor("cov"), 1e-8)
    kw = dict(inputs=u, num_iters=4, update=("A", "Q", "R"), steady_state=True)
    p_s, info_s = ssm.fit_em(spd, ys, form="sqrt", **kw)
    p_c, info_c = ssm.fit_em(spd, ys, **kw)
    assert_close(info_s.log_likelihoods, info_c.log_likelihoods, 1e-9)
    _assert_all_close(p_s, p_c, 1e-9)


# --- float32: where the covariance form goes wrong -------------------------------------------


def _float32_runs(fields, P0, N, key=0, method="sequential"):
    """Data from the model with ``P0 = I`` (float64, rounded to float32), then the float64
    smoother and the float32 smoothers of both forms with the given ``P0``."""
    m0, A, Q, H, R = (np.asarray(fields[k], np.float64) for k in ("m0", "A", "Q", "H", "R"))
    D = A.shape[0]
    truth = ssm.LGSSM(*(jnp.asarray(x) for x in (m0, np.eye(D), A, Q, H, R)))
    _, ys = ssm.sample(jax.random.key(key), truth, N)
    ys32 = np.asarray(ys).astype(np.float32)
    fields64 = (m0, P0, A, Q, H, R)
    p64 = ssm.LGSSM(*(jnp.asarray(x) for x in fields64))
    p32 = ssm.LGSSM(*(jnp.asarray(x, jnp.float32) for x in fields64))
    exact = ssm.rts_smoother(p64, jnp.asarray(ys32, jnp.float64), steady_state=False)
    runs = {}
    for form in ("cov", "sqrt"):
        try:
            runs[form] = ssm.rts_smoother(p32, ys32, method=method, form=form)
        except ValueError as e:  # a NaN log-likelihood is reported, not returned
            runs[form] = e
    return exact, runs


def _errors(run, exact):
    var = np.diagonal(np.asarray(run.covs, np.float64), axis1=1, axis2=2)
    var64 = np.diagonal(np.asarray(exact.covs), axis1=1, axis2=2)
    mean_err = np.abs(np.asarray(run.means, np.float64) - np.asarray(exact.means))
    ll64 = float(exact.log_likelihood)
    return dict(
        negative=int(np.sum(var < 0)),
        nan=int(np.sum(np.isnan(var)) + np.isnan(float(run.log_likelihood))),
        var_rel=np.abs(var / var64 - 1),
        mean_sd=mean_err / np.sqrt(var64),  # error in units of the exact posterior sd
        ll_rel=abs(float(run.log_likelihood) - ll64) / abs(ll64),
    )


def test_float32_stiff_integrated_wiener_process():
    """The issue's stiff model: 4-times integrated Wiener process (D = 5), dt = 0.005,
    positions observed with R = 1e-8, N = 300 (the covariance form's negative variances all
    come in the first 300 steps; benchmarks/sqrt_form.py runs N = 3,000).

    float32 ``sqrt``: no negative variance, no NaN; smoothed variances within 1e-2 relative
    (measured 7e-4: each QR step is backward stable, so the factors carry errors of eps32
    times the factors' own size, amplified by the model's conditioning); means within 0.5
    posterior sd (measured 0.12); the log-likelihood within 2e-5 relative (the float32 sum of
    300 terms: N eps32 = 1.8e-5; measured 1.7e-6). The covariance form fails all of these.
    """
    A, Q = (np.asarray(x) for x in ssm.priors.iwp(4, 0.005))
    H = np.zeros((1, 5))
    H[0, 0] = 1.0
    fields = dict(m0=np.zeros(5), A=A, Q=Q, H=H, R=np.array([[1e-8]]))
    exact, runs = _float32_runs(fields, np.eye(5), 300)
    sq, cov = _errors(runs["sqrt"], exact), _errors(runs["cov"], exact)
    assert sq["negative"] == 0 and sq["nan"] == 0
    assert np.max(sq["var_rel"]) < 1e-2
    assert np.max(sq["mean_sd"]) < 0.5
    assert sq["ll_rel"] < 2e-5
    # the point: the float32 covariance form goes wrong on the same data
    assert cov["negative"] > 0
    assert np.max(cov["mean_sd"]) > 5.0
    assert cov["ll_rel"] > 1e-4


@pytest.mark.slow
def test_float32_vague_prior_random_walk():
    """Random walk plus noise (Q = 1, R = 0.1), ``P0 = 1e7``, N = 100. float32 ``sqrt``:
    variances within 1e-2 relative and means within 0.01 sd of float64 (measured 3e-4 and
    1.4e-4), the log-likelihood within 1e-3 nats (measured 6e-5); the covariance form loses
    the variance at the first step (0 where float64 has 0.085) and the log-likelihood by
    0.065 nats."""
    fields = dict(m0=np.zeros(1), A=np.eye(1), Q=np.eye(1), H=np.eye(1), R=0.1 * np.eye(1))
    exact, runs = _float32_runs(fields, 1e7 * np.eye(1), 100)
    sq, cov = _errors(runs["sqrt"], exact), _errors(runs["cov"], exact)
    assert sq["negative"] == 0 and sq["nan"] == 0
    assert np.max(sq["var_rel"]) < 1e-2 and np.max(sq["mean_sd"]) < 1e-2
    assert abs(float(runs["sqrt"].log_likelihood) - float(exact.log_likelihood)) < 1e-3
    assert np.max(cov["var_rel"]) > 0.5
    assert abs(float(runs["cov"].log_likelihood) - float(exact.log_likelihood)) > 1e-2


@pytest.mark.slow
def test_float32_vague_prior_local_linear_trend():
    """Local linear trend (Q = diag(0.1, 0.01), R = 1), ``P0 = 1e7 I``, N = 100: the float32
    covariance form returns NaN. float32 ``sqrt``: no NaN, no negative variance, the
    log-likelihood within 1e-3 nats of float64 (measured 2e-4), and from row 2 on means
    within 0.01 sd and variances within 1e-2 relative (measured 6e-4). Rows 0 and 1 (the
    two steps that identify the vague initial state) carry an error of order
    eps32 * 1e7 = 0.6 in the covariance entries, which QR cannot avoid (it is backward
    stable relative to the largest entry); exact diffuse initialisation removes it."""
    A = np.array([[1.0, 1.0], [0.0, 1.0]])
    fields = dict(m0=np.zeros(2), A=A, Q=np.diag([0.1, 0.01]), H=np.array([[1.0, 0.0]]))
    fields["R"] = np.eye(1)
    exact, runs = _float32_runs(fields, 1e7 * np.eye(2), 100)
    sq = _errors(runs["sqrt"], exact)
    cov = runs["cov"]
    assert (isinstance(cov, ValueError) and "NaN" in str(cov)) or _errors(cov, exact)["nan"] > 0
    assert sq["negative"] == 0 and sq["nan"] == 0
    assert abs(float(runs["sqrt"].log_likelihood) - float(exact.log_likelihood)) < 1e-3
    assert np.max(sq["var_rel"][2:]) < 1e-2 and np.max(sq["mean_sd"][2:]) < 1e-2


@pytest.mark.slow
def test_float32_stiff_parallel():
    """The stiff model on the parallel schedule, N = 300. float32 ``sqrt``: no negative
    variance, no NaN, variances within 1e-2 relative (measured 7e-4), means within 1 sd
    (measured 0.43: the affine scan of the means composes ``log N`` levels of products, so
    a little more round-off than the sequential recursion's 0.12), the log-likelihood within
    2e-5 relative (measured 3.3e-6). The covariance form's parallel schedule returns
    negative variances and a log-likelihood 18% off."""
    A, Q = (np.asarray(x) for x in ssm.priors.iwp(4, 0.005))
    H = np.zeros((1, 5))
    H[0, 0] = 1.0
    fields = dict(m0=np.zeros(5), A=A, Q=Q, H=H, R=np.array([[1e-8]]))
    exact, runs = _float32_runs(fields, np.eye(5), 300, method="parallel")
    sq, cov = _errors(runs["sqrt"], exact), _errors(runs["cov"], exact)
    assert sq["negative"] == 0 and sq["nan"] == 0
    assert np.max(sq["var_rel"]) < 1e-2
    assert np.max(sq["mean_sd"]) < 1.0
    assert sq["ll_rel"] < 2e-5
    assert cov["negative"] > 0
    assert cov["ll_rel"] > 1e-2


@pytest.mark.slow
def test_float32_vague_prior_local_linear_trend_parallel():
    """The local linear trend with ``P0 = 1e7 I`` on the parallel schedule: float32 ``sqrt``
    within 1e-3 nats (measured 2.6e-4) and, from row 2 on, 0.01 sd and 1e-2 relative
    (measured 5e-4 and 5e-4), as on the sequential schedule."""
    A = np.array([[1.0, 1.0], [0.0, 1.0]])
    fields = dict(m0=np.zeros(2), A=A, Q=np.diag([0.1, 0.01]), H=np.array([[1.0, 0.0]]))
    fields["R"] = np.eye(1)
    exact, runs = _float32_runs(fields, 1e7 * np.eye(2), 100, method="parallel")
    sq = _errors(runs["sqrt"], exact)
    assert sq["negative"] == 0 and sq["nan"] == 0
    assert abs(float(runs["sqrt"].log_likelihood) - float(exact.log_likelihood)) < 1e-3
    assert np.max(sq["var_rel"][2:]) < 1e-2 and np.max(sq["mean_sd"][2:]) < 1e-2


def test_covariance_form_reports_a_negative_variance():
    # The stiff model of test_float32_stiff_integrated_wiener_process, N = 30: the float32
    # covariance form's smoothed variances cross zero (about -0.3 against a largest of 1.2)
    # and rts_smoother says so with the remedy; the square-root form and float64 do not warn.
    A, Q = (np.asarray(x) for x in ssm.priors.iwp(4, 0.005))
    H = np.zeros((1, 5))
    H[0, 0] = 1.0
    fields = (np.zeros(5), np.eye(5), A, Q, H, np.array([[1e-8]]))
    p64 = ssm.LGSSM(*(jnp.asarray(x, jnp.float64) for x in fields))
    p32 = ssm.LGSSM(*(jnp.asarray(x, jnp.float32) for x in fields))
    _, ys = ssm.sample(jax.random.key(0), p64, 30)
    ys32 = np.asarray(ys, np.float32)
    with pytest.warns(RuntimeWarning, match=r"rts_smoother: the smoothed covariance lost positive"):
        cov = ssm.rts_smoother(p32, ys32)
    var = np.diagonal(np.asarray(cov.covs), axis1=1, axis2=2)
    assert var.min() < 0  # the report is true
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sq = ssm.rts_smoother(p32, ys32, form="sqrt")
        ssm.rts_smoother(p64, jnp.asarray(ys32, jnp.float64))
    assert np.diagonal(np.asarray(sq.covs), axis1=1, axis2=2).min() >= 0


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_check_variances_reports_an_indefinite_covariance_with_nonnegative_variances(dtype):
    # [[1, 2], [2, 1]] has variances 1 and eigenvalues 3 and -1 (exact): the diagonal check
    # alone misses it; the eigenvalue check names its step and the eigenvalue -1.
    covs = np.tile(np.eye(2), (5, 1, 1))
    covs[3] = [[1.0, 2.0], [2.0, 1.0]]
    with pytest.warns(RuntimeWarning, match=r"smoothed covariance lost positive") as seen:
        check_variances(jnp.asarray(covs, dtype), "rts_smoother", "smoothed covariance")
    (message,) = [str(w.message) for w in seen]
    assert "at index (3,) is -1 " in message and "form='sqrt'" in message
    # A long series: the step is in the checked subsample (its start transient).
    long = np.tile(np.eye(2), (5000, 1, 1))
    long[7] = covs[3]
    with pytest.warns(RuntimeWarning, match=r"at index \(7,\) is -1 "):
        check_variances(jnp.asarray(long, dtype), "kalman_filter", "filtered covariance")


def test_check_variances_is_quiet_on_semidefinite_covariances():
    # Singular v v^T (its smallest eigenvalue at round-off, either sign), an identity and
    # zeros: semi-definite, no warning, in float64 and float32.
    v = np.random.default_rng(3).standard_normal((40, 3, 1))
    covs = np.concatenate([v @ np.swapaxes(v, 1, 2), np.eye(3)[None], np.zeros((1, 3, 3))])
    assert np.linalg.eigvalsh(covs)[:40, 0].min() < 0  # round-off below zero: a real test
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (jnp.float64, jnp.float32):
            check_variances(jnp.asarray(covs, dtype), "rts_smoother", "smoothed covariance")


@pytest.mark.slow
def test_float32_stiff_steady_state():
    """The stiff model on the steady-state schedule, float32, N = 800 (bound T = 256: the
    float32 transients settle in about 200 steps, at ``1e4 eps32`` on the correlation scale).
    The square-root fast path runs and returns no negative variance and no NaN, the
    log-likelihood within ``N eps32 = 4.8e-5`` relative (the float32 sum of N terms;
    measured 3e-6). Its variances are within 3e-2 relative of float64 (measured 1.2e-2,
    against 9e-4 for the full square-root recursion) and its means within 3 posterior sd
    (measured 1.2, full recursion 0.54): the fast path takes the covariances as settled at
    a change of ``1e4 eps32 = 1.2e-3`` per step, while float64's are still moving (its
    transient is about 780 steps), so the steps in between carry the rest of the transient.
    The covariance form's fast path returns negative variances and means 29 sd off."""
    A, Q = (np.asarray(x) for x in ssm.priors.iwp(4, 0.005))
    H = np.zeros((1, 5))
    H[0, 0] = 1.0
    fields = (np.zeros(5), np.eye(5), A, Q, H, np.array([[1e-8]]))
    p64 = ssm.LGSSM(*(jnp.asarray(x) for x in fields))
    p32 = ssm.LGSSM(*(jnp.asarray(x, jnp.float32) for x in fields))
    N = 800
    _, ys = ssm.sample(jax.random.key(0), p64, N)
    ys32 = jnp.asarray(np.asarray(ys).astype(np.float32))
    exact = ssm.rts_smoother(p64, jnp.asarray(ys32, jnp.float64), steady_state=False)
    run, info = dispatch.run(dispatch.Kind.SMOOTH, p32, ys32, STEADY_SQRT)
    assert bool(info.fast_path) and int(info.num_transient) == 256
    sq = _errors(run, exact)
    assert sq["negative"] == 0 and sq["nan"] == 0
    assert sq["ll_rel"] < N * float(np.finfo(np.float32).eps)
    assert np.max(sq["var_rel"]) < 3e-2
    assert np.max(sq["mean_sd"]) < 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its negative variances are reported
        cov = _errors(ssm.rts_smoother(p32, ys32, steady_state=True), exact)
    assert cov["negative"] > 0 and np.max(cov["mean_sd"]) > 5.0
