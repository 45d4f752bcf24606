"""Drawing state and observation sequences from the model."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxssm._args.checks import check_int, check_key
from jaxssm._args.prologue import prologue
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.linalg import psd_cholesky
from jaxssm._base.types import LGSSM

__all__ = ["sample"]


def _noise(key, cov, num_steps: int, dtype):
    """``[N, n]`` draws of ``N(0, cov)`` (``cov`` one matrix, or one per step)."""
    z = jax.random.normal(key, (num_steps, cov.shape[-1]), dtype)
    if cov.ndim == 3:
        return jnp.einsum("nij,nj->ni", jax.vmap(psd_cholesky)(cov), z)
    return z @ psd_cholesky(cov).T


@partial(_compile.jit, static_argnums=2)
def _sample(key: jax.Array, params: LGSSM, num_steps: int, inputs=None):
    D = params.A.shape[-1]
    dtype = params.A.dtype
    chol_P0 = psd_cholesky(params.P0)
    key0, key_q, key_r = jax.random.split(key, 3)
    x0 = params.m0 + chol_P0 @ jax.random.normal(key0, (D,), dtype)
    q = _noise(key_q, params.Q, num_steps, dtype)
    r = _noise(key_r, params.R, num_steps, dtype)
    c, e = _model.offsets(params, inputs, num_steps)
    A_steps = params.A if _model.is_time_varying(params, "A") else None

    def body(x, step_in):
        noise, ck, A_k = step_in
        x = (params.A if A_k is None else A_k) @ x + noise
        x = x if ck is None else x + ck
        return x, x

    _, xs = jax.lax.scan(body, x0, (q, c, A_steps))
    if _model.is_time_varying(params, "H"):
        ys = jnp.einsum("nij,nj->ni", params.H, xs) + r
    else:
        ys = xs @ params.H.T + r
    if e is not None:
        ys = ys + e
    return jnp.concatenate([x0[None], xs], axis=0), ys


def sample(
    key: jax.Array, params: LGSSM, num_steps: int, *, inputs=None
) -> tuple[jax.Array, jax.Array]:
    """Draw ``x_0..x_N`` and ``y_1..y_N`` from the model.

    Args:
        key: a JAX PRNG key (no default: sampling is explicit).
        params: an :class:`~jaxssm.LGSSM`; ``P0``, ``Q``, ``R`` may be singular (positive
            semi-definite): the noise is drawn with a semidefinite Cholesky factor
            (:func:`jaxssm._base.linalg.psd_cholesky`), so singular directions get none.
        num_steps: ``N >= 1``, a Python int (it fixes the output shapes); time-varying
            fields of ``params`` must have this length.
        inputs: ``u_1..u_N`` ``[N, Du]`` when ``params`` has ``B`` or ``D``.

    Returns:
        ``(xs, ys)`` with ``xs [N+1, D]`` (row 0 is ``x_0``) and ``ys [N, Dy]``.

    Raises:
        TypeError: ``key`` is not a PRNG key (an int seed included: pass
            ``jax.random.key(seed)``), or ``num_steps`` is not an int.
        ValueError: ``key`` is a batch of keys, ``num_steps < 1``, or invalid ``params`` /
            ``inputs``.
    """
    key = check_key(key)
    n = check_int(num_steps, "num_steps", hint="it fixes the output shapes")
    params, _, inputs, _ = prologue(params, inputs=inputs, num_steps=n)
    return _sample(key, params, n, inputs)
