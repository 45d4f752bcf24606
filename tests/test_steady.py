"""Steady-state schedule (_schedules.steady, run by _schedules.dispatch) against the full recursion.

Tolerance: rtol 1e-10 in float64 (with the absolute floor of helpers.assert_close, 1e-12 x
the array's largest entry, for entries that cancel to ~0). Once the covariance has settled to
within ``rtol = 1e4 eps`` (2.2e-12) of its fixed point, the fast path's covariances, gains and
innovation factors differ from the full recursion's by round-off (the recursion's own floor,
100-1000 eps); the means then follow the same contraction with gains that differ at that
level, and the sums over N = 2,400 steps are formed in another order. Measured differences are
1e-14 to 1e-13, so 1e-10 leaves a margin of ~1e3 while any real slip (a gain used one step
off, a missing transient term, a wrong count of steady rows) shows up at 1e-3 or larger.
The independent numpy loop (tests/reference.py) uses plain solves in another order and agrees
with the full recursion to 1e-9 over long series, so the fast path is held to 1e-9 against it.
Gradients: 1e-8 (the fast path differentiates through the transient only; the derivative of
the covariance settles with the covariance, at rate k rho^k). EM after 4 iterations: 1e-9
(EM amplifies round-off a little from iteration to iteration). float32 against float64:
1e-3 for the statistics, 1e-4 for log p(y) (float32 resolution over 2,400 steps).

Every fast-path test asserts that the fast path actually ran (``SteadyInfo.converged``, from
``settle.smoother_side(params, settle.transient_bound(N, max_transient)).info``) and every
fallback test that it did not, so no comparison passes by running the full recursion on both
sides. The public ``steady_state`` keyword (default on for N >= MIN_STEADY_STEPS) is checked
at the end: on equals off, on a series long enough for the fast path to be used.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_close, to_params
from reference import (
    dense_posterior,
    dense_sufficient_stats,
    numpy_smoother,
    random_model,
    simulate,
    unobserved_unit_root,
)

import jaxssm as ssm
from jaxssm._schedules import dispatch as _dispatch
from jaxssm._schedules import recursions, settle

RTOL = 1e-10
N_LONG = 2400
STATS_FIELDS = ("Sigma", "Phi", "B", "C", "D", "m0_smoothed", "P0_smoothed")

# The steady-state schedule with its on-device fallback, and the full sequential recursion.
steady_filter = partial(_dispatch.filter, schedule="steady")
steady_smooth = partial(_dispatch.smooth, schedule="steady")
steady_stats = partial(_dispatch.stats, schedule="steady")
steady_log_likelihood = partial(_dispatch.log_likelihood, schedule="steady")
full_filter = partial(_dispatch.filter, schedule="sequential")
full_smooth = partial(_dispatch.smooth, schedule="sequential")
full_stats = partial(_dispatch.stats, schedule="sequential")


def _info(params, n, max_transient=settle.DEFAULT_MAX_TRANSIENT):
    return settle.smoother_side(params, settle.transient_bound(n, max_transient)).info


steady_info = jax.jit(_info, static_argnums=(1, 2))


def numpy_stats(ys, means, covs, gains):
    """DESIGN.md's EM sums as explicit numpy loops over a smoother's output."""
    ys, m, P, G = (np.asarray(a, np.float64) for a in (ys, means, covs, gains))
    N = ys.shape[0]
    Sigma = sum(P[k] + np.outer(m[k], m[k]) for k in range(1, N + 1)) / N
    Phi = sum(P[k - 1] + np.outer(m[k - 1], m[k - 1]) for k in range(1, N + 1)) / N
    B = sum(np.outer(ys[k - 1], m[k]) for k in range(1, N + 1)) / N
    C = sum(P[k] @ G[k - 1].T + np.outer(m[k], m[k - 1]) for k in range(1, N + 1)) / N
    D = sum(np.outer(y, y) for y in ys) / N
    return dict(Sigma=Sigma, Phi=Phi, B=B, C=C, D=D, m0_smoothed=m[0], P0_smoothed=P[0])


def long_case(seed, D=4, Dy=3, N=N_LONG):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=3.0)
    _, ys = simulate(rng, model, N)
    return model, to_params(model), jnp.asarray(ys)


def fast_model(seed, D, Dy):
    """A model whose covariances settle within a few steps (small A, precise observations)."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=3.0)
    return rng, model._replace(A=model.A * (0.05 / 0.95), R=model.R * 0.01)


def assert_stats_close(stats, expected, rtol, err_msg=""):
    for name in STATS_FIELDS:
        assert_close(getattr(stats, name), expected[name], rtol, err_msg=f"{err_msg} {name}")
    assert int(stats.num_steps) == expected.get("num_steps", int(stats.num_steps))


def assert_results_close(actual, expected, rtol, err_msg=""):
    for name in type(expected)._fields:
        assert_close(
            getattr(actual, name), getattr(expected, name), rtol, err_msg=f"{err_msg} {name}"
        )


def assert_tree_close(a, b, rtol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert_close(x, y, rtol)


# ---------------------------------------------------------------------------------------------
# Fast path == full recursion on long series
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_matches_full_recursion(seed):
    model, params, ys = long_case(seed)
    info = steady_info(params, N_LONG)
    T = settle.transient_bound(N_LONG, settle.DEFAULT_MAX_TRANSIENT)
    assert bool(info.converged), "the fast path must run on this stable model"
    assert 0 < int(info.filter_transient) < T and 0 < int(info.smoother_transient) < T

    full_f = full_filter(params, ys)
    fast_f = steady_filter(params, ys)
    assert fast_f.covs.shape == full_f.covs.shape == (N_LONG + 1, 4, 4)
    assert fast_f.pred_covs.shape == full_f.pred_covs.shape == (N_LONG, 4, 4)
    assert_results_close(fast_f, full_f, RTOL, "filter")
    assert_close(steady_log_likelihood(params, ys), full_f.log_likelihood, RTOL)

    full_s = full_smooth(params, ys)
    fast_s = steady_smooth(params, ys)
    assert fast_s.gains.shape == (N_LONG, 4, 4)
    assert_results_close(fast_s, full_s, RTOL, "smoother")

    stats, ll = steady_stats(params, ys)
    expected = numpy_stats(ys, full_s.means, full_s.covs, full_s.gains)
    expected["num_steps"] = N_LONG
    assert_stats_close(stats, expected, RTOL, "stats")
    assert_close(ll, full_f.log_likelihood, RTOL)


def test_fast_path_from_the_fixed_point_and_with_a_long_transient():
    """The rows the covariance loops did not compute never reach a result.

    The loops leave the rows of the rounds after the settled one unwritten, and every reader
    takes the steady quantities there (``settle.transient_rows``). Two edges: a prior at the
    filter's fixed point (no filter transient: every row is steady, and ``covs[0]`` must
    still be ``P0``), and a slowly mixing model whose transient spans several rounds.
    """
    model, params, ys = long_case(4)
    T = settle.transient_bound(N_LONG, settle.DEFAULT_MAX_TRANSIENT)
    P_inf = jax.jit(settle.filter_side, static_argnums=1)(params, T).cov
    rho = jnp.max(jnp.abs(jnp.linalg.eigvals(params.A)))
    slow = params._replace(A=params.A * (0.999 / rho), R=params.R * 1e3)  # transient ~160
    for case, p in (("fixed-point prior", params._replace(P0=P_inf)), ("long transient", slow)):
        info = steady_info(p, N_LONG)
        assert bool(info.converged), case
        if case == "long transient":
            assert int(info.filter_transient) > 3 * settle.round_length(T), int(
                info.filter_transient
            )
        else:
            assert int(info.filter_transient) <= 1, int(info.filter_transient)
        full_s = full_smooth(p, ys)
        fast_f, full_f = steady_filter(p, ys), full_filter(p, ys)
        assert_results_close(fast_f, full_f, RTOL, case)
        assert_results_close(steady_smooth(p, ys), full_s, RTOL, case)
        np.testing.assert_array_equal(np.asarray(fast_f.covs[0]), np.asarray(p.P0))
        stats, ll = steady_stats(p, ys)
        expected = numpy_stats(ys, full_s.means, full_s.covs, full_s.gains)
        assert_stats_close(stats, expected, RTOL, case)
        assert_close(ll, full_f.log_likelihood, RTOL)


def test_fast_path_matches_numpy_loop():
    model, params, ys = long_case(3)
    sm, sc, gains, ll = numpy_smoother(model, np.asarray(ys))
    fast = steady_smooth(params, ys)
    assert bool(steady_info(params, N_LONG).converged)
    assert_close(fast.means, sm, 1e-9)
    assert_close(fast.covs, sc, 1e-9)
    assert_close(fast.gains, gains, 1e-9)
    assert_close(fast.log_likelihood, ll, 1e-11)


# ---------------------------------------------------------------------------------------------
# Short series: the dense oracle, fast path and fallback
# ---------------------------------------------------------------------------------------------


def check_against_dense(model, ys, params, err_msg, check_filter=True):
    ref = dense_posterior(model, ys)
    if check_filter:
        f = steady_filter(params, jnp.asarray(ys))
        assert_close(f.means, ref.filter_means, RTOL, err_msg=err_msg)
        assert_close(f.covs, ref.filter_covs, RTOL, err_msg=err_msg)
        assert_close(f.pred_means, ref.pred_means, RTOL, err_msg=err_msg)
        assert_close(f.pred_covs, ref.pred_covs, RTOL, err_msg=err_msg)
        assert_close(f.log_likelihood, ref.log_likelihood, RTOL, err_msg=err_msg)
    s = steady_smooth(params, jnp.asarray(ys))
    assert_close(s.means, ref.smooth_means, RTOL, err_msg=err_msg)
    assert_close(s.covs, ref.smooth_covs, RTOL, err_msg=err_msg)
    cross = jnp.einsum("kij,klj->kil", s.covs[1:], s.gains)
    assert_close(cross, ref.smooth_cross, RTOL, err_msg=err_msg)
    stats, ll = steady_stats(params, jnp.asarray(ys))
    dense = dense_sufficient_stats(model, ys)
    assert_stats_close(stats, dense, RTOL, err_msg)
    assert_close(ll, dense["log_likelihood"], RTOL, err_msg=err_msg)


def test_fast_path_on_short_series_against_dense_oracle():
    # N = 45 gives T = 15 in chunks of 3; this model settles in a few steps, so the three
    # regions (start, middle, end) all appear in a series the dense oracle can handle.
    rng, model = fast_model(0, 3, 2)
    _, ys = simulate(rng, model, 45)
    params = to_params(model)
    info = steady_info(params, 45)
    assert bool(info.converged) and info.num_transient == 15
    assert 0 < int(info.filter_transient) < 15 and 0 < int(info.smoother_transient) < 15
    check_against_dense(model, ys, params, "fast path, N = 45")


@pytest.mark.parametrize("N", [6, 2])
def test_fallback_on_short_series_against_dense_oracle(N):
    # N = 6: T = 2, too short for the covariance to settle -> lax.cond takes the full path.
    # N = 2: T = 0, the full recursion is chosen at trace time.
    rng = np.random.default_rng(4)
    model = random_model(rng, 2, 3, mean_scale=3.0)
    _, ys = simulate(rng, model, N)
    params = to_params(model)
    T = settle.transient_bound(N, settle.DEFAULT_MAX_TRANSIENT)
    if N == 6:
        info = steady_info(params, N)
        assert T == 2 and info.num_transient == 2 and not bool(info.converged)
    else:
        assert T == 0
        with pytest.raises(ValueError, match="T must be a positive multiple"):
            settle.smoother_side(params, T)
    check_against_dense(model, ys, params, f"fallback, N = {N}", check_filter=False)


# ---------------------------------------------------------------------------------------------
# Fallback on long series
# ---------------------------------------------------------------------------------------------


def undetectable_case():
    """A long case with a unit root that no observation sees (the Riccati recursion never
    settles)."""
    model = unobserved_unit_root(long_case(5)[0])
    _, ys = simulate(np.random.default_rng(6), model, N_LONG)
    return model, to_params(model), jnp.asarray(ys)


def test_fallback_when_the_covariance_does_not_settle():
    model, params, ys = undetectable_case()
    assert not bool(steady_info(params, N_LONG).converged)
    T = settle.transient_bound(N_LONG)
    assert not bool(jax.jit(settle.filter_side, static_argnums=1)(params, T).converged)
    stats, ll = steady_stats(params, ys)
    full_s = full_smooth(params, ys)
    assert_results_close(steady_smooth(params, ys), full_s, RTOL, "smoother")
    full_f = full_filter(params, ys)
    assert_results_close(steady_filter(params, ys), full_f, RTOL, "filter")
    assert_close(steady_log_likelihood(params, ys), full_f.log_likelihood, RTOL)
    expected = numpy_stats(ys, full_s.means, full_s.covs, full_s.gains)
    assert_stats_close(stats, expected, RTOL, "stats")
    assert_close(ll, full_s.log_likelihood, RTOL)


def test_fallback_when_max_transient_is_too_small():
    model, params, ys = long_case(0)
    # The filter needs ~20 steps to settle: with T = 8 (chunks of 2) it does not.
    info = steady_info(params, N_LONG, 8)
    assert info.num_transient == 8 and not bool(info.converged)
    stats, ll = steady_stats(params, ys, max_transient=8)
    full_s = full_smooth(params, ys)
    expected = numpy_stats(ys, full_s.means, full_s.covs, full_s.gains)
    assert_stats_close(stats, expected, RTOL, "stats")
    assert_close(ll, full_s.log_likelihood, RTOL)


# ---------------------------------------------------------------------------------------------
# Transformations: grad, jit, vmap; float32
# ---------------------------------------------------------------------------------------------


def test_grad_of_log_likelihood_matches_full_path():
    model, params, ys = long_case(7, N=600)
    assert bool(steady_info(params, 600).converged)
    fast = jax.jit(jax.grad(lambda p: steady_log_likelihood(p, ys)))(params)
    full = jax.jit(jax.grad(lambda p: full_filter(p, ys).log_likelihood))(params)
    for name in params._fields:
        assert_close(getattr(fast, name), getattr(full, name), 1e-8, err_msg=name)


@pytest.mark.slow
def test_grad_of_statistics_matches_full_path():
    model, params, ys = long_case(7, N=600)
    assert bool(steady_info(params, 600).converged)
    # EM objectives differentiated through the E-step: d(sum of C)/d(params).
    fast = jax.jit(jax.grad(lambda p: jnp.sum(steady_stats(p, ys)[0].C)))(params)
    full = jax.jit(jax.grad(lambda p: jnp.sum(full_stats(p, ys)[0].C)))(params)
    for name in params._fields:
        assert_close(getattr(fast, name), getattr(full, name), 1e-8, err_msg=name)


def test_vmap_over_sequences_and_over_parameters():
    n = 600
    model, params, ys = long_case(8, N=n)
    _, ys2 = simulate(np.random.default_rng(9), model, n)
    batch = jnp.stack([ys, jnp.asarray(ys2)])
    # Shared parameters: the convergence test is not batched, lax.cond stays a cond.
    out = jax.jit(jax.vmap(lambda y: steady_stats(params, y)))(batch)
    for b in range(2):
        expected = full_smooth(params, batch[b])
        ref = numpy_stats(batch[b], expected.means, expected.covs, expected.gains)
        assert_stats_close(jax.tree.map(lambda a, b=b: a[b], out[0]), ref, RTOL, f"seq {b}")
        assert_close(out[1][b], expected.log_likelihood, RTOL)
    # Batched parameters, one of which cannot settle: the cond becomes a select, each
    # batch member still gets its own branch's result.
    bad = undetectable_case()[1]
    pair = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, bad)
    infos = jax.jit(jax.vmap(lambda p: _info(p, n)))(pair)
    # The fast path ran for the shared parameters above (positive control) and not for bad.
    assert list(np.asarray(infos.converged)) == [True, False]
    res = jax.jit(jax.vmap(lambda p: steady_smooth(p, ys)))(pair)
    for b, p in enumerate((params, bad)):
        assert_results_close(
            jax.tree.map(lambda a, b=b: a[b], res), full_smooth(p, ys), RTOL, f"params {b}"
        )


def test_float32_runs_and_is_finite():
    model, _, ys = long_case(10)
    params32 = to_params(model, jnp.float32)
    ys32 = ys.astype(jnp.float32)
    info = steady_info(params32, N_LONG)
    assert bool(info.converged), "float32 (rtol = 1e4 eps = 1.2e-3) must settle too"
    stats, ll = steady_stats(params32, ys32)
    for name in STATS_FIELDS:
        x = np.asarray(getattr(stats, name))
        assert x.dtype == np.float32 and np.all(np.isfinite(x)), name
    assert ll.dtype == jnp.float32 and np.isfinite(float(ll))
    # Close to float64 at float32's resolution over 2,400 steps.
    ref = full_smooth(to_params(model), ys)
    expected = numpy_stats(ys, ref.means, ref.covs, ref.gains)
    assert_stats_close(stats, expected, 1e-3)
    assert_close(ll, ref.log_likelihood, 1e-4)


# ---------------------------------------------------------------------------------------------
# Static bound
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "N, bound, expected",
    [
        (44_483, 1000, 992),
        (2400, 1000, 800),
        (45, 1000, 15),
        (6, 1000, 2),
        (2, 1000, 0),
        (3000, 100, 100),
        (3000, 127, 124),
        (3000, 7, 7),
    ],
)
def test_transient_bound(N, bound, expected):
    assert settle.transient_bound(N, bound) == expected


def test_transient_bound_default_and_tolerance():
    assert settle.DEFAULT_MAX_TRANSIENT == 1000
    assert settle.transient_bound(44_483) == 992
    assert settle.default_rtol(jnp.float64) == pytest.approx(1e4 * 2.220446049250313e-16)
    assert settle.default_rtol(jnp.float32) == pytest.approx(1e4 * 1.1920929e-07)


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, None])
def test_transient_bound_rejects_bad_bounds(bad):
    with pytest.raises(ValueError, match="max_transient must be a positive int"):
        settle.transient_bound(100, bad)


# ---------------------------------------------------------------------------------------------
# The public steady_state keyword: on (default for N >= MIN_STEADY_STEPS) equals off
# ---------------------------------------------------------------------------------------------

N_PUBLIC = _dispatch.MIN_STEADY_STEPS + 452


@pytest.fixture(scope="module")
def problem():
    model = random_model(np.random.default_rng(21), 3, 2, mean_scale=5.0)
    params = to_params(model)
    _, ys = ssm.sample(jax.random.PRNGKey(0), params, N_PUBLIC)
    info = steady_info(params, N_PUBLIC)
    assert bool(info.converged), "the fast path must run for this model"
    assert int(info.filter_transient) < info.num_transient
    return params, ys


def test_public_filter_smoother_loglik(problem):
    params, ys = problem
    assert_tree_close(
        ssm.kalman_filter(params, ys), ssm.kalman_filter(params, ys, steady_state=False), 1e-10
    )
    assert_tree_close(
        ssm.rts_smoother(params, ys), ssm.rts_smoother(params, ys, steady_state=False), 1e-10
    )
    assert_close(
        ssm.log_likelihood(params, ys), ssm.log_likelihood(params, ys, steady_state=False), 1e-10
    )


def test_public_e_step_single_and_batched(problem):
    params, ys = problem
    assert_tree_close(ssm.e_step(params, ys), ssm.e_step(params, ys, steady_state=False), 1e-10)
    batch = jnp.stack([ys, ys[::-1]])
    assert_tree_close(
        ssm.e_step(params, batch), ssm.e_step(params, batch, steady_state=False), 1e-10
    )


@pytest.mark.slow  # compiles the full associative scan (the fallback) three times: ~50 s
def test_public_parallel_steady_state(problem):
    """``method="parallel", steady_state=True`` through the public entry points."""
    params, ys = problem
    on = dict(method="parallel", steady_state=True)
    assert_tree_close(ssm.rts_smoother(params, ys, **on), ssm.rts_smoother(params, ys), 1e-10)
    assert_tree_close(ssm.e_step(params, ys, **on), ssm.e_step(params, ys), 1e-10)
    start = params._replace(A=0.5 * params.A)
    fast = ssm.fit_em(start, ys, num_iters=4, **on)
    full = ssm.fit_em(start, ys, num_iters=4, steady_state=False)
    # Which path ran differs by design (EMInfo.schedule), as in test_public_fit_em.
    assert bool(fast[1].schedule.fast_path) and not bool(full[1].schedule.fast_path)
    fast, full = ((p, info._replace(schedule=None)) for p, info in (fast, full))
    assert_tree_close(fast, full, 1e-9)  # as in test_public_fit_em


def test_public_fit_em(problem):
    params, ys = problem
    start = params._replace(A=0.5 * params.A)
    fast = ssm.fit_em(start, ys, num_iters=4, update=("A", "Q"))
    full = ssm.fit_em(start, ys, num_iters=4, update=("A", "Q"), steady_state=False)
    # Which path ran differs by design (EMInfo.schedule): the fast path, the full recursion.
    assert bool(fast[1].schedule.fast_path) and not bool(full[1].schedule.fast_path)
    fast, full = ((p, info._replace(schedule=None)) for p, info in (fast, full))
    # EM amplifies round-off a little from iteration to iteration: 1e-9 after 4 iterations.
    assert_tree_close(fast, full, 1e-9)


# Slow suite (12 s): the default suite checks the fast path's gradient against the full
# recursion (test_grad_of_log_likelihood_matches_full_path) and fit_mle's paths (test_mle.py).
@pytest.mark.slow
def test_public_fit_mle_and_gradient(problem):
    params, ys = problem
    g_fast = jax.grad(ssm.log_likelihood)(params, ys)
    g_full = jax.grad(lambda p, y: ssm.log_likelihood(p, y, steady_state=False))(params, ys)
    assert_tree_close(g_fast, g_full, 1e-8)
    opt = optax.adam(1e-2)
    fast = ssm.fit_mle(params, ys, optimizer=opt, num_iters=3)
    full = ssm.fit_mle(params, ys, optimizer=opt, num_iters=3, steady_state=False)
    assert_tree_close(fast, full, 1e-8)


def _recursion_case(n, reverse):
    """A contraction ``F`` (rho = 0.9), ``b [n, 5]``, ``x0`` and the plain loop's states."""
    rng = np.random.default_rng(3)
    F = rng.normal(size=(5, 5))
    F *= 0.9 / np.max(np.abs(np.linalg.eigvals(F)))
    b, x0 = rng.normal(size=(n, 5)), rng.normal(size=5)
    x, expected = x0, np.zeros_like(b)
    for i in range(n - 1, -1, -1) if reverse else range(n):
        x = F @ x + b[i]
        expected[i] = x
    return (jnp.asarray(F), jnp.asarray(b), jnp.asarray(x0)), expected


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("block", [None, 1, 7, 60, "doubling"])
def test_linear_recursion_forms_match_a_numpy_loop(reverse, block):
    """Every form of ``x_i = F x_{i-1} + b_i`` (plain scan, blocked, log-depth doubling
    scan) against a plain loop.

    ``block=7`` does not divide n = 60 (a padded last block); 60 is the plain form. The
    difference is round-off of a contraction (rho(F) = 0.9): 1e-13 absolute is ~100 eps of
    the entries, and a wrong row order or a block-boundary slip would show at O(1).
    """
    args, expected = _recursion_case(60, reverse)
    got = recursions.linear_recursion(*args, reverse, block)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("n", [1, 2, 3, 64, 65, 1000])
@pytest.mark.parametrize("reverse", [False, True])
def test_doubling_recursion_at_every_number_of_levels(n, reverse):
    """The doubling scan's last level exactly at (64) and one past (65) a power of two, no
    level at all (n = 1), and ten levels (n = 1000); a missing level shows at O(1)."""
    args, expected = _recursion_case(n, reverse)
    got = recursions.linear_recursion(*args, reverse, "doubling")
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# The steady-state idea on the parallel schedule (method="parallel", steady_state=True)
# ---------------------------------------------------------------------------------------------
# Reference: the full sequential recursion (an independent route: per-step Riccati and RTS
# steps over all N). Tolerance 1e-10 as for the sequential fast path: the covariance side is
# the same code; the means differ by the summation order of the doubling scan (round-off).

parallel_steady = dict(schedule="parallel_steady")


def _parallel_fast(kind, params, ys):
    """The parallel schedule's fast path alone (``Paths.FAST``); it must apply."""
    out, info = _dispatch.run(kind, params, ys, "parallel_steady", paths=_dispatch.Paths.FAST)
    assert bool(info.fast_path), f"{kind}: the fast path must apply"
    return out


def test_parallel_steady_schedule_against_the_full_recursion():
    model, params, ys = long_case(7)
    info = steady_info(params, N_LONG)
    assert bool(info.converged) and int(info.filter_transient) < info.num_transient
    full_s = full_smooth(params, ys)
    smoothed = _parallel_fast("smooth", params, ys)
    assert_results_close(smoothed, full_s, RTOL, "parallel steady smoother")
    filtered = _parallel_fast("filter", params, ys)
    assert_results_close(filtered, full_filter(params, ys), RTOL, "filter")
    assert_close(_parallel_fast("log_likelihood", params, ys), full_s.log_likelihood, RTOL)
    stats, ll = _parallel_fast("stats", params, ys)
    assert_stats_close(stats, numpy_stats(ys, full_s.means, full_s.covs, full_s.gains), RTOL)
    assert_close(ll, full_s.log_likelihood, RTOL)
    # The compiled fast path holds no sequential scan over the series: its loops run over at
    # most T steps (a scan of N - T steps would show as a while loop with that trip count).
    T = settle.transient_bound(N_LONG)
    hlo = (
        jax.jit(
            lambda p, y: _dispatch.run("stats", p, y, "parallel_steady", paths=_dispatch.Paths.FAST)
        )
        .lower(params, ys)
        .compile()
        .as_text()
    )
    assert f'"known_trip_count":{{"n":"{N_LONG - T}"}}' not in hlo.replace(" ", "")
    assert "known_trip_count" in hlo  # the check above reads a field that is there


@pytest.mark.slow  # compiles the full associative scan three times: ~25 s
def test_parallel_steady_falls_back_to_the_full_associative_scan():
    """Unsettled covariances and missing entries: the fallback is the parallel schedule."""
    _, params, ys = undetectable_case()
    assert not bool(steady_info(params, N_LONG).converged)
    assert_results_close(
        _dispatch.smooth(params, ys, **parallel_steady), full_smooth(params, ys), RTOL, "unsettled"
    )
    _, params, ys = long_case(8)
    ys = ys.at[100:110, 0].set(jnp.nan)
    expected = _dispatch.smooth(params, ys, "parallel")
    assert_results_close(_dispatch.smooth(params, ys, **parallel_steady), expected, 1e-12, "gaps")
    assert_results_close(expected, full_smooth(params, ys), RTOL, "gaps, sequential")


def test_linear_recursion_is_a_plain_scan_on_cpu_and_blocked_elsewhere():
    """``block=None`` lowers to one ``while`` loop for CPU and to the blocked form (two loops)
    for CUDA: the choice is made per platform when the program is lowered."""
    from jax import export

    F, b, x0 = jnp.eye(3) * 0.5, jnp.ones((50, 3)), jnp.ones(3)
    fn = jax.jit(lambda F, b, x: recursions.linear_recursion(F, b, x))
    loops = {
        p: export.export(fn, platforms=[p])(F, b, x0).mlir_module().count("stablehlo.while")
        for p in ("cpu", "cuda")
    }
    assert loops == {"cpu": 1, "cuda": 2}
