"""Bad input gets a clear error naming the argument and the expected shape or dtype.

Also the one ``update=`` rule shared by m_step, fit_em, fit_mle and to_unconstrained, and the
``steady_state`` argument of every inference and learning entry point. The one numeric check,
log_likelihood of a batch vs the sum over its sequences, is held to rtol 1e-13: the same
filter vmapped vs one sequence at a time, then a sum of four terms (a few ulps).
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import to_params
from reference import random_model

import jaxssm as ssm
from jaxssm._args import checks as _checks


@pytest.fixture
def good():
    model = random_model(np.random.default_rng(0), 3, 2)
    return to_params(model), jnp.zeros((5, 2))


# Single-sequence entry points: a leading batch axis is an error that points to vmap.
SINGLE_SEQUENCE = [ssm.kalman_filter, ssm.rts_smoother]


@pytest.mark.parametrize("fn", SINGLE_SEQUENCE)
@pytest.mark.parametrize(
    "shape, pattern",
    [
        ((5, 3), r"ys must have shape \[N, Dy\] with Dy = 2 \(from H\), got shape \(5, 3\)"),
        ((), r"ys must have shape \[N, Dy\].*got shape \(\) \(ndim 0\)"),
        ((5,), r"ys must have shape \[N, Dy\].*got shape \(5,\) \(ndim 1\)"),
        ((2, 2, 5, 2), r"ys must have shape \[N, Dy\].*\(ndim 4\)"),
        ((4, 5, 2), r"ys must have shape \[N, Dy\].*\(ndim 3\).*vmap"),
        ((0, 2), r"ys must hold at least one step \(N >= 1\)"),
    ],
)
def test_bad_ys_shape(good, fn, shape, pattern):
    params, _ = good
    with pytest.raises(ValueError, match=pattern):
        fn(params, jnp.zeros(shape))


# log_likelihood (like e_step, fit_em and fit_mle) also takes a batch [B, N, Dy].
@pytest.mark.parametrize(
    "shape, pattern",
    [
        (
            (5, 3),
            r"ys must have shape \[N, Dy\] or \[B, N, Dy\] with Dy = 2 \(from H\), "
            r"got shape \(5, 3\)",
        ),
        ((4, 5, 3), r"ys must have shape \[N, Dy\] or \[B, N, Dy\] with Dy = 2 \(from H\)"),
        ((), r"ys must have shape \[N, Dy\] or \[B, N, Dy\].*got shape \(\) \(ndim 0\)"),
        ((5,), r"ys must have shape \[N, Dy\] or \[B, N, Dy\].*\(ndim 1\)"),
        ((2, 2, 5, 2), r"ys must have shape \[N, Dy\] or \[B, N, Dy\].*\(ndim 4\)"),
        ((0, 2), r"ys must hold at least one step \(N >= 1\)"),
        ((3, 0, 2), r"ys must hold at least one step \(N >= 1\)"),
    ],
)
def test_bad_ys_shape_batched_entry_point(good, shape, pattern):
    params, _ = good
    with pytest.raises(ValueError, match=pattern):
        ssm.log_likelihood(params, jnp.zeros(shape))


def test_log_likelihood_accepts_a_batch(good):
    """A batch [B, N, Dy] is B sequences: the sum of their log-likelihoods."""
    params, _ = good
    batch = jax.random.normal(jax.random.PRNGKey(1), (4, 5, 2), jnp.float64)
    each = sum(float(ssm.log_likelihood(params, y)) for y in batch)
    np.testing.assert_allclose(float(ssm.log_likelihood(params, batch)), each, rtol=1e-13)


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("A", jnp.zeros((3, 2)), r"A must be a square matrix \[D, D\], got shape \(3, 2\)"),
        ("Q", jnp.eye(4), r"Q must have shape \[D, D\] = \(3, 3\), got shape \(4, 4\)"),
        ("Q", jnp.zeros((3, 4)), r"Q must have shape \[D, D\] = \(3, 3\), got shape \(3, 4\)"),
        ("H", jnp.zeros((2, 4)), r"H must have shape \[Dy, D\] with D = 3 \(from A\), got shape"),
        ("R", jnp.eye(3), r"R must have shape \[Dy, Dy\] = \(2, 2\), got shape \(3, 3\)"),
        ("m0", jnp.zeros((3, 1)), r"m0 must have shape \[D\] = \(3,\), got shape \(3, 1\)"),
        ("P0", jnp.eye(2), r"P0 must have shape \[D, D\] = \(3, 3\), got shape \(2, 2\)"),
    ],
)
def test_bad_param_shapes(good, field, value, pattern):
    params, ys = good
    with pytest.raises(ValueError, match=pattern):
        ssm.kalman_filter(params._replace(**{field: value}), ys)


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("Q", np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "Q must be symmetric"),
        (
            "R",
            -np.eye(2),
            r"R must be symmetric positive definite or semi-definite.*"
            r"smallest eigenvalue -1",
        ),
        (
            "P0",
            np.diag([1.0, -1e-6, 1.0]),
            r"P0 must be symmetric positive definite or "
            r"semi-definite.*smallest eigenvalue -1e-06",
        ),
        ("Q", np.full((3, 3), np.nan), r"Q must be finite, got nan at index \(0, 0\)"),
        ("Q", np.diag([1.0, np.inf, 1.0]), r"Q must be finite, got inf at index \(1, 1\)"),
        ("A", np.diag([1.0, np.nan, 1.0]), r"A must be finite, got nan at index \(1, 1\)"),
        ("m0", np.array([0.0, 0.0, np.nan]), r"m0 must be finite, got nan at index \(2,\)"),
        ("H", np.full((2, 3), -np.inf), r"H must be finite, got -inf at index \(0, 0\)"),
    ],
)
def test_values_checked_when_concrete(good, field, value, pattern):
    params, ys = good
    with pytest.raises(ValueError, match=pattern):
        ssm.rts_smoother(params._replace(**{field: jnp.asarray(value)}), ys)


@pytest.mark.parametrize(
    "field, value",
    [
        ("P0", np.zeros((3, 3))),  # a known initial state
        ("P0", np.diag([1.0, 0.0, 1.0])),
        ("Q", np.diag([0.5, 0.0, 0.0])),  # noise on one state only
        ("R", np.diag([0.3, 0.0])),  # a noise-free sensor
    ],
)
def test_singular_covariances_are_accepted(good, field, value):
    params, _ = good
    checked = ssm.validate_params(params._replace(**{field: jnp.asarray(value)}))
    np.testing.assert_array_equal(getattr(checked, field), value)


@pytest.mark.parametrize("scale", [1e-200, 1.0, 1e200])
def test_psd_tolerance_is_relative_to_scale(good, scale):
    """Round-off negative eigenvalues pass at any scale; a real one fails at any scale.

    A rank-one ``v v^T`` formed in float64 has eigenvalues at -1e-17 relative (round-off):
    what an EM or MLE fit with a singular truth produces. ``-1e-6`` relative is not round-off.
    """
    params, _ = good
    v = np.array([0.3, -1.7, 0.9])
    rank_one = scale * np.outer(v, v)
    ssm.validate_params(params._replace(Q=jnp.asarray(rank_one)))
    bad = rank_one - 1e-6 * scale * np.eye(3)
    with pytest.raises(ValueError, match="Q must be symmetric positive definite or semi"):
        ssm.validate_params(params._replace(Q=jnp.asarray(bad)))


def test_fitted_covariance_with_round_off_eigenvalue_is_accepted(good):
    """The library's own fits pass (issue 16): Q with smallest eigenvalue ~1e-15, any sign."""
    params, _ = good
    U, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 3)))
    for smallest in (1e-15, 0.0, -1e-15):
        Q = (U * np.array([smallest, 0.4, 1.3])) @ U.T
        Q = 0.5 * (Q + Q.T)
        ssm.validate_params(params._replace(Q=jnp.asarray(Q)))


def test_value_checks_skipped_under_tracing(good):
    # Under jit the values are unknown: only shapes and dtypes are checked at trace time.
    params, ys = good
    bad = params._replace(R=-jnp.eye(2))
    out = jax.jit(ssm.log_likelihood)(bad, ys)
    assert out.shape == ()
    with pytest.raises(ValueError, match="R must have shape"):
        jax.jit(ssm.log_likelihood)(params._replace(R=jnp.eye(3)), ys)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.complex64])
def test_non_float_dtypes(good, dtype):
    params, ys = good
    with pytest.raises(TypeError, match=r"ys must have a real floating dtype.*got"):
        ssm.kalman_filter(params, ys.astype(dtype))
    with pytest.raises(TypeError, match=r"A must have a real floating dtype"):
        ssm.kalman_filter(params._replace(A=params.A.astype(dtype)), ys)


def test_mismatched_dtypes(good):
    params, ys = good
    with pytest.raises(TypeError, match=r"must share one floating dtype.*Q=float32"):
        ssm.kalman_filter(params._replace(Q=params.Q.astype(jnp.float32)), ys)
    with pytest.raises(TypeError, match=r"ys must have the parameters' dtype float64, got float32"):
        ssm.kalman_filter(params, ys.astype(jnp.float32))


def test_params_must_be_lgssm(good):
    params, ys = good
    with pytest.raises(TypeError, match="params must be a jaxssm.LGSSM, got tuple"):
        ssm.kalman_filter(tuple(params), ys)


def test_sample_arguments(good):
    params, _ = good
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        ssm.sample(jax.random.PRNGKey(0), params, 0)
    with pytest.raises(TypeError, match="num_steps must be a Python int"):
        ssm.sample(jax.random.PRNGKey(0), params, 2.5)


def test_smoother_from_filter_checks(good):
    params, ys = good
    filt = ssm.kalman_filter(params, ys)
    with pytest.raises(TypeError, match="filtered must be a jaxssm.FilterResult"):
        ssm.rts_smoother_from_filter(params, tuple(filt))
    with pytest.raises(ValueError, match=r"filtered must hold means \[N\+1, D\]"):
        ssm.rts_smoother_from_filter(params, filt._replace(means=filt.means[1:]))


def test_unknown_method(good):
    params, ys = good
    with pytest.raises(ValueError, match="method must be 'sequential' or 'parallel', got 'fast'"):
        ssm.log_likelihood(params, ys, method="fast")


# --- one update rule for m_step, fit_em, fit_mle and to_unconstrained ----------------------


def _update_entry_points(params, ys):
    import optax

    stats, _ = ssm.e_step(params, ys)
    return {
        "m_step": lambda u: ssm.m_step(params, stats, update=u),
        "fit_em": lambda u: ssm.fit_em(params, ys, num_iters=1, update=u),
        "fit_mle": lambda u: ssm.fit_mle(
            params, ys, optimizer=optax.sgd(1e-3), num_iters=1, update=u
        ),
        "to_unconstrained": lambda u: ssm.to_unconstrained(params, update=u),
    }


BAD_UPDATES = [
    (("A", "X"), ValueError),
    (("a",), ValueError),
    ("Qs", ValueError),
    ((), ValueError),
    ([], ValueError),
    (("A", "Q", "A"), ValueError),
    ("", ValueError),
    (None, TypeError),
    (3, TypeError),
    (1.5, TypeError),
    (("A", None), TypeError),
    (b"A", TypeError),
]


@pytest.mark.parametrize("bad, error", BAD_UPDATES, ids=repr)
def test_update_rule_is_the_same_everywhere(good, bad, error):
    """The same bad ``update`` gives the same error type and message from all four."""
    params, ys = good
    outcomes = {}
    for name, fn in _update_entry_points(params, ys).items():
        with pytest.raises((ValueError, TypeError)) as info:
            fn(bad)
        outcomes[name] = (info.type, str(info.value))
    assert {t for t, _ in outcomes.values()} == {error}, outcomes
    assert len({m for _, m in outcomes.values()}) == 1, outcomes
    message = outcomes["m_step"][1]
    assert "update" in message
    if error is TypeError and not isinstance(bad, tuple | bytes):
        assert "'m0', 'P0', 'A', 'Q', 'H', 'R'" in message  # a non-iterable: the valid names
    if bad in (("A", "X"), ("a",), "Qs", (), [], ""):
        assert "'m0', 'P0', 'A', 'Q', 'H', 'R'" in message  # unknown or empty: the valid names


@pytest.mark.parametrize(
    "update, expected",
    [
        ("Q", ("Q",)),
        (("Q", "A"), ("A", "Q")),
        (["R", "m0", "A"], ("m0", "A", "R")),
        ({"H", "P0"}, ("P0", "H")),
        (iter(["Q", "A"]), ("A", "Q")),
        (("R", "Q", "P0", "m0", "H", "A"), ("m0", "P0", "A", "Q", "H", "R")),
    ],
    ids=repr,
)
def test_check_update_returns_names_in_lgssm_order(update, expected):
    assert _checks.check_update(update) == expected


# --- steady_state ---------------------------------------------------------------------------


def _steady_entry_points(params, ys):
    import optax

    return {
        "kalman_filter": lambda **kw: ssm.kalman_filter(params, ys, **kw),
        "rts_smoother": lambda **kw: ssm.rts_smoother(params, ys, **kw),
        "log_likelihood": lambda **kw: ssm.log_likelihood(params, ys, **kw),
        "e_step": lambda **kw: ssm.e_step(params, ys, **kw),
        "fit_em": lambda **kw: ssm.fit_em(params, ys, num_iters=1, **kw),
        "fit_mle": lambda **kw: ssm.fit_mle(
            params, ys, optimizer=optax.sgd(1e-3), num_iters=1, **kw
        ),
    }


STEADY_NAMES = ["kalman_filter", "rts_smoother", "log_likelihood", "e_step", "fit_em", "fit_mle"]


@pytest.mark.parametrize("name", STEADY_NAMES)
def test_steady_state_defaults_to_none(name):
    fn = getattr(ssm, name)
    assert inspect.signature(fn).parameters["steady_state"].default is None


@pytest.mark.parametrize("name", STEADY_NAMES)
def test_steady_state_must_be_a_bool_or_none(good, name):
    params, ys = good
    fn = _steady_entry_points(params, ys)[name]
    for bad in ("yes", 1, 0.0):
        with pytest.raises(TypeError, match="steady_state must be None, True or False"):
            fn(steady_state=bad)
