"""Time-parallel (associative-scan) filter and smoother against independent references.

- Dense joint Gaussian oracle (tests/reference.py): rtol 1e-10 in float64, as the sequential
  tests, with the same absolute floor of 1e-12 x the array's largest entry. The parallel
  schedule reorders the arithmetic (log2 N levels of 2x2 "conditionings" instead of N
  updates), which costs a few hundred ulps on these short well-conditioned series.
- Sequential jaxssm filter/smoother on a long series (N = 1,500, not a power of two, initial
  mean ~100): rtol 1e-9. Round-off of both schedules grows with the depth of the recursion
  and with the size of the initial mean; 1e-9 leaves about three orders of magnitude over
  what was observed while keeping a real regression (a missed term, a wrong operand order)
  many orders of magnitude away.
- Gradients of log p(y) through both schedules: rtol 1e-8 (the backward pass of the scan
  amplifies the forward round-off slightly).
- The associative operators are checked for associativity on random elements of a model:
  an operator with its arguments swapped passes neither this nor the oracle test.
- The LAPACK-free helpers are checked against numpy.linalg at ~1e-12.
- A structural guard: the compiled parallel programs (and their gradient) contain no LAPACK
  custom call, the trigger of the jaxlib 0.10.x CPU hang described in jaxssm/_parallel.py.

Every test has a pytest timeout so that a hang fails CI instead of stalling it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from reference import dense_posterior, random_model, simulate

import jaxssm as ssm
from jaxssm import _parallel as P

RTOL = 1e-10

# (D, Dy, N, seed): D != Dy both ways, D = 1, Dy = 1, N = 1, N not a power of two.
CASES = [(3, 2, 6, 0), (2, 4, 5, 1), (1, 1, 7, 2), (4, 1, 4, 3), (3, 3, 1, 4), (1, 3, 3, 5)]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("D, Dy, N, seed", CASES)
def test_against_dense_oracle(D, Dy, N, seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=3.0)
    _, ys = simulate(rng, model, N)
    ref = dense_posterior(model, ys)
    params = to_params(model)

    filt = ssm.parallel_kalman_filter(params, ys)
    assert filt.means.shape == (N + 1, D) and filt.covs.shape == (N + 1, D, D)
    assert filt.pred_means.shape == (N, D) and filt.pred_covs.shape == (N, D, D)
    assert_close(filt.means, ref.filter_means, RTOL)
    assert_close(filt.covs, ref.filter_covs, RTOL)
    assert_close(filt.pred_means, ref.pred_means, RTOL)
    assert_close(filt.pred_covs, ref.pred_covs, RTOL)
    assert_close(filt.log_likelihood, ref.log_likelihood, RTOL)

    smooth = ssm.parallel_rts_smoother(params, ys)
    assert smooth.gains.shape == (N, D, D)
    assert_close(smooth.means, ref.smooth_means, RTOL)
    assert_close(smooth.covs, ref.smooth_covs, RTOL)
    # The gains give the lag-one cross-covariances the EM statistic C needs.
    cross = jnp.einsum("kij,klj->kil", smooth.covs[1:], smooth.gains)
    assert_close(cross, ref.smooth_cross, RTOL)
    assert_close(smooth.log_likelihood, ref.log_likelihood, RTOL)
    ll = ssm.log_likelihood(params, ys, method="parallel")
    assert_close(ll, ref.log_likelihood, RTOL)


@pytest.fixture(scope="module")
def long_series():
    """N = 1,500 (not a power of two), large initial mean; both schedules, compiled once."""
    rng = np.random.default_rng(21)
    model = random_model(rng, 4, 3, mean_scale=100.0)
    _, ys = simulate(rng, model, 1500)
    params = to_params(model)
    both = jax.jit(lambda p, y: (P._parallel_filter(p, y), P._parallel_smooth(p, y)))
    par_filt, par_smooth = both(params, jnp.asarray(ys))
    return params, ys, par_filt, par_smooth


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


@pytest.mark.timeout(300)
def test_log_likelihood_method_parallel_long_series(long_series):
    params, ys, par_filt, _ = long_series
    seq = ssm.log_likelihood(params, ys, method="sequential")
    par = ssm.log_likelihood(params, ys, method="parallel")
    assert par.dtype == jnp.float64 and par.shape == ()
    assert_close(par, seq, 1e-9)
    np.testing.assert_allclose(par, par_filt.log_likelihood, rtol=1e-12)


@pytest.mark.timeout(240)
def test_gradients_equal_sequential():
    rng = np.random.default_rng(31)
    model = random_model(rng, 3, 2, mean_scale=5.0)
    _, ys = simulate(rng, model, 37)
    params = to_params(model)
    ys = jnp.asarray(ys)
    g_par = jax.jit(jax.grad(lambda p: P._parallel_filter(p, ys).log_likelihood))(params)
    g_seq = jax.jit(jax.grad(lambda p: ssm.kalman_filter(p, ys).log_likelihood))(params)
    for name in ssm.LGSSM._fields:
        g = getattr(g_par, name)
        assert np.all(np.isfinite(g)), name
        assert_close(g, getattr(g_seq, name), 1e-8, err_msg=name)
    # Gradient with respect to the observations as well (used by nothing yet, but cheap).
    gy_par = jax.grad(lambda y: P._parallel_filter(params, y).log_likelihood)(ys)
    gy_seq = jax.grad(lambda y: ssm.kalman_filter(params, y).log_likelihood)(ys)
    assert_close(gy_par, gy_seq, 1e-8)


@pytest.mark.timeout(240)
def test_jit_and_vmap_over_a_batch():
    rng = np.random.default_rng(41)
    model = random_model(rng, 3, 2)
    params = to_params(model)
    ys = jnp.asarray(np.stack([simulate(rng, model, 12)[1] for _ in range(3)]))
    batched = jax.jit(jax.vmap(ssm.parallel_rts_smoother, in_axes=(None, 0)))(params, ys)
    assert batched.means.shape == (3, 13, 3) and batched.gains.shape == (3, 12, 3, 3)
    for b in range(3):
        seq = ssm.rts_smoother(params, ys[b])
        for name in ("means", "covs", "gains", "log_likelihood"):
            assert_close(getattr(batched, name)[b], getattr(seq, name), RTOL, err_msg=name)
    lls = jax.vmap(lambda y: ssm.log_likelihood(params, y, method="parallel"))(ys)
    for b in range(3):
        assert_close(lls[b], ssm.log_likelihood(params, ys[b]), RTOL)


@pytest.mark.timeout(240)
def test_float32_follows_inputs_and_is_finite():
    rng = np.random.default_rng(51)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, 300)
    s64 = ssm.rts_smoother(to_params(model), ys)
    f32 = ssm.parallel_kalman_filter(to_params(model, jnp.float32), jnp.asarray(ys, jnp.float32))
    s32 = ssm.parallel_rts_smoother(to_params(model, jnp.float32), jnp.asarray(ys, jnp.float32))
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
    e = P._filter_elements(params, jnp.asarray(ys))
    a, b, c = (jax.tree_util.tree_map(lambda x, i=i: x[i], e) for i in (0, 2, 3))
    left = P._filter_combine(P._filter_combine(a, b), c)
    right = P._filter_combine(a, P._filter_combine(b, c))
    for x, y in zip(left, right, strict=True):
        assert_close(x, y, 1e-12)
    # Smoothing elements: E random, L SPD (the operator needs no model structure).
    E = rng.standard_normal((3, 3, 3)) * 0.5
    g = rng.standard_normal((3, 3))
    L = np.einsum("kij,klj->kil", E, E) + np.eye(3)
    s = [P.SmoothElement(*(jnp.asarray(x[i]) for x in (E, g, L))) for i in range(3)]
    # Arguments are (later, earlier): s[2] is the latest.
    left = P._smooth_combine(s[2], P._smooth_combine(s[1], s[0]))
    right = P._smooth_combine(P._smooth_combine(s[2], s[1]), s[0])
    for x, y in zip(left, right, strict=True):
        assert_close(x, y, 1e-12)


@pytest.mark.timeout(120)
def test_lapack_free_helpers_against_numpy():
    rng = np.random.default_rng(71)
    for n in (1, 2, 7):
        X = rng.standard_normal((n, n))
        S = X @ X.T + 0.1 * np.eye(n)
        B = rng.standard_normal((n, 3))
        L = np.linalg.cholesky(S)
        assert_close(P._cholesky(jnp.asarray(S)), L, 1e-12)
        assert_close(P._solve_lower(jnp.asarray(L), jnp.asarray(B)), np.linalg.solve(L, B), 1e-12)
        assert_close(P._solve_lower_t(jnp.asarray(L), jnp.asarray(B)),
                     np.linalg.solve(L.T, B), 1e-12)
        M = rng.standard_normal((n, n))
        if n > 1:
            M[0, 0] = 0.0  # only pivoting gets past this
        assert_close(P._solve(jnp.asarray(M), jnp.asarray(B)), np.linalg.solve(M, B), 1e-11)
    # Not positive definite: NaN, as jnp.linalg.cholesky.
    assert np.isnan(P._cholesky(jnp.asarray([[1.0, 2.0], [2.0, 1.0]]))).any()


@pytest.mark.timeout(120)
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the LAPACK hang is CPU-only")
def test_compiled_parallel_programs_call_no_lapack():
    model = random_model(np.random.default_rng(81), 3, 2)
    params = to_params(model)
    ys = jnp.zeros((9, 2))
    programs = {
        "filter": P._parallel_filter,
        "smoother": P._parallel_smooth,
        "grad": jax.grad(lambda p, y: P._parallel_filter(p, y).log_likelihood),
    }
    for name, fn in programs.items():
        hlo = jax.jit(fn).lower(params, ys).compile().as_text().lower()
        assert "lapack" not in hlo, name
    # The guard can fail: the sequential filter does use LAPACK kernels.
    seq_hlo = jax.jit(ssm.kalman_filter).lower(params, ys).compile().as_text().lower()
    assert "lapack" in seq_hlo


@pytest.mark.timeout(60)
def test_bad_input_errors_name_the_argument():
    params = to_params(random_model(np.random.default_rng(91), 3, 2))
    with pytest.raises(ValueError, match="ys must have shape"):
        ssm.parallel_kalman_filter(params, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="ys must have shape"):
        ssm.parallel_rts_smoother(params, jnp.zeros(5))
    with pytest.raises(TypeError, match="ys must have the parameters' dtype"):
        ssm.parallel_rts_smoother(params, jnp.zeros((5, 2), jnp.float32))
    with pytest.raises(ValueError, match="method must be"):
        ssm.log_likelihood(params, jnp.zeros((5, 2)), method="associative")
