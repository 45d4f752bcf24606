"""What a newcomer trips on (issue 33): guards, degenerate shapes, messages, stale words.

Each test pins one behaviour that was wrong or unclear: a diverging ``fit_mle`` returned its
last (worst) iterate; unchecked values gave NaN in the M-step; degenerate shapes crashed
inside the library; messages named internals; an unobserved unstable mode gave a silent NaN.
Models are small (D = 2, Dy = 1, N <= 200) so that the compiled programs stay cheap.

Tolerances (float64):
- ``MLEInfo.log_likelihood`` and the trace entry of the returned iterate against
  ``ssm.log_likelihood`` of the returned parameters, rtol 1e-12 (the same filter; the loop's
  value is divided and multiplied by ``T``, a few roundings).
- The unobserved-mode model against the model restricted to its observed mode (exact for
  ``log p(y)``: the modes are uncoupled), rtol 1e-12: the same recursion on the observed
  block, the unobserved one entering ``H P H^T`` only through exact zeros.
- ``exercise_setup``'s filled ``m0`` against a plain mean of the observed entries, rtol 1e-15.
- A ragged batch with its padded inputs set to 0 or 7: the padded steps observe nothing, so
  the log-likelihood (rtol 1e-13) and statistics (rtol 1e-12) agree to round-off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxssm as ssm

SGD = optax.sgd(1e3)
ADAM_WILD = optax.adam(100.0)
ADAM = optax.adam(1e-2)


@pytest.fixture(scope="module")
def small():
    params = ssm.LGSSM(
        m0=jnp.zeros(2),
        P0=jnp.eye(2),
        A=0.9 * jnp.eye(2),
        Q=0.1 * jnp.eye(2),
        H=jnp.ones((1, 2)),
        R=0.5 * jnp.eye(1),
    )
    _, ys = ssm.sample(jax.random.key(0), params, 50)
    return params, ys


# --- 1. fit_mle's divergence guard ---------------------------------------------------------------


@pytest.mark.parametrize("optimizer", [SGD, ADAM_WILD], ids=["sgd(1e3)", "adam(100)"])
def test_fit_mle_returns_the_best_iterate_when_it_diverges(small, optimizer):
    params, ys = small
    fitted, info = ssm.fit_mle(params, ys, optimizer=optimizer, num_iters=50)
    trace = np.asarray(info.log_likelihoods)
    start = trace[0]
    # The optimiser left the basin: the trace ends far below the start.
    assert trace[-1] < start - 100
    assert int(info.status) == ssm.MLEStatus.DIVERGED
    best = int(info.best_iter)
    assert 0 <= best < 50
    # The returned parameters are theta_best: their log-likelihood is the best of the trace.
    ll = float(ssm.log_likelihood(fitted, ys))
    np.testing.assert_allclose(ll, np.nanmax(trace), rtol=1e-12)
    np.testing.assert_allclose(float(info.log_likelihood), ll, rtol=1e-12)
    np.testing.assert_allclose(trace[best], ll, rtol=1e-12)
    assert ll >= start
    assert float(info.decrease) > 100


def test_fit_mle_keeps_the_last_iterate_when_it_rises(small):
    params, ys = small
    fitted, info = ssm.fit_mle(params, ys, optimizer=ADAM, num_iters=3)
    assert int(info.status) == ssm.MLEStatus.MAX_ITERS
    assert int(info.best_iter) == 3 and float(info.decrease) == 0.0
    trace = np.asarray(info.log_likelihoods)
    assert np.all(np.diff(trace) > 0)  # three small Adam steps from a poor start rise
    ll = float(ssm.log_likelihood(fitted, ys))
    np.testing.assert_allclose(float(info.log_likelihood), ll, rtol=1e-12)
    assert ll > trace[-1]


def test_fit_mle_decreased_when_adam_oscillates(small):
    """Adam(1e-2) overshoots near the maximum: the best iterate, not the last, comes back."""
    params, ys = small
    fitted, info = ssm.fit_mle(params, ys, optimizer=ADAM, num_iters=50)
    trace = np.asarray(info.log_likelihoods)
    assert int(info.status) == ssm.MLEStatus.DECREASED
    best = int(info.best_iter)
    ll = float(ssm.log_likelihood(fitted, ys))
    np.testing.assert_allclose(trace[best], ll, rtol=1e-12)
    assert ll == pytest.approx(np.max(trace), rel=1e-12) and ll > trace[0]
    assert float(info.decrease) > 0


def test_fit_mle_under_jit_reports_a_nan_trace_as_diverged(small):
    """Under jit values are not checked (documented): inf in ys gives a NaN trace, flagged."""
    params, ys = small
    bad = ys.at[3, 0].set(jnp.inf)
    fitted, info = jax.jit(lambda y: ssm.fit_mle(params, y, optimizer=ADAM, num_iters=3))(bad)
    assert int(info.status) == ssm.MLEStatus.DIVERGED
    assert float(info.decrease) == np.inf and int(info.best_iter) == 0
    assert np.all(np.isnan(np.asarray(info.log_likelihoods)))
    np.testing.assert_array_equal(fitted.A, params.A)  # the start comes back
    # Q through the Cholesky/softplus map and back: round-off (rtol 1e-14).
    np.testing.assert_allclose(fitted.Q, params.Q, rtol=1e-14, atol=1e-16)


def test_fit_mle_malformed_optimizer_names_optax(small):
    params, ys = small
    bad = optax.GradientTransformation(lambda p: (), lambda u, s, p=None: (u,))
    with pytest.raises(TypeError, match=r"optimizer must be an optax\.GradientTransformation"):
        ssm.fit_mle(params, ys, optimizer=bad, num_iters=2)
    with pytest.raises(TypeError, match=r"optimizer must be an optax\.GradientTransformation"):
        ssm.fit_mle(params, ys, optimizer=optax.adam, num_iters=2)


# --- 3. degenerate shapes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda p, ys: ssm.e_step(p, ys),
        lambda p, ys: ssm.log_likelihood(p, ys),
        lambda p, ys: ssm.fit_em(p, ys, num_iters=2),
        lambda p, ys: ssm.initialize(p, ys),
        lambda p, ys: ssm.fit(p, ys),
    ],
    ids=["e_step", "log_likelihood", "fit_em", "initialize", "fit"],
)
def test_empty_batch_is_named(small, call):
    params, _ = small
    with pytest.raises(ValueError, match=r"ys must hold at least one sequence \(B >= 1"):
        call(params, jnp.zeros((0, 50, 1)))


def test_no_observation_dimension_is_named(small):
    params, _ = small
    blind = params._replace(H=jnp.zeros((0, 2)), R=jnp.zeros((0, 0)))
    for call in (ssm.kalman_filter, ssm.rts_smoother, ssm.e_step):
        with pytest.raises(ValueError, match=r"H must have shape \[Dy, D\] with Dy >= 1"):
            call(blind, jnp.zeros((50, 0)))
    with pytest.raises(ValueError, match=r"Dy >= 1"):
        ssm.sample(jax.random.key(0), blind, 5)


def test_no_state_dimension_is_named():
    empty = ssm.LGSSM(
        jnp.zeros(0), jnp.eye(0), jnp.eye(0), jnp.eye(0), jnp.zeros((1, 0)), jnp.eye(1)
    )
    for call in (ssm.kalman_filter, ssm.rts_smoother, ssm.e_step):
        with pytest.raises(ValueError, match=r"A must be a square matrix \[D, D\] with D >= 1"):
            call(empty, jnp.zeros((50, 1)))
    with pytest.raises(ValueError, match=r"D >= 1"):
        ssm.sample(jax.random.key(0), empty, 5)


def test_empty_series_is_named(small):
    params, _ = small
    with pytest.raises(ValueError, match=r"ys must hold at least one step \(N >= 1\)"):
        ssm.e_step(params, jnp.zeros((3, 0, 1)))


# --- 2. eager value checks of m_step and expected_log_joint --------------------------------------


@pytest.fixture(scope="module")
def stats(small):
    params, ys = small
    return ssm.e_step(params, ys)[0]


def test_m_step_all_zero_statistics_is_an_error_not_nan(small, stats):
    params, _ = small
    zero = jax.tree.map(jnp.zeros_like, stats)._replace(num_steps=stats.num_steps)
    with pytest.raises(ValueError, match=r"stats\.Phi for A.*singular"):
        ssm.m_step(params, zero)
    with pytest.raises(ValueError, match=r"m_step's result is not a valid model \(H must be"):
        ssm.m_step(params, zero, update="H")


def test_m_step_rejects_a_zero_count_and_non_finite_stats(small, stats):
    params, _ = small
    with pytest.raises(ValueError, match=r"stats\.num_steps must be >= 1"):
        ssm.m_step(params, stats._replace(num_steps=jnp.zeros((), jnp.int32)))
    bad = stats._replace(C=stats.C.at[0, 1].set(jnp.nan))
    with pytest.raises(ValueError, match=r"stats\.C must be finite, got nan at index \(0, 1\)"):
        ssm.m_step(params, bad)


def test_m_step_and_expected_log_joint_reject_an_indefinite_q(small, stats):
    params, _ = small
    indefinite = params._replace(Q=jnp.diag(jnp.array([0.1, -0.1])))
    with pytest.raises(ValueError, match=r"Q must be symmetric positive definite or semi"):
        ssm.m_step(indefinite, stats, update="A")
    with pytest.raises(ValueError, match=r"Q must be symmetric positive definite or semi"):
        ssm.expected_log_joint(indefinite, stats)


def test_expected_log_joint_needs_definite_covariances_and_sequences(small, stats):
    params, _ = small
    singular = params._replace(Q=jnp.diag(jnp.array([0.1, 0.0])))
    with pytest.raises(ValueError, match=r"Q must be positive definite for expected_log_joint"):
        ssm.expected_log_joint(singular, stats)
    with pytest.raises(ValueError, match=r"num_sequences must be a positive int"):
        ssm.expected_log_joint(params, stats, num_sequences=0)
    with pytest.raises(TypeError, match=r"num_sequences must be a positive int"):
        ssm.expected_log_joint(params, stats, num_sequences=1.5)
    # Under jit nothing is checked (documented): the checks are eager only.
    value = jax.jit(ssm.expected_log_joint)(params, stats)
    np.testing.assert_allclose(value, ssm.expected_log_joint(params, stats), rtol=1e-12)


# --- 4. messages ---------------------------------------------------------------------------------


def test_traced_num_iters_says_static_and_how(small):
    params, ys = small
    with pytest.raises(TypeError, match=r"num_iters must be .*static_argnames=\('num_iters',\)"):
        jax.jit(lambda n: ssm.fit_em(params, ys, num_iters=n))(3)
    with pytest.raises(TypeError, match=r"close over it"):
        jax.jit(lambda n: ssm.fit_mle(params, ys, optimizer=ADAM, num_iters=n))(3)


def test_grad_through_fit_em_with_tol_says_why(small):
    params, ys = small

    def loss(A, **options):
        fitted, info = ssm.fit_em(params._replace(A=A), ys, num_iters=3, **options)
        return info.log_likelihood

    with pytest.raises(ValueError, match=r"with tol=1e-06: the loop is then a lax\.while_loop"):
        jax.grad(lambda A: loss(A, tol=1e-6))(params.A)


# --- 6. stale words: exercise_setup's NaN first row, sample's key, device_mesh -------------------


def test_exercise_setup_fills_a_nan_first_row_with_column_means():
    rng = np.random.default_rng(3)
    Y = rng.normal(size=(6, 3))
    Y[0, 1] = np.nan
    Y[2, 1] = np.nan
    Y[:, 2] = np.nan  # a column never observed: 0
    Y[1, 2] = 5.0
    Y[0, 2] = np.nan
    params, ys = ssm.datasets.exercise_setup(Y, jax.random.key(0), dtype=jnp.float64)
    observed = [Y[r, 1] for r in (1, 3, 4, 5)]
    expected = [Y[0, 0], sum(observed) / 4, 5.0]
    np.testing.assert_allclose(np.asarray(params.m0), expected, rtol=1e-15)
    np.testing.assert_array_equal(np.isnan(np.asarray(ys)), np.isnan(Y[1:]))
    doc = ssm.datasets.exercise_setup.__doc__
    assert "a NaN in ``Y[0]`` is\n      replaced in ``m0`` by the mean" in doc
    assert "holds\n            NaN" not in doc
    with pytest.raises(
        ValueError, match=r"must have an observed \(non-NaN\) entry after its first row"
    ):
        ssm.datasets.exercise_setup(np.full((4, 3), np.nan), jax.random.key(0))


def test_sample_rejects_an_int_key_like_the_other_samplers(small):
    params, _ = small
    with pytest.raises(TypeError) as sample_err:
        ssm.sample(0, params, 5)
    with pytest.raises(TypeError) as posterior_err:
        ssm.posterior_sample(0, params, jnp.zeros((5, 1)))
    assert "key must be a JAX PRNG key" in str(sample_err.value)
    assert str(sample_err.value) == str(posterior_err.value)


def test_device_mesh_rejects_more_devices_than_exist_and_an_empty_list():
    count = len(jax.devices())
    with pytest.raises(TypeError, match=rf"axis_name must be a str.*got the int {count + 2}"):
        ssm.sharding.device_mesh(count + 2)
    with pytest.raises(TypeError, match=rf"this process sees {count} device"):
        ssm.sharding.device_mesh(count + 2)
    with pytest.raises(ValueError, match=r"devices must hold at least one device"):
        ssm.sharding.device_mesh(devices=[])


def test_ragged_batch_inputs_padded_with_zeros_not_nan():
    params = ssm.LGSSM(
        m0=jnp.zeros(2),
        P0=jnp.eye(2),
        A=0.8 * jnp.eye(2),
        Q=0.1 * jnp.eye(2),
        H=jnp.ones((1, 2)),
        R=0.5 * jnp.eye(1),
        B=jnp.array([[0.5], [0.0]]),
    )
    u = jax.random.normal(jax.random.key(1), (2, 30, 1))
    _, ys = ssm.sample(jax.random.key(2), params, 30, inputs=u[0])
    ys = jnp.stack([ys, ys.at[20:].set(jnp.nan)])  # the second sequence has 20 steps
    zeros = u.at[1, 20:].set(0.0)
    other = u.at[1, 20:].set(7.0)
    stats0, ll0 = ssm.e_step(params, ys, inputs=zeros)
    stats1, ll1 = ssm.e_step(params, ys, inputs=other)
    # The padded steps observe nothing: their inputs do not enter (same program, same sums).
    np.testing.assert_allclose(ll0, ll1, rtol=1e-13)
    for a, b in zip(stats0, stats1, strict=True):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match=r"pad a shorter sequence of a ragged batch.*zeros"):
        ssm.e_step(params, ys, inputs=u.at[1, 20:].set(jnp.nan))
    assert "zeros (any finite value" in ssm.e_step.__doc__


# --- 7. the test command reports progress --------------------------------------------------------


def test_run_suite_reports_each_group_as_it_starts_and_ends(capsys):
    import threading

    import run_suite

    tests = run_suite.TESTS.parent
    # Six names (never run: run is a stand-in), two groups of GROUP_SIZE = 4.
    files = [run_suite.TESTS / f"test_fake_{i}.py" for i in range(6)]
    first_started = threading.Event()
    calls = []

    def run(argv, names):
        calls.append((list(argv), list(names)))
        if names[0].endswith("test_fake_0.py"):
            # The first group ends only after the second has started: the second's start line
            # must already be out (printed as it starts, not when the first ends).
            first_started.wait(5)
            return 1, "F\n1 failed in 0.1s\n"
        first_started.set()
        return 0, "..\n2 passed in 0.2s\n"

    code = run_suite.main(["-q"], files=files, run=run, jobs=2)
    out = capsys.readouterr().out
    assert code == 1
    # What runs is unchanged: pytest options, then the group's files (relative to the root).
    assert sorted(calls) == sorted(
        [
            (["-q"], [str(f.relative_to(tests)) for f in files[:4]]),
            (["-q"], [str(f.relative_to(tests)) for f in files[4:]]),
        ]
    )
    lines = out.splitlines()
    start2 = next(i for i, line in enumerate(lines) if line.startswith("[start 2/2]"))
    done_fail = next(i for i, line in enumerate(lines) if "FAILED (exit 1)" in line)
    assert start2 < done_fail
    assert any(line.startswith("[done 1/2, 0:0") and "2 passed in 0.2s" in line for line in lines)
    assert any(line.startswith("[done 2/2, 0:0") and "1 failed in 0.1s" in line for line in lines)
    assert lines[-1].startswith("run_suite: 2 groups in 0:0")


def test_run_suite_starts_the_groups_with_heavy_files_first(capsys):
    import run_suite

    heavy = sorted(run_suite.HEAVY)
    names = [f"test_a{i}.py" for i in range(4)] + [heavy[0], "test_b.py", *heavy[1:3]]
    files = [run_suite.TESTS / name for name in [*names, "test_c.py"]]
    calls = []

    def run(argv, group):
        calls.append([name.split("/")[-1] for name in group])
        return 0, "1 passed in 0.1s\n"

    # One process at a time: the groups run in the order they start. The second group holds
    # three heavy files, the others none: it starts first, then the rest in name order.
    assert run_suite.main(["-q"], files=files, run=run, jobs=1) == 0
    assert calls == [names[4:], names[:4], ["test_c.py"]]
    out = capsys.readouterr().out
    assert f"[start 1/3] tests/{heavy[0]}" in out


# --- 5. an unstable unobserved mode ---------------------------------------------------------------


def _unstable(growth):
    full = ssm.LGSSM(
        m0=jnp.zeros(2),
        P0=jnp.eye(2),
        A=jnp.diag(jnp.array([0.9, growth])),
        Q=0.01 * jnp.eye(2),
        H=jnp.array([[1.0, 0.0]]),
        R=0.1 * jnp.eye(1),
    )
    # The observed mode alone: exact for log p(y), the modes being uncoupled (A, Q, P0
    # diagonal, H blind to the second).
    observed = ssm.LGSSM(
        m0=jnp.zeros(1),
        P0=jnp.eye(1),
        A=jnp.array([[0.9]]),
        Q=0.01 * jnp.eye(1),
        H=jnp.eye(1),
        R=0.1 * jnp.eye(1),
    )
    return full, observed


def test_unstable_unobserved_mode_agrees_with_the_observed_model_before_overflow():
    # |lambda| = 10: the unobserved variance 10^(2k) stays finite for k < ~154 steps.
    full, observed = _unstable(10.0)
    ys = jnp.asarray(np.random.default_rng(0).normal(size=(100, 1)))
    reference = float(ssm.log_likelihood(observed, ys, steady_state=False))
    value = float(ssm.log_likelihood(full, ys, steady_state=False))
    # rtol 1e-12: the same recursion on the observed block; the unobserved block (1e200 by
    # the end) enters H P H^T only through exact zeros.
    np.testing.assert_allclose(value, reference, rtol=1e-12)


def test_unstable_unobserved_mode_overflow_is_an_error_that_says_why():
    full, observed = _unstable(10.0)
    ys = jnp.asarray(np.random.default_rng(0).normal(size=(200, 1)))
    assert np.isfinite(float(ssm.log_likelihood(observed, ys, steady_state=False)))
    message = r"eigenvalue 10 .*H does not see.*overflows float64 after about 154 steps"
    for call in (ssm.log_likelihood, ssm.kalman_filter):
        with pytest.raises(ValueError, match=message):
            call(full, ys, steady_state=False)
    # Under jit values are not checked (documented): the NaN comes back.
    assert np.isnan(float(jax.jit(ssm.log_likelihood)(full, ys)))


@pytest.mark.slow
def test_unstable_unobserved_mode_issue_example():
    """The issue's model: A = diag(0.9, 1.05), H = [[1, 0]], N = 20,000 (default schedule)."""
    full, observed = _unstable(1.05)
    ys = jnp.asarray(np.random.default_rng(1).normal(size=(20_000, 1)))
    assert np.isfinite(float(ssm.log_likelihood(observed, ys)))
    with pytest.raises(ValueError, match=r"eigenvalue 1\.05 .*after about 7273 steps"):
        ssm.log_likelihood(full, ys)
    # The other entry points and schedules (compile-heavy: the parallel scan), at |lambda| = 10.
    full, _ = _unstable(10.0)
    ys = ys[:200]
    message = r"eigenvalue 10 .*H does not see.*overflows float64 after about 154 steps"
    for call in (ssm.rts_smoother, ssm.e_step):
        with pytest.raises(ValueError, match=message):
            call(full, ys, steady_state=False)
    with pytest.raises(ValueError, match=message):
        ssm.log_likelihood(full, ys, method="parallel")


def test_package_docstring_shows_inputs_and_offsets():
    doc = ssm.__doc__
    assert "x_k = A x_{k-1} + B u_k + b + q_k" in doc
    assert "y_k = H x_k + D u_k + d + r_k" in doc
    assert "``inputs`` holds\n``u_1..u_N``" in doc
