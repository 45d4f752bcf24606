r"""The chunked (time-sharded) schedule: per-chunk work, an exact combine across chunks.

The series ``y_1..y_N`` is cut into ``C`` contiguous chunks of ``L = ceil(N / C)`` steps
(the last one padded by repeating the last row; see below). The filter runs in three phases:

1. **Local.** Each chunk builds its filtering elements (:mod:`jaxssm._blocks.elements`: the
   first chunk's first element conditions on ``(m0, P0)``, every other element is generic) and
   their local prefixes, either sequentially (``within="sequential"``: one ``lax.scan`` of
   the associative operator) or as a local associative scan (``within="associative"``).
   The last prefix is the chunk's *summary*.
2. **Across.** The ``C`` summaries are combined with the same associative operator (Sarkka
   and Garcia-Fernandez, 2021) into exclusive prefixes: for chunk ``c > 0`` the filtered
   distribution of the state just before it; for chunk 0 the identity element.
3. **Finish.** Each chunk combines its incoming prefix with each of its local prefixes
   (batched over the chunk's steps), which gives its filtered moments; the predicted
   moments and the per-step log-likelihood follow as in
   :func:`jaxssm._schedules.parallel.filter`.

The smoother does the same backwards over the smoothing elements, whose suffixes within a
chunk map the first state of the next chunk to each state of the chunk; the exclusive
suffixes across chunks are the smoothed marginals at the chunk boundaries.

Because every combine is the exact associative operator, the result equals the sequential
filter and smoother up to round-off, for any ``C``. The chunks either run on one device,
vmapped over a chunk axis (``mesh=None``), or one per device of a mesh axis under
:func:`jax.shard_map` (the summaries are exchanged with one
``all_gather`` of ``C`` elements; the per-step arrays never leave their device). The
``shard_map`` runs with ``check_vma=False``: the per-step algebra's loops start their carries
from constants, which the varying-axis type check would reject; the body's only collectives
are the ``all_gather`` and one ``psum`` of the log-likelihood, whose results are the same on
every device.

**Padding.** Rows after ``y_N`` repeat ``y_N``; they follow every real step, so they do not
enter the filtered moments of real steps; their log-likelihood terms are masked out; and the
smoothing element of step ``N`` is the final filtered distribution with ``E_N = 0``, which
annihilates whatever (finite) elements follow it. Their outputs are dropped.

A concrete ``ys`` whose sharding splits time over one mesh axis (:func:`time_sharding`) is
what the dispatcher runs on this schedule with ``method="parallel"``.

:func:`filter` and :func:`smooth` are unchecked and meant to be called inside ``jit``.

References:
    S. Sarkka and A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian smoothers",
    IEEE Transactions on Automatic Control 66(1):299-306, 2021.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxssm import steps
from jaxssm._base.batching import batched
from jaxssm._base.linalg import symmetrize
from jaxssm._base.types import LGSSM, FilterResult, SmootherResult
from jaxssm._blocks.elements import (
    FilterElement,
    SmoothElement,
    filter_combine,
    filter_element,
    log_likelihood_step,
    smooth_combine,
    smooth_element,
)
from jaxssm._schedules.parallel import filter_elements

__all__ = ["WITHIN", "chunk_length", "time_sharding", "filter", "smooth"]

#: How each chunk computes its local prefixes.
WITHIN = ("sequential", "associative")


def chunk_length(num_steps: int, num_chunks: int) -> int:
    """``L = ceil(N / C)``: the steps per chunk (static)."""
    return -(-num_steps // num_chunks)


def time_sharding(ys) -> tuple[Mesh, str] | None:
    """Return the mesh and axis that a concrete ``ys [N, Dy]`` is split over in time, or None.

    ``ys`` is time-sharded when it is a concrete :class:`jax.Array` (not a tracer under
    ``jit``) whose sharding is a :class:`~jax.sharding.NamedSharding` that splits axis 0
    over exactly one mesh axis of more than one device.
    """
    if not isinstance(ys, jax.Array) or isinstance(ys, jax.core.Tracer) or ys.ndim != 2:
        return None
    sharding = ys.sharding
    if not isinstance(sharding, NamedSharding) or not sharding.spec or sharding.spec[0] is None:
        return None
    names = sharding.spec[0] if isinstance(sharding.spec[0], tuple) else (sharding.spec[0],)
    if len(names) != 1 or sharding.mesh.shape[names[0]] < 2:
        return None
    return sharding.mesh, names[0]


def _tree_map(fn, *trees):
    return jax.tree_util.tree_map(fn, *trees)


def _first(tree):
    return _tree_map(lambda x: x[0], tree)


def _cat(head, tail):
    """Prepend one element (no leading axis) to a stacked element."""
    return _tree_map(lambda h, t: jnp.concatenate([h[None], t], axis=0), head, tail)


def _identity_filter(params: LGSSM) -> FilterElement:
    """Return ``(I, 0, 0, 0, 0)``, the identity of :func:`filter_combine`."""
    zeros = jnp.zeros_like(params.A)
    eye = jnp.eye(params.A.shape[0], dtype=params.A.dtype)
    return FilterElement(eye, jnp.zeros_like(params.m0), zeros, jnp.zeros_like(params.m0), zeros)


def _identity_smooth(params: LGSSM) -> SmoothElement:
    """Return ``(I, 0, 0)``, the identity of :func:`smooth_combine`."""
    eye = jnp.eye(params.A.shape[0], dtype=params.A.dtype)
    return SmoothElement(eye, jnp.zeros_like(params.m0), jnp.zeros_like(params.A))


def _symmetrized(params: LGSSM) -> LGSSM:
    # As parallel.filter: exactly symmetric inputs are unchanged, gradients come out symmetric.
    return params._replace(P0=symmetrize(params.P0), Q=symmetrize(params.Q), R=symmetrize(params.R))


# ----------------------------------------------------------------------------------------
# Filter: the three phases, each over one chunk
# ----------------------------------------------------------------------------------------


def _chunk_filter_elements(params: LGSSM, ys: jax.Array, chunk: jax.Array) -> FilterElement:
    """Build the filtering elements of one chunk ``ys [L, Dy]`` (``[L, ...]`` leaves).

    Chunk 0 gets :func:`jaxssm._schedules.parallel.filter_elements` (its first element
    conditions on the prior); any other chunk the same elements with the first one generic.
    """
    elems = filter_elements(params, ys)
    generic0 = filter_element(params, ys[0])
    return _tree_map(lambda e, g: e.at[0].set(jnp.where(chunk == 0, e[0], g)), elems, generic0)


def _filter_prefixes(elems: FilterElement, within: str) -> FilterElement:
    """Inclusive prefixes of one chunk's elements (sequential scan or associative scan)."""
    if within == "associative":
        return lax.associative_scan(batched(filter_combine), elems)

    def body(acc, elem):
        acc = filter_combine(acc, elem)
        return acc, acc

    first = _first(elems)
    _, rest = lax.scan(body, first, _tree_map(lambda x: x[1:], elems))
    return _cat(first, rest)


def _filter_local(params, ys, chunk, within):
    prefixes = _filter_prefixes(_chunk_filter_elements(params, ys, chunk), within)
    return prefixes, _tree_map(lambda x: x[-1], prefixes)


def _exclusive_filter(params: LGSSM, totals: FilterElement, chunk: jax.Array) -> FilterElement:
    """Combine of the summaries of chunks ``0..chunk-1`` (identity for chunk 0)."""
    inclusive = lax.associative_scan(jax.vmap(filter_combine), totals)
    before = _tree_map(lambda x: x[jnp.maximum(chunk - 1, 0)], inclusive)
    return _tree_map(lambda i, b: jnp.where(chunk == 0, i, b), _identity_filter(params), before)


def _filter_finish(params, ys, chunk, prefixes, incoming, num_steps):
    """Finish one chunk: filtered and predicted moments, summed log-likelihood of real steps."""
    L = ys.shape[0]
    done = batched(lambda p: filter_combine(incoming, p))(prefixes)
    means, covs = done.b, done.C
    # The filtered moments before each step: the incoming ones (the prior for chunk 0), then
    # the chunk's own.
    m_in = jnp.where(chunk == 0, params.m0, incoming.b)
    P_in = jnp.where(chunk == 0, params.P0, incoming.C)
    prev_means = jnp.concatenate([m_in[None], means[:-1]], axis=0)
    prev_covs = jnp.concatenate([P_in[None], covs[:-1]], axis=0)
    pred = jax.vmap(steps.predict, in_axes=(0, 0, None, None))(
        prev_means, prev_covs, params.A, params.Q
    )
    lls = batched(lambda m, Pc, y: log_likelihood_step(m, Pc, params.H, params.R, y))(
        pred.mean, pred.cov, ys
    )
    real = chunk * L + jnp.arange(L, dtype=jnp.asarray(chunk).dtype) < num_steps
    ll = jnp.sum(jnp.where(real, lls, jnp.zeros_like(lls)))
    return means, covs, pred.mean, pred.cov, ll


# ----------------------------------------------------------------------------------------
# Smoother: the same, backwards
# ----------------------------------------------------------------------------------------


def _chunk_smooth_elements(params, means, covs, chunk, num_steps) -> SmoothElement:
    """Smoothing elements of one chunk's steps (``[L, ...]``); step ``N``'s is the last one."""
    L = means.shape[0]
    pred = jax.vmap(steps.predict, in_axes=(0, 0, None, None))(means, covs, params.A, params.Q)
    body = batched(lambda m, Pc, mp, Pp: smooth_element(m, Pc, mp, Pp, params.A))(
        means, covs, pred.mean, pred.cov
    )
    last = SmoothElement(jnp.zeros_like(covs), means, covs)
    is_last = chunk * L + jnp.arange(L, dtype=jnp.asarray(chunk).dtype) + 1 == num_steps

    def pick(b, f):
        return jnp.where(is_last.reshape((L,) + (1,) * (b.ndim - 1)), f, b)

    return _tree_map(pick, body, last)


def _smooth_suffixes(elems: SmoothElement, within: str) -> SmoothElement:
    """Suffixes of one chunk's smoothing elements, as functions of the next chunk's first state."""
    if within == "associative":
        return lax.associative_scan(jax.vmap(smooth_combine), elems, reverse=True)

    def body(acc, elem):
        acc = smooth_combine(acc, elem)
        return acc, acc

    last = _tree_map(lambda x: x[-1], elems)
    _, rest = lax.scan(body, last, _tree_map(lambda x: x[:-1], elems), reverse=True)
    return _tree_map(lambda r, x: jnp.concatenate([r, x[None]], axis=0), rest, last)


def _smooth_local(params, means, covs, chunk, num_steps, within):
    elems = _chunk_smooth_elements(params, means, covs, chunk, num_steps)
    suffixes = _smooth_suffixes(elems, within)
    return elems.E, suffixes, _first(suffixes)


def _exclusive_smooth(params: LGSSM, totals: SmoothElement, chunk: jax.Array) -> SmoothElement:
    """Combine of the summaries of the chunks after ``chunk`` (identity for the last)."""
    inclusive = lax.associative_scan(jax.vmap(smooth_combine), totals, reverse=True)
    num_chunks = totals.E.shape[0]
    after = _tree_map(lambda x: x[jnp.minimum(chunk + 1, num_chunks - 1)], inclusive)
    is_last = chunk == num_chunks - 1
    return _tree_map(lambda i, a: jnp.where(is_last, i, a), _identity_smooth(params), after)


def _smooth_finish(suffixes: SmoothElement, incoming: SmoothElement):
    done = jax.vmap(lambda s: smooth_combine(incoming, s))(suffixes)
    return done.g, done.L


# ----------------------------------------------------------------------------------------
# Drivers: one device (vmap over chunks) or one chunk per device (shard_map)
# ----------------------------------------------------------------------------------------


class _Chunked(NamedTuple):
    """Per-step filter outputs in the chunked layout ``[C * L, ...]`` and the log-likelihood."""

    means: jax.Array
    covs: jax.Array
    pred_means: jax.Array
    pred_covs: jax.Array
    log_likelihood: jax.Array


def _pad(ys: jax.Array, num_chunks: int) -> jax.Array:
    N = ys.shape[0]
    pad = num_chunks * chunk_length(N, num_chunks) - N
    return jnp.concatenate([ys, jnp.repeat(ys[-1:], pad, axis=0)], axis=0) if pad else ys


def _place(x, mesh: Mesh, spec: P):
    """Lay ``x`` out as ``spec`` over ``mesh`` (``reshard`` on explicit axes, else a constraint)."""
    sharding = NamedSharding(mesh, spec)
    if any(t == AxisType.Explicit for t in mesh.axis_types):
        return jax.reshard(x, sharding)
    return lax.with_sharding_constraint(x, sharding)


def _assembled(tree, mesh: Mesh | None):
    """Per-step outputs ready to be sliced into the ``N + 1``-row results.

    On a mesh with explicit axes a sharded array cannot be sliced to a length the axis does
    not divide, so the outputs are resharded to replicated there; with automatic axes
    (and on one device) they are left to the compiler.
    """
    if mesh is None or not any(t == AxisType.Explicit for t in mesh.axis_types):
        return tree
    return _tree_map(lambda x: jax.reshard(x, NamedSharding(mesh, P())), tree)


def _to_chunks(x, num_chunks):
    return x.reshape((num_chunks, -1) + x.shape[1:])


def _from_chunks(x):
    return x.reshape((-1,) + x.shape[2:])


def _filter_chunked(params, ys, num_chunks, mesh, axis_name, within) -> _Chunked:
    N = ys.shape[0]
    padded = _pad(ys, num_chunks)
    if mesh is None:
        chunks = jnp.arange(num_chunks)
        ys_c = _to_chunks(padded, num_chunks)
        prefixes, totals = jax.vmap(lambda y, c: _filter_local(params, y, c, within))(ys_c, chunks)
        incoming = jax.vmap(lambda c: _exclusive_filter(params, totals, c))(chunks)
        out = jax.vmap(lambda y, c, p, i: _filter_finish(params, y, c, p, i, N))(
            ys_c, chunks, prefixes, incoming
        )
        m, Pc, pm, pP, lls = out
        return _Chunked(*map(_from_chunks, (m, Pc, pm, pP)), jnp.sum(lls))

    def body(p, y):
        chunk = lax.axis_index(axis_name)
        prefixes, total = _filter_local(p, y, chunk, within)
        totals = _tree_map(lambda x: lax.all_gather(x, axis_name), total)
        incoming = _exclusive_filter(p, totals, chunk)
        m, Pc, pm, pP, ll = _filter_finish(p, y, chunk, prefixes, incoming, N)
        return m, Pc, pm, pP, lax.psum(ll, axis_name)

    rows = P(axis_name)
    fn = jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(P(), rows),
        out_specs=(rows, rows, rows, rows, P()),
        check_vma=False,
    )
    return _Chunked(*fn(params, _place(padded, mesh, rows)))


def _smooth_chunked(params, chunked: _Chunked, N, num_chunks, mesh, axis_name, within):
    if mesh is None:
        chunks = jnp.arange(num_chunks)
        m_c, P_c = _to_chunks(chunked.means, num_chunks), _to_chunks(chunked.covs, num_chunks)
        gains, suffixes, totals = jax.vmap(
            lambda m, Pc, c: _smooth_local(params, m, Pc, c, N, within)
        )(m_c, P_c, chunks)
        incoming = jax.vmap(lambda c: _exclusive_smooth(params, totals, c))(chunks)
        means, covs = jax.vmap(_smooth_finish)(suffixes, incoming)
        return _from_chunks(means), _from_chunks(covs), _from_chunks(gains)

    def body(p, m, Pc):
        chunk = lax.axis_index(axis_name)
        gains, suffixes, total = _smooth_local(p, m, Pc, chunk, N, within)
        totals = _tree_map(lambda x: lax.all_gather(x, axis_name), total)
        means, covs = _smooth_finish(suffixes, _exclusive_smooth(p, totals, chunk))
        return means, covs, gains

    rows = P(axis_name)
    fn = jax.shard_map(
        body, mesh=mesh, in_specs=(P(), rows, rows), out_specs=(rows, rows, rows), check_vma=False
    )
    return fn(params, chunked.means, chunked.covs)


def _filter_result(params: LGSSM, chunked: _Chunked, N: int) -> FilterResult:
    return FilterResult(
        jnp.concatenate([params.m0[None], chunked.means[:N]], axis=0),
        jnp.concatenate([params.P0[None], chunked.covs[:N]], axis=0),
        chunked.pred_means[:N],
        chunked.pred_covs[:N],
        chunked.log_likelihood,
    )


def filter(
    params: LGSSM,
    ys: jax.Array,
    num_chunks: int,
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    within: str = "sequential",
) -> FilterResult:
    """Chunked Kalman filter of ``ys [N, Dy]``.

    Args:
        params: an :class:`~jaxssm.LGSSM` without inputs, offsets or time-varying fields
            (unchecked).
        ys: ``[N, Dy]``.
        num_chunks: ``C``; with a mesh, the size of its ``axis_name`` axis.
        mesh: ``None`` (all chunks on one device, vmapped) or a :class:`jax.sharding.Mesh`
            whose ``axis_name`` axis holds one chunk per device (``jax.shard_map``).
        axis_name: the mesh axis the time axis is split over.
        within: ``"sequential"`` or ``"associative"`` (see the module docstring).

    Returns:
        The :class:`~jaxssm.FilterResult` of the whole series (``N + 1`` rows), equal to the
        sequential one up to round-off.
    """
    params = _symmetrized(params)
    chunked = _filter_chunked(params, ys, num_chunks, mesh, axis_name, within)
    return _filter_result(params, _assembled(chunked, mesh), ys.shape[0])


def smooth(
    params: LGSSM,
    ys: jax.Array,
    num_chunks: int,
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    within: str = "sequential",
) -> SmootherResult:
    """Chunked Kalman filter and RTS smoother of ``ys [N, Dy]``.

    Args:
        params: as :func:`filter`.
        ys: ``[N, Dy]``.
        num_chunks: as :func:`filter`.
        mesh: as :func:`filter`.
        axis_name: as :func:`filter`.
        within: as :func:`filter`.

    Returns:
        The :class:`~jaxssm.SmootherResult` of the whole series (``N + 1`` rows), equal to the
        sequential one up to round-off.
    """
    params = _symmetrized(params)
    N = ys.shape[0]
    chunked = _filter_chunked(params, ys, num_chunks, mesh, axis_name, within)
    smoothed = _smooth_chunked(params, chunked, N, num_chunks, mesh, axis_name, within)
    chunked, (means, covs, gains) = _assembled((chunked, smoothed), mesh)
    # Step 0 (x_0 given x_1) is one ordinary RTS step from the prior.
    first = steps.smooth_step(
        params.m0,
        params.P0,
        chunked.pred_means[0],
        chunked.pred_covs[0],
        means[0],
        covs[0],
        params.A,
    )
    return SmootherResult(
        jnp.concatenate([first.mean[None], means[:N]], axis=0),
        jnp.concatenate([first.cov[None], covs[:N]], axis=0),
        jnp.concatenate([first.gain[None], gains[: N - 1]], axis=0),
        chunked.log_likelihood,
    )
