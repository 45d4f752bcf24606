r"""The steady-state schedule over a series with missing entries.

A missing entry changes the covariances: the step that misses it conditions on fewer
observations, and the filter covariance leaves the fixed point :math:`P` of
:mod:`jaxssm._schedules.settle`, to return to it geometrically once the data are complete
again. The gap-aware recursion therefore runs, at every step, one of two steps:

* the *steady* step (constant gains ``K`` and ``G``, covariances :math:`P^-`, :math:`P` and
  :math:`X = P^s_\infty`; ``O(D^2)`` work: :func:`~jaxssm._schedules.steady.filter_mean_step`
  and :func:`~jaxssm._schedules.steady.smoother_mean_step`), where the step is fully
  observed and the covariance entering it has settled at the fixed point;
* the full masked step of :mod:`jaxssm.steps` everywhere else: at the start, at every step
  with a missing entry, and after it until the covariance is back within ``rtol`` of the
  fixed point on the correlation scale.

The fixed point replaces the covariance from the step after it is reached: the exactness
argument of the fully observed fast path, applied after each gap. The backward pass does the
same with the smoother covariance and :math:`X`. When the transient outlasted the bound
(``converged`` False, the fixed point is not known) no step is steady and this is the full
masked recursion.

The steps run in *tiles* of 16 steps: a tile that starts settled and holds no
missing entry runs the steady steps as a plain scan (no per-step ``lax.cond``, covariance
outputs broadcast), the others step by step with a ``lax.cond`` each. The passes keep their
rows in this tiled layout (:class:`GappyForward`), padded in front, so that the backward
passes read the forward rows without copies.

References:
    R. H. Shumway and D. S. Stoffer (1982), "An approach to time series smoothing and
    forecasting using the EM algorithm", J. Time Series Analysis 3(4).
    S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorems 4.2 and 8.2.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._base.linalg import LAPACK
from jaxssm._base.types import LGSSM, FilterResult, SmootherResult, SufficientStats
from jaxssm._blocks import stats as _stats
from jaxssm._schedules.settle import FilterSide, SmootherSide, default_rtol, small_change
from jaxssm._schedules.steady import filter_mean_step, smoother_mean_step

__all__ = [
    "SteadyPoint",
    "steady_point",
    "GappyForward",
    "gappy_forward",
    "gappy_filter",
    "gappy_smooth",
    "gappy_stats",
]

#: Steps per tile of the gap-aware recursion.
_TILE = 16


class SteadyPoint(NamedTuple):
    """The converged quantities the gap-aware recursion needs (small: no transients).

    Attributes:
        pred_cov: ``P^-``, ``[D, D]``.
        cov: ``P``, ``[D, D]``.
        chol: the Cholesky factor of ``S``, ``[Dy, Dy]``.
        gain: ``K``, ``[D, Dy]``.
        smoother_gain: ``G``, ``[D, D]``.
        smoothed_cov: ``X = P^s`` in the middle of a long series, ``[D, D]``.
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
    """:func:`gappy_forward`'s pass in the tiled layout its backward passes read (no copies).

    The ``[M, C, ...]`` arrays (``M = ceil(N / C)`` tiles of ``C`` steps) hold, for step
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


def _tiles(x: jax.Array, fill, size: int) -> jax.Array:
    """``x [n, ...]`` as ``[ceil(n / size), size, ...]``, padded in front with ``fill`` rows.

    The layout of :class:`GappyForward`: the forward pass runs the padding first (as no-op
    steps), the backward passes run it last.
    """
    n = x.shape[0]
    num_tiles = -(-n // size)
    padding = jnp.broadcast_to(jnp.asarray(fill, x.dtype), (num_tiles * size - n,) + x.shape[1:])
    return jnp.concatenate([padding, x], axis=0).reshape((num_tiles, size) + x.shape[1:])


def _tile_scan(fast, steady_tile, mixed_step, carry, tiles, reverse: bool = False):
    """Scan over the tiles: ``steady_tile`` where ``fast(carry, tile)``, else ``mixed_step``.

    ``steady_tile(carry, tile) -> (carry, outs)`` covers a whole tile; ``mixed_step`` is the
    per-step body of a ``lax.scan`` over the tile's steps.
    """

    def mixed_tile(carry, tile):
        return jax.lax.scan(mixed_step, carry, tile, reverse=reverse)

    def outer(carry, tile):
        return jax.lax.cond(fast(carry, tile), steady_tile, mixed_tile, carry, tile)

    return jax.lax.scan(outer, carry, tiles, reverse=reverse)


def gappy_forward(
    params: LGSSM,
    ys: jax.Array,
    fs: SteadyPoint,
    converged: jax.Array,
    rtol: float | None = None,
    keep_pred_covs: bool = True,
) -> GappyForward:
    """Filter ``ys`` with NaN entries, with covariance work only where the covariance moves.

    ``steady_k`` says that ``P_k`` is the fixed point: step ``k`` took the steady step
    (``steady_0`` is False: ``P_0`` is the prior).

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked; time-invariant, offsets in ``b``).
        ys: ``[N, Dy]``, NaN where missing.
        fs: the :class:`SteadyPoint`.
        converged: whether the fixed point is known (False: the full masked recursion).
        rtol: the settling tolerance (``None``: :func:`~jaxssm._schedules.settle.default_rtol`).
        keep_pred_covs: store the predicted covariances (static; False halves the pass's
            ``[N, D, D]`` memory, and :func:`gappy_stats` recomputes them).

    Returns:
        :class:`GappyForward`; :func:`gappy_filter` returns it as a :class:`FilterResult`.
    """
    A, Q, H, R = params.A, params.Q, params.H, params.R
    HA = H @ A
    rtol = default_rtol(A.dtype) if rtol is None else rtol
    logdet = jnp.sum(jnp.log(jnp.diagonal(fs.chol)))
    D = A.shape[0]
    eye = jnp.eye(D, dtype=A.dtype)

    def steady_step(m, P, y, ck):
        mean, pred_mean, v = filter_mean_step(m, y, A, H, HA, fs.gain, ck)
        z = LAPACK.solve_lower(fs.chol, v[:, None])[:, 0]
        ll = -0.5 * (z @ z) - logdet - 0.5 * y.shape[-1] * steps.LOG_2PI
        return mean, fs.cov, pred_mean, fs.pred_cov, ll, jnp.ones((), bool)

    def full_step(m, P, y, ck):
        pred_mean, pred_cov = steps.predict_mean(m, A, ck), steps.predict_cov(P, A, Q)
        obs = steps.mask_observation(y, H, R)
        half = steps.update_cov(pred_cov, obs.H, obs.R)
        z = steps.whitened_innovation(pred_mean, obs.y, obs.H, half.chol)
        mean = steps.update_mean(pred_mean, half.obs_factor, z)
        ll = steps.log_normal_whitened(z, half.chol, obs.num_observed)
        settled = converged & jnp.all(obs.observed) & small_change(half.cov, fs.cov, rtol)
        return mean, half.cov, pred_mean, pred_cov, ll, settled

    def mixed_step(carry, inputs):
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

    def steady_tile(carry, tile):
        m, P, _, ll, was_fast = carry

        def inner(m, inputs):
            mean, _, pred_mean, _, ll_k, _ = steady_step(m, None, *inputs)
            return mean, (m, pred_mean, ll_k)

        m_last, (means_in, pred_means, lls) = jax.lax.scan(inner, m, tile[:2])
        C = tile[0].shape[0]
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

    def fast(carry, tile):
        return carry[2] & ~jnp.any(jnp.isnan(tile[0]))

    N = ys.shape[0]
    C = min(_TILE, N)
    num_tiles = -(-N // C)
    front = num_tiles * C - N
    # Padding in front: no-op steps (NaN rows, so never steady; the carry is kept).
    tiles = (
        _tiles(ys, jnp.nan, C),
        None if params.b is None else _tiles(params.b, 0.0, C),
        (jnp.arange(num_tiles * C) < front).reshape(num_tiles, C),
    )
    no = jnp.zeros((), bool)
    init = (params.m0, params.P0, no, jnp.zeros((), ys.dtype), no)
    (mean, cov, _, ll, last_steady), outs = _tile_scan(fast, steady_tile, mixed_step, init, tiles)
    return GappyForward(*outs, mean, cov, last_steady, ll, front)


def gappy_filter(
    params: LGSSM,
    ys: jax.Array,
    fs: SteadyPoint,
    converged: jax.Array,
    rtol: float | None = None,
) -> tuple[FilterResult, jax.Array]:
    """:func:`gappy_forward` as a :class:`FilterResult`.

    Args:
        params: as for :func:`gappy_forward`.
        ys: as for :func:`gappy_forward`.
        fs: as for :func:`gappy_forward`.
        converged: as for :func:`gappy_forward`.
        rtol: as for :func:`gappy_forward`.

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


def _smooth_step(A, fs, converged, rtol, carry, mean, cov, next_pred_mean, next_pred_cov, steady_k):
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
    sm = smoother_mean_step(mean, next_mean, A, gain, pred_mean=next_pred_mean)

    def full(nc):
        new = steps.smooth_cov(cov, next_pred_cov, nc, gain)
        return new, converged & steady_k & small_change(new, X_inf, rtol)

    sc, settled = jax.lax.cond(
        steady_k & next_settled, lambda nc: (X_inf, jnp.ones((), bool)), full, next_cov
    )
    return sm, sc, gain, settled


def _steady_smooth_tile(params: LGSSM, G: jax.Array, next_mean, means, pred_means):
    """Run a steady tile's smoothed means backward: ``(m^s of its first step, [C, D])``.

    With state offsets the forward pass's predicted means are read; without, ``A m`` is
    recomputed (cheaper than reading it).
    """
    pred_means = None if params.b is None else pred_means

    def inner(nm, inputs):
        m, mp = inputs
        sm = smoother_mean_step(m, nm, params.A, G, pred_mean=mp)
        return sm, sm

    return jax.lax.scan(inner, next_mean, (means, pred_means), reverse=True)


def _settled_backward(carry, tile):
    """Whether a backward tile runs steady: ``P^s`` settled after it, every ``P_k`` steady."""
    return carry[2] & jnp.all(tile[4])


def gappy_smooth(
    params: LGSSM,
    fwd: GappyForward,
    fs: SteadyPoint,
    converged: jax.Array,
    rtol: float | None = None,
) -> SmootherResult:
    """RTS pass over :func:`gappy_forward`'s rows, covariance work only where it moves.

    Step ``k`` uses the steady gain ``G`` when ``P_k`` is the fixed point (``steady[k]``),
    and the steady smoothed covariance ``X = P^s_inf`` when in addition ``P^s_{k+1}`` has
    settled there; otherwise the full step of :mod:`jaxssm.steps`, and ``P^s_k`` settles
    when it is within ``rtol`` of ``X``.

    Args:
        params: as for :func:`gappy_forward`.
        fwd: the forward pass, with its predicted covariances (``keep_pred_covs``); its
            rows are read in their tiled layout, not copied.
        fs: as for :func:`gappy_forward`.
        converged: as for :func:`gappy_forward`.
        rtol: as for :func:`gappy_forward`.

    Returns:
        :class:`~jaxssm.SmootherResult`.
    """
    A, G_inf, X_inf = params.A, fs.smoother_gain, fs.smoothed_cov
    rtol = default_rtol(A.dtype) if rtol is None else rtol
    D = A.shape[0]

    def mixed_step(carry, inputs):
        sm, sc, gain, settled = _smooth_step(A, fs, converged, rtol, carry, *inputs)
        return (sm, sc, settled), (sm, sc, gain)

    def steady_tile(carry, tile):
        sm_last, sms = _steady_smooth_tile(params, G_inf, carry[0], tile[0], tile[2])
        C = tile[0].shape[0]
        outs = (sms, jnp.broadcast_to(X_inf, (C, D, D)), jnp.broadcast_to(G_inf, (C, D, D)))
        return (sm_last, X_inf, jnp.ones((), bool)), outs

    last = (fwd.mean, fwd.cov, jnp.zeros((), bool))
    # The forward rows in their tiles; the front padding (never steady) runs last.
    tiles = (fwd.means, fwd.covs, fwd.pred_means, fwd.pred_covs, fwd.steady)
    _, outs = _tile_scan(_settled_backward, steady_tile, mixed_step, last, tiles, reverse=True)
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
    accumulated in its carry (a steady tile adds ``count x`` its steady terms) and the
    imputed observation moments (:func:`jaxssm._blocks.stats.imputation_step`) of each row
    formed where its smoothed moments are at hand.

    Args:
        params: as for :func:`gappy_forward`.
        ys: as for :func:`gappy_forward`.
        fwd: the forward pass (its predicted covariances may be dropped: they are
            recomputed).
        fs: as for :func:`gappy_forward`.
        converged: as for :func:`gappy_forward`.
        rtol: as for :func:`gappy_forward`.
        e: the observation offsets ``[N, Dy]`` taken off ``ys``, or ``None``.
        v: the augmented inputs ``[N, Du + 1]``, or ``None``.

    Returns:
        :class:`~jaxssm.SufficientStats`.
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

    def mixed_step(carry, inputs):
        next_mean, next_cov, next_settled, sums, p0 = carry
        y_next, w_next, k = inputs[5:]
        if inputs[3] is None:  # P^-_{k+1} from P_k (the steady value where P_k is P)
            cov, steady_k = inputs[1], inputs[4]
            pred_cov = jnp.where(steady_k, fs.pred_cov, steps.predict_cov(cov, A, params.Q))
            pred_cov = jnp.where(k < 0, eye, pred_cov)  # padding: finite, discarded
            inputs = inputs[:3] + (pred_cov,) + inputs[4:]
        sm, sc, gain, settled = _smooth_step(A, fs, converged, rtol, carry[:3], *inputs[:5])
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

    def steady_tile(carry, tile):
        next_mean, _, _, (s_now, s_prev, s_cross, c_yx, c_yy), p0 = carry
        sm_last, sms = _steady_smooth_tile(params, G_inf, next_mean, tile[0], tile[2])
        count = jnp.sum(tile[6])
        sums = (s_now + count * X_inf, s_prev + count * X_inf, s_cross + count * XG_inf, c_yx, c_yy)
        return (sm_last, X_inf, jnp.ones((), bool), sums, p0), (sms, tile[5])

    C = min(_TILE, N)
    num_tiles = -(-N // C)
    # The forward pass's rows as they are (same tiles, same front padding): no copies.
    tiles = (
        fwd.means,
        fwd.covs,
        fwd.pred_means,
        fwd.pred_covs,
        fwd.steady,
        _tiles(ys, 0.0, C),
        _tiles(w, 0.0, C),
        _tiles(jnp.arange(N, dtype=jnp.int32), -1, C),
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
    (_, _, _, sums, P0s), (sms, y_hat) = _tile_scan(
        _settled_backward, steady_tile, mixed_step, last, tiles, reverse=True
    )
    sms = sms.reshape(num_tiles * C, D)[fwd.front :]
    y_hat = y_hat.reshape(num_tiles * C, Dy)[fwd.front :]
    means = jnp.concatenate([sms, fwd.mean[None]], axis=0)
    return _stats.from_sums_missing(*sums[:3], means, y_hat, *sums[3:], w, n, P0s, e, v)
