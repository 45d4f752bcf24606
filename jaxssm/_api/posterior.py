r"""Exact draws from the smoothing distribution ``p(x_0..x_N | y_1:N)``.

Both schedules draw from the backward factorisation of the posterior,

.. math::

    p(x_{0:N} | y_{1:N}) = N(x_N; m_N, P_N) \prod_{k=0}^{N-1} N(x_k; E_k x_{k+1} + g_k, L_k),

with the RTS gain ``E_k = G_k = P_k A^T (P_{k+1}^-)^{-1}``, ``g_k = m_k - G_k m_{k+1}^-`` and
``L_k = P_k - G_k P_{k+1}^- G_k^T`` (the smoothing elements of :mod:`jaxssm._blocks.elements`),
built from the filtered moments and ``A`` only through :mod:`jaxssm.steps`. With standard
normal ``u_0..u_N`` and ``F_k F_k^T = L_k``, ``F_N F_N^T = P_N``
(:func:`jaxssm._base.linalg.psd_cholesky`, singular covariances allowed):

* **sequential** (forward filtering, backward sampling; Carter and Kohn 1994,
  Fruhwirth-Schnatter 1994): a reverse ``lax.scan`` of ``x_N = m_N + F_N u_N``,
  ``x_k = m_k + G_k (x_{k+1} - m_{k+1}^-) + F_k u_k``;
* **parallel**: the same affine recursion ``x_k = E_k x_{k+1} + h_k``,
  ``h_k = g_k + F_k u_k``, as a reverse ``lax.associative_scan`` of the pairs ``(E_k, h_k)``
  under ``(E_i, h_i) o (E_j, h_j) = (E_i E_j, E_i h_j + h_i)`` (Sarkka and Garcia-Fernandez
  2021, their smoothing elements with the noise added).

The two draw the same ``u`` from a key, so for one key they return the same path up to
round-off: the same distribution, draw by draw. Missing observations enter only through the
filter, so whatever the filter honours (NaN entries), the sampler honours too. A draw is a
differentiable function of the parameters for a fixed key (reparameterised).

References:
    C. K. Carter and R. Kohn, "On Gibbs sampling for state space models", Biometrika 81(3),
    1994; S. Fruhwirth-Schnatter, "Data augmentation and dynamic linear models", J. Time
    Series Analysis 15(2), 1994; S. Sarkka and A. F. Garcia-Fernandez, "Temporal
    parallelization of Bayesian smoothers", IEEE TAC 66(1), 2021.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxssm import steps
from jaxssm._api.entry import prepare
from jaxssm._args.checks import check_key
from jaxssm._args.schedule import Schedule
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.batching import batched
from jaxssm._base.linalg import psd_cholesky
from jaxssm._base.types import LGSSM, FilterResult
from jaxssm._blocks.draws import gaussian_draw
from jaxssm._blocks.elements import smooth_element
from jaxssm._schedules import diffuse as _diffuse
from jaxssm._schedules import dispatch as _dispatch

__all__ = ["posterior_sample"]


class _Affine(NamedTuple):
    """``x_k = E x_l + h`` for a later state ``x_l``: ``E [D, D]``, ``h [D]``."""

    E: jax.Array
    h: jax.Array


def _noise(key: jax.Array, filtered: FilterResult) -> jax.Array:
    """Draw the standard normals ``u_0..u_N``, ``[N+1, D]``, the same for both schedules."""
    return jax.random.normal(key, filtered.means.shape, filtered.means.dtype)


def _sequential(params: LGSSM, filtered: FilterResult, u: jax.Array) -> jax.Array:
    """Backward sampling as a reverse ``lax.scan`` over ``k = N-1..0``."""
    A = params.A
    A_steps = A if _model.is_time_varying(params, "A") else None  # A[k]: step k + 1
    x_last = gaussian_draw(filtered.means[-1], filtered.covs[-1], u[-1])

    def body(x_next, inputs):
        mean, cov, next_pred_mean, next_pred_cov, noise, A_k = inputs
        gain = steps.smoother_gain(cov, next_pred_cov, A if A_k is None else A_k)
        cond_mean = steps.smooth_mean(mean, next_pred_mean, x_next, gain)
        cond_cov = steps.smooth_cov(cov, next_pred_cov, jnp.zeros_like(cov), gain)
        x = gaussian_draw(cond_mean, cond_cov, noise)
        return x, x

    inputs = (filtered.means[:-1], filtered.covs[:-1], filtered.pred_means, filtered.pred_covs)
    _, xs = jax.lax.scan(body, x_last, inputs + (u[:-1], A_steps), reverse=True)
    return jnp.concatenate([xs, x_last[None]], axis=0)


def _combine(later: _Affine, earlier: _Affine) -> _Affine:
    """Compose ``x_i = E_i x_j + h_i`` with ``x_j = E_j x_l + h_j`` (``reverse=True`` order)."""
    return _Affine(earlier.E @ later.E, earlier.E @ later.h + earlier.h)


def _parallel_draw(params: LGSSM, filtered: FilterResult, u: jax.Array) -> jax.Array:
    """Backward sampling as a reverse ``lax.associative_scan`` of noisy smoothing elements."""
    A_steps = params.A if _model.is_time_varying(params, "A") else None

    def element(mean, cov, next_pred_mean, next_pred_cov, noise, A_k):
        A = params.A if A_k is None else A_k
        el = smooth_element(mean, cov, next_pred_mean, next_pred_cov, A)
        return _Affine(el.E, el.g + psd_cholesky(el.L) @ noise)

    body = batched(element)(
        filtered.means[:-1],
        filtered.covs[:-1],
        filtered.pred_means,
        filtered.pred_covs,
        u[:-1],
        A_steps,
    )
    x_last = gaussian_draw(filtered.means[-1], filtered.covs[-1], u[-1])
    elems = _Affine(
        jnp.concatenate([body.E, jnp.zeros_like(filtered.covs[-1])[None]], axis=0),
        jnp.concatenate([body.h, x_last[None]], axis=0),
    )
    return jax.lax.associative_scan(jax.vmap(_combine), elems, reverse=True).h


@partial(_compile.jit, static_argnames="schedule")
def _posterior_sample(
    key: jax.Array, params: LGSSM, ys: jax.Array, schedule: Schedule, inputs=None
) -> jax.Array:
    filtered = _dispatch.filter(params, ys, schedule, inputs=inputs)
    u = _noise(key, filtered)
    if schedule.parallel:
        return _parallel_draw(params, filtered, u)
    return _sequential(params, filtered, u)


def posterior_sample(
    key: jax.Array,
    params: LGSSM,
    ys: ArrayLike,
    *,
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
) -> jax.Array:
    r"""Draw ``x_0..x_N`` from the smoothing distribution ``p(x_0:N | y_1:N)``, exactly.

    One joint draw; ``jax.vmap(posterior_sample, in_axes=(0, None, None))(keys, params, ys)``
    gives many (the filter then runs once). For a fixed key the draw is a deterministic,
    differentiable function of ``params`` and ``ys`` (reparameterised: ``grad`` flows through
    it). Both schedules use the same standard normal variates, so for one key they return
    the same path up to round-off. NaN entries of ``ys`` are missing (handled by the
    filter).

    Args:
        key: a JAX PRNG key (``jax.random.key(seed)`` or ``jax.random.PRNGKey(seed)``); no
            default.
        params: an :class:`~jaxssm.LGSSM`; ``inf`` on the diagonal of a concrete ``P0``
            marks diffuse components (exact diffuse initialisation, sequential schedule):
            the draw is then from the limit posterior.
        ys: observations ``y_1..y_N``, ``[N, Dy]``.
        inputs: ``u_1..u_N`` ``[N, Du]`` when ``params`` has ``B`` or ``D``.
        method: ``"sequential"`` (forward filtering, backward sampling with ``lax.scan``) or
            ``"parallel"`` (both passes as ``lax.associative_scan``, ``O(log N)`` span).
        steady_state: as in :func:`~jaxssm.kalman_filter` (it selects the filter that runs;
            the backward pass is the full recursion).
        form: the filter's form, ``"cov"`` or ``"sqrt"``, as in
            :func:`~jaxssm.kalman_filter`; the backward draw
            runs over the filtered covariances (rebuilt from their factors with ``"sqrt"``).

    Returns:
        ``xs [N+1, D]``; row 0 is a draw of ``x_0``.

    Raises:
        TypeError: ``key`` is not a PRNG key; a dtype error as in
            :func:`~jaxssm.kalman_filter`.
        ValueError: a batch of keys; a bad ``method`` or shape, as in
            :func:`~jaxssm.kalman_filter`.

    References:
        Carter and Kohn (1994); Fruhwirth-Schnatter (1994); S. Sarkka and
        A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian smoothers", IEEE TAC
        66(1), 2021; J. Durbin and S. J. Koopman, *Time Series Analysis by State Space
        Methods* (2012), section 4.9.
    """
    key = check_key(key)
    params, ys, inputs, schedule, index = prepare(
        "posterior_sample", params, ys, inputs, method=method, steady_state=steady_state, form=form
    )
    if index:
        return _diffuse.posterior_sample(key, params, ys, inputs, index)
    return _posterior_sample(key, params, ys, schedule, inputs)
