"""Bad input gets a clear error naming the argument and the expected shape or dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import to_params
from reference import random_model

import jaxssm as ssm


@pytest.fixture
def good():
    model = random_model(np.random.default_rng(0), 3, 2)
    return to_params(model), jnp.zeros((5, 2))


ENTRY_POINTS = [ssm.kalman_filter, ssm.rts_smoother, ssm.log_likelihood]


@pytest.mark.parametrize("fn", ENTRY_POINTS)
@pytest.mark.parametrize(
    "shape, pattern",
    [
        ((5, 3), r"ys must have shape \[N, Dy\] with Dy = 2 \(from H\), got shape \(5, 3\)"),
        ((), r"ys must have shape \[N, Dy\].*got shape \(\) \(ndim 0\)"),
        ((5,), r"ys must have shape \[N, Dy\].*got shape \(5,\) \(ndim 1\)"),
        ((2, 2, 5, 2), r"ys must have shape \[N, Dy\].*\(ndim 4\)"),
        ((4, 5, 2), r"ys must have shape \[N, Dy\].*\(ndim 3\).*vmap"),
        ((0, 2), r"ys must hold at least one step \(N >= 1\)"),
    ],
)
def test_bad_ys_shape(good, fn, shape, pattern):
    params, _ = good
    with pytest.raises(ValueError, match=pattern):
        fn(params, jnp.zeros(shape))


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("A", jnp.zeros((3, 2)), r"A must be a square matrix \[D, D\], got shape \(3, 2\)"),
        ("Q", jnp.eye(4), r"Q must have shape \[D, D\] = \(3, 3\), got shape \(4, 4\)"),
        ("Q", jnp.zeros((3, 4)), r"Q must have shape \[D, D\] = \(3, 3\), got shape \(3, 4\)"),
        ("H", jnp.zeros((2, 4)), r"H must have shape \[Dy, D\] with D = 3 \(from A\), got shape"),
        ("R", jnp.eye(3), r"R must have shape \[Dy, Dy\] = \(2, 2\), got shape \(3, 3\)"),
        ("m0", jnp.zeros((3, 1)), r"m0 must have shape \[D\] = \(3,\), got shape \(3, 1\)"),
        ("P0", jnp.eye(2), r"P0 must have shape \[D, D\] = \(3, 3\), got shape \(2, 2\)"),
    ],
)
def test_bad_param_shapes(good, field, value, pattern):
    params, ys = good
    with pytest.raises(ValueError, match=pattern):
        ssm.kalman_filter(params._replace(**{field: value}), ys)


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("Q", np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "Q must be symmetric"),
        ("R", -np.eye(2), r"R must be symmetric positive definite.*smallest eigenvalue -1"),
        ("P0", np.diag([1.0, 0.0, 1.0]), "P0 must be symmetric positive definite"),
        ("Q", np.full((3, 3), np.nan), "Q must be finite"),
    ],
)
def test_covariances_checked_when_concrete(good, field, value, pattern):
    params, ys = good
    with pytest.raises(ValueError, match=pattern):
        ssm.rts_smoother(params._replace(**{field: jnp.asarray(value)}), ys)


def test_value_checks_skipped_under_tracing(good):
    # Under jit the values are unknown: only shapes and dtypes are checked at trace time.
    params, ys = good
    bad = params._replace(R=-jnp.eye(2))
    out = jax.jit(ssm.log_likelihood)(bad, ys)
    assert out.shape == ()
    with pytest.raises(ValueError, match="R must have shape"):
        jax.jit(ssm.log_likelihood)(params._replace(R=jnp.eye(3)), ys)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.complex64])
def test_non_float_dtypes(good, dtype):
    params, ys = good
    with pytest.raises(TypeError, match=r"ys must have a real floating dtype.*got"):
        ssm.kalman_filter(params, ys.astype(dtype))
    with pytest.raises(TypeError, match=r"A must have a real floating dtype"):
        ssm.kalman_filter(params._replace(A=params.A.astype(dtype)), ys)


def test_mismatched_dtypes(good):
    params, ys = good
    with pytest.raises(TypeError, match=r"must share one floating dtype.*Q=float32"):
        ssm.kalman_filter(params._replace(Q=params.Q.astype(jnp.float32)), ys)
    with pytest.raises(TypeError, match=r"ys must have the parameters' dtype float64, got float32"):
        ssm.kalman_filter(params, ys.astype(jnp.float32))


def test_params_must_be_lgssm(good):
    params, ys = good
    with pytest.raises(TypeError, match="params must be a jaxssm.LGSSM, got tuple"):
        ssm.kalman_filter(tuple(params), ys)


def test_sample_arguments(good):
    params, _ = good
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        ssm.sample(jax.random.PRNGKey(0), params, 0)
    with pytest.raises(TypeError, match="num_steps must be a Python int"):
        ssm.sample(jax.random.PRNGKey(0), params, 2.5)


def test_smoother_from_filter_checks(good):
    params, ys = good
    filt = ssm.kalman_filter(params, ys)
    with pytest.raises(TypeError, match="filtered must be a jaxssm.FilterResult"):
        ssm.rts_smoother_from_filter(params, tuple(filt))
    with pytest.raises(ValueError, match=r"filtered must hold means \[N\+1, D\]"):
        ssm.rts_smoother_from_filter(params, filt._replace(means=filt.means[1:]))


def test_unknown_method(good):
    params, ys = good
    with pytest.raises(ValueError, match="method must be 'sequential' or 'parallel', got 'fast'"):
        ssm.log_likelihood(params, ys, method="fast")
