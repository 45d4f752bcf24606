"""The score by Fisher's identity (``jaxssm._learn.score``) against independent gradients.

References and tolerances (float64):

- ``jax.grad(log_likelihood)`` restricted to ``update``: rtol 1e-8 on every field (relative to
  the field's largest entry). The two are different computations of one number: reverse mode
  through the filter's recursion against one smoother pass and the gradient of EM's closed-form
  objective; each carries round-off of order ``N eps cond`` (~1e-13 here), and the observed
  agreement is 1e-15 to 1e-11, so 1e-8 leaves three orders of margin while a missing term (a
  wrong statistic, a dropped factor of 2 on an off-diagonal) shows up at order one.
- Central finite differences of the plain numpy Kalman filter (``reference.numpy_filter``):
  rtol 1e-6. Step ``h = 1e-5`` on entries of order one: truncation error ``O(h^2) ~ 1e-10``
  relative and cancellation ``eps |ll| / h ~ 1e-9``, so 1e-6 is safe and still far below any
  real error.

Covariance convention: ``log_likelihood`` and ``expected_log_joint`` both use the symmetric
part of ``P0``, ``Q``, ``R``, so both gradients are the symmetric matrix ``G`` with
``d ll = tr(G^T dM)``; a finite difference that moves ``M_ij`` and ``M_ji`` together measures
``2 G_ij`` off the diagonal and ``G_ii`` on it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from reference import Model, numpy_filter, random_model, simulate

import jaxssm as ssm
from jaxssm._learn.score import score, value_and_score

ALL = ("m0", "P0", "A", "Q", "H", "R")
RTOL = 1e-8


def _model(seed, D=3, Dy=2, N=50):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy)
    _, ys = simulate(rng, model, N)
    return rng, model, to_params(model), jnp.asarray(ys)


def _reverse_mode(params, ys, update, **kw):
    g = jax.grad(lambda p: ssm.log_likelihood(p, ys, **kw))(params)
    return {n: getattr(g, n) for n in update}


def _assert_matches(params, ys, update=ALL, rtol=RTOL, **kw):
    s = score(params, ys, update=update, **kw)
    g = _reverse_mode(params, ys, update, **kw)
    for name in ssm.LGSSM._fields:
        if name in update:
            assert_close(s[ssm.LGSSM._fields.index(name)], g[name], rtol, 1.0, err_msg=name)
        else:
            assert getattr(s, name) is None, name


def test_plain_model_matches_reverse_mode():
    _, _, params, ys = _model(0)
    _assert_matches(params, ys)


def test_subset_of_fields_and_other_fields_none():
    _, _, params, ys = _model(1)
    _assert_matches(params, ys, update=("A", "Q"))
    _assert_matches(params, ys, update="R")


def test_missing_entries_match_reverse_mode():
    rng, _, params, ys = _model(2)
    y = np.array(ys)
    y[rng.random(y.shape) < 0.25] = np.nan
    y[7] = np.nan  # a whole row: a pure prediction step
    y[-3:] = np.nan  # trailing rows
    _assert_matches(params, jnp.asarray(y))


def test_inputs_and_offsets_match_reverse_mode():
    rng, _, params, ys = _model(3)
    D, Dy, Du = 3, 2, 2
    params = params._replace(
        B=jnp.asarray(rng.standard_normal((D, Du))),
        b=jnp.asarray(rng.standard_normal(D)),
        D=jnp.asarray(rng.standard_normal((Dy, Du))),
        d=jnp.asarray(rng.standard_normal(Dy)),
    )
    inputs = jnp.asarray(rng.standard_normal((ys.shape[0], Du)))
    _assert_matches(params, ys, update=ALL + ("B", "b", "D", "d"), inputs=inputs)


def test_absent_gain_is_scored_at_zero():
    rng, _, params, ys = _model(4)
    inputs = jnp.asarray(rng.standard_normal((ys.shape[0], 2)))
    s = score(params, ys, update=("A", "B", "d"), inputs=inputs)
    zeros = params._replace(B=jnp.zeros((3, 2)), d=jnp.zeros(2))
    g = _reverse_mode(zeros, ys, ("A", "B", "d"), inputs=inputs)
    for name in ("A", "B", "d"):
        assert_close(getattr(s, name), g[name], RTOL, 1.0, err_msg=name)


def test_batch_matches_reverse_mode_of_the_summed_likelihood():
    rng, model, params, _ = _model(5)
    ys = jnp.asarray(np.stack([simulate(rng, model, 40)[1] for _ in range(3)]))
    _assert_matches(params, ys)


def test_parallel_schedule_matches_reverse_mode():
    # The reference is reverse mode through the sequential filter (the same number to
    # round-off; reverse mode through the associative scan costs a minute of compilation).
    _, _, params, ys = _model(6)
    s = score(params, ys, update=ALL, method="parallel")
    g = _reverse_mode(params, ys, ALL)
    for name in ALL:
        assert_close(getattr(s, name), g[name], RTOL, 1.0, err_msg=name)


def test_steady_state_schedule_matches_full_reverse_mode():
    # N >= 2048 and steady_state=True: the E-step runs the steady-state fast path; the
    # reference is reverse mode through the full sequential recursion.
    rng = np.random.default_rng(7)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 2500)
    params, ys = to_params(model), jnp.asarray(ys)
    s = score(params, ys, update=ALL, steady_state=True)
    g = _reverse_mode(params, ys, ALL, steady_state=False)
    for name in ALL:
        assert_close(getattr(s, name), g[name], RTOL, 1.0, err_msg=name)


def test_value_and_score_returns_the_log_likelihood():
    _, _, params, ys = _model(8)
    ll, s = value_and_score(params, ys, update=("A", "H"))
    assert_close(ll, ssm.log_likelihood(params, ys), 1e-12)
    assert_close(s.A, score(params, ys, update=("A", "H")).A, 1e-14)


def _numpy_ll(fields, ys):
    return numpy_filter(Model(*fields), ys)[-1]


def test_matches_finite_differences_of_a_numpy_filter():
    rng = np.random.default_rng(9)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 30)
    s = score(to_params(model), jnp.asarray(ys), update=ALL)
    h = 1e-5
    for name in ALL:
        k = ALL.index(name)
        base = np.asarray(model[k], np.float64)
        fd = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            step = np.zeros_like(base)
            step[idx] = h
            if name in ("P0", "Q", "R"):
                step[idx[::-1]] = h  # move the symmetric pair together
            lo, hi = list(model), list(model)
            hi[k], lo[k] = base + step, base - step
            fd[idx] = (_numpy_ll(hi, ys) - _numpy_ll(lo, ys)) / (2 * h)
            if name in ("P0", "Q", "R") and idx[0] != idx[1]:
                fd[idx] /= 2  # the pair moved together measures 2 G_ij
        assert_close(getattr(s, name), fd, 1e-6, 1.0, err_msg=name)


def test_unknown_field_and_time_varying_model_are_errors():
    _, _, params, ys = _model(10)
    with pytest.raises(ValueError, match="unknown parameter"):
        score(params, ys, update=("A", "F"))
    varying = params._replace(A=jnp.broadcast_to(params.A, (ys.shape[0], 3, 3)))
    with pytest.raises(ValueError, match="time-invariant"):
        score(varying, ys, update="Q")


def test_singular_covariance_on_the_path_is_an_error():
    _, _, params, ys = _model(11)
    singular = params._replace(Q=jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="Q positive definite"):
        score(singular, ys, update="A")
    # A singular Q is fine when no updated field's term goes through it.
    assert score(singular, ys, update="R").R.shape == (2, 2)
