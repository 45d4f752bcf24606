r"""The steady-state schedule in square-root form (``form="sqrt"``, ``steady_state=True``).

For a time-invariant model the covariance side of the steady-state schedule does not depend
on the data (:mod:`jaxssm._schedules.settle`). Here it runs on lower-triangular factors
instead of covariances, with the steps of :mod:`jaxssm._blocks.sqrt_steps` (each a QR
re-triangularisation, so every covariance it stands for is positive semi-definite by
construction):

* the filter transient: ``L^-_k = tria([A L_{k-1}, L_Q])``, the update's
  ``tria([[L_R, H L^-_k], [0, L^-_k]])`` for the factor of ``S``, the gain and ``L_k``, and
  the smoother gain ``G_{k-1}`` with the factor ``C_{k-1}`` of its data-free part
  (:func:`jaxssm._blocks.sqrt_steps.smoother_gain`);
* the end transient: ``L^s = tria([G L^s_{next}, C])`` backward from the steady filtered
  factor, with the steady ``G, C`` (the square-root Stein recursion);
* the start transient: the same step with the per-step ``G_k, C_k`` through the rounds of
  the filter transient, backward from the settled smoothed factor.

Each runs in the rounds of :func:`jaxssm._schedules.settle.settling_scan` and settles by
the covariance form's rule (:func:`jaxssm._schedules.settle.small_change` on ``L L^T``), so
the transients, the bound ``T`` and :class:`~jaxssm.ScheduleInfo` mean what they mean there.
:func:`filter_side` and :func:`smoother_side` return the covariance form's
:class:`~jaxssm._schedules.settle.FilterSide` and
:class:`~jaxssm._schedules.settle.SmootherSide` with every covariance rebuilt as ``L L^T``
and the gains taken from the factors, beside the factors themselves: the means, the
log-likelihood and the EM statistics are then those of :mod:`jaxssm._schedules.steady`
(the means do not depend on the form).

Where the fast path does not apply (a missing entry, or transients that did not settle
within ``T``) the dispatcher runs the full square-root recursion
(:mod:`jaxssm._schedules.sqrt`); there is no square-root form of the gap-aware recursion
(:mod:`jaxssm._schedules.gappy`). All functions are unchecked and meant to be called inside
``jit``, on a reduced model (:func:`jaxssm._base.model.reduce`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._base.tria import tria
from jaxssm._base.types import LGSSM, CovFactors, FilterResult, SmootherResult, SteadyInfo
from jaxssm._blocks import sqrt_steps as _sq
from jaxssm._schedules import sqrt as _sqrt
from jaxssm._schedules import steady as _steady
from jaxssm._schedules.settle import (
    FilterSide,
    SmootherSide,
    default_rtol,
    last_unsettled,
    round_length,
    settling_scan,
    small_change,
    transient_rows,
)

__all__ = [
    "FilterFactors",
    "SmootherFactors",
    "SqrtFilterSide",
    "SqrtSmootherSide",
    "filter_side",
    "smoother_side",
    "filter_factors",
    "smoother_factors",
    "run_factors",
]


class FilterFactors(NamedTuple):
    """The factors behind a square-root :class:`~jaxssm._schedules.settle.FilterSide`.

    Rows as in :class:`~jaxssm._schedules.settle.FilterSide` (those of the rounds after the
    first settled one are not computed).

    Attributes:
        pred_chols: factors of ``P_k^-``, ``k = 1..T``, ``[T, D, D]``.
        chols: factors of ``P_k``, ``k = 0..T-1``, ``[T, D, D]``.
        residuals: ``C_k`` of :func:`jaxssm._blocks.sqrt_steps.smoother_gain`,
            ``k = 0..T-1``, ``[T, D, 2D]``.
        pred_chol: steady factor of ``P^-``, ``[D, D]``.
        chol: steady factor of ``P``, ``[D, D]``.
        residual: steady ``C``, ``[D, 2D]``.
    """

    pred_chols: jax.Array
    chols: jax.Array
    residuals: jax.Array
    pred_chol: jax.Array
    chol: jax.Array
    residual: jax.Array


class SmootherFactors(NamedTuple):
    """The smoothed factors behind a square-root :class:`~jaxssm._schedules.settle.SmootherSide`.

    Attributes:
        filt: the :class:`FilterFactors`.
        end_chols: factors of ``X_j = P^s_{N-j}``, ``j = 1..T``, ``[T, D, D]``.
        smoothed_chol: the factor of ``X = P^s_inf``, ``[D, D]``.
        start_chols: factors of ``P^s_k``, ``k = 0..T-1``, ``[T, D, D]``.
    """

    filt: FilterFactors
    end_chols: jax.Array
    smoothed_chol: jax.Array
    start_chols: jax.Array


class SqrtFilterSide(NamedTuple):
    """:func:`filter_side`: the covariance-form side (covariances from factors) and factors."""

    side: FilterSide
    factors: FilterFactors


class SqrtSmootherSide(NamedTuple):
    """:func:`smoother_side`: the covariance-form side (covariances from factors) and factors."""

    side: SmootherSide
    factors: SmootherFactors


def _filter_step(rtol: float, operands, state, x):
    """One step of the square-root Riccati recursion (``state = (L_{k-1}, P_{k-1})``).

    The output row of step ``k`` holds what enters it (``L_{k-1}``, and ``G_{k-1}, C_{k-1}``
    of the RTS step from ``k - 1``), as in :func:`jaxssm._schedules.settle.filter_side`.
    """
    A, Q, chol_Q, H, chol_R = operands
    chol, cov = state
    pred = _sq.predict_factor_q(chol, A, Q, chol_Q)
    inn = _sq.innovation(pred, H, chol_R, jnp.zeros(H.shape[0], H.dtype))
    gain, residual = _sq.smoother_gain(chol, A, chol_Q)
    new_cov = _sqrt.outer(inn.chol)
    out = (pred, chol, inn.chol_S, inn.gain.T, gain, residual)
    return (inn.chol, new_cov), out, small_change(new_cov, cov, rtol)


def filter_side(params: LGSSM, T: int, rtol: float | None = None) -> SqrtFilterSide:
    """Run the filter's covariance side for ``T`` steps (fewer if it settles) on factors.

    Args:
        params: a time-invariant :class:`~jaxssm.LGSSM` (unchecked, reduced).
        T: the static bound, a positive multiple of its round length
            (:func:`jaxssm._schedules.settle.transient_bound`).
        rtol: convergence tolerance on the covariances ``L L^T``; ``None`` for
            :func:`jaxssm._schedules.settle.default_rtol` of the dtype.

    Returns:
        :class:`SqrtFilterSide`: ``side.obs_factors`` hold ``(K_k L_{S,k})^T`` (the
        update's ``W_k``), ``side.chols`` the factors of ``S_k`` from the update's QR.

    Raises:
        ValueError: if ``T`` is not a positive multiple of its round length.
    """
    r = round_length(T)
    if T < 1 or T % r:
        raise ValueError(f"T must be a positive multiple of min(32, max(1, T // 4)), got {T}")
    if rtol is None:
        rtol = default_rtol(params.A.dtype)
    A, Q, H = params.A, params.Q, params.H
    chol_Q, chol_R = _sq.factor(Q), _sq.factor(params.R)
    operands = (A, Q, chol_Q, H, chol_R)
    chol0 = _sq.factor(params.P0)
    step = functools.partial(_filter_step, float(rtol))
    run = settling_scan(step, operands, (chol0, _sqrt.outer(chol0)), length=T, per_round=r)
    pred_chols, chols, chol_Ss, obs_factors, gains, residuals = run.outs
    chol, cov = run.state
    pred = _sq.predict_factor_q(chol, A, Q, chol_Q)
    inn = _sq.innovation(pred, H, chol_R, jnp.zeros(H.shape[0], H.dtype))
    gain, residual = _sq.smoother_gain(chol, A, chol_Q)
    side = FilterSide(
        pred_covs=_sqrt.outer(pred_chols),
        covs=_sqrt.outer(chols),
        chols=chol_Ss,
        obs_factors=obs_factors,
        smoother_gains=gains,
        pred_cov=_sqrt.outer(pred),
        cov=cov,
        chol=inn.chol_S,
        gain=steps.kalman_gain(inn.chol_S, inn.gain.T),
        smoother_gain=gain,
        transient=last_unsettled(run.small),
        converged=run.settled,
    )
    return SqrtFilterSide(side, FilterFactors(pred_chols, chols, residuals, pred, chol, residual))


def _smoothed(G: jax.Array, residual: jax.Array, next_chol: jax.Array) -> jax.Array:
    """``L^s_k = tria([G_k L^s_{k+1}, C_k])``: the square-root RTS step's factor."""
    return tria(jnp.concatenate([G @ next_chol, residual], axis=1))


def _stein_step(rtol: float, operands, state, x):
    """One backward step of the steady smoothed factor, carrying its covariance and the sum."""
    G, residual = operands
    chol, cov, total = state
    new = _smoothed(G, residual, chol)
    new_cov = _sqrt.outer(new)
    return (new, new_cov, total + new_cov), new, small_change(new_cov, cov, rtol)


def _start_step(operands, state, x):
    """One backward step of the smoothed factor through the filter transient.

    ``state = (L^s_{k+1}, P^s_{k+1}, sum of P^s, sum of P^s_{k+1} G_k^T)``, ``x = (G_k, C_k)``.
    """
    next_chol, next_cov, total, cross = state
    G, residual = x
    new = _smoothed(G, residual, next_chol)
    new_cov = _sqrt.outer(new)
    return (new, new_cov, total + new_cov, cross + next_cov @ G.T), new, None


def smoother_side(params: LGSSM, T: int, rtol: float | None = None) -> SqrtSmootherSide:
    """Every covariance-side quantity of the fast smoother, on factors.

    :func:`jaxssm._schedules.settle.smoother_side` with the square-root steps: the end
    transient backward from the steady filtered factor until a round settles, the start
    transient through the rounds of the filter transient, and the sums the EM statistics
    read (of the covariances ``L L^T``).

    Args:
        params: as for :func:`filter_side`.
        T: as for :func:`filter_side`.
        rtol: as for :func:`filter_side`.

    Returns:
        :class:`SqrtSmootherSide`; ``side.info.converged`` says whether both transients
        ended within ``T`` steps.
    """
    if rtol is None:
        rtol = default_rtol(params.A.dtype)
    filt = filter_side(params, T, rtol)
    fs, ff = filt
    r = round_length(T)

    # End: X_j = P^s_{N-j}, j = 1..T, backward from X_0 = P.
    step = functools.partial(_stein_step, float(rtol))
    init = (ff.chol, fs.cov, jnp.zeros_like(fs.cov))
    end = settling_scan(step, (fs.smoother_gain, ff.residual), init, length=T, per_round=r)
    X_chol, X_inf, end_sum = end.state
    end_sum = fs.cov + end_sum + (T - end.count).astype(end_sum.dtype) * X_inf
    s_len = jnp.where(fs.converged, last_unsettled(end.small), jnp.int32(T))

    # Start: P^s_k, k = T-1..0, backward from P^s_T = X_inf, in the transient rounds only.
    zero = jnp.zeros_like(X_inf)
    start = settling_scan(
        _start_step,
        None,
        (X_chol, X_inf, zero, zero),
        (fs.smoother_gains, ff.residuals),
        length=T,
        per_round=r,
        before=fs.transient,
        reverse=True,
        fill=X_chol,
    )
    _, _, start_sum, start_cross = start.state
    idle = (T - start.count).astype(X_inf.dtype)  # steps at the fixed point, k < T
    start_sum = start_sum + (idle + 1) * X_inf
    start_cross = start_cross + idle * (X_inf @ fs.smoother_gain.T)

    info = SteadyInfo(T, fs.transient, s_len, fs.converged & end.settled)
    side = SmootherSide(
        fs,
        _sqrt.outer(end.outs),
        end.count,
        X_inf,
        end_sum,
        _sqrt.outer(start.outs),
        start_sum,
        start_cross,
        info,
    )
    return SqrtSmootherSide(side, SmootherFactors(ff, end.outs, X_chol, start.outs))


def _per_step(rows: jax.Array, buf: jax.Array, steady: jax.Array) -> jax.Array:
    """``buf``'s rows where ``rows`` is True, ``steady`` (broadcast) elsewhere."""
    return jnp.where(rows.reshape(rows.shape + (1,) * steady.ndim), buf, steady)


def filter_factors(fs: FilterSide, ff: FilterFactors, num_steps: int) -> CovFactors:
    """Assemble the fast path's filter factors over ``N = num_steps`` steps.

    Rows ``0..T-1`` are the transient's where they were computed (row 0 the factor of
    ``P0``), the steady factors elsewhere.
    """
    N = num_steps
    T, D = ff.chols.shape[0], ff.chol.shape[0]
    rows = transient_rows(fs)
    first = jnp.arange(T) == 0
    chols = jnp.concatenate(
        [_per_step(rows | first, ff.chols, ff.chol), jnp.broadcast_to(ff.chol, (N + 1 - T, D, D))]
    )
    pred_chols = jnp.concatenate(
        [
            _per_step(rows, ff.pred_chols, ff.pred_chol),
            jnp.broadcast_to(ff.pred_chol, (N - T, D, D)),
        ]
    )
    return CovFactors(chols, pred_chols)


def smoother_factors(side: SmootherSide, sf: SmootherFactors, num_steps: int) -> CovFactors:
    """Assemble the fast path's smoothed factors over ``N = num_steps`` steps."""
    N = num_steps
    T, D = sf.start_chols.shape[0], sf.smoothed_chol.shape[0]
    X = sf.smoothed_chol
    computed = jnp.arange(T, dtype=jnp.int32) < side.end_count
    end = _per_step(computed, sf.end_chols, X)[::-1]
    chols = jnp.concatenate(
        [sf.start_chols, jnp.broadcast_to(X, (N - 2 * T, D, D)), end, sf.filt.chol[None]]
    )
    return CovFactors(chols, None)


def run_factors(
    params: LGSSM,
    ys: jax.Array,
    T: int,
    rtol: float | None,
    smoothed: bool,
    parallel: bool,
) -> tuple[FilterResult | SmootherResult, CovFactors]:
    """Run the steady-state schedule and return its factors too: ``(result, CovFactors)``.

    The fast path where the transients settled within ``T`` steps and every entry of ``ys``
    is observed, the full square-root recursion of the method elsewhere (one ``lax.cond``).

    Args:
        params: a time-invariant :class:`~jaxssm.LGSSM` (unchecked, reduced).
        ys: ``[N, Dy]`` (reduced), NaN where missing.
        T: the bound (static, positive).
        rtol: the convergence tolerance, or ``None``.
        smoothed: the smoother's result (else the filter's) (static).
        parallel: the fast path's mean recursions in log depth and the associative scan as
            the fallback (static).
    """
    N = ys.shape[0]
    missing = jnp.isnan(ys)
    observed = ~jnp.any(missing)
    ys_fast = jnp.where(missing, jnp.zeros((), ys.dtype), ys)
    form = "doubling" if parallel else None
    if smoothed:
        side, fac = smoother_side(params, T, rtol)
        converged = side.info.converged

        def fast(p, y):
            return _steady.smooth(p, y, side, form), smoother_factors(side, fac, N)

        def full(p, y):
            fwd = _sqrt.parallel_filter_factors if parallel else _sqrt.filter_factors
            bwd = _sqrt.parallel_smooth_factors if parallel else _sqrt.smooth_factors
            return bwd(p, *fwd(p, y))

    else:
        side, fac = filter_side(params, T, rtol)
        converged = side.converged

        def fast(p, y):
            return _steady.filter(p, y, side, form), filter_factors(side, fac, N)

        def full(p, y):
            fwd = _sqrt.parallel_filter_factors if parallel else _sqrt.filter_factors
            return fwd(p, y)

    return jax.lax.cond(
        converged & observed,
        lambda p, y, yf: fast(p, yf),
        lambda p, y, yf: full(p, y),
        params,
        ys,
        ys_fast,
    )
