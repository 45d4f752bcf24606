"""The square-root form (``form="sqrt"``) of the sequential and parallel schedules.

The filter and the RTS smoother of :mod:`jaxssm._schedules.sequential` (``lax.scan``) and of
:mod:`jaxssm._schedules.parallel` (``lax.associative_scan``), carrying lower triangular
factors of the covariances (:mod:`jaxssm._blocks.sqrt_steps`,
:mod:`jaxssm._blocks.sqrt_elements`) instead of the covariances. The results are the
usual :class:`~jaxssm.FilterResult` and :class:`~jaxssm.SmootherResult` with every
covariance rebuilt as ``L L^T`` (symmetric positive semi-definite by construction); the
factors come back beside them as :class:`~jaxssm.CovFactors`. Unchecked, on a reduced
model (:func:`jaxssm._base.model.reduce`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.batching import batched
from jaxssm._base.linalg import BATCHED
from jaxssm._base.tria import tria_batched
from jaxssm._base.types import LGSSM, CovFactors, FilterResult, SmootherResult
from jaxssm._blocks import sqrt_elements as _el
from jaxssm._blocks import sqrt_steps as _sq

__all__ = [
    "filter",
    "smooth",
    "filter_factors",
    "smooth_factors",
    "parallel_filter_factors",
    "parallel_smooth_factors",
    "run_factors",
    "outer",
]


def outer(L: jax.Array) -> jax.Array:
    """``L L^T`` over the last two axes (symmetric by construction, then exactly)."""
    P = L @ jnp.swapaxes(L, -1, -2)
    return 0.5 * (P + jnp.swapaxes(P, -1, -2))


def _factored(params: LGSSM, name: str) -> jax.Array:
    """Factor of ``Q`` or ``R``: ``[D, D]``, or ``[N, D, D]`` for a time-varying field."""
    C = getattr(params, name)
    return jax.vmap(_sq.factor)(C) if _model.is_time_varying(params, name) else _sq.factor(C)


def filter_factors(params: LGSSM, ys: jax.Array) -> tuple[FilterResult, CovFactors]:
    """Square-root Kalman filter over ``ys [N, Dy]``: the result and its factors.

    NaN entries of ``ys`` are missing.
    """
    fixed, varying = _model.split(params)
    chol_Q, chol_R = _factored(params, "Q"), _factored(params, "R")
    Q_steps = chol_Q if chol_Q.ndim == 3 else None
    R_steps = chol_R if chol_R.ndim == 3 else None

    def body(carry, inputs):
        mean, chol, ll = carry
        y, per_step, LQ, LR = inputs
        p = _model.merge(fixed, per_step)
        LQ = chol_Q if LQ is None else LQ
        LR = chol_R if LR is None else LR
        pred_mean = p.A @ mean if p.b is None else p.A @ mean + p.b
        pred_chol = _sq.predict_factor_q(chol, p.A, p.Q, LQ)
        up = _sq.update(pred_mean, pred_chol, p.H, LR, y)
        return (up.mean, up.chol, ll + up.log_likelihood), (up.mean, up.chol, pred_mean, pred_chol)

    chol0 = _sq.factor(params.P0)
    init = (params.m0, chol0, jnp.zeros((), params.m0.dtype))
    (_, _, ll), (means, chols, pred_means, pred_chols) = jax.lax.scan(
        body, init, (ys, varying, Q_steps, R_steps)
    )
    means = jnp.concatenate([params.m0[None], means], axis=0)
    chols = jnp.concatenate([chol0[None], chols], axis=0)
    result = FilterResult(means, outer(chols), pred_means, outer(pred_chols), ll)
    return result, CovFactors(chols, pred_chols)


def smooth_factors(
    params: LGSSM, filtered: FilterResult, factors: CovFactors
) -> tuple[SmootherResult, CovFactors]:
    """Square-root RTS backward pass over :func:`filter_factors`' output.

    Step ``k`` uses the transition and process noise of step ``k + 1``.
    """
    A_steps = params.A if _model.is_time_varying(params, "A") else None
    chol_Q = _factored(params, "Q")
    Q_steps = chol_Q if chol_Q.ndim == 3 else None

    def body(carry, inputs):
        next_mean, next_chol = carry
        mean, chol, next_pred_mean, A_k, LQ = inputs
        A = params.A if A_k is None else A_k
        LQ = chol_Q if LQ is None else LQ
        out = _sq.smooth_step(mean, chol, next_pred_mean, next_mean, next_chol, A, LQ)
        return (out.mean, out.chol), (out.mean, out.chol, out.gain)

    last = (filtered.means[-1], factors.covs[-1])
    inputs = (filtered.means[:-1], factors.covs[:-1], filtered.pred_means, A_steps, Q_steps)
    _, (means, chols, gains) = jax.lax.scan(body, last, inputs, reverse=True)
    means = jnp.concatenate([means, filtered.means[-1:]], axis=0)
    chols = jnp.concatenate([chols, factors.covs[-1:]], axis=0)
    result = SmootherResult(means, outer(chols), gains, filtered.log_likelihood)
    return result, CovFactors(chols, None)


def filter(params: LGSSM, ys: jax.Array) -> FilterResult:
    """:func:`filter_factors` without the factors."""
    return filter_factors(params, ys)[0]


def smooth(params: LGSSM, ys: jax.Array) -> SmootherResult:
    """Square-root filter and smoother of ``ys [N, Dy]`` (a :class:`~jaxssm.SmootherResult`)."""
    return smooth_factors(params, *filter_factors(params, ys))[0]


def parallel_filter_factors(params: LGSSM, ys: jax.Array) -> tuple[FilterResult, CovFactors]:
    """Square-root filter as an associative scan (:mod:`jaxssm._blocks.sqrt_elements`).

    The filtered factors are the scan's prefixes. From them, mapped over time: the predicted
    factors, the innovations' factors and the gains ``K_k``; the filtered means are then the
    prefixes of the affine maps ``m_k = (I - K_k H) A m_{k-1} + (I - K_k H) c_k + K_k y_k``
    (a second associative scan), and the log-likelihood comes from the innovations' factors.
    The elements' own means (through the information vectors) would do in exact arithmetic;
    in float32 their cancellation loses the means of stiff models (docs/numerics.md). The
    innovation covariance ``H Q H^T + R`` of the observed entries must be positive definite
    (the generic elements factor it).
    """
    fixed, varying = _model.split(params)
    chol_Q, chol_R = _factored(params, "Q"), _factored(params, "R")
    Q_steps = chol_Q if chol_Q.ndim == 3 else None
    R_steps = chol_R if chol_R.ndim == 3 else None

    def element(y, v, LQ, LR):
        p = _model.merge(fixed, v)
        LQ = chol_Q if LQ is None else LQ
        LR = chol_R if LR is None else LR
        return _el.filter_element(p.A, p.b, LQ, p.H, LR, y)

    generic = batched(element)(ys, varying, Q_steps, R_steps)
    p1 = _model.step(params, 0)
    LQ1 = chol_Q if Q_steps is None else Q_steps[0]
    LR1 = chol_R if R_steps is None else R_steps[0]
    chol0 = _sq.factor(params.P0)
    pred_mean = p1.A @ params.m0 if p1.b is None else p1.A @ params.m0 + p1.b
    first = _sq.update(pred_mean, _sq.predict_factor(chol0, p1.A, LQ1), p1.H, LR1, ys[0])
    zeros = jnp.zeros_like(chol0)
    first = _el.SqrtFilterElement(zeros, first.mean, first.chol, jnp.zeros_like(params.m0), zeros)
    elems = jax.tree_util.tree_map(lambda g, f: g.at[0].set(f), generic, first)
    scanned = jax.lax.associative_scan(batched(_el.filter_combine), elems)
    chols = jnp.concatenate([chol0[None], scanned.U], axis=0)

    def gains(L, y, v, LQ, LR):  # step k from the filtered factor of k - 1
        p = _model.merge(fixed, v)
        LQ = chol_Q if LQ is None else LQ
        LR = chol_R if LR is None else LR
        pL = _sq.predict_factor(L, p.A, LQ, tria_batched)
        inn = _sq.innovation(pL, p.H, LR, y, tria_batched)
        # m_k = F m_{k-1} + d: F = (I - K H) A, d = (I - K H) c + K y, with K = G L_S^{-1}
        VW = BATCHED.solve_lower(inn.chol_S, jnp.concatenate([inn.H @ p.A, inn.y[:, None]], axis=1))
        F = p.A - inn.gain @ VW[:, :-1]
        d = inn.gain @ VW[:, -1]
        if p.b is not None:
            d = d + p.b - inn.gain @ BATCHED.solve_lower(inn.chol_S, (inn.H @ p.b)[:, None])[:, 0]
        return pL, inn.chol_S, F, d

    pred_chols, chol_S, F, d = batched(gains)(chols[:-1], ys, varying, Q_steps, R_steps)

    # The means from their affine recursion (a log-depth scan of its maps), with the gains
    # of the factors: the elements' own means b go through the information vectors eta, whose
    # cancellation loses the means of stiff models in float32.
    def compose(earlier, later):  # x -> F_l (F_e x + d_e) + d_l, batched over time
        return later[0] @ earlier[0], (later[0] @ earlier[1][..., None])[..., 0] + later[1]

    prefix = jax.lax.associative_scan(compose, (F, d))
    means = jnp.concatenate([params.m0[None], prefix[0] @ params.m0 + prefix[1]], axis=0)

    def log_lik(m, pL, LS, y, v):
        p = _model.merge(fixed, v)
        pm = p.A @ m if p.b is None else p.A @ m + p.b
        observed = ~jnp.isnan(y)
        zero = jnp.zeros((), m.dtype)
        r = jnp.where(observed, y - p.H @ pm, zero)
        z = BATCHED.solve_lower(LS, r[:, None])[:, 0]
        return pm, steps.log_normal_whitened(z, LS, jnp.sum(observed).astype(y.dtype))

    pred_means, lls = batched(log_lik)(means[:-1], pred_chols, chol_S, ys, varying)
    result = FilterResult(means, outer(chols), pred_means, outer(pred_chols), jnp.sum(lls))
    return result, CovFactors(chols, pred_chols)


def parallel_smooth_factors(
    params: LGSSM, filtered: FilterResult, factors: CovFactors
) -> tuple[SmootherResult, CovFactors]:
    """Square-root RTS smoother as a reverse associative scan over its elements."""
    A_steps = params.A if _model.is_time_varying(params, "A") else None
    chol_Q = _factored(params, "Q")
    Q_steps = chol_Q if chol_Q.ndim == 3 else None

    def element(m, L, mp, A_k, LQ):
        A = params.A if A_k is None else A_k
        LQ = chol_Q if LQ is None else LQ
        zm, zL = jnp.zeros_like(m), jnp.zeros_like(L)
        return _sq.smooth_step(m, L, mp, zm, zL, A, LQ, tria_batched, BATCHED)

    body = batched(element)(
        filtered.means[:-1], factors.covs[:-1], filtered.pred_means, A_steps, Q_steps
    )
    last = _el.SqrtSmoothElement(
        jnp.zeros_like(factors.covs[-1]), filtered.means[-1], factors.covs[-1]
    )
    elems = jax.tree_util.tree_map(
        lambda x, y: jnp.concatenate([x, y[None]], axis=0),
        _el.SqrtSmoothElement(body.gain, body.mean, body.chol),
        last,
    )
    scanned = jax.lax.associative_scan(jax.vmap(_el.smooth_combine), elems, reverse=True)
    result = SmootherResult(scanned.g, outer(scanned.F), body.gain, filtered.log_likelihood)
    return result, CovFactors(scanned.F, None)


@partial(_compile.jit, static_argnames=("smoothed", "parallel"))
def run_factors(
    params: LGSSM,
    ys: jax.Array,
    inputs: jax.Array | None,
    smoothed: bool,
    parallel: bool = False,
):
    """Run the square-root filter (or filter and smoother) and return the factors too.

    On checked ``params``, ``ys [N, Dy]`` and ``inputs`` (the model is reduced here; jitted):
    ``(FilterResult, CovFactors)`` or ``(SmootherResult, CovFactors)``.
    """
    core, y_s, _ = _model.reduce(params, ys, inputs)
    if parallel:
        filtered, factors = parallel_filter_factors(core, y_s)
        return parallel_smooth_factors(core, filtered, factors) if smoothed else (filtered, factors)
    filtered, factors = filter_factors(core, y_s)
    return smooth_factors(core, filtered, factors) if smoothed else (filtered, factors)
