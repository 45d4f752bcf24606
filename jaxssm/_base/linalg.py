r"""The matrix operations jaxssm needs: factor-and-solve in two forms, and semidefinite factors.

* :data:`LAPACK`: ``jnp.linalg`` / ``jax.scipy.linalg`` (the backend's factorisation kernels).
  The sequential and steady-state schedules use it: their per-step calls are unbatched.
* :data:`BATCHED`: for per-step algebra that is vmapped over time (the associative-scan
  schedule). In programs compiled for CPU it is :data:`LOOPS`, plain ``lax.fori_loop``\ s
  over the matrix dimension; on every other platform it is :data:`LAPACK`
  (:func:`jaxssm._base.platform.cpu_or_default`). A loop form exists because on CPU jaxlib
  0.10 runs a batched ``cholesky`` / ``triangular_solve`` / ``lu`` as a LAPACK kernel that
  splits its batch over XLA's intra-op thread pool and blocks until the pieces finish;
  several such kernels running concurrently (the independent vmapped calls of an
  associative scan) can take every thread of the pool and wait for work no thread is free
  to run, and the program hangs. The loop form contains no LAPACK call, so it cannot.
* :func:`psd_cholesky`: a Cholesky factor of a symmetric positive semi-definite matrix,
  with one pivot rule (:func:`pivot_tolerance`), and :func:`psd_solve`, a solve with such a
  matrix that is exact on its range. Both are loops (no LAPACK call).

:func:`psd_cholesky` and ``LOOPS.cholesky`` are one column-by-column Cholesky recursion: the
plain factor takes the square root of every pivot (NaN for a matrix that is not positive
definite, as LAPACK's), the semidefinite factor drops the pivots at or below the tolerance.

Every function acts on one matrix (no batch axes); callers vmap.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular

from jaxssm._base.platform import cpu_or_default

__all__ = [
    "Linalg",
    "LAPACK",
    "BATCHED",
    "LOOPS",
    "symmetrize",
    "pivot_tolerance",
    "psd_cholesky",
    "psd_solve",
]


def symmetrize(M: jax.Array) -> jax.Array:
    """Return ``(M + M^T) / 2`` (over the last two axes)."""
    return 0.5 * (M + jnp.swapaxes(M, -1, -2))


class Linalg(NamedTuple):
    """A set of the four operations, all over one matrix.

    Attributes:
        cholesky: ``A [n, n]`` SPD -> lower ``L`` with ``L L^T = A`` (NaN if not SPD).
        solve_lower: ``(L [n, n], B [n, r]) -> L^{-1} B`` for lower-triangular ``L``.
        solve_lower_t: ``(L, B) -> L^{-T} B``.
        solve: ``(M [n, n], B [n, r]) -> M^{-1} B`` for a general non-singular ``M``.
    """

    cholesky: object
    solve_lower: object
    solve_lower_t: object
    solve: object

    def cho_solve(self, L: jax.Array, B: jax.Array) -> jax.Array:
        """``(L L^T)^{-1} B`` from the lower Cholesky factor ``L``."""
        return self.solve_lower_t(L, self.solve_lower(L, B))


# --- LAPACK form -----------------------------------------------------------------------------


LAPACK = Linalg(
    cholesky=jnp.linalg.cholesky,
    solve_lower=lambda L, B: solve_triangular(L, B, lower=True),
    solve_lower_t=lambda L, B: solve_triangular(L, B, lower=True, trans="T"),
    solve=jnp.linalg.solve,
)


# --- loop form (no LAPACK call) --------------------------------------------------------------


def _column_cholesky(M: jax.Array, tol: jax.Array | None = None) -> jax.Array:
    """Factor ``M`` by the Cholesky recursion, one column per ``fori_loop`` step.

    Column ``j`` is ``c / sqrt(c_j)`` on and below the diagonal, with
    ``c = M[:, j] - F F[j]^T`` and the pivot ``c_j`` the Schur complement of the leading
    ``j x j`` block. With ``tol`` (a scalar or ``[n]``), a pivot ``c_j <= tol_j`` is zero and
    so is its column (the square root is guarded on both branches: finite gradients);
    without, every pivot is kept (NaN when one is not positive) and the diagonal entry is
    ``sqrt(c_j)`` itself.
    """
    n = M.shape[-1]
    idx = jnp.arange(n)

    def body(j, F):
        # Columns >= j of F are still zero, so F @ F[j] sums over k < j only.
        c = M[:, j] - F @ F[j]
        if tol is None:
            d = jnp.sqrt(c[j])
            col = jnp.where(idx > j, c / d, jnp.where(idx == j, d, jnp.zeros_like(d)))
        else:
            keep = c[j] > (tol[j] if tol.ndim else tol)
            d = jnp.sqrt(jnp.where(keep, c[j], jnp.ones_like(c[j])))
            col = jnp.where(keep & (idx >= j), c / d, jnp.zeros_like(c))
        return F.at[:, j].set(col)

    return lax.fori_loop(0, n, body, jnp.zeros_like(M))


def _loop_solve_lower(L: jax.Array, B: jax.Array) -> jax.Array:
    n = L.shape[-1]

    def body(i, X):
        # Rows >= i of X are still zero, so L[i] @ X sums over k < i only.
        return X.at[i].set((B[i] - L[i] @ X) / L[i, i])

    return lax.fori_loop(0, n, body, jnp.zeros_like(B))


def _loop_solve_lower_t(L: jax.Array, B: jax.Array) -> jax.Array:
    n = L.shape[-1]

    def body(t, X):
        i = n - 1 - t
        # (L^T)[i, k] = L[k, i] is zero for k < i; rows <= i of X are still zero.
        return X.at[i].set((B[i] - L[:, i] @ X) / L[i, i])

    return lax.fori_loop(0, n, body, jnp.zeros_like(B))


def _loop_solve(M: jax.Array, B: jax.Array) -> jax.Array:
    """Gauss-Jordan elimination with partial pivoting."""
    n = M.shape[-1]
    idx = jnp.arange(n)

    def body(j, aug):
        pivot = jnp.argmax(jnp.where(idx >= j, jnp.abs(aug[:, j]), -1.0))
        row_j, row_p = aug[j], aug[pivot]
        aug = aug.at[pivot].set(row_j).at[j].set(row_p)
        row = aug[j] / aug[j, j]
        factors = aug[:, j].at[j].set(0.0)
        aug = aug - factors[:, None] * row[None, :]
        return aug.at[j].set(row)

    aug = lax.fori_loop(0, n, body, jnp.concatenate([M, B], axis=1))
    return aug[:, n:]


LOOPS = Linalg(
    cholesky=_column_cholesky,
    solve_lower=_loop_solve_lower,
    solve_lower_t=_loop_solve_lower_t,
    solve=_loop_solve,
)


# --- chosen per platform ---------------------------------------------------------------------


def _per_platform(name: str):
    fn = cpu_or_default(getattr(LOOPS, name), getattr(LAPACK, name))
    fn.__name__ = name
    return fn


BATCHED = Linalg(*(_per_platform(name) for name in Linalg._fields))


# --- positive semi-definite matrices ---------------------------------------------------------


def pivot_tolerance(M: jax.Array, *, equilibrate: bool = False) -> jax.Array:
    r"""Return the pivot tolerance of :func:`psd_cholesky`: its one pivot rule.

    A pivot (the Schur complement ``c_j`` of the leading ``j x j`` block) is zero when

    .. math::

        c_j \le n \, \epsilon \, \max_i M_{ii},

    ``eps`` the machine epsilon of ``M``'s dtype: the tolerance of LAPACK's semidefinite
    Cholesky ``xPSTRF`` by default. The computed Schur complement carries a round-off error of
    that order, so a pivot below it cannot be told from zero; for a semidefinite ``M`` the
    rest of its column is of the order of round-off too, and dropping both changes the
    factored matrix by round-off.

    With ``equilibrate``, the rule is applied to the unit-diagonal matrix
    ``D^{-1/2} M D^{-1/2}``, ``D = diag(M)`` (zero where ``M_jj`` is), whose pivots are
    ``c_j / M_jj`` and whose largest diagonal entry is 1: the test reads
    ``c_j <= n eps M_jj``. It does not depend on the units of each component, which is
    right for a matrix known to the scale of each of its own entries (a predicted covariance
    ``A P A^T + Q``, a sum of semidefinite terms). Without, the largest entry sets the scale,
    which is right for a matrix known to that scale only (a difference such as
    ``P - G P^- G^T``, whose round-off is relative to its largest entries: a diagonal entry
    that is a round-off residue is taken as zero).

    Args:
        M: ``[n, n]``, symmetric positive semi-definite.
        equilibrate: apply the rule to the equilibrated matrix.

    Returns:
        The tolerance of ``c_j``: one scalar for every ``j``, or with ``equilibrate`` one
        per column, ``[n]`` (no gradient flows through it).

    References:
        N. J. Higham, "Analysis of the Cholesky decomposition of a semi-definite matrix", in
        *Reliable Numerical Computation*, Oxford University Press, 1990; LAPACK's ``DPSTRF``.
    """
    diag = lax.stop_gradient(jnp.diagonal(M))
    tol = M.shape[-1] * float(jnp.finfo(M.dtype).eps)
    return tol * diag if equilibrate else tol * jnp.max(jnp.abs(diag))


def psd_cholesky(M: jax.Array, *, equilibrate: bool = False) -> jax.Array:
    r"""Lower-triangular ``F`` with ``F F^T = M`` for a symmetric positive semi-definite ``M``.

    The Cholesky recursion column by column (a ``lax.fori_loop``, no LAPACK call: safe to
    vmap on CPU) with every pivot at or below :func:`pivot_tolerance` taken as zero together
    with its column; no jitter is added. ``F F^T`` equals ``M`` up to round-off; a positive
    definite ``M`` whose pivots are all above the tolerance gets its ordinary Cholesky
    factor (to round-off), and a kept pivot is positive, so the kept columns are those with
    ``F_jj > 0``.
    The square root is guarded on both branches, so gradients are finite.

    Args:
        M: ``[n, n]``, symmetric positive semi-definite.
        equilibrate: the pivot rule of the equilibrated matrix (:func:`pivot_tolerance`);
            the factor is that of ``M`` either way.

    Returns:
        ``F [n, n]``, lower triangular, with zero columns where ``M`` is singular.
    """
    return _column_cholesky(M, pivot_tolerance(M, equilibrate=equilibrate))


def psd_solve(M: jax.Array, B: jax.Array) -> jax.Array:
    r"""``M^g B`` for a symmetric positive semi-definite ``M``, exact on the range of ``M``.

    The factor of :func:`psd_cholesky` (equilibrated pivot rule) with its dropped columns
    replaced by unit vectors is ``U``, unit lower triangular on those columns; with ``\Pi``
    the 0/1 diagonal of the kept pivots, ``M = U \Pi U^T`` up to round-off, and
    ``M^g = U^{-T} \Pi U^{-1}`` is a generalised inverse (``M M^g M = M``). So ``X = M^g B``
    solves ``M X = B`` whenever the columns of ``B`` lie in the range of ``M``. Factor and
    solves are loops (:data:`LOOPS`, no LAPACK call).

    Args:
        M: ``[n, n]``, symmetric positive semi-definite.
        B: ``[n, r]``.

    Returns:
        ``X [n, r]``.
    """
    F = psd_cholesky(M, equilibrate=True)
    kept = jnp.diagonal(F) > 0
    U = F + jnp.diag(jnp.where(kept, jnp.zeros((), M.dtype), jnp.ones((), M.dtype)))
    Y = _loop_solve_lower(U, B)
    return _loop_solve_lower_t(U, jnp.where(kept[:, None], Y, jnp.zeros_like(Y)))
