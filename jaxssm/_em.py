"""The EM loop: E-step and M-step iterated inside one compiled ``lax.scan``/``lax.while_loop``."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxssm._estep import _e_step, _log_likelihood
from jaxssm._model import LGSSM, validate_observations, validate_params
from jaxssm._mstep import _m_step, normalize_update
from jaxssm._schedules import resolve

__all__ = ["EMInfo", "fit_em", "fit_em_with_info", "RUNNING", "CONVERGED", "DECREASED"]

#: ``EMInfo.status`` values.
RUNNING, CONVERGED, DECREASED = 0, 1, 2


class EMInfo(NamedTuple):
    """What happened in :func:`fit_em_with_info`.

    Attributes:
        log_likelihoods: ``[num_iters]``; entry ``i`` is ``log p(y | theta_i)`` with
            ``theta_0`` the initial parameters, NaN for iterations that did not run (after
            convergence or a decrease).
        log_likelihood: ``log p(y | params)`` of the returned parameters, a scalar.
        num_iters: the number of E-steps run in the loop (the entries of
            ``log_likelihoods`` that were filled; the rest are NaN), an int32 scalar.
        status: ``0`` ran all ``num_iters`` iterations, ``1`` converged (relative improvement
            below ``tol``), ``2`` stopped because the log-likelihood decreased by more than
            round-off (or became non-finite); an int32 scalar.
        decrease: the size of that decrease, ``log p(y | theta_best) - log p(y | theta_bad)``
            (``inf`` for a non-finite log-likelihood); ``0`` unless ``status == 2``.
    """

    log_likelihoods: jax.Array
    log_likelihood: jax.Array
    num_iters: jax.Array
    status: jax.Array
    decrease: jax.Array


class _State(NamedTuple):
    params: LGSSM  # theta_i, the next to evaluate
    best: LGSSM  # the last evaluated parameters that passed the guard
    best_ll: jax.Array  # their log-likelihood (-inf before the first E-step)
    status: jax.Array
    decrease: jax.Array
    count: jax.Array


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


def _print_progress(iteration, log_likelihood, num_iters):
    print(
        f"EM iteration {int(iteration) + 1}/{num_iters}: "
        f"log-likelihood {float(log_likelihood):.6f}",
        file=sys.stderr,
        flush=True,
    )


def _fit(
    params: LGSSM,
    ys: jax.Array,
    *,
    num_iters: int,
    update: tuple[str, ...],
    tol: float | None,
    method: str,
    decrease_rtol: float,
    callback: Callable | None,
) -> tuple[LGSSM, EMInfo]:
    """Unchecked EM loop; every keyword argument is static."""
    dtype = params.A.dtype
    nan = jnp.array(jnp.nan, dtype)

    def iterate(state: _State, i) -> tuple[_State, jax.Array]:
        stats, ll = _e_step(state.params, ys, method)
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
        new_params = _m_step(state.params, stats, update)
        keep = jax.tree.map(
            lambda a, b: jnp.where(decreased, a, b), state.best, state.params
        )  # the best evaluated parameters
        next_params = jax.tree.map(
            lambda a, b: jnp.where(decreased | converged, a, b), keep, new_params
        )
        status = jnp.where(decreased, DECREASED, jnp.where(converged, CONVERGED, RUNNING))
        new_state = _State(
            params=next_params,
            best=keep,
            best_ll=jnp.where(decreased, state.best_ll, ll),
            status=status.astype(jnp.int32),
            decrease=_decrease_size(decreased, state.best_ll, ll),
            count=state.count + 1,
        )
        return new_state, ll

    init = _State(
        params=params,
        best=params,
        best_ll=jnp.array(-jnp.inf, dtype),
        status=jnp.array(RUNNING, jnp.int32),
        decrease=jnp.zeros((), dtype),
        count=jnp.zeros((), jnp.int32),
    )

    if tol is None:
        # Fixed number of iterations: a scan. Once the guard stops the loop, the remaining
        # iterations skip all work through lax.cond and record NaN.
        def body(state, i):
            return jax.lax.cond(state.status == RUNNING, iterate, lambda s, _: (s, nan), state, i)

        state, trace = jax.lax.scan(body, init, jnp.arange(num_iters))
    else:

        def cond(carry):
            state, _ = carry
            return (state.status == RUNNING) & (state.count < num_iters)

        def loop(carry):
            state, trace = carry
            i = state.count
            state, ll = iterate(state, i)
            return state, trace.at[i].set(ll)

        state, trace = jax.lax.while_loop(
            cond, loop, (init, jnp.full((num_iters,), jnp.nan, dtype))
        )

    # The last M-step's output has not been evaluated yet: evaluate it (one filter pass, no
    # smoother) so that the guard also covers the final step and the returned parameters'
    # log-likelihood is known.
    def finish(state):
        ll = _log_likelihood(state.params, ys, method)
        decreased = _is_decrease(ll, state.best_ll, decrease_rtol)
        params = jax.tree.map(lambda a, b: jnp.where(decreased, a, b), state.best, state.params)
        return (
            params,
            jnp.where(decreased, state.best_ll, ll),
            jnp.where(decreased, DECREASED, RUNNING).astype(jnp.int32),
            _decrease_size(decreased, state.best_ll, ll),
        )

    def stopped(state):
        return state.best, state.best_ll, state.status, state.decrease

    params, ll, status, decrease = jax.lax.cond(state.status == RUNNING, finish, stopped, state)
    return params, EMInfo(trace, ll, state.count, status, decrease)


_fit_jit = jax.jit(
    _fit,
    static_argnames=("num_iters", "update", "tol", "method", "decrease_rtol", "callback"),
)


def fit_em_with_info(
    params: LGSSM,
    ys: ArrayLike,
    *,
    num_iters: int,
    update: str | Iterable[str] = ("A", "Q"),
    tol: float | None = None,
    method: str = "sequential",
    steady_state: bool = True,
    decrease_rtol: float | None = None,
    progress: bool = False,
    callback: Callable[[jax.Array, jax.Array], None] | None = None,
) -> tuple[LGSSM, EMInfo]:
    """:func:`fit_em`, returning an :class:`EMInfo` instead of the bare trace.

    Args and behaviour as :func:`fit_em`.

    Returns:
        ``(params, info)``: the fitted :class:`~jaxssm.LGSSM` and an :class:`EMInfo` with the
        trace ``log_likelihoods [num_iters]``, the returned parameters' ``log_likelihood``, the
        number of iterations run, the stopping ``status`` and the size of a ``decrease``.
    """
    names = normalize_update(update)
    schedule = resolve(method, steady_state)
    if isinstance(num_iters, bool) or not isinstance(num_iters, (int, np.integer)) or num_iters < 1:
        raise ValueError(f"num_iters must be a positive int, got {num_iters!r}")
    if tol is not None:
        if not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise ValueError(f"tol must be None or a finite float >= 0, got {tol!r}")
        tol = float(tol)
    params = validate_params(params)
    ys = validate_observations(ys, params, allow_batch=True)
    if decrease_rtol is None:
        decrease_rtol = default_decrease_rtol(params.A.dtype)
    elif not isinstance(decrease_rtol, (int, float)) or not decrease_rtol >= 0:
        raise ValueError(f"decrease_rtol must be None or a float >= 0, got {decrease_rtol!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable or None, got {type(callback).__name__}")
    if progress:
        # Equal for equal (num_iters, callback), so repeated calls reuse the compiled loop.
        callback = _ProgressCallback(int(num_iters), callback)
    return _fit_jit(
        params,
        ys,
        num_iters=int(num_iters),
        update=names,
        tol=tol,
        method=schedule,
        decrease_rtol=float(decrease_rtol),
        callback=callback,
    )


class _ProgressCallback:
    """Hashable progress printer (equal for equal arguments, so the jit cache is reused)."""

    def __init__(self, num_iters: int, user: Callable | None):
        self.num_iters, self.user = num_iters, user

    def __call__(self, i, ll):
        _print_progress(i, ll, self.num_iters)
        if self.user is not None:
            self.user(i, ll)

    def __eq__(self, other):
        return isinstance(other, _ProgressCallback) and (self.num_iters, self.user) == (
            other.num_iters,
            other.user,
        )

    def __hash__(self):
        return hash((self.num_iters, self.user))


def fit_em(
    params: LGSSM,
    ys: ArrayLike,
    *,
    num_iters: int,
    update: str | Iterable[str] = ("A", "Q"),
    tol: float | None = None,
    method: str = "sequential",
    steady_state: bool = True,
    decrease_rtol: float | None = None,
    progress: bool = False,
    callback: Callable[[jax.Array, jax.Array], None] | None = None,
) -> tuple[LGSSM, jax.Array]:
    """Expectation-maximisation for the parameters in ``update``, compiled as one loop.

    Iteration ``i`` runs the E-step at ``theta_i`` (smoother and statistics, which also give
    ``log p(y | theta_i)``) and the M-step ``theta_{i+1} = m_step(theta_i, stats, update)``.
    The whole loop is one compiled ``lax.scan`` (``tol=None``) or ``lax.while_loop`` (``tol``
    given): no Python dispatch per iteration, and a second call with the same shapes and
    options does not recompile.

    **The trace.** ``log_likelihoods[i] = log p(y | theta_i)`` for ``i = 0..num_iters-1``,
    ``theta_0`` being ``params``. When all iterations run, the returned parameters are
    ``theta_num_iters``: one M-step past the last trace entry, so *their* log-likelihood is not
    in the trace. It is computed once after the loop (one extra filter pass, for the guard
    below) and returned as ``EMInfo.log_likelihood`` by :func:`fit_em_with_info`.

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
    it far more. :func:`fit_em` then issues a ``RuntimeWarning``; :func:`fit_em_with_info`
    reports whether (``status == 2``) and by how much instead.

    For a batch ``ys [B, N, Dy]`` the statistics are pooled (see :func:`~jaxssm.e_step`) and
    the log-likelihoods are sums over sequences.

    Args:
        params: initial :class:`~jaxssm.LGSSM` ``theta_0``.
        ys: observations ``[N, Dy]`` or a batch ``[B, N, Dy]``.
        num_iters: the maximum number of EM iterations (static: it fixes the trace length).
        update: parameter name(s) to learn, any subset of ``"m0", "P0", "A", "Q", "H", "R"``.
        tol: ``None`` (run all iterations) or the relative-improvement threshold above.
        method: ``"sequential"`` or ``"parallel"`` smoother in the E-step.
        steady_state: with ``method="sequential"``, compute the E-step through the
            steady-state fast path (default ``True``; see :func:`~jaxssm.e_step`): each
            iteration costs ``O(N D^2)`` plus the transients instead of ``O(N D^3)``, with
            the same results to round-off and an automatic fallback to the full recursion
            for iterates whose covariances do not converge within the bound.
        decrease_rtol: relative tolerance of the decrease guard (default ``sqrt(eps)``).
        progress: print ``EM iteration i/num_iters: log-likelihood ...`` to stderr after each
            E-step (through :func:`jax.debug.callback`).
        callback: ``callback(iteration, log_likelihood)`` called after each E-step with
            ``log p(y | theta_iteration)`` (through :func:`jax.debug.callback`). With
            ``progress=False`` and ``callback=None`` nothing is traced in. Options are static:
            pass the same function object to reuse the compiled loop.

    Returns:
        ``(params, log_likelihoods)``: the fitted :class:`~jaxssm.LGSSM` and the trace
        ``[num_iters]`` described above.

    Raises:
        ValueError: an unknown ``update`` name, ``method``, or a bad ``num_iters``/``tol``;
            the errors of :func:`~jaxssm.validate_params` for bad parameters or ``ys``.

    References:
        R. H. Shumway and D. S. Stoffer (1982); Z. Ghahramani and G. E. Hinton (1996);
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Section 12.3.3.
    """
    params, info = fit_em_with_info(
        params,
        ys,
        num_iters=num_iters,
        update=update,
        tol=tol,
        method=method,
        steady_state=steady_state,
        decrease_rtol=decrease_rtol,
        progress=progress,
        callback=callback,
    )
    if not isinstance(info.status, jax.core.Tracer) and int(info.status) == DECREASED:
        warnings.warn(
            f"fit_em stopped after {int(info.num_iters)} E-steps: the log-likelihood fell by "
            f"{float(info.decrease):.6g} (more than round-off, or to a non-finite value); "
            "returning the last parameters before the fall. Use fit_em_with_info for details.",
            RuntimeWarning,
            stacklevel=2,
        )
    return params, info.log_likelihoods
