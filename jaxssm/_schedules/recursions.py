r"""Linear recursions with a constant matrix, :math:`x_i = F x_{i-1} + b_i`, in three forms.

Over the middle of a long series the steady-state schedule's means follow such recursions:
the filter's with :math:`F = A - K H A`, the smoother's backward with :math:`F = G`. The same
recursion can be computed

* **plain**: one ``lax.scan`` step per row (``n`` dependent steps, ``n D^2`` flops);
* **blocked**, in blocks of ``L`` rows: every block from zero at once, the states entering
  the blocks by a scan with :math:`F^L`, then a correction of each row (``2 L + n / L``
  dependent steps, ``3 n D^2`` flops);
* **doubling**: an associative (Hillis-Steele) scan of the affine maps
  :math:`x \mapsto F x + b_i`, whose compositions have the linear parts :math:`F^{2^l}`
  (``ceil(log2 n)`` dependent steps, ``O(n D^2 \log n)`` flops).

Where each loop step costs a kernel launch (accelerators) fewer dependent steps win; on CPU
the plain form does. :func:`linear_recursion` is the one entry point and picks the form.

References:
    W. D. Hillis and G. L. Steele, "Data parallel algorithms", Communications of the ACM
    29(12), 1986.
    G. E. Blelloch, "Prefix sums and their applications", CMU-CS-90-190, 1990.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from jaxssm._base.platform import cpu_or_default

__all__ = ["linear_recursion"]


def linear_recursion(
    F: jax.Array,
    b: jax.Array,
    x0: jax.Array,
    reverse: bool = False,
    block: int | str | None = None,
) -> jax.Array:
    """Return ``x_i = F x_{i-1} + b_i`` over the rows of ``b`` (``reverse``: from the last back).

    Args:
        F: ``[D, D]``.
        b: ``[n, D]``.
        x0: the state before the first (``reverse``: after the last) row, ``[D]``.
        reverse: run from the last row to the first (static).
        block: the form (static): a block length ``L`` for the blocked form (1, or ``L >= n``,
            for the plain form); ``"doubling"`` for the log-depth associative scan; ``None``
            for the plain form on CPU and blocks of ``ceil(sqrt(n))`` rows elsewhere
            (:func:`jaxssm._base.platform.cpu_or_default`: the form is chosen when the
            program is lowered for its platform).

    Returns:
        ``x_i`` for every row of ``b``, ``[n, D]``.
    """
    n = b.shape[0]
    if n == 0:
        return b
    if block == "doubling":
        return _doubling(F, b, x0, reverse=reverse)
    if block is None:
        L = math.isqrt(n - 1) + 1
        return cpu_or_default(
            functools.partial(_plain, reverse=reverse),
            functools.partial(_blocked, L=L, reverse=reverse),
        )(F, b, x0)
    if int(block) == 1 or int(block) >= n:
        return _plain(F, b, x0, reverse=reverse)
    return _blocked(F, b, x0, L=int(block), reverse=reverse)


def _plain(F: jax.Array, b: jax.Array, x0: jax.Array, reverse: bool) -> jax.Array:
    """Run the recursion as one ``lax.scan`` step per row."""

    def step(x, bi):
        x = F @ x + bi
        return x, x

    return jax.lax.scan(step, x0, b, reverse=reverse)[1]


def _doubling(F: jax.Array, b: jax.Array, x0: jax.Array, reverse: bool) -> jax.Array:
    r"""Run the recursion as an associative scan of its affine maps, in log depth.

    Step ``i`` is the affine map ``x -> F x + b_i``; the states are the prefix compositions
    of these maps applied to ``x0``. Every map has the same linear part, so a composition of
    ``2^l`` consecutive maps has linear part ``F^{2^l}`` and the scan needs no matrix per
    element: with ``y_i = b_i`` (and ``F x0`` added to ``y_0``), the level
    ``y_i <- y_i + F^{2^l} y_{i - 2^l}`` for ``i >= 2^l`` leaves ``y_i`` the sum over the
    last ``2^{l+1}`` maps' offsets, so after ``ceil(log2 n)`` levels ``y_i = x_i``. That is
    ``ceil(log2 n)`` ``[n, D] @ [D, D]`` products and as many ``D x D`` squarings.
    """
    if reverse:
        return _doubling(F, b[::-1], x0, reverse=False)[::-1]
    n = b.shape[0]
    y = b.at[0].add(F @ x0)
    power = F
    shift = 1
    while shift < n:  # static: ceil(log2 n) levels
        y = jnp.concatenate([y[:shift], y[shift:] + y[:-shift] @ power.T], axis=0)
        power = power @ power
        shift *= 2
    return y


def _blocked(F: jax.Array, b: jax.Array, x0: jax.Array, L: int, reverse: bool) -> jax.Array:
    """Run the recursion in blocks of ``L`` rows (``1 < L < n``; else the plain form).

    (1) Every block runs its recursion from zero, all blocks at once (``L`` steps of a
    ``[n/L, D] @ [D, D]`` product); (2) the states entering the blocks follow by a scan over
    the ``n / L`` blocks with ``F^L``; (3) ``F^{j+1}`` times the entering state is added to
    row ``j`` of each block. A last block shorter than ``L`` is padded with zero rows.
    """
    n, D = b.shape
    if reverse:
        return _blocked(F, b[::-1], x0, L=L, reverse=False)[::-1]
    if L <= 1 or L >= n:
        return _plain(F, b, x0, reverse=False)
    nb = -(-n // L)
    bb = jnp.concatenate([b, jnp.zeros((nb * L - n, D), b.dtype)], axis=0)
    bb = bb.reshape(nb, L, D).transpose(1, 0, 2)  # [L, nb, D]

    # (1) zero-start solutions of all blocks at once, and the powers F^1..F^L.
    def local(carry, bj):
        Z, Fp = carry
        Z = Z @ F.T + bj
        return (Z, F @ Fp), (Z, Fp)

    (_, _), (Z, Fpow) = jax.lax.scan(local, (jnp.zeros((nb, D), b.dtype), F), bb)
    F_L = Fpow[-1]

    # (2) the state entering each block.
    def boundary(x, z_last):
        return F_L @ x + z_last, x

    _, entering = jax.lax.scan(boundary, x0, Z[-1])  # [nb, D]
    # (3) x_{i, j} = Z_{i, j} + F^{j+1} x_entering_i.
    X = Z + jnp.einsum("jab,ib->jia", Fpow, entering)
    return X.transpose(1, 0, 2).reshape(nb * L, D)[:n]
