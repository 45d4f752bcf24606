"""Edge inputs that must give a correct result or a clear error, never a silent wrong number.

Scale invariance (float64). Scaling ``m0, y`` by ``s`` and ``P0, Q, R`` by ``s^2`` changes
nothing but units, so ``log p(y)`` shifts by exactly ``-N Dy log s``. Tolerance: rtol 1e-12
of ``|log p(y)|`` (plus 1e-9 absolute): both sides are sums of N terms of the same
round-off size (about 1e-15 relative each); a fast path that misjudges convergence at an
extreme scale is off by about a nat (0.6 here before the fix).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import to_params
from reference import random_model, simulate

import jaxssm as ssm
from jaxssm._schedules import settle as _settle

SCHEDULES = {
    "steady": dict(steady_state=True),
    "full": dict(steady_state=False),
    "parallel": dict(method="parallel"),
}


def _scaled(params, ys, s):
    return (
        params._replace(
            m0=params.m0 * s, P0=params.P0 * s**2, Q=params.Q * s**2, R=params.R * s**2
        ),
        ys * s,
    )


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("s", [1e100, 1e-90])
def test_log_likelihood_is_scale_invariant(schedule, s):
    rng = np.random.default_rng(3)
    model = random_model(rng, 3, 2)
    N = 64 if schedule == "parallel" else 600
    params = to_params(model)
    ys = jnp.asarray(simulate(rng, model, N)[1])
    kw = SCHEDULES[schedule]
    ref = float(ssm.log_likelihood(params, ys, **kw))
    p_s, ys_s = _scaled(params, ys, s)
    got = float(ssm.log_likelihood(p_s, ys_s, **kw))
    expected = ref - N * ys.shape[1] * np.log(s)
    assert abs(got - expected) <= 1e-12 * abs(expected) + 1e-9, (got, expected)
    if schedule == "steady":  # positive control: the fast path ran at this scale
        T = _settle.transient_bound(N)
        fs = _settle.filter_side(p_s, T)
        assert bool(fs.converged) and int(fs.transient) > 0


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("where", ["params", "ys"])
def test_half_precision_is_a_clear_type_error(dtype, where):
    rng = np.random.default_rng(0)
    model = random_model(rng, 2, 2)
    params, ys = to_params(model), jnp.asarray(simulate(rng, model, 5)[1])
    if where == "params":
        params, name = params._replace(Q=params.Q.astype(dtype)), "Q"
    else:
        ys, name = ys.astype(dtype), "ys"
    with pytest.raises(TypeError, match=rf"^{name} must have a real floating dtype"):
        ssm.kalman_filter(params, ys)


# --- callbacks that raise (issue 16) ------------------------------------------------------


class _Boom(Exception):
    pass


def _raise_at_second(i, ll):
    if int(i) >= 1:
        raise _Boom("user code failed")


def _fits():
    import optax

    rng = np.random.default_rng(1)
    model = random_model(rng, 2, 2)
    params, ys = to_params(model), jnp.asarray(simulate(rng, model, 8)[1])
    return {
        "fit_em": (lambda **kw: ssm.fit_em(params, ys, num_iters=3, **kw), "EM iteration 2/3"),
        "fit_mle": (
            lambda **kw: ssm.fit_mle(params, ys, optimizer=optax.sgd(1e-3), num_iters=3, **kw),
            "MLE step 2/3",
        ),
    }


@pytest.mark.parametrize("fit, progress", [("fit_em", False), ("fit_em", True), ("fit_mle", False)])
def test_raising_callback_is_named_and_chained(fit, progress):
    run, where = _fits()[fit]
    with pytest.raises(ssm.CallbackError) as info:
        run(callback=_raise_at_second, progress=progress)
    message = str(info.value)
    assert message.startswith("callback _raise_at_second raised _Boom at " + where), message
    assert "user code failed" in message
    assert isinstance(info.value.__cause__, _Boom)
    assert isinstance(info.value, RuntimeError)
    # The next call with a good callback runs normally (nothing left over from the failure).
    seen = []
    run(callback=lambda i, ll: seen.append(int(i)), progress=progress)
    assert seen == [0, 1, 2]


# --- value checks under jit / vmap: ssm.check_values with checkify ------------------------

BAD_VALUES = {
    "Q indefinite": dict(Q=-jnp.eye(2)),
    "Q asymmetric": dict(Q=jnp.array([[1.0, 0.5], [0.0, 1.0]])),
    "R indefinite": dict(R=jnp.diag(jnp.array([1.0, -1e-3]))),
    "P0 nan": dict(P0=jnp.full((2, 2), jnp.nan)),
    "A nan": dict(A=jnp.array([[0.5, jnp.nan], [0.0, 0.5]])),
    "m0 inf": dict(m0=jnp.array([jnp.inf, 0.0])),
    "H nan": dict(H=jnp.full((2, 2), jnp.nan)),
}


def _checked_loglik(params, ys):
    ssm.check_values(params, ys)
    return ssm.log_likelihood(params, ys)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(4)
    model = random_model(rng, 2, 2)
    return to_params(model), jnp.asarray(simulate(rng, model, 6)[1])


@pytest.mark.parametrize("case", BAD_VALUES)
def test_check_values_under_jit_names_the_argument(small, case):
    from jax.experimental import checkify

    params, ys = small
    bad = params._replace(**BAD_VALUES[case])
    name = case.split()[0]
    err, _ = checkify.checkify(jax.jit(_checked_loglik))(bad, ys)
    assert err.get() is not None and err.get().startswith(f"{name} must be"), err.get()
    with pytest.raises(ValueError, match=rf"^{name} must be"):  # eager: the same rule
        ssm.check_values(bad, ys)


def test_check_values_under_jit_and_vmap_passes_good_input(small):
    from jax.experimental import checkify

    params, ys = small
    err, ll = checkify.checkify(jax.jit(_checked_loglik))(params, ys)
    assert err.get() is None
    np.testing.assert_allclose(float(ll), float(ssm.log_likelihood(params, ys)), rtol=1e-13)
    # A singular PSD Q (round-off eigenvalue) passes under jit too.
    v = jnp.array([0.3, -1.7])
    err, _ = checkify.checkify(jax.jit(_checked_loglik))(params._replace(Q=jnp.outer(v, v)), ys)
    assert err.get() is None
    batch = jnp.stack([ys, ys.at[2, 1].set(jnp.inf), ys.at[0, 0].set(jnp.nan)])
    err, _ = checkify.checkify(jax.vmap(_checked_loglik, in_axes=(None, 0)))(params, batch)
    assert "ys must be finite or NaN" in err.get()


def test_check_values_without_checkify_is_not_silent(small):
    params, ys = small
    with pytest.raises(ValueError, match="checkify"):
        jax.jit(_checked_loglik)(params, ys)


# --- bad values in every argument, at every entry point (eager: a clear error) ------------


def _entry_points():
    import optax

    key = jax.random.PRNGKey(0)
    return {
        "kalman_filter": lambda p, y: ssm.kalman_filter(p, y),
        "rts_smoother": lambda p, y: ssm.rts_smoother(p, y),
        "log_likelihood": lambda p, y: ssm.log_likelihood(p, y),
        "e_step": lambda p, y: ssm.e_step(p, y),
        "fit_em": lambda p, y: ssm.fit_em(p, y, num_iters=1),
        "fit_mle": lambda p, y: ssm.fit_mle(p, y, optimizer=optax.sgd(1e-3), num_iters=1),
        "posterior_sample": lambda p, y: ssm.posterior_sample(key, p, y),
        "forecast": lambda p, y: ssm.forecast(p, y, 2),
        "check_values": lambda p, y: ssm.check_values(p, y),
        "sample": lambda p, y: ssm.sample(key, p, 3),  # params only
    }


NAN, INF = float("nan"), float("inf")
BAD_INPUTS = {
    # name: (replace params fields, replace ys (a function) or None, error, message start)
    "m0 nan": (dict(m0=jnp.array([NAN, 0.0])), None, ValueError, "m0 must be finite"),
    "P0 nan": (dict(P0=jnp.array([[NAN, 0], [0, 1.0]])), None, ValueError, "P0 must be finite"),
    "A inf": (dict(A=jnp.array([[INF, 0], [0, 0.5]])), None, ValueError, "A must be finite"),
    "Q nan": (dict(Q=jnp.full((2, 2), NAN)), None, ValueError, "Q must be finite"),
    "H nan": (dict(H=jnp.array([[1.0, NAN], [0, 1]])), None, ValueError, "H must be finite"),
    "R -inf": (dict(R=jnp.array([[-INF, 0], [0, 1.0]])), None, ValueError, "R must be finite"),
    "Q indefinite": (dict(Q=jnp.diag(jnp.array([1.0, -0.1]))), None, ValueError, "Q must be sym"),
    "R asymmetric": (dict(R=jnp.array([[1.0, 0.3], [0, 1]])), None, ValueError, "R must be sym"),
    "P0 negative": (dict(P0=-jnp.eye(2)), None, ValueError, "P0 must be sym"),
    "A float16": (dict(A=jnp.eye(2, dtype=jnp.float16)), None, TypeError, "A must have a real"),
    "ys inf": ({}, lambda y: y.at[2, 1].set(INF), ValueError, "ys must be finite or NaN"),
    "ys int": ({}, lambda y: y.astype(jnp.int32), TypeError, "ys must have a real floating"),
    "ys float32": ({}, lambda y: y.astype(jnp.float32), TypeError, "ys must have the param"),
    "ys columns": ({}, lambda y: y[:, :1], ValueError, "ys must have shape"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
@pytest.mark.parametrize("entry", list(_entry_points()))
def test_bad_input_is_a_clear_error_everywhere(small, entry, case):
    params, ys = small
    fields, change_ys, error, start = BAD_INPUTS[case]
    if entry == "sample" and change_ys is not None:
        pytest.skip("sample takes no observations")
    bad_params = params._replace(**fields)
    bad_ys = ys if change_ys is None else change_ys(ys)
    with pytest.raises(error) as info:
        _entry_points()[entry](bad_params, bad_ys)
    assert str(info.value).startswith(start), str(info.value)


def test_ys_inf_names_the_first_bad_index(small):
    params, ys = small
    with pytest.raises(ValueError, match=r"got inf at index \(2, 1\)"):
        ssm.log_likelihood(params, ys.at[2, 1].set(INF).at[4, 0].set(-INF))
    batch = jnp.stack([ys, ys.at[1, 0].set(-INF)])
    with pytest.raises(ValueError, match=r"got -inf at index \(1, 1, 0\)"):
        ssm.log_likelihood(params, batch)


@pytest.mark.parametrize(
    "name, value, error, match",
    [
        ("update", (), ValueError, "update must name at least one"),
        ("update", {"A": True}, TypeError, r"update\[.A.\] must be .full., .diagonal."),
        ("tol", True, TypeError, "tol must be None or a finite float"),
        ("tol", -1.0, ValueError, "tol must be None or a finite float"),
        ("tol", float("nan"), ValueError, "tol must be None or a finite float"),
        ("num_iters", 0, ValueError, "num_iters must be a positive int"),
        ("num_iters", True, TypeError, "num_iters must be a positive int"),
        ("num_iters", 2.0, TypeError, "num_iters must be a positive int"),
        ("callback", "print", TypeError, "callback must be callable"),
    ],
)
def test_fit_em_argument_rules(small, name, value, error, match):
    params, ys = small
    kw = dict(num_iters=1) | {name: value}
    with pytest.raises(error, match=match):
        ssm.fit_em(params, ys, **kw)


@pytest.mark.parametrize("name", ["P0", "Q", "R"])
def test_fit_mle_refuses_to_train_a_singular_covariance(small, name):
    """Its Cholesky parametrisation would start from NaN: a clear error instead."""
    import optax

    params, ys = small
    singular = params._replace(**{name: jnp.diag(jnp.array([1.0, 0.0]))})
    with pytest.raises(ValueError, match=rf"^{name} must be positive definite to be trained"):
        ssm.fit_mle(singular, ys, optimizer=optax.sgd(1e-3), num_iters=1, update=(name,))
    with pytest.raises(ValueError, match=rf"^{name} must be positive definite to be trained"):
        ssm.to_unconstrained(singular, update=(name,))
    # Held fixed, a singular covariance is fine (here Q or R singular, P0 singular: all valid).
    other = "A"
    _, info = ssm.fit_mle(singular, ys, optimizer=optax.sgd(1e-3), num_iters=1, update=(other,))
    assert np.isfinite(float(info.log_likelihood))
