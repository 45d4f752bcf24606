"""Time-parallel (associative-scan) schedule (_schedules.parallel) against independent references.

- Dense joint Gaussian oracle (tests/reference.py): rtol 1e-10 in float64, as the sequential
  tests, with the same absolute floor of 1e-12 x the array's largest entry. The parallel
  schedule reorders the arithmetic (log2 N levels of pairwise combinations instead of N
  updates); the largest error observed on these cases was ~1e-14, a margin of ~1e4.
- Sequential jaxssm filter/smoother on a long series (N = 1,500, not a power of two, initial
  mean ~100): rtol 1e-9. Round-off of both schedules grows with the depth of the recursion
  and with the size of the initial mean; ~1e-14 was observed, and a real regression (a
  missed term, a wrong operand order, a dropped initial-mean term) is many orders away.
- Gradients of log p(y) through both schedules: rtol 1e-8 (the backward pass of the scan
  amplifies the forward round-off slightly).
- The associative operators are checked for associativity on random elements of a model
  (1e-12: three D = 3 combinations, a few ulps each): an operator with its arguments swapped
  passes neither this nor the oracle test. The elements are checked against jaxssm.steps
  (1e-12, the same algebra with the loop-form linear algebra).
- float32 against float64: 1e-4 x the largest mean (absolute) and 1e-5 for log p(y).
- A structural guard: the compiled CPU programs of the parallel schedule (filter, smoother
  and gradient) contain no LAPACK custom call, the trigger of the jaxlib 0.10.x CPU hang
  described in jaxssm/_base/linalg.py; the sequential schedule's does (so the guard can fail).

The loop-form linear algebra itself (jaxssm._base.linalg.LOOPS) is tested in test_linalg.py, the
public entry points with method="parallel" in test_inference.py and test_dispatch.py.
Every test has a pytest timeout so that a hang fails CI instead of stalling it.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from reference import dense_posterior, random_model, simulate

import jaxssm as ssm
from jaxssm import steps
from jaxssm._blocks import elements as el
from jaxssm._schedules import parallel as P

RTOL = 1e-10

# (D, Dy, N, seed): D != Dy both ways, D = 1, Dy = 1, N = 1, N not a power of two.
CASES = [(3, 2, 6, 0), (2, 4, 5, 1), (1, 1, 7, 2), (4, 1, 4, 3), (3, 3, 1, 4), (1, 3, 3, 5)]


def _filter_and_smoother(params, ys):
    filtered = P.filter(params, ys)
    return filtered, P.smooth(params, filtered)


# Filter and smoother in one compiled program (XLA shares the filter): compiling the
# associative scans dominates these tests' time. The public wrappers are exercised below.
# The LAPACK guard at the end inspects these programs (and the gradient's): jax caches a
# compiled program per jitted function and shapes, so they are compiled once.
filter_and_smoother = jax.jit(_filter_and_smoother)
grad_log_likelihood = jax.jit(
    jax.grad(lambda p, y, method: ssm.log_likelihood(p, y, method=method), argnums=(0, 1)),
    static_argnums=2,
)
GRAD_CASE = (3, 2, 23, 31)  # (D, Dy, N, seed) of the gradient test


@pytest.mark.timeout(240)
@pytest.mark.parametrize("D, Dy, N, seed", CASES)
def test_against_dense_oracle(D, Dy, N, seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=3.0)
    _, ys = simulate(rng, model, N)
    ref = dense_posterior(model, ys)
    params = to_params(model)

    filt, smooth = filter_and_smoother(params, jnp.asarray(ys))
    assert filt.means.shape == (N + 1, D) and filt.covs.shape == (N + 1, D, D)
    assert filt.pred_means.shape == (N, D) and filt.pred_covs.shape == (N, D, D)
    assert_close(filt.means, ref.filter_means, RTOL)
    assert_close(filt.covs, ref.filter_covs, RTOL)
    assert_close(filt.pred_means, ref.pred_means, RTOL)
    assert_close(filt.pred_covs, ref.pred_covs, RTOL)
    assert_close(filt.log_likelihood, ref.log_likelihood, RTOL)

    assert smooth.gains.shape == (N, D, D)
    assert_close(smooth.means, ref.smooth_means, RTOL)
    assert_close(smooth.covs, ref.smooth_covs, RTOL)
    # The gains give the lag-one cross-covariances the EM statistic C needs.
    cross = jnp.einsum("kij,klj->kil", smooth.covs[1:], smooth.gains)
    assert_close(cross, ref.smooth_cross, RTOL)
    assert_close(smooth.log_likelihood, ref.log_likelihood, RTOL)


@pytest.fixture(scope="module")
def long_series():
    """N = 1,500 (not a power of two), large initial mean; both schedules, compiled once."""
    rng = np.random.default_rng(21)
    model = random_model(rng, 4, 3, mean_scale=100.0)
    _, ys = simulate(rng, model, 1500)
    params = to_params(model)
    par_filt, par_smooth = filter_and_smoother(params, jnp.asarray(ys))
    return params, ys, par_filt, par_smooth


# Slow (a 30 s compile at N = 1,500): the oracle cases above hold the schedule at small N.
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_long_series_equals_sequential(long_series):
    params, ys, par_filt, par_smooth = long_series
    seq_filt = ssm.kalman_filter(params, ys)
    seq_smooth = ssm.rts_smoother(params, ys)
    assert np.abs(seq_filt.means[0]).max() > 50  # the initial-mean term is really exercised
    for name in ("means", "covs", "pred_means", "pred_covs", "log_likelihood"):
        assert_close(getattr(par_filt, name), getattr(seq_filt, name), 1e-9, err_msg=name)
    for name in ("means", "covs", "gains", "log_likelihood"):
        assert_close(getattr(par_smooth, name), getattr(seq_smooth, name), 1e-9, err_msg=name)


# Slow suite (13 s): the default suite compares the parallel schedule's gradients with the
# sequential ones through fit_mle (tests/test_mle.py, test_parallel_method_matches_sequential).
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_gradients_equal_sequential():
    D, Dy, N, seed = GRAD_CASE
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=5.0)
    _, ys = simulate(rng, model, N)
    params = to_params(model)
    ys = jnp.asarray(ys)
    # With respect to every parameter and to the observations, through the public entry
    # point ssm.log_likelihood (validation runs on tracers).
    (gp_par, gy_par) = grad_log_likelihood(params, ys, "parallel")
    (gp_seq, gy_seq) = grad_log_likelihood(params, ys, "sequential")
    for name in ssm.LGSSM._fields[:6]:
        g = getattr(gp_par, name)
        assert np.all(np.isfinite(g)), name
        # Symmetric, as the sequential filter's: both symmetrise P0, Q and R on the way in.
        assert_close(g, getattr(gp_seq, name), 1e-8, err_msg=name)
    assert_close(gy_par, gy_seq, 1e-8)


@pytest.mark.timeout(240)
def test_jit_and_vmap_over_a_batch():
    rng = np.random.default_rng(41)
    model = random_model(rng, 3, 2)
    params = to_params(model)
    ys = jnp.asarray(np.stack([simulate(rng, model, 6)[1] for _ in range(3)]))
    smoother = jax.jit(
        jax.vmap(lambda p, y: ssm.rts_smoother(p, y, method="parallel"), in_axes=(None, 0))
    )
    batched = smoother(params, ys)
    assert batched.means.shape == (3, 7, 3) and batched.gains.shape == (3, 6, 3, 3)
    for b in range(3):
        seq = ssm.rts_smoother(params, ys[b])
        for name in ("means", "covs", "gains", "log_likelihood"):
            assert_close(getattr(batched, name)[b], getattr(seq, name), RTOL, err_msg=name)
    # A batch [B, N, Dy] to the public log-likelihood: the sum over the sequences.
    total = ssm.log_likelihood(params, ys, method="parallel")
    assert_close(total, sum(float(batched.log_likelihood[b]) for b in range(3)), 1e-13)
    assert_close(total, sum(float(ssm.log_likelihood(params, ys[b])) for b in range(3)), RTOL)


@pytest.mark.timeout(240)
def test_float32_follows_inputs_and_is_finite():
    rng = np.random.default_rng(51)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, 120)
    s64 = ssm.rts_smoother(to_params(model), ys)
    f32, s32 = filter_and_smoother(to_params(model, jnp.float32), jnp.asarray(ys, jnp.float32))
    for leaf in (*f32, *s32):
        assert leaf.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(leaf)))
    np.testing.assert_allclose(s32.means, s64.means, rtol=0, atol=1e-4 * np.abs(s64.means).max())
    np.testing.assert_allclose(s32.log_likelihood, s64.log_likelihood, rtol=1e-5)
    assert np.all(np.linalg.eigvalsh(np.asarray(s32.covs, np.float64)) > 0)


@pytest.mark.timeout(120)
def test_operators_are_associative():
    rng = np.random.default_rng(61)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, 4)
    params = to_params(model)
    e = jax.jit(P.filter_elements)(params, jnp.asarray(ys))
    a, b, c = (jax.tree_util.tree_map(lambda x, i=i: x[i], e) for i in (0, 2, 3))
    combine = jax.jit(el.filter_combine)
    left = combine(combine(a, b), c)
    right = combine(a, combine(b, c))
    for x, y in zip(left, right, strict=True):
        assert_close(x, y, 1e-12)
    # Smoothing elements: E random, L SPD (the operator needs no model structure).
    E = rng.standard_normal((3, 3, 3)) * 0.5
    g = rng.standard_normal((3, 3))
    L = np.einsum("kij,klj->kil", E, E) + np.eye(3)
    s = [el.SmoothElement(*(jnp.asarray(x[i]) for x in (E, g, L))) for i in range(3)]
    # Arguments are (later, earlier): s[2] is the latest.
    combine = jax.jit(el.smooth_combine)
    left = combine(s[2], combine(s[1], s[0]))
    right = combine(combine(s[2], s[1]), s[0])
    for x, y in zip(left, right, strict=True):
        assert_close(x, y, 1e-12)


def _elements_and_steps(params, ys, x):
    """Pairs (element algebra, jaxssm.steps) that must agree; one jitted program."""
    zeros = jnp.zeros_like(params.m0)
    pairs = {}
    # Generic element: (b, C) is the update of N(0, Q) with y_k; A_k x + b_k is the update of
    # N(A x, Q) for any x, so A_k = d(mean)/dx.
    elem = el.filter_element(params, ys[1])
    upd = steps.update(zeros, params.Q, params.H, params.R, ys[1])
    pairs["b"] = (elem.b, upd.mean)
    pairs["C"] = (elem.C, upd.cov)
    upd_x = steps.update(params.A @ x, params.Q, params.H, params.R, ys[1])
    pairs["A x + b"] = (elem.A @ x + elem.b, upd_x.mean)
    # eta and J: log p(y_k | x_{k-1} = x) = const + eta^T x - x^T J x / 2.
    pairs["eta, J"] = (
        elem.eta @ x - 0.5 * x @ elem.J @ x,
        upd_x.log_likelihood - upd.log_likelihood,
    )
    # First element: predict + update from (m0, P0).
    first = el.first_filter_element(params, ys[0])
    pred = steps.predict(params.m0, params.P0, params.A, params.Q)
    upd0 = steps.update(pred.mean, pred.cov, params.H, params.R, ys[0])
    pairs["first b"] = (first.b, upd0.mean)
    pairs["first C"] = (first.C, upd0.cov)
    pairs["log-likelihood"] = (
        el.log_likelihood_step(pred.mean, pred.cov, params.H, params.R, ys[0]),
        upd0.log_likelihood,
    )
    # Smoothing element: an RTS step from a zero next mean and covariance.
    pred1 = steps.predict(upd0.mean, upd0.cov, params.A, params.Q)
    se = el.smooth_element(upd0.mean, upd0.cov, pred1.mean, pred1.cov, params.A)
    st = steps.smooth_step(
        upd0.mean, upd0.cov, pred1.mean, pred1.cov, zeros, jnp.zeros_like(params.A), params.A
    )
    pairs["E"] = (se.E, st.gain)
    pairs["g"] = (se.g, st.mean)
    pairs["L"] = (se.L, st.cov)
    return pairs


@pytest.mark.timeout(120)
def test_elements_mirror_the_step_functions():
    """The LAPACK-free element algebra equals jaxssm.steps (the sequential path's algebra)."""
    rng = np.random.default_rng(65)
    model = random_model(rng, 3, 2, mean_scale=5.0)
    _, ys = simulate(rng, model, 3)
    x = jnp.asarray(rng.standard_normal(3))
    pairs = jax.jit(_elements_and_steps)(to_params(model), jnp.asarray(ys), x)
    for name, (element, step) in pairs.items():
        assert_close(element, step, 1e-12, err_msg=name)


LAPACK_KERNEL = re.compile(r"lapack|potrf|trsm|getrf|geqrf|syevd")


def custom_call_targets(jitted, *args):
    """The custom-call targets of a jitted function's compiled program for ``args``.

    Only the targets are searched: the text also holds the names of the Python functions
    that traced the program (this test's own name among them).
    """
    text = jitted.lower(*args).compile().as_text()
    return set(re.findall(r'custom_call_target="([^"]+)"', text))


@pytest.mark.timeout(180)
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the LAPACK hang is CPU-only")
def test_compiled_parallel_programs_call_no_lapack():
    # The programs the tests above ran (compiled here if this test runs alone): the filter
    # and smoother of the first oracle case, and the gradient of the public log-likelihood
    # with method="parallel" (which goes through jaxssm._schedules.dispatch).
    D, Dy, N, _ = CASES[0]
    params = to_params(random_model(np.random.default_rng(81), D, Dy))
    targets = custom_call_targets(filter_and_smoother, params, jnp.zeros((N, Dy)))
    assert not any(LAPACK_KERNEL.search(t.lower()) for t in targets), targets
    D, Dy, N, _ = GRAD_CASE
    params = to_params(random_model(np.random.default_rng(81), D, Dy))
    ys = jnp.zeros((N, Dy))
    targets = custom_call_targets(grad_log_likelihood, params, ys, "parallel")
    assert not any(LAPACK_KERNEL.search(t.lower()) for t in targets), targets
    # The guard can fail: the sequential schedule does call LAPACK kernels.
    seq_targets = custom_call_targets(grad_log_likelihood, params, ys, "sequential")
    assert any("potrf" in t for t in seq_targets), seq_targets
    assert any("trsm" in t for t in seq_targets), seq_targets
