r"""The steady-state schedule: exact inference at the cost of the means.

For a time-invariant model (fixed ``A, Q, H, R``, every ``y_k`` observed) the filter
covariances follow the Riccati recursion

.. math::

    P_k^- = A P_{k-1} A^\top + Q, \qquad
    P_k = P_k^- - P_k^- H^\top (H P_k^- H^\top + R)^{-1} H P_k^-,

which does not depend on the data and, for a stabilisable and detectable model, converges
geometrically to a fixed point :math:`P_\infty`. Once it has, the Kalman gain ``K``, the
innovation covariance ``S`` and the smoother gain ``G`` are constant too, and the smoother
covariance obeys the Stein recursion :math:`P_k^s = P + G (P_{k+1}^s - P^-) G^\top` backward
from :math:`P_N^s = P_N`, which converges at the rate :math:`\rho(G)^2`. The series therefore
has three regions:

* start, ``k = 0..T``: transient filter covariances (computed step by step) and the smoother
  covariance recursion run backward from :math:`P^s_\infty` through them;
* middle, ``k = T+1..N-T-1``: every covariance and gain is constant;
* end, ``k = N-T..N``: the backward Stein transient :math:`X_j = P^s_{N-j}`, ``j = 0..T``.

``T`` is a static bound (:func:`transient_bound`). The ``O(D^3)`` work is in three loops over
at most ``T`` steps, run in chunks: ``lax.while_loop``\ s that stop once a whole chunk has
settled (under ``jvp``/``grad`` the same values come from scans whose remaining chunks are
skipped by ``lax.cond``), so only the transient actually present costs covariance steps. Over
the full series only the means run, as linear recursions with constant matrices
(``O(N D^2)``). The EM sums are transient sums + count x steady terms + a few
``[D, N] @ [N, D]`` products; no ``[N, D, D]`` array is formed.

Every covariance-side step is the one of :mod:`jaxssm.steps`, so the transient covariances
are the ones the full recursion computes. The transient ends after the last step at which
the covariance changed by more than ``rtol`` on the correlation scale (default
``1e4 * eps``); whether the fast path is exact to the 1e-10 the tests hold it to, and what
was measured, is in ``docs/numerics.md`` of the source repository.

This module assumes convergence: the functions that return results take the covariance side
as an argument, and :mod:`jaxssm._schedules.dispatch` decides, on device, whether to use them or the
full recursion. All functions are unchecked and meant to be called inside ``jit``.

References:
    B. D. O. Anderson and J. B. Moore, *Optimal Filtering* (1979), ch. 4.
    S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorems 4.2, 8.2 and 12.5.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._base.linalg import LAPACK
from jaxssm._base.types import LGSSM, FilterResult, SmootherResult, SteadyInfo, SufficientStats
from jaxssm._blocks import stats as _stats

__all__ = [
    "DEFAULT_MAX_TRANSIENT",
    "default_rtol",
    "transient_bound",
    "FilterSide",
    "SmootherSide",
    "filter_side",
    "smoother_side",
    "filter",
    "log_likelihood",
    "smooth",
    "stats",
    "SteadyPoint",
    "steady_point",
    "GappyForward",
    "gappy_forward",
    "gappy_filter",
    "gappy_smooth",
    "gappy_stats",
]

#: Default bound on each transient (rounded down to a multiple of the chunk: 992). Only the
#: transient actually present (rounded up to whole chunks) costs covariance steps; the bound
#: decides when to give up and run the full recursion.
DEFAULT_MAX_TRANSIENT = 1000

#: Steps per chunk of the transient scans.
_CHUNK = 32


def default_rtol(dtype) -> float:
    """Return the default convergence tolerance, ``1e4 * eps`` of ``dtype`` (2.2e-12 in f64)."""
    return 1e4 * float(jnp.finfo(dtype).eps)


def _chunk(T: int) -> int:
    """Chunk length of the transient scans for a bound ``T``: ``min(32, max(1, T // 4))``."""
    return min(_CHUNK, max(1, T // 4))


def transient_bound(num_steps: int, max_transient: int = DEFAULT_MAX_TRANSIENT) -> int:
    """Return the static transient bound ``T`` for a series of ``N = num_steps`` steps.

    ``T0 = min(max_transient, N // 3)``, rounded down to a multiple of the chunk length
    ``min(32, max(1, T0 // 4))``. The three regions need ``N >= 2 T + 1``; capping ``T`` at
    ``N // 3`` also keeps the covariance work below the full path's. 0 means the series is
    too short for this schedule.
    """
    if not isinstance(max_transient, int) or isinstance(max_transient, bool) or max_transient < 1:
        raise ValueError(f"max_transient must be a positive int, got {max_transient!r}")
    T0 = min(int(max_transient), int(num_steps) // 3)
    if T0 < 1:
        return 0
    chunk = _chunk(T0)
    return chunk * (T0 // chunk)


class FilterSide(NamedTuple):
    """The data-independent side of the fast filter for one model and bound ``T``.

    The ``[T, ...]`` arrays hold the steps of the chunks the covariance loop computed; rows of
    the chunks after the first settled one are not computed and hold no meaningful value.
    Every reader takes the rows of the *transient chunks* only (chunks that start before
    ``transient``, :func:`transient_rows`; all of them were computed) and the steady
    quantities elsewhere, so no ``[T, D, D]`` array is filled or copied after the loop.

    Attributes:
        pred_covs: predicted covariances ``P_k^-``, ``k = 1..T``, ``[T, D, D]``.
        covs: filtered covariances ``P_k``, ``k = 0..T-1``, ``[T, D, D]`` (row 0 is ``P0``).
        chols: Cholesky factors of ``S_k``, ``k = 1..T``, ``[T, Dy, Dy]``.
        obs_factors: ``W_k = L_k^{-1} H P_k^-``, ``k = 1..T``, ``[T, Dy, D]``.
        smoother_gains: ``G_k``, ``k = 0..T-1``, ``[T, D, D]``.
        pred_cov: steady ``P^-``, ``[D, D]``.
        cov: steady ``P``: the filtered covariance after the last step computed, ``[D, D]``.
        chol: steady Cholesky factor of ``S``, ``[Dy, Dy]``.
        gain: steady Kalman gain ``K``, ``[D, Dy]``.
        smoother_gain: steady ``G``, ``[D, D]``.
        transient: the last step whose change exceeded ``rtol`` (0 if none), int32.
        converged: whether a whole chunk of steps changed by less than ``rtol``, bool.
    """

    pred_covs: jax.Array
    covs: jax.Array
    chols: jax.Array
    obs_factors: jax.Array
    smoother_gains: jax.Array
    pred_cov: jax.Array
    cov: jax.Array
    chol: jax.Array
    gain: jax.Array
    smoother_gain: jax.Array
    transient: jax.Array
    converged: jax.Array


class SmootherSide(NamedTuple):
    """The data-independent side of the fast smoother.

    Attributes:
        filt: the :class:`FilterSide`.
        end_covs: ``X_j = P^s_{N-j}``, ``j = 1..T``, ``[T, D, D]``; rows after the Stein
            loop's last computed step (``end_count``) are not computed.
        end_count: how many rows of ``end_covs`` were computed, int32.
        smoothed_cov: ``X = P^s_inf``, the Stein recursion's last computed value, ``[D, D]``.
        end_sum: ``sum_{j=0..T} X_j`` (``X_0 = P``), ``[D, D]``.
        start_covs: ``P^s_k``, ``k = 0..T-1``, ``[T, D, D]`` (``X`` after the transient).
        start_sum: ``sum_{k=0..T} P^s_k`` (``P^s_T = X``), ``[D, D]``.
        start_cross: ``sum_{k=1..T} P^s_k G_{k-1}^T``, ``[D, D]``.
        info: :class:`~jaxssm._base.types.SteadyInfo`.

    The EM statistics read the sums only, so under ``jit`` XLA drops the ``[T, D, D]``
    buffers of the smoother's two loops from a program that does not return them.
    """

    filt: FilterSide
    end_covs: jax.Array
    end_count: jax.Array
    smoothed_cov: jax.Array
    end_sum: jax.Array
    start_covs: jax.Array
    start_sum: jax.Array
    start_cross: jax.Array
    info: SteadyInfo


def transient_rows(fs: FilterSide) -> jax.Array:
    """Whether step row ``i`` (``[T]``) lies in a chunk that starts before ``fs.transient``.

    These are the rows that the mean recursions take step by step with the per-step
    quantities of :class:`FilterSide`; every other row uses the steady ones.
    """
    T = fs.smoother_gains.shape[0]
    chunk = _chunk(T)
    starts = (jnp.arange(T, dtype=jnp.int32) // chunk) * chunk
    return starts < fs.transient


# ---------------------------------------------------------------------------------------------
# Covariance side (data-independent)
# ---------------------------------------------------------------------------------------------


def _small_change(new: jax.Array, old: jax.Array, rtol: float) -> jax.Array:
    """Whether ``|new - old|_ij <= rtol sqrt(new_ii new_jj)`` for all ``i, j`` (False for NaN).

    The scale is that of the correlations, so the test does not depend on the units of the
    state's components. It is formed from square roots of the diagonal, never from products
    or squares of covariance entries, so it neither overflows nor underflows where the
    covariances themselves are representable (entries near 1e200 or 1e-180 in float64,
    1e-20 in float32 squared to inf or 0 in the earlier form and declared convergence at
    step 0).
    """
    new, old = jax.lax.stop_gradient(new), jax.lax.stop_gradient(old)
    sd = jnp.sqrt(jnp.abs(jnp.diagonal(new)))
    return jnp.all(jnp.abs(new - old) <= rtol * (sd[:, None] * sd[None, :]))


def _last_unsettled(small: jax.Array) -> jax.Array:
    """Return the largest 1-based step ``k`` with ``small[k - 1]`` False (0 if none), int32."""
    idx = jnp.arange(1, small.shape[0] + 1, dtype=jnp.int32)
    return jnp.max(jnp.where(small, 0, idx))


def _settling_scan(step, operands, init, length: int, chunk: int):
    """Iterate ``state, out, small = step(operands, state)`` for ``length`` steps, in chunks.

    Once every step of a chunk reported ``small``, the later chunks are not computed.
    Evaluated, this is a ``lax.while_loop`` over the chunks that stops there
    (:func:`_settle_forward`): the covariance work is that of the transient present, rounded
    up to whole chunks, and the rows of the chunks not computed are left as they are (zeros)
    instead of being filled. Reverse-mode differentiation cannot pass a ``while_loop``, so
    under ``jvp``/``grad`` (a ``custom_jvp``) the same values and their tangents come from a
    ``lax.scan`` over all chunks in which the chunks after the settled one are skipped by
    ``lax.cond`` (:func:`_settle_scan`; its skipped rows repeat the last output). Under a
    batched ``vmap`` the loop runs until every member settled.

    Args:
        step: ``step(operands, state) -> (state, out, small)``; it must not close over
            traced values (they would not be differentiated).
        operands: the arrays ``step`` reads (a pytree; differentiated).
        init: the initial state (a pytree; differentiated).
        length: the number of steps, a multiple of ``chunk`` (static).
        chunk: steps per chunk (static).

    Returns:
        ``(outs, small, settled, state, count)``: the outputs stacked over the steps
        (``[length, ...]``; rows after ``count`` not meaningful), the flags ``[length]``
        (True for the steps not computed), whether a chunk settled, the state after the last
        step computed, and the number of steps computed (int32).
    """
    return _settle(step, length, chunk, operands, init)


def _settle_forward(step, length: int, chunk: int, operands, init):
    """:func:`_settling_scan` evaluated: a ``while_loop`` up to the first settled chunk.

    Each chunk's outputs are written into buffers the loop carries (in place).
    """
    num_chunks = length // chunk
    out_shape = jax.eval_shape(lambda s: step(operands, s)[1], init)
    bufs = jax.tree.map(lambda a: jnp.zeros((num_chunks, chunk) + a.shape, a.dtype), out_shape)
    smalls = jnp.ones((num_chunks, chunk), bool)

    def inner(s, _):
        s, out, small = step(operands, s)
        return s, (out, small)

    def body(carry):
        i, state, bufs, smalls, _ = carry
        state, (outs, small) = jax.lax.scan(inner, state, None, length=chunk)
        bufs = jax.tree.map(lambda b, o: b.at[i].set(o), bufs, outs)
        return i + 1, state, bufs, smalls.at[i].set(small), jnp.all(small)

    def running(carry):
        return (carry[0] < num_chunks) & ~carry[4]

    carry = (jnp.zeros((), jnp.int32), init, bufs, smalls, jnp.zeros((), bool))
    done, state, bufs, smalls, settled = jax.lax.while_loop(running, body, carry)
    outs = jax.tree.map(lambda b: b.reshape((length,) + b.shape[2:]), bufs)
    return outs, smalls.reshape(length), settled, state, done * chunk


def _settle_scan(step, length: int, chunk: int, operands, init):
    """:func:`_settling_scan` as a differentiable ``lax.scan`` over all chunks.

    A chunk after the settled one is skipped by ``lax.cond``: its outputs repeat the last
    output computed.
    """
    num_chunks = length // chunk
    out_shape = jax.eval_shape(lambda s: step(operands, s)[1], init)
    placeholder = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), out_shape)

    def run(carry):
        state, _, _, count = carry

        def inner(s, _):
            s, out, small = step(operands, s)
            return s, (out, small)

        state, (outs, small) = jax.lax.scan(inner, state, None, length=chunk)
        last = jax.tree.map(lambda o: o[-1], outs)
        return (state, last, jnp.all(small), count + chunk), (outs, small)

    def skip(carry):
        _, last, _, _ = carry
        outs = jax.tree.map(lambda o: jnp.broadcast_to(o, (chunk,) + o.shape), last)
        return carry, (outs, jnp.ones((chunk,), bool))

    def outer(carry, _):
        return jax.lax.cond(carry[2], skip, run, carry)

    init_carry = (init, placeholder, jnp.zeros((), bool), jnp.zeros((), jnp.int32))
    (state, _, settled, count), (outs, small) = jax.lax.scan(
        outer, init_carry, None, length=num_chunks
    )
    outs = jax.tree.map(lambda o: o.reshape((length,) + o.shape[2:]), outs)
    return outs, small.reshape(length), settled, state, count


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _settle(step, length, chunk, operands, init):
    return _settle_forward(step, length, chunk, operands, init)


@_settle.defjvp
def _settle_jvp(step, length, chunk, primals, tangents):
    return jax.jvp(functools.partial(_settle_scan, step, length, chunk), primals, tangents)


def _filter_step(rtol: float, operands, cov):
    """One step of the filter's covariance recursion (:func:`filter_side`'s ``step``).

    The output row of step ``k`` holds the filtered covariance *entering* it, ``P_{k-1}``,
    so that the rows are ``P_0..P_{T-1}`` and ``P0`` needs no concatenation in front.
    """
    A, Q, H, R = operands
    pred_cov = steps.predict_cov(cov, A, Q)
    half = steps.update_cov(pred_cov, H, R)
    G = steps.smoother_gain(cov, pred_cov, A)
    out = (pred_cov, cov, half.chol, half.obs_factor, G)
    return half.cov, out, _small_change(half.cov, cov, rtol)


def filter_side(params: LGSSM, T: int, rtol: float | None = None) -> FilterSide:
    """Run the filter's covariance recursion for ``T`` steps (fewer if it settles).

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked).
        T: the static bound, a positive multiple of its chunk (as :func:`transient_bound`
            returns).
        rtol: convergence tolerance; ``None`` for :func:`default_rtol` of the dtype.

    Returns:
        :class:`FilterSide`; the steady quantities are those of the step after the last one
        computed.
    """
    chunk = _chunk(T)
    if T < 1 or T % chunk:
        raise ValueError(f"T must be a positive multiple of min(32, max(1, T // 4)), got {T}")
    if rtol is None:
        rtol = default_rtol(params.A.dtype)
    A, Q, H, R = params.A, params.Q, params.H, params.R

    # Everything per step inside the loop (no vmapped LAPACK calls afterwards): independent
    # batched LAPACK calls in one program have hung jaxlib 0.10 on CPU (jaxssm._base.linalg).
    step = functools.partial(_filter_step, float(rtol))
    outs, small, settled, cov, _ = _settling_scan(step, (A, Q, H, R), params.P0, T, chunk)
    pred_covs, covs, chols, obs_factors, smoother_gains = outs
    pred_cov = steps.predict_cov(cov, A, Q)
    half = steps.update_cov(pred_cov, H, R)
    return FilterSide(
        pred_covs=pred_covs,
        covs=covs,
        chols=chols,
        obs_factors=obs_factors,
        smoother_gains=smoother_gains,
        pred_cov=pred_cov,
        cov=cov,
        chol=half.chol,
        gain=steps.kalman_gain(half.chol, half.obs_factor),
        smoother_gain=steps.smoother_gain(cov, pred_cov, A),
        transient=_last_unsettled(small),
        converged=settled,
    )


def _stein_step(rtol: float, operands, state):
    """One backward step of the steady smoother covariance (:func:`_stein_transient`).

    The state carries the running sum of the values, for the EM statistics.
    """
    cov, pred_cov, G = operands
    X, total = state
    new = steps.smooth_cov(cov, pred_cov, X, G)
    return (new, total + new), new, _small_change(new, X, rtol)


def _stein_transient(fs: FilterSide, T: int, rtol: float):
    """Smoother covariances backward from ``P_N^s = P``: ``X_j = P^s_{N-j}``, ``j = 1..T``.

    Returns ``(X [T, D, D], rows computed, X_inf, sum_{j=0..T} X_j, transient length,
    settled)``; the rows not computed stand for ``X_inf`` (the last value computed).
    """
    step = functools.partial(_stein_step, float(rtol))
    operands = (fs.cov, fs.pred_cov, fs.smoother_gain)
    init = (fs.cov, jnp.zeros_like(fs.cov))
    Xs, small, settled, (X_inf, total), count = _settling_scan(step, operands, init, T, _chunk(T))
    total = fs.cov + total + (T - count).astype(total.dtype) * X_inf
    return Xs, count, X_inf, total, _last_unsettled(small), settled


def _start_smoother_covs(fs: FilterSide, X_inf: jax.Array):
    """Smoother covariances ``P_k^s``, ``k = 0..T-1``, backward from ``P_T^s = X_inf``.

    Chunks that lie wholly after the filter transient (every input steady) are not computed:
    there the recursion sits at its fixed point ``X_inf``. Evaluated, this is a
    ``while_loop`` down from the last chunk that starts before the transient ends; under
    ``jvp``/``grad`` a ``lax.scan`` over all chunks with ``lax.cond`` skips (a ``custom_jvp``,
    as :func:`_settling_scan`).

    Returns:
        ``(P^s_k [T, D, D], sum_{k=0..T} P^s_k, sum_{k=1..T} P^s_k G_{k-1}^T)``; the sums
        are accumulated in the loop (the steps not computed add ``X_inf`` and
        ``X_inf G^T``), so a caller that needs only them does not keep the array.
    """
    T = fs.smoother_gains.shape[0]
    chunk = _chunk(T)
    xs = (fs.covs, fs.pred_covs, fs.smoother_gains)
    Ys, total, cross = _start_smooth(T, chunk, xs, fs.transient, X_inf)
    computed = jnp.sum(transient_rows(fs))  # the rows of the chunks the loop ran
    idle = (T - computed).astype(X_inf.dtype)  # steps at the fixed point, k < T
    total = total + (idle + 1) * X_inf
    cross = cross + idle * (X_inf @ fs.smoother_gain.T)
    return Ys, total, cross


def _smooth_chunk(carry, inputs):
    """Run the smoother-covariance recursion backward over a chunk of ``(P_k, P_{k+1}^-, G_k)``.

    ``carry = (P^s_{k+1}, sum of P^s, sum of P^s_{k+1} G_k^T)``.
    """

    def body(carry, inputs):
        next_cov, total, cross = carry
        cov, next_pred_cov, G = inputs
        new = steps.smooth_cov(cov, next_pred_cov, next_cov, G)
        return (new, total + new, cross + next_cov @ G.T), new

    return jax.lax.scan(body, carry, inputs, reverse=True)


def _start_smooth_forward(T: int, chunk: int, xs, transient, X_inf):
    """Evaluate :func:`_start_smoother_covs`'s loop with a ``while_loop``.

    The loop runs over the chunks that start before ``transient``, last first, into a buffer
    that holds ``X_inf`` elsewhere.
    """
    num_chunks = T // chunk
    D = X_inf.shape[0]
    xs = jax.tree.map(lambda a: a.reshape((num_chunks, chunk) + a.shape[1:]), xs)
    # Chunk c (steps c*chunk ..) is computed iff c*chunk < transient.
    first_skipped = jnp.minimum((transient + chunk - 1) // chunk, num_chunks).astype(jnp.int32)
    buf = jnp.broadcast_to(X_inf, (num_chunks, chunk, D, D))
    zero = jnp.zeros_like(X_inf)

    def body(carry):
        c, sums, buf = carry
        inputs = jax.tree.map(lambda a: a[c], xs)
        sums, Ys = _smooth_chunk(sums, inputs)
        return c - 1, sums, buf.at[c].set(Ys)

    carry = (first_skipped - 1, (X_inf, zero, zero), buf)
    _, (_, total, cross), buf = jax.lax.while_loop(lambda carry: carry[0] >= 0, body, carry)
    return buf.reshape(T, D, D), total, cross


def _start_smooth_scan(T: int, chunk: int, xs, transient, X_inf):
    """:func:`_start_smooth_forward` as a differentiable ``lax.scan`` with ``lax.cond`` skips."""
    num_chunks = T // chunk
    D = X_inf.shape[0]
    xs = jax.tree.map(lambda a: a.reshape((num_chunks, chunk) + a.shape[1:]), xs)
    starts = jnp.arange(num_chunks, dtype=jnp.int32) * chunk
    zero = jnp.zeros_like(X_inf)

    def skip(carry, inputs):
        return carry, jnp.broadcast_to(carry[0], (chunk, D, D))

    def outer(carry, chunk_in):
        start, inputs = chunk_in
        return jax.lax.cond(start >= transient, skip, _smooth_chunk, carry, inputs)

    (_, total, cross), Ys = jax.lax.scan(outer, (X_inf, zero, zero), (starts, xs), reverse=True)
    return Ys.reshape(T, D, D), total, cross


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _start_smooth(T, chunk, xs, transient, X_inf):
    return _start_smooth_forward(T, chunk, xs, transient, X_inf)


@_start_smooth.defjvp
def _start_smooth_jvp(T, chunk, primals, tangents):
    return jax.jvp(functools.partial(_start_smooth_scan, T, chunk), primals, tangents)


def smoother_side(params: LGSSM, T: int, rtol: float | None = None) -> SmootherSide:
    """Every covariance-side quantity of the fast smoother, with diagnostics.

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked).
        T: the static bound (as :func:`transient_bound` returns; positive).
        rtol: convergence tolerance (``None``: :func:`default_rtol`).

    Returns:
        :class:`SmootherSide`; ``info.converged`` says whether both transients ended within
        ``T`` steps.
    """
    if rtol is None:
        rtol = default_rtol(params.A.dtype)
    fs = filter_side(params, T, rtol)
    end_covs, end_count, X_inf, end_sum, s_len, s_ok = _stein_transient(fs, T, rtol)
    start_covs, start_sum, start_cross = _start_smoother_covs(fs, X_inf)
    s_len = jnp.where(fs.converged, s_len, jnp.int32(T))
    info = SteadyInfo(T, fs.transient, s_len, fs.converged & s_ok)
    return SmootherSide(
        fs, end_covs, end_count, X_inf, end_sum, start_covs, start_sum, start_cross, info
    )


# ---------------------------------------------------------------------------------------------
# Mean side (over the full series)
# ---------------------------------------------------------------------------------------------


def _linear_recursion(
    F: jax.Array, b: jax.Array, x0: jax.Array, reverse: bool = False, block: int | None = None
) -> jax.Array:
    """``x_i = F x_{i-1} + b_i`` over the rows of ``b`` (``reverse``: from the last row back).

    Two forms of the same recursion:

    * plain: one ``lax.scan`` step per row. On CPU a step costs about 0.1 us of loop
      overhead on top of its ``D x D`` matvec, and this is the faster form (measured inside
      ``fit_em`` at N = 44,484, D = 21: ``benchmarks/em_floor.py``).
    * blocked, with blocks of ``L`` rows (default about ``sqrt(n)``): (1) every block runs
      its recursion from zero, all blocks at once (``L`` steps of a ``[n/L, D] @ [D, D]``
      product); (2) the states entering the blocks follow by a scan over the ``n / L``
      blocks with ``F^L``; (3) ``F^{j+1}`` times the entering state is added to row ``j`` of
      each block. That is ``3 n D^2`` flops in ``2 L + n / L`` loop steps instead of ``n``:
      the form for accelerators, where each loop step is at least one kernel launch.

    Args:
        F: ``[D, D]``.
        b: ``[n, D]``.
        x0: the state before the first (``reverse``: after the last) row, ``[D]``.
        reverse: run from the last row to the first.
        block: block length ``L`` (static); 1 for the plain form; ``None`` for the plain
            form on CPU and ``ceil(sqrt(n))`` elsewhere (``lax.platform_dependent``: the
            branch is chosen when the program is lowered for its platform); ``"doubling"``
            for the log-depth scan of :func:`_doubling_recursion` (the parallel schedule's).

    Returns:
        ``x_i`` for every row of ``b``, ``[n, D]``.
    """
    n = b.shape[0]
    if n == 0:
        return b
    if block == "doubling":
        return _doubling_recursion(F, b, x0, reverse=reverse)
    if block is None:
        L = math.isqrt(n - 1) + 1
        return jax.lax.platform_dependent(
            F,
            b,
            x0,
            cpu=functools.partial(_plain_recursion, reverse=reverse),
            default=functools.partial(_blocked_recursion, L=L, reverse=reverse),
        )
    if int(block) == 1 or int(block) >= n:
        return _plain_recursion(F, b, x0, reverse=reverse)
    return _blocked_recursion(F, b, x0, L=int(block), reverse=reverse)


def _plain_recursion(F: jax.Array, b: jax.Array, x0: jax.Array, reverse: bool) -> jax.Array:
    """:func:`_linear_recursion` as one ``lax.scan`` step per row."""

    def step(x, bi):
        x = F @ x + bi
        return x, x

    return jax.lax.scan(step, x0, b, reverse=reverse)[1]


def _doubling_recursion(F: jax.Array, b: jax.Array, x0: jax.Array, reverse: bool) -> jax.Array:
    r""":func:`_linear_recursion` as an associative scan of its affine maps, in log depth.

    Step ``i`` is the affine map ``x -> F x + b_i``; the states are the prefix compositions
    of these maps applied to ``x0``. Every map has the same linear part, so a composition of
    ``2^l`` consecutive maps has linear part ``F^{2^l}`` and the scan needs no matrix per
    element: with ``y_i = b_i`` (and ``F x0`` added to ``y_0``), the level
    ``y_i <- y_i + F^{2^l} y_{i - 2^l}`` for ``i >= 2^l`` leaves ``y_i`` the sum over the
    last ``2^{l+1}`` maps' offsets, so after ``ceil(log2 n)`` levels ``y_i = x_i``
    (Hillis and Steele's scan). That is ``ceil(log2 n)`` ``[n, D] @ [D, D]`` products and as
    many ``D x D`` squarings: ``O(n D^2 log n)`` flops in ``O(log n)`` dependent steps,
    against ``n`` steps for the plain scan.
    """
    if reverse:
        return _doubling_recursion(F, b[::-1], x0, reverse=False)[::-1]
    n = b.shape[0]
    y = b.at[0].add(F @ x0)
    power = F
    shift = 1
    while shift < n:  # static: ceil(log2 n) levels
        y = jnp.concatenate([y[:shift], y[shift:] + y[:-shift] @ power.T], axis=0)
        power = power @ power
        shift *= 2
    return y


def _blocked_recursion(
    F: jax.Array, b: jax.Array, x0: jax.Array, L: int, reverse: bool
) -> jax.Array:
    """:func:`_linear_recursion` in blocks of ``L`` rows (``1 < L < n``)."""
    n, D = b.shape
    if reverse:
        return _blocked_recursion(F, b[::-1], x0, L=L, reverse=False)[::-1]
    if L <= 1 or L >= n:
        return _plain_recursion(F, b, x0, reverse=False)
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


def _filter_means(params: LGSSM, ys: jax.Array, fs: FilterSide, form: str | None = None):
    """Compute the filtered means ``[N+1, D]`` and ``log p(y_1:N)``.

    Steps ``k <= T`` run in chunks: while the covariance is still changing, with the mean
    half of :func:`jaxssm.steps.update` and the per-step factors; in chunks wholly after the
    filter transient, and for all ``k > T``, with the steady gain,
    ``m_k = A m_{k-1} + c_k + K v_k``, ``v_k = y_k - H (A m_{k-1} + c_k)`` (``c_k``: the state
    offset ``params.b [N, D]`` of a reduced model, else 0). The innovation terms of those
    steps sum to ``tr(S^{-1} sum_k v_k v_k^T)``: one ``[Dy, N] @ [N, Dy]`` product and two
    triangular solves.
    """
    T = fs.obs_factors.shape[0]
    N, Dy = ys.shape
    A, H, K, c = params.A, params.H, fs.gain, params.b
    HA = H @ A
    chunk = _chunk(T)
    num_chunks = T // chunk
    xs = (ys[:T], fs.chols, fs.obs_factors, None if c is None else c[:T])
    xs = jax.tree.map(lambda a: a.reshape((num_chunks, chunk) + a.shape[1:]), xs)
    starts = jnp.arange(num_chunks, dtype=jnp.int32) * chunk
    zero = jnp.zeros((), ys.dtype)

    def transient_step(m, inputs):
        y, L, W, ck = inputs
        mp = steps.predict_mean(m, A, ck)
        z = steps.whitened_innovation(mp, y, H, L)
        m = steps.update_mean(mp, W, z)
        return m, (m, z @ z, jnp.zeros_like(y))

    def steady_step(m, inputs):
        y, ck = inputs
        if ck is None:
            v = y - HA @ m
            m = A @ m + K @ v
        else:
            mp = steps.predict_mean(m, A, ck)
            v = y - H @ mp
            m = mp + K @ v
        return m, (m, zero, v)

    def outer(m, chunk_in):
        start, inputs = chunk_in
        return jax.lax.cond(
            start >= fs.transient,
            lambda m, x: jax.lax.scan(steady_step, m, (x[0], x[3])),
            lambda m, x: jax.lax.scan(transient_step, m, x),
            m,
            inputs,
        )

    m_T, (start, quad_start, v_start) = jax.lax.scan(outer, params.m0, (starts, xs))
    start = start.reshape(T, -1)
    # k > T: m_k = (A - K H A) m_{k-1} + K y_k + (I - K H) c_k.
    F = A - K @ HA
    drive = ys[T:] @ K.T
    if c is not None:
        drive = drive + c[T:] - (c[T:] @ H.T) @ K.T
    rest = _linear_recursion(F, drive, m_T, block=form)
    means = jnp.concatenate([params.m0[None], start, rest], axis=0)

    # Innovations of the steady steps (zeros stand in for the transient steps among k <= T),
    # whitened by the constant factor: z_k = L^{-1} v_k as one [N, Dy] @ [Dy, Dy] map with
    # the triangular inverse, and quad = sum |z_k|^2 (no [N, Dy] concatenation, no gram).
    # The steps k > T + 1 read m_{k-1} from ``rest`` directly, step T + 1 from m_T.
    L_inv_T = LAPACK.solve_lower(fs.chol, jnp.eye(Dy, dtype=ys.dtype)).T
    v_first = ys[T] - HA @ m_T
    v_tail = ys[T + 1 :] - rest[:-1] @ HA.T
    if c is not None:
        v_first = v_first - H @ c[T]
        v_tail = v_tail - c[T + 1 :] @ H.T
    quad_steady = (
        jnp.sum(jnp.square(v_start.reshape(T, Dy) @ L_inv_T))
        + jnp.sum(jnp.square(v_first @ L_inv_T))
        + jnp.sum(jnp.square(v_tail @ L_inv_T))
    )
    # log det S_k: the per-step factors in the transient chunks (their other rows were not
    # computed: masked before the log), the steady factor everywhere else.
    rows = transient_rows(fs)
    logdet = jnp.sum(jnp.log(jnp.diagonal(fs.chol)))
    diag = jnp.where(rows[:, None], jnp.diagonal(fs.chols, axis1=1, axis2=2), 1.0)
    num_rows = jnp.sum(rows).astype(ys.dtype)
    logdet_start = jnp.sum(jnp.log(diag)) + (T - num_rows) * logdet
    logdet_rest = (N - T) * logdet
    quad = jnp.sum(quad_start) + quad_steady
    ll = -0.5 * quad - logdet_start - logdet_rest - 0.5 * (N * Dy) * steps.LOG_2PI
    return means, ll


def _smoother_means(
    params: LGSSM, means: jax.Array, fs: FilterSide, form: str | None = None
) -> jax.Array:
    """Compute the smoothed means ``[N+1, D]`` from the filtered ones ``[N+1, D]``."""
    T = fs.smoother_gains.shape[0]
    A, G, c = params.A, fs.smoother_gain, params.b
    # k = N-1 .. T: m^s_k = G m^s_{k+1} + (I - G A) m_k - G c_{k+1}.
    u = means[T:-1] @ (jnp.eye(A.shape[0], dtype=A.dtype) - G @ A).T
    if c is not None:
        u = u - c[T:] @ G.T
    rest = _linear_recursion(G, u, means[-1], reverse=True, block=form)

    # k = T-1 .. 0 in chunks, last first: the per-step gains in the transient chunks, the
    # steady gain in the others (whose per-step rows were not computed).
    chunk = _chunk(T)
    num_chunks = T // chunk
    starts = jnp.arange(num_chunks, dtype=jnp.int32) * chunk
    xs = (means[:T], fs.smoother_gains, None if c is None else c[:T])
    xs = jax.tree.map(lambda a: a.reshape((num_chunks, chunk) + a.shape[1:]), xs)

    def transient_step(next_mean, inputs):
        m, Gk, ck = inputs
        mean = steps.smooth_mean(m, steps.predict_mean(m, A, ck), next_mean, Gk)
        return mean, mean

    def steady_step(next_mean, inputs):
        m, ck = inputs
        mean = steps.smooth_mean(m, steps.predict_mean(m, A, ck), next_mean, G)
        return mean, mean

    def outer(next_mean, chunk_in):
        start, inputs = chunk_in
        return jax.lax.cond(
            start >= fs.transient,
            lambda nm, x: jax.lax.scan(steady_step, nm, (x[0], x[2]), reverse=True),
            lambda nm, x: jax.lax.scan(transient_step, nm, x, reverse=True),
            next_mean,
            inputs,
        )

    _, start = jax.lax.scan(outer, rest[0], (starts, xs), reverse=True)
    start = start.reshape(T, -1)
    return jnp.concatenate([start, rest, means[-1:]], axis=0)


# ---------------------------------------------------------------------------------------------
# Results (assuming convergence; jaxssm._schedules.dispatch decides)
# ---------------------------------------------------------------------------------------------


def log_likelihood(
    params: LGSSM, ys: jax.Array, fs: FilterSide, form: str | None = None
) -> jax.Array:
    """Return ``log p(y_1:N)``: only the filter's means run over the series."""
    return _filter_means(params, ys, fs, form)[1]


def _per_step(rows: jax.Array, buf: jax.Array, steady: jax.Array) -> jax.Array:
    """``buf``'s rows where ``rows`` is True, ``steady`` (broadcast) elsewhere."""
    return jnp.where(rows.reshape(rows.shape + (1,) * steady.ndim), buf, steady)


def filter(params: LGSSM, ys: jax.Array, fs: FilterSide, form: str | None = None) -> FilterResult:
    """Return the :class:`~jaxssm.FilterResult`; after the transient the converged covariances."""
    N = ys.shape[0]
    T = fs.obs_factors.shape[0]
    D = fs.cov.shape[0]
    means, ll = _filter_means(params, ys, fs, form)
    pred_means = means[:-1] @ params.A.T
    if params.b is not None:
        pred_means = pred_means + params.b
    rows = transient_rows(fs)
    # Row 0 of ``covs`` is P0 whatever the transient (it is the prior, not a step's result).
    first = jnp.arange(T) == 0
    covs = jnp.concatenate(
        [_per_step(rows | first, fs.covs, fs.cov), jnp.broadcast_to(fs.cov, (N + 1 - T, D, D))],
        axis=0,
    )
    pred_covs = jnp.concatenate(
        [_per_step(rows, fs.pred_covs, fs.pred_cov), jnp.broadcast_to(fs.pred_cov, (N - T, D, D))],
        axis=0,
    )
    return FilterResult(means, covs, pred_means, pred_covs, ll)


def smooth(
    params: LGSSM, ys: jax.Array, side: SmootherSide, form: str | None = None
) -> SmootherResult:
    """Return the :class:`~jaxssm.SmootherResult` of the fast path."""
    fs = side.filt
    N = ys.shape[0]
    T = fs.obs_factors.shape[0]
    D = fs.cov.shape[0]
    X_inf = side.smoothed_cov
    means, ll = _filter_means(params, ys, fs, form)
    sm = _smoother_means(params, means, fs, form)
    # Rows 0..T-1: the start recursion (X_inf where it did not run); T..N-T-1: X_inf;
    # N-T..N-1: X_T..X_1 (X_inf beyond the Stein loop's computed rows); N: X_0 = P.
    end = _per_step(jnp.arange(T, dtype=jnp.int32) < side.end_count, side.end_covs, X_inf)[::-1]
    covs = jnp.concatenate(
        [side.start_covs, jnp.broadcast_to(X_inf, (N - 2 * T, D, D)), end, fs.cov[None]], axis=0
    )
    gains = jnp.concatenate(
        [
            _per_step(transient_rows(fs), fs.smoother_gains, fs.smoother_gain),
            jnp.broadcast_to(fs.smoother_gain, (N - T, D, D)),
        ],
        axis=0,
    )
    return SmootherResult(sm, covs, gains, ll)


def stats(
    params: LGSSM, ys: jax.Array, side: SmootherSide, e=None, v=None, form: str | None = None
) -> tuple[SufficientStats, jax.Array]:
    """Return the EM statistics and ``log p(y_1:N)``; no ``[N, D, D]`` array is formed.

    The covariance sums come from the smoother side's loops (:class:`SmootherSide`), so
    its ``[T, D, D]`` buffers are not read. ``e``, ``v``: the observation offsets and
    augmented inputs (:mod:`jaxssm._blocks.stats`). ``form``: the mean recursions' form over the
    series (:func:`_linear_recursion`'s ``block``; the same for :func:`filter`,
    :func:`smooth` and :func:`log_likelihood`).
    """
    fs = side.filt
    N = ys.shape[0]
    T = fs.obs_factors.shape[0]
    means, ll = _filter_means(params, ys, fs, form)
    m = _smoother_means(params, means, fs, form)
    # sum_{k=0..N} P^s_k: rows 0..T (start loop), T+1..N-T-1 at X_inf, N-T..N (Stein loop).
    steady_and_end = (N - 2 * T - 1) * side.smoothed_cov + side.end_sum
    total = side.start_sum + steady_and_end
    # sum_{k=1..N} P^s_k G_{k-1}^T: the start loop's sum for k <= T, then the constant gain.
    cross = side.start_cross + steady_and_end @ fs.smoother_gain.T
    P0s = side.start_covs[0]
    out = _stats.from_sums(total - P0s, total - fs.cov, cross, m, ys, P0s, e, v)
    return out, ll


# ---------------------------------------------------------------------------------------------
# Series with missing entries: the fast path with a covariance transient after every gap
# ---------------------------------------------------------------------------------------------


#: Steps per chunk of the gap-aware recursion (:func:`gappy_filter`, :func:`gappy_smooth`).
_GAP_CHUNK = 16


class SteadyPoint(NamedTuple):
    """The converged quantities the gap-aware path needs (small: no transients).

    Attributes:
        pred_cov: ``P^-``; cov: ``P``; chol: factor of ``S``; gain: ``K``;
        smoother_gain: ``G``; smoothed_cov: ``X = P^s`` in the middle of a long series.
    """

    pred_cov: jax.Array
    cov: jax.Array
    chol: jax.Array
    gain: jax.Array
    smoother_gain: jax.Array
    smoothed_cov: jax.Array


def steady_point(side: SmootherSide | FilterSide) -> SteadyPoint:
    """Extract the :class:`SteadyPoint` (``smoothed_cov`` is NaN from a :class:`FilterSide`)."""
    fs = side.filt if isinstance(side, SmootherSide) else side
    X = side.smoothed_cov if isinstance(side, SmootherSide) else jnp.full_like(fs.cov, jnp.nan)
    return SteadyPoint(fs.pred_cov, fs.cov, fs.chol, fs.gain, fs.smoother_gain, X)


class GappyForward(NamedTuple):
    """:func:`gappy_filter`'s pass in the layout its backward passes read (no copies).

    The ``[M, C, ...]`` arrays (``M = ceil(N / C)`` chunks of ``C`` steps) hold, for step
    ``k + 1`` of the series at flat row ``front + k``, the moments *entering* it and its
    predicted ones: ``m_k, P_k, steady_k, m^-_{k+1}, P^-_{k+1}``, so that backward step ``k``
    reads one row. The ``front`` rows before the series are padding (no-op steps; means 0,
    covariances ``I``, ``steady`` False), which a backward pass runs last.

    Attributes:
        means, covs, steady, pred_means, pred_covs: the rows as above (``pred_covs`` None
            when not kept).
        mean, cov, last_steady: ``m_N``, ``P_N`` and ``steady_N``.
        log_likelihood: ``log p(y_1:N)`` of the observed entries.
        front: the number of padding rows (static).
    """

    means: jax.Array
    covs: jax.Array
    steady: jax.Array
    pred_means: jax.Array
    pred_covs: jax.Array
    mean: jax.Array
    cov: jax.Array
    last_steady: jax.Array
    log_likelihood: jax.Array
    front: int


def gappy_forward(
    params: LGSSM,
    ys: jax.Array,
    fs: SteadyPoint,
    converged: jax.Array,
    rtol: float | None = None,
    keep_pred_covs: bool = True,
) -> GappyForward:
    """Filter ``ys`` with NaN entries, with covariance work only where the covariance moves.

    One ``lax.scan`` whose step is a ``lax.cond``: a fully observed step whose previous
    covariance has settled at the fixed point ``P`` of :func:`filter_side` takes the steady
    step (``m_k = A m_{k-1} + K v_k``, covariances ``P^-``, ``P``, ``O(D^2)`` work); every other
    step (a missing entry, the start and the steps after a gap until the covariance is back
    within ``rtol`` of ``P`` on the correlation scale) takes the full masked update of
    :mod:`jaxssm.steps`. The fixed point replaces the covariance from the step after it is
    reached: the exactness argument of the fully observed fast path, applied after each gap.
    With ``converged`` False (the transient outlasted the bound, so ``P`` is not known) no
    step is steady and this is the full masked recursion.

    ``steady_k`` says that ``P_k`` is the fixed point: step ``k`` took the steady step
    (``steady_0`` is False: ``P_0`` is the prior). The result is in the chunked layout of
    :class:`GappyForward`; :func:`gappy_filter` returns it as a :class:`FilterResult`.
    With ``keep_pred_covs`` False (static) the predicted covariances are not stored
    (``pred_covs`` is None; :func:`gappy_stats` recomputes them), which halves the pass's
    ``[N, D, D]`` memory.
    """
    A, Q, H, R = params.A, params.Q, params.H, params.R
    HA = H @ A
    rtol = default_rtol(A.dtype) if rtol is None else rtol
    logdet = jnp.sum(jnp.log(jnp.diagonal(fs.chol)))
    D = A.shape[0]
    eye = jnp.eye(D, dtype=A.dtype)

    def steady_step(m, P, y, ck):
        pred_mean = steps.predict_mean(m, A, ck)
        v = y - HA @ m if ck is None else y - H @ pred_mean
        z = LAPACK.solve_lower(fs.chol, v[:, None])[:, 0]
        mean = pred_mean + fs.gain @ v
        ll = -0.5 * (z @ z) - logdet - 0.5 * y.shape[-1] * steps.LOG_2PI
        return mean, fs.cov, pred_mean, fs.pred_cov, ll, jnp.ones((), bool)

    def full_step(m, P, y, ck):
        pred_mean, pred_cov = steps.predict_mean(m, A, ck), steps.predict_cov(P, A, Q)
        obs = steps.mask_observation(y, H, R)
        half = steps.update_cov(pred_cov, obs.H, obs.R)
        z = steps.whitened_innovation(pred_mean, obs.y, obs.H, half.chol)
        mean = steps.update_mean(pred_mean, half.obs_factor, z)
        ll = steps.log_normal_whitened(z, half.chol, obs.num_observed)
        settled = converged & jnp.all(obs.observed) & _small_change(half.cov, fs.cov, rtol)
        return mean, half.cov, pred_mean, pred_cov, ll, settled

    def body(carry, inputs):
        m, P, settled, ll, was_fast = carry
        y, ck, pad = inputs
        fast = settled & ~jnp.any(jnp.isnan(y))
        mean, cov, pred_mean, pred_cov, ll_k, settled_k = jax.lax.cond(
            fast, steady_step, full_step, m, P, y, ck
        )
        new = (mean, cov, settled_k, ll + ll_k, fast)
        carry = jax.tree.map(lambda old, nw: jnp.where(pad, old, nw), carry, new)
        out = (m, P, was_fast, pred_mean, pred_cov if keep_pred_covs else None)
        safe = (jnp.zeros_like(m), eye, jnp.zeros((), bool), jnp.zeros_like(m), eye)
        safe = safe if keep_pred_covs else safe[:4] + (None,)
        return carry, jax.tree.map(lambda a, b: jnp.where(pad, a, b), safe, out)

    # Chunks of _GAP_CHUNK steps: a chunk that starts settled and holds no NaN runs the
    # steady steps as a plain scan (no per-step cond, covariance outputs broadcast), the
    # others step by step with the cond above.
    def steady_chunk(carry, chunk):
        m, P, _, ll, was_fast = carry

        def inner(m, inputs):
            mean, _, pred_mean, _, ll_k, _ = steady_step(m, None, *inputs)
            return mean, (m, pred_mean, ll_k)

        m_last, (means_in, pred_means, lls) = jax.lax.scan(inner, m, chunk[:2])
        C = chunk[0].shape[0]
        first = jnp.arange(C) == 0
        outs = (
            means_in,
            jnp.where(first[:, None, None], P, fs.cov),
            first & was_fast | ~first,
            pred_means,
            jnp.broadcast_to(fs.pred_cov, (C,) + fs.cov.shape) if keep_pred_covs else None,
        )
        ones = jnp.ones((), bool)
        return (m_last, fs.cov, ones, ll + jnp.sum(lls), ones), outs

    def mixed_chunk(carry, chunk):
        return jax.lax.scan(body, carry, chunk)

    def outer(carry, chunk):
        fast = carry[2] & ~jnp.any(jnp.isnan(chunk[0]))
        return jax.lax.cond(fast, steady_chunk, mixed_chunk, carry, chunk)

    N = ys.shape[0]
    C = min(_GAP_CHUNK, N)
    num_chunks = -(-N // C)
    front = num_chunks * C - N
    # Padding in front: no-op steps (NaN rows, so never steady; the carry is kept).
    chunks = (
        _to_chunks(ys, jnp.nan, C),
        None if params.b is None else _to_chunks(params.b, 0.0, C),
        (jnp.arange(num_chunks * C) < front).reshape(num_chunks, C),
    )
    no = jnp.zeros((), bool)
    init = (params.m0, params.P0, no, jnp.zeros((), ys.dtype), no)
    (mean, cov, _, ll, last_steady), outs = jax.lax.scan(outer, init, chunks)
    return GappyForward(*outs, mean, cov, last_steady, ll, front)


def gappy_filter(
    params: LGSSM,
    ys: jax.Array,
    fs: SteadyPoint,
    converged: jax.Array,
    rtol: float | None = None,
) -> tuple[FilterResult, jax.Array]:
    """:func:`gappy_forward` as a :class:`FilterResult` (see there for the schedule).

    Returns:
        ``(FilterResult, steady [N+1])``: ``steady[k]`` says that ``P_k`` is the fixed point
        (``steady[0]`` is False: ``P_0`` is the prior).
    """
    fwd = gappy_forward(params, ys, fs, converged, rtol)

    def rows(x):
        return x.reshape((-1,) + x.shape[2:])[fwd.front :]

    def with_last(x, last):
        return jnp.concatenate([rows(x), last[None]], axis=0)

    result = FilterResult(
        with_last(fwd.means, fwd.mean),
        with_last(fwd.covs, fwd.cov),
        rows(fwd.pred_means),
        rows(fwd.pred_covs),
        fwd.log_likelihood,
    )
    return result, with_last(fwd.steady, fwd.last_steady)


def _to_chunks(x: jax.Array, fill, size: int) -> jax.Array:
    """``x [n, ...]`` as ``[ceil(n / size), size, ...]``, padded in front with ``fill`` rows.

    The layout of :class:`GappyForward`: the forward pass runs the padding first (as no-op
    steps), the backward passes run it last.
    """
    n = x.shape[0]
    num_chunks = -(-n // size)
    padding = jnp.broadcast_to(jnp.asarray(fill, x.dtype), (num_chunks * size - n,) + x.shape[1:])
    return jnp.concatenate([padding, x], axis=0).reshape((num_chunks, size) + x.shape[1:])


def _gappy_smooth_step(
    A, fs, converged, rtol, carry, mean, cov, next_pred_mean, next_pred_cov, steady_k
):
    """One backward step of the gap-aware smoother: ``(m^s_k, P^s_k, G_k, settled_k)``.

    ``carry`` is ``(m^s_{k+1}, P^s_{k+1}, settled_{k+1})``. The steady gain is used when
    ``P_k`` is the fixed point, the steady smoothed covariance when ``P^s_{k+1}`` has settled
    there too; otherwise the full step of :mod:`jaxssm.steps`.
    """
    next_mean, next_cov, next_settled = carry
    G_inf, X_inf = fs.smoother_gain, fs.smoothed_cov
    gain = jax.lax.cond(
        steady_k,
        lambda c, pc: G_inf,
        lambda c, pc: steps.smoother_gain(c, pc, A),
        cov,
        next_pred_cov,
    )
    sm = steps.smooth_mean(mean, next_pred_mean, next_mean, gain)

    def full(nc):
        new = steps.smooth_cov(cov, next_pred_cov, nc, gain)
        return new, converged & steady_k & _small_change(new, X_inf, rtol)

    sc, settled = jax.lax.cond(
        steady_k & next_settled, lambda nc: (X_inf, jnp.ones((), bool)), full, next_cov
    )
    return sm, sc, gain, settled


def gappy_smooth(
    params: LGSSM,
    fwd: GappyForward,
    fs: SteadyPoint,
    converged: jax.Array,
    rtol: float | None = None,
) -> SmootherResult:
    """RTS pass over :func:`gappy_forward`'s rows, covariance work only where it moves.

    ``fwd`` must keep its predicted covariances (``keep_pred_covs``); its rows are read in
    its own chunked layout, not copied.

    Step ``k`` uses the steady gain ``G`` when ``P_k`` is the fixed point (``steady[k]``),
    and the steady smoothed covariance ``X = P^s_inf`` when in addition ``P^s_{k+1}`` has
    settled there; otherwise the full step of :mod:`jaxssm.steps`, and ``P^s_k`` settles
    when it is within ``rtol`` of ``X``.
    """
    A, G_inf, X_inf = params.A, fs.smoother_gain, fs.smoothed_cov
    rtol = default_rtol(A.dtype) if rtol is None else rtol

    def body(carry, inputs):
        sm, sc, gain, settled = _gappy_smooth_step(A, fs, converged, rtol, carry, *inputs)
        return (sm, sc, settled), (sm, sc, gain)

    D = A.shape[0]

    def steady_chunk(carry, chunk):
        mean_in, _, pred_in, _, _ = chunk
        # With state offsets the predicted means are read; without, recomputed (A m).
        pred_in = None if params.b is None else pred_in

        def inner(next_mean, inputs):
            m, mp = inputs
            mp = steps.predict_mean(m, A) if mp is None else mp
            sm = steps.smooth_mean(m, mp, next_mean, G_inf)
            return sm, sm

        sm_last, sms = jax.lax.scan(inner, carry[0], (mean_in, pred_in), reverse=True)
        C = mean_in.shape[0]
        outs = (sms, jnp.broadcast_to(X_inf, (C, D, D)), jnp.broadcast_to(G_inf, (C, D, D)))
        return (sm_last, X_inf, jnp.ones((), bool)), outs

    def mixed_chunk(carry, chunk):
        return jax.lax.scan(body, carry, chunk, reverse=True)

    def outer(carry, chunk):
        fast = carry[2] & jnp.all(chunk[4])
        return jax.lax.cond(fast, steady_chunk, mixed_chunk, carry, chunk)

    last = (fwd.mean, fwd.cov, jnp.zeros((), bool))
    # The forward rows in their chunks; the front padding (never steady) runs last.
    chunks = (fwd.means, fwd.covs, fwd.pred_means, fwd.pred_covs, fwd.steady)
    _, outs = jax.lax.scan(outer, last, chunks, reverse=True)
    means, covs, gains = jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:])[fwd.front :], outs)
    means = jnp.concatenate([means, fwd.mean[None]], axis=0)
    covs = jnp.concatenate([covs, fwd.cov[None]], axis=0)
    return SmootherResult(means, covs, gains, fwd.log_likelihood)


def gappy_stats(
    params: LGSSM,
    ys: jax.Array,
    fwd: GappyForward,
    fs: SteadyPoint,
    converged: jax.Array,
    rtol: float | None = None,
    e: jax.Array | None = None,
    v: jax.Array | None = None,
) -> SufficientStats:
    """EM statistics over :func:`gappy_forward`'s pass without ``[N, D, D]`` smoother arrays.

    The backward pass of :func:`gappy_smooth`, with the covariance sums of the statistics
    accumulated in its carry (a settled chunk adds ``count x`` its steady terms) and the
    imputed observation moments (:func:`jaxssm._blocks.stats.imputation_step`) of each row formed
    where its smoothed moments are at hand.
    """
    A, H, R = params.A, params.H, params.R
    G_inf, X_inf = fs.smoother_gain, fs.smoothed_cov
    rtol = default_rtol(A.dtype) if rtol is None else rtol
    N, Dy = ys.shape
    D = A.shape[0]
    n = _stats.observed_length(ys)
    w = (jnp.arange(1, N + 1, dtype=jnp.int32) <= n).astype(ys.dtype)  # row k + 1 = 1..N
    XG_inf = X_inf @ G_inf.T

    eye = jnp.eye(D, dtype=A.dtype)

    def body(carry, inputs):
        next_mean, next_cov, next_settled, sums, p0 = carry
        y_next, w_next, k = inputs[5:]
        if inputs[3] is None:  # P^-_{k+1} from P_k (the steady value where P_k is P)
            cov, steady_k = inputs[1], inputs[4]
            pred_cov = jnp.where(steady_k, fs.pred_cov, steps.predict_cov(cov, A, params.Q))
            pred_cov = jnp.where(k < 0, eye, pred_cov)  # padding: finite, discarded
            inputs = inputs[:3] + (pred_cov,) + inputs[4:]
        sm, sc, gain, settled = _gappy_smooth_step(A, fs, converged, rtol, carry[:3], *inputs[:5])
        y_hat, cov_yx, cov_yy = _stats.imputation_step(y_next, next_mean, next_cov, H, R)
        s_now, s_prev, s_cross, c_yx, c_yy = sums
        sums = (
            s_now + w_next * next_cov,
            s_prev + w_next * sc,
            s_cross + w_next * (next_cov @ gain.T),
            c_yx + w_next * cov_yx,
            c_yy + w_next * cov_yy,
        )
        return (sm, sc, settled, sums, jnp.where(k == 0, sc, p0)), (sm, y_hat)

    def steady_chunk(carry, chunk):
        mean_in, pred_in, ys_in, w_in = chunk[0], chunk[2], chunk[5], chunk[6]
        pred_in = None if params.b is None else pred_in  # as in gappy_smooth
        next_mean, _, _, (s_now, s_prev, s_cross, c_yx, c_yy), p0 = carry

        def inner(nm, inputs):
            m, mp = inputs
            mp = steps.predict_mean(m, A) if mp is None else mp
            sm = steps.smooth_mean(m, mp, nm, G_inf)
            return sm, sm

        sm_last, sms = jax.lax.scan(inner, next_mean, (mean_in, pred_in), reverse=True)
        count = jnp.sum(w_in)
        sums = (s_now + count * X_inf, s_prev + count * X_inf, s_cross + count * XG_inf, c_yx, c_yy)
        return (sm_last, X_inf, jnp.ones((), bool), sums, p0), (sms, ys_in)

    def mixed_chunk(carry, chunk):
        return jax.lax.scan(body, carry, chunk, reverse=True)

    def outer(carry, chunk):
        fast = carry[2] & jnp.all(chunk[4])
        return jax.lax.cond(fast, steady_chunk, mixed_chunk, carry, chunk)

    C = min(_GAP_CHUNK, N)
    num_chunks = -(-N // C)
    front = fwd.front
    # The forward pass's rows as they are (same chunks, same front padding): no copies.
    chunks = (
        fwd.means,
        fwd.covs,
        fwd.pred_means,
        fwd.pred_covs,
        fwd.steady,
        _to_chunks(ys, 0.0, C),
        _to_chunks(w, 0.0, C),
        _to_chunks(jnp.arange(N, dtype=jnp.int32), -1, C),
    )
    zeros_dd = jnp.zeros((D, D), ys.dtype)
    sums0 = (
        zeros_dd,
        zeros_dd,
        zeros_dd,
        jnp.zeros((Dy, D), ys.dtype),
        jnp.zeros((Dy, Dy), ys.dtype),
    )
    last = (fwd.mean, fwd.cov, jnp.zeros((), bool), sums0, zeros_dd)
    # P_0^s is kept aside when step 0 passes: the front padding runs after it.
    (_, _, _, sums, P0s), (sms, y_hat) = jax.lax.scan(outer, last, chunks, reverse=True)
    sms = sms.reshape(num_chunks * C, D)[front:]
    y_hat = y_hat.reshape(num_chunks * C, Dy)[front:]
    means = jnp.concatenate([sms, fwd.mean[None]], axis=0)
    return _stats.from_sums_missing(*sums[:3], means, y_hat, *sums[3:], w, n, P0s, e, v)
