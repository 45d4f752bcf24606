r"""The boundary stage of :func:`~jaxssm.fit`: an active set for vanishing covariance directions.

**Why.** At a maximum where a covariance ``C`` in ``update`` (``Q``, ``R`` or ``P0``) turns
singular, EM is frozen in the directions it loses: along a null vector ``v`` of ``Q`` the
posterior pins ``v' x_k = v' A x_{k-1}``, so ``v' C = v' A \Phi`` and the M-step returns the
same row ``v' A``. EM's rate tends to one there and no scalar extrapolation serves both the
fast coordinates and ``log lambda_min``; a quasi-Newton method on the full covariance is
ill-conditioned by the tiny eigenvalues. The model with a singular ``Q`` (or ``P0``) is still
a valid model for the filter (``R > 0`` keeps the innovation covariance positive definite).

**What.** Once accelerated EM has slowed down, the eigenvalues of ``C`` at most
``rank_tol * lambda_max(C)`` are dropped: ``C = L L^T`` with ``L`` of shape ``[n, r]`` spanning
the kept eigenvectors, so the dropped directions are exactly zero. ``log p(y)`` is then
maximised over all the fields in ``update`` (every row of ``A``, the frozen ones included) and
``L`` by L-BFGS (two-loop recursion, Armijo backtracking) on the **exact** gradient, reverse
mode through the filter (Fisher's identity does not hold through a singular Gaussian term).
The coordinates are scaled by the complete-data information, so that one unit is about one
standard error: ``A = A_0 + T_Q Z \Phi^{-1/2} / \sqrt N`` (``T_Q = V diag(sqrt(max(w, w_r)))``
from ``Q``'s eigenpairs, ``w_r`` the smallest kept eigenvalue), ``L = L_0 + T_C X / \sqrt N``
(``X [n, n]``, its dropped columns masked so that the shapes, and the compiled gradient, do
not depend on the rank; the kept block is ``L`` relative to its start, the dropped rows turn
the range),
and likewise ``H`` (with ``R`` and the smoothed ``\Sigma``), ``B, b`` (``Q``), ``D, d`` (``R``),
``m0`` (``P0``, per sequence).

**Active set.** A kept eigenvalue that falls to the threshold (``rank_tol * lambda_max``) is
dropped (the frame is rebuilt at the current point and the memory restarted). A frame never
starts below its point: where holding the eigenvalues under the threshold at zero lowers
``log p(y)`` by more than ``tol |log p(y)|`` (a small direction that is not vanishing), the
threshold moves to round-off (``1e-12 lambda_max``) and only the zero directions are held.
When the stopping test passes, a kept eigenvalue under ``1e-2 lambda_max`` whose removal raises
``log p(y)`` is dropped (``truncate``'s test; up to ``_MAX_DROPS`` times) and the search goes
on: L-BFGS crawls towards such a boundary and its test can pass short of it. The **KKT sign
condition** of a boundary maximum is checked at the end and every ``_KKT_EVERY`` accepted
steps: with ``G = d log p / dC`` (the full, symmetric gradient), ``v' G v <= 0`` for every
dropped direction ``v`` (the likelihood falls when ``C`` grows out of the PSD cone's face). A
direction that violates it (gain more than ``tol |log p|`` from an eigenvalue
``10 rank_tol lambda_max``) is grown back to the best of the sizes
``lambda_max 10^(k/2)``, ``k >= -24`` (filter passes, counted with the gradients), and the
search resumes: at the end always, at a periodic check when the growth gained more than the
last ``_KKT_EVERY`` steps did (the face chosen by the truncation test can be wrong: it runs
after the first hundred E-steps). A direction's best size can lie far below
``rank_tol * lambda_max`` (a noise variance many orders below the largest); the stage's
threshold then moves to a hundredth of it, so that the direction stays kept. Up to two
rounds more than the directions held at the start.

**The small directions' block.** Along the small directions of a covariance (eigenvalues at
most ``rank_tol * lambda_max``, held or kept) the complete-data information overstates the
observed information by orders of magnitude: the states are not observed, and the data say
little about the rows of ``A`` that a nearly noise-free direction pins, or about how a tiny
kept direction of ``Q`` is correlated with the others. On a 44,484-step series simulated from
SARCOS's fit, the Hessian on those coordinates (the rows of ``A`` along the six smallest
eigenvectors of ``Q``, the columns of ``L`` of its four small kept ones: 210) had curvatures
1e-6 .. 0.4 in units where the rest are about one, L-BFGS crawled at 1e-4 nats per step, and
its stopping test passed 0.27 nats short of the maximum. So, where the stopping test first
passes in a frame, or the frame's last ``_CRAWL_STEPS`` (50) accepted steps rose by under
``_CRAWL_RISE`` (10) ``tol |log p(y)|`` each on average (at most ``_MAX_BLOCKS`` times a
stage, float64 only: in float32 the likelihood's round-off exceeds the gains; built at the
stage's start instead, far from the maximum, it preconditioned badly), the stage restarts
there and takes the exact Hessian of the block by forward differences of the gradient (one
gradient per coordinate, at most ``_BLOCK_MAX``, within the budget). Where its Newton model
predicts a gain above ``tol |log p(y)|`` the search goes on in coordinates in which the
block's Hessian is the identity (``x_block = M^{-1/2} u``, ``M`` the negated block Hessian
with its eigenvalues' absolute values raised to ``block.CURVATURE_FLOOR``); else the point
passes, now also on the block's exact model. On that series L-BFGS then gained the 0.26
nats in 10 steps.

**Gradients.** On fully observed data and the steady-state schedule the gradient is taken
through the fast path alone (``Paths.FAST``), and through the gap-aware recursion where the
fast path does not cover the point (:func:`jaxssm._schedules.plan.exact_on_fast_path`, as in
:func:`~jaxssm.fit_mle`): reverse mode through a program that holds both paths pays for both
(``benchmarks/score.py``). With directions held at zero the fast path
often does not cover it: an observed direction without process noise has a filter variance
that falls like ``1/k`` and does not settle, so the full recursion runs.

**Stopping.** With ``g`` the gradient and ``d = H g`` L-BFGS's step (``H`` its inverse-Hessian
approximation) in these coordinates, ``||g||_* = sqrt(<g, d>)``: ``\tfrac12 ||g||_*^2`` is the
gain the quasi-Newton model predicts, the same pairing of a gradient with a Newton-like step as
EM's scaled gradient in :mod:`jaxssm._learn.fit`. The stage stops when it is at most
``tol |log p(y)|`` and the last ``_RISE_WINDOW`` (10) accepted steps together rose by at most
that much: in a crawl one step whose line search backtracked far rises by almost nothing, and
ending there stopped 0.1 nat short on a simulated series.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxssm._base import compile as _compile
from jaxssm._base.types import LGSSM
from jaxssm._learn.block import block_indices, block_map, small_directions
from jaxssm._learn.frame import (
    COVARIANCES,
    Flat,
    assemble,
    build_frame,
    two_loop,
    value_and_grad,
)
from jaxssm._learn.frame import eigh as _eigh
from jaxssm._schedules import dispatch as _dispatch

__all__ = [
    "COVARIANCES",
    "vanishing",
    "truncate",
    "boundary_stage",
    "BoundaryResult",
    "log_likelihood_at",
]

#: L-BFGS memory: the (step, gradient change) pairs kept (the benchmark pages, "Smaller
#: measurements", give the gradients it took on SARCOS for other values).
_MEMORY = 100
#: Rounds of adding back directions that fail the KKT sign check, at most (beyond one per
#: direction held at the start).
_MAX_READDS = 2
#: Accepted steps whose total rise the stopping test bounds (one small step in a crawl, a
#: line search that backtracked far, does not end the search).
_RISE_WINDOW = 10
#: Drops at the stage's end (directions whose removal raises ``log p(y)``), at most.
_MAX_DROPS = 2
#: Accepted steps between the periodic KKT checks (0: only at the end).
_KKT_EVERY = 50
#: The smallest size, relative to lambda_max, at which a held direction is grown back.
_GROW_FROM = 1e-12
#: Relative eigenvalues below which a direction is a candidate for truncation (fit's EM stage
#: and the boundary stage's end).
SUSPECT_TOL = 1e-2
#: Relative eigenvalues at most this are zero to round-off (the threshold of a frame whose
#: ``rank_tol`` would hold a direction that is not vanishing: ``boundary_stage``'s ``settle``).
_ZERO_REL = 1e-12
#: Block Hessians (the preconditioner of the small directions' coordinates) per stage, at most.
_MAX_BLOCKS = 2
#: Coordinates in the block, at most (each costs one gradient evaluation).
_BLOCK_MAX = 512
#: A frame's last _CRAWL_STEPS accepted steps rising by less than _CRAWL_RISE * tol |log p|
#: each on average is a crawl: the block is built then too (0: only at the stopping test).
_CRAWL_STEPS = 50
_CRAWL_RISE = 10.0


class BoundaryResult(NamedTuple):
    """What the boundary stage returns (``fit`` folds it into ``FitInfo``)."""

    params: LGSSM
    log_likelihood: float
    grad_norm: float
    num_grad_evals: int
    rank_dropped: dict
    boundary_slope: float
    log_likelihoods: np.ndarray
    converged: bool


def vanishing(params: LGSSM, update: tuple[str, ...], rank_tol: float) -> dict[str, int]:
    """``{name: count}`` of eigenvalues at most ``rank_tol * lambda_max`` per covariance."""
    out = {}
    for name in COVARIANCES:
        if name in update:
            w, _ = _eigh(getattr(params, name))
            k = int(np.sum(w <= rank_tol * max(w[-1], 0.0)))
            if k:
                out[name] = k
    return out


@partial(_compile.jit, static_argnames=("schedule",))
def log_likelihood_at(params, ys, inputs, *, schedule):
    """``log p(y)`` at ``params`` on ``schedule`` (one filter pass, jitted)."""
    return _dispatch.log_likelihood(params, ys, schedule, inputs=inputs)


def truncate(
    params: LGSSM,
    ys,
    inputs,
    *,
    update: tuple[str, ...],
    schedule,
    suspect_tol: float,
    rtol: float,
    current: float | None = None,
    trace: list | None = None,
) -> tuple[LGSSM, dict[str, int], int, float]:
    """Zero the vanishing directions whose removal does not lower ``log p(y)``.

    For each covariance ``C`` in ``update``, the candidates are its eigenvalues at most
    ``suspect_tol * lambda_max``, smallest first; ``k`` of them are set to zero for the
    largest ``k`` whose truncated model's ``log p(y)`` is at least the current one (less
    ``rtol |log p|`` round-off). A direction on its way to zero (EM's crawl towards a
    boundary maximum) passes: removing it is itself an ascent step (the discrete form of the
    KKT sign ``v' G v <= 0``); an interior direction, however small, does not (removing
    it costs nats). ``current``: ``log p(y)`` at ``params`` where known (saves a filter
    pass); ``trace``: a list that every evaluated log-likelihood is appended to. Returns
    ``(params, {name: k}, log-likelihood evaluations, log p(y) at the returned params)``.
    """
    dropped, evals = {}, 0
    if current is None:
        current = float(log_likelihood_at(params, ys, inputs, schedule=schedule))
        evals += 1
    for name in COVARIANCES:
        if name not in update:
            continue
        c = getattr(params, name)
        w, v = _eigh(c)
        num = int(np.sum(w <= suspect_tol * max(w[-1], 0.0)))
        best_k, best = 0, None
        for k in range(1, min(num, w.size - 1) + 1):
            wk = w.copy()
            wk[:k] = 0.0
            trial = params._replace(**{name: jnp.asarray((v * wk) @ v.T, c.dtype)})
            value = float(log_likelihood_at(trial, ys, inputs, schedule=schedule))
            evals += 1
            if trace is not None:
                trace.append(value)
            if np.isfinite(value) and value >= current - rtol * abs(current):
                best_k, best = k, (trial, value)
        if best_k:
            params, current = best
            dropped[name] = best_k
    return params, dropped, evals, current


def _zero_count(params: LGSSM, update) -> int:
    """Eigenvalues of the covariances in ``update`` that are zero to round-off."""
    return sum(vanishing(params, update, _ZERO_REL).values())


def _null_basis(c: np.ndarray, rank_tol: float) -> np.ndarray:
    w, v = _eigh(c)
    return v[:, w <= rank_tol * max(w[-1], 0.0)]


def _violations(
    current: LGSSM, gc: dict, zeros: dict, floor: float, rank_tol: float, gain_tol: float
):
    """Held directions that fail the KKT sign check, most violating first.

    ``[(name, v v^T, size)]``: ``v`` the unit direction in the null space (eigenvalues at most
    ``floor * lambda_max``) of the covariance along which ``log p(y)`` rises fastest, with
    slope times ``size = 10 rank_tol lambda_max`` above ``gain_tol`` nats.
    """
    out = []
    for n in zeros:
        c = np.asarray(getattr(current, n), np.float64)
        null = _null_basis(c, floor)
        if null.shape[1] == 0:
            continue
        gsym = 0.5 * (gc[n] + gc[n].T)
        mu, u = np.linalg.eigh(null.T @ gsym @ null)
        size = 10.0 * rank_tol * np.linalg.eigvalsh(c)[-1]
        if mu[-1] * size > gain_tol:
            vec = null @ u[:, -1]
            out.append((mu[-1] * size, n, np.outer(vec, vec), size))
    out.sort(key=lambda t: -t[0])
    return [t[1:] for t in out]


def boundary_stage(
    params: LGSSM,
    ys,
    inputs,
    stats,
    *,
    update: tuple[str, ...],
    schedule,
    rank_tol: float,
    tol: float,
    max_evals: int,
    num_steps: int,
    num_sequences: int,
    paths: _dispatch.Paths = _dispatch.Paths.BOTH,
) -> BoundaryResult:
    """Maximise ``log p(y)`` with the vanishing covariance directions held at zero.

    ``stats`` are the E-step's statistics at ``params`` (they scale ``A`` and ``H``). Runs
    at most ``max_evals`` gradient evaluations (module docstring). ``paths``: the
    steady-state paths the data need (``Paths.FAST`` for fully observed data: a gradient
    the fast path does not cover is taken through the gap-aware recursion).
    """
    dtype = params.A.dtype
    zeros = {n: jnp.zeros_like(getattr(params, n)) for n in update if n in COVARIANCES}
    trace: list[float] = []
    evals = 0
    readds = 0

    held: list = []  # (name, directions held at zero) of the current frame
    precond = None  # (flat indices, map) of the current frame's preconditioned block
    path: list = []  # log p(y) after the last _CRAWL_STEPS + 1 accepted steps of the frame
    blocks = 0

    def reframe(p):
        base, left, right, ranks = build_frame(p, stats, update, floor, num_steps, num_sequences)
        shapes = {}
        for n in update:
            if n in right:
                shapes[n] = (left[n].shape[1], right[n].shape[0])
            elif np.ndim(base[n]) == 2:
                shapes[n] = (left[n].shape[1], base[n].shape[1])
            else:
                shapes[n] = (left[n].shape[1],)
        held[:] = [(n, left[n].shape[1] - r) for n, r in ranks.items() if left[n].shape[1] > r]
        nonlocal precond, path
        precond = None  # a new frame starts in its own (complete-data) scaling
        path = []
        return (base, left, right), Flat(shapes)

    def mapped(x):
        """Return the frame's coordinates of the search's ``x`` (the block preconditioned)."""
        if precond is None:
            return x
        idx, s = precond
        out = x.copy()
        out[idx] = s @ x[idx]
        return out

    def point(x):
        """Return the model at the search's ``x`` in the current frame."""
        return assemble(flat.unravel(mapped(x), dtype), zeros, *frame, params)

    def evaluate(frame, flat, x):
        nonlocal evals
        base, left, right = frame
        xf = mapped(x)
        args = (flat.unravel(xf, dtype), zeros, base, left, right, params, ys, inputs)
        value, g, gc = value_and_grad(*args, schedule=schedule, paths=paths)
        evals += 1
        value = float(value)
        trace.append(value)
        g = flat.ravel(g)
        if precond is not None:
            idx, s = precond
            g[idx] = s.T @ g[idx]
        return value, g, {n: np.asarray(a, np.float64) for n, a in gc.items()}

    def grow_back(current, violation, f_now):
        """Grow a held direction back to its best size; return ``(point, value)``.

        Sizes ``lambda_max * 10^(k/2)`` from ``_GROW_FROM * lambda_max`` up (filter passes,
        counted with the gradients), until ``log p(y)`` has risen and then fallen twice: the
        best size of a held direction can be far below ``rank_tol * lambda_max``, and the
        stage's threshold then moves below it (``floor``), so that the direction stays kept.
        """
        nonlocal evals, floor
        n, vec, _ = violation
        c = np.asarray(getattr(current, n), np.float64)
        top = float(np.linalg.eigvalsh(c)[-1])
        best, best_f, falls = 0.0, f_now, 0
        for k in range(int(round(2 * np.log10(_GROW_FROM))), 1):
            size = top * 10.0 ** (k / 2)
            trial = current._replace(**{n: jnp.asarray(c + size * vec, dtype)})
            value = float(log_likelihood_at(trial, ys, inputs, schedule=schedule))
            evals += 1
            trace.append(value)
            if value > best_f:
                best, best_f, falls = size, value, 0
            elif best > 0:
                falls += 1
                if falls >= 2:
                    break
        if best > 0:
            floor = min(floor, 0.01 * best / top)
        return current._replace(**{n: jnp.asarray(c + best * vec, dtype)}), best_f

    def restart(point):
        """Start a new frame at ``point`` and evaluate there (L-BFGS's memory starts empty)."""
        frame, flat = reframe(point)
        x = np.zeros(sum(flat.sizes))
        return (frame, flat, x, *evaluate(frame, flat, x))

    def blockable():
        """Whether this frame may build the block (module docstring)."""
        return blocks < _MAX_BLOCKS and precond is None and np.dtype(dtype) == np.float64

    def precondition(here):
        """Restart at ``here`` with the small directions' block preconditioned.

        Returns ``(started, gain)``: the restarted search (``restart``'s tuple) and the gain
        the block's Newton model predicts there; ``(None, None)`` where there is no block,
        it is larger than ``_BLOCK_MAX``, or the budget is too short for it.
        """
        nonlocal precond
        small = small_directions(here, rank_tol, floor)
        # (the flat shapes do not depend on the point: the current frame's give the block
        # before the restart it needs)
        idx = block_indices(flat, small)
        if not 0 < idx.size <= _BLOCK_MAX or evals + 1 + idx.size > max_evals:
            return None, None
        started = restart(here)
        fr, fl, x0, f0, g0, gc0 = started
        s = block_map(lambda x: evaluate(fr, fl, x)[1], x0, g0, idx)
        precond = (idx, s)
        g = g0.copy()
        g[idx] = s.T @ g0[idx]
        return (fr, fl, x0, f0, g, gc0), 0.5 * float(g[idx] @ g[idx])

    def settle(point, f_point):
        """Frame at ``point`` (exact ``log p = f_point``); never start below it.

        A frame holds every eigenvalue at most ``floor * lambda_max`` at zero. Where that
        costs more than ``tol |log p|`` (a small direction that is not vanishing: on a
        simulated SARCOS-sized series a 6e-7 relative eigenvalue held at zero cost 4.5 nats,
        and the stage then spent its gradients climbing back), the threshold moves to
        round-off (``_ZERO_REL``): only the directions that are zero are held.
        """
        nonlocal floor
        started = restart(point)
        if started[3] < f_point - tol * abs(f_point) and floor > _ZERO_REL:
            floor = _ZERO_REL
            started = restart(point)
        return started

    floor = rank_tol  # the stage's threshold: lowered below a direction grown back smaller
    drops = 0
    max_readds = _MAX_READDS + sum(vanishing(params, update, rank_tol).values())
    current = params
    f_start = float(log_likelihood_at(params, ys, inputs, schedule=schedule))
    evals += 1  # a filter pass, counted with the gradients
    trace.append(f_start)
    frame, flat, x, f, g, gc = settle(current, f_start)
    since_check, progress_mark = 0, f
    memory: list = []
    converged = False
    recent: list = []  # the rises of the last _RISE_WINDOW accepted steps since a restart
    decrement = np.inf
    while True:
        d = two_loop(g, memory)
        slope = float(g @ d)
        if not slope > 0:
            memory = []
            d = two_loop(g, memory)
            slope = float(g @ d)
        decrement = max(slope, 0.0)
        rise = sum(recent) if recent else np.inf
        if 0.5 * decrement <= tol * abs(f) and rise <= tol * abs(f):
            current = point(x)
            if drops < _MAX_DROPS:
                # A small kept direction whose removal raises log p(y): L-BFGS crawls
                # towards such a boundary (its eigenvalue's coordinate loses curvature) and
                # its stopping test passes short of it. Drop it and go on.
                trial, _, n, value = truncate(
                    current,
                    ys,
                    inputs,
                    update=update,
                    schedule=schedule,
                    suspect_tol=SUSPECT_TOL,
                    rtol=0.0,
                    current=f,
                    trace=trace,
                )
                evals += n
                if _zero_count(trial, update) > _zero_count(current, update) and value > f:
                    drops += 1
                    frame, flat, x, f, g, gc = settle(trial, value)
                    memory, since_check, recent = [], 0, []
                    continue
            if blockable():
                # The small directions' block: its exact Hessian (finite differences of the
                # gradient) preconditions the search; where its Newton model predicts a
                # gain, L-BFGS was crawling there and goes on in the new coordinates.
                blocks += 1
                started, gain = precondition(current)
                if started is not None:
                    frame, flat, x, f, g, gc = started
                    memory, since_check, recent = [], 0, []
                    if gain > tol * abs(f):
                        continue
            # KKT sign check on the dropped directions; add back a violating one.
            violated = _violations(current, gc, zeros, floor, rank_tol, tol * abs(f))
            if not violated or readds >= max_readds:
                converged = not violated  # a violation past the re-adds: not a maximum
                break
            current, _ = grow_back(current, violated[0], f)
            readds += 1
            frame, flat, x, f, g, gc = restart(current)
            memory, since_check, recent = [], 0, []
            continue
        if (
            _CRAWL_STEPS
            and blockable()
            and len(path) > _CRAWL_STEPS
            and path[-1] - path[0] < _CRAWL_STEPS * _CRAWL_RISE * tol * abs(f)
        ):
            # A crawl before the stopping test passes (a tight tol, or one that never
            # passes): the block as at the stopping test.
            blocks += 1
            started, gain = precondition(point(x))
            if started is not None:
                frame, flat, x, f, g, gc = started
                memory, since_check, recent = [], 0, []
                continue
        if _KKT_EVERY and since_check >= _KKT_EVERY and readds < max_readds:
            # The face may be wrong from the start (the truncation test runs early): every
            # _KKT_EVERY accepted steps, grow back the most violating held direction when
            # that gains more than the last _KKT_EVERY steps did together.
            since_check = 0
            current = point(x)
            violated = _violations(current, gc, zeros, floor, rank_tol, tol * abs(f))
            if violated:
                grown, grown_f = grow_back(current, violated[0], f)
                if grown_f - f > f - progress_mark:
                    readds += 1
                    frame, flat, x, f, g, gc = restart(grown)
                    memory, recent = [], []
                    progress_mark = f
                    continue
            progress_mark = f
        if evals >= max_evals:
            break
        # Armijo backtracking along d.
        t, accepted = 1.0, False
        while evals < max_evals:
            xn = x + t * d
            fn, gn, gcn = evaluate(frame, flat, xn)
            if np.isfinite(fn) and fn >= f + 1e-4 * t * slope:
                accepted = True
                break
            t *= 0.25
            if t < 1e-8:
                break
        if not accepted:
            if memory:  # retry from steepest ascent before giving up
                memory = []
                continue
            break
        s, y = xn - x, g - gn
        if s @ y > 1e-10 * np.linalg.norm(s) * np.linalg.norm(y):
            memory.append((s, y))
            if len(memory) > _MEMORY:
                memory.pop(0)
        recent = [*recent[1 - _RISE_WINDOW :], fn - f]
        path = [*path[-_CRAWL_STEPS:], fn]
        since_check += 1
        x, f, g, gc = xn, fn, gn, gcn
        # Active set: drop a kept direction whose eigenvalue has fallen to rank_tol.
        here = point(x)
        if vanishing(here, update, floor) != dict(held):
            current = here
            frame, flat, x, f, g, gc = settle(current, f)
            memory, recent = [], []
    current = point(x)
    slope_kkt = -np.inf
    for n in zeros:
        c = np.asarray(getattr(current, n), np.float64)
        null = _null_basis(c, floor)
        if null.shape[1]:
            gsym = 0.5 * (gc[n] + gc[n].T)
            mu = np.linalg.eigvalsh(null.T @ gsym @ null)[-1]
            slope_kkt = max(slope_kkt, float(mu) * float(np.linalg.eigvalsh(c)[-1]))
    dropped = vanishing(current, update, floor)
    return BoundaryResult(
        params=current,
        log_likelihood=f,
        grad_norm=float(np.sqrt(decrement)),
        num_grad_evals=evals,
        rank_dropped=dropped,
        boundary_slope=slope_kkt if np.isfinite(slope_kkt) else float("nan"),
        log_likelihoods=np.asarray(trace),
        converged=converged,
    )
