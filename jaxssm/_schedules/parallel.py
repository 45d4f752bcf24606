r"""Time-parallel Kalman filter and RTS smoother (``jax.lax.associative_scan``).

The driver of the elements and operators of :mod:`jaxssm._blocks.elements` (Sarkka and
Garcia-Fernandez, 2021): the filtered moments are the inclusive prefixes of the filtering
elements under :func:`~jaxssm._blocks.elements.filter_combine`, the smoothed moments the
inclusive suffixes of the smoothing elements under
:func:`~jaxssm._blocks.elements.smooth_combine`. Their span is ``O(log N)`` on parallel
hardware instead of ``O(N)``; the results equal the sequential :func:`~jaxssm.kalman_filter`
and :func:`~jaxssm.rts_smoother` up to round-off.

Elements and operators are mapped over time with :func:`jaxssm._base.batching.batched`;
time-varying fields (:func:`jaxssm._base.model.split`) are mapped over with the data. All
functions here are unchecked and meant to be called inside ``jit``.

References:
    S. Sarkka and A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian smoothers",
    IEEE Transactions on Automatic Control 66(1):299-306, 2021.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssm import steps
from jaxssm._base import model as _model
from jaxssm._base.batching import batched
from jaxssm._base.linalg import symmetrize
from jaxssm._base.types import LGSSM, FilterResult, SmootherResult
from jaxssm._blocks.elements import (
    FilterElement,
    SmoothElement,
    filter_combine,
    filter_element,
    first_filter_element,
    log_likelihood_step,
    smooth_combine,
    smooth_element,
)

__all__ = ["filter_elements", "filter", "smooth"]


def filter_elements(params: LGSSM, ys: jax.Array) -> FilterElement:
    """All ``N`` filtering elements: the first conditions on ``(m0, P0)``, the others generic.

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked; time-varying fields per step).
        ys: ``[N, Dy]``, NaN where missing.

    Returns:
        :class:`~jaxssm._blocks.elements.FilterElement` with ``[N, ...]`` leaves.
    """
    fixed, varying = _model.split(params)
    generic = batched(lambda y, v: filter_element(_model.merge(fixed, v), y))(ys, varying)
    first = first_filter_element(_model.step(params, 0), ys[0])
    return jax.tree_util.tree_map(lambda g, f: g.at[0].set(f), generic, first)


def filter(params: LGSSM, ys: jax.Array) -> FilterResult:
    """Parallel Kalman filter: the same :class:`~jaxssm.FilterResult` as the sequential one.

    The filtered moments come from the associative scan. The predicted moments are then
    ``predict(m_{k-1}, P_{k-1})`` and the log-likelihood is the sum over ``k`` of
    ``log N(y_k; H m_k^-, H P_k^- H^T + R)`` (both mapped over time), which is exact for any
    ``m0`` and ``P0``.

    Args:
        params: an :class:`~jaxssm.LGSSM` (unchecked; the reduced model of
            :func:`jaxssm._base.model.reduce`, time-varying fields per step).
        ys: ``[N, Dy]``, NaN where missing.

    Returns:
        :class:`~jaxssm.FilterResult` (``means [N+1, D]``, ``covs [N+1, D, D]``,
        ``pred_means [N, D]``, ``pred_covs [N, D, D]``, ``log_likelihood``).
    """
    # Exactly symmetric inputs are unchanged; the gradients with respect to P0, Q and R come
    # out symmetric, as those of the sequential filter do.
    params = params._replace(
        P0=symmetrize(params.P0), Q=symmetrize(params.Q), R=symmetrize(params.R)
    )
    elems = filter_elements(params, ys)
    scanned = jax.lax.associative_scan(batched(filter_combine), elems)
    means = jnp.concatenate([params.m0[None], scanned.b], axis=0)
    covs = jnp.concatenate([params.P0[None], scanned.C], axis=0)
    fixed, varying = _model.split(params)

    def predict(m, P, v):
        p = _model.merge(fixed, v)
        return steps.predict(m, P, p.A, p.Q, p.b)

    def log_lik(m, P, y, v):
        p = _model.merge(fixed, v)
        return log_likelihood_step(m, P, p.H, p.R, y)

    pred = jax.vmap(predict)(means[:-1], covs[:-1], varying)
    lls = batched(log_lik)(pred.mean, pred.cov, ys, varying)
    return FilterResult(means, covs, pred.mean, pred.cov, jnp.sum(lls))


def smooth(params: LGSSM, filtered: FilterResult) -> SmootherResult:
    """Parallel RTS pass over a :class:`~jaxssm.FilterResult` (gains included).

    Args:
        params: the :class:`~jaxssm.LGSSM` the filter ran with.
        filtered: its :class:`~jaxssm.FilterResult`.

    Returns:
        :class:`~jaxssm.SmootherResult` (``means [N+1, D]``, ``covs [N+1, D, D]``,
        ``gains [N, D, D]``, the filter's ``log_likelihood``).
    """
    A_steps = params.A if _model.is_time_varying(params, "A") else None  # A[k]: step k + 1

    def element(m, P, mp, Pp, A_k):
        return smooth_element(m, P, mp, Pp, params.A if A_k is None else A_k)

    body = batched(element)(
        filtered.means[:-1], filtered.covs[:-1], filtered.pred_means, filtered.pred_covs, A_steps
    )
    zero = jnp.zeros_like(filtered.covs[-1])
    last = SmoothElement(zero, filtered.means[-1], filtered.covs[-1])
    elems = jax.tree_util.tree_map(lambda x, y: jnp.concatenate([x, y[None]], axis=0), body, last)
    scanned = jax.lax.associative_scan(jax.vmap(smooth_combine), elems, reverse=True)
    return SmootherResult(scanned.g, scanned.L, body.E, filtered.log_likelihood)
