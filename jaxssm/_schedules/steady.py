r"""The steady-state schedule: exact inference at the cost of the means.

For a time-invariant model with every ``y_k`` observed, the filter covariances, the gains
and the smoother covariances do not depend on the data and converge to a fixed point
(:mod:`jaxssm._schedules.settle`). With ``T`` the static bound on each transient
(:func:`~jaxssm._schedules.settle.transient_bound`) the series has three regions:

* start, ``k = 0..T``: transient filter covariances, and the smoother covariance recursion
  run backward from :math:`P^s_\infty` through them;
* middle, ``k = T+1..N-T-1``: every covariance and gain is constant;
* end, ``k = N-T..N``: the backward Stein transient :math:`X_j = P^s_{N-j}`, ``j = 0..T``.

Only the means run over the full series. After the filter transient they take the steady
step (:func:`filter_mean_step`, :func:`smoother_mean_step`); over ``k > T`` that step is the
linear recursion

.. math::

    m_k = (A - K H A)\, m_{k-1} + K y_k + (I - K H)\, c_k, \qquad
    m^s_k = G\, m^s_{k+1} + (I - G A)\, m_k - G\, c_{k+1},

computed by :func:`jaxssm._schedules.recursions.linear_recursion` (``O(N D^2)``). The
log-likelihood's innovation terms over the steady steps are one quadratic form of the
innovations whitened by the constant factor of ``S``; the EM sums are the transients' sums
plus a count times the steady terms plus a few ``[D, N] @ [N, D]`` products, so no
``[N, D, D]`` array is formed.

The functions here assume convergence: they take the covariance side as an argument, and
:mod:`jaxssm._schedules.dispatch` decides, on device, whether to use them or the full
recursion. All are unchecked and meant to be called inside ``jit``.

References:
    B. D. O. Anderson and J. B. Moore, *Optimal Filtering* (1979), ch. 4.
    S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorems 4.2, 8.2 and 12.5.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._base.linalg import LAPACK
from jaxssm._base.types import LGSSM, FilterResult, SmootherResult, SufficientStats
from jaxssm._blocks import stats as _stats
from jaxssm._schedules.recursions import linear_recursion
from jaxssm._schedules.settle import (
    FilterSide,
    SmootherSide,
    round_length,
    settling_scan,
    transient_rows,
)

__all__ = [
    "filter_mean_step",
    "smoother_mean_step",
    "filter",
    "log_likelihood",
    "smooth",
    "stats",
]


def filter_mean_step(
    mean: jax.Array,
    y: jax.Array,
    A: jax.Array,
    H: jax.Array,
    HA: jax.Array,
    gain: jax.Array,
    b: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""One filter step of the means with a constant Kalman gain ``K``.

    The mean halves of :func:`jaxssm.steps.predict` and :func:`jaxssm.steps.update`, the
    update's :math:`W^\top z` written as :math:`K v`:

    .. math::

        m^-_k = A m_{k-1} + b_k, \qquad v_k = y_k - H m^-_k, \qquad m_k = m^-_k + K v_k.

    Without an offset ``v_k = y_k - (H A) m_{k-1}``, which does not wait for ``m^-_k``.

    Args:
        mean: ``m_{k-1}``, ``[D]``.
        y: ``y_k``, ``[Dy]`` (fully observed).
        A: ``[D, D]``.
        H: ``[Dy, D]``.
        HA: ``H A``, ``[Dy, D]`` (formed once, outside the loop).
        gain: ``K``, ``[D, Dy]``.
        b: the step's state offset ``[D]``, or ``None``.

    Returns:
        ``(m_k, m^-_k, v_k)``.
    """
    pred_mean = steps.predict_mean(mean, A, b)
    v = y - HA @ mean if b is None else y - H @ pred_mean
    # update_mean's W^T z with W = K^T and z = v: the gain already holds S^{-1}.
    return steps.update_mean(pred_mean, gain.T, v), pred_mean, v


def smoother_mean_step(
    mean: jax.Array,
    next_mean: jax.Array,
    A: jax.Array,
    gain: jax.Array,
    b: jax.Array | None = None,
    pred_mean: jax.Array | None = None,
) -> jax.Array:
    """One backward step of the smoothed means: ``m^s_k = m_k + G_k (m^s_{k+1} - m^-_{k+1})``.

    Args:
        mean: ``m_k``, ``[D]``.
        next_mean: ``m^s_{k+1}``, ``[D]``.
        A: ``[D, D]``.
        gain: ``G_k`` (the steady ``G`` or a per-step one), ``[D, D]``.
        b: the offset of step ``k + 1`` ``[D]``, or ``None``.
        pred_mean: ``m^-_{k+1}`` where it is at hand; ``None`` to form ``A m_k + b``.

    Returns:
        ``m^s_k``, ``[D]``.
    """
    if pred_mean is None:
        pred_mean = steps.predict_mean(mean, A, b)
    return steps.smooth_mean(mean, pred_mean, next_mean, gain)


def _filter_means(params: LGSSM, ys: jax.Array, fs: FilterSide, form: str | None = None):
    """Compute the filtered means ``[N+1, D]`` and ``log p(y_1:N)``.

    Steps ``k <= T`` run in the rounds of the settling scan: in the rounds of the filter
    transient with the mean half of :func:`jaxssm.steps.update` and the per-step factors, in
    the others with :func:`filter_mean_step`; steps ``k > T`` are the linear recursion of
    the module docstring. The innovation terms of the steady steps sum to
    ``tr(S^{-1} sum_k v_k v_k^T)``, formed from the innovations whitened by one triangular
    inverse.
    """
    T = fs.obs_factors.shape[0]
    N, Dy = ys.shape
    A, H, K, c = params.A, params.H, fs.gain, params.b
    HA = H @ A
    zero = jnp.zeros((), ys.dtype)

    def transient_step(_, m, x):
        y, L, W, ck = x
        mp = steps.predict_mean(m, A, ck)
        z = steps.whitened_innovation(mp, y, H, L)
        m = steps.update_mean(mp, W, z)
        return m, (m, z @ z, jnp.zeros_like(y)), None

    def steady_step(_, m, x):
        y, _, _, ck = x
        m, _, v = filter_mean_step(m, y, A, H, HA, K, ck)
        return m, (m, zero, v)

    xs = (ys[:T], fs.chols, fs.obs_factors, None if c is None else c[:T])
    run = settling_scan(
        transient_step,
        None,
        params.m0,
        xs,
        length=T,
        per_round=round_length(T),
        before=fs.transient,
        steady=steady_step,
    )
    m_T, (start, quad_start, v_start) = run.state, run.outs
    # k > T: m_k = (A - K H A) m_{k-1} + K y_k + (I - K H) c_k.
    F = A - K @ HA
    drive = ys[T:] @ K.T
    if c is not None:
        drive = drive + c[T:] - (c[T:] @ H.T) @ K.T
    rest = linear_recursion(F, drive, m_T, block=form)
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
        jnp.sum(jnp.square(v_start @ L_inv_T))
        + jnp.sum(jnp.square(v_first @ L_inv_T))
        + jnp.sum(jnp.square(v_tail @ L_inv_T))
    )
    # log det S_k: the per-step factors in the transient rounds (their other rows were not
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
    """Compute the smoothed means ``[N+1, D]`` from the filtered ones ``[N+1, D]``.

    Steps ``k >= T`` are the backward linear recursion of the module docstring; steps
    ``k < T`` run backward in the rounds of the settling scan, with the per-step gains in the
    rounds of the filter transient and the steady gain in the others.
    """
    T = fs.smoother_gains.shape[0]
    A, G, c = params.A, fs.smoother_gain, params.b
    # k = N-1 .. T: m^s_k = G m^s_{k+1} + (I - G A) m_k - G c_{k+1}.
    u = means[T:-1] @ (jnp.eye(A.shape[0], dtype=A.dtype) - G @ A).T
    if c is not None:
        u = u - c[T:] @ G.T
    rest = linear_recursion(G, u, means[-1], reverse=True, block=form)

    def transient_step(_, next_mean, x):
        m, Gk, ck = x
        mean = smoother_mean_step(m, next_mean, A, Gk, ck)
        return mean, mean, None

    def steady_step(_, next_mean, x):
        m, _, ck = x
        mean = smoother_mean_step(m, next_mean, A, G, ck)
        return mean, mean

    xs = (means[:T], fs.smoother_gains, None if c is None else c[:T])
    run = settling_scan(
        transient_step,
        None,
        rest[0],
        xs,
        length=T,
        per_round=round_length(T),
        before=fs.transient,
        reverse=True,
        steady=steady_step,
    )
    return jnp.concatenate([run.outs, rest, means[-1:]], axis=0)


def log_likelihood(
    params: LGSSM, ys: jax.Array, fs: FilterSide, form: str | None = None
) -> jax.Array:
    """Return ``log p(y_1:N)``: only the filter's means run over the series.

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked; time-invariant, offsets in ``b``).
        ys: ``[N, Dy]``, fully observed.
        fs: :func:`~jaxssm._schedules.settle.filter_side` of ``params``.
        form: the mean recursions' form over the series (``block`` of
            :func:`~jaxssm._schedules.recursions.linear_recursion`).

    Returns:
        A scalar.
    """
    return _filter_means(params, ys, fs, form)[1]


def _per_step(rows: jax.Array, buf: jax.Array, steady: jax.Array) -> jax.Array:
    """``buf``'s rows where ``rows`` is True, ``steady`` (broadcast) elsewhere."""
    return jnp.where(rows.reshape(rows.shape + (1,) * steady.ndim), buf, steady)


def filter(params: LGSSM, ys: jax.Array, fs: FilterSide, form: str | None = None) -> FilterResult:
    """Return the :class:`~jaxssm.FilterResult`; after the transient the converged covariances.

    Args:
        params: as for :func:`log_likelihood`.
        ys: as for :func:`log_likelihood`.
        fs: as for :func:`log_likelihood`.
        form: as for :func:`log_likelihood`.

    Returns:
        :class:`~jaxssm.FilterResult`.
    """
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
    """Return the :class:`~jaxssm.SmootherResult` of the fast path.

    Args:
        params: as for :func:`log_likelihood`.
        ys: as for :func:`log_likelihood`.
        side: :func:`~jaxssm._schedules.settle.smoother_side` of ``params``.
        form: as for :func:`log_likelihood`.

    Returns:
        :class:`~jaxssm.SmootherResult`.
    """
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
    its ``[T, D, D]`` buffers are not read.

    Args:
        params: as for :func:`log_likelihood`.
        ys: as for :func:`log_likelihood`.
        side: :func:`~jaxssm._schedules.settle.smoother_side` of ``params``.
        e: the observation offsets ``[N, Dy]`` taken off ``ys``, to add back, or ``None``
            (:func:`jaxssm._blocks.stats.from_sums`).
        v: the augmented inputs ``[N, Du + 1]``, or ``None``.
        form: as for :func:`log_likelihood`.

    Returns:
        ``(SufficientStats, log_likelihood)``.
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
