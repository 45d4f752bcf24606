r"""What drawing from a Gaussian needs: a factor of a semidefinite covariance, and key checks.

:func:`psd_cholesky` factors a symmetric positive *semi*-definite matrix: the conditional
covariances of backward sampling, ``P_k - G_k P_{k+1}^- G_k^T``, are singular whenever a
state component is determined by its successor (noise-free components, companion forms) and
are singular to round-off in many ordinary models, where a plain Cholesky returns NaN. No
jitter is added: pivots at the round-off floor are treated as zero, which changes the factored
covariance by round-off only.

:func:`check_key` and :func:`check_num_steps` are the argument rules of the sampling and
forecasting entry points (keys are explicit, never defaulted).
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["psd_cholesky", "gaussian_draw", "check_key", "check_num_steps"]


def psd_cholesky(M: jax.Array) -> jax.Array:
    r"""Lower-triangular ``F`` with ``F F^T = M`` for a symmetric positive semi-definite ``M``.

    The Cholesky recursion column by column (a ``lax.fori_loop``, no LAPACK call, so it is
    safe to vmap on CPU), with every pivot at or below ``tol = n eps max_i M_ii`` taken as
    zero together with its column. For a semidefinite ``M`` the remaining column of a zero
    pivot is zero in exact arithmetic and of the order of round-off in floating point, so
    dropping it changes ``F F^T`` by round-off. A positive definite ``M`` whose pivots are all
    above ``tol`` gets its ordinary Cholesky factor. The square root is guarded on both
    branches, so gradients are finite.

    Args:
        M: ``[n, n]``, symmetric positive semi-definite.

    Returns:
        ``F [n, n]``, lower triangular, with zero columns where ``M`` is singular.
    """
    n = M.shape[-1]
    idx = jnp.arange(n)
    scale = lax.stop_gradient(jnp.max(jnp.abs(jnp.diagonal(M))))
    tol = n * jnp.finfo(M.dtype).eps * scale
    one = jnp.ones((), M.dtype)
    zero = jnp.zeros((), M.dtype)

    def body(j, F):
        # Columns >= j of F are still zero, so F @ F[j] sums over columns < j only.
        c = M[:, j] - F @ F[j]
        ok = c[j] > tol
        d = jnp.sqrt(jnp.where(ok, c[j], one))
        return F.at[:, j].set(jnp.where(ok & (idx >= j), c / d, zero))

    return lax.fori_loop(0, n, body, jnp.zeros_like(M))


def gaussian_draw(mean: jax.Array, cov: jax.Array, noise: jax.Array) -> jax.Array:
    """Return ``mean + F noise`` with ``F F^T = cov`` (:func:`psd_cholesky`), ``[D]``.

    A draw from ``N(mean, cov)`` when ``noise`` is standard normal.
    """
    return mean + psd_cholesky(cov) @ noise


def check_key(key, name: str = "key"):
    """Check that ``key`` is one JAX PRNG key and return it.

    Accepts a typed key (``jax.random.key(seed)``, dtype ``key<...>``, shape ``()``) or a raw
    one (``jax.random.PRNGKey(seed)``, unsigned 32-bit, shape ``[2]`` for the default
    implementation). There is no default key: sampling is explicit.

    Raises:
        TypeError: ``key`` is ``None`` or not a PRNG key.
        ValueError: ``key`` is a batch of keys (vmap over keys instead).
    """
    hint = "jax.random.key(seed) or jax.random.PRNGKey(seed)"
    if key is None:
        raise TypeError(f"{name} must be a JAX PRNG key ({hint}); there is no default key")
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()))
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape:
            raise ValueError(
                f"{name} must be a single PRNG key, got a batch of shape {shape} "
                "(jax.vmap over keys draws many)"
            )
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and len(shape) == 1:
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and len(shape) > 1:
        raise ValueError(
            f"{name} must be a single PRNG key, got a batch of raw keys of shape {shape} "
            "(jax.vmap over keys draws many)"
        )
    got = f"dtype {np.dtype(dtype)} and shape {shape}" if dtype is not None else type(key).__name__
    raise TypeError(f"{name} must be a JAX PRNG key ({hint}), got {got}")


def check_num_steps(num_steps, name: str = "num_steps") -> int:
    """Return ``num_steps`` as a positive Python int (it fixes shapes), or raise naming it."""
    if isinstance(num_steps, bool):
        raise TypeError(f"{name} must be a positive int, got {num_steps!r}")
    try:
        n = operator.index(num_steps)
    except TypeError:
        raise TypeError(
            f"{name} must be a positive int (a Python int: it fixes the output shapes), "
            f"got {type(num_steps).__name__}"
        ) from None
    if n < 1:
        raise ValueError(f"{name} must be a positive int, got {n}")
    return int(n)
