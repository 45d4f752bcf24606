"""Drawing state and observation sequences from the model."""

from __future__ import annotations

import operator
from functools import partial

import jax
import jax.numpy as jnp

from jaxssm._types import LGSSM
from jaxssm._validation import validate_params

__all__ = ["sample"]


def psd_factor(S: jax.Array) -> jax.Array:
    """Return ``F`` with ``F F^T = S`` for a symmetric positive semi-definite ``S [n, n]``.

    The lower Cholesky factor when ``S`` is positive definite (every pivot above ``n eps``
    times its diagonal entry), so draws from positive-definite models are unchanged;
    otherwise ``V sqrt(lambda)`` from the eigendecomposition, with eigenvalues below
    ``n eps max|lambda|`` set to zero, exact for singular ``S`` (a Cholesky factor of a
    singular matrix is NaN). One ``lax.cond``.
    """
    n = S.shape[-1]
    L = jnp.linalg.cholesky(S)
    pivots = jnp.diagonal(L)
    tol = n * float(jnp.finfo(S.dtype).eps)
    ok = jnp.all(pivots * pivots > tol * jnp.diagonal(S))

    def eigen_factor():
        lam, V = jnp.linalg.eigh(0.5 * (S + S.T))
        # Eigenvalues at round-off are zeros: their square roots (~sqrt(eps)) would not be.
        keep = lam > tol * jnp.max(jnp.abs(lam))
        return V * jnp.sqrt(jnp.where(keep, lam, jnp.zeros_like(lam)))[None, :]

    return jax.lax.cond(ok, lambda: L, eigen_factor)


@partial(jax.jit, static_argnums=2)
def _sample(key: jax.Array, params: LGSSM, num_steps: int):
    D, Dy = params.A.shape[0], params.H.shape[0]
    dtype = params.A.dtype
    chol_P0 = psd_factor(params.P0)
    chol_Q = psd_factor(params.Q)
    chol_R = psd_factor(params.R)
    key0, key_q, key_r = jax.random.split(key, 3)
    x0 = params.m0 + chol_P0 @ jax.random.normal(key0, (D,), dtype)
    q = jax.random.normal(key_q, (num_steps, D), dtype) @ chol_Q.T
    r = jax.random.normal(key_r, (num_steps, Dy), dtype) @ chol_R.T

    def body(x, noise):
        x = params.A @ x + noise
        return x, x

    _, xs = jax.lax.scan(body, x0, q)
    ys = xs @ params.H.T + r
    return jnp.concatenate([x0[None], xs], axis=0), ys


def sample(key: jax.Array, params: LGSSM, num_steps: int) -> tuple[jax.Array, jax.Array]:
    """Draw ``x_0..x_N`` and ``y_1..y_N`` from the model.

    Args:
        key: a JAX PRNG key (no default: sampling is explicit).
        params: an :class:`~jaxssm.LGSSM`; ``P0``, ``Q``, ``R`` may be singular (positive
            semi-definite): the noise is drawn with a PSD factor (Cholesky when positive
            definite, an eigendecomposition otherwise), so singular directions get none.
        num_steps: ``N >= 1``, a Python int (it fixes the output shapes).

    Returns:
        ``(xs, ys)`` with ``xs [N+1, D]`` (row 0 is ``x_0``) and ``ys [N, Dy]``.
    """
    try:
        n = operator.index(num_steps)
    except TypeError:
        raise TypeError(f"num_steps must be a Python int, got {type(num_steps).__name__}") from None
    if n < 1:
        raise ValueError(f"num_steps must be >= 1, got {n}")
    params = validate_params(params)
    return _sample(key, params, n)
