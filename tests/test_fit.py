"""jaxssm.fit: accelerated EM to convergence; the answer is a maximum (score ~ 0, no EM gain)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxssm as ssm
from jaxssm._learn.fit import num_free_params
from jaxssm._learn.score import score

UPDATE = ("A", "Q")


def _true(dtype=jnp.float64, Q=(0.1, 0.05)):
    return ssm.LGSSM(
        m0=jnp.zeros(2, dtype),
        P0=jnp.eye(2, dtype=dtype),
        A=jnp.array([[0.9, 0.1], [0.0, 0.8]], dtype),
        Q=jnp.diag(jnp.array(Q, dtype)),
        H=jnp.eye(2, dtype=dtype),
        R=0.1 * jnp.eye(2, dtype=dtype),
    )


def _start(true):
    dtype = true.A.dtype
    return true._replace(A=jnp.zeros((2, 2), dtype), Q=jnp.eye(2, dtype=dtype))


@pytest.fixture(scope="module")
def problem():
    true = _true()
    _, ys = ssm.sample(jax.random.PRNGKey(1), true, 500)
    return _start(true), ys


def _finite(trace):
    trace = np.asarray(trace)
    return trace[np.isfinite(trace)]


def _assert_monotone(info, rtol=1e-9):
    trace = _finite(info.log_likelihoods)
    assert np.all(np.diff(trace) >= -rtol * np.abs(trace[1:]))


def test_fit_reaches_the_maximum(problem):
    start, ys = problem
    params, info = ssm.fit(start, ys)
    assert info.status == ssm.FitStatus.CONVERGED
    _assert_monotone(info)
    assert float(info.log_likelihood) == pytest.approx(
        float(ssm.log_likelihood(params, ys)), abs=1e-9
    )
    # The same maximum as a long plain EM run, in a fraction of its E-steps.
    _, plain = ssm.fit_em(start, ys, num_iters=2000)
    assert float(info.log_likelihood) >= float(plain.log_likelihood) - 1e-6
    assert info.num_e_steps < 200
    # At a maximum: the exact score is ~0 relative to the parameters' scale ...
    g = score(params, ys, update=UPDATE)
    # (each entry's gradient times the entry: nats per relative change, against |log p(y)|)
    scaled = max(float(jnp.max(jnp.abs(g.A * params.A))), float(jnp.max(jnp.abs(g.Q * params.Q))))
    assert scaled < 1e-4 * abs(float(info.log_likelihood))
    assert float(info.grad_norm) ** 2 / 2 <= 1e-9 * abs(float(info.log_likelihood))
    # ... and 50 more plain EM iterations gain (almost) nothing.
    _, more = ssm.fit_em(params, ys, num_iters=50)
    assert float(more.log_likelihood) - float(info.log_likelihood) < 1e-6


def test_information_criteria(problem):
    start, ys = problem
    params, info = ssm.fit(start, ys, tol=1e-6)
    k = 2 * 2 + 3  # A: D^2, Q: D (D + 1) / 2
    assert info.num_free_params == k == num_free_params(params, UPDATE)
    assert num_free_params(params, ("A", "Q", "H", "R", "m0")) == 4 + 3 + 4 + 3 + 2
    ll = float(info.log_likelihood)
    assert float(info.aic) == pytest.approx(2 * k - 2 * ll)
    assert float(info.bic) == pytest.approx(k * math.log(ys.shape[0]) - 2 * ll)


def test_boundary_maximum_with_a_singular_q():
    # The first component is noise free (Q[0, 0] = 0): the maximum sits where Q turns
    # singular, and plain EM crawls towards it (its rate tends to one).
    true = _true(Q=(0.0, 0.1))._replace(A=jnp.array([[0.99, 0.1], [0.0, 0.9]]))
    _, ys = ssm.sample(jax.random.PRNGKey(2), true, 300)
    start = _start(true)
    params, info = ssm.fit(start, ys, tol=1e-7, max_iters=3000)
    assert info.status == ssm.FitStatus.CONVERGED
    _assert_monotone(info)
    _, plain = ssm.fit_em(start, ys, num_iters=info.num_e_steps)
    # Better than plain EM with the same number of E-steps, and EM has little left to gain.
    assert float(info.log_likelihood) > float(plain.log_likelihood) + 1e-3
    _, more = ssm.fit_em(params, ys, num_iters=50)
    assert float(more.log_likelihood) - float(info.log_likelihood) < 1e-3
    assert float(jnp.linalg.eigvalsh(params.Q)[0]) < 1e-3 * float(jnp.linalg.eigvalsh(params.Q)[1])


def test_missing_entries(problem):
    start, ys = problem
    mask = jax.random.bernoulli(jax.random.PRNGKey(3), 0.15, ys.shape)
    gappy = jnp.where(mask, jnp.nan, ys)
    params, info = ssm.fit(start, gappy)
    assert info.status == ssm.FitStatus.CONVERGED
    _assert_monotone(info)
    _, plain = ssm.fit_em(start, gappy, num_iters=1500)
    assert float(info.log_likelihood) >= float(plain.log_likelihood) - 1e-6
    # BIC counts the steps with an observed entry.
    observed = int(np.sum(~np.all(np.isnan(np.asarray(gappy)), axis=-1)))
    ll = float(info.log_likelihood)
    assert float(info.bic) == pytest.approx(info.num_free_params * math.log(observed) - 2 * ll)


def test_batch():
    true = _true()
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    ys = jax.vmap(lambda k: ssm.sample(k, true, 200)[1])(keys)
    start = _start(true)
    params, info = ssm.fit(start, ys)
    assert info.status == ssm.FitStatus.CONVERGED
    _, plain = ssm.fit_em(start, ys, num_iters=1500)
    assert float(info.log_likelihood) >= float(plain.log_likelihood) - 1e-6


def test_inputs():
    true = _true()._replace(B=jnp.array([[0.5], [-0.2]]))
    u = jax.random.normal(jax.random.PRNGKey(5), (400, 1))
    _, ys = ssm.sample(jax.random.PRNGKey(6), true, 400, inputs=u)
    start = _start(true)._replace(B=jnp.zeros((2, 1)))
    update = ("A", "B", "Q")
    params, info = ssm.fit(start, ys, inputs=u, update=update)
    assert info.status == ssm.FitStatus.CONVERGED
    assert info.num_free_params == 4 + 2 + 3
    _, plain = ssm.fit_em(start, ys, inputs=u, update=update, num_iters=1500)
    assert float(info.log_likelihood) >= float(plain.log_likelihood) - 1e-6


@pytest.mark.slow
def test_parallel_schedule_agrees(problem):
    start, ys = problem
    _, seq = ssm.fit(start, ys)
    _, par = ssm.fit(start, ys, method="parallel")
    assert float(par.log_likelihood) == pytest.approx(float(seq.log_likelihood), abs=1e-6)


def test_start_from_data(problem):
    start, ys = problem
    params, info = ssm.fit(start, ys, start="data")
    _, ref = ssm.fit(start, ys)
    assert info.status == ssm.FitStatus.CONVERGED
    assert float(info.log_likelihood) == pytest.approx(float(ref.log_likelihood), abs=1e-5)


def test_float32_runs_without_nan():
    true = _true(jnp.float32)
    _, ys = ssm.sample(jax.random.PRNGKey(1), true, 500)
    params, info = ssm.fit(_start(true), ys, tol=1e-6, max_iters=600)
    assert params.A.dtype == jnp.float32 and params.Q.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(params.A))) and np.all(np.isfinite(np.asarray(params.Q)))
    assert np.isfinite(float(info.log_likelihood)) and np.isfinite(float(info.grad_norm))
    _assert_monotone(info, rtol=3.5e-4)


def test_bad_arguments(problem):
    start, ys = problem
    with pytest.raises(ValueError, match="start"):
        ssm.fit(start, ys, start="nope")
    with pytest.raises((ValueError, TypeError)):
        ssm.fit(start, ys, max_iters=2)
