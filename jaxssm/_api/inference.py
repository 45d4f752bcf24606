"""Public inference entry points: filter, smoother and log-likelihood.

Each checks its arguments (:func:`jaxssm._api.entry.prepare`: the prologue, the schedule
first, then shapes and dtypes at trace time, covariance values when concrete; then, for a
diffuse ``P0``, that the schedule runs the exact diffuse recursion) and hands the resolved
schedule to the dispatcher (:mod:`jaxssm._schedules.dispatch`), which picks the schedule that
runs on the checked data, the time-sharded one included.
"""

from __future__ import annotations

import jax
from jax.typing import ArrayLike

from jaxssm._api.entry import prepare
from jaxssm._args.prologue import prologue
from jaxssm._args.results import check_finite_result, check_variances
from jaxssm._base.types import LGSSM, CovFactors, FilterResult, SmootherResult
from jaxssm._schedules import diffuse as _diffuse
from jaxssm._schedules import dispatch as _dispatch

__all__ = ["kalman_filter", "rts_smoother", "rts_smoother_from_filter", "log_likelihood"]


def _wants_factors(factors, form: str) -> bool:
    """Check ``factors=`` (after ``form``): whether the entry point returns the factors."""
    if not isinstance(factors, bool):
        raise TypeError(f"factors must be True or False, got {factors!r}")
    if factors and form != "sqrt":
        raise ValueError("factors=True needs form='sqrt' (form='cov' carries no factors)")
    return factors


def kalman_filter(
    params: LGSSM,
    ys: ArrayLike,
    *,
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
    factors: bool = False,
) -> FilterResult | tuple[FilterResult, CovFactors]:
    """Kalman filter over ``y_1..y_N``.

    Works under ``jit``, ``vmap`` (over params and/or ``ys``) and ``grad``; the dtype of the
    results follows the inputs.

    Args:
        params: an :class:`~jaxssm.LGSSM`. ``inf`` on the diagonal of a concrete ``P0``
            marks a diffuse component of ``x_0`` (its row and column otherwise zero; the
            rest of ``P0`` is the known part): the exact limit of infinite prior variance
            (the augmented filter; sequential schedule, ``steady_state`` None or False,
            ``form="cov"``; docs/guides/diffuse.md). ``log_likelihood`` is then the
            diffuse log-likelihood (Durbin and Koopman 2012, 7.2.2; statsmodels' value), and
            a row whose state is not yet determined by the data holds the entrywise limit
            of its covariance: ``+-inf`` where it grows with the prior variance.
        ys: observations ``y_1..y_N``, ``[N, Dy]``, N >= 1; NaN marks a missing entry.
        inputs: ``u_1..u_N``, ``[N, Du]``: required when ``params`` has ``B`` or ``D``, an
            error otherwise.
        method: ``"sequential"`` (``lax.scan``) or ``"parallel"`` (``lax.associative_scan``,
            ``O(log N)`` span); the same results to round-off. With ``"parallel"``, a
            concrete ``ys`` sharded over time on a mesh axis runs the time-sharded schedule
            (:func:`jaxssm.sharding.time_sharding`).
        steady_state: ``None`` (default): the steady-state fast path on the sequential
            schedule for ``N >= 2048`` (the full associative scan with ``"parallel"``);
            ``True``: the fast path for any ``N`` that holds it, on ``"parallel"`` with its
            mean recursions as log-depth associative scans; ``False``: the full recursion.
            Exact to round-off either way; see "Schedules" in the README.
        form: ``"cov"`` (default) propagates covariances; ``"sqrt"`` propagates their
            lower-triangular Cholesky factors, re-triangularised by QR at every step, so
            every covariance returned is ``L L^T``: symmetric positive semi-definite by
            construction, which keeps float32 and vague priors right where ``"cov"`` goes
            wrong (docs/numerics.md, "When to use form='sqrt'"). The same results to
            round-off in float64. Sequential and parallel (square-root associative
            elements) schedules; ``steady_state=True`` runs the steady-state schedule with
            its covariance side on factors (the full square-root recursion where a missing
            entry or an unsettled transient rules the fast path out: there is no
            square-root gap-aware recursion), ``None`` the full square-root recursion of
            ``method`` whatever ``N``; no time-sharded schedule.
        factors: with ``form="sqrt"``, also return the factors
            (:class:`~jaxssm.CovFactors`: ``covs [N+1, D, D]`` and ``pred_covs [N, D, D]``,
            ``P = L L^T``). An error with ``form="cov"``.

    Returns:
        :class:`~jaxssm.FilterResult` with ``means [N+1, D]``, ``covs [N+1, D, D]``,
        ``pred_means [N, D]``, ``pred_covs [N, D, D]`` and ``log_likelihood []``; with
        ``factors=True`` the pair ``(FilterResult, CovFactors)``.

    Warns:
        RuntimeWarning: eagerly, when a returned variance is negative beyond round-off
            (the covariance form in float32 on stiff models or vague priors; use
            ``form="sqrt"`` or float64).

    Raises:
        ValueError: a bad ``method``, ``steady_state=True`` with a time-varying model, or a
            shape that does not match (the message names the argument and the expected shape);
            called eagerly, invalid values (non-finite fields, an indefinite covariance,
            ``inf`` in ``ys``), or a log-likelihood that comes out non-finite from checked
            inputs (an unstable state direction that ``H`` does not see overflows the
            covariance; the message says which). Under ``jit`` or ``vmap`` values are not
            checked and such a case gives NaN: use :func:`~jaxssm.check_values` with
            :func:`jax.experimental.checkify.checkify` for an error there.
        TypeError: a non-floating or mismatched dtype, or a non-bool ``steady_state``.

    References:
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorem 4.2; S. Sarkka and
        A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian smoothers", IEEE TAC
        66(1), 2021.
    """
    params, ys, inputs, schedule, index = prepare(
        "kalman_filter", params, ys, inputs, method=method, steady_state=steady_state, form=form
    )
    want_factors = _wants_factors(factors, form)
    if index:
        return _diffuse.filter(params, ys, inputs, index)
    if want_factors:
        return _dispatch.run_factors(params, ys, schedule, smoothed=False, inputs=inputs)
    result = _dispatch.filter(params, ys, schedule, inputs=inputs)
    check_finite_result(result.log_likelihood, params, "kalman_filter")
    check_variances(result.covs, "kalman_filter", "filtered covariance")
    return result


def rts_smoother(
    params: LGSSM,
    ys: ArrayLike,
    *,
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
    factors: bool = False,
) -> SmootherResult | tuple[SmootherResult, CovFactors]:
    """Kalman filter followed by a Rauch-Tung-Striebel backward pass.

    Args:
        params: an :class:`~jaxssm.LGSSM`; ``inf`` on the diagonal of a concrete ``P0``
            marks diffuse components (exact diffuse initialisation, see
            :func:`~jaxssm.kalman_filter`): the smoothed moments are their finite limits,
            and ``gains[k]`` solves ``G P_{k+1}^s = Cov(x_k, x_{k+1} | y)``.
        ys: observations ``y_1..y_N``, ``[N, Dy]``.
        inputs: as in :func:`~jaxssm.kalman_filter`.
        method: as in :func:`~jaxssm.kalman_filter`.
        steady_state: as in :func:`~jaxssm.kalman_filter`.
        form: as in :func:`~jaxssm.kalman_filter`; with ``"sqrt"`` the backward pass
            propagates factors too (the square-root RTS step).
        factors: with ``form="sqrt"``, also return the smoothed factors
            (:class:`~jaxssm.CovFactors` with ``covs [N+1, D, D]``, ``pred_covs=None``).

    Returns:
        :class:`~jaxssm.SmootherResult` with ``means [N+1, D]``, ``covs [N+1, D, D]``,
        ``gains [N, D, D]`` and ``log_likelihood []``; row 0 is ``p(x_0 | y_1:N)``. With
        ``factors=True`` the pair ``(SmootherResult, CovFactors)``.

    Warns:
        RuntimeWarning: eagerly, when a returned variance is negative beyond round-off
            (the covariance form in float32 on stiff models or vague priors; use
            ``form="sqrt"`` or float64).

    Raises:
        ValueError, TypeError: as :func:`~jaxssm.kalman_filter`.

    References:
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Theorem 8.2; Sarkka and
        Garcia-Fernandez (2021).
    """
    params, ys, inputs, schedule, index = prepare(
        "rts_smoother", params, ys, inputs, method=method, steady_state=steady_state, form=form
    )
    want_factors = _wants_factors(factors, form)
    if index:
        return _diffuse.smooth(params, ys, inputs, index)
    if want_factors:
        return _dispatch.run_factors(params, ys, schedule, smoothed=True, inputs=inputs)
    result = _dispatch.smooth(params, ys, schedule, inputs=inputs)
    check_finite_result(result.log_likelihood, params, "rts_smoother")
    check_variances(result.covs, "rts_smoother", "smoothed covariance")
    return result


def rts_smoother_from_filter(
    params: LGSSM, filtered: FilterResult, *, method: str = "sequential"
) -> SmootherResult:
    """RTS backward pass over the output of :func:`~jaxssm.kalman_filter`.

    For a caller who already filtered with the same ``params`` and should not filter twice.

    Args:
        params: the :class:`~jaxssm.LGSSM` the filter ran with.
        filtered: a :class:`~jaxssm.FilterResult`.
        method: ``"sequential"`` (a reverse ``lax.scan``) or ``"parallel"`` (a reverse
            ``lax.associative_scan``); the same result to round-off.

    Returns:
        :class:`~jaxssm.SmootherResult`, as :func:`~jaxssm.rts_smoother`.
    """
    params, _, _, schedule = prologue(params, method=method, steady_state=False)
    if not isinstance(filtered, FilterResult):
        raise TypeError(f"filtered must be a jaxssm.FilterResult, got {type(filtered).__name__}")
    D = params.A.shape[-1]
    n = filtered.pred_means.shape[0] if filtered.pred_means.ndim == 2 else None
    if n is None or filtered.means.shape != (n + 1, D) or filtered.pred_covs.shape != (n, D, D):
        raise ValueError(
            "filtered must hold means [N+1, D], covs [N+1, D, D], pred_means [N, D] and "
            f"pred_covs [N, D, D] with D = {D}, got means {tuple(filtered.means.shape)}, "
            f"pred_means {tuple(filtered.pred_means.shape)}, "
            f"pred_covs {tuple(filtered.pred_covs.shape)}"
        )
    return _dispatch.smooth_filtered(params, filtered, schedule)


def log_likelihood(
    params: LGSSM,
    ys: ArrayLike,
    *,
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
) -> jax.Array:
    """Log marginal likelihood ``log p(y_1:N)`` of the model.

    Args:
        params: an :class:`~jaxssm.LGSSM`; ``inf`` on the diagonal of a concrete ``P0``
            marks diffuse components: the result is then the diffuse log-likelihood of
            Durbin and Koopman (2012, 7.2.2), as in :func:`~jaxssm.kalman_filter`.
        ys: observations ``[N, Dy]``, or a batch ``[B, N, Dy]`` of independent sequences
            (the sum of their log-likelihoods is returned).
        inputs: as in :func:`~jaxssm.kalman_filter` (``[B, N, Du]`` with a batch).
        method: as in :func:`~jaxssm.kalman_filter`.
        steady_state: as in :func:`~jaxssm.kalman_filter`.
        form: as in :func:`~jaxssm.kalman_filter`: ``"sqrt"`` takes the log-likelihood from
            the innovations' Cholesky factors of the square-root filter.

    Returns:
        A scalar with the dtype of the inputs.

    Raises:
        ValueError, TypeError: as :func:`~jaxssm.kalman_filter`.
    """
    params, ys, inputs, schedule, index = prepare(
        "log_likelihood",
        params,
        ys,
        inputs,
        method=method,
        steady_state=steady_state,
        form=form,
        allow_batch=True,
    )
    if index:
        return _diffuse.log_likelihood(params, ys, inputs, index)
    value = _dispatch.log_likelihood(params, ys, schedule, inputs=inputs)
    return check_finite_result(value, params, "log_likelihood")
