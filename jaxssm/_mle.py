r"""Gradient-based maximum likelihood with optax, through the same Kalman filter code.

The log marginal likelihood ``log p(y_1:N | theta)`` of the sequential filter
(``jaxssm._filtering._filter``) or of the time-parallel one (``jaxssm._parallel``) is
differentiated with :func:`jax.value_and_grad` and maximised by any optax optimiser,
``optax.adam(...)`` and ``optax.lbfgs()`` included. The whole optimisation is one compiled
``lax.scan`` over steps.

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

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxssm import _schedules, steps
from jaxssm._model import LGSSM, validate_observations, validate_params

if TYPE_CHECKING:
    import optax

__all__ = ["UnconstrainedParams", "to_unconstrained", "from_unconstrained", "fit_mle"]

_FIELDS = LGSSM._fields
_COVARIANCES = ("P0", "Q", "R")


class UnconstrainedParams(NamedTuple):
    """Unconstrained coordinates of the free parameters of an :class:`~jaxssm.LGSSM`.

    A pytree for optax: fields that are not optimised are ``None`` (empty subtrees), so an
    optimiser never sees them.

    Attributes:
        m0: ``[D]`` (the mean itself), or ``None`` when fixed.
        P0: ``[D (D + 1) / 2]`` lower-triangle entries of the Cholesky factor of ``P0``, with the
            diagonal through ``softplus^{-1}``; or ``None``.
        A: ``[D, D]`` (the matrix itself), or ``None``.
        Q: ``[D (D + 1) / 2]``, as ``P0``; or ``None``.
        H: ``[Dy, D]`` (the matrix itself), or ``None``.
        R: ``[Dy (Dy + 1) / 2]``, as ``P0``; or ``None``.
    """

    m0: jax.Array | None = None
    P0: jax.Array | None = None
    A: jax.Array | None = None
    Q: jax.Array | None = None
    H: jax.Array | None = None
    R: jax.Array | None = None


# --- the covariance <-> vector map -------------------------------------------------------


def _softplus_inverse(x: jax.Array) -> jax.Array:
    """``log(exp(x) - 1)`` for ``x > 0``, written to stay accurate for small and large x."""
    return x + jnp.log(-jnp.expm1(-x))


def _cov_to_vector(S: jax.Array) -> jax.Array:
    """SPD ``[D, D]`` -> ``[D (D + 1) / 2]`` (Cholesky factor, diagonal via softplus^-1)."""
    D = S.shape[-1]
    rows, cols = np.tril_indices(D)
    L = jnp.linalg.cholesky(steps.symmetrize(S))
    v = L[rows, cols]
    on_diag = rows == cols
    return jnp.where(on_diag, _softplus_inverse(jnp.where(on_diag, v, 1)), v)


def _vector_to_cov(v: jax.Array, D: int) -> jax.Array:
    """``[D (D + 1) / 2]`` -> SPD ``[D, D]``: ``L L^T`` with ``L_ii = softplus(v_ii)``."""
    rows, cols = np.tril_indices(D)
    on_diag = rows == cols
    entries = jnp.where(on_diag, jax.nn.softplus(v), v)
    L = jnp.zeros((D, D), v.dtype).at[rows, cols].set(entries)
    return steps.symmetrize(L @ L.T)


def _to_unconstrained(params: LGSSM, update: tuple[str, ...]) -> UnconstrainedParams:
    """Unchecked forward map (``update`` already validated)."""
    fields = {}
    for name in update:
        x = getattr(params, name)
        fields[name] = _cov_to_vector(x) if name in _COVARIANCES else x
    return UnconstrainedParams(**fields)


def _from_unconstrained(theta: UnconstrainedParams, template: LGSSM) -> LGSSM:
    """Unchecked inverse map: fields of ``theta`` that are ``None`` come from ``template``."""
    fields = {}
    for name in _FIELDS:
        t = getattr(theta, name)
        if t is None:
            fields[name] = getattr(template, name)
        elif name in _COVARIANCES:
            fields[name] = _vector_to_cov(t, getattr(template, name).shape[-1])
        else:
            fields[name] = t
    return LGSSM(**fields)


# --- argument checks -----------------------------------------------------------------------


def _check_update(update) -> tuple[str, ...]:
    """Normalise ``update`` to a tuple of field names in LGSSM order, or raise ValueError."""
    if isinstance(update, str):
        update = (update,)
    try:
        names = tuple(update)
    except TypeError:
        raise TypeError(
            f"update must be a sequence of parameter names from {list(_FIELDS)}, "
            f"got {type(update).__name__}"
        ) from None
    bad = [n for n in names if n not in _FIELDS]
    if bad:
        raise ValueError(
            f"update has unknown parameter name(s) {bad}; valid names are {list(_FIELDS)}"
        )
    if not names:
        raise ValueError(f"update must name at least one of {list(_FIELDS)}, got {update!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"update must not repeat names, got {list(names)}")
    return tuple(n for n in _FIELDS if n in names)


def to_unconstrained(
    params: LGSSM, update: Sequence[str] = ("m0", "P0", "A", "Q", "H", "R")
) -> UnconstrainedParams:
    r"""Map the fields ``update`` of ``params`` to unconstrained coordinates.

    ``m0 [D]``, ``A [D, D]`` and ``H [Dy, D]`` are kept as they are. A covariance ``S [D, D]``
    becomes the vector ``[D (D + 1) / 2]`` of the lower triangle of its Cholesky factor ``L``
    (``S = L L^T``), row by row as ``numpy.tril_indices(D)``, with each diagonal entry replaced
    by ``softplus^{-1}(L_ii) = log(exp(L_ii) - 1)``.

    Args:
        params: an :class:`~jaxssm.LGSSM`; ``P0``, ``Q`` and ``R`` symmetric positive definite.
        update: names of the fields to free (any of ``"m0", "P0", "A", "Q", "H", "R"``).
            The others are ``None`` in the result.

    Returns:
        :class:`UnconstrainedParams`; :func:`from_unconstrained` inverts it.

    Raises:
        ValueError: unknown or repeated names in ``update``, or invalid ``params``.
    """
    update = _check_update(update)
    params = validate_params(params)
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


def _log_likelihood_fn(method: str):
    """``(params, ys [N, Dy]) -> log p(y)`` for an internal schedule name (unchecked)."""
    return _schedules.log_likelihood_fn(method)


def _stores_value_and_grad(state) -> bool:
    """Whether the optimiser state carries the objective's value and gradient (line search)."""
    import optax

    try:
        value = optax.tree.get(state, "value")
        grad = optax.tree.get(state, "grad")
    except KeyError:  # several candidates: do not guess which one is ours
        return False
    return value is not None and grad is not None


def _fit(
    theta0: UnconstrainedParams,
    template: LGSSM,
    ys: jax.Array,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    method: str,
):
    """Unchecked optimisation loop: one ``lax.scan`` over ``num_steps`` optimiser steps."""
    import optax  # imported on use: `import jaxssm` works where only jax is installed

    ll_fn = _log_likelihood_fn(method)
    dtype = template.A.dtype
    num_time_steps = ys.shape[0] * ys.shape[1] if ys.ndim == 3 else ys.shape[0]
    scale = jnp.asarray(num_time_steps, dtype)

    def objective(theta):
        # A line search may hand back candidates promoted to a wider dtype (float32 params
        # with x64 enabled): keep every iterate in the parameters' dtype.
        theta = jax.tree.map(lambda x: x.astype(dtype), theta)
        params = _from_unconstrained(theta, template)
        if ys.ndim == 3:
            ll = jnp.sum(jax.vmap(ll_fn, in_axes=(None, 0))(params, ys))
        else:
            ll = ll_fn(params, ys)
        return -ll / scale

    opt = optax.with_extra_args_support(optimizer)
    state0 = opt.init(theta0)
    if _stores_value_and_grad(state0):
        # L-BFGS with a line search: the search already evaluated value and gradient at the
        # accepted point; reuse them instead of differentiating the filter again.
        value_and_grad = optax.value_and_grad_from_state(objective)
    else:

        def value_and_grad(theta, state):
            del state
            return jax.value_and_grad(objective)(theta)

    def step(carry, _):
        theta, state = carry
        value, grad = value_and_grad(theta, state=state)
        updates, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=objective)
        theta = optax.apply_updates(theta, updates)
        return (theta, state), value

    (theta, _), values = jax.lax.scan(step, (theta0, state0), None, length=num_steps)
    return _from_unconstrained(theta, template), (-values * scale).astype(dtype)


_fit_jit = jax.jit(_fit, static_argnames=("optimizer", "num_steps", "method"))


def fit_mle(
    params: LGSSM,
    ys: ArrayLike,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    update: Sequence[str] = ("A", "Q"),
    method: str = "sequential",
    steady_state: bool = True,
) -> tuple[LGSSM, jax.Array]:
    r"""Maximise ``log p(y_1:N | theta)`` over the fields ``update`` with an optax optimiser.

    The objective is the Kalman filter's log marginal likelihood, differentiated with
    :func:`jax.value_and_grad` in the unconstrained coordinates of :func:`to_unconstrained`
    (Cholesky factors with a softplus diagonal for covariances, so every iterate is a valid
    model). The optimiser minimises ``-log p(y) / T`` with ``T`` the number of time steps
    (``N``, or ``B * N`` for a batch): dividing by ``T`` keeps the scale of values and
    gradients independent of the series length, which helps step sizes, tolerances and
    L-BFGS's initial scaling; the reported log-likelihoods are multiplied back by ``T``
    (equal to ``log p(y)`` up to round-off).

    All ``num_steps`` steps run as one compiled ``lax.scan``. Any
    :class:`optax.GradientTransformation` works: each update receives ``value``, ``grad`` and
    ``value_fn`` (the normalised objective) as extra arguments, which transformations that do
    not use them ignore, and which line searches such as the one in ``optax.lbfgs()`` need.
    When the optimiser state stores the value and gradient at the new point (as
    ``optax.lbfgs()``'s zoom line search does), they are reused rather than recomputed.

    When the maximum lies on the boundary of the parameter space (a covariance "wants" to be
    singular, as ``Q`` can on real data), the softplus diagonal runs towards ``-inf`` and the
    returned covariance can be numerically singular; the checked public functions then reject
    it (call them under ``jax.jit`` to skip the value check, or keep that covariance fixed).

    Compilation is cached on the optimiser object, ``num_steps``, ``method``, ``update`` and the
    shapes/dtypes: reuse one optimiser object (``opt = optax.adam(1e-2)``) across calls to
    avoid recompiling.

    Args:
        params: the starting :class:`~jaxssm.LGSSM`; fields not in ``update`` stay fixed and are
            returned bitwise unchanged.
        ys: observations ``[N, Dy]``, or ``[B, N, Dy]`` for ``B`` independent sequences
            sharing the parameters (their log-likelihoods are summed).
        optimizer: an optax optimiser, e.g. ``optax.adam(1e-2)`` or ``optax.lbfgs()``.
        num_steps: number of optimiser steps, a positive int.
        update: names of the fields to fit, from ``"m0", "P0", "A", "Q", "H", "R"``.
        method: ``"sequential"`` (``lax.scan`` filter) or ``"parallel"``
            (``lax.associative_scan`` filter).
        steady_state: with ``method="sequential"``, differentiate through the steady-state
            fast path of the filter (default ``True``; see :func:`~jaxssm.kalman_filter`):
            same values and gradients to round-off, ``O(N D^2)`` after the transient.

    Returns:
        ``(params, log_likelihoods)``: the :class:`~jaxssm.LGSSM` after ``num_steps`` steps, and
        ``log_likelihoods [num_steps]`` with ``log_likelihoods[i] = log p(y | theta_i)``, the
        log-likelihood *before* step ``i`` (entry 0 is that of the starting point; the value at
        the returned parameters is not included: compute it with
        :func:`~jaxssm.log_likelihood`).

    Raises:
        ValueError: unknown names in ``update``, bad ``method`` or ``num_steps``, or invalid
            ``params`` / ``ys``.
        TypeError: ``optimizer`` is not an optax gradient transformation.

    References:
        S. Sarkka, *Bayesian Filtering and Smoothing* (2013), ch. 12 (parameter estimation via
        the energy function ``-log p(y | theta)`` and its gradient).
    """
    update = _check_update(update)
    schedule = _schedules.resolve(method, steady_state)
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise TypeError(f"num_steps must be a positive int, got {type(num_steps).__name__}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps}")
    if not all(callable(getattr(optimizer, f, None)) for f in ("init", "update")):
        raise TypeError(
            "optimizer must be an optax.GradientTransformation (with init and update), "
            f"got {type(optimizer).__name__}"
        )
    params = validate_params(params)
    ys = validate_observations(ys, params, allow_batch=True)
    theta0 = _to_unconstrained(params, update)
    return _fit_jit(theta0, params, ys, optimizer, int(num_steps), schedule)
