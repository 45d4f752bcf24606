r"""Time-parallel Kalman filter and RTS smoother (``jax.lax.associative_scan``).

The filter and the smoother are each written as an all-prefix "sum" of per-step elements
under an associative operator (Sarkka and Garcia-Fernandez, 2021), so that their span is
``O(log N)`` on parallel hardware instead of ``O(N)``. The results equal the sequential
:func:`~jaxssm.kalman_filter` / :func:`~jaxssm.rts_smoother` up to round-off.

Filtering element ``k`` (``k = 1..N``) represents ``p(x_k | x_{k-1}, y_k)`` together with
the likelihood of ``x_{k-1}`` given ``y_k``:

.. math::

    p(x_k | x_{k-1}, y_k) = N(x_k; A_k x_{k-1} + b_k, C_k), \qquad
    p(y_k | x_{k-1}) \propto N_I(x_{k-1}; \eta_k, J_k)

(``N_I`` in information form). With ``S = H Q H^T + R`` and ``K = Q H^T S^{-1}``:
``A_k = (I - K H) A``, ``b_k = K y_k``, ``C_k = (I - K H) Q``,
``eta_k = A^T H^T S^{-1} y_k``, ``J_k = A^T H^T S^{-1} H A``. The first element conditions
on the known prior instead: ``A_1 = 0``, ``(b_1, C_1)`` are the ordinary predict + update of
``(m0, P0)`` with ``y_1``, ``eta_1 = 0``, ``J_1 = 0``.

Smoothing element ``k`` (``k = 0..N``) represents ``p(x_k | x_{k+1}, y_{1:k}) =
N(x_k; E_k x_{k+1} + g_k, L_k)``: ``E_k`` is the RTS gain ``G_k``,
``g_k = m_k - G_k m_{k+1}^-`` and ``L_k = P_k - G_k P_{k+1}^- G_k^T``, i.e. one backward RTS
step (:func:`jaxssm.steps.smooth_step`) taken from a zero "next" mean and covariance. The
last element is the final filtered distribution (``E_N = 0``).

No matrix is inverted: the innovation and predicted covariances are factored by Cholesky,
and the ``(I + C_i J_j)`` term of the filtering operator is solved by Gauss-Jordan
elimination with partial pivoting (it is not symmetric). Every covariance-like output is
symmetrised.

Why this module has its own small linear algebra: on CPU, jaxlib 0.10.x runs every batched
(vmapped) ``cholesky`` / ``triangular_solve`` / ``lu`` as a LAPACK FFI kernel that splits its
batch over XLA's intra-op thread pool and blocks until the pieces finish
(``jax::ParallelBatchMap``). When XLA runs as many such kernels concurrently as the pool has
threads, every thread waits for work that no thread is free to run: the program hangs with
0% CPU. Vmapped per-step algebra inside an associative scan produces exactly such
independent batched calls, which is why parallel Kalman filters built on ``jnp.linalg``
hang on small CPU machines with that jaxlib. The helpers below (:func:`_cholesky`,
:func:`_solve_lower`, :func:`_solve_lower_t`, :func:`_solve`) are plain ``lax.fori_loop``\ s
over the matrix dimension, so the compiled parallel filter and smoother contain no LAPACK
call at all, on any jax version. They mirror the algebra of :mod:`jaxssm.steps`
(``update`` and ``smooth_step``) step for step; ``steps.predict`` and ``steps.symmetrize``
are reused as they are.

References:
    S. Sarkka and A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian smoothers",
    IEEE Transactions on Automatic Control 66(1):299-306, 2021.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxssm import steps
from jaxssm._filtering import FilterResult
from jaxssm._model import LGSSM, validate_observations, validate_params
from jaxssm._smoothing import SmootherResult

__all__ = ["FilterElement", "SmoothElement", "parallel_kalman_filter", "parallel_rts_smoother"]


class FilterElement(NamedTuple):
    r"""A filtering element (or a combination of consecutive ones).

    Represents ``N(x_k; A x_{j} + b, C)`` and the likelihood ``N_I(x_j; eta, J)`` of the
    observations it covers, as a function of the state ``x_j`` before its first step.

    Attributes:
        A: ``[D, D]``.
        b: ``[D]``.
        C: ``[D, D]``, symmetric positive semi-definite.
        eta: ``[D]``.
        J: ``[D, D]``, symmetric positive semi-definite.
    """

    A: jax.Array
    b: jax.Array
    C: jax.Array
    eta: jax.Array
    J: jax.Array


class SmoothElement(NamedTuple):
    r"""A smoothing element: ``N(x_k; E x_l + g, L)`` for a later state ``x_l``.

    Attributes:
        E: ``[D, D]``.
        g: ``[D]``.
        L: ``[D, D]``, symmetric positive semi-definite.
    """

    E: jax.Array
    g: jax.Array
    L: jax.Array


# ----------------------------------------------------------------------------------------
# LAPACK-free linear algebra for one matrix (vmapped by the callers; see the module note)
# ----------------------------------------------------------------------------------------

_LOG_2PI = 1.8378770664093453  # log(2 pi)


def _cholesky(A: jax.Array) -> jax.Array:
    """Lower Cholesky factor of an SPD ``[n, n]`` matrix, column by column (no LAPACK).

    NaN where ``A`` is not positive definite, like ``jnp.linalg.cholesky``.
    """
    n = A.shape[-1]
    idx = jnp.arange(n)

    def body(j, L):
        # Columns >= j of L are still zero, so L @ L[j] sums over k < j only.
        c = A[:, j] - L @ L[j]
        d = jnp.sqrt(c[j])
        col = jnp.where(idx > j, c / d, jnp.where(idx == j, d, jnp.zeros_like(d)))
        return L.at[:, j].set(col)

    return lax.fori_loop(0, n, body, jnp.zeros_like(A))


def _solve_lower(L: jax.Array, B: jax.Array) -> jax.Array:
    """``L^{-1} B`` for lower-triangular ``L [n, n]`` and ``B [n, r]`` (forward substitution)."""
    n = L.shape[-1]

    def body(i, X):
        # Rows >= i of X are still zero, so L[i] @ X sums over k < i only.
        return X.at[i].set((B[i] - L[i] @ X) / L[i, i])

    return lax.fori_loop(0, n, body, jnp.zeros_like(B))


def _solve_lower_t(L: jax.Array, B: jax.Array) -> jax.Array:
    """``L^{-T} B`` for lower-triangular ``L [n, n]`` and ``B [n, r]`` (back substitution)."""
    n = L.shape[-1]

    def body(t, X):
        i = n - 1 - t
        # (L^T)[i, k] = L[k, i] is zero for k < i; rows <= i of X are still zero.
        return X.at[i].set((B[i] - L[:, i] @ X) / L[i, i])

    return lax.fori_loop(0, n, body, jnp.zeros_like(B))


def _solve(M: jax.Array, B: jax.Array) -> jax.Array:
    """``M^{-1} B`` for a general ``M [n, n]`` and ``B [n, r]``: Gauss-Jordan, partial pivoting."""
    n = M.shape[-1]
    idx = jnp.arange(n)

    def body(j, aug):
        pivot = jnp.argmax(jnp.where(idx >= j, jnp.abs(aug[:, j]), -1.0))
        row_j, row_p = aug[j], aug[pivot]
        aug = aug.at[pivot].set(row_j).at[j].set(row_p)
        row = aug[j] / aug[j, j]
        factors = aug[:, j].at[j].set(0.0)
        aug = aug - factors[:, None] * row[None, :]
        return aug.at[j].set(row)

    aug = lax.fori_loop(0, n, body, jnp.concatenate([M, B], axis=1))
    return aug[:, n:]


# ----------------------------------------------------------------------------------------
# Batching over time
# ----------------------------------------------------------------------------------------

# On CPU the per-step loops below are memory-bound when vmapped over all N steps at once
# (every loop iteration sweeps the whole [N, D, ...] batch through memory); running them over
# tiles of this many steps keeps a tile in cache and was several times faster on the 2-core
# test machine. Other backends vmap over the whole batch. Results are identical either way.
_CPU_TILE = 32


def _batched(fn):
    """``jax.vmap(fn)`` over the leading axis of every argument; on CPU, tile by tile.

    The batch is padded to a whole number of tiles by repeating its last entry (valid
    inputs, so the discarded rows cannot produce NaNs, nor NaN gradients).
    """
    vfn = jax.vmap(fn)

    def run(*args):
        size = jax.tree_util.tree_leaves(args)[0].shape[0]
        tile = _CPU_TILE if jax.default_backend() == "cpu" else None
        if tile is None or size <= tile:
            return vfn(*args)
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

    return run


# ----------------------------------------------------------------------------------------
# Per-step algebra (one step each; vmapped over time)
# ----------------------------------------------------------------------------------------


def _update(
    mean: jax.Array, cov: jax.Array, H: jax.Array, R: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Return the filtered moments of a measurement update, as ``steps.update`` does."""
    HP = H @ cov
    chol = _cholesky(steps.symmetrize(HP @ H.T + R))
    Wz = _solve_lower(chol, jnp.concatenate([HP, (y - H @ mean)[:, None]], axis=1))
    W, z = Wz[:, :-1], Wz[:, -1]
    return mean + W.T @ z, steps.symmetrize(cov - W.T @ W)


def _log_likelihood_step(
    mean: jax.Array, cov: jax.Array, H: jax.Array, R: jax.Array, y: jax.Array
) -> jax.Array:
    """``log N(y; H m, H P H^T + R)`` through the Cholesky factor, as in ``steps.update``."""
    chol = _cholesky(steps.symmetrize(H @ cov @ H.T + R))
    z = _solve_lower(chol, (y - H @ mean)[:, None])[:, 0]
    dy = y.shape[-1]
    return -0.5 * (z @ z) - jnp.sum(jnp.log(jnp.diagonal(chol))) - 0.5 * dy * _LOG_2PI


def _filter_element(params: LGSSM, y: jax.Array) -> FilterElement:
    """Build the generic filtering element (``k >= 2``): ``x_k`` given ``y_k`` and ``x_{k-1}``.

    ``(b, C)`` is the measurement update of ``N(0, Q)`` with ``y`` (what
    :func:`jaxssm.steps.update` computes); ``A``, ``eta`` and ``J`` share its Cholesky factor
    ``S = H Q H^T + R = L L^T``: with ``W = L^{-1} H Q``, ``V = L^{-1} H A`` and
    ``z = L^{-1} y``, ``(I - K H) A = A - W^T V``, ``b = W^T z``, ``C = Q - W^T W``,
    ``eta = V^T z`` and ``J = V^T V``.
    """
    A, Q, H, R = params.A, params.Q, params.H, params.R
    D = A.shape[0]
    HQ = H @ Q
    chol = _cholesky(steps.symmetrize(HQ @ H.T + R))
    WVz = _solve_lower(chol, jnp.concatenate([HQ, H @ A, y[:, None]], axis=1))
    W, V, z = WVz[:, :D], WVz[:, D : 2 * D], WVz[:, -1]
    return FilterElement(
        A=A - W.T @ V,
        b=W.T @ z,
        C=steps.symmetrize(Q - W.T @ W),
        eta=V.T @ z,
        J=steps.symmetrize(V.T @ V),
    )


def _first_filter_element(params: LGSSM, y: jax.Array) -> FilterElement:
    """Element ``k = 1``: the ordinary predict + update from ``(m0, P0)``; no dependence on x_0."""
    pred = steps.predict(params.m0, params.P0, params.A, params.Q)
    mean, cov = _update(pred.mean, pred.cov, params.H, params.R, y)
    zeros = jnp.zeros_like(params.A)
    return FilterElement(zeros, mean, cov, jnp.zeros_like(params.m0), zeros)


def _filter_elements(params: LGSSM, ys: jax.Array) -> FilterElement:
    """All ``N`` filtering elements, ``[N, ...]`` leaves."""
    generic = _batched(lambda y: _filter_element(params, y))(ys)
    first = _first_filter_element(params, ys[0])
    return jax.tree_util.tree_map(lambda g, f: g.at[0].set(f), generic, first)


def _smooth_element(
    filt_mean: jax.Array, filt_cov: jax.Array, pred_mean: jax.Array, pred_cov: jax.Array,
    A: jax.Array,
) -> SmoothElement:
    """Smoothing element ``k < N``: the RTS step of ``steps.smooth_step`` from a zero next state.

    With the gain ``G = P_k A^T (P_{k+1}^-)^{-1}`` (Cholesky solve, as in
    :func:`jaxssm.steps.smooth_step`): ``E_k = G``, ``g_k = m_k + G (0 - m_{k+1}^-)`` and
    ``L_k = P_k + G (0 - P_{k+1}^-) G^T``.
    """
    chol = _cholesky(pred_cov)
    gain = _solve_lower_t(chol, _solve_lower(chol, A @ filt_cov)).T
    return SmoothElement(
        E=gain,
        g=filt_mean - gain @ pred_mean,
        L=steps.symmetrize(filt_cov - gain @ pred_cov @ gain.T),
    )


# ----------------------------------------------------------------------------------------
# Associative operators (one pair; vmapped for associative_scan)
# ----------------------------------------------------------------------------------------


def _filter_combine(earlier: FilterElement, later: FilterElement) -> FilterElement:
    r"""Combine two consecutive filtering elements (``earlier`` covers the earlier steps).

    With ``M = I + C_i J_j`` (``i`` earlier, ``j`` later), and ``(I + J_j C_i)^{-1} = M^{-T}``:

    .. math::

        A = A_j M^{-1} A_i, \quad b = A_j M^{-1} (b_i + C_i \eta_j) + b_j, \quad
        C = A_j M^{-1} C_i A_j^T + C_j,

        \eta = A_i^T M^{-T} (\eta_j - J_j b_i) + \eta_i, \quad
        J = A_i^T M^{-T} J_j A_i + J_i.

    One solve with ``M`` gives everything: ``X = M^{-1} [A_i, b_i + C_i eta_j, C_i]``, and
    ``A_i^T M^{-T} = (M^{-1} A_i)^T`` is the first block of ``X`` transposed.
    """
    Ai, bi, Ci, etai, Ji = earlier
    Aj, bj, Cj, etaj, Jj = later
    D = Ai.shape[-1]
    eye = jnp.eye(D, dtype=Ai.dtype)
    X = _solve(eye + Ci @ Jj, jnp.concatenate([Ai, (bi + Ci @ etaj)[:, None], Ci], axis=1))
    MinvAi, Minvb, MinvC = X[:, :D], X[:, D], X[:, D + 1 :]
    return FilterElement(
        A=Aj @ MinvAi,
        b=Aj @ Minvb + bj,
        C=steps.symmetrize(Aj @ MinvC @ Aj.T + Cj),
        eta=MinvAi.T @ (etaj - Jj @ bi) + etai,
        J=steps.symmetrize(MinvAi.T @ Jj @ Ai + Ji),
    )


def _smooth_combine(later: SmoothElement, earlier: SmoothElement) -> SmoothElement:
    r"""Combine two consecutive smoothing elements.

    ``associative_scan(..., reverse=True)`` runs over time backwards, so its first argument
    is the *later* element ``j``, conditioning ``x`` at the later time, and the second the
    earlier one ``i``:

    .. math::

        E = E_i E_j, \quad g = E_i g_j + g_i, \quad L = E_i L_j E_i^T + L_i.
    """
    return SmoothElement(
        E=earlier.E @ later.E,
        g=earlier.E @ later.g + earlier.g,
        L=steps.symmetrize(earlier.E @ later.L @ earlier.E.T + earlier.L),
    )


# ----------------------------------------------------------------------------------------
# Drivers (unchecked, jittable)
# ----------------------------------------------------------------------------------------


def _parallel_filter(params: LGSSM, ys: jax.Array) -> FilterResult:
    """Unchecked parallel filter: same :class:`FilterResult` as ``_filtering._filter``.

    The filtered moments come from the associative scan. The predicted moments are then
    ``predict(m_{k-1}, P_{k-1})`` and the log-likelihood is the sum over ``k`` of
    ``log N(y_k; H m_k^-, H P_k^- H^T + R)`` (both vmapped over time), which is exact for any
    ``m0`` and ``P0``.
    """
    # Exactly symmetric inputs are unchanged; the gradients with respect to P0, Q and R come
    # out symmetric, as those of the sequential filter do.
    params = params._replace(
        P0=steps.symmetrize(params.P0), Q=steps.symmetrize(params.Q), R=steps.symmetrize(params.R)
    )
    elems = _filter_elements(params, ys)
    scanned = jax.lax.associative_scan(_batched(_filter_combine), elems)
    means = jnp.concatenate([params.m0[None], scanned.b], axis=0)
    covs = jnp.concatenate([params.P0[None], scanned.C], axis=0)
    pred = jax.vmap(steps.predict, in_axes=(0, 0, None, None))(
        means[:-1], covs[:-1], params.A, params.Q
    )
    lls = _batched(lambda m, P, y: _log_likelihood_step(m, P, params.H, params.R, y))(
        pred.mean, pred.cov, ys
    )
    return FilterResult(means, covs, pred.mean, pred.cov, jnp.sum(lls))


def _parallel_smooth_from_filter(params: LGSSM, filtered: FilterResult) -> SmootherResult:
    """Unchecked parallel RTS pass over a :class:`FilterResult`."""
    body = _batched(lambda m, P, mp, Pp: _smooth_element(m, P, mp, Pp, params.A))(
        filtered.means[:-1], filtered.covs[:-1], filtered.pred_means, filtered.pred_covs
    )
    last = SmoothElement(jnp.zeros_like(params.A), filtered.means[-1], filtered.covs[-1])
    elems = jax.tree_util.tree_map(
        lambda x, y: jnp.concatenate([x, y[None]], axis=0), body, last
    )
    scanned = jax.lax.associative_scan(jax.vmap(_smooth_combine), elems, reverse=True)
    return SmootherResult(scanned.g, scanned.L, body.E, filtered.log_likelihood)


def _parallel_smooth(params: LGSSM, ys: jax.Array) -> SmootherResult:
    """Unchecked parallel filter + smoother (gains and log-likelihood included)."""
    return _parallel_smooth_from_filter(params, _parallel_filter(params, ys))


_parallel_filter_jit = jax.jit(_parallel_filter)
_parallel_smooth_jit = jax.jit(_parallel_smooth)


# ----------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------


def parallel_kalman_filter(params: LGSSM, ys: ArrayLike) -> FilterResult:
    """Kalman filter as one ``jax.lax.associative_scan`` (temporal parallelisation).

    Same results as :func:`~jaxssm.kalman_filter` up to round-off, with ``O(log N)`` span:
    faster on GPUs for long series, typically slower on a few CPU cores. Works under
    ``jit``, ``vmap`` and ``grad``, for any ``N >= 1``; the dtype follows the inputs.

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``y_1..y_N``, ``[N, Dy]``, N >= 1.

    Returns:
        :class:`~jaxssm.FilterResult` with ``means [N+1, D]``, ``covs [N+1, D, D]``,
        ``pred_means [N, D]``, ``pred_covs [N, D, D]`` and ``log_likelihood []``.

    References:
        S. Sarkka and A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian
        smoothers", IEEE TAC 66(1), 2021.
    """
    params = validate_params(params)
    ys = validate_observations(ys, params)
    return _parallel_filter_jit(params, ys)


def parallel_rts_smoother(params: LGSSM, ys: ArrayLike) -> SmootherResult:
    """Parallel Kalman filter followed by a parallel RTS pass (two associative scans).

    Same results as :func:`~jaxssm.rts_smoother` up to round-off, including the smoother
    gains ``G_k`` that the EM statistics need.

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``y_1..y_N``, ``[N, Dy]``, N >= 1.

    Returns:
        :class:`~jaxssm.SmootherResult` with ``means [N+1, D]``, ``covs [N+1, D, D]``,
        ``gains [N, D, D]`` and ``log_likelihood []``; row 0 is ``p(x_0 | y_1:N)``.

    References:
        S. Sarkka and A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian
        smoothers", IEEE TAC 66(1), 2021.
    """
    params = validate_params(params)
    ys = validate_observations(ys, params)
    return _parallel_smooth_jit(params, ys)
