"""EM: the E-step (smoother and statistics) and the EM loop compiled as one program."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxssm._api.entry import prepare
from jaxssm._args import schedule as _schedule
from jaxssm._args.callbacks import guard_callback, run_with_callback
from jaxssm._args.checks import check_int, check_tol
from jaxssm._args.prologue import prologue
from jaxssm._args.results import check_finite_result
from jaxssm._args.structures import parse_update, resolve_update
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.types import LGSSM, EMInfo, EMStatus, ScheduleInfo, SufficientStats
from jaxssm._learn.accelerate import squarem_loop
from jaxssm._learn.mstep import check_m_step, m_step_unchecked
from jaxssm._schedules import diffuse as _diffuse
from jaxssm._schedules import dispatch as _dispatch
from jaxssm._schedules import plan as _plan

__all__ = ["e_step", "fit_em"]

_CONVERGED, _DECREASED = int(EMStatus.CONVERGED), int(EMStatus.DECREASED)
# Inside the loop status 0 means "still running"; a loop that never leaves it ran all
# iterations, which is what EMStatus.MAX_ITERS = 0 reports.
_RUNNING = int(EMStatus.MAX_ITERS)


def e_step(
    params: LGSSM,
    ys: ArrayLike,
    *,
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
) -> tuple[SufficientStats, jax.Array]:
    r"""E-step of EM: RTS smoother, then the sufficient statistics (normalised by N).

    .. math::

        \Sigma = \tfrac1N \sum_{k=1}^N (P_k^s + m_k^s m_k^{sT}), \quad
        \Phi = \tfrac1N \sum_{k=1}^N (P_{k-1}^s + m_{k-1}^s m_{k-1}^{sT}), \quad
        B = \tfrac1N \sum_{k=1}^N y_k m_k^{sT},

        C = \tfrac1N \sum_{k=1}^N (P_k^s G_{k-1}^T + m_k^s m_{k-1}^{sT}), \quad
        D = \tfrac1N \sum_{k=1}^N y_k y_k^T.

    The sums over time are one compiled reduction inside the same compiled function as the
    smoother (matrix products over the time axis for the outer products); a second call with
    the same shapes does not recompile.

    For a batch ``ys [B, N, Dy]`` (B sequences of equal length, independent given the
    parameters) the statistics are pooled: ``Sigma, Phi, B, C, D`` are sums over all
    ``B * N`` steps divided by ``B * N`` (``num_steps = B * N``), ``m0_smoothed`` is the average
    of the sequences' ``E[x_0 | y]`` and ``P0_smoothed = mean_b [P0s_b + (m0s_b - m0_smoothed)
    (m0s_b - m0_smoothed)^T]``, so that :func:`~jaxssm.m_step` returns the joint maximiser over
    all sequences. The returned log-likelihood is then the sum over sequences.

    **Ragged batches.** Sequences of different lengths share one ``[B, N, Dy]`` array by
    padding the shorter ones at the end with all-NaN rows: trailing all-NaN rows end a
    sequence (its sums and ``num_steps`` count its own length). Their ``inputs`` rows there
    are padded with zeros (any finite value: those steps observe nothing, so the values do
    not matter); NaN padding in ``inputs`` is an error.

    Args:
        params: an :class:`~jaxssm.LGSSM` (``theta_n``, the parameters the smoother runs with);
            ``inf`` on the diagonal of a concrete ``P0`` marks diffuse components: the exact
            diffuse smoother's statistics and log-likelihood (sequential schedule).
        ys: observations ``[N, Dy]``, or a batch ``[B, N, Dy]``.
        inputs: ``u_1..u_N`` ``[N, Du]`` (``[B, N, Du]`` with a batch) when ``params`` has
            ``B`` or ``D``. With inputs or any of ``B, b, D, d`` the statistics also hold
            the input sums ``U, XU, XpU, YU`` (:class:`~jaxssm.SufficientStats`).
        method: ``"sequential"`` or ``"parallel"``, as in :func:`~jaxssm.kalman_filter`.
        steady_state: as in :func:`~jaxssm.kalman_filter`. On the steady-state fast path the
            covariance sums are transient sums plus ``count x`` the converged terms and no
            ``[N, D, D]`` array is formed.
        form: ``"cov"`` or ``"sqrt"`` (the smoother on Cholesky factors), as in
            :func:`~jaxssm.kalman_filter`.

    Returns:
        ``(stats, log_likelihood)``: a :class:`~jaxssm.SufficientStats` (``Sigma [D, D]``,
        ``Phi [D, D]``, ``B [Dy, D]``, ``C [D, D]``, ``D [Dy, Dy]``, ``m0_smoothed [D]``,
        ``P0_smoothed [D, D]``, ``num_steps []`` int32) and ``log p(y | params)``, a scalar.

    References:
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Section 12.3.3;
        R. H. Shumway and D. S. Stoffer (1982).
    """
    params, ys, inputs, schedule, index = prepare(
        "e_step",
        params,
        ys,
        inputs,
        method=method,
        steady_state=steady_state,
        form=form,
        allow_batch=True,
    )
    if index:
        return _diffuse.stats(params, ys, inputs, index)
    stats, value = _dispatch.stats(params, ys, schedule, inputs=inputs)
    return stats, check_finite_result(value, params, "e_step")


def _while_loop_guard(reason: str):
    """Return an identity whose reverse-mode derivative raises a ``ValueError`` on ``reason``.

    Applied to the outputs of a ``while_loop`` (``fit_em(tol=...)``, SQUAREM): the backward
    pass reaches it before the loop, so ``jax.grad`` stops with this message instead of
    JAX's generic one about ``while_loop``. On concrete values (no transformation) it
    returns its argument untouched.
    """

    def guard(x):
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x)):
            return identity(x)
        return x

    @jax.custom_vjp
    def identity(x):
        return x

    def fwd(x):
        return x, None

    def bwd(_, g):
        raise ValueError(
            f"fit_em cannot be differentiated in reverse mode (jax.grad, jax.vjp) with {reason}: "
            "the loop is then a lax.while_loop (it stops when converged), which reverse-mode "
            "autodiff does not support. Pass tol=None and accelerate=None to differentiate "
            "through a fixed num_iters iterations (a lax.scan)"
        )

    identity.defvjp(fwd, bwd)
    return guard


class _State(NamedTuple):
    params: LGSSM  # theta_i, the next to evaluate
    best: LGSSM  # the last evaluated parameters that passed the guard
    best_ll: jax.Array  # their log-likelihood (-inf before the first E-step)
    status: jax.Array
    decrease: jax.Array
    count: jax.Array
    schedule: ScheduleInfo  # of the last E-step


def default_decrease_rtol(dtype) -> float:
    """``sqrt(eps)`` of ``dtype``: 1.5e-8 for float64, 3.5e-4 for float32."""
    return float(np.sqrt(np.finfo(dtype).eps))


def _is_decrease(ll, best_ll, rtol):
    """Return whether ``ll < best_ll - rtol |best_ll|`` or ``ll`` is not finite."""
    floor = jnp.where(jnp.isfinite(best_ll), best_ll - rtol * jnp.abs(best_ll), -jnp.inf)
    return ~(ll >= floor) | ~jnp.isfinite(ll)


def _decrease_size(decreased, best_ll, ll):
    """``best_ll - ll`` for a decrease (``inf`` if ``ll`` is not finite), else 0."""
    size = jnp.where(jnp.isfinite(ll), best_ll - ll, jnp.inf)
    return jnp.where(decreased, size, jnp.zeros_like(ll))


def _fit(
    params: LGSSM,
    plan: _plan.StatsPlan,
    resume: tuple[_State, jax.Array] | None,
    *,
    num_iters: int,
    update: tuple[str, ...],
    tol: float | None,
    decrease_rtol: float,
    callback: Callable | None,
) -> tuple[_State, jax.Array]:
    """Unchecked EM loop; every keyword argument is static. Returns the state and the trace.

    Each E-step is :func:`jaxssm._schedules.plan.stats_step` of ``plan``. On a plan that
    holds the fast path alone, an iteration whose E-step it does not cover
    (``info.fast_path`` false) stops the loop before it: the state is left as it was but for
    its ``schedule`` info, ``count`` is that iteration. ``resume=(state, trace)`` then starts
    a loop at iteration ``state.count`` from that state and trace.
    """
    dtype = params.A.dtype
    nan = jnp.array(jnp.nan, dtype)
    # Whether an E-step's result may not be the answer (static): the loop then also stops
    # where it is not.
    may_stop = plan.paths is _dispatch.Paths.FAST

    def m_update(state: _State, stats, ll, i) -> _State:
        """Run the guard, then the M-step (iterations ``i < num_iters``)."""
        if callback is not None:
            jax.debug.callback(callback, i, ll, ordered=True)
        decreased = _is_decrease(ll, state.best_ll, decrease_rtol)
        if tol is None:
            converged = jnp.array(False)
        else:  # never at the first E-step, where best_ll = -inf
            converged = (
                ~decreased
                & jnp.isfinite(state.best_ll)
                & (ll - state.best_ll <= tol * jnp.abs(state.best_ll))
            )
        new_params = m_step_unchecked(state.params, stats, update)
        keep = jax.tree.map(
            lambda a, b: jnp.where(decreased, a, b), state.best, state.params
        )  # the best evaluated parameters
        next_params = jax.tree.map(
            lambda a, b: jnp.where(decreased | converged, a, b), keep, new_params
        )
        status = jnp.where(decreased, _DECREASED, jnp.where(converged, _CONVERGED, _RUNNING))
        return state._replace(
            params=next_params,
            best=keep,
            best_ll=jnp.where(decreased, state.best_ll, ll),
            status=status.astype(jnp.int32),
            decrease=_decrease_size(decreased, state.best_ll, ll),
            count=state.count + 1,
        )

    def final_check(state: _State, stats, ll, i) -> _State:
        """Check the last M-step's output ``theta_num_iters`` with the guard (after the loop).

        The loop's own E-step evaluates it (its log-likelihood), so the compiled program holds
        one covariance recursion, not a second one for a separate likelihood pass.
        """
        decreased = _is_decrease(ll, state.best_ll, decrease_rtol)
        best = jax.tree.map(lambda a, b: jnp.where(decreased, a, b), state.best, state.params)
        return state._replace(
            params=best,
            best=best,
            best_ll=jnp.where(decreased, state.best_ll, ll),
            status=jnp.where(decreased, _DECREASED, _RUNNING).astype(jnp.int32),
            decrease=_decrease_size(decreased, state.best_ll, ll),
        )

    def update_state(state: _State, stats, ll, i) -> _State:
        return jax.lax.cond(i < num_iters, m_update, final_check, state, stats, ll, i)

    def iterate(state: _State, i) -> tuple[_State, jax.Array]:
        """E-step at ``theta_i``; then the M-step (``i < num_iters``) or the final check."""
        (stats, ll), info = _plan.stats_step(plan, state.params)
        state = state._replace(schedule=info)
        if not may_stop:
            return update_state(state, stats, ll, i), ll
        state = jax.lax.cond(info.fast_path, update_state, lambda s, *_: s, state, stats, ll, i)
        return state, jnp.where(info.fast_path, ll, nan)

    def running(state: _State) -> jax.Array:
        go = state.status == _RUNNING
        return go & state.schedule.fast_path if may_stop else go

    if resume is None:
        zero = jnp.zeros((), jnp.int32)
        init = _State(
            params=params,
            best=params,
            best_ll=jnp.array(-jnp.inf, dtype),
            status=jnp.array(_RUNNING, jnp.int32),
            decrease=jnp.zeros((), dtype),
            count=zero,
            # A placeholder until the first E-step (fast_path true: nothing stopped yet).
            schedule=ScheduleInfo(jnp.array(True), zero, zero, zero),
        )
        trace = jnp.full((num_iters,), jnp.nan, dtype)
    else:
        init, trace = resume
    first = init.count  # the first iteration to run

    # num_iters + 1 passes: iterations 0..num_iters-1, then the evaluation of the last M-step's
    # output (one more E-step instead of a separately compiled likelihood pass). A stop by the
    # guard or by tol skips the passes after it.
    if tol is None:
        # Fixed number of iterations: a scan. Once the guard stops the loop, the remaining
        # iterations skip all work through lax.cond and record NaN.
        steps = jnp.arange(num_iters + 1)
        start = first.astype(steps.dtype)

        def body(state, i):
            run = running(state) & (i >= start)
            return jax.lax.cond(run, iterate, lambda s, _: (s, nan), state, i)

        state, new = jax.lax.scan(body, init, steps)
        trace = jnp.where(steps[:num_iters] < start, trace, new[:num_iters])
    else:

        def cond(carry):
            state, _, i = carry
            return running(state) & (i <= num_iters)

        def loop(carry):
            state, trace, i = carry
            state, ll = iterate(state, i)
            trace = jnp.where(jnp.arange(num_iters, dtype=jnp.int32) == i, ll, trace)
            return state, trace, i + 1

        state, trace, _ = jax.lax.while_loop(cond, loop, (init, trace, first))
    return state, trace


_STATIC = ("num_iters", "update", "tol", "decrease_rtol", "callback")

_fit_jit = _compile.jit(_fit, static_argnames=_STATIC)


def squarem_plan(plan: _plan.StatsPlan) -> _plan.StatsPlan:
    """Return the E-step plan of the SQUAREM loop made from a ``prepare_stats`` plan.

    Both steady-state paths where the plan holds the fast path alone: an extrapolated point
    may be a model whose covariances do not settle within the bound. The data-only sums stay
    computed once.
    """
    return _plan.with_fallback(plan) if plan.paths is _dispatch.Paths.FAST else plan


def _squarem(params, plan, tol, budget=None, *, update, num_iters, decrease_rtol):
    """SQUAREM over the plan's E-step and the closed-form M-step (unchecked)."""

    def em_map(p):
        (stats, ll), _ = _plan.stats_step(plan, p)
        return m_step_unchecked(p, stats, update), ll

    return squarem_loop(
        em_map,
        params,
        update=update,
        max_iters=num_iters,
        tol=tol,
        decrease_rtol=decrease_rtol,
        budget=budget,
    )


#: :func:`jaxssm._learn.accelerate.squarem_loop` over a :func:`squarem_plan`'s E-step, jitted:
#: ``(params, plan, tol, budget=None, *, update, num_iters, decrease_rtol) -> (params, info)``
#: (``tol`` and ``budget`` dynamic, so callers that resume the loop reuse its program).
squarem_em = _compile.jit(_squarem, static_argnames=("update", "num_iters", "decrease_rtol"))


def _run_loop(params: LGSSM, plan: _plan.StatsPlan, **static) -> tuple[_State, jax.Array]:
    """Run the compiled EM loop over ``plan`` (eager; ``static`` as :func:`_fit`'s).

    Where a fast-path-only plan does not cover an iteration's E-step, the loop goes on from
    that iteration with both paths.
    """
    state, trace = _fit_jit(params, plan, None, **static)
    if plan.paths is _dispatch.Paths.FAST and not bool(state.schedule.fast_path):
        state, trace = _fit_jit(params, _plan.with_fallback(plan), (state, trace), **static)
    return state, trace


def em_steps(
    params: LGSSM, plan: _plan.StatsPlan, *, update, num_iters: int, decrease_rtol: float
) -> tuple[LGSSM, np.ndarray, int]:
    """``num_iters`` plain EM iterations over ``plan`` (unchecked, eager).

    The compiled loop of :func:`fit_em` without ``tol`` (the decrease guard on), resumed with
    both paths where a fast-path-only plan does not cover an E-step. Returns
    ``(best params, log-likelihoods of the E-steps run, E-steps run)``.
    """
    state, trace = _run_loop(
        params,
        plan,
        num_iters=num_iters,
        update=update,
        tol=None,
        decrease_rtol=decrease_rtol,
        callback=None,
    )
    trace = np.asarray(trace)
    # count iterations, each an E-step, plus the E-step that evaluates the last M-step
    return state.best, trace[np.isfinite(trace)], int(state.count) + 1


def fit_em(
    params: LGSSM,
    ys: ArrayLike,
    *,
    num_iters: int,
    inputs: ArrayLike | None = None,
    update: str | Iterable[str] = ("A", "Q"),
    tol: float | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
    decrease_rtol: float | None = None,
    progress: bool = False,
    callback: Callable[[jax.Array, jax.Array], None] | None = None,
    accelerate: str | None = None,
) -> tuple[LGSSM, EMInfo]:
    """Expectation-maximisation for the parameters in ``update``, compiled as one loop.

    Iteration ``i`` runs the E-step at ``theta_i`` (smoother and statistics, which also give
    ``log p(y | theta_i)``) and the M-step ``theta_{i+1} = m_step(theta_i, stats, update)``.
    The whole loop is one compiled ``lax.scan`` (``tol=None``) or ``lax.while_loop`` (``tol``
    given): no Python dispatch per iteration, and a second call with the same shapes and
    options does not recompile.

    **What is compiled.** On the steady-state schedule (the default for ``N >= 2048``) the
    E-step has a fast path and a gap-aware fallback (missing entries, or covariances that
    have not settled within the transient bound). Called on concrete arrays, ``fit_em``
    looks at the data first and compiles one of them: the fallback alone when ``ys`` has a
    NaN, else the fast path alone. In the rare case that an iteration's covariances do not
    settle, that loop stops before the iteration and ``fit_em`` resumes it from there in a
    second program that holds both paths (compiled only then); the result is that of one
    uninterrupted loop, and a callback sees each iteration once. Under ``jit``, ``vmap`` or
    ``grad`` (traced arrays) both paths are in the one program and the choice is made on
    device. ``EMInfo.schedule`` (a :class:`~jaxssm.ScheduleInfo`) says which path computed
    the last E-step and where its covariances settled.

    **The trace.** ``log_likelihoods[i] = log p(y | theta_i)`` for ``i = 0..num_iters-1``,
    ``theta_0`` being ``params``. When all iterations run, the returned parameters are
    ``theta_num_iters``: one M-step past the last trace entry, so *their* log-likelihood is not
    in the trace. It is computed by one more pass of the loop's E-step after the last M-step
    (for the guard below) and returned as ``EMInfo.log_likelihood``.

    **Stopping early** (``tol``). When ``log p(y | theta_i) - log p(y | theta_{i-1}) <= tol *
    |log p(y | theta_{i-1})|`` the loop stops and returns ``theta_i`` (whose log-likelihood is
    ``log_likelihoods[i]``); the entries after ``i`` are NaN.

    **Decrease guard.** EM cannot lower ``log p(y)``; a drop beyond round-off means the
    statistics or the M-step broke down (a singular ``Phi`` or ``Sigma``, a non-positive-
    definite covariance, lost precision in float32). When ``log p(y | theta_i) <
    log p(y | theta_{i-1}) - decrease_rtol * |log p(y | theta_{i-1})|``, or it is not finite,
    the loop stops and returns ``theta_{i-1}``; ``log_likelihoods[i]`` holds the offending value
    and later entries are NaN. The same check is applied to the final parameters. The default
    ``decrease_rtol`` is ``sqrt(eps)`` of the dtype (1.5e-8 in float64, 3.5e-4 in float32): the
    log-likelihood is a sum of N per-step terms, each computed from covariances that carry a
    relative error of a modest multiple of ``eps``, so its accumulated relative error is well
    below ``sqrt(eps)`` for the series this library targets, while a genuine breakdown moves
    it far more. ``EMInfo.status`` then says ``EMStatus.DECREASED`` and ``EMInfo.decrease``
    by how much.

    For a batch ``ys [B, N, Dy]`` the statistics are pooled (see :func:`~jaxssm.e_step`) and
    the log-likelihoods are sums over sequences; a ragged batch is padded as there (NaN rows
    at the end of ``ys``, zeros in ``inputs``).

    **Acceleration** (``accelerate="squarem"``). The same E-step and M-step, extrapolated by
    SQUAREM (Varadhan and Roland 2008; :func:`jaxssm._learn.accelerate.squarem_loop`): cycles
    of two EM steps and one extrapolated point, the covariances extrapolated in
    matrix-logarithm coordinates, an extrapolated point kept only when it is a valid model
    whose log-likelihood is not below the cycle's best, so the finite entries of the trace
    never fall. ``num_iters`` is then the budget of E-steps (at least 3), the trace holds one
    entry per E-step (NaN for a rejected extrapolation), ``tol`` applies to the rise over a
    cycle, the returned parameters are the best evaluated point (their log-likelihood is in
    the trace) and ``EMInfo.schedule`` is ``None``. ``progress`` and ``callback`` are not
    available there. :func:`~jaxssm.fit` runs this loop to convergence.

    Args:
        params: initial :class:`~jaxssm.LGSSM` ``theta_0``. With ``inf`` on the diagonal of
            a concrete ``P0`` (diffuse components) the E-steps are exact diffuse ones
            (sequential schedule) and ``m0``, ``P0`` are held fixed (an error in ``update``).
        ys: observations ``[N, Dy]`` or a batch ``[B, N, Dy]``.
        num_iters: the maximum number of EM iterations, a Python int (static: it fixes the
            trace length; under ``jax.jit`` mark it ``static_argnames`` or close over it).
        inputs: ``u_1..u_N`` ``[N, Du]`` (``[B, N, Du]`` with a batch), as in
            :func:`~jaxssm.e_step`.
        update: parameter name(s) to learn, any subset of ``"m0", "P0", "A", "Q", "H", "R",
            "B", "b", "D", "d"``. ``(A, B, b)`` and ``(H, D, d)`` are joint regressions (any
            subset, the others held at their values exactly); an absent ``B, b, D`` or ``d``
            named here starts at zero. A regression with a time-varying field is not updated
            (a ``ValueError``; fixed time-varying fields on the other side are fine). Or a
            mapping ``{field: structure}`` (``"full"``, ``"diagonal"``, ``"scalar"``,
            :class:`~jaxssm.Linear`), with the constrained M-steps of
            :func:`~jaxssm.m_step`; every iterate has the structures (SQUAREM extrapolates
            in their free coordinates).
        tol: ``None`` (run all iterations) or the relative-improvement threshold above.
            With ``tol`` (or ``accelerate``) the loop is a ``lax.while_loop``, which
            ``jax.grad`` cannot differentiate (a ``ValueError`` that says so; forward mode,
            ``jax.jvp``, is not available either); with ``tol=None`` it is a ``lax.scan``.
        method: the E-step's schedule, ``"sequential"`` or ``"parallel"``, as in
            :func:`~jaxssm.kalman_filter`.
        steady_state: as in :func:`~jaxssm.kalman_filter`; on the default steady-state fast
            path an iteration costs ``O(N D^2)`` plus the transients instead of ``O(N D^3)``.
        form: the E-step's form, ``"cov"`` or ``"sqrt"`` (Cholesky factors; the full
            recursion of ``method``, or with ``steady_state=True`` the steady-state fast
            path with its covariance side on factors), as in :func:`~jaxssm.kalman_filter`.
        decrease_rtol: relative tolerance of the decrease guard (default ``sqrt(eps)``).
        progress: print ``EM iteration i/num_iters: log-likelihood ...`` to stderr after each
            E-step (through :func:`jax.debug.callback`).
        callback: ``callback(iteration, log_likelihood)`` called after each E-step with
            ``log p(y | theta_iteration)`` (through :func:`jax.debug.callback`). With
            ``progress=False`` and ``callback=None`` nothing is traced in. Options are static:
            pass the same function object to reuse the compiled loop.
        accelerate: ``None`` (plain EM) or ``"squarem"`` (see above).

    Returns:
        ``(params, info)``: the fitted :class:`~jaxssm.LGSSM` and an :class:`~jaxssm.EMInfo`
        with the trace ``log_likelihoods [num_iters]``, the returned parameters'
        ``log_likelihood``, the number of iterations run, the stopping ``status``
        (:class:`~jaxssm.EMStatus`), the size of a ``decrease`` and the last E-step's
        ``schedule`` (:class:`~jaxssm.ScheduleInfo`).

    Raises:
        ValueError: an unknown, repeated or empty ``update``, a bad ``method``, a non-positive
            ``num_iters``, a negative or non-finite ``tol``; the errors of
            :func:`~jaxssm.validate_params` for bad parameters or ``ys``.
        TypeError: arguments of the wrong type (``num_iters`` not an int, ``tol`` not a
            number, ``callback`` not callable).

    References:
        R. H. Shumway and D. S. Stoffer (1982); Z. Ghahramani and G. E. Hinton (1996);
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Section 12.3.3.
    """
    names = parse_update(update)
    absent = tuple(n for n in names if getattr(params, n, None) is None)
    schedule = _schedule.resolve(method, steady_state, form)
    num_iters = check_int(num_iters, "num_iters")
    tol = check_tol(tol)
    if accelerate not in (None, "squarem"):
        raise ValueError(f"accelerate must be None or 'squarem', got {accelerate!r}")
    if accelerate is not None and num_iters < 3:
        raise ValueError(
            f"num_iters must be at least 3 with accelerate={accelerate!r} (one cycle of two EM "
            f"steps and one extrapolation), got {num_iters}"
        )
    if accelerate is not None and (progress or callback is not None):
        raise ValueError(
            f"progress and callback are not available with accelerate={accelerate!r}; "
            "the trace in EMInfo.log_likelihoods has one entry per E-step"
        )
    params, ys, inputs, _ = prologue(
        params,
        ys,
        inputs,
        schedule=schedule,
        allow_batch=True,
        update=tuple(names),
        allow_diffuse=True,
    )
    if diffuse := _diffuse.diffuse_index(params.P0):
        _diffuse.check_em(schedule, names, "fit_em")
        _diffuse.log_likelihood(params, ys, inputs, diffuse)  # identified by the data
    extended = _model.uses_input_sums(params, inputs)
    check_m_step(
        params, tuple(names), (0 if inputs is None else inputs.shape[-1]) if extended else None
    )
    params, spec = resolve_update(params, names, absent)
    names = spec if spec.structures else spec.names
    plan = _plan.prepare_stats(params, ys, inputs, schedule, diffuse)
    if decrease_rtol is None:
        decrease_rtol = default_decrease_rtol(params.A.dtype)
    else:
        decrease_rtol = check_tol(decrease_rtol, "decrease_rtol")
    if accelerate is not None:
        best, sq = squarem_em(
            params,
            squarem_plan(plan),
            tol,
            update=names,
            num_iters=num_iters,
            decrease_rtol=float(decrease_rtol),
        )
        info = EMInfo(sq.log_likelihoods, sq.log_likelihood, sq.num_e_steps, sq.status, sq.decrease)
        return _while_loop_guard(f"accelerate={accelerate!r}")((best, info))
    # Equal for equal (num_iters, callback, progress), so repeated calls reuse the loop.
    callback = guard_callback("EM iteration", num_iters, callback, progress)
    static = dict(
        num_iters=num_iters,
        update=names,
        tol=tol,
        decrease_rtol=float(decrease_rtol),
        callback=callback,
    )

    def run():
        state, trace = _run_loop(params, plan, **static)
        info = EMInfo(
            trace, state.best_ll, state.count, state.status, state.decrease, state.schedule
        )
        if tol is not None:
            return _while_loop_guard(f"tol={tol!r}")((state.best, info))
        return state.best, info

    return run_with_callback(callback, run)
