r"""The general model in the form the schedules run, and per-step access to its fields.

Two facts let every schedule support inputs, offsets and time-varying matrices with little
code of its own:

* **The observation offset is a shift of the data.** With ``e_k = D_k u_k + d_k``,
  ``y_k = H x_k + e_k + r_k`` is the plain observation equation for ``y_k - e_k`` (a NaN
  entry stays NaN), so the filter, the smoother and the likelihood of the model are those of
  the shifted series. Only the EM statistics need the data themselves (:func:`reduce` returns
  ``e`` to add back).
* **The state offset is one vector per step.** With ``c_k = B_k u_k + b_k`` the predicted
  mean is ``A_k m_{k-1} + c_k``; the schedules take it as a time-varying ``b`` (``[N, D]``),
  the only optional field a reduced model keeps.

A time-varying field carries a leading axis of length ``N`` (entry ``k - 1`` for step
``k``). :func:`split` separates those from the time-invariant ones, so that a ``lax.scan``
or a ``vmap`` over time takes the time-varying ones as per-step inputs and closes over the
rest; :func:`merge` puts one step's model back together. For a model with no time-varying
field the per-step part is empty (all ``None``) and the schedules compile to the program of
the plain model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssm._base.types import BASE_NDIM, LGSSM, OPTIONAL_NAMES, TIME_VARYING_NAMES

__all__ = [
    "is_time_varying",
    "time_varying_names",
    "has_time_varying_matrices",
    "extra_names",
    "has_extras",
    "is_plain",
    "uses_input_sums",
    "EMPTY",
    "split",
    "merge",
    "step",
    "offsets",
    "reduce",
    "augmented_inputs",
    "start_absent",
]

#: An :class:`LGSSM` with every field ``None`` (an empty pytree).
EMPTY = LGSSM(*(None,) * len(LGSSM._fields))


def is_time_varying(params: LGSSM, name: str) -> bool:
    """Whether field ``name`` of ``params`` carries a leading time axis (static)."""
    x = getattr(params, name)
    return x is not None and jnp.ndim(x) == BASE_NDIM[name] + 1


def time_varying_names(params: LGSSM) -> tuple[str, ...]:
    """Return the fields of ``params`` that carry a leading time axis, in field order (static)."""
    return tuple(n for n in TIME_VARYING_NAMES if is_time_varying(params, n))


def has_time_varying_matrices(params: LGSSM) -> bool:
    """Whether any of ``A, Q, H, R`` varies over time (then no steady state; static)."""
    return any(is_time_varying(params, n) for n in ("A", "Q", "H", "R"))


def extra_names(params: LGSSM) -> tuple[str, ...]:
    """Return the optional fields ``B, b, D, d`` that ``params`` sets (static)."""
    return tuple(n for n in OPTIONAL_NAMES if getattr(params, n) is not None)


def has_extras(params: LGSSM) -> bool:
    """Whether any of the optional fields ``B, b, D, d`` is present (static)."""
    return bool(extra_names(params))


def is_plain(params: LGSSM) -> bool:
    """Whether ``params`` has no inputs, offsets or time-varying fields (static)."""
    return not extra_names(params) and not time_varying_names(params)


def uses_input_sums(params: LGSSM, inputs) -> bool:
    """Whether the EM statistics carry the input sums ``U, XU, XpU, YU`` (static).

    They do for a model with inputs or any of ``B, b, D, d``.
    """
    return inputs is not None or has_extras(params)


def split(params: LGSSM) -> tuple[LGSSM, LGSSM]:
    """Split ``params`` into ``(fixed, varying)``: time-invariant and time-varying fields.

    Each is an :class:`LGSSM` with ``None`` in the other's fields; ``varying``'s leaves all
    have the leading axis ``N`` (scan over it, or vmap with ``in_axes=0``).
    """
    names = time_varying_names(params)
    fixed = params._replace(**{n: None for n in names})
    varying = EMPTY._replace(**{n: getattr(params, n) for n in names})
    return fixed, varying


def merge(fixed: LGSSM, varying_step: LGSSM) -> LGSSM:
    """One step's model: the fields of ``varying_step`` that are set, the rest from ``fixed``."""
    return LGSSM(*(v if v is not None else f for f, v in zip(fixed, varying_step, strict=True)))


def step(params: LGSSM, k) -> LGSSM:
    """Return the model of row ``k`` (step ``k + 1``): time-varying fields indexed at ``k``."""
    fixed, varying = split(params)
    return merge(fixed, jax.tree.map(lambda x: x[k], varying))


def _per_step(gain, offset, inputs, num_steps: int, dim: int, dtype):
    """``gain_k u_k + offset_k`` for ``k = 1..N``, ``[N, dim]``, or ``None`` if both absent."""
    out = None
    if gain is not None:
        if jnp.ndim(gain) == 3:
            out = jnp.einsum("nij,nj->ni", gain, inputs)
        else:
            out = inputs @ gain.T
    if offset is not None:
        off = jnp.broadcast_to(offset, (num_steps, dim)).astype(dtype)
        out = off if out is None else out + off
    return out


def offsets(params: LGSSM, inputs, num_steps: int) -> tuple[jax.Array | None, jax.Array | None]:
    """Return ``(c, e)``: the state and observation offsets of every step.

    ``c_k = B_k u_k + b_k`` ``[N, D]`` and ``e_k = D_k u_k + d_k`` ``[N, Dy]``; ``None`` where
    the model has neither term.
    """
    D, Dy = params.A.shape[-1], params.H.shape[-2]
    dtype = params.A.dtype
    c = _per_step(params.B, params.b, inputs, num_steps, D, dtype)
    e = _per_step(params.D, params.d, inputs, num_steps, Dy, dtype)
    return c, e


def reduce(params: LGSSM, ys: jax.Array, inputs) -> tuple[LGSSM, jax.Array, jax.Array | None]:
    """Return the model and data the schedules run: ``(core, ys - e, e)``.

    ``core`` has the fields ``m0, P0, A, Q, H, R`` of ``params`` and, where the model has a
    state offset, ``b = c [N, D]`` (:func:`offsets`); ``B``, ``D`` and ``d`` are ``None``.
    A model without optional fields comes back unchanged, with ``ys`` and ``e = None``.
    """
    if not has_extras(params):
        return params, ys, None
    c, e = offsets(params, inputs, ys.shape[-2])
    core = params._replace(B=None, b=c, D=None, d=None)
    return core, (ys if e is None else ys - e), e


def augmented_inputs(inputs, steps: tuple[int, ...], dtype) -> jax.Array:
    """``v_k = [u_k; 1]`` (``[1]`` without inputs): the M-step's regressors.

    ``steps`` is the observations' leading shape, ``ys.shape[:-1]``: ``(N,)`` gives
    ``[N, Du + 1]``, a batch ``(B, N)`` gives ``[B, N, Du + 1]``.
    """
    ones = jnp.ones((*steps, 1), dtype)
    return ones if inputs is None else jnp.concatenate([inputs, ones], axis=-1)


def start_absent(params: LGSSM, update: tuple[str, ...], inputs) -> LGSSM:
    """Zeros for the absent ``B, b, D, d`` that ``update`` names (their starting value)."""
    D, Dy, dtype = params.A.shape[-1], params.H.shape[-2], params.A.dtype
    Du = None if inputs is None else int(jnp.shape(inputs)[-1])
    shapes = {"B": (D, Du), "b": (D,), "D": (Dy, Du), "d": (Dy,)}
    fill = {}
    for name, shape in shapes.items():
        if name in update and getattr(params, name) is None:
            if None in shape:
                raise ValueError(
                    f"update names {name!r}, an input gain, but no inputs were given; pass "
                    "inputs= [N, Du]"
                )
            fill[name] = jnp.zeros(shape, dtype)
    return params._replace(**fill)
