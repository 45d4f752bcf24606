"""Sequential filter and smoother against the dense joint Gaussian and a numpy loop.

Tolerance: rtol 1e-10 in float64 (with an absolute floor of 1e-12 x the array's largest
entry, for entries that cancel to ~0). The dense oracle conditions a (N Dy)-dimensional
Gaussian with Cholesky solves; with the well-conditioned random models below both routes
lose at most a few hundred ulps, so 1e-10 leaves a margin of ~1e3 over round-off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from reference import dense_posterior, numpy_filter, numpy_smoother, random_model, simulate

import jaxssm as ssm

RTOL = 1e-10

# (D, Dy, N, seed): D != Dy both ways, D = 1, Dy = 1, N = 1.
CASES = [(3, 2, 6, 0), (2, 4, 5, 1), (1, 1, 7, 2), (4, 1, 4, 3), (3, 3, 1, 4), (1, 3, 3, 5)]


@pytest.mark.parametrize("D, Dy, N, seed", CASES)
def test_against_dense_oracle(D, Dy, N, seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=3.0)
    _, ys = simulate(rng, model, N)
    ref = dense_posterior(model, ys)
    params = to_params(model)

    filt = ssm.kalman_filter(params, ys)
    assert filt.means.shape == (N + 1, D) and filt.covs.shape == (N + 1, D, D)
    assert filt.pred_means.shape == (N, D) and filt.pred_covs.shape == (N, D, D)
    assert_close(filt.means, ref.filter_means, RTOL)
    assert_close(filt.covs, ref.filter_covs, RTOL)
    assert_close(filt.pred_means, ref.pred_means, RTOL)
    assert_close(filt.pred_covs, ref.pred_covs, RTOL)
    assert_close(filt.log_likelihood, ref.log_likelihood, RTOL)

    smooth = ssm.rts_smoother(params, ys)
    assert smooth.gains.shape == (N, D, D)
    assert_close(smooth.means, ref.smooth_means, RTOL)
    assert_close(smooth.covs, ref.smooth_covs, RTOL)
    cross = jnp.einsum("kij,klj->kil", smooth.covs[1:], smooth.gains)
    assert_close(cross, ref.smooth_cross, RTOL)
    assert_close(smooth.log_likelihood, ref.log_likelihood, RTOL)
    assert_close(ssm.log_likelihood(params, ys), ref.log_likelihood, RTOL)


def test_smoother_from_filter_equals_smoother():
    rng = np.random.default_rng(10)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, 20)
    params = to_params(model)
    a = ssm.rts_smoother(params, ys)
    b = ssm.rts_smoother_from_filter(params, ssm.kalman_filter(params, ys))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_against_numpy_loop_long_series():
    rng = np.random.default_rng(11)
    model = random_model(rng, 5, 3, mean_scale=10.0)
    _, ys = simulate(rng, model, 1000)
    params = to_params(model)
    fm, fc, pm, pc, ll = numpy_filter(model, ys)
    filt = ssm.kalman_filter(params, ys)
    # The numpy loop uses plain solves in another order: agreement to 1e-9 over 1000 steps.
    assert_close(filt.means, fm, 1e-9)
    assert_close(filt.covs, fc, 1e-9)
    assert_close(filt.pred_covs, pc, 1e-9)
    assert_close(filt.log_likelihood, ll, 1e-11)
    sm, sc, gains, _ = numpy_smoother(model, ys)
    smooth = ssm.rts_smoother(params, ys)
    assert_close(smooth.means, sm, 1e-9)
    assert_close(smooth.covs, sc, 1e-9)
    assert_close(smooth.gains, gains, 1e-9)


def test_covariances_symmetric_and_pd():
    rng = np.random.default_rng(12)
    model = random_model(rng, 4, 2)
    _, ys = simulate(rng, model, 200)
    smooth = ssm.rts_smoother(to_params(model), ys)
    for covs in (smooth.covs, ssm.kalman_filter(to_params(model), ys).covs):
        # Symmetric to round-off (XLA may fuse the two halves of (M + M^T)/2 differently).
        asym = np.max(np.abs(covs - np.swapaxes(covs, -1, -2)))
        assert asym <= 1e-15 * np.max(np.abs(covs))
        assert np.all(np.linalg.eigvalsh(np.asarray(covs)) > 0)


def test_float32_follows_inputs_and_tracks_float64():
    rng = np.random.default_rng(13)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, 300)
    s64 = ssm.rts_smoother(to_params(model), ys)
    s32 = ssm.rts_smoother(to_params(model, jnp.float32), jnp.asarray(ys, jnp.float32))
    for leaf in s32:
        assert leaf.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(s32.covs)))
    np.testing.assert_allclose(s32.means, s64.means, rtol=0, atol=1e-4 * np.abs(s64.means).max())
    np.testing.assert_allclose(s32.log_likelihood, s64.log_likelihood, rtol=1e-5)


def test_sample_shapes_dtype_and_statistics():
    rng = np.random.default_rng(14)
    model = random_model(rng, 2, 3)
    params = to_params(model)
    xs, ys = ssm.sample(jax.random.PRNGKey(0), params, 50)
    assert xs.shape == (51, 2) and ys.shape == (50, 3) and xs.dtype == jnp.float64
    # Many independent draws of (x_0, x_1, y_1): moments against the model's.
    keys = jax.random.split(jax.random.PRNGKey(1), 20000)
    xs, ys = jax.vmap(lambda k: ssm.sample(k, params, 1))(keys)
    x1, y1 = np.asarray(xs[:, 1]), np.asarray(ys[:, 0])
    cov_x1 = model.A @ model.P0 @ model.A.T + model.Q
    # Monte Carlo error of a mean with 20k draws is ~ sd / 141: test at 5 sigma.
    sd = np.sqrt(np.diag(cov_x1))
    np.testing.assert_array_less(np.abs(x1.mean(0) - model.A @ model.m0), 5 * sd / np.sqrt(2e4))
    np.testing.assert_allclose(
        np.cov(y1.T), model.H @ cov_x1 @ model.H.T + model.R, rtol=0.06, atol=0.03
    )
    # Same key, same draw: explicit keys, no hidden state.
    a = ssm.sample(jax.random.PRNGKey(3), params, 5)
    b = ssm.sample(jax.random.PRNGKey(3), params, 5)
    np.testing.assert_array_equal(a[1], b[1])
