r"""Many devices and hosts: sharded batches of sequences and the time-sharded schedule.

jaxssm runs on JAX's own distributed machinery (:mod:`jax.sharding` meshes,
:func:`jax.shard_map`, :func:`jax.distributed.initialize`); nothing here is a layer of its
own.

**A batch of sequences** ``ys [B, N, Dy]`` placed with :func:`shard_batch` (a
:class:`~jax.sharding.NamedSharding` over one mesh axis) goes straight into
:func:`~jaxssm.e_step`, :func:`~jaxssm.fit_em`, :func:`~jaxssm.fit_mle` and
:func:`~jaxssm.log_likelihood`: ``jit`` partitions the per-sequence smoothers over the
devices and reduces the pooled statistics (and the log-likelihood and its gradient) with
all-reduces; the batch is never gathered to one device. The results equal the one-device
ones to round-off (the sums run in a different order).

**One long series** is split over time by :func:`chunked_filter` / :func:`chunked_smoother`
with ``mesh=``: one contiguous chunk per device of a mesh axis, the chunk summaries combined
exactly with the associative operators of Sarkka and Garcia-Fernandez (2021), each device
finishing its chunk locally. Without ``mesh`` the same schedule runs ``num_chunks`` chunks on
one device. :func:`~jaxssm.kalman_filter`, :func:`~jaxssm.rts_smoother` and
:func:`~jaxssm.log_likelihood` with ``method="parallel"`` run it by themselves on a concrete
``ys`` split over time on a mesh axis (:func:`time_sharding`).

On several hosts call :func:`jax.distributed.initialize` first in every process; meshes
made here then span every process's devices, and :func:`shard_batch` takes each process's
own rows of the batch.

References:
    S. Sarkka and A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian smoothers",
    IEEE Transactions on Automatic Control 66(1):299-306, 2021.
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from jaxssm._args.checks import check_int
from jaxssm._args.prologue import prologue
from jaxssm._base import compile as _compile
from jaxssm._base.types import LGSSM, FilterResult, SmootherResult
from jaxssm._schedules import chunked as _chunked

__all__ = [
    "device_mesh",
    "shard_batch",
    "chunked_filter",
    "chunked_smoother",
    "time_sharding",
]


def device_mesh(axis_name: str = "batch", devices=None) -> Mesh:
    """Make a one-axis mesh over ``devices`` (default: every device of every process).

    Its axis is automatic (:attr:`jax.sharding.AxisType.Auto`): ``jit`` propagates the
    sharding of the inputs through the library's functions.

    Args:
        axis_name: the name of the mesh axis.
        devices: a sequence of devices; ``None`` for :func:`jax.devices`.

    Returns:
        A :class:`jax.sharding.Mesh` of shape ``(len(devices),)``.

    Raises:
        TypeError: ``axis_name`` is not a str (``device_mesh(3)`` names no device count: pass
            ``devices=jax.devices()[:3]``), or ``devices`` holds something not a device.
        ValueError: ``devices`` is empty or repeats a device.
    """
    if not isinstance(axis_name, str):
        what = f"the int {axis_name}" if isinstance(axis_name, int) else repr(axis_name)
        raise TypeError(
            f"axis_name must be a str (the mesh axis's name), got {what}; for a mesh over n "
            f"devices pass devices=jax.devices()[:n] (this process sees "
            f"{len(jax.devices())} device(s))"
        )
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must hold at least one device, got an empty sequence")
    bad = [d for d in devices if not isinstance(d, jax.Device)]
    if bad:
        raise TypeError(
            f"devices must hold jax.Device objects (from jax.devices()), got {bad[0]!r}"
        )
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices must not repeat a device, got {devices}")
    return Mesh(np.asarray(devices), (axis_name,), axis_types=(AxisType.Auto,))


def _axis(mesh: Mesh, axis_name: str | None) -> str:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis_name is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(
                f"axis_name is needed for a mesh with several axes, got axes {mesh.axis_names}"
            )
        return mesh.axis_names[0]
    if axis_name not in mesh.axis_names:
        raise ValueError(f"axis_name {axis_name!r} is not an axis of the mesh {mesh.axis_names}")
    return axis_name


def shard_batch(ys: ArrayLike, mesh: Mesh | None = None, axis_name: str | None = None):
    """Place a batch ``ys [B, N, Dy]`` with its sequences split over one mesh axis.

    On one process ``ys`` is the whole batch; on several (after
    :func:`jax.distributed.initialize`) it is this process's rows, and the global batch is
    their concatenation in process order. The global ``B`` must be a multiple of the axis
    size (pad a short batch with whole sequences of your own; a fully missing (all-NaN)
    sequence adds nothing to the statistics once missing data is supported).

    Args:
        ys: ``[B, N, Dy]`` (this process's ``[B / num_processes, N, Dy]``).
        mesh: a :class:`jax.sharding.Mesh`; ``None`` for :func:`device_mesh` over every
            device.
        axis_name: the mesh axis to split the batch over (the mesh's only axis by default).

    Returns:
        A global :class:`jax.Array` ``[B, N, Dy]`` with sharding
        ``NamedSharding(mesh, P(axis_name))``, for :func:`~jaxssm.e_step`,
        :func:`~jaxssm.fit_em`, :func:`~jaxssm.fit_mle` and :func:`~jaxssm.log_likelihood`.

    Raises:
        ValueError: ``ys`` is not 3-D, or ``B`` is not a multiple of the axis size.
    """
    mesh = device_mesh() if mesh is None else mesh
    axis_name = _axis(mesh, axis_name)
    local = np.asarray(ys) if not isinstance(ys, jax.Array) else ys
    if local.ndim != 3:
        raise ValueError(f"ys must have shape [B, N, Dy], got shape {tuple(local.shape)}")
    size = mesh.shape[axis_name]
    global_batch = local.shape[0] * jax.process_count()
    if global_batch % size:
        raise ValueError(
            f"the batch of {global_batch} sequences must be a multiple of the {size} devices "
            f"of mesh axis {axis_name!r}"
        )
    sharding = NamedSharding(mesh, P(axis_name))
    return jax.make_array_from_process_local_data(sharding, local)


def _schedule_args(mesh, axis_name, num_chunks, within):
    if within not in _chunked.WITHIN:
        raise ValueError(f"within must be 'sequential' or 'associative', got {within!r}")
    if mesh is not None:
        axis_name = _axis(mesh, axis_name)
        size = mesh.shape[axis_name]
        if num_chunks is not None and num_chunks != size:
            raise ValueError(
                f"with a mesh, num_chunks is the size of axis {axis_name!r} ({size}), "
                f"got {num_chunks}"
            )
        return mesh, axis_name, size
    hint = "without a mesh, num_chunks is the number of chunks (or pass mesh=)"
    num_chunks = check_int(num_chunks, "num_chunks", hint=hint)
    return None, None, num_chunks


_PROGRAMS = {
    name: partial(_compile.jit, static_argnums=(2, 3, 4, 5))(fn)
    for name, fn in (("chunked_filter", _chunked.filter), ("chunked_smoother", _chunked.smooth))
}


def _chunked_schedule(where, params, ys, mesh, axis_name, num_chunks, within):
    """Check the arguments of :func:`chunked_filter` / :func:`chunked_smoother` and run."""
    mesh, axis_name, num_chunks = _schedule_args(mesh, axis_name, num_chunks, within)
    params, ys, _, _ = prologue(params, ys, plain=where)
    return _PROGRAMS[where](params, ys, num_chunks, mesh, axis_name, within)


def time_sharding(ys) -> tuple[Mesh, str] | None:
    """Return the mesh and axis that a concrete ``ys [N, Dy]`` is split over in time, or None.

    ``ys`` is time-sharded when it is a concrete :class:`jax.Array` (not a tracer under
    ``jit``) whose sharding is a :class:`~jax.sharding.NamedSharding` that splits axis 0
    over exactly one mesh axis of more than one device. The public entry points with
    ``method="parallel"`` then run the chunked schedule over that axis, as
    :func:`chunked_filter` / :func:`chunked_smoother` do with ``mesh=``.
    """
    return _chunked.time_sharding(ys)


def chunked_filter(
    params: LGSSM,
    ys: ArrayLike,
    *,
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    num_chunks: int | None = None,
    within: str = "sequential",
) -> FilterResult:
    """Kalman filter of one series split into contiguous chunks over time.

    Each chunk computes its local prefixes of the filtering elements, the chunk summaries
    are combined exactly across chunks, and each chunk finishes locally; the result is that
    of :func:`~jaxssm.kalman_filter` to round-off, for any ``N`` (the last chunk is padded
    internally).

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``[N, Dy]``.
        mesh: a :class:`jax.sharding.Mesh`: one chunk per device of ``axis_name``, under
            :func:`jax.shard_map`. ``None``: ``num_chunks`` chunks on one device.
        axis_name: the mesh axis to split time over (the mesh's only axis by default).
        num_chunks: the number of chunks without a mesh (with one, its axis size).
        within: how a chunk computes its prefixes: ``"sequential"`` (a ``lax.scan`` of the
            associative operator) or ``"associative"`` (a local associative scan).

    Returns:
        :class:`~jaxssm.FilterResult`, as :func:`~jaxssm.kalman_filter`.

    Raises:
        ValueError, TypeError: bad parameters or shapes (as :func:`~jaxssm.kalman_filter`),
            an unknown ``within``, a bad ``num_chunks`` or ``axis_name``.

    References:
        Sarkka and Garcia-Fernandez (2021).
    """
    return _chunked_schedule("chunked_filter", params, ys, mesh, axis_name, num_chunks, within)


def chunked_smoother(
    params: LGSSM,
    ys: ArrayLike,
    *,
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    num_chunks: int | None = None,
    within: str = "sequential",
) -> SmootherResult:
    """Kalman filter and RTS smoother of one series split into chunks over time.

    The filter as :func:`chunked_filter`, then the smoothing elements' suffixes per chunk,
    their summaries combined exactly across chunks (backwards), and each chunk finishing
    locally; the result is that of :func:`~jaxssm.rts_smoother` to round-off.

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``[N, Dy]``.
        mesh: as :func:`chunked_filter`.
        axis_name: as :func:`chunked_filter`.
        num_chunks: as :func:`chunked_filter`.
        within: as :func:`chunked_filter`.

    Returns:
        :class:`~jaxssm.SmootherResult`, as :func:`~jaxssm.rts_smoother`.

    Raises:
        ValueError, TypeError: as :func:`chunked_filter`.
    """
    return _chunked_schedule("chunked_smoother", params, ys, mesh, axis_name, num_chunks, within)
