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
``(m0, P0)`` with ``y_1``, ``eta_1 = 0``, ``J_1 = 0``. Missing entries (NaN) are masked
per step with :func:`jaxssm.steps.mask_observation` (zero rows of ``H``, unit noise), so an
element of an all-NaN step is the pure prediction ``(A, 0, Q, 0, 0)``.

Smoothing element ``k`` (``k = 0..N``) represents ``p(x_k | x_{k+1}, y_{1:k}) =
N(x_k; E_k x_{k+1} + g_k, L_k)``: ``E_k`` is the RTS gain ``G_k``,
``g_k = m_k - G_k m_{k+1}^-`` and ``L_k = P_k - G_k P_{k+1}^- G_k^T``, i.e. one backward RTS
step (:func:`jaxssm.steps.smooth_step`) taken from a zero "next" mean and covariance. The
last element is the final filtered distribution (``E_N = 0``).

Time-varying fields (:func:`jaxssm._base.model.split`) are vmapped over with the data; a state
offset ``c_k`` (the reduced model's ``b``) enters the filtering element of its step as the
update of ``N(A x + c_k, Q)``: ``b_k = c_k + K (y_k - H c_k)``, ``eta_k`` from
``y_k - H c_k``.

The per-step algebra is that of :mod:`jaxssm.steps`, with the linear algebra of
:data:`jaxssm._base.linalg.BATCHED` (safe to vmap over time on CPU, the backend's kernels
elsewhere). No matrix is inverted: the innovation and predicted covariances are factored by
Cholesky, and the ``(I + C_i J_j)`` term of the filtering operator is
solved with partial pivoting (it is not symmetric). Every covariance-like output is
symmetrised. All functions here are unchecked and meant to be called inside ``jit``.

References:
    S. Sarkka and A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian smoothers",
    IEEE Transactions on Automatic Control 66(1):299-306, 2021.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxssm import steps
from jaxssm._base import model as _model
from jaxssm._base.linalg import BATCHED as LA
from jaxssm._base.linalg import symmetrize
from jaxssm._base.types import LGSSM, FilterResult, SmootherResult

__all__ = ["FilterElement", "SmoothElement", "filter", "smooth"]


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
# Elements (one step each; vmapped over time)
# ----------------------------------------------------------------------------------------


def _filter_element(params: LGSSM, y: jax.Array) -> FilterElement:
    """Build the generic filtering element (``k >= 2``): ``x_k`` given ``y_k`` and ``x_{k-1}``.

    ``(b, C)`` is the measurement update of ``N(0, Q)`` with ``y``
    (:func:`jaxssm.steps.update_cov` and its mean half); ``A``, ``eta`` and ``J`` share its
    Cholesky factor ``S = H Q H^T + R = L L^T``: with ``W = L^{-1} H Q``, ``V = L^{-1} H A``
    and ``z = L^{-1} y``, ``(I - K H) A = A - W^T V``, ``b = W^T z``, ``C = Q - W^T W``,
    ``eta = V^T z`` and ``J = V^T V``. With a state offset ``c`` (``params.b``, one step's)
    the prior is ``N(A x + c, Q)``: ``z = L^{-1} (y - H c)`` and ``b = c + W^T z``.
    """
    A, Q, c = params.A, params.Q, params.b
    if c is not None:  # the step's state offset: the update of N(A x + c, Q) with y
        y = y - params.H @ c  # NaN entries stay NaN
    obs = steps.mask_observation(y, params.H, params.R)
    H, y = obs.H, obs.y
    half = steps.update_cov(Q, H, obs.R, LA)
    Vz = LA.solve_lower(half.chol, jnp.concatenate([H @ A, y[:, None]], axis=1))
    V, z = Vz[:, :-1], Vz[:, -1]
    W = half.obs_factor
    return FilterElement(
        A=A - W.T @ V,
        b=steps.update_mean(jnp.zeros_like(params.m0) if c is None else c, W, z),
        C=half.cov,
        eta=V.T @ z,
        J=symmetrize(V.T @ V),
    )


def _first_filter_element(params: LGSSM, y: jax.Array) -> FilterElement:
    """Element ``k = 1``: the ordinary predict + update from ``(m0, P0)``; no dependence on x_0."""
    pred = steps.predict(params.m0, params.P0, params.A, params.Q, params.b)
    upd = steps.update(pred.mean, pred.cov, params.H, params.R, y, LA)
    zeros = jnp.zeros_like(params.A)
    return FilterElement(zeros, upd.mean, upd.cov, jnp.zeros_like(params.m0), zeros)


def _filter_elements(params: LGSSM, ys: jax.Array) -> FilterElement:
    """All ``N`` filtering elements, ``[N, ...]`` leaves (time-varying fields per step)."""
    fixed, varying = _model.split(params)
    generic = _batched(lambda y, v: _filter_element(_model.merge(fixed, v), y))(ys, varying)
    first = _first_filter_element(_model.step(params, 0), ys[0])
    return jax.tree_util.tree_map(lambda g, f: g.at[0].set(f), generic, first)


def _smooth_element(
    mean: jax.Array,
    cov: jax.Array,
    next_pred_mean: jax.Array,
    next_pred_cov: jax.Array,
    A: jax.Array,
) -> SmoothElement:
    """Smoothing element ``k < N``: the RTS step of :mod:`jaxssm.steps` from a zero next state.

    ``E_k = G_k``, ``g_k = m_k + G_k (0 - m_{k+1}^-)`` and ``L_k = P_k + G_k (0 - P_{k+1}^-)
    G_k^T``.
    """
    gain = steps.smoother_gain(cov, next_pred_cov, A, LA)
    return SmoothElement(
        E=gain,
        g=steps.smooth_mean(mean, next_pred_mean, jnp.zeros_like(mean), gain),
        L=steps.smooth_cov(cov, next_pred_cov, jnp.zeros_like(cov), gain),
    )


def _log_likelihood_step(mean, cov, H, R, y) -> jax.Array:
    """``log N(y; H m^-, H P^- H^T + R)`` of ``y``'s observed entries (as in ``steps.update``)."""
    obs = steps.mask_observation(y, H, R)
    chol = steps.innovation_chol(cov, obs.H, obs.R, LA)
    z = steps.whitened_innovation(mean, obs.y, obs.H, chol, LA)
    return steps.log_normal_whitened(z, chol, obs.num_observed)


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
    X = LA.solve(eye + Ci @ Jj, jnp.concatenate([Ai, (bi + Ci @ etaj)[:, None], Ci], axis=1))
    MinvAi, Minvb, MinvC = X[:, :D], X[:, D], X[:, D + 1 :]
    return FilterElement(
        A=Aj @ MinvAi,
        b=Aj @ Minvb + bj,
        C=symmetrize(Aj @ MinvC @ Aj.T + Cj),
        eta=MinvAi.T @ (etaj - Jj @ bi) + etai,
        J=symmetrize(MinvAi.T @ Jj @ Ai + Ji),
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
        L=symmetrize(earlier.E @ later.L @ earlier.E.T + earlier.L),
    )


# ----------------------------------------------------------------------------------------
# The schedule (unchecked, jittable)
# ----------------------------------------------------------------------------------------


def filter(params: LGSSM, ys: jax.Array) -> FilterResult:
    """Parallel Kalman filter: the same :class:`~jaxssm.FilterResult` as the sequential one.

    The filtered moments come from the associative scan. The predicted moments are then
    ``predict(m_{k-1}, P_{k-1})`` and the log-likelihood is the sum over ``k`` of
    ``log N(y_k; H m_k^-, H P_k^- H^T + R)`` (both vmapped over time), which is exact for any
    ``m0`` and ``P0``.
    """
    # Exactly symmetric inputs are unchanged; the gradients with respect to P0, Q and R come
    # out symmetric, as those of the sequential filter do.
    params = params._replace(
        P0=symmetrize(params.P0), Q=symmetrize(params.Q), R=symmetrize(params.R)
    )
    elems = _filter_elements(params, ys)
    scanned = jax.lax.associative_scan(_batched(_filter_combine), elems)
    means = jnp.concatenate([params.m0[None], scanned.b], axis=0)
    covs = jnp.concatenate([params.P0[None], scanned.C], axis=0)
    fixed, varying = _model.split(params)

    def predict(m, P, v):
        p = _model.merge(fixed, v)
        return steps.predict(m, P, p.A, p.Q, p.b)

    def log_lik(m, P, y, v):
        p = _model.merge(fixed, v)
        return _log_likelihood_step(m, P, p.H, p.R, y)

    pred = jax.vmap(predict)(means[:-1], covs[:-1], varying)
    lls = _batched(log_lik)(pred.mean, pred.cov, ys, varying)
    return FilterResult(means, covs, pred.mean, pred.cov, jnp.sum(lls))


def smooth(params: LGSSM, filtered: FilterResult) -> SmootherResult:
    """Parallel RTS pass over a :class:`~jaxssm.FilterResult` (gains included)."""
    A_steps = params.A if _model.is_time_varying(params, "A") else None  # A[k]: step k + 1

    def element(m, P, mp, Pp, A_k):
        return _smooth_element(m, P, mp, Pp, params.A if A_k is None else A_k)

    body = _batched(element)(
        filtered.means[:-1], filtered.covs[:-1], filtered.pred_means, filtered.pred_covs, A_steps
    )
    zero = jnp.zeros_like(filtered.covs[-1])
    last = SmoothElement(zero, filtered.means[-1], filtered.covs[-1])
    elems = jax.tree_util.tree_map(lambda x, y: jnp.concatenate([x, y[None]], axis=0), body, last)
    scanned = jax.lax.associative_scan(jax.vmap(_smooth_combine), elems, reverse=True)
    return SmootherResult(scanned.g, scanned.L, body.E, filtered.log_likelihood)
