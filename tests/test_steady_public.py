"""The ``steady_state`` keyword of the public functions: on (default) equals off.

The fast path itself is tested against the dense oracle and the full recursion in
test_steady.py; here every public entry point is run both ways on a series long enough for
the fast path to be used (N >= MIN_STEADY_STEPS) and the results must agree to rtol 1e-10 in
float64 (values; 1e-8 for gradients, which accumulate over N terms). The convergence
diagnostics confirm that the fast path really ran, so the comparison cannot pass vacuously.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_close, to_params
from reference import random_model

import jaxssm as ssm
from jaxssm import _schedules, _steady

N = _schedules.MIN_STEADY_STEPS + 452


@pytest.fixture(scope="module")
def problem():
    model = random_model(np.random.default_rng(21), 3, 2, mean_scale=5.0)
    params = to_params(model)
    _, ys = ssm.sample(jax.random.PRNGKey(0), params, N)
    _, _, info = _steady._steady_stats_with_info(params, ys)
    assert bool(info.converged), "the fast path must run for this model"
    assert int(info.filter_transient) < info.num_transient
    return params, ys


def _assert_tree_close(a, b, rtol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert_close(x, y, rtol)


def test_filter_smoother_loglik(problem):
    params, ys = problem
    _assert_tree_close(
        ssm.kalman_filter(params, ys), ssm.kalman_filter(params, ys, steady_state=False), 1e-10
    )
    _assert_tree_close(
        ssm.rts_smoother(params, ys), ssm.rts_smoother(params, ys, steady_state=False), 1e-10
    )
    assert_close(
        ssm.log_likelihood(params, ys), ssm.log_likelihood(params, ys, steady_state=False), 1e-10
    )


def test_e_step_single_and_batched(problem):
    params, ys = problem
    _assert_tree_close(ssm.e_step(params, ys), ssm.e_step(params, ys, steady_state=False), 1e-10)
    batch = jnp.stack([ys, ys[::-1]])
    _assert_tree_close(
        ssm.e_step(params, batch), ssm.e_step(params, batch, steady_state=False), 1e-10
    )


def test_fit_em(problem):
    params, ys = problem
    start = params._replace(A=0.5 * params.A)
    fast = ssm.fit_em(start, ys, num_iters=4, update=("A", "Q"))
    full = ssm.fit_em(start, ys, num_iters=4, update=("A", "Q"), steady_state=False)
    # EM amplifies round-off a little from iteration to iteration: 1e-9 after 4 iterations.
    _assert_tree_close(fast, full, 1e-9)


def test_fit_mle_and_gradient(problem):
    params, ys = problem
    g_fast = jax.grad(ssm.log_likelihood)(params, ys)
    g_full = jax.grad(lambda p, y: ssm.log_likelihood(p, y, steady_state=False))(params, ys)
    _assert_tree_close(g_fast, g_full, 1e-8)
    opt = optax.adam(1e-2)
    fast = ssm.fit_mle(params, ys, optimizer=opt, num_steps=3)
    full = ssm.fit_mle(params, ys, optimizer=opt, num_steps=3, steady_state=False)
    _assert_tree_close(fast, full, 1e-8)


def test_steady_state_argument_checked(problem):
    params, ys = problem
    with pytest.raises(TypeError, match="steady_state must be True or False, got 'yes'"):
        ssm.kalman_filter(params, ys, steady_state="yes")
    with pytest.raises(TypeError, match="steady_state must be True or False"):
        ssm.fit_em(params, ys, num_iters=2, steady_state=None)
