r"""The map over time of per-step algebra: ``jax.vmap``, in tiles on CPU.

The associative-scan schedules, the parallel posterior sampler and the filter diagnostics
apply a per-step function to every step at once. :func:`batched` is the one way they do it:
``jax.vmap`` over the leading axis of every argument, and on CPU a ``lax.map`` over tiles of
:data:`CPU_TILE` steps, each tile vmapped. The per-step algebra there is made of small loops
over the matrix dimension (:data:`jaxssm._base.linalg.BATCHED`); vmapped over all ``N`` steps,
every iteration of such a loop sweeps the whole ``[N, D, ...]`` batch through memory, while a
tile stays in cache. The two forms give the same values; the choice follows the platform the
program is compiled for (:func:`jaxssm._base.platform.cpu_or_default`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxssm._base.platform import cpu_or_default

__all__ = ["CPU_TILE", "batched"]

#: Steps per tile of :func:`batched` on CPU (read when a program is traced).
CPU_TILE = 32


def _tiled(vfn: Callable, size: int, tile: int, *args):
    """``vfn(*args)`` as a ``lax.map`` over tiles of ``tile`` rows of the leading axis.

    The batch is padded to a whole number of tiles by repeating its last row (valid
    inputs, so the discarded rows produce no NaNs, nor NaN gradients).
    """
    num_tiles = -(-size // tile)
    pad = num_tiles * tile - size

    def to_tiles(x):
        if pad:
            x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)
        return x.reshape((num_tiles, tile) + x.shape[1:])

    out = lax.map(lambda a: vfn(*a), jax.tree_util.tree_map(to_tiles, args))
    return jax.tree_util.tree_map(
        lambda y: y.reshape((num_tiles * tile,) + y.shape[2:])[:size], out
    )


def batched(fn: Callable) -> Callable:
    """``jax.vmap(fn)`` over the leading axis of every argument; on CPU, tile by tile.

    Args:
        fn: a function of one step: arrays (pytrees, ``None`` leaves allowed) without the
            leading axis, to arrays.

    Returns:
        A function of the same arguments with a leading axis of one common length ``N``,
        returning ``fn``'s outputs stacked along a leading axis of length ``N``: on CPU and
        for ``N > CPU_TILE``, ``lax.map`` over ``ceil(N / CPU_TILE)`` vmapped tiles;
        otherwise ``jax.vmap(fn)``.
    """
    vfn = jax.vmap(fn)

    def run(*args):
        size = jax.tree_util.tree_leaves(args)[0].shape[0]
        tile = CPU_TILE
        if size <= tile:
            return vfn(*args)
        return cpu_or_default(functools.partial(_tiled, vfn, size, tile), vfn)(*args)

    return run
