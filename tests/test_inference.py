"""Public inference entry points (_api.inference) on every schedule, against the dense oracle.

Tolerance: rtol 1e-10 in float64 (with the absolute floor of helpers.assert_close, 1e-12 x
the array's largest entry, for entries that cancel to ~0), as for the schedules themselves
(test_sequential.py, test_steady.py, test_parallel.py): every schedule is exact to
round-off, a few hundred ulps on these well-conditioned models, so 1e-10 leaves a margin of
~1e3. The batched log-likelihood ``[B, N, Dy]`` is the per-sequence computation vmapped
and summed: held to 1e-13 against the sum of the per-sequence values (XLA may order the
batched products differently, an ulp or two of each term; a sequence dropped, counted twice
or paired with the wrong parameters is an O(1) error).

The model settles in a few steps, so that ``steady_state=True`` runs the steady-state fast
path at N = 45 (asserted), and the dense oracle can still handle the series. Which
schedule each argument selects is tested in test_dispatch.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from reference import dense_posterior, random_model, simulate

import jaxssm as ssm
from jaxssm._schedules import settle as _settle

RTOL = 1e-10
N = 45

# Every valid (method, steady_state).
SCHEDULES = [
    ("sequential", None),
    ("sequential", True),
    ("sequential", False),
    ("parallel", None),
    ("parallel", False),
]
IDS = [f"{m}-{s}" for m, s in SCHEDULES]


def fast_model(seed, D, Dy):
    """A model whose covariances settle within a few steps (small A, precise observations)."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=3.0)
    return rng, model._replace(A=model.A * (0.05 / 0.95), R=model.R * 0.01)


@pytest.fixture(scope="module")
def problem():
    rng, model = fast_model(0, 3, 2)
    _, ys = simulate(rng, model, N)
    params = to_params(model)
    info = jax.jit(lambda p: _settle.smoother_side(p, _settle.transient_bound(N)).info)(params)
    assert bool(info.converged), "steady_state=True must run the fast path on this model"
    return model, params, jnp.asarray(ys), dense_posterior(model, ys)


@pytest.mark.parametrize("method, steady_state", SCHEDULES, ids=IDS)
def test_against_dense_oracle(problem, method, steady_state):
    model, params, ys, ref = problem
    kw = dict(method=method, steady_state=steady_state)
    D = model.A.shape[0]

    filt = ssm.kalman_filter(params, ys, **kw)
    assert isinstance(filt, ssm.FilterResult)
    assert filt.means.shape == (N + 1, D) and filt.covs.shape == (N + 1, D, D)
    assert filt.pred_means.shape == (N, D) and filt.pred_covs.shape == (N, D, D)
    assert_close(filt.means, ref.filter_means, RTOL)
    assert_close(filt.covs, ref.filter_covs, RTOL)
    assert_close(filt.pred_means, ref.pred_means, RTOL)
    assert_close(filt.pred_covs, ref.pred_covs, RTOL)
    assert_close(filt.log_likelihood, ref.log_likelihood, RTOL)

    smooth = ssm.rts_smoother(params, ys, **kw)
    assert isinstance(smooth, ssm.SmootherResult)
    assert smooth.gains.shape == (N, D, D)
    assert_close(smooth.means, ref.smooth_means, RTOL)
    assert_close(smooth.covs, ref.smooth_covs, RTOL)
    cross = jnp.einsum("kij,klj->kil", smooth.covs[1:], smooth.gains)
    assert_close(cross, ref.smooth_cross, RTOL)
    assert_close(smooth.log_likelihood, ref.log_likelihood, RTOL)

    assert_close(ssm.log_likelihood(params, ys, **kw), ref.log_likelihood, RTOL)


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_smoother_from_filter(problem, method):
    _, params, ys, ref = problem
    filt = ssm.kalman_filter(params, ys, method=method)
    smooth = ssm.rts_smoother_from_filter(params, filt, method=method)
    assert_close(smooth.means, ref.smooth_means, RTOL)
    assert_close(smooth.covs, ref.smooth_covs, RTOL)
    cross = jnp.einsum("kij,klj->kil", smooth.covs[1:], smooth.gains)
    assert_close(cross, ref.smooth_cross, RTOL)
    np.testing.assert_array_equal(smooth.log_likelihood, filt.log_likelihood)
    # The same result as the one-call smoother, to the last bit on the sequential schedule
    # (the same steps in the same order), to round-off on the parallel one (its filter and
    # smoother are then two compiled programs instead of one).
    one_call = ssm.rts_smoother(params, ys, method=method)
    for name, a, b in zip(smooth._fields, smooth, one_call, strict=True):
        if method == "sequential":
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            assert_close(a, b, 1e-13, err_msg=name)


def test_smoother_from_filter_checks_its_input(problem):
    _, params, ys, _ = problem
    filt = ssm.kalman_filter(params, ys)
    with pytest.raises(TypeError, match="filtered must be a jaxssm.FilterResult"):
        ssm.rts_smoother_from_filter(params, tuple(filt))
    with pytest.raises(ValueError, match="filtered must hold means"):
        ssm.rts_smoother_from_filter(params, filt._replace(means=filt.means[1:]))
    with pytest.raises(ValueError, match="filtered must hold means"):
        ssm.rts_smoother_from_filter(params, filt._replace(pred_covs=filt.pred_covs[:, :2]))


# The parallel schedule vmapped over sequences is tested in test_parallel.py (a batch costs
# its own ~10 s compile of the associative scans).
@pytest.mark.parametrize(
    "method, steady_state",
    [("sequential", None), ("sequential", True), ("sequential", False)],
    ids=["sequential-None", "sequential-True", "sequential-False"],
)
def test_batched_log_likelihood_is_the_sum(problem, method, steady_state):
    model, params, ys, _ = problem
    _, ys2 = simulate(np.random.default_rng(1), model, N)
    batch = jnp.stack([ys, jnp.asarray(ys2), ys[::-1]])
    kw = dict(method=method, steady_state=steady_state)
    total = ssm.log_likelihood(params, batch, **kw)
    assert total.shape == () and total.dtype == jnp.float64
    per_sequence = [ssm.log_likelihood(params, batch[b], **kw) for b in range(3)]
    assert_close(total, sum(float(x) for x in per_sequence), 1e-13)
    # A batch of one is the sequence itself.
    assert_close(ssm.log_likelihood(params, ys[None], **kw), per_sequence[0], 1e-13)


@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_bad_observations_name_the_argument(problem, method):
    _, params, ys, _ = problem
    for fn in (ssm.kalman_filter, ssm.rts_smoother, ssm.log_likelihood):
        with pytest.raises(ValueError, match="ys must have shape"):
            fn(params, jnp.zeros((5, 3)), method=method)
        with pytest.raises(ValueError, match="ys must have shape"):
            fn(params, jnp.zeros(5), method=method)
        with pytest.raises(TypeError, match="ys must have the parameters' dtype"):
            fn(params, jnp.zeros((5, 2), jnp.float32), method=method)
    # Only log_likelihood takes a batch.
    for fn in (ssm.kalman_filter, ssm.rts_smoother):
        with pytest.raises(ValueError, match="ys must have shape"):
            fn(params, ys[None], method=method)


def test_float32_follows_inputs(problem):
    model, params, ys, ref = problem
    params32 = to_params(model, jnp.float32)
    ys32 = ys.astype(jnp.float32)
    for leaf in (*ssm.kalman_filter(params32, ys32), *ssm.rts_smoother(params32, ys32)):
        assert leaf.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(leaf)))
    ll = ssm.log_likelihood(params32, ys32)
    assert ll.dtype == jnp.float32
    np.testing.assert_allclose(ll, ref.log_likelihood, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Sampling (jaxssm._api.sampling): the generative model the inference inverts
# ---------------------------------------------------------------------------------------------


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
