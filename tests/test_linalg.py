"""jaxssm._base.linalg: the LAPACK, loop and per-platform forms of the four operations.

Reference: numpy.linalg in float64. Tolerance: rtol 1e-12 on well-conditioned matrices
(condition number below 1e3 here): every form is backward stable, so the forward error is a
few hundred ulps at most (observed ~1e-15).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssm._base import linalg as _linalg

FORMS = {"lapack": _linalg.LAPACK, "loops": _linalg.LOOPS, "batched": _linalg.BATCHED}
RTOL = 1e-12


def _spd(rng, n):
    X = rng.normal(size=(n, n))
    return X @ X.T / n + np.eye(n)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("n", [1, 3, 7])
def test_forms_match_numpy(form, n):
    la = FORMS[form]
    rng = np.random.default_rng(n)
    S, M, B = _spd(rng, n), rng.normal(size=(n, n)) + 3 * np.eye(n), rng.normal(size=(n, 2))
    L = np.linalg.cholesky(S)
    jS, jL, jM, jB = (jnp.asarray(x) for x in (S, L, M, B))
    np.testing.assert_allclose(la.cholesky(jS), L, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(la.solve_lower(jL, jB), np.linalg.solve(L, B), rtol=RTOL)
    np.testing.assert_allclose(la.solve_lower_t(jL, jB), np.linalg.solve(L.T, B), rtol=RTOL)
    np.testing.assert_allclose(la.cho_solve(jL, jB), np.linalg.solve(S, B), rtol=RTOL)
    np.testing.assert_allclose(la.solve(jM, jB), np.linalg.solve(M, B), rtol=RTOL)


def test_loop_cholesky_is_nan_for_an_indefinite_matrix():
    out = _linalg.LOOPS.cholesky(jnp.array([[1.0, 2.0], [2.0, 1.0]]))
    assert np.isnan(np.asarray(out)).any()


def test_loop_solve_pivots():
    # A zero leading entry needs a row exchange.
    M = jnp.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(_linalg.LOOPS.solve(M, jnp.eye(2)), [[0.0, 1.0], [1.0, 0.0]])


def _custom_calls(la):
    """The custom-call lines of the compiled CPU program of a vmapped factor-and-solve."""
    S = jnp.asarray(np.stack([_spd(np.random.default_rng(i), 4) for i in range(3)]))
    fn = jax.jit(jax.vmap(lambda A: la.cho_solve(la.cholesky(A), A)))
    text = fn.lower(S).compile().as_text().lower()
    return [line for line in text.splitlines() if "custom-call(" in line]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the loop form is chosen on CPU")
def test_batched_form_has_no_lapack_call_on_cpu():
    # Positive control: the LAPACK form compiles to LAPACK custom calls.
    assert any("lapack" in line for line in _custom_calls(_linalg.LAPACK))
    assert not any("lapack" in line for line in _custom_calls(_linalg.BATCHED))


def test_symmetrize():
    M = jnp.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(_linalg.symmetrize(M), (M + M.T) / 2)
