r"""``fit``: the maximum-likelihood estimate to convergence: accelerated EM, then the boundary.

One call picks a start (``start="auto"``: the better, in ``log p(y)``, of the given
parameters and :func:`~jaxssm.initialize`'s estimate from the data), runs SQUAREM-accelerated
EM (:mod:`jaxssm._learn.accelerate`) as one compiled loop (the **EM stage**), then, when a
covariance in ``update`` has vanishing eigenvalues, the **boundary stage**
(:mod:`jaxssm._learn.boundary`). The EM stage stops when **both** tests pass:

1. the log-likelihood's relative rise over one SQUAREM cycle (three E-steps) is at most
   ``tol``;
2. the **scaled gradient** is small: with :math:`g` the exact score (Fisher's identity, one
   E-step) and :math:`\delta = M(\theta) - \theta` the EM step at the returned point,

   .. math::

       \|g\|_* = \sqrt{\max(0, \langle g, \delta \rangle)}, \qquad
       \tfrac12 \|g\|_*^2 \le \mathrm{tol} \cdot |\log p(y)|.

   For ``A`` given ``Q`` the EM step is exactly the Newton step under the complete-data
   information, :math:`\delta = I_c^{-1} g`, and for a covariance it is the step whose
   complete-data (Fisher-metric) norm is :math:`\langle g, \delta\rangle`; so
   :math:`\|g\|_*^2 \approx g^T I_c^{-1} g`, the squared Newton decrement under the
   complete-data information, and :math:`\tfrac12\|g\|_*^2` is the gain (in nats) that
   such a Newton step predicts. It is invariant to the units and to any smooth
   reparameterisation of the fields (a pairing of a gradient with a step), and needs no
   matrix the size of the parameter vector.

When the first test passes and the second does not, the loop resumes with ``tol / 100``
(up to two more times, within ``max_iters``); if the gradient is still not small the status
is ``FitStatus.STALLED``.

**Why acceleration.** EM's rate is the largest fraction of missing information; at a
maximum where ``Q`` turns singular (SARCOS: positions integrate velocities) it tends to one
and plain EM crawls (module docstring of :mod:`jaxssm._learn.accelerate`). SQUAREM in
matrix-log coordinates for the covariances extrapolates that crawl.

**Why a boundary stage.** Where the maximum has a singular covariance, EM is frozen in the
directions it loses (the rows of ``A`` along a null vector of ``Q`` keep their value), so both
of the EM stage's tests go blind there: they can pass while the likelihood is still nats below
the maximum (on the SARCOS exercise, a few nats: the benchmark pages, "Time to the maximum").
Every 100 E-steps (``_CHECK_EVERY``) the EM stage tests, for ``Q``, ``R`` and ``P0`` in
``update``, whether setting its smallest eigenvalues (relative ``< 1e-2``) to zero lowers
``log p(y)`` (:func:`~jaxssm._learn.boundary.truncate`): a direction on its way to zero passes
(zeroing it is itself an ascent step; zeroing one that is not vanishing lowers ``log p(y)``).
When some pass (or eigenvalues at most ``rank_tol * lambda_max`` are already there) and the
E-step budget is not spent, they are set to zero (``C = L L^T``, ``L [n, r]``) and L-BFGS on
the exact gradient (reverse mode through the filter) maximises over all the fields in
``update`` and ``L``, with the active set updated on the way and the KKT sign condition of a
boundary maximum (``v' (d log p / dC) v <= 0`` along the dropped ``v``) checked on the way
and at the end, a direction that fails it grown back.
Its stopping test is the same kind of pairing: the gain ``<g, H g> / 2`` that L-BFGS's
quasi-Newton model predicts, against ``tol |log p(y)|``. Without vanishing eigenvalues the stage
is skipped and ``fit`` is the EM stage alone.

**Rounds.** The boundary stage runs at most ``_BOUNDARY_CHUNK`` gradients in its first round,
twice as many in each next one (a round restarts L-BFGS's memory: near the maximum, where EM
gains little, short rounds kept it from building up). When it has not converged,
``_EM_BURST`` plain EM iterations follow from its point, then the EM stage and the boundary
stage again, until the boundary stage converges or a budget (``max_iters`` E-steps,
``max_grad_evals`` gradients) is spent. EM keeps the held directions at zero (it
cannot leave a face) and moves the fields it is not frozen in far faster than L-BFGS (on the
44,484-step SARCOS stand-in, where 1,000 boundary-stage gradients had stopped, 50 plain EM
iterations still gained 1,340 nats: the benchmark pages, "Time to the maximum").
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxssm._args.checks import check_int, check_tol
from jaxssm._args.prologue import prologue
from jaxssm._args.structures import parse_update, resolve_update
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base import structure as _structure
from jaxssm._base.types import LGSSM, EMStatus
from jaxssm._learn.boundary import (
    SUSPECT_TOL,
    boundary_stage,
    log_likelihood_at,
    truncate,
    vanishing,
)
from jaxssm._learn.em import default_decrease_rtol, em_steps, squarem_em, squarem_plan
from jaxssm._learn.initialize import initialize
from jaxssm._learn.mstep import check_m_step, expected_log_joint, m_step_unchecked
from jaxssm._learn.score import score_from_stats
from jaxssm._schedules import dispatch as _dispatch
from jaxssm._schedules import plan as _plan

__all__ = ["fit", "FitInfo", "FitStatus", "num_free_params"]

#: E-steps between the EM stage's tests for vanishing covariance directions.
_CHECK_EVERY = 100
#: Gradients per boundary-stage round, at most.
_BOUNDARY_CHUNK = 200
#: Each round's gradient budget is the last one's times this.
_CHUNK_GROWTH = 2
#: Plain EM iterations between boundary-stage rounds.
_EM_BURST = 100
#: The values of ``fit``'s ``start``.
_STARTS = ("auto", "params", "data", "both")


class FitStatus(enum.IntEnum):
    """Why :func:`fit` stopped (``FitInfo.status``)."""

    #: the E-step budget ``max_iters`` (or the boundary stage's ``max_grad_evals``) ran out
    #: first.
    MAX_ITERS = 0
    #: both the relative log-likelihood change and the scaled gradient are below ``tol``.
    CONVERGED = 1
    #: an EM step lowered ``log p(y)`` beyond round-off (numerical breakdown); the best
    #: point before it is returned.
    DECREASED = 2
    #: the log-likelihood stopped rising (``tol / 10^4`` per cycle, or no ascent step found
    #: in the boundary stage) while the scaled gradient is not small.
    STALLED = 3


class FitInfo(NamedTuple):
    r"""What happened in :func:`fit`.

    Attributes:
        log_likelihood: ``log p(y | params)`` of the returned parameters, a scalar.
        log_likelihoods: ``[max_iters]``, one entry per E-step: the log-likelihood of the
            point it evaluated (EM iterates and accepted extrapolations); NaN for rejected
            extrapolations and unused E-steps. Finite entries never fall beyond round-off.
        num_e_steps: E-steps run (the loops', plus one per round for the scaled gradient,
            plus the truncation tests' filter passes), an int.
        status: a :class:`FitStatus`.
        grad_norm: the scaled gradient :math:`\|g\|_*` at the returned parameters
            (module docstring), in ``sqrt(nats)``.
        num_free_params: the free scalars of the fields in ``update``
            (:func:`num_free_params`).
        aic: ``2 k - 2 log p(y)``.
        bic: ``k log(n) - 2 log p(y)`` with ``n`` the number of time steps with at least one
            observed entry, summed over a batch (statsmodels' ``nobs`` convention).
        num_extrapolations: SQUAREM extrapolations evaluated.
        num_rejected: those rejected by the safeguard.
        num_grad_evals: exact gradients (reverse mode through the filter) the boundary
            stage evaluated, 0 where it did not run (plus the filter passes that grow back a
            direction failing the KKT sign check). A gradient costs several E-steps.
        rank_dropped: ``{name: count}``, the eigenvalues of each covariance in ``update``
            held at zero at the returned parameters (``{}``: no boundary stage).
        boundary_slope: the KKT sign check of a boundary maximum: the largest
            ``v' G v * lambda_max(C)`` over the dropped unit directions ``v`` of each such
            covariance ``C``, with ``G = d log p(y) / dC`` the full symmetric gradient (nats
            per unit of ``C`` relative to its scale). At most about zero at a maximum (the
            likelihood falls when ``C`` grows along ``v``); NaN without a boundary stage.
        grad_log_likelihoods: ``[num_grad_evals]``, the log-likelihood at each evaluation of
            the boundary stage (rejected line-search trials included).
        start: ``"params"`` or ``"data"``, the start the search used (``fit``'s ``start``
            argument; ``"auto"`` and ``"both"`` resolve to one of the two).
    """

    log_likelihood: jax.Array
    log_likelihoods: jax.Array
    num_e_steps: int
    status: FitStatus
    grad_norm: jax.Array
    num_free_params: int
    aic: jax.Array
    bic: jax.Array
    num_extrapolations: int
    num_rejected: int
    num_grad_evals: int = 0
    rank_dropped: dict = {}
    boundary_slope: float = float("nan")
    grad_log_likelihoods: np.ndarray = np.zeros(0)
    start: str = "params"


def num_free_params(params: LGSSM, update) -> int:
    """Count the free scalars in the fields ``update`` of ``params`` (the ``k`` of AIC, BIC).

    ``update`` as in :func:`fit` (names, or a mapping to structures). A full matrix counts
    all its entries (``A``: ``D^2``, ``H``: ``Dy D``, ``B``, ``D``), a full covariance its
    ``n (n + 1) / 2`` distinct entries (``Q``, ``R``, ``P0``), a vector its length (``m0``,
    ``b``, ``d``); a structured field its free coordinates (``"diagonal"`` covariance ``n``,
    ``"scalar"`` 1, ``Linear(f, D)`` the columns of ``D``). A covariance that ends on the
    boundary (eigenvalues held at zero by the boundary stage) still counts as the model
    class it belongs to: the count is that of the model being fitted, not of its estimate.
    """
    if not isinstance(update, _structure.UpdateSpec):
        raw = parse_update(update)
        update = resolve_update(params, raw, tuple(raw))[1]
    return _structure.num_free_params(params, update)


@partial(_compile.jit, static_argnames=("update", "schedule", "num_sequences"))
def _scaled_gradient(params, ys, inputs, *, update, schedule, num_sequences):
    """``(log p(y), ||g||_*, stats)`` at ``params`` from one E-step (module docstring)."""
    stats, ll = _dispatch.stats(params, ys, schedule, inputs=inputs)
    step = m_step_unchecked(params, stats, update)
    if isinstance(update, _structure.UpdateSpec):
        # Structured fields: the score and the EM step in the free coordinates.
        fixed = jax.lax.stop_gradient(stats)
        theta = _structure.pack(params, update)
        g = jax.grad(
            lambda t: expected_log_joint(
                _structure.unpack(t, params, update), fixed, num_sequences=num_sequences
            )
        )(theta)
        pairing = jnp.sum(g * (_structure.pack(step, update) - theta))
    else:
        grads = score_from_stats(params, stats, update, num_sequences)
        pairing = sum(
            jnp.sum(getattr(grads, n) * (getattr(step, n) - getattr(params, n))) for n in update
        )
    return ll, jnp.sqrt(jnp.maximum(pairing, 0.0)), stats


def _choose_start(params, ys, inputs, raw, schedule, start):
    """Return ``(start params, "params" | "data", filter passes used)`` for ``start``.

    The data start of structured fields is ``initialize``'s estimate projected onto the
    structures (least squares in the free coordinates).
    """
    if start == "params":
        return params, "params", 0
    try:
        data = initialize(params, ys, update=tuple(raw), inputs=inputs)
        data = resolve_update(data, raw, tuple(raw))[0]
    except (ValueError, NotImplementedError):
        if start == "data":
            raise
        return params, "params", 0
    if start == "data":
        return data, "data", 0
    here = float(log_likelihood_at(params, ys, inputs, schedule=schedule))
    there = float(log_likelihood_at(data, ys, inputs, schedule=schedule))
    if math.isfinite(there) and not there <= here:
        return data, "data", 2
    return params, "params", 2


def _observed_steps(ys: jax.Array) -> int:
    """Time steps with at least one observed entry, summed over a batch."""
    observed = ~np.all(np.isnan(np.asarray(ys)), axis=-1)
    return int(observed.sum())


def fit(
    params: LGSSM,
    ys: ArrayLike,
    *,
    update: str | Iterable[str] | Mapping = ("A", "Q"),
    inputs: ArrayLike | None = None,
    tol: float = 1e-8,
    max_iters: int = 10_000,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
    start: str = "auto",
    decrease_rtol: float | None = None,
    rank_tol: float | None = 1e-6,
    max_grad_evals: int = 5000,
) -> tuple[LGSSM, FitInfo]:
    r"""Estimate the fields in ``update`` by maximum likelihood, to convergence.

    SQUAREM-accelerated EM (monotone: extrapolations are accepted only when they are valid
    models that do not lower ``log p(y)``), stopped when the relative rise of the
    log-likelihood over a cycle and the scaled gradient both pass ``tol``; then, where a
    covariance in ``update`` has eigenvalues at most ``rank_tol * lambda_max``, the boundary
    stage: those directions held at zero and L-BFGS on the exact gradient (module
    docstring). Missing entries (NaN), inputs and offsets, batches ``[B, N, Dy]``, both
    schedules and float32/float64 are handled by the E-step and M-step it runs
    (:func:`~jaxssm.e_step`, :func:`~jaxssm.m_step`).

    The result is a local maximum. Where a covariance turns singular the likelihood can have
    several, on different faces (on the SARCOS exercise, -41,519.67 with 5 directions of
    ``Q`` at zero from the data start, -41,224.75 with 6 from the white noise with
    ``start="params"``: the benchmark pages, "Time to the maximum"); fit from several starts
    where that matters (``start="both"`` runs two and keeps the higher).

    Args:
        params: the start, an :class:`~jaxssm.LGSSM`.
        ys: observations ``[N, Dy]`` or a batch ``[B, N, Dy]``.
        update: the fields to learn, as in :func:`~jaxssm.fit_em`: names, or a mapping
            ``{field: "full" | "diagonal" | "scalar" | Linear(f, D)}``. With structures the
            EM stage runs the constrained M-steps, the scaled gradient is taken in the free
            coordinates, the data start is projected onto the structures, and the boundary
            stage (full matrices) is not run.
        inputs: ``u_1..u_N`` ``[N, Du]`` (``[B, N, Du]`` with a batch), or ``None``.
        tol: the relative tolerance of both tests (default ``1e-8``: about 4e-4 nats per
            cycle on the SARCOS exercise, whose log-likelihood is about -4e4).
        max_iters: the budget of E-steps (static: the trace's length).
        method: ``"sequential"`` or ``"parallel"``, the E-step's schedule.
        steady_state: as in :func:`~jaxssm.kalman_filter`.
        form: ``"cov"`` or ``"sqrt"`` (Cholesky factors propagated; every E-step, filter
            pass and gradient of the fit), as in :func:`~jaxssm.kalman_filter`.
        start: where the search starts. ``"params"``: at ``params``. ``"data"``: at
            ``params`` with the fields in ``update`` replaced by :func:`~jaxssm.initialize`'s
            estimate from the data. ``"auto"`` (default): at whichever of the two has the
            higher ``log p(y)`` (two filter passes; ``params`` where ``initialize`` cannot
            handle the model). ``"both"``: a whole ``fit`` from each of the two, keeping the
            one that ends with the higher ``log p(y)`` (the data start where they tie; the
            given start alone where ``initialize`` cannot handle the model). It costs both
            fits and ``FitInfo`` describes the one kept. ``FitInfo.start`` says which was
            used.
        decrease_rtol: the decrease guard's round-off allowance (default ``sqrt(eps)``).
        rank_tol: the relative eigenvalue below which a covariance's direction counts as
            vanishing (default ``1e-6``); ``None`` skips the boundary stage.
        max_grad_evals: the boundary stage's budget of exact gradients (default 5,000: from
            white-noise starts on the SARCOS exercise ``fit`` converged after 1,142 to 2,715;
            the benchmark pages, "Time to the maximum").

    Returns:
        ``(params, info)``: the fitted :class:`~jaxssm.LGSSM` and a :class:`FitInfo`.

    Raises:
        ValueError, TypeError: bad arguments, as :func:`~jaxssm.fit_em`.

    References:
        R. Varadhan and C. Roland (2008), Scand. J. Statistics 35(2) (SQUAREM);
        A. P. Dempster, N. M. Laird and D. B. Rubin (1977) (EM's rate);
        D. C. Liu and J. Nocedal (1989), Math. Programming 45 (L-BFGS).
    """
    raw = parse_update(update)
    absent = tuple(n for n in raw if getattr(params, n, None) is None)
    max_iters = check_int(max_iters, "max_iters", minimum=3)
    max_grad_evals = check_int(max_grad_evals, "max_grad_evals", minimum=1)
    if rank_tol is not None and not (isinstance(rank_tol, (int, float)) and 0 < rank_tol < 1):
        raise ValueError(f"rank_tol must be None or in (0, 1), got {rank_tol!r}")
    tol = check_tol(tol)
    if tol is None:
        raise TypeError("tol must be a number")
    if start not in _STARTS:
        raise ValueError(f"start must be one of {', '.join(map(repr, _STARTS))}, got {start!r}")
    if start == "both":
        again = dict(update=update, inputs=inputs, tol=tol, max_iters=max_iters, method=method)
        again.update(steady_state=steady_state, form=form, decrease_rtol=decrease_rtol)
        again.update(rank_tol=rank_tol, max_grad_evals=max_grad_evals)
        runs = [fit(params, ys, start="params", **again)]
        try:
            runs.insert(0, fit(params, ys, start="data", **again))
        except (ValueError, NotImplementedError):
            pass  # initialize cannot handle the model (the given start ran with these args)

        def final(run):
            ll = float(run[1].log_likelihood)
            return ll if math.isfinite(ll) else -math.inf

        return max(runs, key=final)  # the first of a tie: the data start
    params, ys, inputs, schedule = prologue(
        params,
        ys,
        inputs,
        method=method,
        steady_state=steady_state,
        form=form,
        allow_batch=True,
        update=tuple(raw),
    )
    varying = _model.time_varying_names(params)
    if varying:
        raise ValueError(f"fit needs a time-invariant model, got time-varying {', '.join(varying)}")
    extended = _model.uses_input_sums(params, inputs)
    check_m_step(
        params, tuple(raw), (0 if inputs is None else inputs.shape[-1]) if extended else None
    )
    params, spec = resolve_update(params, raw, absent)
    # Names alone run the programs they always did; structures go as the hashable spec (the
    # boundary stage works on full matrices: it is skipped for them).
    names = spec if spec.structures else spec.names
    if spec.structures:
        rank_tol = None
    params, start_used, start_evals = _choose_start(params, ys, inputs, raw, schedule, start)
    dtype = params.A.dtype
    if decrease_rtol is None:
        decrease_rtol = default_decrease_rtol(dtype)
    num_sequences = ys.shape[0] if ys.ndim == 3 else 1
    static = dict(update=names, num_iters=max_iters, decrease_rtol=float(decrease_rtol))
    # The loop's E-step: the data-only sums once per fit, both steady-state paths.
    plan = _plan.prepare_stats(params, ys, inputs, schedule)
    paths = plan.paths  # the boundary stage's gradients: one path where the data allow
    plan = squarem_plan(plan)

    traces, used, extrapolations, rejected = [], start_evals, 0, 0
    grads_left, boundary_traces = max_grad_evals, []
    round_budget = _BOUNDARY_CHUNK
    status = FitStatus.MAX_ITERS
    ll = grad_norm = stats = boundary = None
    # With the boundary stage on, the EM stage runs in chunks of _CHECK_EVERY E-steps and
    # after each one tests whether vanishing covariance directions should go (module
    # docstring): EM's own tests cannot see the boundary, and near it EM may never pass them.
    chunk = max_iters if rank_tol is None else _CHECK_EVERY
    while True:  # rounds: EM stage, then (where the boundary applies) the boundary stage
        round_tol, rounds, status = tol, 0, FitStatus.MAX_ITERS
        while True:
            budget = min(max_iters - used, chunk)
            if budget < 3:
                break
            params, info = squarem_em(
                params,
                plan,
                jnp.asarray(round_tol, dtype),
                jnp.asarray(budget, jnp.int32),
                **static,
            )
            n = int(info.num_e_steps)
            traces.append(np.asarray(info.log_likelihoods)[:n])
            used += n
            extrapolations += int(info.num_extrapolations)
            rejected += int(info.num_rejected)
            loop_status = int(info.status)
            if loop_status == int(EMStatus.DECREASED):
                ll, grad_norm, stats = _scaled_gradient(
                    params, ys, inputs, update=names, schedule=schedule, num_sequences=num_sequences
                )
                used += 1
                status = FitStatus.DECREASED
                break
            if rank_tol is not None and max_iters - used >= 3:
                # (not when the E-step budget is spent: then fit stops with MAX_ITERS, as
                # without the boundary stage, so that a small max_iters stays a quick run)
                params, dropped, evals, _ = truncate(
                    params,
                    ys,
                    inputs,
                    update=names,
                    schedule=schedule,
                    suspect_tol=SUSPECT_TOL,
                    rtol=float(decrease_rtol),
                )
                used += evals  # filter passes (log p(y) only), counted as E-steps
                if dropped or vanishing(params, spec.names, rank_tol):
                    _, _, stats = _scaled_gradient(
                        params,
                        ys,
                        inputs,
                        update=names,
                        schedule=schedule,
                        num_sequences=num_sequences,
                    )
                    used += 1  # the E-step of the boundary stage's scales
                    status = None  # the boundary stage decides (EM's tests are blind there)
                    break
            if loop_status != int(EMStatus.CONVERGED):
                if used >= max_iters - 2:
                    ll, grad_norm, stats = _scaled_gradient(
                        params,
                        ys,
                        inputs,
                        update=names,
                        schedule=schedule,
                        num_sequences=num_sequences,
                    )
                    used += 1
                    status = FitStatus.MAX_ITERS
                    break
                continue  # the next chunk
            ll, grad_norm, stats = _scaled_gradient(
                params, ys, inputs, update=names, schedule=schedule, num_sequences=num_sequences
            )
            used += 1  # the E-step of the scaled gradient
            if 0.5 * float(grad_norm) ** 2 <= tol * abs(float(ll)):
                status = FitStatus.CONVERGED
                break
            status = FitStatus.STALLED
            rounds += 1
            if rounds > 2:  # the first round, then up to two with tol / 100 (module docstring)
                break
            round_tol = round_tol / 100.0
        if status is not None:
            break
        boundary = boundary_stage(
            params,
            ys,
            inputs,
            stats,
            update=names,
            schedule=schedule,
            rank_tol=float(rank_tol),
            tol=tol,
            max_evals=min(grads_left, round_budget),
            num_steps=_observed_steps(ys),
            num_sequences=num_sequences,
            paths=paths,
        )
        grads_left -= boundary.num_grad_evals
        boundary_traces.append(boundary.log_likelihoods)
        params = boundary.params
        ll = jnp.asarray(boundary.log_likelihood, dtype)
        grad_norm = jnp.asarray(boundary.grad_norm, dtype)
        if boundary.converged:
            status = FitStatus.CONVERGED
            break
        if grads_left <= 0 or max_iters - used < _EM_BURST + _CHECK_EVERY + 3:
            status = FitStatus.MAX_ITERS  # a budget (E-steps or gradients) is spent
            break
        # Not converged within the round: plain EM from the boundary stage's point. EM keeps
        # the held directions at zero and moves the fields it is not frozen in far faster
        # than L-BFGS does (module docstring, "Rounds"); then the EM stage and a new face.
        params, burst, n = em_steps(
            params,
            plan,
            update=names,
            num_iters=_EM_BURST,
            decrease_rtol=float(decrease_rtol),
        )
        traces.append(burst)
        used += n
        stalled = boundary.num_grad_evals < round_budget  # no ascent step found
        round_budget *= _CHUNK_GROWTH
        if stalled and not np.max(burst, initial=-np.inf) - float(ll) > tol * abs(float(ll)):
            status = FitStatus.STALLED  # neither the boundary stage nor EM rises
            ll = jnp.asarray(max(float(ll), float(np.max(burst, initial=-np.inf))), dtype)
            break
    trace = np.full(max_iters, np.nan, dtype=np.dtype(dtype))
    joined = np.concatenate(traces) if traces else np.zeros(0)
    trace[: min(len(joined), max_iters)] = joined[:max_iters]
    k = num_free_params(params, spec)
    num_obs = _observed_steps(ys)
    ll_arr = jnp.asarray(ll)
    info = FitInfo(
        log_likelihood=ll_arr,
        log_likelihoods=jnp.asarray(trace),
        num_e_steps=used,
        status=status,
        grad_norm=grad_norm,
        num_free_params=k,
        aic=2.0 * k - 2.0 * ll_arr,
        bic=k * math.log(max(num_obs, 1)) - 2.0 * ll_arr,
        num_extrapolations=extrapolations,
        num_rejected=rejected,
        num_grad_evals=max_grad_evals - grads_left,
        rank_dropped={} if boundary is None else boundary.rank_dropped,
        boundary_slope=float("nan") if boundary is None else boundary.boundary_slope,
        grad_log_likelihoods=(np.concatenate(boundary_traces) if boundary_traces else np.zeros(0)),
        start=start_used,
    )
    return params, info
