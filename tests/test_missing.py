"""Missing observations (NaN entries of ``ys``) on every schedule, in the E-step and in EM.

References: the dense joint Gaussian of (x_0..x_N, y_1..y_N) conditioned on the observed
entries only (tests/reference.py, ``dense_posterior``; plain numpy, no jaxssm code), and
for EM the dense expectations of the complete-data statistics with the missing observations
latent (``dense_sufficient_stats``).

Tolerances: rtol 1e-10 in float64 (with helpers.assert_close's absolute floor of 1e-12 x the
array's largest entry) against the oracle, as for fully observed data: the masked recursions
are the same algebra on zero-padded matrices, exact to round-off (a few hundred ulps on these
models). Gradients against central finite differences with step 1e-5: truncation error
O(h^2) ~ 1e-10 relative, round-off ~ eps/h ~ 1e-11; held to 1e-6.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from reference import dense_posterior, dense_sufficient_stats, random_model, simulate

import jaxssm as ssm
from jaxssm._blocks import stats as _stats
from jaxssm._schedules import gappy as _gappy
from jaxssm._schedules import settle as _settle

RTOL = 1e-10
N = 12

SCHEDULES = [("sequential", False), ("sequential", True), ("parallel", None)]
IDS = ["sequential", "steady", "parallel"]


def _knock_out(rng, ys, frac):
    """Per-entry mask, plus the first and last rows and one interior row wholly missing."""
    ys = np.array(ys, dtype=np.float64)
    ys[rng.uniform(size=ys.shape) < frac] = np.nan
    ys[0] = np.nan
    ys[len(ys) // 2] = np.nan
    ys[-1] = np.nan
    return ys


def _case(seed, D, Dy, frac=0.3, n=N):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy)
    _, ys = simulate(rng, model, n)
    return model, _knock_out(rng, ys, frac)


CASES = [(0, 3, 2), (1, 2, 4), (2, 4, 4)]


def _grid(schedules):
    """Every schedule on the first case; the other cases on the parallel and steady
    schedules only in the slow suite (each costs a compilation of 10-20 s on 2 cores)."""
    out = []
    for i, c in enumerate(CASES):
        for sched, sid in schedules:
            slow = i > 0 and sid != "sequential"
            marks = [pytest.mark.slow] if slow else []
            out.append(pytest.param(c, *sched, marks=marks, id=f"D{c[1]}-Dy{c[2]}-{sid}"))
    return out


_ORACLE = {}


def _oracle(c):
    if c not in _ORACLE:
        model, ys = _case(*c)
        _ORACLE[c] = (model, ys, dense_posterior(model, ys))
    return _ORACLE[c]


@pytest.mark.parametrize("c, method, steady", _grid(list(zip(SCHEDULES, IDS, strict=True))))
def test_filter_and_smoother_match_dense_oracle(c, method, steady):
    model, ys, post = _oracle(c)
    params = to_params(model)
    f = ssm.kalman_filter(params, jnp.asarray(ys), method=method, steady_state=steady)
    s = ssm.rts_smoother(params, jnp.asarray(ys), method=method, steady_state=steady)
    assert_close(f.means, post.filter_means, RTOL, err_msg="filter means")
    assert_close(f.covs, post.filter_covs, RTOL, err_msg="filter covs")
    assert_close(f.pred_means, post.pred_means, RTOL, err_msg="predicted means")
    assert_close(f.pred_covs, post.pred_covs, RTOL, err_msg="predicted covs")
    assert_close(s.means, post.smooth_means, RTOL, err_msg="smoothed means")
    assert_close(s.covs, post.smooth_covs, RTOL, err_msg="smoothed covs")
    cross = jax.vmap(lambda c, g: c @ g.T)(s.covs[1:], s.gains)  # Cov(x_{k+1}, x_k | y)
    assert_close(cross, post.smooth_cross, RTOL, err_msg="lag-one cross-covariances")
    np.testing.assert_allclose(float(f.log_likelihood), post.log_likelihood, rtol=RTOL)
    np.testing.assert_allclose(float(s.log_likelihood), post.log_likelihood, rtol=RTOL)


@pytest.mark.parametrize(
    "c, method, steady",
    _grid([(("sequential", False), "sequential"), (("parallel", None), "parallel")]),
)
def test_estep_statistics_match_dense_expectations(c, method, steady):
    model, ys, _ = _oracle(c)
    params = to_params(model)
    stats, ll = ssm.e_step(params, jnp.asarray(ys), method=method, steady_state=steady)
    # The last row is all NaN: the sequence ends at N - 1.
    ref = dense_sufficient_stats(model, ys, length=N - 1)
    assert int(stats.num_steps) == N - 1
    for name in ("Sigma", "Phi", "B", "C", "D", "m0_smoothed", "P0_smoothed"):
        assert_close(getattr(stats, name), ref[name], RTOL, err_msg=name)
    np.testing.assert_allclose(float(ll), ref["log_likelihood"], rtol=RTOL)


def test_all_missing_row_is_a_pure_prediction():
    model, ys = _case(3, 2, 2, frac=0.0)
    params = to_params(model)
    f = ssm.kalman_filter(params, jnp.asarray(ys), steady_state=False)
    k = N // 2  # ys[k] is all NaN: step k + 1 predicts only
    A, Q = model.A, model.Q
    np.testing.assert_allclose(f.means[k + 1], A @ np.asarray(f.means[k]), rtol=1e-13)
    np.testing.assert_allclose(
        f.covs[k + 1], A @ np.asarray(f.covs[k]) @ A.T + Q, rtol=1e-12, atol=1e-14
    )


def test_all_nan_series_has_zero_log_likelihood_and_prior_moments():
    model, _ = _case(4, 2, 3)
    params = to_params(model)
    ys = jnp.full((5, 3), jnp.nan)
    s = ssm.rts_smoother(params, ys)
    assert float(s.log_likelihood) == 0.0
    np.testing.assert_allclose(s.means[0], model.m0, rtol=1e-14)
    np.testing.assert_allclose(s.covs[0], model.P0, rtol=1e-13)


def test_fully_observed_statistics_take_the_plain_sums_bitwise():
    """With no NaN the E-step's statistics are those of the unmasked formulas, bitwise."""
    model, ys = _case(5, 3, 2, frac=0.0)
    ys[0] = ys[1]  # refill the rows _knock_out blanked
    ys[N // 2] = ys[1]
    ys[-1] = ys[1]
    params = to_params(model)
    y = jnp.asarray(ys)
    stats, _ = ssm.e_step(params, y, steady_state=False)
    smoothed = ssm.rts_smoother(params, y, steady_state=False)
    plain = jax.jit(_stats._from_smoother_observed)(smoothed, y)
    for a, b in zip(stats, plain, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The missing-data formulas on the same series agree to round-off (they reduce to it).
    masked = jax.jit(_stats._from_smoother_missing)(smoothed, y, params.H, params.R)
    for name in ("Sigma", "Phi", "B", "C", "D"):
        assert_close(getattr(masked, name), getattr(plain, name), 1e-13, err_msg=name)


# Slow (about 30 s of compilation): in the default suite the gap-aware default path is held
# to the full recursion by test_gradients_on_the_default_path_with_gaps_are_finite (N = 2,100).
@pytest.mark.slow
def test_long_series_with_gaps_on_the_default_path_matches_the_full_recursion():
    """At N >= 2048 with gaps the default path takes the gap-aware steady-state recursion
    (full steps only around the gaps): its results equal the full recursion's at 1e-10."""
    rng = np.random.default_rng(6)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, 2100)
    ys = ssm.datasets.knock_out(ys, entries=0.005, rows=0.005, gaps=[(700, 60)], seed=2)
    ys[0] = np.nan
    ys[-3:] = np.nan
    params = to_params(model)
    y = jnp.asarray(ys)
    for fn in (ssm.kalman_filter, ssm.rts_smoother):
        default, full = fn(params, y), fn(params, y, steady_state=False)
        for name in default._fields:
            assert_close(getattr(default, name), getattr(full, name), RTOL, err_msg=name)
    (s1, l1), (s2, l2) = ssm.e_step(params, y), ssm.e_step(params, y, steady_state=False)
    for name in ("Sigma", "Phi", "B", "C", "D", "m0_smoothed", "P0_smoothed"):
        assert_close(getattr(s1, name), getattr(s2, name), RTOL, err_msg=name)
    assert int(s1.num_steps) == int(s2.num_steps) == 2097
    np.testing.assert_allclose(float(l1), float(l2), rtol=RTOL)
    # And it did skip covariance work: most steps took the steady branch.
    side = _settle.smoother_side(params, _settle.transient_bound(2100))
    point = _gappy.steady_point(side)
    _, steady = jax.jit(_gappy.gappy_filter)(params, y, point, side.info.converged)
    assert bool(side.info.converged) and int(jnp.sum(steady)) > 1000, int(jnp.sum(steady))


def test_ragged_batch_pools_sequences_of_their_own_lengths():
    model, ys_a = _case(7, 2, 2, frac=0.2, n=10)
    _, ys_b = _case(8, 2, 2, frac=0.2, n=7)
    # ys_b padded to length 10 with NaN rows; its own last row is NaN too (length 6).
    pad = np.full((3, 2), np.nan)
    batch = jnp.asarray(np.stack([ys_a, np.concatenate([ys_b, pad])]))
    params = to_params(model)
    stats, ll = ssm.e_step(params, batch)
    ra = dense_sufficient_stats(model, ys_a, length=9)
    rb = dense_sufficient_stats(model, ys_b, length=6)
    assert int(stats.num_steps) == 15
    for name in ("Sigma", "Phi", "B", "C", "D"):
        expected = (9 * ra[name] + 6 * rb[name]) / 15
        assert_close(getattr(stats, name), expected, RTOL, err_msg=name)
    np.testing.assert_allclose(float(ll), ra["log_likelihood"] + rb["log_likelihood"], rtol=RTOL)
    lone = ssm.log_likelihood(params, jnp.asarray(ys_b[:6]))
    np.testing.assert_allclose(float(ssm.log_likelihood(params, batch[1])), float(lone), rtol=1e-13)


@pytest.mark.parametrize("update", [("A", "Q"), ("H", "R"), ("m0", "P0", "A", "Q", "H", "R")])
def test_em_is_monotone_with_missing_entries(update):
    rng = np.random.default_rng(9)
    model = random_model(rng, 2, 3)
    _, ys = simulate(rng, model, 60)
    ys = np.array(ys)
    ys[rng.uniform(size=ys.shape) < 0.2] = np.nan
    start = to_params(random_model(np.random.default_rng(10), 2, 3))
    _, info = ssm.fit_em(start, jnp.asarray(ys), num_iters=25, update=update)
    trace = np.asarray(info.log_likelihoods)
    assert info.status == ssm.EMStatus.MAX_ITERS
    assert np.all(np.isfinite(trace))
    assert np.all(np.diff(trace) >= -1e-9 * np.abs(trace[:-1])), np.diff(trace).min()
    assert trace[-1] > trace[0]


def test_em_converges_to_a_stationary_point_of_the_observed_likelihood():
    rng = np.random.default_rng(11)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 80)
    ys = np.array(ys)
    ys[rng.uniform(size=ys.shape) < 0.2] = np.nan
    y = jnp.asarray(ys)
    # H and R: the parameters whose statistics the missing entries change.
    fitted, info = ssm.fit_em(to_params(model), y, num_iters=2000, update=("H", "R"), tol=1e-15)
    assert info.status == ssm.EMStatus.CONVERGED

    def ll(H, R):
        return ssm.log_likelihood(fitted._replace(H=H, R=R), y, steady_state=False)

    gH, gR = jax.grad(ll, argnums=(0, 1))(fitted.H, fitted.R)
    # Scale: the gradient at the start, where EM still had far to go.
    g0 = jax.grad(lambda A: ssm.log_likelihood(to_params(model)._replace(A=A), y))(
        jnp.asarray(model.A)
    )
    scale = float(jnp.max(jnp.abs(g0)))
    # Measured: 4.8e-6 and 3.8e-6 against a scale of 23 (EM converges linearly; tol 1e-15).
    assert float(jnp.max(jnp.abs(gH))) < 1e-5 * scale
    assert float(jnp.max(jnp.abs(gR))) < 1e-5 * scale


@pytest.mark.parametrize("method", ["sequential", pytest.param("parallel", marks=pytest.mark.slow)])
def test_gradients_through_masked_steps(method):
    model, ys = _case(12, 2, 2, frac=0.3)
    params = to_params(model)
    y = jnp.asarray(ys)

    def f(theta):
        p = params._replace(A=params.A + theta[0], R=params.R * jnp.exp(theta[1]))
        return ssm.log_likelihood(p, y, method=method)

    theta = jnp.array([0.01, 0.1])
    g = jax.grad(f)(theta)
    assert np.all(np.isfinite(np.asarray(g)))
    h = 1e-5
    fd = [(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in jnp.eye(2)]
    np.testing.assert_allclose(np.asarray(g), np.asarray(fd), rtol=1e-6)
    # The gradient with respect to the observations is finite and zero at missing entries.
    gy = jax.grad(lambda yy: ssm.log_likelihood(params, yy, method=method))(y)
    assert np.all(np.isfinite(np.asarray(gy)))
    assert np.all(np.asarray(gy)[np.isnan(ys)] == 0.0)


def test_gradients_on_the_default_path_with_gaps_are_finite():
    """The steady branch of the dispatch cond sees no NaN, so none reaches the gradient."""
    rng = np.random.default_rng(13)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 2100)
    ys = np.array(ys)
    ys[100:110] = np.nan
    params = to_params(model)
    g = jax.grad(lambda A: ssm.log_likelihood(params._replace(A=A), jnp.asarray(ys)))(params.A)
    g_full = jax.grad(
        lambda A: ssm.log_likelihood(params._replace(A=A), jnp.asarray(ys), steady_state=False)
    )(params.A)
    assert np.all(np.isfinite(np.asarray(g)))
    assert_close(g, g_full, 1e-12)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_inf_in_ys_is_an_error_naming_the_index(bad):
    model, ys = _case(14, 2, 2, frac=0.0)
    ys[3, 1] = bad
    with pytest.raises(ValueError, match=r"ys must be finite or NaN.*index \(3, 1\)"):
        ssm.kalman_filter(to_params(model), jnp.asarray(ys))


def test_fit_em_on_an_all_nan_series_is_an_error():
    model, _ = _case(15, 2, 2)
    with pytest.raises(ValueError, match="no observed entry"):
        ssm.fit_em(to_params(model), jnp.full((6, 2), jnp.nan), num_iters=2)


def test_fit_mle_with_gaps_raises_the_observed_likelihood():
    import optax

    rng = np.random.default_rng(16)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 40)
    ys = ssm.datasets.knock_out(ys, entries=0.2, gaps=[(10, 5)], seed=1)
    start = to_params(random_model(np.random.default_rng(17), 2, 2))
    y = jnp.asarray(ys)
    fitted, info = ssm.fit_mle(start, y, optimizer=optax.adam(0.02), num_iters=30)
    ll0, ll1 = float(ssm.log_likelihood(start, y)), float(ssm.log_likelihood(fitted, y))
    assert np.all(np.isfinite(np.asarray(info.log_likelihoods)))
    assert np.isfinite(ll1) and ll1 > ll0


def test_plot_fit_draws_gaps_and_bridges_them():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxssm import plotting

    rng = np.random.default_rng(18)
    model = random_model(rng, 3, 3)
    _, ys = simulate(rng, model, 30)
    Y = ssm.datasets.knock_out(np.concatenate([model.m0[None], ys]), gaps=[(10, 6)])
    s = ssm.rts_smoother(to_params(model), jnp.asarray(Y[1:]))
    fig = plotting.plot_fit(Y, s, (0, 31))
    try:
        lines = [np.asarray(line.get_ydata(), float) for line in fig.axes[0].lines]
    finally:
        plt.close(fig)
    broken = [y for y in lines if np.all(np.isnan(y[10:16])) and np.isfinite(y[:10]).all()]
    bridged = [y for y in lines if np.isfinite(y).all()]
    assert broken, "the data lines break over the gap"
    assert bridged, "the estimate lines bridge it"
