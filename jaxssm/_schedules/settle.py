r"""The covariance side of the steady-state schedule: the recursions run until they settle.

For a time-invariant model the filter covariances follow the Riccati recursion

.. math::

    P_k^- = A P_{k-1} A^\top + Q, \qquad
    P_k = P_k^- - P_k^- H^\top (H P_k^- H^\top + R)^{-1} H P_k^-,

which does not depend on the data and, for a stabilisable and detectable model, converges
geometrically to a fixed point :math:`P_\infty`; with it the Kalman gain ``K``, the factor of
the innovation covariance ``S`` and the smoother gain ``G`` become constant. The smoother
covariance then obeys the Stein recursion :math:`P_k^s = P + G (P_{k+1}^s - P^-) G^\top`,
which converges at the rate :math:`\rho(G)^2`. This module computes the transients of these
recursions and their limits (:func:`filter_side`, :func:`smoother_side`):

* the filter transient :math:`P_0, P_1, \dots` forward from ``P0``;
* the end transient :math:`X_j = P^s_{N-j}` backward from :math:`X_0 = P_N = P`;
* the start transient :math:`P^s_k`, ``k = T-1..0``, backward from :math:`P^s_T = X_\infty`
  through the filter transient.

A step has *settled* when its covariance changed by at most ``rtol`` on the correlation
scale (:func:`small_change`); the transient ends after the last step that had not. Each
recursion runs for at most ``T`` steps (:func:`transient_bound`), in *rounds* of
:func:`round_length` steps, through one helper, :func:`settling_scan`: the rounds after the
first settled one (or after the transient) are not computed, so only the transient actually
present costs covariance steps. Every step is the one of :mod:`jaxssm.steps`, so the
transient covariances are those the full recursion computes.

All functions are unchecked and meant to be called inside ``jit``.

References:
    B. D. O. Anderson and J. B. Moore, *Optimal Filtering* (1979), ch. 4.
    S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorems 4.2, 8.2 and 12.5.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._args.checks import check_int
from jaxssm._base.types import LGSSM, SteadyInfo

__all__ = [
    "DEFAULT_MAX_TRANSIENT",
    "default_rtol",
    "round_length",
    "transient_bound",
    "small_change",
    "last_unsettled",
    "Settling",
    "settling_scan",
    "FilterSide",
    "SmootherSide",
    "filter_side",
    "smoother_side",
    "transient_rows",
]

#: Default bound on each transient (rounded down to a multiple of the round length: 992).
#: Only the transient actually present (rounded up to whole rounds) costs covariance steps;
#: the bound decides when to give up and run the full recursion.
DEFAULT_MAX_TRANSIENT = 1000

#: Longest round of the settling scans, in steps.
_ROUND = 32


def default_rtol(dtype) -> float:
    """Return the default convergence tolerance, ``1e4 * eps`` of ``dtype`` (2.2e-12 in f64)."""
    return 1e4 * float(jnp.finfo(dtype).eps)


def round_length(T: int) -> int:
    """Return the steps per round of the settling scans for a bound ``T``: ``min(32, T // 4)``.

    At least 1; ``T`` is static.
    """
    return min(_ROUND, max(1, T // 4))


def transient_bound(num_steps: int, max_transient: int = DEFAULT_MAX_TRANSIENT) -> int:
    """Return the static transient bound ``T`` for a series of ``N = num_steps`` steps.

    ``T0 = min(max_transient, N // 3)``, rounded down to a multiple of the round length
    ``min(32, max(1, T0 // 4))``. The three regions of the steady-state schedule need
    ``N >= 2 T + 1``; capping ``T`` at ``N // 3`` also keeps the covariance work below the
    full recursion's.

    Args:
        num_steps: ``N`` (static).
        max_transient: the largest transient to wait for, a positive int.

    Returns:
        ``T``; 0 means the series is too short for the steady-state schedule.

    Raises:
        ValueError: if ``max_transient`` is not a positive int (a ``TypeError`` too when it
            is not an int at all).
    """
    max_transient = check_int(max_transient, "max_transient")
    T0 = min(max_transient, int(num_steps) // 3)
    if T0 < 1:
        return 0
    r = round_length(T0)
    return r * (T0 // r)


def small_change(new: jax.Array, old: jax.Array, rtol: float) -> jax.Array:
    """Whether ``|new - old|_ij <= rtol sqrt(new_ii new_jj)`` for all ``i, j`` (False for NaN).

    The scale is that of the correlations, so the test does not depend on the units of the
    state's components. It is formed from square roots of the diagonal, never from products
    or squares of covariance entries, so it neither overflows nor underflows where the
    covariances themselves are representable. No gradient flows through it.

    Args:
        new: ``[D, D]``.
        old: ``[D, D]``.
        rtol: the tolerance.

    Returns:
        A bool scalar.
    """
    new, old = jax.lax.stop_gradient(new), jax.lax.stop_gradient(old)
    sd = jnp.sqrt(jnp.abs(jnp.diagonal(new)))
    return jnp.all(jnp.abs(new - old) <= rtol * (sd[:, None] * sd[None, :]))


def last_unsettled(small: jax.Array) -> jax.Array:
    """Return the largest 1-based step ``k`` with ``small[k - 1]`` False (0 if none), int32."""
    idx = jnp.arange(1, small.shape[0] + 1, dtype=jnp.int32)
    return jnp.max(jnp.where(small, 0, idx))


# ---------------------------------------------------------------------------------------------
# The settling scan
# ---------------------------------------------------------------------------------------------


class Settling(NamedTuple):
    """What :func:`settling_scan` returns.

    Attributes:
        outs: the steps' outputs, stacked over the ``length`` steps in series order. Rows
            of the rounds not computed hold ``fill`` (differentiated: the output of the step
            computed last before them, ``fill`` if none).
        small: the steps' flags ``[length]`` (True where not computed), or ``None``.
        settled: whether a whole round settled, or ``None`` (``step`` reports no flags).
        state: the state after the last step computed.
        count: how many steps were computed, int32.
    """

    outs: Any
    small: jax.Array | None
    settled: jax.Array | None
    state: Any
    count: jax.Array


def settling_scan(
    step: Callable,
    operands,
    init,
    xs=None,
    *,
    length: int,
    per_round: int,
    before: jax.Array | None = None,
    reverse: bool = False,
    fill=None,
    steady: Callable | None = None,
) -> Settling:
    """Iterate ``step`` over ``length`` steps in rounds, computing only the rounds needed.

    A round of ``per_round`` steps is *live* when it starts before step ``before`` and no round
    run before it (in the order of iteration) has settled: all its steps reported ``small``.
    A live round runs ``step`` at each of its steps. A round that is not live runs
    ``steady`` instead when it is given (a ``lax.scan`` over the rounds with a ``lax.cond``
    each, differentiable as it is); otherwise it is not computed: the state is kept and its
    rows hold ``fill``. Evaluated, the live rounds then run in a ``lax.while_loop`` that
    stops after the last of them. Reverse-mode differentiation cannot pass a
    ``while_loop``, so under ``jvp``/``grad`` (a ``custom_jvp``) the same values and their
    tangents come from the ``lax.scan`` over all rounds, in which a round that is not live
    is skipped by ``lax.cond``. Under a batched ``vmap`` the loop runs until every member is
    done.

    Args:
        step: ``step(operands, state, x) -> (state, out, small)`` with ``small`` a bool
            scalar, or ``None`` where the step never settles. Without ``steady`` it must not
            close over traced values (they would not be differentiated).
        operands: the arrays ``step`` reads besides ``x`` (a pytree; differentiated).
        init: the initial state (a pytree; differentiated).
        xs: the per-step inputs, a pytree of ``[length, ...]`` arrays, or ``None``.
        length: the number of steps, a multiple of ``per_round`` (static).
        per_round: the steps per round (static).
        before: the step at which the live rounds end, an int32 scalar; ``None``: none.
        reverse: run from the last step to the first (static).
        fill: the output of a step not computed (like ``out``; ``None`` for zeros).
        steady: ``steady(operands, state, x) -> (state, out)``, the step of the rounds that
            are not live; ``None`` to skip them.

    Returns:
        :class:`Settling`.
    """
    if steady is not None:
        return _settle_scan(
            step, per_round, reverse, length, steady, operands, init, xs, before, fill
        )
    return _settle(step, per_round, reverse, length, operands, init, xs, before, fill)


def _prepare(step, per_round, length, operands, init, xs, fill):
    """Return the rounds' layout: ``(num_rounds, stops, xs by round, fill)``."""
    num_rounds = length // per_round
    x0 = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), xs)
    out, small = jax.eval_shape(lambda s, x: step(operands, s, x)[1:], init, x0)
    if fill is None:
        fill = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), out)
    by_round = jax.tree.map(lambda a: a.reshape((num_rounds, per_round) + a.shape[1:]), xs)
    return num_rounds, small is not None, by_round, fill


def _num_live(before, num_rounds: int, per_round: int) -> jax.Array:
    """Return the number of rounds that start before step ``before`` (all if ``None``)."""
    if before is None:
        return jnp.int32(num_rounds)
    return jnp.minimum((before + per_round - 1) // per_round, num_rounds).astype(jnp.int32)


def _run_round(step, operands, state, x, per_round: int, reverse: bool):
    """``step`` over the steps of one round: ``(state, (outs, small))``."""

    def body(s, xi):
        s, out, small = step(operands, s, xi)
        return s, (out, small)

    return jax.lax.scan(body, state, x, length=per_round, reverse=reverse)


def _unflagged(steady):
    """``steady`` as a ``step`` that reports no flag."""
    return lambda operands, state, x: (*steady(operands, state, x), None)


def _flat(outs, length: int):
    return jax.tree.map(lambda o: o.reshape((length,) + o.shape[2:]), outs)


def _settle_while(step, per_round, reverse, length, operands, init, xs, before, fill):
    """:func:`settling_scan` evaluated: a ``while_loop`` over the live rounds into buffers."""
    n, stops, xs, fill = _prepare(step, per_round, length, operands, init, xs, fill)
    live = _num_live(before, n, per_round)
    bufs = jax.tree.map(lambda f: jnp.broadcast_to(f, (n, per_round) + f.shape), fill)
    smalls, settled = (
        (jnp.ones((n, per_round), bool), jnp.zeros((), bool)) if stops else (None, None)
    )
    start = live - 1 if reverse else jnp.zeros((), jnp.int32)

    def body(carry):
        i, state, bufs, smalls, settled = carry
        x = jax.tree.map(lambda a: a[i], xs)
        state, (outs, small) = _run_round(step, operands, state, x, per_round, reverse)
        bufs = jax.tree.map(lambda b, o: b.at[i].set(o), bufs, outs)
        if stops:
            smalls, settled = smalls.at[i].set(small), jnp.all(small)
        return i - 1 if reverse else i + 1, state, bufs, smalls, settled

    def running(carry):
        inside = carry[0] >= 0 if reverse else carry[0] < live
        return inside & ~carry[4] if stops else inside

    carry = (start, init, bufs, smalls, settled)
    i, state, bufs, smalls, settled = jax.lax.while_loop(running, body, carry)
    small = None if smalls is None else smalls.reshape(length)
    count = (start - i if reverse else i) * per_round
    return Settling(_flat(bufs, length), small, settled, state, count)


def _settle_scan(step, per_round, reverse, length, steady, operands, init, xs, before, fill):
    """:func:`settling_scan` as a ``lax.scan`` over all rounds with a ``lax.cond`` each.

    The carry is ``(state, last output, settled, steps computed)``: the last output only
    where skipped rounds repeat it, the flag and the count only where steps settle.
    """
    n, stops, xs, fill = _prepare(step, per_round, length, operands, init, xs, fill)
    ones = jnp.ones((per_round,), bool) if stops else None

    def run(carry, x):
        state, last, settled, count = carry
        state, (outs, small) = _run_round(step, operands, state, x, per_round, reverse)
        if steady is None:
            last = jax.tree.map(lambda o: o[0] if reverse else o[-1], outs)
        if stops:
            settled, count = jnp.all(small), count + per_round
        return (state, last, settled, count), (outs, small)

    def other(carry, x):
        state, last, settled, count = carry
        if steady is None:
            outs = jax.tree.map(lambda o: jnp.broadcast_to(o, (per_round,) + o.shape), last)
        else:
            state, (outs, _) = _run_round(
                _unflagged(steady), operands, state, x, per_round, reverse
            )
        return (state, last, settled, count), (outs, ones)

    def outer(carry, indexed):
        start, x = indexed
        live = jnp.ones((), bool) if before is None else start < before
        return jax.lax.cond(live & ~carry[2] if stops else live, run, other, carry, x)

    flags = (jnp.zeros((), bool), jnp.zeros((), jnp.int32)) if stops else (None, None)
    init = (init, fill if steady is None else None, *flags)
    starts = jnp.arange(n, dtype=jnp.int32) * per_round
    carry, (outs, small) = jax.lax.scan(outer, init, (starts, xs), reverse=reverse)
    state, _, settled, count = carry
    small = None if small is None else small.reshape(length)
    count = count if stops else _num_live(before, n, per_round) * per_round
    return Settling(_flat(outs, length), small, settled, state, count)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _settle(step, per_round, reverse, length, operands, init, xs, before, fill):
    return _settle_while(step, per_round, reverse, length, operands, init, xs, before, fill)


@_settle.defjvp
def _settle_jvp(step, per_round, reverse, length, primals, tangents):
    scan = functools.partial(_settle_scan, step, per_round, reverse, length, None)
    return jax.jvp(scan, primals, tangents)


# ---------------------------------------------------------------------------------------------
# The filter transient
# ---------------------------------------------------------------------------------------------


class FilterSide(NamedTuple):
    """The data-independent side of the fast filter for one model and bound ``T``.

    The ``[T, ...]`` arrays hold the steps of the rounds the covariance loop computed; rows
    of the rounds after the first settled one are not computed and hold no meaningful value.
    Every reader takes the rows of the *transient rounds* only (rounds that start before
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
        converged: whether a whole round of steps changed by less than ``rtol``, bool.
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


def transient_rows(fs: FilterSide) -> jax.Array:
    """Whether step row ``i`` (``[T]``) lies in a round that starts before ``fs.transient``.

    These are the rows that the mean recursions take step by step with the per-step
    quantities of :class:`FilterSide`; every other row uses the steady ones.
    """
    T = fs.smoother_gains.shape[0]
    r = round_length(T)
    starts = (jnp.arange(T, dtype=jnp.int32) // r) * r
    return starts < fs.transient


def _filter_step(rtol: float, operands, cov, x):
    """One step of the filter's covariance recursion (:func:`filter_side`'s ``step``).

    The output row of step ``k`` holds the filtered covariance *entering* it, ``P_{k-1}``,
    so that the rows are ``P_0..P_{T-1}`` and ``P0`` needs no concatenation in front.
    """
    A, Q, H, R = operands
    pred_cov = steps.predict_cov(cov, A, Q)
    half = steps.update_cov(pred_cov, H, R)
    G = steps.smoother_gain(cov, pred_cov, A)
    out = (pred_cov, cov, half.chol, half.obs_factor, G)
    return half.cov, out, small_change(half.cov, cov, rtol)


def filter_side(params: LGSSM, T: int, rtol: float | None = None) -> FilterSide:
    """Run the filter's covariance recursion for ``T`` steps (fewer if it settles).

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked).
        T: the static bound, a positive multiple of its round length (as
            :func:`transient_bound` returns).
        rtol: convergence tolerance; ``None`` for :func:`default_rtol` of the dtype.

    Returns:
        :class:`FilterSide`; the steady quantities are those of the step after the last one
        computed.

    Raises:
        ValueError: if ``T`` is not a positive multiple of :func:`round_length`.
    """
    r = round_length(T)
    if T < 1 or T % r:
        raise ValueError(f"T must be a positive multiple of min(32, max(1, T // 4)), got {T}")
    if rtol is None:
        rtol = default_rtol(params.A.dtype)
    A, Q, H, R = params.A, params.Q, params.H, params.R

    # Everything per step inside the loop (no vmapped LAPACK calls afterwards): concurrent
    # batched LAPACK calls in one program can deadlock on CPU (jaxssm._base.linalg).
    step = functools.partial(_filter_step, float(rtol))
    run = settling_scan(step, (A, Q, H, R), params.P0, length=T, per_round=r)
    pred_covs, covs, chols, obs_factors, smoother_gains = run.outs
    cov = run.state
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
        transient=last_unsettled(run.small),
        converged=run.settled,
    )


# ---------------------------------------------------------------------------------------------
# The smoother transients
# ---------------------------------------------------------------------------------------------


class SmootherSide(NamedTuple):
    """The data-independent side of the fast smoother.

    The EM statistics read the sums only, so under ``jit`` XLA drops the ``[T, D, D]``
    buffers of the smoother's two loops from a program that does not return them.

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


def _stein_step(rtol: float, operands, state, x):
    """One backward step of the steady smoother covariance, carrying the running sum."""
    cov, pred_cov, G = operands
    X, total = state
    new = steps.smooth_cov(cov, pred_cov, X, G)
    return (new, total + new), new, small_change(new, X, rtol)


def _start_step(operands, state, x):
    """One backward step of the smoother covariance through the filter transient.

    ``state = (P^s_{k+1}, sum of P^s, sum of P^s_{k+1} G_k^T)``, ``x = (P_k, P_{k+1}^-, G_k)``.
    """
    next_cov, total, cross = state
    cov, next_pred_cov, G = x
    new = steps.smooth_cov(cov, next_pred_cov, next_cov, G)
    return (new, total + new, cross + next_cov @ G.T), new, None


def smoother_side(params: LGSSM, T: int, rtol: float | None = None) -> SmootherSide:
    """Every covariance-side quantity of the fast smoother, with diagnostics.

    The end transient runs the Stein recursion backward from ``X_0 = P`` until a round
    settles at ``X = P^s_inf``; the start transient runs the smoother covariance recursion
    backward from ``P^s_T = X`` through the rounds of the filter transient only (in the
    others every input is steady and the recursion sits at ``X``). Both accumulate the sums
    the EM statistics need (the steps not computed add ``X`` and ``X G^T``).

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
    r = round_length(T)

    # End: X_j = P^s_{N-j}, j = 1..T, backward from X_0 = P.
    step = functools.partial(_stein_step, float(rtol))
    operands = (fs.cov, fs.pred_cov, fs.smoother_gain)
    end = settling_scan(step, operands, (fs.cov, jnp.zeros_like(fs.cov)), length=T, per_round=r)
    X_inf, end_sum = end.state
    end_sum = fs.cov + end_sum + (T - end.count).astype(end_sum.dtype) * X_inf
    s_len = jnp.where(fs.converged, last_unsettled(end.small), jnp.int32(T))

    # Start: P^s_k, k = T-1..0, backward from P^s_T = X_inf, in the transient rounds only.
    zero = jnp.zeros_like(X_inf)
    xs = (fs.covs, fs.pred_covs, fs.smoother_gains)
    start = settling_scan(
        _start_step,
        None,
        (X_inf, zero, zero),
        xs,
        length=T,
        per_round=r,
        before=fs.transient,
        reverse=True,
        fill=X_inf,
    )
    _, start_sum, start_cross = start.state
    idle = (T - start.count).astype(X_inf.dtype)  # steps at the fixed point, k < T
    start_sum = start_sum + (idle + 1) * X_inf
    start_cross = start_cross + idle * (X_inf @ fs.smoother_gain.T)

    info = SteadyInfo(T, fs.transient, s_len, fs.converged & end.settled)
    return SmootherSide(
        fs, end.outs, end.count, X_inf, end_sum, start.outs, start_sum, start_cross, info
    )
