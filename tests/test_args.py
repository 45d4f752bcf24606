"""The argument layer (jaxssm._args): the one count rule, the one prologue, the callback guard.

- ``check_int`` is the only check of a count: every public argument that is one (``num_iters``,
  ``num_steps``, ``num_chunks``, ``max_transient``, ``dim``, ...) is named in its message and
  refuses bools, floats, non-positive values and traced values the same way.
- ``prologue`` checks ``method``/``steady_state``, then ``params``, then ``ys``, then
  ``inputs``: with several bad arguments the first in that order is reported, by the
  prologue itself and by every entry point.
- The callback guard keeps a failure in the guard, not in the module: two guards do not see
  each other's failures, and a compiled loop reused by a second call reports its own.

No numerical tolerance: everything here is exact.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import to_params
from reference import random_model, simulate

import jaxssm as ssm
from jaxssm import datasets, priors
from jaxssm._args import callbacks as _callbacks
from jaxssm._args import schedule as _schedule
from jaxssm._args.checks import IntTypeError, check_int
from jaxssm._args.prologue import Prepared, prologue
from jaxssm._schedules import settle as _settle

KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def problem():
    """D = 2, Dy = 2, N = 6."""
    rng = np.random.default_rng(3)
    model = random_model(rng, 2, 2)
    return to_params(model), jnp.asarray(simulate(rng, model, 6)[1])


# ---------------------------------------------------------------------------------------------
# check_int: one rule for every count
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("good", [1, 7, np.int64(3), np.int32(2), jnp.asarray(4)])
def test_check_int_accepts_integers_and_returns_python_ints(good):
    out = check_int(good, "num_steps")
    assert type(out) is int and out == int(good)


@pytest.mark.parametrize("bad", [0, -3, np.int64(0)])
def test_check_int_rejects_small_values_naming_the_argument(bad):
    with pytest.raises(
        ValueError, match=r"^num_iters must be a positive int \(num_iters must be >= 1"
    ) as info:
        check_int(bad, "num_iters")
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize("bad", [True, False, np.bool_(True), 2.0, 1.5, None, "3", jnp.ones(2)])
def test_check_int_rejects_non_integers_naming_the_argument(bad):
    with pytest.raises(
        IntTypeError,
        match=r"^max_transient must be a positive int \(max_transient must be a Python int",
    ):
        check_int(bad, "max_transient")


def test_int_type_error_is_both_a_type_error_and_a_value_error():
    # Callers documented one or the other for a non-int count; both contracts hold.
    for error in (TypeError, ValueError):
        with pytest.raises(error):
            check_int(2.5, "dim")


def test_check_int_rejects_traced_values():
    with pytest.raises(IntTypeError, match="num_steps must be a positive int.*traced value"):
        jax.jit(lambda n: check_int(n, "num_steps"))(3)


def test_check_int_minimum_and_hint():
    assert check_int(0, "num_derivatives", minimum=0) == 0
    with pytest.raises(
        ValueError, match=r"num_derivatives must be a non-negative int .*>= 0, got -1"
    ):
        check_int(-1, "num_derivatives", minimum=0)
    with pytest.raises(ValueError, match=r"an int >= 2 .*got 1\); pass two or more$"):
        check_int(1, "n", minimum=2, hint="pass two or more")


def _counts(problem):
    """Each public count argument, called with a bad value: ``(call(bad), name)``."""
    params, ys = problem
    return {
        "fit_em": (lambda v: ssm.fit_em(params, ys, num_iters=v), "num_iters"),
        "fit_mle": (
            lambda v: ssm.fit_mle(params, ys, optimizer=optax.sgd(1e-3), num_iters=v),
            "num_iters",
        ),
        "forecast": (lambda v: ssm.forecast(params, ys, v), "num_steps"),
        "forecast_sample": (lambda v: ssm.forecast_sample(KEY, params, ys, v), "num_steps"),
        "sample": (lambda v: ssm.sample(KEY, params, v), "num_steps"),
        "chunked_filter": (
            lambda v: ssm.sharding.chunked_filter(params, ys, num_chunks=v),
            "num_chunks",
        ),
        "transient_bound": (lambda v: _settle.transient_bound(100, v), "max_transient"),
        "sarcos_stand_in": (lambda v: datasets.sarcos_stand_in(v), "num_steps"),
        "iwp": (lambda v: priors.iwp(1, 0.1, dim=v), "dim"),
    }


COUNTS = ["fit_em", "fit_mle", "forecast", "forecast_sample", "sample", "chunked_filter"]
COUNTS += ["transient_bound", "sarcos_stand_in", "iwp"]


@pytest.mark.parametrize("name", COUNTS)
@pytest.mark.parametrize(
    "bad, error", [(0, ValueError), (-2, ValueError), (True, IntTypeError), (2.0, IntTypeError)]
)
def test_every_count_argument_follows_the_one_rule(problem, name, bad, error):
    call, argname = _counts(problem)[name]
    with pytest.raises(error, match=rf"^{argname} must be a positive int \({argname} must be"):
        call(bad)


def test_a_traced_count_is_refused_by_the_entry_point(problem):
    params, _ = problem
    with pytest.raises(IntTypeError, match="num_steps must be a positive int.*traced"):
        jax.jit(lambda n: ssm.sample(KEY, params, n))(3)


# ---------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------


def test_schedule_values():
    s = _schedule.resolve("parallel", True)
    assert s == _schedule.Schedule("parallel", True) and s.parallel and s.name == "parallel_steady"
    assert not _schedule.resolve("sequential", True).parallel
    assert _schedule.is_parallel(s) and _schedule.is_parallel("parallel")
    assert _schedule.schedule_name("auto") == "auto"
    assert hash(_schedule.resolve("parallel", None)) == hash(_schedule.resolve("parallel", False))


# ---------------------------------------------------------------------------------------------
# The prologue: one order of checks
# ---------------------------------------------------------------------------------------------

BAD_METHOD = ("method must be 'sequential' or 'parallel'", ValueError)
BAD_PARAMS = ("params must be a jaxssm.LGSSM", TypeError)
BAD_YS = (r"ys must have shape \[N, Dy\]", ValueError)
BAD_INPUTS = ("inputs were given but params has neither B nor D", ValueError)


def test_prologue_returns_checked_arguments(problem):
    params, ys = problem
    out = prologue(params, np.asarray(ys), method="parallel", steady_state=None)
    assert isinstance(out, Prepared)
    assert out.schedule == _schedule.Schedule("parallel", False)
    assert isinstance(out.ys, jax.Array) and out.inputs is None
    assert prologue(params).schedule is None and prologue(params).ys is None
    with pytest.raises(TypeError, match="method= or schedule="):
        prologue(params, method="sequential", schedule=_schedule.resolve("sequential", None))


def _bad(problem):
    params, ys = problem
    return dict(
        params=(tuple(params), params),
        ys=(ys[:, :1], ys),
        inputs=(jnp.zeros((ys.shape[0], 1)), None),
        method=("fast", "sequential"),
    )


# Each case: the bad arguments, and the error reported (the first in the prologue's order).
ORDER = [
    (("method", "params"), BAD_METHOD),
    (("method", "ys", "inputs"), BAD_METHOD),
    (("params", "ys"), BAD_PARAMS),
    (("params", "inputs"), BAD_PARAMS),
    (("ys", "inputs"), BAD_YS),
    (("inputs",), BAD_INPUTS),
]
ORDER_IDS = ["+".join(bad) for bad, _ in ORDER]


@pytest.mark.parametrize("bad, expected", ORDER, ids=ORDER_IDS)
def test_prologue_reports_the_first_bad_argument_in_order(problem, bad, expected):
    values = {name: pair[1 if name not in bad else 0] for name, pair in _bad(problem).items()}
    with pytest.raises(expected[1], match=expected[0]):
        prologue(values["params"], values["ys"], values["inputs"], method=values["method"])


def _entry_points(problem):
    params, ys = problem
    filtered = ssm.kalman_filter(params, ys)
    opt = optax.sgd(1e-3)
    return {
        "kalman_filter": lambda p, y, **kw: ssm.kalman_filter(p, y, **kw),
        "rts_smoother": lambda p, y, **kw: ssm.rts_smoother(p, y, **kw),
        "log_likelihood": lambda p, y, **kw: ssm.log_likelihood(p, y, **kw),
        "e_step": lambda p, y, **kw: ssm.e_step(p, y, **kw),
        "posterior_sample": lambda p, y, **kw: ssm.posterior_sample(KEY, p, y, **kw),
        "forecast": lambda p, y, **kw: ssm.forecast(p, y, 2, **kw),
        "forecast_sample": lambda p, y, **kw: ssm.forecast_sample(KEY, p, y, 2, **kw),
        "fit_em": lambda p, y, **kw: ssm.fit_em(p, y, num_iters=1, **kw),
        "fit_mle": lambda p, y, **kw: ssm.fit_mle(p, y, optimizer=opt, num_iters=1, **kw),
        "filter_diagnostics": lambda p, y, **kw: ssm.filter_diagnostics(p, y, filtered, **kw),
    }


ENTRY_POINTS = [
    "kalman_filter",
    "rts_smoother",
    "log_likelihood",
    "e_step",
    "posterior_sample",
    "forecast",
    "forecast_sample",
    "fit_em",
    "fit_mle",
    "filter_diagnostics",
]


@pytest.mark.parametrize("name", ENTRY_POINTS)
@pytest.mark.parametrize("bad, expected", ORDER, ids=ORDER_IDS)
def test_entry_points_report_the_prologues_first_error(problem, name, bad, expected):
    if "method" in bad and name == "filter_diagnostics":
        return  # no method argument
    values = {n: pair[1 if n not in bad else 0] for n, pair in _bad(problem).items()}
    call = _entry_points(problem)[name]
    kwargs = dict(inputs=values["inputs"])
    if name != "filter_diagnostics":
        kwargs["method"] = values["method"]
    with pytest.raises(expected[1], match=expected[0]):
        call(values["params"], values["ys"], **kwargs)


def test_prologue_options_keep_their_place(problem):
    params, ys = problem
    with_input = params._replace(B=jnp.zeros((2, 1)))
    varying = params._replace(A=jnp.stack([params.A] * ys.shape[0]))
    # plain: checked after params, before ys.
    with pytest.raises(ValueError, match="x supports the model without inputs"):
        prologue(with_input, ys[:, :1], plain="x")
    # time_invariant: after ys (whose length the time-varying A must match), before inputs.
    with pytest.raises(ValueError, match="time-varying A"):
        prologue(varying, ys[:-1], time_invariant="forecast")
    with pytest.raises(ValueError, match="forecast needs the model of the steps after N"):
        prologue(varying, ys, jnp.zeros((6, 1)), time_invariant="forecast")
    # update: absent input gains start at zero before the inputs are checked against them.
    out = prologue(params, ys, jnp.zeros((6, 3)), update=("B",))
    assert out.params.B.shape == (2, 3) and out.inputs.shape == (6, 3)
    with pytest.raises(ValueError, match="update names 'B', an input gain, but no inputs"):
        prologue(params, ys, update=("B",))
    # num_steps: the length of a series to make, in place of ys.
    with pytest.raises(ValueError, match=r"N = 5 \(from num_steps\)"):
        prologue(varying, num_steps=5)
    assert prologue(with_input, inputs=jnp.zeros((4, 1)), num_steps=4).inputs.shape == (4, 1)
    # check_values=False: shapes only.
    assert prologue(params._replace(Q=-params.Q), check_values=False).params.Q[0, 0] < 0


def test_fit_checks_method_before_its_loop_options_and_those_before_params(problem):
    params, ys = problem
    with pytest.raises(ValueError, match=BAD_METHOD[0]):
        ssm.fit_em(params, ys, num_iters=0, tol=-1.0, method="fast")
    with pytest.raises(ValueError, match="num_iters"):
        ssm.fit_em(tuple(params), ys, num_iters=0)
    with pytest.raises(ValueError, match="tol"):
        ssm.fit_em(tuple(params), ys, num_iters=1, tol=-1.0)
    with pytest.raises(ValueError, match=BAD_METHOD[0]):
        ssm.fit_mle(params, ys, optimizer=None, num_iters=0, method="fast")
    with pytest.raises(TypeError, match="optimizer"):
        ssm.fit_mle(tuple(params), ys, optimizer=None, num_iters=1)


# ---------------------------------------------------------------------------------------------
# The callback guard holds no module state
# ---------------------------------------------------------------------------------------------


class _Boom(Exception):
    pass


def _boom_a(i, ll):
    raise _Boom("a failed")


def _boom_b(i, ll):
    raise _Boom("b failed")


def test_callbacks_module_holds_no_mutable_state():
    mutable = (dict, list, set, bytearray)
    state = {
        name: type(value).__name__
        for name, value in vars(_callbacks).items()
        if isinstance(value, mutable) and not name.startswith("__")
    }
    assert not state, state


def test_two_guards_do_not_see_each_others_failures():
    a = _callbacks.guard_callback("EM iteration", 3, _boom_a, False)
    b = _callbacks.guard_callback("EM iteration", 3, _boom_b, False)
    assert a != b
    with pytest.raises(_callbacks.CallbackError, match="_boom_a raised _Boom at EM iteration 1/3"):
        a(0, 1.0)
    assert a.failure is not None and b.failure is None

    def fails_otherwise():
        raise RuntimeError("something else: " + a.failure[0])

    # b's run fails with a's message in its text, but b recorded nothing: not a CallbackError.
    with pytest.raises(RuntimeError, match="something else") as info:
        _callbacks.run_with_callback(b, fails_otherwise)
    assert not isinstance(info.value, _callbacks.CallbackError)
    # A guard's own failure becomes a CallbackError chained to the user's exception.
    with pytest.raises(_callbacks.CallbackError, match=re.escape("a failed")) as info:
        _callbacks.run_with_callback(a, lambda: a(1, 2.0))
    assert isinstance(info.value.__cause__, _Boom)
    assert a.failure is None  # cleared after the run


def test_equal_guards_share_the_record_of_the_loop_that_ran():
    first = _callbacks.GuardedCallback("MLE step", 2, _boom_a, False)
    second = _callbacks.GuardedCallback("MLE step", 2, _boom_a, False)
    assert first == second and hash(first) == hash(second)
    with pytest.raises(_callbacks.CallbackError):
        first(0, 1.0)  # the compiled loop calls the guard it was traced with
    assert second.failure is not None and second.failure[1] is first.failure[1]
    second.clear()
    assert first.failure is None


def test_a_reused_loop_reports_each_calls_failure(problem):
    # The second call reuses the first call's compiled loop (equal guards): its failure is
    # still a CallbackError chained to its own exception.
    params, ys = problem
    seen = []

    def fails_late(i, ll):
        seen.append(int(i))
        if int(i) == 1:
            raise _Boom(f"failure {len(seen)}")

    for expected in ("failure 2", "failure 4"):
        with pytest.raises(ssm.CallbackError, match=expected) as info:
            ssm.fit_em(params, ys, num_iters=3, callback=fails_late)
        assert isinstance(info.value.__cause__, _Boom)
        assert str(info.value.__cause__) == expected
