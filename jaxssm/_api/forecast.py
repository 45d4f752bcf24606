r"""Forecasts beyond the data, and per-step diagnostics of a filter run.

Forecasts start from the last filtered moments ``(m_N, P_N)`` and run ``h`` predict steps
(:func:`jaxssm.steps.predict`): for ``k = N+1..N+h``,

.. math::

    m_k = A m_{k-1}, \quad P_k = A P_{k-1} A^T + Q, \quad
    E[y_k | y_{1:N}] = H m_k, \quad Cov[y_k | y_{1:N}] = H P_k H^T + R,

the exact marginals of ``p(x_k, y_k | y_1:N)``. Missing observations enter only through the
filter, so a forecast from a series with gaps is exact for the observed entries.

The diagnostics re-use the predicted moments of a :class:`~jaxssm.FilterResult`: each
step's innovation ``v_k = y_k - H m_k^-``, its covariance ``S_k = H P_k^- H^T + R``, the
standardized innovation ``e_k = L_k^{-1} v_k`` with ``S_k = L_k L_k^T`` (the lower Cholesky
factor, the same whitening as the filter's update), and the log-likelihood contribution
``log N(y_k; H m_k^-, S_k)``, whose sum over ``k`` is ``log p(y_1:N)``. Under the model the
``e_k`` are independent standard normal vectors, so they serve residual checks (whiteness,
unit variance, outliers as large ``|e_k|``).

References:
    J. Durbin and S. J. Koopman, *Time Series Analysis by State Space Methods* (2nd ed.
    2012), sections 2.12 and 4.11 (forecasting), 2.12 and 7.5 (diagnostics); S. Sarkka,
    *Bayesian Filtering and Smoothing* (2013), Theorem 4.2.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxssm import steps
from jaxssm._api.entry import diffuse
from jaxssm._args.checks import check_int, check_key
from jaxssm._args.prologue import prologue
from jaxssm._args.schedule import Schedule
from jaxssm._args.validation import validate_inputs
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.batching import batched
from jaxssm._base.linalg import BATCHED, psd_cholesky, symmetrize
from jaxssm._base.types import LGSSM, FilterResult
from jaxssm._blocks.draws import gaussian_draw
from jaxssm._schedules import diffuse as _diffuse
from jaxssm._schedules import dispatch as _dispatch

__all__ = ["Forecast", "FilterDiagnostics", "forecast", "forecast_sample", "filter_diagnostics"]


class Forecast(NamedTuple):
    """Moments of the ``h``-step forecast ``p(x_k, y_k | y_1:N)``, ``k = N+1..N+h``.

    Attributes:
        means: ``E[x_k | y_1:N]``, ``[h, D]``.
        covs: ``Cov[x_k | y_1:N]``, ``[h, D, D]``.
        obs_means: ``E[y_k | y_1:N]``, ``[h, Dy]``.
        obs_covs: ``Cov[y_k | y_1:N]``, ``[h, Dy, Dy]``.
    """

    means: jax.Array
    covs: jax.Array
    obs_means: jax.Array
    obs_covs: jax.Array


class FilterDiagnostics(NamedTuple):
    """Per-step diagnostics of a Kalman filter run, ``k = 1..N``.

    Attributes:
        log_likelihoods: ``log p(y_k | y_1:k-1)`` of the observed entries, ``[N]``; they sum
            to ``log p(y_1:N)``.
        innovations: ``v_k = y_k - H m_k^-``, ``[N, Dy]`` (NaN where ``y_k`` is missing).
        innovation_covs: ``S_k = H P_k^- H^T + R``, the predictive covariance of ``y_k``,
            ``[N, Dy, Dy]``.
        standardized_innovations: ``e_k = L_k^{-1} v_k`` with ``L_k`` the lower Cholesky
            factor of ``S_k`` (of its observed block where entries are missing; NaN at the
            missing entries), ``[N, Dy]``; independent standard normal under the model.
    """

    log_likelihoods: jax.Array
    innovations: jax.Array
    innovation_covs: jax.Array
    standardized_innovations: jax.Array


# --- forecasting --------------------------------------------------------------------------------


def _predict_ahead(
    params: LGSSM, mean: jax.Array, cov: jax.Array, num_steps: int, c=None, e=None
) -> Forecast:
    """``num_steps`` predict steps from ``(mean, cov)`` and their observation moments.

    ``c [h, D]`` and ``e [h, Dy]``: the state and observation offsets of the future steps.
    """
    A, Q, H, R = params.A, params.Q, params.H, params.R

    def body(carry, offsets):
        ck, ek = offsets
        pred = steps.predict(*carry, A, Q, ck)
        obs_cov = symmetrize(H @ pred.cov @ H.T + R)
        obs_mean = H @ pred.mean if ek is None else H @ pred.mean + ek
        return tuple(pred), (pred.mean, pred.cov, obs_mean, obs_cov)

    _, out = jax.lax.scan(body, (mean, cov), (c, e), length=num_steps)
    return Forecast(*out)


@partial(_compile.jit, static_argnames=("num_steps", "schedule"))
def _forecast(
    params: LGSSM, ys: jax.Array, num_steps: int, schedule: Schedule, inputs=None, future=None
) -> Forecast:
    filtered = _dispatch.filter(params, ys, schedule, inputs=inputs)
    c, e = _model.offsets(params, future, num_steps)
    return _predict_ahead(params, filtered.means[-1], filtered.covs[-1], num_steps, c, e)


@partial(_compile.jit, static_argnames=("num_steps", "schedule"))
def _forecast_sample(
    key, params: LGSSM, ys: jax.Array, num_steps: int, schedule: Schedule, inputs=None, future=None
):
    filtered = _dispatch.filter(params, ys, schedule, inputs=inputs)
    c, e = _model.offsets(params, future, num_steps)
    D, Dy = params.A.shape[0], params.H.shape[0]
    dtype = filtered.means.dtype
    key_x, key_q, key_r = jax.random.split(key, 3)
    x_last = gaussian_draw(
        filtered.means[-1], filtered.covs[-1], jax.random.normal(key_x, (D,), dtype)
    )
    q = jax.random.normal(key_q, (num_steps, D), dtype) @ psd_cholesky(params.Q).T
    r = jax.random.normal(key_r, (num_steps, Dy), dtype) @ psd_cholesky(params.R).T

    def body(x, inputs):
        noise, ck = inputs
        x = steps.predict_mean(x, params.A, ck) + noise
        return x, x

    _, xs = jax.lax.scan(body, x_last, (q, c))
    obs = xs @ params.H.T + r
    return xs, obs if e is None else obs + e


def forecast(
    params: LGSSM,
    ys: ArrayLike,
    num_steps: int,
    *,
    inputs: ArrayLike | None = None,
    future_inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
) -> Forecast:
    """Exact ``h``-step forecast of states and observations beyond ``y_1..y_N``.

    Args:
        params: an :class:`~jaxssm.LGSSM`; ``inf`` on the diagonal of a concrete ``P0``
            marks diffuse components (exact diffuse initialisation, sequential schedule).
        ys: observations ``y_1..y_N``, ``[N, Dy]`` (NaN entries are missing).
        num_steps: the horizon ``h >= 1``, a Python int.
        inputs: ``u_1..u_N`` ``[N, Du]`` when ``params`` has ``B`` or ``D``.
        future_inputs: ``u_{N+1}..u_{N+h}`` ``[h, Du]``, likewise.
        method: the filter's schedule, as in :func:`~jaxssm.kalman_filter`.
        steady_state: as in :func:`~jaxssm.kalman_filter`.
        form: the filter's form, ``"cov"`` or ``"sqrt"``, as in
            :func:`~jaxssm.kalman_filter`. The ``h`` prediction steps beyond ``N`` run in
            covariance form either way, from the last filtered covariance (rebuilt from its
            factor with ``"sqrt"``).

    Returns:
        :class:`Forecast` with ``means [h, D]``, ``covs [h, D, D]``, ``obs_means [h, Dy]`` and
        ``obs_covs [h, Dy, Dy]``; row ``j`` is step ``k = N + 1 + j``.

    Raises:
        TypeError, ValueError: a bad ``num_steps`` (the message names it), or as
            :func:`~jaxssm.kalman_filter`.
    """
    num_steps = check_int(num_steps, "num_steps", hint=_HORIZON)
    params, ys, inputs, future, schedule = _check_forecast(
        params,
        ys,
        num_steps,
        inputs,
        future_inputs,
        method,
        steady_state,
        form=form,
        allow_diffuse=True,
    )
    if index := diffuse(params, schedule, "forecast"):
        last = _diffuse.filter(params, ys, inputs, index)
        c, e = _model.offsets(params, future, num_steps)
        return _predict_ahead(params, last.means[-1], last.covs[-1], num_steps, c, e)
    return _forecast(params, ys, num_steps, schedule, inputs, future)


def forecast_sample(
    key: jax.Array,
    params: LGSSM,
    ys: ArrayLike,
    num_steps: int,
    *,
    inputs: ArrayLike | None = None,
    future_inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Draw one forecast path ``(x_k, y_k)``, ``k = N+1..N+h``, from ``p( . | y_1:N)``.

    ``x_N`` is drawn from the last filtered distribution and the model is run forward from
    it; ``vmap`` over keys gives a fan of paths whose moments are :func:`forecast`'s.

    Args:
        key: a JAX PRNG key; no default.
        params: an :class:`~jaxssm.LGSSM`.
        ys: observations ``y_1..y_N``, ``[N, Dy]``.
        num_steps: the horizon ``h >= 1``, a Python int.
        inputs: ``u_1..u_N`` ``[N, Du]`` when ``params`` has ``B`` or ``D``.
        future_inputs: ``u_{N+1}..u_{N+h}`` ``[h, Du]``, likewise.
        method: the filter's schedule, as in :func:`~jaxssm.kalman_filter`.
        steady_state: as in :func:`~jaxssm.kalman_filter`.

    Returns:
        ``(xs [h, D], ys [h, Dy])``.
    """
    key = check_key(key)
    num_steps = check_int(num_steps, "num_steps", hint=_HORIZON)
    params, ys, inputs, future, schedule = _check_forecast(
        params, ys, num_steps, inputs, future_inputs, method, steady_state
    )
    return _forecast_sample(key, params, ys, num_steps, schedule, inputs, future)


_HORIZON = "the horizon, a Python int (it fixes the output shapes)"


def _check_forecast(
    params,
    ys,
    num_steps,
    inputs,
    future_inputs,
    method,
    steady_state,
    form="cov",
    allow_diffuse=False,
):
    """Validate a forecast's arguments; the model must be time-invariant beyond ``N``."""
    params, ys, inputs, schedule = prologue(
        params,
        ys,
        inputs,
        method=method,
        steady_state=steady_state,
        form=form,
        time_invariant="forecast",
        allow_diffuse=allow_diffuse,
    )
    future = validate_inputs(
        future_inputs,
        params,
        jax.ShapeDtypeStruct((num_steps, ys.shape[-1]), ys.dtype),
        name="future_inputs",
    )
    return params, ys, inputs, future, schedule


# --- diagnostics --------------------------------------------------------------------------------


def _diagnose_step(pred_mean, pred_cov, y, H, R):
    """One step's :class:`FilterDiagnostics` row, with the filter's masking of missing entries."""
    obs = steps.mask_observation(y, H, R)
    chol = steps.innovation_chol(pred_cov, obs.H, obs.R, BATCHED)
    z = steps.whitened_innovation(pred_mean, obs.y, obs.H, chol, BATCHED)
    ll = steps.log_normal_whitened(z, chol, obs.num_observed)
    nan = jnp.full((), jnp.nan, y.dtype)
    innovation = y - H @ pred_mean  # NaN where y is
    return ll, innovation, symmetrize(H @ pred_cov @ H.T + R), jnp.where(obs.observed, z, nan)


@_compile.jit
def _diagnostics(
    params: LGSSM, ys: jax.Array, pred_means, pred_covs, inputs=None
) -> FilterDiagnostics:
    core, ys, _ = _model.reduce(params, ys, inputs)  # innovations of y - D u - d
    obs = _model.EMPTY._replace(H=core.H, R=core.R)
    fixed, varying = _model.split(obs)

    def step(m, P, y, v):
        p = _model.merge(fixed, v)
        return _diagnose_step(m, P, y, p.H, p.R)

    return FilterDiagnostics(*batched(step)(pred_means, pred_covs, ys, varying))


def filter_diagnostics(
    params: LGSSM, ys: ArrayLike, filtered: FilterResult, *, inputs: ArrayLike | None = None
) -> FilterDiagnostics:
    """Per-step log-likelihoods, innovations and standardized innovations of a filter run.

    A function over the output of :func:`~jaxssm.kalman_filter` (any schedule): it re-uses
    the predicted moments and factors each step's innovation covariance once more (vmapped
    over the steps).

    Args:
        params: the :class:`~jaxssm.LGSSM` the filter ran with.
        ys: the observations it ran on, ``[N, Dy]``.
        filtered: its :class:`~jaxssm.FilterResult`.
        inputs: the inputs it ran with, ``[N, Du]``, when ``params`` has ``B`` or ``D``.

    Returns:
        :class:`FilterDiagnostics` with ``log_likelihoods [N]``, ``innovations [N, Dy]``,
        ``innovation_covs [N, Dy, Dy]`` and ``standardized_innovations [N, Dy]``.

    Raises:
        TypeError: ``filtered`` is not a :class:`~jaxssm.FilterResult`, or as
            :func:`~jaxssm.kalman_filter`.
        ValueError: ``filtered`` does not match ``params`` and ``ys`` in shape.
    """
    params, ys, inputs, _ = prologue(params, ys, inputs)
    if not isinstance(filtered, FilterResult):
        raise TypeError(f"filtered must be a jaxssm.FilterResult, got {type(filtered).__name__}")
    N, D = ys.shape[0], params.A.shape[-1]
    pm, pc = jnp.asarray(filtered.pred_means), jnp.asarray(filtered.pred_covs)
    if pm.shape != (N, D) or pc.shape != (N, D, D):
        raise ValueError(
            f"filtered must hold pred_means [N, D] and pred_covs [N, D, D] with N = {N} "
            f"(from ys) and D = {D}, got pred_means {tuple(pm.shape)}, "
            f"pred_covs {tuple(pc.shape)}"
        )
    return _diagnostics(params, ys, pm, pc, inputs)
