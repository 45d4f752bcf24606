"""The schedule rules (_schedules.dispatch, _schedules.plan): argument checks, the
short-series rule, the wiring.

No numerical tolerance here: the checks are exact.

- ``resolve`` maps ``(method, steady_state)`` to a schedule name and rejects everything else
  with an error that names the argument.
- The short-series rule is checked on the lowered (StableHLO) programs, which are equal
  text for equal computations: with ``steady_state=None`` a series of fewer than
  ``MIN_STEADY_STEPS`` steps lowers to exactly the full recursion's program, one of
  ``MIN_STEADY_STEPS`` steps to exactly the fast path's; ``steady_state=True`` lowers to the
  fast path's (a different, several times longer program) whenever ``transient_bound > 0``.
- ``run`` always returns ``(result, ScheduleInfo)``: the info says which path ran (exact
  checks on a model that settles in a few steps); the EM plan (``prepare_stats``) picks the
  paths from the data, and ``stats_step`` equals ``stats`` (rtol 1e-12: the data-only sums
  come from a program of their own, the same arithmetic; observed equal).
- No argument is silently ignored: every public entry point hands ``method`` and
  ``steady_state`` to ``resolve`` unchanged (a spy on ``resolve``), and each inference
  entry point lowers to exactly the dispatcher's program on the resolved schedule, which
  differs from the other schedules' programs (so the check can fail). Lowering only: no
  XLA compile, so every schedule of every entry point is checked in a few seconds. The
  values of these programs are tested in test_inference.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_close, to_params
from reference import random_model, simulate

import jaxssm as ssm
from jaxssm._args import schedule as _schedule
from jaxssm._schedules import dispatch as _dispatch
from jaxssm._schedules import plan as _plan
from jaxssm._schedules import settle as _settle

VALID = [
    ("sequential", None, "auto"),
    ("sequential", True, "steady"),
    ("sequential", False, "sequential"),
    ("parallel", None, "parallel"),
    ("parallel", False, "parallel"),
]


@pytest.fixture(scope="module")
def fast_problem():
    """D = 3, Dy = 2, N = 45 (a model that settles in a few steps)."""
    rng = np.random.default_rng(0)
    model = random_model(rng, 3, 2, mean_scale=3.0)
    model = model._replace(A=model.A * (0.05 / 0.95), R=model.R * 0.01)
    _, ys = simulate(rng, model, 45)
    return to_params(model), jnp.asarray(ys)


# ---------------------------------------------------------------------------------------------
# resolve
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, steady_state, schedule", VALID)
def test_resolve_table(method, steady_state, schedule):
    assert _dispatch.resolve(method, steady_state).name == schedule


@pytest.mark.parametrize("method", ["associative", "Sequential", "", None, 1, ("sequential",)])
def test_resolve_rejects_bad_method(method):
    with pytest.raises(ValueError, match="method must be 'sequential' or 'parallel', got"):
        _dispatch.resolve(method, None)


@pytest.mark.parametrize("steady_state", ["yes", 1, 0, 1.0, np.bool_(True), "False"])
def test_resolve_rejects_non_bool_steady_state(steady_state):
    with pytest.raises(TypeError, match="steady_state must be None, True or False, got"):
        _dispatch.resolve("sequential", steady_state)


def test_resolve_names_every_schedule():
    assert _dispatch.resolve("parallel", True).name == "parallel_steady"
    assert _dispatch.resolve("parallel", None) == _dispatch.resolve("parallel", False)
    assert _dispatch.resolve("parallel", None).name == "parallel"
    assert [_dispatch.resolve("sequential", s).name for s in (None, True, False)] == [
        "auto",
        "steady",
        "sequential",
    ]


def test_resolve_checks_method_before_steady_state():
    with pytest.raises(ValueError, match="method must be"):
        _dispatch.resolve("bogus", "yes")


# ---------------------------------------------------------------------------------------------
# Every public entry point checks both arguments and passes them on unchanged
# ---------------------------------------------------------------------------------------------


def _entry_points(params, ys):
    """Call each public entry point that takes method/steady_state with those keywords."""
    filtered = ssm.kalman_filter(params, ys, steady_state=False)
    opt = optax.sgd(1e-3)
    return {
        "kalman_filter": lambda **kw: ssm.kalman_filter(params, ys, **kw),
        "rts_smoother": lambda **kw: ssm.rts_smoother(params, ys, **kw),
        "log_likelihood": lambda **kw: ssm.log_likelihood(params, ys, **kw),
        "log_likelihood[B]": lambda **kw: ssm.log_likelihood(params, ys[None], **kw),
        "e_step": lambda **kw: ssm.e_step(params, ys, **kw),
        "fit_em": lambda **kw: ssm.fit_em(params, ys, num_iters=1, **kw),
        "fit_mle": lambda **kw: ssm.fit_mle(params, ys, optimizer=opt, num_iters=1, **kw),
        "rts_smoother_from_filter": lambda **kw: ssm.rts_smoother_from_filter(
            params, filtered, **kw
        ),
    }


ENTRY_POINTS = [
    "kalman_filter",
    "rts_smoother",
    "log_likelihood",
    "log_likelihood[B]",
    "e_step",
    "fit_em",
    "fit_mle",
    "rts_smoother_from_filter",
]
TAKES_STEADY_STATE = [name for name in ENTRY_POINTS if name != "rts_smoother_from_filter"]


@pytest.fixture(scope="module")
def entry_points(fast_problem):
    return _entry_points(*fast_problem)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_reject_bad_method(entry_points, name):
    with pytest.raises(ValueError, match="method must be 'sequential' or 'parallel', got 'fast'"):
        entry_points[name](method="fast")


@pytest.mark.parametrize("name", TAKES_STEADY_STATE)
def test_entry_points_reject_bad_steady_state(entry_points, name):
    with pytest.raises(TypeError, match="steady_state must be None, True or False, got 'yes'"):
        entry_points[name](steady_state="yes")


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_hand_their_arguments_to_resolve(entry_points, name, monkeypatch):
    seen = []

    def spy(method, steady_state, form="cov"):
        seen.append((method, steady_state))
        raise RuntimeError("stop here")  # nothing after resolve needs to run

    monkeypatch.setattr(_schedule, "resolve", spy)
    calls = [dict(method="parallel")]
    if name in TAKES_STEADY_STATE:
        calls += [dict(steady_state=True), dict(steady_state=False), dict()]
    for kw in calls:
        with pytest.raises(RuntimeError, match="stop here"):
            entry_points[name](**kw)
    expected = [(kw.get("method", "sequential"), kw.get("steady_state")) for kw in calls]
    if name == "rts_smoother_from_filter":
        expected = [("parallel", False)]  # a backward pass has no steady-state schedule
    assert seen == expected


# ---------------------------------------------------------------------------------------------
# The inference entry points run the dispatcher's program on the resolved schedule
# ---------------------------------------------------------------------------------------------


def _lower(fn, *args):
    return jax.jit(fn).lower(*args).as_text()


PUBLIC = {
    "kalman_filter": (ssm.kalman_filter, "filter", False),
    "rts_smoother": (ssm.rts_smoother, "smooth", False),
    "log_likelihood": (ssm.log_likelihood, "log_likelihood", False),
    "log_likelihood[B]": (ssm.log_likelihood, "log_likelihood", True),
    "e_step": (ssm.e_step, "stats", False),
    "e_step[B]": (ssm.e_step, "stats", True),
}


def _public_and_schedules(name, N, schedules):
    public, kind, batch = PUBLIC[name]
    params = to_params(random_model(np.random.default_rng(1), 3, 2))
    ys = jnp.zeros((2, N, 2) if batch else (N, 2))
    dispatch = getattr(_dispatch, kind)
    programs = {s: _lower(lambda p, y, s=s: dispatch(p, y, s), params, ys) for s in schedules}
    # The check can fail: the schedules are different programs.
    assert len(set(programs.values())) == len(schedules)

    def lower_public(method, steady_state):
        return _lower(
            lambda p, y: public(p, y, method=method, steady_state=steady_state), params, ys
        )

    return programs, lower_public


@pytest.mark.parametrize("name", PUBLIC)
def test_public_program_is_the_resolved_schedules(name):
    programs, lower_public = _public_and_schedules(name, 45, ("sequential", "steady", "parallel"))
    # N = 45 < MIN_STEADY_STEPS: steady_state=None is the full recursion.
    expected = {"auto": "sequential", "steady": "steady", "sequential": "sequential"}
    expected["parallel"] = "parallel"
    for method, steady_state, schedule in VALID:
        text = lower_public(method, steady_state)
        assert text == programs[expected[schedule]], (method, steady_state)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_default_is_the_fast_path_on_long_series(name):
    n = _dispatch.MIN_STEADY_STEPS
    programs, lower_public = _public_and_schedules(name, n, ("sequential", "steady"))
    assert lower_public("sequential", None) == programs["steady"]
    assert lower_public("sequential", False) == programs["sequential"]


def test_smoother_from_filter_runs_the_method_given(fast_problem):
    params, ys = fast_problem
    filtered = ssm.kalman_filter(params, ys)
    programs = {
        s: _lower(lambda p, f, s=s: _dispatch.smooth_filtered(p, f, s), params, filtered)
        for s in ("sequential", "parallel")
    }
    assert programs["sequential"] != programs["parallel"]
    for method in ("sequential", "parallel"):
        text = _lower(
            lambda p, f, m=method: ssm.rts_smoother_from_filter(p, f, method=m), params, filtered
        )
        assert text == programs[method], method
    default = _lower(lambda p, f: ssm.rts_smoother_from_filter(p, f), params, filtered)
    assert default == programs["sequential"]


# ---------------------------------------------------------------------------------------------
# The short-series rule, on the lowered programs
# ---------------------------------------------------------------------------------------------


def _lowered(kind, schedule, N, D=3, Dy=2):
    params = to_params(random_model(np.random.default_rng(1), D, Dy))
    ys = jnp.zeros((N, Dy))
    fn = getattr(_dispatch, kind)
    return jax.jit(lambda p, y: fn(p, y, schedule)).lower(params, ys).as_text()


@pytest.mark.parametrize("kind", ["filter", "smooth", "log_likelihood", "stats"])
def test_short_series_rule(kind):
    n = _dispatch.MIN_STEADY_STEPS
    assert n == 2048
    below = {s: _lowered(kind, s, n - 1) for s in ("auto", "steady", "sequential")}
    at = {s: _lowered(kind, s, n) for s in ("auto", "steady", "sequential")}
    # The fast path's program is a different one (the check can fail) ...
    assert below["steady"] != below["sequential"]
    assert len(below["steady"]) > 2 * len(below["sequential"])
    # ... None below the threshold runs the full recursion, at the threshold the fast path.
    assert below["auto"] == below["sequential"]
    assert at["auto"] == at["steady"]
    assert at["auto"] != at["sequential"]


@pytest.mark.parametrize("kind", ["filter", "stats"])
def test_steady_state_true_on_short_series(kind):
    # True takes the fast path on any N with transient_bound(N) > 0 (N >= 3), and the full
    # recursion, chosen at trace time, below that.
    assert _settle.transient_bound(3) == 1 and _settle.transient_bound(2) == 0
    for N in (3, 45, 600):
        assert _lowered(kind, "steady", N) != _lowered(kind, "sequential", N), N
        assert _lowered(kind, "auto", N) == _lowered(kind, "sequential", N), N
    for N in (1, 2):
        assert _lowered(kind, "steady", N) == _lowered(kind, "sequential", N), N


def test_max_transient_and_rtol_reach_the_fast_path():
    # Different options, different programs (they are static); the same options, the same.
    base = _lowered("filter", "steady", 600)
    params = to_params(random_model(np.random.default_rng(1), 3, 2))
    ys = jnp.zeros((600, 2))

    def low(**options):
        return jax.jit(lambda p, y: _dispatch.filter(p, y, "steady", **options)).lower(params, ys)

    assert low().as_text() == base
    assert low(max_transient=_settle.DEFAULT_MAX_TRANSIENT).as_text() == base
    assert low(max_transient=64).as_text() != base
    assert low(rtol=1e-6).as_text() != base
    with pytest.raises(ValueError, match="max_transient must be a positive int"):
        low(max_transient=0)


# ---------------------------------------------------------------------------------------------
# The runner's info, the time-sharded placement, the EM plan
# ---------------------------------------------------------------------------------------------


def test_run_returns_the_result_and_which_path_ran(fast_problem):
    params, ys = fast_problem
    N = ys.shape[0]
    T = _settle.transient_bound(N)
    gappy = ys.at[10, 0].set(jnp.nan)
    for kind in _dispatch.Kind:
        # A kind given by its value is the same program.
        programs = {
            _lower(lambda p, y, k=k: _dispatch.run(k, p, y, "sequential"), params, ys)
            for k in (kind, kind.value)
        }
        assert len(programs) == 1, kind
        out, info = _dispatch.run(kind, params, ys, "steady")
        assert isinstance(info, ssm.ScheduleInfo)
        assert bool(info.fast_path) and int(info.num_transient) == T, kind
        assert 0 < int(info.filter_transient) < T, kind
        smoothed = kind in (_dispatch.Kind.SMOOTH, _dispatch.Kind.STATS)
        assert (int(info.smoother_transient) > 0) == smoothed, kind
        # A gap: the gap-aware recursion, the bound and the transients unchanged.
        _, gap = _dispatch.run(kind, params, gappy, "steady")
        assert not bool(gap.fast_path) and int(gap.num_transient) == T, kind
        assert int(gap.filter_transient) == int(info.filter_transient), kind
        # The full recursion: no bound, every step a transient step.
        _, full = _dispatch.run(kind, params, ys, "sequential")
        assert not bool(full.fast_path) and int(full.num_transient) == 0, kind
        assert int(full.filter_transient) == N, kind
        assert int(full.smoother_transient) == (N if smoothed else 0), kind
    # The wrappers return the result alone.
    out, _ = _dispatch.run("filter", params, ys, "steady")
    assert isinstance(_dispatch.filter(params, ys, "steady"), ssm.FilterResult)
    assert_close(_dispatch.filter(params, ys, "steady").means, out.means, 0.0)


def test_run_with_one_path_reports_whether_it_is_the_answer(fast_problem):
    params, ys = fast_problem
    FAST, GAP_AWARE = _dispatch.Paths.FAST, _dispatch.Paths.GAP_AWARE
    both, info = _dispatch.run("log_likelihood", params, ys, "steady")
    fast, fast_info = _dispatch.run("log_likelihood", params, ys, "steady", paths=FAST)
    assert bool(fast_info.fast_path) and float(fast) == float(both)
    gap, gap_info = _dispatch.run("log_likelihood", params, ys, "steady", paths=GAP_AWARE)
    assert not bool(gap_info.fast_path)
    assert_close(gap, both, 1e-12)
    # A batch: the fast path for every sequence, the largest transients.
    _, batch = _dispatch.run("stats", params, jnp.stack([ys, ys.at[3, 1].set(jnp.nan)]), "steady")
    assert not bool(batch.fast_path) and int(batch.num_transient) == int(info.num_transient)


def test_place_keeps_every_schedule_off_a_time_sharded_array(fast_problem):
    # One device here: nothing is time-sharded (the routed case: tests/sharding_devices.py).
    params, ys = fast_problem
    for name in ("auto", "steady", "sequential", "parallel", "parallel_steady"):
        schedule = _dispatch.place(name, params, ys)
        assert schedule == _schedule.by_name(name) and schedule.name == name
        assert not schedule.time_sharded and schedule.mesh is None
    with pytest.raises(ValueError, match="schedule must be one of"):
        _schedule.by_name("time_sharded")


def test_prepare_stats_picks_the_paths_from_the_data(fast_problem):
    params, ys = fast_problem
    P = _dispatch.Paths
    steady = _schedule.resolve("sequential", True)
    plan = _plan.prepare_stats(params, ys, None, steady)
    assert plan.paths is P.FAST and plan.fast is None and set(plan.sums) == {"D"}
    gappy = ys.at[4, 1].set(jnp.nan)
    plan_gap = _plan.prepare_stats(params, gappy, None, steady)
    assert plan_gap.paths is P.GAP_AWARE and plan_gap.sums is None
    # No fast path on this schedule: the data sums all the same, the paths moot.
    plan_full = _plan.prepare_stats(params, ys, None, _schedule.resolve("sequential", False))
    assert plan_full.paths is P.BOTH and plan_full.fast is None and plan_full.sums is not None
    seen = []
    jax.jit(lambda p, y: seen.append(_plan.prepare_stats(p, y, None, steady)))(params, ys)
    assert seen[0].paths is P.BOTH and seen[0].sums is None and seen[0].fast is not None
    with pytest.raises(ValueError, match="no observed entry"):
        _plan.prepare_stats(params, jnp.full_like(ys, jnp.nan), None, steady)
    # stats_step equals stats, on every plan; the resumed plan holds both paths.
    both = _plan.with_fallback(plan)
    assert both.paths is P.BOTH and both.sums is plan.sums and both.fast is not None
    for p, data in ((plan, ys), (plan_gap, gappy), (plan_full, ys), (both, ys)):
        (st, ll), info = _plan.stats_step(p, params)
        ref, ref_ll = _dispatch.stats(params, data, p.schedule)
        assert bool(info.fast_path) == (p.paths is not P.GAP_AWARE and p is not plan_full)
        assert_close(ll, ref_ll, 1e-12)
        for name in ("Sigma", "Phi", "B", "C", "D", "m0_smoothed", "P0_smoothed"):
            assert_close(getattr(st, name), getattr(ref, name), 1e-12, err_msg=name)
