r"""``tria``: a lower-triangular square root of ``M M^T`` from a QR factorisation of ``M^T``.

The square-root form of the filter and smoother (``form="sqrt"``) never forms a covariance:
it stacks factors side by side, ``M = [A L_P, L_Q]``, and re-triangularises,
``tria(M) = L`` with ``L L^T = M M^T = A P A^T + Q``. The factor is computed from
``M^T = Q_M R`` (Householder QR) as ``L = R^T`` with the signs of its columns flipped so
that its diagonal is nonnegative; no product ``M M^T`` is formed, so its condition number
is that of ``M``, not its square. For a positive definite ``M M^T`` the result is its
Cholesky factor; for a singular one it is *a* lower-triangular factor with zeros on the
diagonal where ``M M^T`` loses rank (not unique there).

**Derivative.** With ``M = L Q_M^T`` (``Q_M`` with orthonormal columns) every tangent
``dL = dM Q_M + L \Omega`` with ``\Omega`` skew-symmetric satisfies the first-order
equation ``dL L^T + L dL^T = dM M^T + M dM^T`` (the tangent of ``M M^T``). With
``X = L^{-1} dM Q_M`` and

.. math::

    \Omega = \operatorname{tril}_{-1}(X^T) - \operatorname{triu}_{1}(X)

the tangent is ``L \Phi(X + X^T)`` (``\Phi`` the lower triangle with half the diagonal), the
lower-triangular derivative of the Cholesky factor, exact wherever ``L`` is invertible. Where
it is not (a diagonal entry at or below ``n eps max|diag L|``) ``tria`` is not differentiable
(its zero columns jump under perturbations off the column space), and the JVP uses ``X``
from a solve with those diagonal entries replaced by 1: the tangent stays finite, satisfies
the first-order equation exactly (so everything that depends on ``L`` through ``L L^T`` or is
invariant under ``L -> L U`` for orthogonal ``U``, which is everything the square-root
filter and smoother return, gets its exact derivative), and is the exact derivative of ``L``
on inputs whose zero rows stay zero (``M = [M_1; 0]``). It need not be lower triangular there.

**Two forms.** :func:`tria` calls LAPACK's QR (the sequential schedule: unbatched calls).
:func:`tria_batched` is for algebra vmapped over time (the associative scan): in programs
compiled for CPU it is a Householder QR written as a ``lax.fori_loop`` (no LAPACK call; see
:mod:`jaxssm._base.linalg` for why a batched LAPACK kernel can hang there), elsewhere the
LAPACK form. Both have the derivative above.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxssm._base.linalg import LAPACK, LOOPS
from jaxssm._base.platform import cpu_or_default

__all__ = ["tria", "tria_batched"]


def _qr_lapack(At: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``At = Q R`` (reduced): ``Q [m, n]``, ``R [n, n]``, by LAPACK."""
    return jnp.linalg.qr(At, mode="reduced")


def _qr_loop(At: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``At = Q R`` (reduced) by Householder reflections, one column per ``fori_loop`` step."""
    m, n = At.shape
    idx = jnp.arange(m)
    one = jnp.ones((), At.dtype)

    def body(j, carry):
        R, Qf = carry
        x = jnp.where(idx >= j, R[:, j], jnp.zeros((), At.dtype))
        norm = jnp.sqrt(jnp.sum(x * x))
        alpha = -jnp.where(R[j, j] >= 0, one, -one) * norm
        v = x - jnp.where(idx == j, alpha, jnp.zeros((), At.dtype))
        vv = jnp.sum(v * v)
        beta = jnp.where(vv > 0, 2 * one / jnp.where(vv > 0, vv, one), jnp.zeros((), At.dtype))
        R = R - beta * jnp.outer(v, v @ R)
        Qf = Qf - beta * jnp.outer(Qf @ v, v)
        return R, Qf

    R, Qf = lax.fori_loop(0, n, body, (At, jnp.eye(m, dtype=At.dtype)))
    return Qf[:, :n], jnp.triu(R[:n])


def _padded(M: jax.Array) -> jax.Array:
    n, m = M.shape
    return M if m >= n else jnp.concatenate([M, jnp.zeros((n, n - m), M.dtype)], axis=1)


def _factor(M: jax.Array, qr) -> tuple[jax.Array, jax.Array]:
    """Return ``(L [n, n], Q [m', n])``: ``M' = L Q^T``, ``M'`` is ``M`` padded to ``m' >= n``."""
    M = _padded(M)
    Qm, R = qr(M.T)  # M^T = Qm R, Qm [m', n], R [n, n]
    sign = jnp.where(jnp.diagonal(R) < 0, -jnp.ones((), M.dtype), jnp.ones((), M.dtype))
    L = (R * sign[:, None]).T
    return jnp.tril(L), Qm * sign[None, :]


def _make(qr, solve_lower):
    @jax.custom_jvp
    def fn(M: jax.Array) -> jax.Array:
        return _factor(M, qr)[0]

    @fn.defjvp
    def _jvp(primals, tangents):
        (M,), (dM,) = primals, tangents
        n = M.shape[0]
        L, Qm = _factor(M, qr)
        d = jnp.diagonal(L)
        tol = n * float(jnp.finfo(M.dtype).eps) * jnp.max(d)
        kept = d > tol
        Lg = L - jnp.diag(d) + jnp.diag(jnp.where(kept, d, jnp.ones((), L.dtype)))
        B = _padded(dM) @ Qm
        X = solve_lower(Lg, B)
        omega = jnp.tril(X.T, -1) - jnp.triu(X, 1)
        dL = B + L @ omega  # lower triangular up to round-off where L is invertible: made exact
        return L, jnp.where(jnp.all(kept), jnp.tril(dL), dL)

    return fn


_tria = _make(_qr_lapack, LAPACK.solve_lower)
_tria_loop = _make(_qr_loop, LOOPS.solve_lower)


def tria(M: jax.Array) -> jax.Array:
    """Return lower-triangular ``L [n, n]`` with ``L L^T = M M^T`` and ``diag(L) >= 0``.

    Args:
        M: ``[n, m]``, any ``m`` (``m < n`` is padded with zero columns).

    Returns:
        ``L [n, n]``. See the module docstring for its derivative.
    """
    return _tria(M)


_tria_batched = cpu_or_default(_tria_loop, _tria)


def tria_batched(M: jax.Array) -> jax.Array:
    """:func:`tria` in the form safe to vmap on CPU (a loop there, LAPACK elsewhere)."""
    return _tria_batched(M)
