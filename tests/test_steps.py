"""Per-step algebra (jaxssm.steps) against plain numpy, with both forms of its linear algebra.

Tolerance: rtol 1e-12 in float64 (with the absolute floor of helpers.assert_close, 1e-12 x
1e-2 x the array's largest entry, for entries that cancel to ~0). Each step is a handful of
products of D <= 4 matrices and at most one Cholesky factorisation of a well-conditioned
matrix (random SPD covariances with eigenvalues in [0.1, 1.2], condition numbers below
~1e2); numpy forms the same quantities with LU solves and explicit gains in another order
(``K = S^{-1} H P``, ``P - K S K^T``), so the two routes differ by a few ulps times the
condition number: at most 5e-14 was measured on these cases, a margin of ~20 under 1e-12,
while a wrong transpose, a missing term or a gain used the wrong way round is an O(1) error.

The halves are checked to compose to the whole steps (``update``, ``smooth_step``) exactly:
the whole steps call the same halves with the same arguments, op by op, so their results
are bitwise equal in eager mode. With the loop form of the linear algebra (``la=LOOPS``, no
LAPACK call) every step is held to 1e-12 against the LAPACK form, for the same reasons; the
forms themselves are tested in test_linalg.py. float32: 1e-4 against float64 (eps 1.2e-7
times the condition numbers).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close
from reference import random_model, random_spd

from jaxssm import steps
from jaxssm._base.linalg import LAPACK, LOOPS

RTOL = 1e-12

# (D, Dy, seed): D != Dy both ways, D = 1, Dy = 1.
CASES = [(3, 2, 0), (2, 4, 1), (1, 1, 2), (4, 1, 3), (1, 3, 4), (4, 4, 5)]


def case(D, Dy, seed):
    """A model, a predicted/filtered mean and covariance, and an observation (numpy, f64)."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=3.0)
    mean = 3.0 * rng.standard_normal(D)
    cov = random_spd(rng, D)
    y = rng.standard_normal(Dy)
    return rng, model, mean, cov, y


def j(*xs):
    return tuple(jnp.asarray(x) for x in xs)


def assert_exactly_symmetric(M):
    M = np.asarray(M)
    np.testing.assert_array_equal(M, np.swapaxes(M, -1, -2))


# ---------------------------------------------------------------------------------------------
# Time update
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("D, Dy, seed", CASES)
def test_predict(D, Dy, seed):
    _, model, mean, cov, _ = case(D, Dy, seed)
    A, Q = model.A, model.Q
    m, P, jA, jQ = j(mean, cov, A, Q)
    assert_close(steps.predict_mean(m, jA), A @ mean, RTOL)
    pc = steps.predict_cov(P, jA, jQ)
    assert_close(pc, A @ cov @ A.T + Q, RTOL)
    assert_exactly_symmetric(pc)
    pred = steps.predict(m, P, jA, jQ)
    np.testing.assert_array_equal(pred.mean, steps.predict_mean(m, jA))
    np.testing.assert_array_equal(pred.cov, pc)


# ---------------------------------------------------------------------------------------------
# Measurement update: the halves against numpy, and composing to update
# ---------------------------------------------------------------------------------------------


def numpy_update(mean, cov, H, R, y):
    S = H @ cov @ H.T + R
    L = np.linalg.cholesky(S)
    K = np.linalg.solve(S, H @ cov).T
    v = y - H @ mean
    ll = -0.5 * (v @ np.linalg.solve(S, v) + np.linalg.slogdet(2 * np.pi * S)[1])
    return dict(
        S=S,
        L=L,
        W=np.linalg.solve(L, H @ cov),
        K=K,
        z=np.linalg.solve(L, v),
        mean=mean + K @ v,
        cov=cov - K @ S @ K.T,
        ll=ll,
    )


@pytest.mark.parametrize("D, Dy, seed", CASES)
def test_update_halves_against_numpy(D, Dy, seed):
    _, model, mean, cov, y = case(D, Dy, seed)
    ref = numpy_update(mean, cov, model.H, model.R, y)
    m, P, H, R, jy = j(mean, cov, model.H, model.R, y)

    L = steps.innovation_chol(P, H, R)
    assert_close(L, ref["L"], RTOL)
    np.testing.assert_array_equal(np.triu(np.asarray(L), 1), 0.0)

    half = steps.update_cov(P, H, R)
    assert isinstance(half, steps.CovUpdate)
    assert half.chol.shape == (Dy, Dy) and half.obs_factor.shape == (Dy, D)
    assert half.cov.shape == (D, D)
    np.testing.assert_array_equal(half.chol, L)
    assert_close(half.obs_factor, ref["W"], RTOL)
    assert_close(half.cov, ref["cov"], RTOL)
    assert_exactly_symmetric(half.cov)

    assert_close(steps.kalman_gain(half.chol, half.obs_factor), ref["K"], RTOL)
    z = steps.whitened_innovation(m, jy, H, half.chol)
    assert z.shape == (Dy,)
    assert_close(z, ref["z"], RTOL)
    assert_close(steps.update_mean(m, half.obs_factor, z), ref["mean"], RTOL)
    ll = steps.log_normal_whitened(z, half.chol)
    assert ll.shape == ()
    assert_close(ll, ref["ll"], RTOL)


@pytest.mark.parametrize("D, Dy, seed", CASES)
def test_update_halves_compose_to_update(D, Dy, seed):
    _, model, mean, cov, y = case(D, Dy, seed)
    m, P, H, R, jy = j(mean, cov, model.H, model.R, y)
    full = steps.update(m, P, H, R, jy)
    assert isinstance(full, steps.UpdateResult)
    half = steps.update_cov(P, H, R)
    z = steps.whitened_innovation(m, jy, H, half.chol)
    np.testing.assert_array_equal(full.mean, steps.update_mean(m, half.obs_factor, z))
    np.testing.assert_array_equal(full.cov, half.cov)
    np.testing.assert_array_equal(full.log_likelihood, steps.log_normal_whitened(z, half.chol))
    # And the whole step against numpy.
    ref = numpy_update(mean, cov, model.H, model.R, y)
    assert_close(full.mean, ref["mean"], RTOL)
    assert_close(full.cov, ref["cov"], RTOL)
    assert_close(full.log_likelihood, ref["ll"], RTOL)


def test_log_normal_whitened_is_the_gaussian_log_density():
    # log N(y; mu, S) from its definition, for a Dy = 3 Gaussian: scipy-free, exact formula.
    rng = np.random.default_rng(7)
    S = random_spd(rng, 3)
    mu, y = rng.standard_normal(3), rng.standard_normal(3)
    L = np.linalg.cholesky(S)
    z = np.linalg.solve(L, y - mu)
    d = y - mu
    expected = -0.5 * d @ np.linalg.solve(S, d) - 0.5 * np.log(np.linalg.det(2 * np.pi * S))
    assert_close(steps.log_normal_whitened(*j(z, L)), expected, RTOL)
    assert steps.LOG_2PI == pytest.approx(np.log(2 * np.pi), rel=1e-16)


# ---------------------------------------------------------------------------------------------
# Smoothing: the halves against numpy, and composing to smooth_step
# ---------------------------------------------------------------------------------------------


def smoothing_case(D, Dy, seed):
    rng, model, mean, cov, _ = case(D, Dy, seed)
    pred_mean = model.A @ mean
    pred_cov = model.A @ cov @ model.A.T + model.Q
    next_mean = pred_mean + rng.standard_normal(D)
    next_cov = random_spd(rng, D, 0.5)
    return model, mean, cov, pred_mean, pred_cov, next_mean, next_cov


@pytest.mark.parametrize("D, Dy, seed", CASES)
def test_smoothing_halves_against_numpy(D, Dy, seed):
    model, mean, cov, pm, pc, nm, nc = smoothing_case(D, Dy, seed)
    G = np.linalg.solve(pc, model.A @ cov).T  # P A^T (P^-)^{-1}, P^- symmetric
    jm, jP, jpm, jpc, jnm, jnc, jA = j(mean, cov, pm, pc, nm, nc, model.A)
    gain = steps.smoother_gain(jP, jpc, jA)
    assert_close(gain, G, RTOL)
    assert_close(steps.smooth_mean(jm, jpm, jnm, gain), mean + G @ (nm - pm), RTOL)
    sc = steps.smooth_cov(jP, jpc, jnc, gain)
    assert_close(sc, cov + G @ (nc - pc) @ G.T, RTOL)
    assert_exactly_symmetric(sc)


@pytest.mark.parametrize("D, Dy, seed", CASES)
def test_smoothing_halves_compose_to_smooth_step(D, Dy, seed):
    model, *arrays = smoothing_case(D, Dy, seed)
    jm, jP, jpm, jpc, jnm, jnc, jA = j(*arrays, model.A)
    full = steps.smooth_step(jm, jP, jpm, jpc, jnm, jnc, jA)
    assert isinstance(full, steps.SmoothStepResult)
    gain = steps.smoother_gain(jP, jpc, jA)
    np.testing.assert_array_equal(full.gain, gain)
    np.testing.assert_array_equal(full.mean, steps.smooth_mean(jm, jpm, jnm, gain))
    np.testing.assert_array_equal(full.cov, steps.smooth_cov(jP, jpc, jnc, gain))


# ---------------------------------------------------------------------------------------------
# la=LOOPS (no LAPACK) agrees with LAPACK; dtypes follow the inputs
# ---------------------------------------------------------------------------------------------


def all_steps(la, m, P, pm, pc, nm, nc, A, Q, H, R, y):
    """Every step function that takes ``la``, and the whole steps, with that ``la``."""
    half = steps.update_cov(pc, H, R, la)
    return dict(
        innovation_chol=steps.innovation_chol(pc, H, R, la),
        update_cov=half,
        kalman_gain=steps.kalman_gain(half.chol, half.obs_factor, la),
        whitened_innovation=steps.whitened_innovation(pm, y, H, half.chol, la),
        update=steps.update(pm, pc, H, R, y, la),
        smoother_gain=steps.smoother_gain(P, pc, A, la),
        smooth_step=steps.smooth_step(m, P, pm, pc, nm, nc, A, la),
    )


@pytest.mark.parametrize("D, Dy, seed", CASES)
def test_loops_form_agrees_with_lapack(D, Dy, seed):
    model, *arrays = smoothing_case(D, Dy, seed)
    y = np.random.default_rng(seed + 100).standard_normal(Dy)
    args = j(*arrays, model.A, model.Q, model.H, model.R, y)
    lapack = all_steps(LAPACK, *args)
    # Jitted, as the schedules run it (the loops are lax.fori_loops).
    loops = jax.jit(lambda *a: all_steps(LOOPS, *a))(*args)
    for name in lapack:
        for a, b in zip(
            jax.tree_util.tree_leaves(loops[name]),
            jax.tree_util.tree_leaves(lapack[name]),
            strict=True,
        ):
            assert_close(a, b, RTOL, err_msg=name)


def test_steps_follow_float32_inputs():
    model, *arrays = smoothing_case(3, 2, 8)
    y = np.random.default_rng(9).standard_normal(2)
    args64 = j(*arrays, model.A, model.Q, model.H, model.R, y)
    args32 = tuple(a.astype(jnp.float32) for a in args64)
    for la in (LAPACK, LOOPS):
        run = jax.jit(lambda *a, la=la: all_steps(la, *a))
        out32, out64 = run(*args32), run(*args64)
        for name in out32:
            for a, b in zip(
                jax.tree_util.tree_leaves(out32[name]),
                jax.tree_util.tree_leaves(out64[name]),
                strict=True,
            ):
                assert a.dtype == jnp.float32, name
                # float32 resolution (eps 1.2e-7) times the condition numbers (< 1e2).
                assert_close(a, b, 1e-4, err_msg=name)
    pm, pc = args32[2], args32[3]
    assert steps.predict(pm, pc, args32[6], args32[7]).cov.dtype == jnp.float32
