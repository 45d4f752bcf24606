"""The sequential schedule: Kalman filter and RTS smoother as ``lax.scan`` over the steps.

Both are written over :mod:`jaxssm.steps` and are unchecked (no validation); the public
entry points (:mod:`jaxssm._inference`) and the dispatcher (:mod:`jaxssm._dispatch`) call
them inside ``jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._types import LGSSM, FilterResult, SmootherResult

__all__ = ["filter", "smooth"]


def filter(params: LGSSM, ys: jax.Array) -> FilterResult:
    """Kalman filter over ``ys [N, Dy]``: one ``lax.scan`` of predict and update.

    NaN entries of ``ys`` are missing (:func:`jaxssm.steps.mask_observation`).
    """
    A, Q, H, R = params.A, params.Q, params.H, params.R

    def body(carry, y):
        mean, cov, ll = carry
        pred_mean, pred_cov = steps.predict_mean(mean, A), steps.predict_cov(cov, A, Q)
        obs = steps.mask_observation(y, H, R)
        half = steps.update_cov(pred_cov, obs.H, obs.R)
        z = steps.whitened_innovation(pred_mean, obs.y, obs.H, half.chol)
        mean = steps.update_mean(pred_mean, half.obs_factor, z)
        ll = ll + steps.log_normal_whitened(z, half.chol, obs.num_observed)
        return (mean, half.cov, ll), (mean, half.cov, pred_mean, pred_cov)

    init = (params.m0, params.P0, jnp.zeros((), params.m0.dtype))
    (_, _, ll), (means, covs, pred_means, pred_covs) = jax.lax.scan(body, init, ys)
    means = jnp.concatenate([params.m0[None], means], axis=0)
    covs = jnp.concatenate([params.P0[None], covs], axis=0)
    return FilterResult(means, covs, pred_means, pred_covs, ll)


def smooth(params: LGSSM, filtered: FilterResult) -> SmootherResult:
    """RTS backward pass over a :class:`~jaxssm.FilterResult`: one reverse ``lax.scan``."""
    A = params.A

    def body(carry, inputs):
        next_mean, next_cov = carry
        mean, cov, next_pred_mean, next_pred_cov = inputs
        gain = steps.smoother_gain(cov, next_pred_cov, A)
        mean = steps.smooth_mean(mean, next_pred_mean, next_mean, gain)
        cov = steps.smooth_cov(cov, next_pred_cov, next_cov, gain)
        return (mean, cov), (mean, cov, gain)

    last = (filtered.means[-1], filtered.covs[-1])
    inputs = (filtered.means[:-1], filtered.covs[:-1], filtered.pred_means, filtered.pred_covs)
    _, (means, covs, gains) = jax.lax.scan(body, last, inputs, reverse=True)
    means = jnp.concatenate([means, filtered.means[-1:]], axis=0)
    covs = jnp.concatenate([covs, filtered.covs[-1:]], axis=0)
    return SmootherResult(means, covs, gains, filtered.log_likelihood)
