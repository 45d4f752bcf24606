r"""Structures of the learned fields (MARSS-style constraints) and their free coordinates.

A field named in ``update=`` is ``"full"`` (every entry free; a covariance symmetric), or
structured:

* ``Linear(f, D)``: ``M.reshape(-1) == f + D @ beta`` (row-major), the general linear form
  of R's MARSS (fixed entries, zeros, entries shared between places);
* ``"diagonal"``: a diagonal matrix (a covariance, or a square ``A``, ``H``, ``B`` or ``D``);
* ``"scalar"``: ``c I``.

Internally a structured mean-side field (``m0, A, B, b, H, D, d``) is an :class:`Affine` map
``vec(M) = f + G beta`` (``"diagonal"`` and ``"scalar"`` on a square matrix are the affine
maps onto its diagonal), and a structured covariance (``P0, Q, R``) is a :class:`Pattern`:
every off-diagonal entry zero, each diagonal entry either fixed or ``c_i q_j`` with
``c_i > 0`` (Holmes 2012's covariances with a closed-form M-step: diagonal, shared variances,
fixed variances). :class:`UpdateSpec` carries the names and these resolved structures; it is
hashable (a static argument of compiled programs).

**Free coordinates** (natural units), in the order of ``spec.names``: a full mean-side field
its entries (row-major); a full covariance the entries of its upper triangle
(``numpy.triu_indices`` order: variances and covariances, not a Cholesky factor); an
:class:`Affine` field its ``beta``; a :class:`Pattern` covariance its variances ``q``.
:func:`pack` and :func:`unpack` map between an :class:`~jaxssm.LGSSM` and this vector;
:func:`num_free_params` counts it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxssm._base.types import LGSSM

__all__ = [
    "Linear",
    "Affine",
    "Pattern",
    "UpdateSpec",
    "COVARIANCE_FIELDS",
    "as_spec",
    "pack",
    "unpack",
    "coordinate_labels",
    "num_free_params",
    "field_to_unconstrained",
    "field_from_unconstrained",
]

#: The covariance fields; the others are mean-side (regression coefficients, m0).
COVARIANCE_FIELDS = ("P0", "Q", "R")


class Linear(NamedTuple):
    r"""A linear structure for a field in ``update=``: ``M.reshape(-1) == f + D @ beta``.

    The general linear form of R's MARSS package (Holmes 2012): ``f`` holds the fixed part
    and ``D`` says which free coordinates ``beta`` set which entries, in the row-major order
    of ``M.reshape(-1)``. Fixed entries have a zero row of ``D``; an entry shared between
    places has the same one-hot row in each.

    For a mean-side field (``m0, A, B, b, H, D, d``) any ``f`` and any ``D`` of full column
    rank. For a covariance (``P0, Q, R``) the closed-form M-step needs a diagonal pattern:
    every off-diagonal entry fixed at zero, each diagonal entry either fixed (``f_ii >= 0``,
    zero row of ``D``) or ``c beta_j`` with one positive coefficient ``c`` (``f_ii = 0``),
    e.g. variances shared between channels, or some fixed and the others free.

    Attributes:
        f: ``[n]``, ``n`` the number of entries of the field (``rows * cols``).
        D: ``[n, k]``, ``k >= 1`` free coordinates.

    Example:
        A companion-form AR(2) transition ``[[a1, a2], [1, 0]]``::

            Linear(f=[0, 0, 1, 0], D=[[1, 0], [0, 1], [0, 0], [0, 0]])
    """

    f: ArrayLike
    D: ArrayLike


def _frozen(x, dtype) -> np.ndarray:
    a = np.array(x, dtype=dtype)
    a.setflags(write=False)
    return a


class Affine:
    """A resolved mean-side structure ``vec(M) = f + G beta`` (hashable by value).

    Attributes:
        shape: the field's shape.
        f: ``[n]`` float64, ``G``: ``[n, k]`` float64 of full column rank, ``pinv``: ``[k, n]``
            its pseudo-inverse (``beta = pinv (vec(M) - f)``).
    """

    __slots__ = ("shape", "f", "G", "pinv", "_key")

    def __init__(self, shape: tuple[int, ...], f, G):
        self.shape = tuple(int(s) for s in shape)
        self.f = _frozen(f, np.float64)
        self.G = _frozen(G, np.float64)
        self.pinv = _frozen(np.linalg.pinv(self.G), np.float64)
        self._key = ("affine", self.shape, self.f.tobytes(), self.G.shape, self.G.tobytes())

    @property
    def k(self) -> int:
        return self.G.shape[1]

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, Affine) and self._key == other._key

    def __repr__(self):
        return f"Affine(shape={self.shape}, k={self.k})"

    def value(self, beta: jax.Array, dtype) -> jax.Array:
        """Return ``f + G beta`` reshaped; a fixed entry (zero row of ``G``) is exactly ``f``."""
        G = jnp.asarray(self.G, dtype)
        f = jnp.asarray(self.f, dtype)
        free = jnp.asarray(np.any(self.G != 0, axis=1))
        return jnp.where(free, f + G @ beta, f).reshape(self.shape)

    def coordinates(self, M: jax.Array) -> jax.Array:
        """Return the least-squares ``beta`` of ``M`` (exact when ``M`` has the structure)."""
        return jnp.asarray(self.pinv, M.dtype) @ (M.reshape(-1) - jnp.asarray(self.f, M.dtype))


class Pattern:
    """A resolved covariance structure: diagonal, each entry fixed or ``c_i q_{group_i}``.

    Attributes:
        dim: the covariance's size ``n``.
        fixed: ``[n]`` the fixed variances (used where ``group < 0``).
        group: ``[n]`` int, the coordinate of each diagonal entry, ``-1`` where fixed.
        coef: ``[n]`` the positive coefficients ``c_i`` (1 where fixed).
    """

    __slots__ = ("dim", "fixed", "group", "coef", "k", "_key")

    def __init__(self, fixed, group, coef):
        self.fixed = _frozen(fixed, np.float64)
        self.group = _frozen(group, np.int64)
        self.coef = _frozen(coef, np.float64)
        self.dim = self.fixed.shape[0]
        self.k = int(self.group.max()) + 1 if np.any(self.group >= 0) else 0
        self._key = ("pattern", self.fixed.tobytes(), self.group.tobytes(), self.coef.tobytes())

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, Pattern) and self._key == other._key

    def __repr__(self):
        return f"Pattern(dim={self.dim}, k={self.k})"

    def value(self, q: jax.Array, dtype) -> jax.Array:
        """Return ``diag(fixed or c_i q_{g_i})``: off-diagonal and fixed entries exact."""
        idx = np.maximum(self.group, 0)
        diag = jnp.where(
            jnp.asarray(self.group >= 0),
            jnp.asarray(self.coef, dtype) * q[idx],
            jnp.asarray(self.fixed, dtype),
        )
        return jnp.diag(diag)

    def coordinates(self, S: jax.Array) -> jax.Array:
        """``q_j = mean_{i in group j} S_ii / c_i``: the maximiser over the pattern.

        For a scatter ``S`` this maximises ``-log|Q| - tr(Q^{-1} S)`` over the pattern (the
        Gaussian term of a diagonal covariance separates over its diagonal entries); for a
        matrix with the pattern it returns its coordinates.
        """
        onehot = (self.group[:, None] == np.arange(self.k)[None, :]).astype(np.float64)
        counts = onehot.sum(axis=0)
        ratio = jnp.diagonal(S) / jnp.asarray(self.coef, S.dtype)
        return (jnp.asarray(onehot.T, S.dtype) @ ratio) / jnp.asarray(counts, S.dtype)

    def free_rows(self) -> np.ndarray:
        """Boolean ``[n]``: the diagonal entries set by a coordinate."""
        return self.group >= 0


class UpdateSpec(NamedTuple):
    """The fields ``update=`` learns and the structures of the structured ones (hashable).

    Attributes:
        names: the field names, in :class:`~jaxssm.LGSSM` order.
        structures: ``((name, Affine | Pattern), ...)`` for the structured fields only (a
            field absent here is ``"full"``).
    """

    names: tuple[str, ...]
    structures: tuple = ()

    def structure(self, name: str):
        """Return the :class:`Affine` or :class:`Pattern` of ``name``, ``None`` for full."""
        for n, s in self.structures:
            if n == name:
                return s
        return None


def as_spec(update) -> UpdateSpec:
    """Return an :class:`UpdateSpec` from checked names (all full) or a spec."""
    if isinstance(update, UpdateSpec):
        return update
    return UpdateSpec(tuple(update), ())


def _field_size(x) -> int:
    return int(np.prod(np.shape(x)))


def _sizes(params: LGSSM, spec: UpdateSpec) -> list[tuple[str, int]]:
    out = []
    for name in spec.names:
        s = spec.structure(name)
        x = getattr(params, name)
        if s is not None:
            out.append((name, s.k))
        elif name in COVARIANCE_FIELDS:
            n = np.shape(x)[-1]
            out.append((name, n * (n + 1) // 2))
        else:
            out.append((name, _field_size(x)))
    return out


def num_free_params(params: LGSSM, update) -> int:
    """Count the free scalars of the fields in ``update`` (a spec or checked names).

    A full mean-side field counts its entries, a full covariance ``n (n + 1) / 2``, a
    structured field its coordinates ``beta`` (``Linear``, ``"diagonal"`` and ``"scalar"``
    on a mean-side field) or ``q`` (a covariance pattern: ``n`` for ``"diagonal"``, 1 for
    ``"scalar"``). The ``k`` of AIC ``= 2 k - 2 log L`` and BIC ``= k log(n) - 2 log L``.
    """
    return int(sum(size for _, size in _sizes(params, as_spec(update))))


def _field_coordinates(name: str, x: jax.Array, s) -> jax.Array:
    if s is not None:
        return s.coordinates(x)
    if name in COVARIANCE_FIELDS:
        rows, cols = np.triu_indices(x.shape[-1])
        return x[rows, cols]
    return x.reshape(-1)


def _field_value(name: str, t: jax.Array, template: jax.Array, s) -> jax.Array:
    dtype = template.dtype
    if s is not None:
        return s.value(t, dtype)
    if name in COVARIANCE_FIELDS:
        n = template.shape[-1]
        rows, cols = np.triu_indices(n)
        upper = jnp.zeros((n, n), dtype).at[rows, cols].set(t)
        return upper + jnp.triu(upper, 1).T
    return t.reshape(template.shape)


def pack(params: LGSSM, update) -> jax.Array:
    """Return the free coordinates of ``params`` (natural units, module docstring)."""
    spec = as_spec(update)
    parts = [
        _field_coordinates(n, jnp.asarray(getattr(params, n)), spec.structure(n))
        for n in spec.names
    ]
    return jnp.concatenate([p.reshape(-1) for p in parts])


def unpack(theta: jax.Array, params: LGSSM, update) -> LGSSM:
    """``params`` with the fields of ``update`` set from the free coordinates ``theta``.

    Affine in ``theta`` (differentiable; the inverse of :func:`pack` on structured values).
    """
    spec = as_spec(update)
    new, start = {}, 0
    for name, size in _sizes(params, spec):
        template = jnp.asarray(getattr(params, name))
        t = theta[start : start + size]
        new[name] = _field_value(name, t, template, spec.structure(name))
        start += size
    return params._replace(**new)


def coordinate_labels(params: LGSSM, update) -> list[str]:
    """Label each free coordinate, for messages: ``A[0, 1]``, ``Q[0, 2]``, ``R.beta[1]``."""
    spec = as_spec(update)
    labels = []
    for name, size in _sizes(params, spec):
        s = spec.structure(name)
        shape = np.shape(getattr(params, name))
        if s is not None:
            labels += [f"{name}.beta[{j}]" for j in range(size)]
        elif name in COVARIANCE_FIELDS:
            rows, cols = np.triu_indices(shape[-1])
            labels += [f"{name}[{i}, {j}]" for i, j in zip(rows, cols, strict=True)]
        else:
            labels += [f"{name}[{', '.join(map(str, ix))}]" for ix in np.ndindex(*shape)]
    return labels


def field_to_unconstrained(x: jax.Array, s) -> jax.Array:
    """Unconstrained coordinates of a structured field: ``beta``, or ``log q`` (a pattern)."""
    if isinstance(s, Pattern):
        return jnp.log(s.coordinates(x))
    return s.coordinates(x)


def field_from_unconstrained(t: jax.Array, s, dtype) -> jax.Array:
    """Inverse of :func:`field_to_unconstrained`."""
    if isinstance(s, Pattern):
        return s.value(jnp.exp(t), dtype)
    return s.value(t, dtype)
