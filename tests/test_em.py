"""The compiled EM loop (``fit_em`` and its ``EMInfo``); E-step statistics are in test_stats.py.

References and tolerances (float64):

- EM monotonicity: ``ll[i+1] >= ll[i] - 1e-9 |ll[i]|``; the log-likelihood is a sum of N
  terms, each with relative round-off ~1e-15, so a correct EM stays far inside this.
- Loop semantics (fit_em vs a Python loop over the public e_step/m_step): rtol 1e-12; the
  same operations compiled once in a loop vs one call at a time.
- ``EMInfo.log_likelihood`` vs ``ssm.log_likelihood`` at the returned parameters: rtol 1e-12
  (the same filter, inside the loop's program vs on its own; observed equal).
- Parallel vs sequential E-step inside the loop (5 iterations): traces rtol 1e-10,
  parameters rtol 1e-9 (observed 7e-16 and 1e-14: wide margins for another machine's
  reduction orders).
- A batch of two identical sequences vs one: trace rtol 1e-12 (twice the value), parameters
  rtol 1e-11 (observed equal).
- Recovery of (A, Q) from N = 20,000 simulated steps of a known 2-state model: max abs error
  below 0.04. The sampling error of the MLE is O(1/sqrt(N)) ~ 0.007 per entry here; over 8
  seeds at N = 5,000 the largest error seen was 0.034, i.e. about 0.017 at N = 20,000, so
  0.04 is > 2x the worst case seen and far below the error of a wrong fit (|A| ~ 0.9).
"""

import enum
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, count_compilations, to_params
from reference import Model, random_model, simulate, unobserved_unit_root

import jaxssm as ssm
from jaxssm._learn import em as _em
from jaxssm._schedules import dispatch as _dispatch
from jaxssm._schedules import plan as _plan
from jaxssm._schedules import settle


def exercise_start(model, rng):
    """The exercise's initial guess: A = 0, Q = 0.01 diag(u), u ~ U(0, 1)."""
    D = model.A.shape[0]
    return model._replace(A=np.zeros((D, D)), Q=0.01 * np.diag(rng.uniform(size=D)))


# --------------------------------------------------------------------------- EMInfo, EMStatus


def test_em_status_is_an_int_enum():
    assert issubclass(ssm.EMStatus, enum.IntEnum)
    assert [(s.name, int(s)) for s in ssm.EMStatus] == [
        ("MAX_ITERS", 0),
        ("CONVERGED", 1),
        ("DECREASED", 2),
    ]
    assert ssm.EMInfo._fields == (
        "log_likelihoods",
        "log_likelihood",
        "num_iters",
        "status",
        "decrease",
        "schedule",
    )
    # The last field has a default: an EMInfo of the first five still builds.
    assert ssm.EMInfo(*range(5)).schedule is None
    assert ssm.ScheduleInfo._fields == (
        "fast_path",
        "filter_transient",
        "smoother_transient",
        "num_transient",
    )
    assert not hasattr(ssm, "fit_em_with_info")


@pytest.mark.parametrize("num_iters, tol", [(4, None), (4, 0.0)])
def test_fit_em_equals_python_loop_of_public_steps(num_iters, tol):
    """The compiled loop does exactly e_step -> m_step, num_iters times, trace = ll(theta_i)."""
    rng = np.random.default_rng(30)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, 40)
    update = ("A", "Q", "R", "m0")
    params = to_params(exercise_start(model, rng))
    fitted, info = ssm.fit_em(params, ys, num_iters=num_iters, update=update, tol=tol)
    lls = []
    p = params
    for _ in range(num_iters):
        stats, ll = ssm.e_step(p, ys)
        lls.append(ll)
        p = ssm.m_step(p, stats, update=update)
    assert isinstance(info, ssm.EMInfo)
    assert int(info.status) == ssm.EMStatus.MAX_ITERS and int(info.num_iters) == num_iters
    assert_close(info.log_likelihoods, lls, 1e-12)
    for name, a, b in zip(ssm.LGSSM._fields, fitted, p, strict=True):
        assert_close(a, b, 1e-12, err_msg=name)
    # The returned parameters are theta_num_iters; their log-likelihood is reported apart.
    assert_close(info.log_likelihood, ssm.log_likelihood(p, ys), 1e-12)
    assert_close(info.log_likelihood, ssm.log_likelihood(fitted, ys), 1e-12)


def test_em_info_fields():
    """Shapes and dtypes of every EMInfo field, after a full run and after an early stop."""
    rng = np.random.default_rng(31)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 30)
    params = to_params(exercise_start(model, rng))
    for tol in (None, 1e-3):
        _, info = ssm.fit_em(params, ys, num_iters=7, tol=tol)
        assert info.log_likelihoods.shape == (7,) and info.log_likelihoods.dtype == jnp.float64
        assert info.log_likelihood.shape == () and info.log_likelihood.dtype == jnp.float64
        assert info.num_iters.shape == () and info.num_iters.dtype == jnp.int32
        assert info.status.shape == () and info.status.dtype == jnp.int32
        assert info.decrease.shape == () and info.decrease.dtype == jnp.float64
        assert float(info.decrease) == 0.0  # no decrease: the field is 0
        expected = ssm.EMStatus.MAX_ITERS if tol is None else ssm.EMStatus.CONVERGED
        assert int(info.status) == expected
        assert bool(info.status == expected)  # the array comparison works as well
        n = int(info.num_iters)
        assert (n == 7) if tol is None else (2 <= n < 7)
        assert np.all(np.isfinite(np.asarray(info.log_likelihoods)[:n]))


MONOTONE_UPDATES = [("A", "Q"), ("A", "Q", "H", "R", "m0", "P0"), ("Q", "R"), ("H", "R", "m0")]


# Same shapes for the three random models, so each update subset compiles once.
@pytest.mark.parametrize("seed, D, Dy", [(40, 3, 2), (41, 3, 2), (42, 3, 2)])
@pytest.mark.parametrize("update", MONOTONE_UPDATES, ids=lambda u: "+".join(u))
def test_em_never_lowers_log_likelihood(seed, D, Dy, update):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=2.0)
    _, ys = simulate(rng, model, 60)
    params = to_params(exercise_start(model, rng))
    _, info = ssm.fit_em(params, ys, num_iters=50, update=update)
    ll = np.asarray(info.log_likelihoods)
    assert int(info.status) == ssm.EMStatus.MAX_ITERS, (
        f"guard triggered: decrease {float(info.decrease)}"
    )
    assert np.all(np.isfinite(ll))
    drops = ll[:-1] - np.abs(ll[:-1]) * 1e-9 - ll[1:]
    assert np.all(drops <= 0), f"log-likelihood fell at iterations {np.nonzero(drops > 0)[0]}"
    assert info.log_likelihood >= ll[-1] - 1e-9 * abs(ll[-1])
    assert ll[-1] > ll[0]  # and it actually learned something


@pytest.mark.timeout(120)
def test_em_parallel_equals_sequential():
    rng = np.random.default_rng(50)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 30)
    params = to_params(exercise_start(model, rng))
    a, ia = ssm.fit_em(params, ys, num_iters=5, method="sequential")
    b, ib = ssm.fit_em(params, ys, num_iters=5, method="parallel")
    assert_close(ia.log_likelihoods, ib.log_likelihoods, 1e-10)
    assert_close(ia.log_likelihood, ib.log_likelihood, 1e-10)
    for name, x, y in zip(ssm.LGSSM._fields, a, b, strict=True):
        assert_close(x, y, 1e-9, err_msg=name)


def test_em_recovers_known_transition():
    """N = 20,000 steps of a known 2-state model; (A, Q) from the exercise's start."""
    A = np.array([[0.9, 0.2], [-0.1, 0.7]])
    Q = np.array([[0.5, 0.1], [0.1, 0.3]])
    model = Model(np.zeros(2), np.eye(2), A, Q, np.eye(2), 0.1 * np.eye(2))
    rng = np.random.default_rng(60)
    _, ys = simulate(rng, model, 20_000)
    params = to_params(exercise_start(model, rng))
    fitted, info = ssm.fit_em(params, ys, num_iters=200, tol=1e-10)
    assert int(info.status) == ssm.EMStatus.CONVERGED, (
        "EM did not converge to tol = 1e-10 in 200 iterations"
    )
    np.testing.assert_allclose(fitted.A, A, atol=0.04)
    np.testing.assert_allclose(fitted.Q, Q, atol=0.04)
    # The start was far off: A = 0 is 0.9 away.
    assert np.max(np.abs(params.A - A)) > 0.5


def test_tol_stops_early_and_marks_unused_iterations_nan():
    rng = np.random.default_rng(70)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 50)
    params = to_params(exercise_start(model, rng))
    tol = 1e-4
    fitted, info = ssm.fit_em(params, ys, num_iters=500, tol=tol)
    n = int(info.num_iters)
    ll = np.asarray(info.log_likelihoods)
    assert int(info.status) == ssm.EMStatus.CONVERGED and 2 <= n < 500
    assert np.all(np.isfinite(ll[:n])) and np.all(np.isnan(ll[n:]))
    gains = np.diff(ll[:n]) / np.abs(ll[: n - 1])
    assert gains[-1] <= tol and np.all(gains[:-1] > tol)  # stopped at the first small step
    # The returned parameters are theta_{n-1}, whose log-likelihood is the last finite entry.
    assert float(info.log_likelihood) == ll[n - 1]
    assert_close(ssm.log_likelihood(fitted, ys), ll[n - 1], 1e-12)


def test_guard_stops_on_non_finite_log_likelihood():
    """A data column that is identically 0 and unobserved by H: the R-update sets that row
    of R to exactly 0 (the likelihood is unbounded there), the next filter's innovation
    covariance is singular and its log-likelihood NaN. The guard must keep theta_0."""
    rng = np.random.default_rng(80)
    model = random_model(rng, 2, 3)
    H = model.H.copy()
    H[2] = 0.0
    model = model._replace(H=H)
    _, ys = simulate(rng, model, 30)
    ys[:, 2] = 0.0
    params = to_params(model)
    stats, _ = ssm.e_step(params, ys)
    assert np.all(np.asarray(ssm.m_step(params, stats, update="R").R)[2] == 0.0)
    for tol in (None, 1e-12):
        fitted, info = ssm.fit_em(params, ys, num_iters=5, update=("R",), tol=tol)
        ll = np.asarray(info.log_likelihoods)
        assert int(info.status) == ssm.EMStatus.DECREASED and int(info.num_iters) == 2
        assert np.isfinite(ll[0]) and np.all(np.isnan(ll[1:]))
        assert float(info.decrease) == np.inf
        assert float(info.log_likelihood) == ll[0]
        for a, b in zip(fitted, params, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.fixture
def corrupt_m_step(monkeypatch):
    """Replace the loop's M-step by the true one followed by Q <- 20 Q (a wrong M-step).

    Yields a recording callback, a new function object for each test: ``callback`` is a
    static argument of the compiled loop, so a call that passes it is traced anew (with the
    patch in), and its cache entry is keyed by an object no other call passes, so the patch
    cannot leak into other tests. The callback records ``(iteration, log-likelihood)``.
    """
    real = _em.m_step_unchecked

    def wrong(params, stats, update):
        new = real(params, stats, update)
        return new._replace(Q=20.0 * new.Q)

    seen = []

    def record(i, ll):
        seen.append((int(i), float(ll)))

    record.seen = seen
    monkeypatch.setattr(_em, "m_step_unchecked", wrong)
    yield record


@pytest.mark.parametrize("tol", [None, 1e-12])
def test_guard_stops_on_decrease_and_keeps_better_params(corrupt_m_step, tol):
    rng = np.random.default_rng(90)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 200)
    params = to_params(model)  # the true model: inflating Q 20x must lower log p(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the status says it: no RuntimeWarning any more
        fitted, info = ssm.fit_em(params, ys, num_iters=6, tol=tol, callback=corrupt_m_step)
    ll = np.asarray(info.log_likelihoods)
    assert int(info.status) == ssm.EMStatus.DECREASED and int(info.num_iters) == 2
    assert ll[1] < ll[0] and np.all(np.isnan(ll[2:]))
    assert_close(info.decrease, ll[0] - ll[1], 1e-14)
    assert float(info.log_likelihood) == ll[0]
    for a, b in zip(fitted, params, strict=True):  # theta_0, not the worse theta_1
        np.testing.assert_array_equal(a, b)
    # The callback saw both E-steps, the offending one included, and nothing after.
    assert corrupt_m_step.seen == [(0, ll[0]), (1, ll[1])]


def test_guard_covers_the_final_m_step(corrupt_m_step):
    rng = np.random.default_rng(91)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 200)
    params = to_params(model)
    fitted, info = ssm.fit_em(params, ys, num_iters=1, callback=corrupt_m_step)
    assert int(info.status) == ssm.EMStatus.DECREASED and int(info.num_iters) == 1
    assert float(info.decrease) > 0
    assert float(info.log_likelihood) == float(info.log_likelihoods[0])
    for a, b in zip(fitted, params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_guard_tolerance_is_relative():
    # The default sqrt(eps) threshold: 1e-9 relative below is tolerated, 1e-7 is not.
    ll0 = jnp.array(-1000.0)
    rtol = _em.default_decrease_rtol(jnp.float64)
    assert 1e-8 < rtol < 2e-8
    assert not bool(_em._is_decrease(ll0 - 1e-6, ll0, rtol))
    assert bool(_em._is_decrease(ll0 - 1e-4, ll0, rtol))
    assert bool(_em._is_decrease(jnp.array(jnp.nan), ll0, rtol))
    # Before the first E-step best_ll = -inf: any finite value passes, for any rtol.
    for r in (0.0, rtol):
        assert not bool(_em._is_decrease(ll0, jnp.array(-jnp.inf), r))
        assert not bool(_em._is_decrease(ll0, ll0, r))
    assert _em.default_decrease_rtol(jnp.float32) > 1e-4


def test_fit_em_compiles_once():
    rng = np.random.default_rng(100)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 20)
    p = to_params(exercise_start(model, rng))
    kwargs = dict(num_iters=3, update=("A", "Q", "H"))
    ssm.fit_em(p, ys, **kwargs)
    p2, ys2 = p._replace(Q=2.0 * p.Q), ys + 1.0
    # New values, same shapes and options (the update names in another order): no retrace.
    with count_compilations() as events:
        ssm.fit_em(p2, ys2, **kwargs)
        ssm.fit_em(p2, ys2, num_iters=3, update=["H", "Q", "A"])
    assert events == [], f"a repeated call traced or compiled: {events}"
    # Positive control: another num_iters is another program, which must be compiled.
    with count_compilations() as events:
        ssm.fit_em(p2, ys2, num_iters=2, update=("A", "Q", "H"))
    assert any("backend_compile" in e for e, _ in events)


def test_progress_callback_traced_only_when_asked(capsys):
    rng = np.random.default_rng(110)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 20)
    p = to_params(exercise_start(model, rng))
    seen = []

    def record(i, ll):
        seen.append((int(i), float(ll)))

    _, info = ssm.fit_em(p, ys, num_iters=4, callback=record)
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    np.testing.assert_array_equal([v for _, v in seen], info.log_likelihoods)
    ssm.fit_em(p, ys, num_iters=4, progress=True)
    err = capsys.readouterr().err
    assert "EM iteration 4/4" in err

    def jaxpr(**kwargs):
        fit = lambda params, y: ssm.fit_em(params, y, num_iters=4, **kwargs)  # noqa: E731
        return str(jax.make_jaxpr(fit)(p, jnp.asarray(ys)))

    assert "callback" not in jaxpr()
    assert "callback" in jaxpr(callback=record)
    assert "callback" in jaxpr(progress=True)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_iters=0), ValueError, "num_iters"),
        (dict(num_iters=2.5), TypeError, "num_iters"),
        (dict(num_iters=3, update=("A", "X")), ValueError, "valid names"),
        (dict(num_iters=3, update=()), ValueError, "update"),
        (dict(num_iters=3, update=None), TypeError, "update"),
        (dict(num_iters=3, tol=-1.0), ValueError, "tol"),
        (dict(num_iters=3, decrease_rtol=-1.0), ValueError, "decrease_rtol"),
        (dict(num_iters=3, method="fast"), ValueError, "method"),
        (dict(num_iters=3, method="parallel", steady_state="yes"), TypeError, "steady_state"),
        (dict(num_iters=3, callback=3), TypeError, "callback"),
    ],
)
def test_fit_em_rejects_bad_arguments(kwargs, error, match):
    p = to_params(random_model(np.random.default_rng(0), 2, 2))
    with pytest.raises(error, match=match):
        ssm.fit_em(p, np.zeros((5, 2)), **kwargs)


def test_fit_em_batch_of_identical_sequences_equals_one_sequence():
    rng = np.random.default_rng(120)
    model = random_model(rng, 2, 2)
    _, y = simulate(rng, model, 25)
    p = to_params(exercise_start(model, rng))
    update = ("A", "Q", "m0", "P0")
    a, ia = ssm.fit_em(p, y, num_iters=5, update=update)
    b, ib = ssm.fit_em(p, np.stack([y, y]), num_iters=5, update=update)
    assert_close(ib.log_likelihoods, 2 * ia.log_likelihoods, 1e-12)
    assert_close(ib.log_likelihood, 2 * ia.log_likelihood, 1e-12)
    for name, x, z in zip(ssm.LGSSM._fields, a, b, strict=True):
        assert_close(z, x, 1e-11, err_msg=name)


def test_float32_follows_inputs():
    rng = np.random.default_rng(130)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 30)
    p = to_params(exercise_start(model, rng), jnp.float32)
    fitted, info = ssm.fit_em(p, ys.astype(np.float32), num_iters=10, tol=1e-6)
    assert all(x.dtype == jnp.float32 for x in fitted[:6])
    assert info.log_likelihoods.dtype == jnp.float32
    assert info.log_likelihood.dtype == jnp.float32
    assert info.decrease.dtype == jnp.float32
    # The float32 guard tolerance (3.5e-4) is not tripped.
    assert int(info.status) in (ssm.EMStatus.MAX_ITERS, ssm.EMStatus.CONVERGED)
    stats, ll = ssm.e_step(p, ys.astype(np.float32))
    assert stats.Sigma.dtype == jnp.float32 and ll.dtype == jnp.float32


# ------------------------------------------------- one path per program, resumed when needed
# An eager fit_em on concrete data compiles one of the steady-state schedule's two paths: the
# gap-aware recursion alone for data with a missing entry, the fast path alone otherwise,
# stopping before an iteration it does not cover and resuming there with the fallback.
# Under jit both paths are in one program, chosen on device (Paths.BOTH). These tests
# hold the eager loop to the jitted one (rtol 1e-12: the same operations in differently
# fused programs; observed equal) and record which programs ran.

N_STEADY = 2400  # >= MIN_STEADY_STEPS: the steady-state schedule runs
FAST, BOTH, GAP_AWARE = _dispatch.Paths.FAST, _dispatch.Paths.BOTH, _dispatch.Paths.GAP_AWARE


def _spy_fit(monkeypatch):
    """Record ``(paths, observed, resumed, first iteration)`` of every loop program fit_em
    runs: the paths its E-step program holds, and ``observed``: the data-only statistics
    computed once, before the loop (the plan carries them)."""
    calls = []
    real = _em._fit_jit

    def spy(params, plan, resume, **kwargs):
        first = 0 if resume is None else int(resume[0].count)
        calls.append((plan.paths, plan.sums is not None, resume is not None, first))
        return real(params, plan, resume, **kwargs)

    monkeypatch.setattr(_em, "_fit_jit", spy)
    return calls


def _assert_fits_equal(a, ia, b, ib, rtol=1e-12):
    assert int(ia.status) == int(ib.status) and int(ia.num_iters) == int(ib.num_iters)
    assert_close(ia.log_likelihoods, ib.log_likelihoods, rtol)
    assert_close(ia.log_likelihood, ib.log_likelihood, rtol)
    for name, x, z in zip(ssm.LGSSM._fields, a, b, strict=True):
        assert_close(x, z, rtol, err_msg=name)


def _jitted_fit(p, ys, **kwargs):
    return jax.jit(lambda p, y: ssm.fit_em(p, y, **kwargs))(p, jnp.asarray(ys))


@pytest.mark.parametrize("tol", [None, pytest.param(0.0, marks=pytest.mark.slow)])
def test_fit_em_resumes_with_the_fallback_where_the_fast_path_stops(monkeypatch, tol):
    """The fast-path program stops before iteration 3 (its predicate patched to fail there);
    fit_em resumes at 3 with the fallback, and the whole fit equals the one-program loop."""
    rng = np.random.default_rng(140)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, N_STEADY + 11)  # a shape of its own: a fresh trace
    p = to_params(exercise_start(model, rng))
    kwargs = dict(num_iters=6, tol=tol)
    b, ib = _jitted_fit(p, ys, **kwargs)
    lls = np.asarray(ib.log_likelihoods)
    assert np.all(np.diff(lls) > 0)
    threshold = 0.5 * (lls[2] + lls[3])

    real_step = _plan.stats_step

    def stats_step(plan, params):
        (s, ll), info = real_step(plan, params)
        if plan.paths is not FAST:
            return (s, ll), info
        # "not covered" from iteration 3 on
        return (s, ll), info._replace(fast_path=info.fast_path & (ll < threshold))

    monkeypatch.setattr(_plan, "stats_step", stats_step)
    calls = _spy_fit(monkeypatch)
    seen = []
    a, ia = ssm.fit_em(p, ys, callback=lambda i, ll: seen.append(int(i)), **kwargs)
    assert calls == [(FAST, True, False, 0), (BOTH, True, True, 3)]
    assert seen == list(range(6))  # every iteration reported once, none twice
    _assert_fits_equal(a, ia, b, ib)


def test_fit_em_resumes_when_the_covariance_does_not_settle(monkeypatch):
    """A start whose covariances never settle (an unobserved unit root): the fast-path
    program stops at iteration 0 and the fit is that of the one-program loop, and to 1e-10
    that of the full recursion (the fallback's steps are full steps there)."""
    rng = np.random.default_rng(141)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, N_STEADY)
    p = to_params(unobserved_unit_root(model))
    kwargs = dict(num_iters=3, update=("Q", "R"))  # A and H keep the unit root unobserved
    calls = _spy_fit(monkeypatch)
    a, ia = ssm.fit_em(p, ys, **kwargs)
    assert calls == [(FAST, True, False, 0), (BOTH, True, True, 0)]
    b, ib = _jitted_fit(p, ys, **kwargs)
    _assert_fits_equal(a, ia, b, ib)
    c, ic = ssm.fit_em(p, ys, steady_state=False, **kwargs)
    _assert_fits_equal(a, ia, c, ic, rtol=1e-10)


def test_fit_em_on_missing_data_compiles_the_gap_aware_path_alone(monkeypatch):
    rng = np.random.default_rng(142)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, N_STEADY)
    ys = np.array(ys)
    ys[rng.uniform(size=ys.shape) < 0.05] = np.nan
    p = to_params(exercise_start(model, rng))
    calls = _spy_fit(monkeypatch)
    a, ia = ssm.fit_em(p, ys, num_iters=3)
    assert calls == [(GAP_AWARE, False, False, 0)]
    b, ib = _jitted_fit(p, ys, num_iters=3)
    _assert_fits_equal(a, ia, b, ib)


def _model_with_extras(rng, inputs: bool):
    """A random 3-state model with offsets ``b, d`` and, with ``inputs``, ``B, D``."""
    base = random_model(rng, 3, 2)
    extras = dict(b=0.03 * rng.standard_normal(3), d=0.3 * rng.standard_normal(2))
    if inputs:
        extras.update(B=0.3 * rng.standard_normal((3, 2)), D=rng.standard_normal((2, 2)))
    return to_params(base)._replace(**{k: jnp.asarray(v) for k, v in extras.items()})


@pytest.mark.parametrize(
    "batch, inputs",
    # the batched cases in the slow suite (8-11 s each); the default suite runs one sequence
    [
        (False, True),
        pytest.param(True, True, marks=pytest.mark.slow),
        pytest.param(True, False, marks=pytest.mark.slow),
    ],
    ids=["inputs", "batch+inputs", "batch+offsets"],
)
def test_eager_fit_em_computes_the_data_sums_once(monkeypatch, batch, inputs):
    """Fully observed data: the eager loop's plan holds the fast path alone and the
    data-only statistics (``D``, and ``U, YU`` of ``v = [u; 1]``) once, before the loop, in
    place of the E-step's own; the jitted loop (traced data) uses the E-step's. With ``R``,
    ``H`` and the input regressions learned (the M-steps that read them) the fits agree to
    round-off (tolerances below)."""
    rng = np.random.default_rng(143 + 2 * batch + inputs)
    p = _model_with_extras(rng, inputs)
    B = 2 if batch else None
    shape = (B, N_STEADY, 2) if batch else (N_STEADY, 2)
    u = jnp.asarray(rng.standard_normal(shape)) if inputs else None
    if batch:
        ys = jnp.stack(
            [
                ssm.sample(jax.random.key(i), p, N_STEADY, inputs=None if u is None else u[i])[1]
                for i in range(B)
            ]
        )
    else:
        ys = ssm.sample(jax.random.key(0), p, N_STEADY, inputs=u)[1]
    start = p._replace(A=0.5 * p.A, Q=2.0 * p.Q, H=p.H + 0.1, R=0.5 * p.R)
    update = ("A", "Q", "H", "R", "b", "d") + (("B", "D") if inputs else ())
    kwargs = dict(num_iters=4, inputs=u, update=update)

    calls = _spy_fit(monkeypatch)
    a, ia = ssm.fit_em(start, ys, **kwargs)
    assert calls == [(FAST, True, False, 0)]
    b, ib = jax.jit(lambda q, y, uu: ssm.fit_em(q, y, **{**kwargs, "inputs": uu}))(start, ys, u)
    assert calls[1:] == [(BOTH, False, False, 0)]
    assert np.all(np.diff(np.asarray(ia.log_likelihoods)) > 0)
    # Normwise tolerances. rtol 1e-11 (observed up to 3e-13, Q in the batch): the two loops'
    # D, U, YU differ in the last bits (the E-step adds the offset back to y - d), and four EM
    # iterations feed that through the joint regressions. R (1e-10, observed 1.1e-11) is D
    # minus the explained part: |D| / |R| ~ 1e3 in these high signal-to-noise models, so the
    # last bits of D show in R a thousandfold.
    _assert_fits_equal(a._replace(R=None), ia, b._replace(R=None), ib, rtol=1e-11)
    assert_close(a.R, b.R, 1e-10, atol_scale=1.0)


def test_em_info_reports_which_path_the_e_step_took():
    """``EMInfo.schedule`` is the last E-step's ScheduleInfo: the fast path with a settled
    transient on a long fully observed series, the gap-aware recursion (fast path not taken,
    the bound still there) with a missing entry, the full recursion (no bound, every step a
    transient step) on a short series. Exact checks."""
    rng = np.random.default_rng(144)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, N_STEADY)
    p = to_params(exercise_start(model, rng))
    T = settle.transient_bound(N_STEADY)

    _, info = ssm.fit_em(p, ys, num_iters=2)
    s = info.schedule
    assert isinstance(s, ssm.ScheduleInfo)
    assert bool(s.fast_path) and int(s.num_transient) == T
    assert 0 < int(s.filter_transient) < T and 0 < int(s.smoother_transient) < T

    gappy = np.array(ys)
    gappy[100, 0] = np.nan
    _, info = ssm.fit_em(p, gappy, num_iters=2)
    s = info.schedule
    assert not bool(s.fast_path) and int(s.num_transient) == T
    assert 0 < int(s.filter_transient) < T

    n = 45
    _, info = ssm.fit_em(p, ys[:n], num_iters=2)
    s = info.schedule
    assert not bool(s.fast_path) and int(s.num_transient) == 0
    assert int(s.filter_transient) == int(s.smoother_transient) == n
