"""Drawing state and observation sequences from the model."""

from __future__ import annotations

import operator
from functools import partial

import jax
import jax.numpy as jnp

from jaxssm._types import LGSSM
from jaxssm._validation import validate_params

__all__ = ["sample"]


@partial(jax.jit, static_argnums=2)
def _sample(key: jax.Array, params: LGSSM, num_steps: int):
    D, Dy = params.A.shape[0], params.H.shape[0]
    dtype = params.A.dtype
    chol_P0 = jnp.linalg.cholesky(params.P0)
    chol_Q = jnp.linalg.cholesky(params.Q)
    chol_R = jnp.linalg.cholesky(params.R)
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
        params: an :class:`~jaxssm.LGSSM`.
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
