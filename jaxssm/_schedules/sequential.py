"""The sequential schedule: Kalman filter and RTS smoother as ``lax.scan`` over the steps.

Both are written over :mod:`jaxssm.steps` and are unchecked (no validation); the public
entry points (:mod:`_api.inference`) and the dispatcher (:mod:`_schedules.dispatch`) call
them inside ``jit``. They take a reduced model (:func:`jaxssm._base.model.reduce`): time-varying
fields are per-step inputs of the scans, ``b`` (if set) is the state offset of each step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._base import model as _model
from jaxssm._base.types import LGSSM, FilterResult, SmootherResult

__all__ = ["filter", "smooth"]


def filter(params: LGSSM, ys: jax.Array) -> FilterResult:
    """Kalman filter over ``ys [N, Dy]``: one ``lax.scan`` of predict and update.

    NaN entries of ``ys`` are missing (:func:`jaxssm.steps.mask_observation`).
    """
    fixed, varying = _model.split(params)

    def body(carry, inputs):
        mean, cov, ll = carry
        y, per_step = inputs
        p = _model.merge(fixed, per_step)
        pred_mean = steps.predict_mean(mean, p.A, p.b)
        pred_cov = steps.predict_cov(cov, p.A, p.Q)
        obs = steps.mask_observation(y, p.H, p.R)
        half = steps.update_cov(pred_cov, obs.H, obs.R)
        z = steps.whitened_innovation(pred_mean, obs.y, obs.H, half.chol)
        mean = steps.update_mean(pred_mean, half.obs_factor, z)
        ll = ll + steps.log_normal_whitened(z, half.chol, obs.num_observed)
        return (mean, half.cov, ll), (mean, half.cov, pred_mean, pred_cov)

    init = (params.m0, params.P0, jnp.zeros((), params.m0.dtype))
    (_, _, ll), (means, covs, pred_means, pred_covs) = jax.lax.scan(body, init, (ys, varying))
    means = jnp.concatenate([params.m0[None], means], axis=0)
    covs = jnp.concatenate([params.P0[None], covs], axis=0)
    return FilterResult(means, covs, pred_means, pred_covs, ll)


def smooth(params: LGSSM, filtered: FilterResult) -> SmootherResult:
    """RTS backward pass over a :class:`~jaxssm.FilterResult`: one reverse ``lax.scan``.

    Step ``k`` uses the transition of step ``k + 1`` (``A[k]`` when ``A`` is time-varying).
    """
    A = params.A
    A_steps = A if _model.is_time_varying(params, "A") else None

    def body(carry, inputs):
        next_mean, next_cov = carry
        mean, cov, next_pred_mean, next_pred_cov, A_k = inputs
        gain = steps.smoother_gain(cov, next_pred_cov, A if A_k is None else A_k)
        mean = steps.smooth_mean(mean, next_pred_mean, next_mean, gain)
        cov = steps.smooth_cov(cov, next_pred_cov, next_cov, gain)
        return (mean, cov), (mean, cov, gain)

    last = (filtered.means[-1], filtered.covs[-1])
    inputs = (
        filtered.means[:-1],
        filtered.covs[:-1],
        filtered.pred_means,
        filtered.pred_covs,
        A_steps,
    )
    _, (means, covs, gains) = jax.lax.scan(body, last, inputs, reverse=True)
    means = jnp.concatenate([means, filtered.means[-1:]], axis=0)
    covs = jnp.concatenate([covs, filtered.covs[-1:]], axis=0)
    return SmootherResult(means, covs, gains, filtered.log_likelihood)
