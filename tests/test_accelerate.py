"""SQUAREM (jaxssm._learn.accelerate): monotone, safeguarded, same maximum as plain EM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxssm as ssm
from jaxssm._learn.accelerate import from_coordinates, is_valid, squarem_loop, to_coordinates

UPDATE = ("A", "Q")


def _model(dtype=jnp.float64):
    A = jnp.array([[0.9, 0.1], [0.0, 0.8]], dtype)
    return ssm.LGSSM(
        m0=jnp.zeros(2, dtype),
        P0=jnp.eye(2, dtype=dtype),
        A=A,
        Q=jnp.diag(jnp.array([0.1, 0.05], dtype)),
        H=jnp.eye(2, dtype=dtype),
        R=0.1 * jnp.eye(2, dtype=dtype),
    )


def _data(num_steps=500, dtype=jnp.float64):
    true = _model(dtype)
    _, ys = ssm.sample(jax.random.PRNGKey(1), true, num_steps)
    start = true._replace(A=jnp.zeros((2, 2), dtype), Q=jnp.eye(2, dtype=dtype))
    return start, ys


def _em_map(ys, update=UPDATE):
    def em_map(p):
        stats, ll = ssm.e_step(p, ys)
        return ssm.m_step(p, stats, update), ll

    return em_map


def _run(start, ys, max_iters, tol=None):
    run = jax.jit(
        lambda p: squarem_loop(_em_map(ys), p, update=UPDATE, max_iters=max_iters, tol=tol)
    )
    return run(start)


def _finite(trace):
    trace = np.asarray(trace)
    return trace[np.isfinite(trace)]


def test_trace_never_falls_and_reaches_plain_em_maximum():
    start, ys = _data()
    params, info = _run(start, ys, 300, tol=1e-12)
    trace = _finite(info.log_likelihoods)
    assert len(trace) == int(info.num_e_steps) - int(info.num_rejected)
    assert np.all(np.diff(trace) >= -1e-9 * np.abs(trace[1:]))
    assert int(info.status) == int(ssm.EMStatus.CONVERGED)
    _, plain = ssm.fit_em(start, ys, num_iters=5000)
    # The same maximum as 5,000 plain EM iterations, in far fewer E-steps.
    assert float(info.log_likelihood) >= float(plain.log_likelihood) - 1e-6
    assert int(info.num_e_steps) < 200
    assert float(info.log_likelihood) == pytest.approx(
        float(ssm.log_likelihood(params, ys)), abs=1e-8
    )


def test_extrapolations_are_log_coordinates_of_covariances():
    p = _model()
    coords = to_coordinates(p, UPDATE)
    np.testing.assert_allclose(from_coordinates(p, coords).Q, p.Q, rtol=1e-12)
    # Any symmetric matrix in log coordinates maps back to a positive definite covariance.
    back = from_coordinates(p, {"Q": jnp.array([[-30.0, 5.0], [5.0, 2.0]])})
    assert bool(is_valid(back, ("Q",)))
    assert not bool(is_valid(p._replace(Q=jnp.diag(jnp.array([1.0, -1e-3]))), ("Q",)))
    assert not bool(is_valid(p._replace(A=jnp.full((2, 2), jnp.nan)), ("A",)))


def _toy(ll_fn):
    """A synthetic linear EM map ``A -> 0.9 A`` with a chosen 'log-likelihood'."""
    p = _model()._replace(A=jnp.ones((2, 2)))

    def em_map(q):
        return q._replace(A=0.9 * q.A), ll_fn(q.A)

    return p, em_map


def test_rejected_extrapolation_falls_back_to_plain_em():
    # Extrapolating the exact linear map lands on A = 0, which this objective refuses.
    p, em_map = _toy(lambda A: jnp.where(A[0, 0] > 1e-3, -jnp.sum(A * A), -jnp.inf))
    run = jax.jit(lambda q: squarem_loop(em_map, q, update=("A",), max_iters=30, max_backtracks=0))
    out, info = run(p)
    assert int(info.num_rejected) == int(info.num_extrapolations) > 0
    trace = _finite(info.log_likelihoods)
    assert np.all(np.diff(trace) >= 0)
    # Only plain EM iterates were kept: A = 0.9^k.
    k = np.log(float(out.A[0, 0])) / np.log(0.9)
    assert abs(k - round(k)) < 1e-9
    # With backtracking, a step pulled back towards plain EM is accepted instead.
    run = jax.jit(lambda q: squarem_loop(em_map, q, update=("A",), max_iters=9))
    out, info = run(p)
    assert int(info.num_extrapolations) > int(info.num_rejected) > 0
    assert float(out.A[0, 0]) < 0.9**2


def test_accepted_extrapolation_solves_a_linear_map():
    p, em_map = _toy(lambda A: -jnp.sum(A * A))
    run = jax.jit(lambda q: squarem_loop(em_map, q, update=("A",), max_iters=30, tol=1e-14))
    out, info = run(p)
    assert int(info.num_rejected) == 0 and int(info.num_extrapolations) >= 1
    assert float(jnp.max(jnp.abs(out.A))) < 1e-8


def test_decrease_stops_with_the_best_point():
    calls = jnp.array([0.0])
    p, em_map = _toy(lambda A: jnp.where(A[0, 0] > 0.5, -jnp.sum(A * A), -1e6))
    del calls
    run = jax.jit(lambda q: squarem_loop(em_map, q, update=("A",), max_iters=300))
    out, info = run(p)
    # The extrapolations that jump below 0.5 are rejected; the plain step that crosses it is
    # an EM "decrease": the loop stops there and returns the best point.
    assert int(info.status) == int(ssm.EMStatus.DECREASED)
    assert float(out.A[0, 0]) > 0.5
    assert float(info.decrease) > 0


def test_float32_runs_without_nan():
    start, ys = _data(dtype=jnp.float32)
    params, info = _run(start, ys, 90, tol=1e-6)
    assert params.A.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(params.Q)))
    assert np.isfinite(float(info.log_likelihood))
    trace = _finite(info.log_likelihoods)
    assert np.all(np.diff(trace) >= -3.5e-4 * np.abs(trace[1:]))


def test_max_iters_must_hold_a_cycle():
    start, ys = _data(50)
    with pytest.raises(ValueError, match="at least 3"):
        squarem_loop(_em_map(ys), start, update=UPDATE, max_iters=2)


# --- fit_em(accelerate="squarem"): the same loop behind the EM entry point -----------------


# Slow suite (11 s): the default suite runs the same loop on the same data through the
# private entry point (test_trace_never_falls_and_reaches_plain_em_maximum above).
@pytest.mark.slow
def test_fit_em_squarem_is_monotone_and_reaches_plain_ems_maximum():
    start, ys = _data()
    fitted, info = ssm.fit_em(start, ys, num_iters=300, tol=1e-12, accelerate="squarem")
    trace = _finite(info.log_likelihoods)
    assert np.all(np.diff(trace) >= -1e-9 * np.abs(trace[1:]))
    assert int(info.status) == int(ssm.EMStatus.CONVERGED)
    assert int(info.num_iters) < 300  # E-steps run
    # The returned point is the best evaluated one, and its log-likelihood is the filter's.
    ll = float(ssm.log_likelihood(fitted, ys))
    np.testing.assert_allclose(float(info.log_likelihood), ll, rtol=1e-12)
    assert float(info.log_likelihood) == pytest.approx(float(np.max(trace)), rel=1e-12)
    # Plain EM's long run ends at the same maximum (it approaches from below).
    _, plain = ssm.fit_em(start, ys, num_iters=5000)
    assert ll >= float(plain.log_likelihood) - 1e-8 * abs(ll)
    assert ll - float(plain.log_likelihood) < 1e-6 * abs(ll)


def test_fit_em_squarem_with_a_gap_matches_the_loop_on_the_public_e_step():
    start, ys = _data(num_steps=300)
    ys = ys.at[40:45, 0].set(jnp.nan)
    fitted, info = ssm.fit_em(start, ys, num_iters=60, accelerate="squarem")
    ref, ref_info = _run(start, ys, 60)
    np.testing.assert_allclose(
        np.asarray(info.log_likelihoods), np.asarray(ref_info.log_likelihoods), rtol=1e-11
    )
    np.testing.assert_allclose(np.asarray(fitted.A), np.asarray(ref.A), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(accelerate="anderson"), "accelerate must be None or 'squarem'"),
        (dict(accelerate="squarem", num_iters=2), "at least 3"),
        (dict(accelerate="squarem", progress=True), "progress and callback"),
        (dict(accelerate="squarem", callback=lambda i, ll: None), "progress and callback"),
    ],
)
def test_fit_em_accelerate_errors(kwargs, match):
    start, ys = _data(num_steps=50)
    kwargs = {"num_iters": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        ssm.fit_em(start, ys, **kwargs)
