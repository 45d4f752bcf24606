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


# --- the semidefinite factor and solve ----------------------------------------------------------


def _low_rank(rng, n, rank, scales=None):
    """A PSD ``[n, n]`` of rank ``rank``, optionally with its rows and columns scaled."""
    F = rng.normal(size=(n, rank))
    M = F @ F.T
    if scales is not None:
        M = scales[:, None] * M * scales[None, :]
    return M


@pytest.mark.parametrize("equilibrate", [False, True])
@pytest.mark.parametrize("n, rank", [(1, 0), (3, 1), (5, 3), (6, 6)])
def test_psd_cholesky_reproduces_singular_matrices(n, rank, equilibrate):
    # Reference: numpy's own algebra. F F^T = M to round-off of M's scale; F lower
    # triangular and finite, with at least as many kept (positive-pivot) columns as the
    # rank (a pivot of a singular matrix can exceed the tolerance by round-off, and the
    # product is still M to round-off).
    rng = np.random.default_rng(10 * n + rank)
    M = _low_rank(rng, n, rank) if rank < n else _spd(rng, n)
    F = np.asarray(_linalg.psd_cholesky(jnp.asarray(M), equilibrate=equilibrate))
    assert np.all(np.isfinite(F)) and np.array_equal(F, np.tril(F))
    np.testing.assert_allclose(F @ F.T, M, rtol=0, atol=1e-13 * max(1.0, np.abs(M).max()))
    assert np.sum(np.diagonal(F) > 0) >= np.linalg.matrix_rank(M)


def test_psd_cholesky_of_a_definite_matrix_is_its_cholesky_factor():
    S = _spd(np.random.default_rng(3), 5)
    for equilibrate in (False, True):
        F = _linalg.psd_cholesky(jnp.asarray(S), equilibrate=equilibrate)
        np.testing.assert_allclose(F, np.linalg.cholesky(S), rtol=RTOL, atol=1e-14)
    # The plain loop factor is the same recursion without the pivot test.
    np.testing.assert_allclose(_linalg.LOOPS.cholesky(jnp.asarray(S)), np.linalg.cholesky(S))


def test_the_pivot_rule():
    # diag(1, t): the second pivot is t itself. The rule keeps it above n eps max M_ii
    # (n = 2) and drops it at or below; the equilibrated rule compares it with
    # n eps M_22 = n eps t and keeps any t > 0 (it does not depend on each component's units).
    eps = np.finfo(np.float64).eps
    for t, kept in [(3 * eps, True), (2 * eps, False), (eps, False), (0.0, False)]:
        F = _linalg.psd_cholesky(jnp.diag(jnp.array([1.0, t])))
        assert (float(F[1, 1]) > 0) == kept, t
        np.testing.assert_array_equal(
            _linalg.pivot_tolerance(jnp.diag(jnp.array([1.0, t]))), 2 * eps
        )
    tiny = jnp.diag(jnp.array([1.0, 1e-30]))
    np.testing.assert_allclose(_linalg.psd_cholesky(tiny, equilibrate=True), np.sqrt(tiny))
    np.testing.assert_array_equal(
        _linalg.pivot_tolerance(tiny, equilibrate=True), [2 * eps, 2e-30 * eps]
    )


def test_the_equilibrated_rule_does_not_depend_on_units():
    # Scaling rows and columns by D scales the factor's rows by D and keeps the same columns,
    # however different the scales (a singular matrix with entries from 1e-12 to 1e6).
    rng = np.random.default_rng(4)
    M = _low_rank(rng, 5, 3)
    scales = 10.0 ** np.array([-6.0, 0.0, 3.0, -2.0, 1.0])
    F = np.asarray(_linalg.psd_cholesky(jnp.asarray(M), equilibrate=True))
    Fs = np.asarray(
        _linalg.psd_cholesky(jnp.asarray(scales[:, None] * M * scales[None, :]), equilibrate=True)
    )
    np.testing.assert_array_equal(np.diagonal(Fs) > 0, np.diagonal(F) > 0)
    np.testing.assert_allclose(Fs, scales[:, None] * F, rtol=1e-9, atol=0)


@pytest.mark.parametrize("n, rank", [(3, 1), (5, 3), (4, 4)])
def test_psd_solve_is_exact_on_the_range(n, rank):
    # For B in the range of M, X = M^g B solves M X = B (numpy's pseudo-inverse solution
    # solves it too; the two may differ by a null-space component).
    rng = np.random.default_rng(20 + n + rank)
    M = _low_rank(rng, n, rank) if rank < n else _spd(rng, n)
    B = M @ rng.normal(size=(n, 2))
    X = np.asarray(_linalg.psd_solve(jnp.asarray(M), jnp.asarray(B)))
    np.testing.assert_allclose(M @ X, B, rtol=0, atol=1e-11 * np.abs(B).max())
    if rank == n:
        np.testing.assert_allclose(X, np.linalg.solve(M, B), rtol=1e-10)


def test_psd_factors_have_finite_gradients_at_singular_matrices():
    rng = np.random.default_rng(5)
    M = jnp.asarray(_low_rank(rng, 4, 2))
    B = M @ jnp.asarray(rng.normal(size=(4, 2)))
    for fn in (
        lambda A: jnp.sum(_linalg.psd_cholesky(A) ** 2),
        lambda A: jnp.sum(_linalg.psd_solve(A, B)),
    ):
        assert np.all(np.isfinite(np.asarray(jax.grad(fn)(M))))
