r"""The few matrix operations jaxssm needs, in two interchangeable forms.

* :data:`LAPACK`: ``jnp.linalg`` / ``jax.scipy.linalg`` (the backend's factorisation kernels).
  The sequential and steady-state schedules use it: their per-step calls are unbatched.
* :data:`BATCHED`: for per-step algebra that is vmapped over time (the associative-scan
  schedule). On CPU it lowers to plain ``lax.fori_loop``\ s over the matrix dimension; on
  every other platform to the same kernels as :data:`LAPACK`. The choice is made by
  :func:`jax.lax.platform_dependent`, i.e. per platform the program is compiled for, and the
  form not taken is not in the compiled program.

Why a loop form at all: on CPU, jaxlib 0.10 runs a batched ``cholesky`` / ``triangular_solve``
/ ``lu`` as a LAPACK kernel that splits its batch over XLA's intra-op thread pool and blocks
until the pieces finish. Several such kernels running concurrently (the independent vmapped
calls of an associative scan) can take every thread of the pool and wait for work no thread
is free to run: the program hangs at 0% CPU. The loop form contains no LAPACK call, so it
cannot. (Measurements: ``docs/numerics.md`` in the source repository; a reproduction that
runs the parallel schedule with the LAPACK form under a timeout:
``benchmarks/lapack_probe.py``.)

Every function acts on one matrix (no batch axes); callers vmap.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular

__all__ = ["Linalg", "LAPACK", "BATCHED", "LOOPS", "symmetrize"]


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


def _loop_cholesky(A: jax.Array) -> jax.Array:
    n = A.shape[-1]
    idx = jnp.arange(n)

    def body(j, L):
        # Columns >= j of L are still zero, so L @ L[j] sums over k < j only.
        c = A[:, j] - L @ L[j]
        d = jnp.sqrt(c[j])
        col = jnp.where(idx > j, c / d, jnp.where(idx == j, d, jnp.zeros_like(d)))
        return L.at[:, j].set(col)

    return lax.fori_loop(0, n, body, jnp.zeros_like(A))


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
    cholesky=_loop_cholesky,
    solve_lower=_loop_solve_lower,
    solve_lower_t=_loop_solve_lower_t,
    solve=_loop_solve,
)


# --- chosen per platform ---------------------------------------------------------------------


def _per_platform(name: str):
    loop, lapack = getattr(LOOPS, name), getattr(LAPACK, name)

    def fn(*args):
        return lax.platform_dependent(*args, cpu=loop, default=lapack)

    fn.__name__ = name
    return fn


BATCHED = Linalg(*(_per_platform(name) for name in Linalg._fields))
