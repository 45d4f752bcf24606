r"""SQUAREM: safeguarded squared extrapolation of the EM map, compiled as one loop.

EM's map :math:`M: \theta_n \mapsto \theta_{n+1}` converges linearly with a rate equal to the
largest fraction of missing information, :math:`\rho = \lambda_{\max}(I - I_c^{-1} I_{obs})`
(Dempster, Laird & Rubin 1977). Near a maximum where a covariance turns singular, the rate
tends to one: in a direction :math:`v` with :math:`v^T Q v \to 0` the posterior pins
:math:`v^T x_k = v^T A x_{k-1}`, the statistics then satisfy :math:`v^T C = v^T A \Phi`, and
the M-step hands back almost the same row :math:`v^T A` (and shrinks :math:`v^T Q v` by a
factor close to one). Plain EM then crawls for tens of thousands of iterations.

SQUAREM (Varadhan & Roland 2008, scheme SqS3) treats the crawl as a nearly linear sequence
and extrapolates it. From :math:`\theta_0`, with :math:`\theta_1 = M(\theta_0)`,
:math:`\theta_2 = M(\theta_1)`, :math:`r = \theta_1 - \theta_0`,
:math:`v = \theta_2 - 2\theta_1 + \theta_0`:

.. math::

    \alpha = -\|r\| / \|v\| \ (\text{clamped to } \alpha \le -1), \qquad
    \theta' = \theta_0 - 2\alpha r + \alpha^2 v,

then one stabilising EM step :math:`M(\theta')` starts the next cycle. ``alpha = -1``
gives :math:`\theta' = \theta_2`, plain EM.

**Coordinates.** The extrapolation runs on the fields being learned, with each covariance
(``Q``, ``R``, ``P0``) in matrix-logarithm coordinates, :math:`\log Q = V \log(\Lambda)
V^T`, and mapped back by the matrix exponential. The extrapolated covariance is then
positive definite by construction, and a small eigenvalue that EM shrinks by a steady
factor per step (a straight line in :math:`\log\lambda`) is extrapolated exactly, where
in the matrices' own entries the extrapolation overshoots into negative eigenvalues and
is rejected. Eigenvalues are floored at :math:`\epsilon^2 \lambda_{\max}` before the
logarithm.

**Safeguards (monotone).** The extrapolated point is accepted only when it is a valid model
(every learned covariance has a finite Cholesky factor and every field is finite, tested
in the compiled program) and its log-likelihood, which its own E-step computes, is not below
that of :math:`\theta_1`, the best point of the cycle so far. Otherwise the step is pulled
halfway back to plain EM, :math:`\alpha \leftarrow (\alpha - 1)/2`, and tried again (up to
``max_backtracks`` times); failing those the cycle ends with the plain EM step
:math:`\theta_2`. So the accepted points' log-likelihoods never fall
(beyond EM's own round-off, which the decrease guard bounds as in
:func:`~jaxssm.fit_em`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxssm._base.structure import as_spec, field_from_unconstrained, field_to_unconstrained
from jaxssm._base.types import LGSSM, EMStatus

__all__ = ["SquaremInfo", "squarem_loop", "COVARIANCES"]

#: The covariance fields, extrapolated in matrix-logarithm coordinates.
COVARIANCES = ("P0", "Q", "R")

_RUNNING, _CONVERGED, _DECREASED = (
    int(EMStatus.MAX_ITERS),
    int(EMStatus.CONVERGED),
    int(EMStatus.DECREASED),
)


class SquaremInfo(NamedTuple):
    """What happened in :func:`squarem_loop`.

    Attributes:
        log_likelihoods: ``[max_iters]``; entry ``i`` is ``log p(y | .)`` at the point the
            ``i``-th E-step evaluated (EM iterates and accepted extrapolations); NaN for a
            rejected extrapolation and for E-steps not run. Its finite entries never fall
            beyond round-off.
        log_likelihood: that of the returned parameters (the best evaluated point), a scalar.
        num_e_steps: the number of E-steps run, an int32 scalar.
        status: an :class:`~jaxssm.EMStatus` value, an int32 scalar.
        decrease: the size of an EM step's decrease when ``status`` is ``DECREASED``, else 0.
        num_extrapolations: the extrapolated points evaluated, an int32 scalar.
        num_rejected: those rejected (invalid model or lower log-likelihood), int32.
    """

    log_likelihoods: jax.Array
    log_likelihood: jax.Array
    num_e_steps: jax.Array
    status: jax.Array
    decrease: jax.Array
    num_extrapolations: jax.Array
    num_rejected: jax.Array


def _logm(S: jax.Array) -> jax.Array:
    """Matrix logarithm of a symmetric PSD matrix (eigenvalues floored at ``eps^2 max``)."""
    w, V = jnp.linalg.eigh(0.5 * (S + S.T))
    eps = jnp.finfo(S.dtype).eps
    floor = eps * eps * jnp.maximum(jnp.max(jnp.abs(w)), jnp.finfo(S.dtype).tiny)
    return (V * jnp.log(jnp.maximum(w, floor))[None, :]) @ V.T


def _expm(L: jax.Array) -> jax.Array:
    """Matrix exponential of a symmetric matrix, symmetrised."""
    w, V = jnp.linalg.eigh(0.5 * (L + L.T))
    S = (V * jnp.exp(w)[None, :]) @ V.T
    return 0.5 * (S + S.T)


def to_coordinates(params: LGSSM, update) -> dict:
    """Return the fields in ``update`` in extrapolation coordinates (covariances by matrix log).

    A structured field (``update`` an :class:`~jaxssm._base.structure.UpdateSpec`) is
    extrapolated in its free coordinates: ``beta`` of a linear structure (the structure is
    affine, so the extrapolated point has it, fixed entries exactly), ``log q`` of a
    covariance pattern (positive variances, zero off-diagonal entries exactly).
    """
    spec = as_spec(update)
    out = {}
    for n in spec.names:
        x, s = getattr(params, n), spec.structure(n)
        if s is not None:
            out[n] = field_to_unconstrained(x, s)
        else:
            out[n] = _logm(x) if n in COVARIANCES else x
    return out


def from_coordinates(params: LGSSM, coords: dict, update=None) -> LGSSM:
    """``params`` with the fields in ``coords`` mapped back from extrapolation coordinates."""
    spec = as_spec(tuple(coords) if update is None else update)
    new = {}
    for n, c in coords.items():
        s = spec.structure(n)
        if s is not None:
            new[n] = field_from_unconstrained(c, s, getattr(params, n).dtype)
        else:
            new[n] = _expm(c) if n in COVARIANCES else c
    return params._replace(**new)


def is_valid(params: LGSSM, update) -> jax.Array:
    """Whether the learned fields are finite and the learned covariances positive definite.

    A covariance with a structure (a diagonal pattern, whose fixed variances may be 0) needs
    finite, non-negative variances only: its free ones are ``exp`` of the coordinates.
    """
    spec = as_spec(update)
    ok = jnp.array(True)
    for n in spec.names:
        x = getattr(params, n)
        ok &= jnp.all(jnp.isfinite(x))
        if n in COVARIANCES and spec.structure(n) is not None:
            ok &= jnp.all(jnp.diagonal(x) >= 0)
        elif n in COVARIANCES:
            ok &= jnp.all(jnp.isfinite(jnp.linalg.cholesky(x)))
    return ok


def _sq_norm(tree: dict) -> jax.Array:
    return sum(jnp.sum(x * x) for x in jax.tree.leaves(tree))


class _State(NamedTuple):
    params: LGSSM  # theta_0 of the next cycle (not yet evaluated)
    best: LGSSM
    best_ll: jax.Array
    trace: jax.Array
    count: jax.Array
    status: jax.Array
    decrease: jax.Array
    num_extrapolations: jax.Array
    num_rejected: jax.Array


class _Try(NamedTuple):
    """One extrapolation attempt of a cycle (and the backtracks after it)."""

    alpha: jax.Array
    tries: jax.Array
    accept: jax.Array
    theta_e: LGSSM  # the extrapolated point
    theta3: LGSSM  # M(theta_e)
    ll_e: jax.Array
    trace: jax.Array
    count: jax.Array
    evaluated: jax.Array
    rejected: jax.Array


def squarem_loop(
    em_map: Callable[[LGSSM], tuple[LGSSM, jax.Array]],
    params: LGSSM,
    *,
    update: tuple[str, ...],
    max_iters: int,
    tol: float | jax.Array | None = None,
    decrease_rtol: float = 1.5e-8,
    budget: int | jax.Array | None = None,
    max_backtracks: int = 2,
) -> tuple[LGSSM, SquaremInfo]:
    r"""SQUAREM on ``em_map`` as one ``lax.while_loop`` (traceable; call it under ``jit``).

    Each cycle spends three E-steps: :math:`\theta_0`, :math:`\theta_1 = M(\theta_0)` and the
    extrapolated :math:`\theta'` (skipped, and not counted, when :math:`\theta'` is not a
    valid model), plus one per backtrack; the next cycle starts at :math:`M(\theta')` when
    :math:`\theta'` is accepted, at :math:`\theta_2 = M(\theta_1)` otherwise (module
    docstring).

    **Limits.** One steplength serves every coordinate. Where the slow modes
    have very different rates, as at a maximum on the boundary with several vanishing
    eigenvalues of ``Q``, the step is too long for the fast coordinates and too short for
    :math:`\log\lambda_{\min}`: extrapolations are then rejected or short, and the loop's
    last approach is again sublinear (faster than plain EM, but not by orders of magnitude).

    Stopping: after ``max_iters`` E-steps (rounded down to whole cycles: the loop runs a
    cycle only when three E-steps remain), when a cycle raises the best log-likelihood by at
    most ``tol * |previous best|`` (``EMStatus.CONVERGED``), or when an EM step lowers it by
    more than ``decrease_rtol * |best|`` or makes it non-finite (``EMStatus.DECREASED``; the
    best point before is returned).

    Args:
        em_map: ``theta -> (M(theta), log p(y | theta))``: one E-step and M-step (traceable).
        params: the start :math:`\theta_0`, an :class:`~jaxssm.LGSSM`.
        update: the names of the fields ``em_map`` learns (static), or an
            :class:`~jaxssm._base.structure.UpdateSpec` (structured fields are extrapolated
            in their free coordinates); the others must be fixed by ``em_map``.
        max_iters: the budget of E-steps (static: the trace's length), at least 3.
        tol: the relative improvement per cycle below which the loop stops, or ``None``.
        decrease_rtol: the round-off allowance of the decrease guard.
        budget: a smaller E-step budget than ``max_iters``, possibly traced (a caller that
            resumes a loop reuses its compiled program); ``None``: ``max_iters``.
        max_backtracks: after a rejected extrapolation, how many more to try, each with
            the step pulled halfway back to plain EM, ``alpha <- (alpha - 1) / 2``.

    Returns:
        ``(params, info)``: the best evaluated :class:`~jaxssm.LGSSM` and a
        :class:`SquaremInfo`.

    References:
        R. Varadhan and C. Roland (2008), "Simple and globally convergent methods for
        accelerating the convergence of any EM algorithm", Scand. J. Statistics 35(2).
    """
    if max_iters < 3:
        raise ValueError(f"max_iters must be at least 3 (one cycle), got {max_iters}")
    spec = as_spec(update)
    update = spec.names
    dtype = params.A.dtype
    nan = jnp.array(jnp.nan, dtype)
    positions = jnp.arange(max_iters, dtype=jnp.int32)
    limit = max_iters if budget is None else jnp.minimum(jnp.asarray(budget, jnp.int32), max_iters)

    def record(trace, i, value):
        return jnp.where(positions == i, value, trace)

    def is_drop(ll, ref):
        floor = jnp.where(jnp.isfinite(ref), ref - decrease_rtol * jnp.abs(ref), -jnp.inf)
        return ~(ll >= floor) | ~jnp.isfinite(ll)

    def select(flag, a, b):
        return jax.tree.map(lambda x, y: jnp.where(flag, x, y), a, b)

    def cycle(s: _State) -> _State:
        theta0 = s.params
        theta1, ll0 = em_map(theta0)
        drop0 = is_drop(ll0, s.best_ll)
        theta2, ll1 = em_map(theta1)
        drop1 = is_drop(ll1, jnp.maximum(ll0, s.best_ll))
        trace = record(record(s.trace, s.count, ll0), s.count + 1, ll1)

        c0, c1, c2 = (to_coordinates(t, spec) for t in (theta0, theta1, theta2))
        r = jax.tree.map(jnp.subtract, c1, c0)
        v = jax.tree.map(lambda a, b, c: c - 2 * b + a, c0, c1, c2)
        r2, v2 = _sq_norm(r), _sq_norm(v)
        alpha = jnp.where(v2 > 0, -jnp.sqrt(r2 / jnp.where(v2 > 0, v2, 1)), -1.0)
        alpha = jnp.minimum(jnp.where(jnp.isfinite(alpha), alpha, -1.0), -1.0)
        proceed = ~drop0 & ~drop1

        def attempt(t: _Try) -> _Try:
            """Evaluate the extrapolation at ``t.alpha``; halve the step towards -1 on failure."""
            ext = jax.tree.map(lambda a, rr, vv: a - 2 * t.alpha * rr + t.alpha**2 * vv, c0, r, v)
            theta_e = from_coordinates(theta0, ext, spec)
            valid = is_valid(theta_e, spec)

            def skip(p):
                return p, jnp.array(-jnp.inf, dtype)

            theta3, ll_e = jax.lax.cond(valid, em_map, skip, theta_e)
            accept = valid & (ll_e >= ll1) & jnp.isfinite(ll_e)
            trace = jnp.where(
                valid, record(t.trace, t.count, jnp.where(accept, ll_e, nan)), t.trace
            )
            return _Try(
                alpha=0.5 * (t.alpha - 1.0),
                tries=t.tries + 1,
                accept=accept,
                theta_e=theta_e,
                theta3=theta3,
                ll_e=ll_e,
                trace=trace,
                count=t.count + valid.astype(t.count.dtype),
                evaluated=t.evaluated + valid.astype(jnp.int32),
                rejected=t.rejected + (valid & ~accept).astype(jnp.int32),
            )

        def again(t: _Try):
            return (
                proceed
                & ~t.accept
                & (t.tries < max_backtracks + 1)
                & (t.alpha < -1.0 - 1e-3)
                & (t.count < limit)
            )

        zero = jnp.zeros((), jnp.int32)
        t = jax.lax.while_loop(
            again,
            attempt,
            _Try(
                alpha, zero, jnp.array(False), theta0, theta2, ll1, trace, s.count + 2, zero, zero
            ),
        )
        accept, theta_e, theta3, ll_e, trace, count = (
            t.accept,
            t.theta_e,
            t.theta3,
            t.ll_e,
            t.trace,
            t.count,
        )

        # Best evaluated point and where the next cycle starts.
        best, best_ll = s.best, s.best_ll
        better0 = ~drop0 & (ll0 > best_ll)
        best, best_ll = select(better0, theta0, best), jnp.where(better0, ll0, best_ll)
        better1 = ~drop0 & ~drop1 & (ll1 > best_ll)
        best, best_ll = select(better1, theta1, best), jnp.where(better1, ll1, best_ll)
        best, best_ll = select(accept, theta_e, best), jnp.where(accept, ll_e, best_ll)
        nxt = select(accept, theta3, theta2)

        dropped = drop0 | drop1
        size = jnp.where(
            drop0,
            jnp.where(jnp.isfinite(ll0), s.best_ll - ll0, jnp.inf),
            jnp.where(jnp.isfinite(ll1), jnp.maximum(ll0, s.best_ll) - ll1, jnp.inf),
        )
        if tol is None:
            converged = jnp.array(False)
        else:
            converged = jnp.isfinite(s.best_ll) & (best_ll - s.best_ll <= tol * jnp.abs(s.best_ll))
        status = jnp.where(dropped, _DECREASED, jnp.where(converged, _CONVERGED, _RUNNING))
        return _State(
            params=nxt,
            best=best,
            best_ll=best_ll,
            trace=trace,
            count=count,
            status=status.astype(jnp.int32),
            decrease=jnp.where(dropped, size, jnp.zeros_like(size)),
            num_extrapolations=s.num_extrapolations + t.evaluated,
            num_rejected=s.num_rejected + t.rejected,
        )

    def cond(s: _State):
        return (s.status == _RUNNING) & (s.count + 3 <= limit)

    zero = jnp.zeros((), jnp.int32)
    init = _State(
        params=params,
        best=params,
        best_ll=jnp.array(-jnp.inf, dtype),
        trace=jnp.full((max_iters,), jnp.nan, dtype),
        count=zero,
        status=zero,
        decrease=jnp.zeros((), dtype),
        num_extrapolations=zero,
        num_rejected=zero,
    )
    s = jax.lax.while_loop(cond, cycle, init)
    info = SquaremInfo(
        log_likelihoods=s.trace,
        log_likelihood=s.best_ll,
        num_e_steps=s.count,
        status=s.status,
        decrease=s.decrease,
        num_extrapolations=s.num_extrapolations,
        num_rejected=s.num_rejected,
    )
    return s.best, info
