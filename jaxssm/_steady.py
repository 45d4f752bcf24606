r"""Steady-state fast path for time-invariant models: exact inference at the cost of the means.

For a time-invariant model (fixed ``A, Q, H, R``, every ``y_k`` observed) the filter
covariances follow the Riccati recursion

.. math::

    P_k^- = A P_{k-1} A^\top + Q, \qquad
    P_k = P_k^- - P_k^- H^\top (H P_k^- H^\top + R)^{-1} H P_k^-,

which does not depend on the data and, for a stabilisable and detectable model, converges
geometrically to a fixed point :math:`P_\infty`. Once it has, the Kalman gain ``K``, the
innovation covariance ``S`` and the smoother gain ``G = P A^\top (P^-)^{-1}`` are constant
too, and the smoother covariance obeys the Stein recursion
:math:`P_k^s = P + G (P_{k+1}^s - P^-) G^\top` backward from :math:`P_N^s = P_N`, which
converges to :math:`P^s_\infty` at the rate :math:`\rho(G)^2`. The series therefore has three
regions:

* start, ``k = 0..T``: transient filter covariances (computed step by step) and the smoother
  covariance recursion run backward from :math:`P^s_\infty` through them;
* middle, ``k = T+1..N-T-1``: every covariance and gain is constant;
* end, ``k = N-T..N``: the backward Stein transient :math:`X_j = P^s_{N-j}`, ``j = 0..T``,
  which depends on nothing but the steady filter quantities.

``T`` is a static bound (``max_transient``). The ``O(D^3)`` work is in three scans over at
most ``T`` steps, run in chunks (32 steps for the default bound): once a whole chunk has
settled, the remaining chunks are skipped by ``lax.cond`` and filled with the settled value,
so only the transient actually present costs covariance steps. Over the full series only
the means run, as linear recursions with constant matrices (``O(N D^2)``; blocked, so that a
few hundred loop steps cover N = 44,484). The EM sums become transient sums + count x steady
terms + a few ``[D, N] @ [N, D]`` products for the means; no ``[N, D, D]`` array is formed.

Exactness. The transient is taken to have ended after the last step at which the filter
covariance (and, separately, the Stein iterate) changed by more than ``rtol``, measured
entrywise on the correlation scale, ``|P_k - P_{k-1}|_ij <= rtol sqrt(P_ii P_jj)``, and the
recursion counts as settled once a whole chunk of consecutive steps stayed below ``rtol``.
The default ``rtol`` is ``1e4 * eps(dtype)`` (2.2e-12 in float64). The change at the
round-off floor, where the recursion wanders once converged, measured 30-400 eps on random
dense models up to ``D = 21`` and 70-1,100 eps on the EM iterates of the SARCOS exercise; the
default leaves a factor of 10 above that. For a geometric recursion with rate ``rho`` that has
reached a change of ``rtol``, the distance left to the fixed point is
``rtol * rho / (1 - rho)``: at most 2e-11 for ``rho <= 0.9`` (all models measured here
contract faster), and for any model that settles within ``T`` steps from an ``O(1)`` start,
``1 - rho >= ln(1 / rtol) / T`` bounds it by ``rtol * T / ln(1 / rtol)``, 8e-11 for
``T = 992``: inside the 1e-10 that the fast path must agree with the full recursion to. When
either transient has not ended within ``T`` steps, or the series is too short to hold the
three regions, every function here falls back to the full recursion
(:func:`jaxssm._filtering._filter`, :func:`jaxssm._smoothing._smooth`).

The choice is made on device by :func:`jax.lax.cond`, so it works under ``jit``. Under
``vmap`` a ``cond`` whose predicate is batched becomes a ``select`` and both branches run: that
happens when the *parameters* are batched; a batch of sequences with shared parameters keeps
the ``cond`` (the convergence test depends on the parameters only). For the statistics and
the log-likelihood the fast result is computed before the ``cond`` and only the small result
enters it (passing the ``[T, D, D]`` transient arrays into a ``cond`` copies them); when the
fallback runs, that fast work is wasted, a few percent of the full recursion's. Gradients flow
through the branch taken; through the fast path they treat the covariances after step ``T``
as equal to those at ``T``, which holds to round-off for the values and, when the transient
ended well before ``T``, for their derivatives too (their transient is ``k rho^k``). A model
whose covariance overflows within ``T`` steps gives non-finite gradients, as the full path
does.

All functions here are unchecked (no validation) and meant to be called inside ``jit``.

References:
    B. D. O. Anderson and J. B. Moore, *Optimal Filtering* (1979), ch. 4 (time-invariant
    filters, convergence of the Riccati equation).
    S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorems 4.2, 8.2 and 12.5 (filter,
    RTS smoother, EM for linear-Gaussian models).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

from jaxssm import steps
from jaxssm._estep import _sequence_stats
from jaxssm._filtering import FilterResult, _filter
from jaxssm._model import LGSSM
from jaxssm._smoothing import SmootherResult, _smooth
from jaxssm._stats import SufficientStats

__all__ = [
    "DEFAULT_MAX_TRANSIENT",
    "SteadyState",
    "SteadyInfo",
    "default_rtol",
    "effective_transient",
    "_riccati_transient",
    "_steady_state",
    "_steady_filter",
    "_steady_log_likelihood",
    "_steady_smooth",
    "_steady_stats",
    "_steady_stats_with_info",
]

#: Default bound on the transient (rounded down to a multiple of the chunk, 32). Thanks to the
#: chunked scans below, only the transient actually observed (rounded up to whole chunks) costs
#: covariance steps; beyond that the bound costs memory (a few ``[T, D, D]`` arrays, 3.5 MB
#: each at D = 21) and decides when to give up and run the full recursion, which is 20-30 times
#: slower at N = 44,484: a generous bound is the cheaper mistake.
#: Filter transients measured: 10-40 steps on random stable models, 1-120 on the first 100
#: EM iterates of the SARCOS exercise.
DEFAULT_MAX_TRANSIENT = 1000

#: Steps per chunk of the transient scans: once a whole chunk has changed by less than ``rtol``
#: at every step, the remaining chunks are skipped (``lax.cond``) and filled with the last value.
_CHUNK = 32

_LOG_2PI = math.log(2.0 * math.pi)


def default_rtol(dtype) -> float:
    """Return the default convergence tolerance, ``1e4 * eps`` of ``dtype`` (2.2e-12 in f64)."""
    return 1e4 * float(jnp.finfo(dtype).eps)


def effective_transient(num_steps: int, max_transient: int) -> int:
    """Return the static transient bound ``T`` used for a series of ``N = num_steps`` steps.

    ``T0 = min(max_transient, N // 3)``, rounded down to a multiple of the chunk length
    ``min(32, max(1, T0 // 4))`` (so ``max_transient = 1000`` gives ``T = 992``). The three
    regions (start, middle, end) need ``N >= 2 T + 1``; capping ``T`` at ``N // 3`` also
    keeps the fast path's covariance work below the full path's. 0 means the series is too
    short and the full recursion runs.
    """
    if not isinstance(max_transient, int) or isinstance(max_transient, bool) or max_transient < 1:
        raise ValueError(f"max_transient must be a positive int, got {max_transient!r}")
    T0 = min(int(max_transient), int(num_steps) // 3)
    if T0 < 1:
        return 0
    chunk = _chunk(T0)
    return chunk * (T0 // chunk)


def _chunk(T: int) -> int:
    """Chunk length of the transient scans for a bound ``T``: ``min(32, max(1, T // 4))``."""
    return min(_CHUNK, max(1, T // 4))


class SteadyState(NamedTuple):
    """The data-independent covariance side of the fast path for one model and ``T``.

    Attributes:
        pred_covs: transient predicted covariances ``P_k^-``, ``k = 1..T``, ``[T, D, D]``.
        covs: transient filtered covariances ``P_k``, ``k = 0..T``, ``[T+1, D, D]``.
        chols: lower Cholesky factors ``L_k`` of ``S_k = H P_k^- H^T + R``, ``k = 1..T``,
            ``[T, Dy, Dy]``.
        obs_factors: ``W_k = L_k^{-1} H P_k^-``, ``k = 1..T``, ``[T, Dy, D]`` (the update is
            ``m_k = m_k^- + W_k^T L_k^{-1} (y_k - H m_k^-)``, as in :func:`jaxssm.steps.update`).
        smoother_gains: ``G_k = P_k A^T (P_{k+1}^-)^{-1}``, ``k = 0..T-1``, ``[T, D, D]``.
        pred_cov: steady ``P^- = A P_T A^T + Q``, ``[D, D]``.
        cov: steady ``P = P_T``, ``[D, D]``.
        chol: steady Cholesky factor of ``S``, ``[Dy, Dy]``.
        gain: steady Kalman gain ``K = P^- H^T S^{-1}``, ``[D, Dy]``.
        smoother_gain: steady ``G = P A^T (P^-)^{-1}``, ``[D, D]``.
        filter_transient: the last step whose change exceeded ``rtol`` (0 if none), int32.
        filter_converged: whether a whole chunk of steps changed by less than ``rtol``, bool.
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
    filter_transient: jax.Array
    filter_converged: jax.Array


class SteadyInfo(NamedTuple):
    """Diagnostics of one fast-path call.

    Attributes:
        num_transient: the static bound ``T`` used (:func:`effective_transient`), a Python int.
        filter_transient: the last step at which the filter covariance still changed by more
            than ``rtol`` (``<= T``), int32.
        smoother_transient: the same for the smoother covariance, counted backward from
            ``k = N`` (``<= T``), int32; ``T`` when the filter did not converge.
        converged: whether the fast path ran (True) or the full recursion (False), bool.
    """

    num_transient: int
    filter_transient: jax.Array
    smoother_transient: jax.Array
    converged: jax.Array


# ---------------------------------------------------------------------------------------------
# Covariance side (data-independent)
# ---------------------------------------------------------------------------------------------


def _small_change(new: jax.Array, old: jax.Array, rtol: float) -> jax.Array:
    """Whether ``|new - old|_ij <= rtol sqrt(new_ii new_jj)`` for all ``i, j`` (False for NaN).

    The scale is that of the correlations, so the test does not depend on the units of the
    state's components.
    """
    new, old = jax.lax.stop_gradient(new), jax.lax.stop_gradient(old)
    d = jnp.abs(jnp.diagonal(new))
    diff = new - old
    return jnp.all(diff * diff <= (rtol * rtol) * (d[:, None] * d[None, :]))


def _last_unsettled(small: jax.Array) -> jax.Array:
    """Return the largest 1-based step ``k`` with ``small[k - 1]`` False (0 if none), int32."""
    idx = jnp.arange(1, small.shape[0] + 1, dtype=jnp.int32)
    return jnp.max(jnp.where(small, 0, idx))


def _settling_scan(step, init, length: int, chunk: int):
    """Iterate ``state, out, small = step(state)`` for ``length`` steps, in chunks.

    Once every step of a chunk reported ``small``, the later chunks are not computed: their
    outputs repeat the last output computed (``lax.cond``, so this stays differentiable and
    jittable; under a batched ``vmap`` both branches run).

    Returns:
        ``(outs, small, settled)``: the outputs stacked over the steps (``[length, ...]``),
        the flags ``[length]`` (True for skipped steps) and whether a chunk settled.
    """
    num_chunks = length // chunk
    out_shape = jax.eval_shape(lambda s: step(s)[1], init)
    placeholder = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), out_shape)

    def run(carry):
        state, _, _ = carry

        def inner(s, _):
            s, out, small = step(s)
            return s, (out, small)

        state, (outs, small) = jax.lax.scan(inner, state, None, length=chunk)
        last = jax.tree.map(lambda o: o[-1], outs)
        return (state, last, jnp.all(small)), (outs, small)

    def skip(carry):
        _, last, _ = carry
        outs = jax.tree.map(lambda o: jnp.broadcast_to(o, (chunk,) + o.shape), last)
        return carry, (outs, jnp.ones((chunk,), bool))

    def outer(carry, _):
        return jax.lax.cond(carry[2], skip, run, carry)

    init_carry = (init, placeholder, jnp.zeros((), bool))
    (_, _, settled), (outs, small) = jax.lax.scan(outer, init_carry, None, length=num_chunks)
    outs = jax.tree.map(lambda o: o.reshape((length,) + o.shape[2:]), outs)
    return outs, small.reshape(length), settled


def _measurement(params: LGSSM, pred_cov: jax.Array):
    """Covariance half of :func:`jaxssm.steps.update`, with the same algebra.

    Returns ``(L, W, P)``: the Cholesky factor of ``S = H P^- H^T + R``, ``W = L^{-1} H P^-``
    and the filtered covariance ``P = P^- - W^T W``.
    """
    HP = params.H @ pred_cov
    L = jnp.linalg.cholesky(steps.symmetrize(HP @ params.H.T + params.R))
    W = solve_triangular(L, HP, lower=True)
    return L, W, steps.symmetrize(pred_cov - W.T @ W)


def _smoother_gain(params: LGSSM, cov: jax.Array, next_pred_cov: jax.Array) -> jax.Array:
    """``G = P A^T (P^-_{next})^{-1}`` as in :func:`jaxssm.steps.smooth_step`: ``[D, D]``."""
    chol = jnp.linalg.cholesky(next_pred_cov)
    return cho_solve((chol, True), params.A @ cov).T


def _predict_cov(params: LGSSM, cov: jax.Array) -> jax.Array:
    """Return ``A P A^T + Q`` as :func:`jaxssm.steps.predict` computes it."""
    return steps.symmetrize(params.A @ cov @ params.A.T + params.Q)


def _riccati_transient(params: LGSSM, max_transient: int, rtol: float | None = None) -> SteadyState:
    """Run the filter's covariance recursion for ``T = max_transient`` steps (fewer if settled).

    The algebra is that of :func:`jaxssm.steps.predict` and :func:`jaxssm.steps.update`, so the
    transient covariances are the ones the full filter computes. The recursion runs in chunks
    of ``min(32, max(1, T // 4))`` steps (``T`` must be a multiple of it, as
    :func:`effective_transient` returns); once a whole chunk changed by less than ``rtol`` at
    every step, the rest is filled with the last values. The steady quantities are those of
    step ``T + 1`` (predicted from ``P_T``).

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked).
        max_transient: the static number of steps ``T >= 1``.
        rtol: convergence tolerance; ``None`` for :func:`default_rtol` of the dtype.

    Returns:
        :class:`SteadyState`; ``filter_transient`` and ``filter_converged`` say whether and when
        the covariance settled.
    """
    T = int(max_transient)
    chunk = _chunk(T)
    if T < 1 or T % chunk:
        raise ValueError(
            f"max_transient must be a positive multiple of min(32, max(1, T // 4)) (as "
            f"effective_transient returns), got {T}"
        )
    if rtol is None:
        rtol = default_rtol(params.A.dtype)

    # Everything per step inside the scan (no vmapped LAPACK calls afterwards): independent
    # batched LAPACK calls in one program have hung jax 0.10.2 on CPU (ENVIRONMENT.md).
    def step(cov):
        pred_cov = _predict_cov(params, cov)
        L, W, new_cov = _measurement(params, pred_cov)
        G = _smoother_gain(params, cov, pred_cov)
        return new_cov, (pred_cov, new_cov, L, W, G), _small_change(new_cov, cov, rtol)

    outs, small, settled = _settling_scan(step, params.P0, T, chunk)
    pred_covs, covs, chols, obs_factors, smoother_gains = outs
    covs = jnp.concatenate([params.P0[None], covs], axis=0)

    cov = covs[-1]
    pred_cov = _predict_cov(params, cov)
    L, W, _ = _measurement(params, pred_cov)
    gain = solve_triangular(L, W, lower=True, trans="T").T  # K = W^T L^{-1} = P^- H^T S^{-1}
    return SteadyState(
        pred_covs=pred_covs,
        covs=covs,
        chols=chols,
        obs_factors=obs_factors,
        smoother_gains=smoother_gains,
        pred_cov=pred_cov,
        cov=cov,
        chol=L,
        gain=gain,
        smoother_gain=_smoother_gain(params, cov, pred_cov),
        filter_transient=_last_unsettled(small),
        filter_converged=settled,
    )


def _stein_transient(ss: SteadyState, T: int, rtol: float) -> tuple[jax.Array, ...]:
    """Smoother covariances backward from ``P_N^s = P``: ``X_j = P^s_{N-j}``, ``j = 0..T``.

    Returns ``(X [T+1, D, D], transient length, settled)``.
    """
    G = ss.smoother_gain

    def step(X):
        new = steps.symmetrize(ss.cov + G @ (X - ss.pred_cov) @ G.T)
        return new, new, _small_change(new, X, rtol)

    Xs, small, settled = _settling_scan(step, ss.cov, T, _chunk(T))
    return jnp.concatenate([ss.cov[None], Xs], axis=0), _last_unsettled(small), settled


def _start_smoother_covs(ss: SteadyState, X_inf: jax.Array) -> jax.Array:
    """Smoother covariances ``P_k^s``, ``k = 0..T``, backward from ``P_T^s = X_inf``.

    Chunks that lie wholly after the filter transient (every input steady) are not computed:
    there the recursion sits at its fixed point ``X_inf``.
    """
    T = ss.smoother_gains.shape[0]
    chunk = _chunk(T)
    num_chunks = T // chunk
    D = X_inf.shape[0]
    xs = (ss.covs[:-1], ss.pred_covs, ss.smoother_gains)
    xs = jax.tree.map(lambda a: a.reshape((num_chunks, chunk) + a.shape[1:]), xs)
    steady_from = ss.filter_transient  # inputs are steady for k >= filter_transient
    starts = jnp.arange(num_chunks, dtype=jnp.int32) * chunk

    def body(next_cov, inputs):
        cov, next_pred_cov, G = inputs
        new = steps.symmetrize(cov + G @ (next_cov - next_pred_cov) @ G.T)
        return new, new

    def run(next_cov, inputs):
        return jax.lax.scan(body, next_cov, inputs, reverse=True)

    def skip(next_cov, inputs):
        return next_cov, jnp.broadcast_to(next_cov, (chunk, D, D))

    def outer(next_cov, chunk_in):
        start, inputs = chunk_in
        return jax.lax.cond(start >= steady_from, skip, run, next_cov, inputs)

    _, Ys = jax.lax.scan(outer, X_inf, (starts, xs), reverse=True)
    return jnp.concatenate([Ys.reshape(T, D, D), X_inf[None]], axis=0)


def _steady_state(params: LGSSM, num_steps: int, max_transient: int, rtol: float | None = None):
    """Every covariance-side quantity of the fast path, with diagnostics.

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked).
        num_steps: the static series length ``N``.
        max_transient: static bound; the transient used is ``effective_transient(N, .)``.
        rtol: convergence tolerance (``None``: :func:`default_rtol`).

    Returns:
        ``(ss, end_covs, start_covs, info)``: the :class:`SteadyState`, the end-region smoother
        covariances ``X_j = P^s_{N-j}`` ``[T+1, D, D]``, the start-region ones ``P^s_k``,
        ``k = 0..T`` ``[T+1, D, D]``, and :class:`SteadyInfo`. ``None`` for all but ``info``
        (and ``info`` with ``converged = False``) when ``N`` is too short.
    """
    T = effective_transient(num_steps, max_transient)
    if T < 1:
        false = jnp.zeros((), bool)
        zero = jnp.zeros((), jnp.int32)
        return None, None, None, SteadyInfo(0, zero, zero, false)
    if rtol is None:
        rtol = default_rtol(params.A.dtype)
    ss = _riccati_transient(params, T, rtol)
    end_covs, s_len, s_ok = _stein_transient(ss, T, rtol)
    start_covs = _start_smoother_covs(ss, end_covs[-1])
    converged = ss.filter_converged & s_ok
    s_len = jnp.where(ss.filter_converged, s_len, jnp.int32(T))
    return ss, end_covs, start_covs, SteadyInfo(T, ss.filter_transient, s_len, converged)


# ---------------------------------------------------------------------------------------------
# Mean side (over the full series)
# ---------------------------------------------------------------------------------------------


def _linear_recursion(
    F: jax.Array, b: jax.Array, x0: jax.Array, reverse: bool = False, block: int | None = None
) -> jax.Array:
    """``x_i = F x_{i-1} + b_i`` over the rows of ``b`` (``reverse``: from the last row back).

    Blocked: with blocks of ``L`` rows (default about ``sqrt(n)``), (1) every block runs its
    recursion from zero, all blocks at once (``L`` steps of a ``[n/L, D] @ [D, D]`` product);
    (2) the states entering the blocks follow by a scan over the ``n / L`` blocks with
    ``F^L``; (3) ``F^{j+1}`` times the entering state is added to row ``j`` of each block.
    That is ``3 n D^2`` flops in ``2 L + n / L`` loop steps instead of ``n`` loop steps, each
    too small to use the machine.

    Args:
        F: ``[D, D]``.
        b: ``[n, D]``.
        x0: the state before the first (``reverse``: after the last) row, ``[D]``.
        reverse: run from the last row to the first.
        block: block length ``L`` (static); ``None`` for ``ceil(sqrt(n))``; 1 for a plain scan.

    Returns:
        ``x_i`` for every row of ``b``, ``[n, D]``.
    """
    n, D = b.shape
    if n == 0:
        return b
    if reverse:
        return _linear_recursion(F, b[::-1], x0, reverse=False, block=block)[::-1]
    L = max(1, math.isqrt(n - 1) + 1) if block is None else int(block)
    if L == 1 or L >= n:

        def step(x, bi):
            x = F @ x + bi
            return x, x

        return jax.lax.scan(step, x0, b)[1]
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


def _filter_means(params: LGSSM, ys: jax.Array, ss: SteadyState):
    """Compute the filtered means ``[N+1, D]`` and ``log p(y_1:N)``.

    Steps ``k <= T`` run in chunks: while the covariance is still changing, with the algebra
    of :func:`jaxssm.steps.update` and the per-step factors; in chunks that lie wholly after
    the filter transient, and for all ``k > T``, with the steady gain,
    ``m_k = A m_{k-1} + K v_k``, ``v_k = y_k - H A m_{k-1}``. The innovation terms of those
    steps sum to ``tr(S^{-1} sum_k v_k v_k^T)``: one ``[Dy, N] @ [N, Dy]`` product and two
    triangular solves.
    """
    T = ss.obs_factors.shape[0]
    N, Dy = ys.shape
    A, H, K = params.A, params.H, ss.gain
    HA = H @ A
    chunk = _chunk(T)
    num_chunks = T // chunk
    xs = (ys[:T], ss.chols, ss.obs_factors)
    xs = jax.tree.map(lambda a: a.reshape((num_chunks, chunk) + a.shape[1:]), xs)
    starts = jnp.arange(num_chunks, dtype=jnp.int32) * chunk
    zero = jnp.zeros((), ys.dtype)

    def transient_step(m, inputs):
        y, L, W = inputs
        mp = A @ m
        z = solve_triangular(L, y - H @ mp, lower=True)
        m = mp + W.T @ z
        return m, (m, z @ z, jnp.zeros_like(y))

    def steady_step(m, y):
        v = y - HA @ m
        m = A @ m + K @ v
        return m, (m, zero, v)

    def outer(m, chunk_in):
        start, inputs = chunk_in
        return jax.lax.cond(
            start >= ss.filter_transient,
            lambda m, x: jax.lax.scan(steady_step, m, x[0]),
            lambda m, x: jax.lax.scan(transient_step, m, x),
            m,
            inputs,
        )

    m_T, (start, quad_start, v_start) = jax.lax.scan(outer, params.m0, (starts, xs))
    start = start.reshape(T, -1)
    rest = _linear_recursion(A - K @ HA, ys[T:] @ K.T, m_T)
    means = jnp.concatenate([params.m0[None], start, rest], axis=0)

    # Innovations of the steady steps: zeros stand in for the transient steps among k <= T.
    v = jnp.concatenate([v_start.reshape(T, Dy), ys[T:] - means[T:-1] @ HA.T], axis=0)
    M = solve_triangular(ss.chol, v.T @ v, lower=True)  # L^{-1} V^T V
    quad_steady = jnp.trace(solve_triangular(ss.chol, M.T, lower=True))  # tr(L^-1 V^T V L^-T)
    logdet_start = jnp.sum(jnp.log(jnp.diagonal(ss.chols, axis1=1, axis2=2)))
    logdet_rest = (N - T) * jnp.sum(jnp.log(jnp.diagonal(ss.chol)))
    quad = jnp.sum(quad_start) + quad_steady
    ll = -0.5 * quad - logdet_start - logdet_rest - 0.5 * (N * Dy) * _LOG_2PI
    return means, ll


def _smoother_means(params: LGSSM, means: jax.Array, ss: SteadyState) -> jax.Array:
    """Compute the smoothed means ``[N+1, D]`` from the filtered ones ``[N+1, D]``."""
    T = ss.smoother_gains.shape[0]
    A, G = params.A, ss.smoother_gain
    # k = N-1 .. T: m^s_k = G m^s_{k+1} + (I - G A) m_k.
    u = means[T:-1] @ (jnp.eye(A.shape[0], dtype=A.dtype) - G @ A).T
    rest = _linear_recursion(G, u, means[-1], reverse=True)

    def body(next_mean, inputs):
        m, Gk = inputs
        mean = m + Gk @ (next_mean - A @ m)
        return mean, mean

    _, start = jax.lax.scan(body, rest[0], (means[:T], ss.smoother_gains), reverse=True)
    return jnp.concatenate([start, rest, means[-1:]], axis=0)


# ---------------------------------------------------------------------------------------------
# Fast paths with the fallback
# ---------------------------------------------------------------------------------------------


def _fast_filter(params: LGSSM, ys: jax.Array, ss: SteadyState) -> FilterResult:
    N = ys.shape[0]
    T = ss.obs_factors.shape[0]
    means, ll = _filter_means(params, ys, ss)
    pred_means = means[:-1] @ params.A.T
    covs = jnp.concatenate([ss.covs, jnp.broadcast_to(ss.cov, (N - T,) + ss.cov.shape)], 0)
    pred_covs = jnp.concatenate(
        [ss.pred_covs, jnp.broadcast_to(ss.pred_cov, (N - T,) + ss.cov.shape)], 0
    )
    return FilterResult(means, covs, pred_means, pred_covs, ll)


def _steady_filter(
    params: LGSSM,
    ys: jax.Array,
    *,
    max_transient: int = DEFAULT_MAX_TRANSIENT,
    rtol: float | None = None,
) -> FilterResult:
    """Kalman filter through the steady-state fast path, with the full filter as fallback.

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked).
        ys: observations ``[N, Dy]`` (unchecked).
        max_transient: static bound on the filter transient (see :func:`effective_transient`).
        rtol: convergence tolerance (``None``: ``1e4 * eps`` of the dtype).

    Returns:
        :class:`~jaxssm.FilterResult` as :func:`jaxssm._filtering._filter`: ``means [N+1, D]``,
        ``covs [N+1, D, D]`` (after the transient, the converged covariance broadcast),
        ``pred_means [N, D]``, ``pred_covs [N, D, D]``, ``log_likelihood []``.
    """
    T = effective_transient(ys.shape[0], max_transient)
    if T < 1:
        return _filter(params, ys)
    if rtol is None:
        rtol = default_rtol(params.A.dtype)
    ss = _riccati_transient(params, T, rtol)
    return jax.lax.cond(
        ss.filter_converged,
        lambda p, y, s: _fast_filter(p, y, s),
        lambda p, y, s: _filter(p, y),
        params,
        ys,
        ss,
    )


def _steady_log_likelihood(
    params: LGSSM,
    ys: jax.Array,
    *,
    max_transient: int = DEFAULT_MAX_TRANSIENT,
    rtol: float | None = None,
) -> jax.Array:
    """Compute ``log p(y_1:N)`` through the fast path, with the full filter as fallback.

    For gradient-based fitting: only the filter's means run over the series, no
    ``[N, D, D]`` array is formed, and the fast value is computed before the ``lax.cond`` so
    that only scalars enter it.

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked).
        ys: observations ``[N, Dy]`` (unchecked).
        max_transient: static bound on the filter transient (see :func:`effective_transient`).
        rtol: convergence tolerance (``None``: ``1e4 * eps`` of the dtype).

    Returns:
        A scalar with the dtype of the inputs.
    """
    T = effective_transient(ys.shape[0], max_transient)
    if T < 1:
        return _filter(params, ys).log_likelihood
    if rtol is None:
        rtol = default_rtol(params.A.dtype)
    ss = _riccati_transient(params, T, rtol)
    fast = _filter_means(params, ys, ss)[1]
    return jax.lax.cond(
        ss.filter_converged,
        lambda f, p, y: f,
        lambda f, p, y: _filter(p, y).log_likelihood,
        fast,
        params,
        ys,
    )


def _fast_smooth(params, ys, ss, end_covs, start_covs) -> SmootherResult:
    N = ys.shape[0]
    T = ss.obs_factors.shape[0]
    D = ss.cov.shape[0]
    means, ll = _filter_means(params, ys, ss)
    sm = _smoother_means(params, means, ss)
    covs = jnp.concatenate(
        [
            start_covs,
            jnp.broadcast_to(end_covs[-1], (N - 2 * T - 1, D, D)),
            end_covs[::-1],
        ],
        axis=0,
    )
    gains = jnp.concatenate(
        [ss.smoother_gains, jnp.broadcast_to(ss.smoother_gain, (N - T, D, D))], axis=0
    )
    return SmootherResult(sm, covs, gains, ll)


def _steady_smooth(
    params: LGSSM,
    ys: jax.Array,
    *,
    max_transient: int = DEFAULT_MAX_TRANSIENT,
    rtol: float | None = None,
) -> SmootherResult:
    """RTS smoother through the steady-state fast path, with the full smoother as fallback.

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked).
        ys: observations ``[N, Dy]`` (unchecked).
        max_transient: static bound on each transient (see :func:`effective_transient`).
        rtol: convergence tolerance (``None``: ``1e4 * eps`` of the dtype).

    Returns:
        :class:`~jaxssm.SmootherResult` as :func:`jaxssm._smoothing._smooth`:
        ``means [N+1, D]``, ``covs [N+1, D, D]``, ``gains [N, D, D]``, ``log_likelihood []``.
    """
    ss, end_covs, start_covs, info = _steady_state(params, ys.shape[0], max_transient, rtol)
    if ss is None:
        return _smooth(params, _filter(params, ys))
    return jax.lax.cond(
        info.converged,
        lambda p, y, s, e, b: _fast_smooth(p, y, s, e, b),
        lambda p, y, s, e, b: _smooth(p, _filter(p, y)),
        params,
        ys,
        ss,
        end_covs,
        start_covs,
    )


def _fast_stats(params, ys, ss, end_covs, start_covs):
    N = ys.shape[0]
    T = ss.obs_factors.shape[0]
    means, ll = _filter_means(params, ys, ss)
    m = _smoother_means(params, means, ss)
    # Covariances: rows 0..T start_covs, rows T+1..N-T-1 X_T, rows N-T..N = X_T .. X_0.
    X_inf = end_covs[-1]
    steady_and_end = (N - 2 * T - 1) * X_inf + jnp.sum(end_covs, axis=0)
    total = jnp.sum(start_covs, axis=0) + steady_and_end
    cov_sigma = total - start_covs[0]  # k = 1..N
    cov_phi = total - end_covs[0]  # k = 0..N-1 (row N is X_0)
    # sum_{k=1..N} P^s_k G_{k-1}^T: transient gains for k <= T, then the constant gain.
    cross = (
        jnp.einsum("kij,klj->il", start_covs[1:], ss.smoother_gains)
        + steady_and_end @ ss.smoother_gain.T
    )
    mm = m[1:].T @ m[1:]
    mm_prev = mm + jnp.outer(m[0], m[0]) - jnp.outer(m[-1], m[-1])
    stats = SufficientStats(
        Sigma=steps.symmetrize(cov_sigma + mm) / N,
        Phi=steps.symmetrize(cov_phi + mm_prev) / N,
        B=ys.T @ m[1:] / N,
        C=(cross + m[1:].T @ m[:-1]) / N,
        D=steps.symmetrize(ys.T @ ys) / N,
        m0_smoothed=m[0],
        P0_smoothed=start_covs[0],
        num_steps=jnp.asarray(N, jnp.int32),
    )
    return stats, ll


def _full_stats(params, ys):
    smoothed = _smooth(params, _filter(params, ys))
    return _sequence_stats(smoothed, ys), smoothed.log_likelihood


def _steady_stats_with_info(
    params: LGSSM,
    ys: jax.Array,
    *,
    max_transient: int = DEFAULT_MAX_TRANSIENT,
    rtol: float | None = None,
) -> tuple[SufficientStats, jax.Array, SteadyInfo]:
    """Compute :func:`_steady_stats` and its :class:`SteadyInfo` (transients, branch taken).

    Returns:
        ``(SufficientStats, log_likelihood [], SteadyInfo)``.
    """
    ss, end_covs, start_covs, info = _steady_state(params, ys.shape[0], max_transient, rtol)
    if ss is None:
        stats, ll = _full_stats(params, ys)
        return stats, ll, info
    # The fast statistics are computed before the cond and only the small result enters it:
    # passing the [T, D, D] transient arrays into a cond costs a copy of each (measured: about
    # as much as the rest of the fast path at N = 3,000). When the fallback is taken, the
    # wasted fast work is a few percent of the full recursion's.
    fast = _fast_stats(params, ys, ss, end_covs, start_covs)
    stats, ll = jax.lax.cond(
        info.converged,
        lambda f, p, y: f,
        lambda f, p, y: _full_stats(p, y),
        fast,
        params,
        ys,
    )
    return stats, ll, info


def _steady_stats(
    params: LGSSM,
    ys: jax.Array,
    *,
    max_transient: int = DEFAULT_MAX_TRANSIENT,
    rtol: float | None = None,
) -> tuple[SufficientStats, jax.Array]:
    """EM statistics and ``log p(y_1:N)`` of one sequence through the fast path.

    The covariance sums are transient sums plus count x steady terms; the mean sums are
    ``[D, N] @ [N, D]`` products. No ``[N, D, D]`` array is formed on the fast path; the
    fallback is the full smoother followed by :func:`jaxssm._estep._sequence_stats`.

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked).
        ys: observations ``[N, Dy]`` (unchecked; one sequence).
        max_transient: static bound on each transient (see :func:`effective_transient`).
        rtol: convergence tolerance (``None``: ``1e4 * eps`` of the dtype).

    Returns:
        ``(SufficientStats, log_likelihood [])``.
    """
    stats, ll, _ = _steady_stats_with_info(params, ys, max_transient=max_transient, rtol=rtol)
    return stats, ll
