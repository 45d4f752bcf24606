r"""Gradient-based maximum likelihood with optax, through the same Kalman filter code.

The log marginal likelihood ``log p(y_1:N | theta)`` of the sequential filter
(:mod:`jaxssm._schedules.sequential`, or its steady-state fast path) or of the time-parallel one
(:mod:`_schedules.parallel`) is differentiated with :func:`jax.value_and_grad` and maximised by
any optax optimiser, ``optax.adam(...)`` and ``optax.lbfgs()`` included. The whole
optimisation is one compiled ``lax.scan`` over steps. On fully observed data the steady-state
schedule's gradient is taken one path at a time
(:func:`jaxssm._schedules.plan.exact_on_fast_path`), the paths chosen on the host
(:func:`jaxssm._schedules.plan.choose_paths`).

Parameterisation (an invertible map between an :class:`~jaxssm.LGSSM` and unconstrained
real arrays, :func:`to_unconstrained` / :func:`from_unconstrained`):

* ``m0``, ``A``, ``H`` are unconstrained already and are kept as they are.
* each covariance ``S`` in (``P0``, ``Q``, ``R``) is written ``S = L L^T`` with ``L`` its
  lower-triangular Cholesky factor; the free vector holds the ``D (D + 1) / 2`` entries of the
  lower triangle, row by row (``numpy.tril_indices`` order), with each diagonal entry stored as
  ``softplus^{-1}(L_ii)``. Any real vector maps back to a symmetric positive-definite matrix
  (``L_ii = softplus(v) > 0``), and the map is a bijection onto the SPD matrices.

Only the fields named in ``update`` are free; the others are ``None`` in
:class:`UnconstrainedParams` and are read from a template, so no gradient is computed for
them and they come back bitwise unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxssm._args import schedule as _schedule
from jaxssm._args.callbacks import guard_callback, run_with_callback
from jaxssm._args.checks import check_int, check_update
from jaxssm._args.prologue import prologue
from jaxssm._args.structures import parse_update, resolve_update
from jaxssm._args.validation import check_trainable_covariances, validate_params
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.linalg import LAPACK, symmetrize
from jaxssm._base.structure import as_spec, field_from_unconstrained, field_to_unconstrained
from jaxssm._base.types import (
    LGSSM,
    PARAMETER_NAMES,
    MLEInfo,
    MLEStatus,
    UnconstrainedParams,
)
from jaxssm._schedules import dispatch as _dispatch
from jaxssm._schedules import plan as _plan
from jaxssm._schedules.dispatch import Kind, Paths

if TYPE_CHECKING:
    import optax

__all__ = ["to_unconstrained", "from_unconstrained", "fit_mle"]

_FIELDS = PARAMETER_NAMES
_COVARIANCES = ("P0", "Q", "R")
_MAX_ITERS, _DECREASED, _DIVERGED = (int(s) for s in MLEStatus)


# --- the covariance <-> vector map -------------------------------------------------------


def _softplus_inverse(x: jax.Array) -> jax.Array:
    """``log(exp(x) - 1)`` for ``x > 0``, written to stay accurate for small and large x."""
    return x + jnp.log(-jnp.expm1(-x))


def _cov_to_vector(S: jax.Array) -> jax.Array:
    """SPD ``[D, D]`` -> ``[D (D + 1) / 2]`` (Cholesky factor, diagonal via softplus^-1)."""
    D = S.shape[-1]
    rows, cols = np.tril_indices(D)
    L = LAPACK.cholesky(symmetrize(S))
    v = L[rows, cols]
    on_diag = rows == cols
    return jnp.where(on_diag, _softplus_inverse(jnp.where(on_diag, v, 1)), v)


def _vector_to_cov(v: jax.Array, D: int) -> jax.Array:
    """``[D (D + 1) / 2]`` -> SPD ``[D, D]``: ``L L^T`` with ``L_ii = softplus(v_ii)``."""
    rows, cols = np.tril_indices(D)
    on_diag = rows == cols
    entries = jnp.where(on_diag, jax.nn.softplus(v), v)
    L = jnp.zeros((D, D), v.dtype).at[rows, cols].set(entries)
    return symmetrize(L @ L.T)


def _to_unconstrained(params: LGSSM, update) -> UnconstrainedParams:
    """Unchecked forward map (``update`` already validated; names or an ``UpdateSpec``).

    A structured field maps to its free coordinates: ``beta`` of a linear structure,
    ``log q`` of a covariance pattern (:func:`jaxssm._base.structure.field_to_unconstrained`).
    """
    spec = as_spec(update)
    fields = {}
    for name in spec.names:
        x, s = getattr(params, name), spec.structure(name)
        if s is not None:
            fields[name] = field_to_unconstrained(x, s)
        else:
            fields[name] = _cov_to_vector(x) if name in _COVARIANCES else x
    return UnconstrainedParams(**fields)


def _from_unconstrained(theta: UnconstrainedParams, template: LGSSM, spec=None) -> LGSSM:
    """Unchecked inverse map: fields of ``theta`` that are ``None`` come from ``template``."""
    spec = as_spec(()) if spec is None else spec
    fields = {}
    for name in _FIELDS:
        t = getattr(theta, name)
        if t is None:
            fields[name] = getattr(template, name)
        elif spec.structure(name) is not None:
            fields[name] = field_from_unconstrained(t, spec.structure(name), template.A.dtype)
        elif name in _COVARIANCES:
            fields[name] = _vector_to_cov(t, getattr(template, name).shape[-1])
        else:
            fields[name] = t
    return LGSSM(**fields)


def to_unconstrained(
    params: LGSSM, update: str | Iterable[str] = ("m0", "P0", "A", "Q", "H", "R")
) -> UnconstrainedParams:
    r"""Map the fields ``update`` of ``params`` to unconstrained coordinates.

    ``m0 [D]``, ``A [D, D]`` and ``H [Dy, D]`` are kept as they are. A covariance ``S [D, D]``
    becomes the vector ``[D (D + 1) / 2]`` of the lower triangle of its Cholesky factor ``L``
    (``S = L L^T``), row by row as ``numpy.tril_indices(D)``, with each diagonal entry replaced
    by ``softplus^{-1}(L_ii) = log(exp(L_ii) - 1)``.

    Args:
        params: an :class:`~jaxssm.LGSSM`; ``P0``, ``Q`` and ``R`` symmetric positive definite.
        update: names of the fields to free (any of ``"m0", "P0", "A", "Q", "H", "R"`` and
            the optional ``"B", "b", "D", "d"`` where set). The others are ``None`` in the
            result.

    Returns:
        :class:`UnconstrainedParams`; :func:`from_unconstrained` inverts it.

    Raises:
        ValueError: an empty, repeated or unknown name in ``update``, or invalid ``params``.
        TypeError: ``update`` is not a name or an iterable of names.
    """
    update = check_update(update)
    params = validate_params(params)
    absent = [n for n in update if getattr(params, n) is None]
    if absent:
        raise ValueError(
            f"update names {', '.join(absent)}, absent from params (None): set them (e.g. to "
            "zeros) to map them"
        )
    check_trainable_covariances(params, update)
    _check_time_invariant(params, update)
    return _to_unconstrained(params, update)


def from_unconstrained(theta: UnconstrainedParams, template: LGSSM) -> LGSSM:
    r"""Map unconstrained coordinates back to an :class:`~jaxssm.LGSSM`.

    The inverse of :func:`to_unconstrained`: a covariance vector ``v [D (D + 1) / 2]`` is put
    into a lower-triangular ``L`` with ``L_ii = softplus(v_ii)`` and mapped to
    ``(L L^T + (L L^T)^T) / 2``, which is symmetric positive definite for every real ``v``.
    Fields of ``theta`` that are ``None`` are taken from ``template`` unchanged. Differentiable
    and jittable.

    Args:
        theta: :class:`UnconstrainedParams`.
        template: an :class:`~jaxssm.LGSSM` that supplies the fixed fields and the sizes
            ``D``, ``Dy``.

    Returns:
        An :class:`~jaxssm.LGSSM`.

    Raises:
        TypeError: ``theta`` is not an :class:`UnconstrainedParams`.
        ValueError: a field of ``theta`` has the wrong shape for ``template``.
    """
    if not isinstance(theta, UnconstrainedParams):
        raise TypeError(f"theta must be a jaxssm.UnconstrainedParams, got {type(theta).__name__}")
    template = validate_params(template, check_values=False)
    for name in _FIELDS:
        t = getattr(theta, name)
        if t is None:
            continue
        ref = getattr(template, name)
        if name in _COVARIANCES:
            d = ref.shape[-1]
            expected, meaning = (d * (d + 1) // 2,), f"[{'D' if name != 'R' else 'Dy'} (+1)/2]"
        else:
            expected, meaning = tuple(ref.shape), {"m0": "[D]", "A": "[D, D]", "H": "[Dy, D]"}[name]
        if tuple(jnp.shape(t)) != expected:
            raise ValueError(
                f"theta.{name} must have shape {meaning} = {expected} for this template, "
                f"got shape {tuple(jnp.shape(t))}"
            )
    return _from_unconstrained(theta, template)


# --- the optimisation loop -----------------------------------------------------------------


def _stores_value_and_grad(state) -> bool:
    """Whether the optimiser state carries the objective's value and gradient (line search)."""
    import optax

    try:
        value = optax.tree.get(state, "value")
        grad = optax.tree.get(state, "grad")
    except KeyError:  # several candidates: do not guess which one is ours
        return False
    return value is not None and grad is not None


@contextlib.contextmanager
def _optimizer_errors(method: str):
    """Say that a failure inside ``optimizer.init`` / ``update`` is the optimiser's."""
    try:
        yield
    except (TypeError, ValueError, AttributeError, IndexError, KeyError) as err:
        raise TypeError(
            "optimizer must be an optax.GradientTransformation whose init(params) and "
            "update(updates, state, params) follow optax's contract (e.g. optax.adam(1e-2), "
            f"optax.lbfgs()); calling optimizer.{method} failed with {type(err).__name__}: "
            f"{err}"
        ) from err


def _fit(
    theta0: UnconstrainedParams,
    template: LGSSM,
    ys: jax.Array,
    inputs: jax.Array | None,
    optimizer: optax.GradientTransformation,
    num_iters: int,
    method: str,
    callback: Callable | None,
    spec=None,
    paths: Paths = Paths.BOTH,
) -> tuple[LGSSM, MLEInfo]:
    """Unchecked optimisation loop: one ``lax.scan`` over ``num_iters`` optimiser steps.

    ``paths``: those of the steady-state schedule the data need
    (:func:`jaxssm._schedules.plan.choose_paths`); with ``Paths.FAST`` every evaluation is
    :func:`~jaxssm._schedules.plan.exact_on_fast_path`'s.
    """
    import optax  # imported on use: `import jaxssm` works where only jax is installed

    dtype = template.A.dtype
    num_time_steps = ys.shape[0] * ys.shape[1] if ys.ndim == 3 else ys.shape[0]
    scale = jnp.asarray(num_time_steps, dtype)

    schedule = _dispatch.place(method, template, ys, inputs)

    def log_likelihood(theta, p):
        params = _from_unconstrained(theta, template, spec)
        return _dispatch.run(Kind.LOG_LIKELIHOOD, params, ys, schedule, inputs=inputs, paths=p)

    def value_info(theta, p):
        value, info = log_likelihood(theta, p)
        return -value / scale, info

    if paths is Paths.FAST:
        normalised = _plan.exact_on_fast_path(value_info)
    else:

        def normalised(theta):
            return value_info(theta, paths)[0]

    def objective(theta):
        # A line search may hand back candidates promoted to a wider dtype (float32 params
        # with x64 enabled): keep every iterate in the parameters' dtype.
        return normalised(jax.tree.map(lambda x: x.astype(dtype), theta))

    opt = optax.with_extra_args_support(optimizer)
    # optax's own arithmetic mixes dtypes (Adam's ``decay**count``, L-BFGS's index
    # arithmetic); run it under standard promotion so that fit_mle also works for users who
    # trace with ``jax_numpy_dtype_promotion="strict"``. A scoped context, not a config change.
    with jax.numpy_dtype_promotion("standard"), _optimizer_errors("init"):
        state0 = opt.init(theta0)
    if _stores_value_and_grad(state0):
        # L-BFGS with a line search: the search already evaluated value and gradient at the
        # accepted point; reuse them instead of differentiating the filter again.
        value_and_grad = optax.value_and_grad_from_state(objective)
    else:

        def value_and_grad(theta, state):
            del state
            return jax.value_and_grad(objective)(theta)

    def step(carry, i):
        theta, state, best, best_ll, best_iter = carry
        value, grad = value_and_grad(theta, state=state)
        ll = (-value * scale).astype(dtype)
        if callback is not None:
            jax.debug.callback(callback, i, ll, ordered=True)
        # The best iterate so far (a NaN log-likelihood never is): the guard's fallback.
        better = ll > best_ll
        best = jax.tree.map(lambda a, b: jnp.where(better, a, b), theta, best)
        best_ll = jnp.where(better, ll, best_ll)
        best_iter = jnp.where(better, i, best_iter)
        with jax.numpy_dtype_promotion("standard"), _optimizer_errors("update"):
            updates, state = opt.update(
                grad, state, theta, value=value, grad=grad, value_fn=objective
            )
            theta = optax.apply_updates(theta, updates)
        return (theta, state, best, best_ll, best_iter), ll

    carry0 = (theta0, state0, theta0, jnp.asarray(-jnp.inf, dtype), jnp.zeros((), jnp.int32))
    (theta, _, best, best_ll, best_iter), lls = jax.lax.scan(
        step, carry0, jnp.arange(num_iters, dtype=jnp.int32)
    )
    final = log_likelihood(theta, Paths.BOTH if paths is Paths.FAST else paths)[0]
    # The guard (as fit_em's): the last iterate unless its log-likelihood fell below the best
    # seen by more than round-off, or is not finite; then the best iterate.
    rtol = float(np.sqrt(np.finfo(dtype).eps))
    floor = jnp.where(jnp.isfinite(best_ll), best_ll - rtol * jnp.abs(best_ll), -jnp.inf)
    decreased = ~(final >= floor) | ~jnp.isfinite(final)
    better_seen = best_ll > -jnp.inf
    start_ll = lls[0]
    start_floor = jnp.where(jnp.isfinite(start_ll), start_ll - rtol * jnp.abs(start_ll), -jnp.inf)
    diverged = decreased & (~(final >= start_floor) | ~jnp.isfinite(final))
    status = jnp.where(diverged, _DIVERGED, jnp.where(decreased, _DECREASED, _MAX_ITERS))
    theta = jax.tree.map(lambda a, b: jnp.where(decreased, a, b), best, theta)
    params = _from_unconstrained(theta, template, spec)
    info = MLEInfo(
        log_likelihoods=lls,
        # No finite iterate: theta_0 comes back, with its (non-finite) log-likelihood.
        log_likelihood=jnp.where(decreased, jnp.where(better_seen, best_ll, lls[0]), final),
        status=status.astype(jnp.int32),
        decrease=jnp.where(
            decreased, jnp.where(jnp.isfinite(final), best_ll - final, jnp.inf), 0
        ).astype(dtype),
        best_iter=jnp.where(decreased, best_iter, num_iters).astype(jnp.int32),
    )
    return params, info


_fit_jit = _compile.jit(
    _fit, static_argnames=("optimizer", "num_iters", "method", "callback", "spec", "paths")
)


def fit_mle(
    params: LGSSM,
    ys: ArrayLike,
    *,
    optimizer: optax.GradientTransformation,
    num_iters: int,
    inputs: ArrayLike | None = None,
    update: str | Iterable[str] = ("A", "Q"),
    method: str = "sequential",
    steady_state: bool | None = None,
    progress: bool = False,
    callback: Callable[[jax.Array, jax.Array], None] | None = None,
) -> tuple[LGSSM, MLEInfo]:
    r"""Maximise ``log p(y_1:N | theta)`` over the fields ``update`` with an optax optimiser.

    The objective is the Kalman filter's log marginal likelihood, differentiated with
    :func:`jax.value_and_grad` in the unconstrained coordinates of :func:`to_unconstrained`
    (Cholesky factors with a softplus diagonal for covariances, so every iterate is a valid
    model). The optimiser minimises ``-log p(y) / T`` with ``T`` the number of time steps
    (``N``, or ``B * N`` for a batch): dividing by ``T`` keeps the scale of values and
    gradients independent of the series length, which helps step sizes, tolerances and
    L-BFGS's initial scaling; the reported log-likelihoods are multiplied back by ``T``
    (equal to ``log p(y)`` up to round-off).

    All ``num_iters`` steps run as one compiled ``lax.scan``. Any
    :class:`optax.GradientTransformation` works: each update receives ``value``, ``grad`` and
    ``value_fn`` (the normalised objective) as extra arguments, which transformations that do
    not use them ignore, and which line searches such as the one in ``optax.lbfgs()`` need.
    When the optimiser state stores the value and gradient at the new point (as
    ``optax.lbfgs()``'s zoom line search does), they are reused rather than recomputed.

    **Divergence guard.** A step size too large throws the optimiser out of the basin
    (``optax.sgd(1e3)`` or ``optax.adam(100.0)`` on a small model), so the last iterate can be
    far worse than the start. The loop keeps the best iterate seen (the highest finite
    ``log p(y | theta_i)``). When the last iterate's log-likelihood is below that best by more
    than ``sqrt(eps) |best|`` (the round-off allowance of :func:`~jaxssm.fit_em`'s decrease
    guard), or is not finite, the best iterate is returned instead and ``MLEInfo.status``
    says ``MLEStatus.DIVERGED`` when the last iterate is also below the start (or not
    finite), else ``MLEStatus.DECREASED`` (Adam oscillating about the maximum, say);
    ``MLEInfo.decrease`` says by how much the last iterate fell below the best and
    ``MLEInfo.best_iter`` which iterate was returned. Otherwise the last iterate is returned
    (``MLEStatus.MAX_ITERS``). The trace is the same either way.

    **Values under transformations.** Called eagerly, ``params`` and ``ys`` are checked
    (finite, PSD covariances, no ``inf`` in ``ys``). Under ``jit`` or ``vmap`` the values are
    not known and not checked: a bad value gives a NaN trace and ``MLEStatus.DIVERGED``
    with ``decrease = inf`` (the start is returned); use :func:`~jaxssm.check_values` with
    :func:`jax.experimental.checkify.checkify` for an error instead.

    When the maximum lies on the boundary of the parameter space (a covariance "wants" to be
    singular, as ``Q`` can on real data), the softplus diagonal runs towards ``-inf`` and the
    returned covariance can be numerically singular; the checked public functions then reject
    it (call them under ``jax.jit`` to skip the value check, or keep that covariance fixed).

    **Steady-state paths.** Called eagerly on fully observed ``ys`` with a steady-state
    schedule for this series (``steady_state=True``, or the default from 2048 steps), each
    gradient is taken through the fast path alone, and through the gap-aware recursion alone
    at a point whose covariances do not settle within the schedule's bound; with a missing
    entry in ``ys``, through the gap-aware recursion alone. Every evaluation, a line search's
    trial points included, has the value and gradient of the filter that holds both paths
    (equal to round-off), at the cost of the fast path's gradient where the fast path covers
    the point (and of both gradients, one after the other, where it does not): reverse mode
    through both paths and the ``lax.cond`` that picks one would pay for the residuals of
    both at every point. The compiled loop holds both gradients. Under ``jit`` or
    ``vmap`` (traced ``params``, ``ys`` or ``inputs``) the gradient goes through both paths,
    chosen on device.

    Compilation is cached on the optimiser object, ``num_iters``, ``method``, ``update``,
    ``callback``, the shapes/dtypes and, on a steady-state schedule, whether ``ys`` has a
    missing entry: reuse one optimiser object (``opt = optax.adam(1e-2)``)
    across calls to avoid recompiling.

    Args:
        params: the starting :class:`~jaxssm.LGSSM`; fields not in ``update`` stay fixed and are
            returned bitwise unchanged.
        ys: observations ``[N, Dy]``, or ``[B, N, Dy]`` for ``B`` independent sequences
            sharing the parameters (their log-likelihoods are summed).
        optimizer: an optax optimiser, e.g. ``optax.adam(1e-2)`` or ``optax.lbfgs()``.
        num_iters: number of optimiser steps, a positive Python int (static: it fixes the
            trace's length; under ``jax.jit`` mark it ``static_argnames`` or close over it).
        inputs: ``u_1..u_N`` ``[N, Du]`` (``[B, N, Du]`` with a batch) when ``params`` has
            ``B`` or ``D``.
        update: names of the fields to fit, from ``"m0", "P0", "A", "Q", "H", "R", "B",
            "b", "D", "d"`` (the gains and offsets unconstrained; an absent one named here
            starts at zero). Time-varying fields cannot be trained (a ``ValueError``).
        method: ``"sequential"`` or ``"parallel"``, as in :func:`~jaxssm.kalman_filter`.
        steady_state: as in :func:`~jaxssm.kalman_filter`; the default differentiates
            through the steady-state fast path (same values and gradients to round-off).
        progress: print ``MLE step i/num_iters: log-likelihood ...`` to stderr at each step.
        callback: ``callback(step, log_likelihood)`` called at each step with
            ``log p(y | theta_step)`` (through :func:`jax.debug.callback`); static, so pass
            the same function object to reuse the compiled loop.

    Returns:
        ``(params, info)``: the :class:`~jaxssm.LGSSM` after ``num_iters`` steps (or the best
        iterate, see the divergence guard) and an :class:`~jaxssm.MLEInfo` with
        ``log_likelihoods [num_iters]`` (``log_likelihoods[i] = log p(y | theta_i)``, before
        step ``i``), ``log_likelihood``, that of the returned parameters, the ``status``
        (:class:`~jaxssm.MLEStatus`), the size of a ``decrease`` and ``best_iter``.

    Raises:
        ValueError: an empty, repeated or unknown name in ``update``, a bad ``method``, a
            non-positive ``num_iters``, or invalid ``params`` / ``ys``.
        TypeError: ``optimizer`` is not an optax gradient transformation (or its ``init`` /
            ``update`` fail on the parameters), ``update`` not a name or an iterable of
            names, ``num_iters`` not a Python int (a traced value included), or ``callback``
            not callable.

    References:
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), ch. 12 (parameter estimation via
        the energy function ``-log p(y | theta)`` and its gradient).
    """
    raw = parse_update(update)
    absent = tuple(n for n in raw if getattr(params, n, None) is None)
    update = tuple(raw)
    schedule = _schedule.resolve(method, steady_state)
    num_iters = check_int(num_iters, "num_iters")
    if not all(callable(getattr(optimizer, f, None)) for f in ("init", "update")):
        raise TypeError(
            "optimizer must be an optax.GradientTransformation (with init and update), "
            f"got {type(optimizer).__name__}"
        )
    callback = guard_callback("MLE step", num_iters, callback, progress)
    params, ys, inputs, _ = prologue(
        params, ys, inputs, schedule=schedule, allow_batch=True, update=update
    )
    _check_time_invariant(params, update)
    params, spec = resolve_update(params, raw, absent)
    check_trainable_covariances(params, tuple(n for n in update if spec.structure(n) is None))
    theta0 = _to_unconstrained(params, spec)
    spec = spec if spec.structures else None
    paths = _plan.choose_paths(params, ys, inputs, schedule)
    if not _dispatch.steady_bound(schedule, params, ys.shape[-2]):
        paths = Paths.BOTH  # no fast path: one program whether or not an entry is missing
    return run_with_callback(
        callback,
        lambda: _fit_jit(
            theta0, params, ys, inputs, optimizer, num_iters, schedule, callback, spec, paths
        ),
    )


def _check_time_invariant(params: LGSSM, update: tuple[str, ...]) -> None:
    """Trained fields must be time-invariant (their maps act on one matrix)."""
    varying = [n for n in update if _model.is_time_varying(params, n)]
    if varying:
        raise ValueError(
            f"fit_mle trains time-invariant fields only, got time-varying "
            f"{', '.join(varying)} in update; hold them fixed"
        )
