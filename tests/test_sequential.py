"""Sequential schedule (_schedules.sequential) against the dense joint Gaussian and a numpy loop.

Tolerance: rtol 1e-10 in float64 (with an absolute floor of 1e-12 x the array's largest
entry, for entries that cancel to ~0). The dense oracle conditions a (N Dy)-dimensional
Gaussian with Cholesky solves; with the well-conditioned random models below both routes
lose at most a few hundred ulps, so 1e-10 leaves a margin of ~1e3 over round-off.
Against the numpy loop over 1,000 steps (plain solves in another order): 1e-9 for the
moments, 1e-11 for the log-likelihood (a sum dominated by its large terms).
float32 against float64: 1e-4 x the largest mean (absolute) and 1e-5 for log p(y).

The public entry points over this schedule are tested in test_inference.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from reference import dense_posterior, numpy_filter, numpy_smoother, random_model, simulate

from jaxssm._schedules import sequential as _sequential

RTOL = 1e-10

# (D, Dy, N, seed): D != Dy both ways, D = 1, Dy = 1, N = 1.
CASES = [(3, 2, 6, 0), (2, 4, 5, 1), (1, 1, 7, 2), (4, 1, 4, 3), (3, 3, 1, 4), (1, 3, 3, 5)]

filter_ = jax.jit(_sequential.filter)
smooth = jax.jit(_sequential.smooth)


@pytest.mark.parametrize("D, Dy, N, seed", CASES)
def test_against_dense_oracle(D, Dy, N, seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=3.0)
    _, ys = simulate(rng, model, N)
    ref = dense_posterior(model, ys)
    params = to_params(model)

    filt = filter_(params, jnp.asarray(ys))
    assert filt.means.shape == (N + 1, D) and filt.covs.shape == (N + 1, D, D)
    assert filt.pred_means.shape == (N, D) and filt.pred_covs.shape == (N, D, D)
    assert filt.log_likelihood.shape == ()
    assert_close(filt.means, ref.filter_means, RTOL)
    assert_close(filt.covs, ref.filter_covs, RTOL)
    assert_close(filt.pred_means, ref.pred_means, RTOL)
    assert_close(filt.pred_covs, ref.pred_covs, RTOL)
    assert_close(filt.log_likelihood, ref.log_likelihood, RTOL)

    sm = smooth(params, filt)
    assert sm.means.shape == (N + 1, D) and sm.covs.shape == (N + 1, D, D)
    assert sm.gains.shape == (N, D, D)
    assert_close(sm.means, ref.smooth_means, RTOL)
    assert_close(sm.covs, ref.smooth_covs, RTOL)
    # The gains give the lag-one cross-covariances the EM statistic C needs.
    cross = jnp.einsum("kij,klj->kil", sm.covs[1:], sm.gains)
    assert_close(cross, ref.smooth_cross, RTOL)
    # The smoother passes the filter's log-likelihood through.
    np.testing.assert_array_equal(sm.log_likelihood, filt.log_likelihood)
    # The last smoothed row is the last filtered one.
    np.testing.assert_array_equal(sm.means[-1], filt.means[-1])
    np.testing.assert_array_equal(sm.covs[-1], filt.covs[-1])


def test_against_numpy_loop_long_series():
    rng = np.random.default_rng(11)
    model = random_model(rng, 5, 3, mean_scale=10.0)
    _, ys = simulate(rng, model, 1000)
    params = to_params(model)
    fm, fc, pm, pc, ll = numpy_filter(model, ys)
    filt = filter_(params, jnp.asarray(ys))
    # The numpy loop uses plain solves in another order: agreement to 1e-9 over 1000 steps.
    assert_close(filt.means, fm, 1e-9)
    assert_close(filt.covs, fc, 1e-9)
    assert_close(filt.pred_means, pm, 1e-9)
    assert_close(filt.pred_covs, pc, 1e-9)
    assert_close(filt.log_likelihood, ll, 1e-11)
    sm, sc, gains, _ = numpy_smoother(model, ys)
    smoothed = smooth(params, filt)
    assert_close(smoothed.means, sm, 1e-9)
    assert_close(smoothed.covs, sc, 1e-9)
    assert_close(smoothed.gains, gains, 1e-9)


def test_covariances_symmetric_and_pd():
    rng = np.random.default_rng(12)
    model = random_model(rng, 4, 2)
    _, ys = simulate(rng, model, 200)
    filt = filter_(to_params(model), jnp.asarray(ys))
    smoothed = smooth(to_params(model), filt)
    for covs in (smoothed.covs, filt.covs, filt.pred_covs):
        # Symmetric to round-off (XLA may fuse the two halves of (M + M^T)/2 differently).
        asym = np.max(np.abs(covs - np.swapaxes(covs, -1, -2)))
        assert asym <= 1e-15 * np.max(np.abs(covs))
        assert np.all(np.linalg.eigvalsh(np.asarray(covs)) > 0)


def test_float32_follows_inputs_and_tracks_float64():
    rng = np.random.default_rng(13)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, 300)
    f64 = filter_(to_params(model), jnp.asarray(ys))
    s64 = smooth(to_params(model), f64)
    params32 = to_params(model, jnp.float32)
    f32 = filter_(params32, jnp.asarray(ys, jnp.float32))
    s32 = smooth(params32, f32)
    for leaf in (*f32, *s32):
        assert leaf.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(s32.covs)))
    np.testing.assert_allclose(s32.means, s64.means, rtol=0, atol=1e-4 * np.abs(s64.means).max())
    np.testing.assert_allclose(s32.log_likelihood, s64.log_likelihood, rtol=1e-5)
