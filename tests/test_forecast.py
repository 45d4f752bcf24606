"""forecast, forecast_sample and filter_diagnostics against the dense joint Gaussian and numpy.

Statistical tolerances: as in test_posterior.py, 6 standard errors per compared entry (mean:
sqrt(S_aa / M); covariance: sqrt((S_aa S_bb + S_ab^2) / M), Isserlis), with fixed seeds.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import assert_close, to_params

import jaxssm as ssm

N, D, DY, H_STEPS = 6, 2, 2, 3
NUM_DRAWS = 20_000
SIGMAS = 6.0


def dense_forecast(model, ys, h):
    """Moments of x_{N+j}, y_{N+j} (j = 1..h) given the observed entries of y_1..y_N.

    The dense joint Gaussian of (x_0..x_{N+h}, y_1..y_{N+h}) conditioned on the non-NaN
    entries of ys (reference.dense_posterior, the h future observations missing).
    """
    ys = np.asarray(ys, np.float64)
    n, dy = ys.shape
    post = reference.dense_posterior(model, np.concatenate([ys, np.full((h, dy), np.nan)]))
    return ssm.Forecast(
        means=post.smooth_means[n + 1 :],
        covs=post.smooth_covs[n + 1 :],
        obs_means=post.obs_means[n:],
        obs_covs=post.obs_covs[n:],
    )


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(150)
    model = reference.random_model(rng, D, DY)
    _, ys = reference.simulate(rng, model, N)
    return model, to_params(model), jnp.asarray(ys)


@pytest.mark.parametrize("method", ["sequential", pytest.param("parallel", marks=pytest.mark.slow)])
def test_forecast_matches_the_dense_joint_gaussian(problem, method):
    model, params, ys = problem
    got = ssm.forecast(params, ys, H_STEPS, method=method)
    assert isinstance(got, ssm.Forecast)
    want = dense_forecast(model, ys, H_STEPS)
    for name in ssm.Forecast._fields:
        assert_close(getattr(got, name), getattr(want, name), rtol=1e-10, err_msg=name)


def test_forecast_after_missing_entries_matches_the_dense_joint_gaussian(problem):
    model, params, ys = problem
    ys = np.array(ys)
    ys[-1, 0] = np.nan  # the last step half observed
    ys[-2] = np.nan  # and the one before not at all
    got = ssm.forecast(params, jnp.asarray(ys), H_STEPS)
    want = dense_forecast(model, ys, H_STEPS)
    for name in ssm.Forecast._fields:
        assert_close(getattr(got, name), getattr(want, name), rtol=1e-10, err_msg=name)


def test_forecast_is_the_filter_over_unobserved_future_steps(problem):
    # A forecast is a prediction over steps with nothing observed: the filter run over ys
    # extended by all-NaN rows predicts (and, observing nothing, filters) the same moments.
    _, params, ys = problem
    padded = jnp.concatenate([ys, jnp.full((H_STEPS, DY), jnp.nan)], axis=0)
    filtered = ssm.kalman_filter(params, padded)
    fc = ssm.forecast(params, ys, H_STEPS)
    assert_close(fc.means, filtered.pred_means[N:], rtol=1e-12)
    assert_close(fc.covs, filtered.pred_covs[N:], rtol=1e-12)
    assert_close(fc.means, filtered.means[N + 1 :], rtol=1e-12)


def test_forecast_paths_have_the_forecast_moments(problem):
    _, params, ys = problem
    keys = jax.random.split(jax.random.PRNGKey(5), NUM_DRAWS)
    paths = jax.jit(jax.vmap(lambda k: ssm.forecast_sample(k, params, ys, H_STEPS)))
    xs, obs = paths(keys)
    xs, obs = np.asarray(xs), np.asarray(obs)
    assert xs.shape == (NUM_DRAWS, H_STEPS, D) and obs.shape == (NUM_DRAWS, H_STEPS, DY)
    fc = ssm.forecast(params, ys, H_STEPS)
    for draws, means, covs in ((xs, fc.means, fc.covs), (obs, fc.obs_means, fc.obs_covs)):
        means, covs = np.asarray(means), np.asarray(covs)
        for j in range(H_STEPS):
            d = np.diag(covs[j])
            np.testing.assert_array_less(
                np.abs(draws[:, j].mean(0) - means[j]), SIGMAS * np.sqrt(d / NUM_DRAWS)
            )
            tol = SIGMAS * np.sqrt((np.outer(d, d) + covs[j] ** 2) / NUM_DRAWS)
            np.testing.assert_array_less(np.abs(np.cov(draws[:, j].T) - covs[j]), tol)
    # A path is a deterministic function of the key.
    np.testing.assert_array_equal(np.asarray(paths(keys)[0]), xs)


@pytest.mark.parametrize(
    "bad, error",
    [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), (None, TypeError)],
)
def test_bad_num_steps_is_named(problem, bad, error):
    _, params, ys = problem
    with pytest.raises(error, match="num_steps must be a positive int"):
        ssm.forecast(params, ys, bad)


def test_forecast_sample_needs_a_key(problem):
    _, params, ys = problem
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        ssm.forecast_sample(None, params, ys, 2)


def _numpy_diagnostics(model, ys, pred_means, pred_covs):
    """Per-step log-densities, innovations and L^{-1} v in numpy from given predictions."""
    H, R = model.H, model.R
    lls, vs, Ss, es = [], [], [], []
    for y, m, P in zip(ys, pred_means, pred_covs, strict=True):
        seen = ~np.isnan(y)
        v = y - H @ m
        S = H @ P @ H.T + R
        e = np.full_like(y, np.nan)
        So = S[np.ix_(seen, seen)]
        L = np.linalg.cholesky(So)
        e[seen] = np.linalg.solve(L, v[seen])
        ll = (
            -0.5 * e[seen] @ e[seen]
            - np.log(np.diag(L)).sum()
            - 0.5 * seen.sum() * np.log(2 * np.pi)
        )
        lls.append(ll), vs.append(v), Ss.append(S), es.append(e)
    return np.array(lls), np.stack(vs), np.stack(Ss), np.stack(es)


@pytest.mark.parametrize("missing", [False, True])
def test_diagnostics_match_numpy_on_the_dense_model(problem, missing):
    model, params, ys = problem
    ys = np.array(ys)
    if missing:
        ys[1, 1] = np.nan
        ys[3] = np.nan
    dense = reference.dense_posterior(model, ys)
    filtered = ssm.kalman_filter(params, jnp.asarray(ys))
    diag = ssm.filter_diagnostics(params, jnp.asarray(ys), filtered)
    want = _numpy_diagnostics(model, ys, dense.pred_means, dense.pred_covs)
    for got, ref, name in zip(diag, want, ssm.FilterDiagnostics._fields, strict=True):
        got = np.asarray(got)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=name)
        ok = ~np.isnan(ref)
        assert_close(got[ok], ref[ok], rtol=1e-10, err_msg=name)
    assert_close(np.sum(diag.log_likelihoods), filtered.log_likelihood, rtol=1e-12)
    assert_close(np.sum(diag.log_likelihoods), dense.log_likelihood, rtol=1e-10)


def test_standardized_innovations_are_white_with_unit_variance():
    # Under the model the e_k are iid N(0, I_Dy). Over n steps, each component's sample mean
    # has standard error 1/sqrt(n), its sample variance sqrt(2/n), and every sample lag-one
    # auto- or cross-correlation (and the contemporaneous cross-correlation) 1/sqrt(n).
    # We allow 6 standard errors (union bound over the 12 statistics: under 3e-8 for a
    # correct filter); the seed is fixed. The positive control: a model with R ten times too
    # small fails the variance check.
    n = 2000
    rng = np.random.default_rng(42)
    model = reference.random_model(rng, D, DY)
    _, ys = reference.simulate(rng, model, n)
    params, ys = to_params(model), jnp.asarray(ys)

    def stats(p):
        e = np.asarray(
            ssm.filter_diagnostics(p, ys, ssm.kalman_filter(p, ys)).standardized_innovations
        )
        lag = (e[1:].T @ e[:-1]) / (n - 1)
        return e.mean(0), e.var(0), lag, (e[:, 0] @ e[:, 1]) / n

    mean, var, lag, cross = stats(params)
    np.testing.assert_array_less(np.abs(mean), SIGMAS / np.sqrt(n))
    np.testing.assert_array_less(np.abs(var - 1), SIGMAS * np.sqrt(2 / n))
    np.testing.assert_array_less(np.abs(lag), SIGMAS / np.sqrt(n))
    assert abs(cross) < SIGMAS / np.sqrt(n)
    _, var_bad, _, _ = stats(params._replace(R=0.1 * params.R))
    assert np.any(np.abs(var_bad - 1) > SIGMAS * np.sqrt(2 / n))


def test_diagnostics_reject_a_mismatched_filter_result(problem):
    _, params, ys = problem
    filtered = ssm.kalman_filter(params, ys)
    with pytest.raises(TypeError, match="filtered must be a jaxssm.FilterResult"):
        ssm.filter_diagnostics(params, ys, tuple(filtered))
    with pytest.raises(ValueError, match="filtered must hold pred_means"):
        ssm.filter_diagnostics(params, ys[:-1], filtered)
