"""The ``update=`` argument with structures: parsing, and resolution against the parameters.

The one route of every entry point that accepts structures (``m_step``, ``fit_em``,
``fit_mle``, ``standard_errors``, the command line): :func:`parse_update` before the
parameters are checked (it gives the names the prologue needs), then
:func:`resolve_update` on the checked parameters, which returns the parameters projected
onto their structures and the hashable :class:`~jaxssm._base.structure.UpdateSpec`. Plain
names give an ``UpdateSpec`` without structures and leave the parameters as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

from jaxssm._args.checks import check_update
from jaxssm._base.structure import (
    COVARIANCE_FIELDS,
    Affine,
    Linear,
    Pattern,
    UpdateSpec,
)
from jaxssm._base.types import LGSSM, PARAMETER_NAMES

__all__ = ["RawUpdate", "parse_update", "resolve_update"]

_KINDS = ("full", "diagonal", "scalar")
_VECTORS = ("m0", "b", "d")
#: The covariance whose Gaussian term weighs each mean-side field's regression.
WEIGHT = {"A": "Q", "B": "Q", "b": "Q", "H": "R", "D": "R", "d": "R", "m0": "P0"}


class RawUpdate(tuple):
    """Checked names (a tuple, in LGSSM order) with the raw structures in ``.structures``."""

    structures: dict

    def __new__(cls, names, structures):
        self = super().__new__(cls, names)
        self.structures = structures
        return self


def _check_linear(name: str, s: Linear) -> tuple[np.ndarray, np.ndarray]:
    try:
        f = np.asarray(s.f, dtype=np.float64)
        D = np.asarray(s.D, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"update[{name!r}]: Linear(f, D) needs real arrays f [n] and D [n, k]"
        ) from None
    if f.ndim != 1 or D.ndim != 2 or D.shape[0] != f.shape[0]:
        raise ValueError(
            f"update[{name!r}]: Linear(f, D) needs f [n] and D [n, k] with the same n, got f "
            f"of shape {f.shape} and D of shape {D.shape}"
        )
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(D))):
        raise ValueError(f"update[{name!r}]: Linear(f, D) must be finite")
    if D.shape[1] == 0:
        raise ValueError(
            f"update[{name!r}]: Linear(f, D) has no free coordinate (D has 0 columns); "
            f"leave {name} out of update to hold it fixed"
        )
    return f, D


def parse_update(update) -> RawUpdate:
    """Check ``update=`` (names, or a mapping ``{field: structure}``) without the parameters.

    A structure is ``"full"``, ``"diagonal"``, ``"scalar"`` or a :class:`~jaxssm.Linear`;
    the shapes are checked later by :func:`resolve_update`.

    Raises:
        TypeError: ``update`` or a structure of the wrong type.
        ValueError: an unknown field or structure, a repeated or empty ``update``, a
            ``Linear`` with inconsistent or non-finite ``f``, ``D``.
    """
    if not isinstance(update, Mapping):
        return RawUpdate(check_update(update), {})
    for key in update:
        if not isinstance(key, str):
            raise TypeError(f"update's keys must be parameter names (str), got {key!r}")
    names = check_update(tuple(update))
    raw = {}
    for name in names:
        s = update[name]
        if isinstance(s, str):
            if s not in _KINDS:
                raise ValueError(
                    f"update[{name!r}] = {s!r} is not a structure: use 'full', 'diagonal', "
                    "'scalar' or jaxssm.Linear(f, D)"
                )
            if s in ("diagonal", "scalar") and name in _VECTORS:
                raise ValueError(
                    f"update[{name!r}] = {s!r} has no meaning for the vector {name}; use "
                    "jaxssm.Linear(f, D) for fixed or shared entries"
                )
            if s != "full":
                raw[name] = s
        elif isinstance(s, Linear):
            raw[name] = _check_linear(name, s)
        else:
            raise TypeError(
                f"update[{name!r}] must be 'full', 'diagonal', 'scalar' or jaxssm.Linear(f, D), "
                f"got {type(s).__name__}"
            )
    return RawUpdate(names, raw)


def _pattern(name: str, raw, n: int) -> Pattern:
    """Resolve a covariance structure to a :class:`Pattern`, or raise (no closed form)."""
    if raw == "diagonal":
        return Pattern(np.zeros(n), np.arange(n), np.ones(n))
    if raw == "scalar":
        return Pattern(np.zeros(n), np.zeros(n, np.int64), np.ones(n))
    f, D = raw
    if f.shape[0] != n * n:
        raise ValueError(
            f"update[{name!r}]: Linear(f, D) for {name} [{n}, {n}] needs f [{n * n}] and "
            f"D [{n * n}, k], got f of shape {f.shape}"
        )
    F, G = f.reshape(n, n), D.reshape(n, n, -1)
    off = ~np.eye(n, dtype=bool)
    hint = (
        f"Linear structures of a covariance with a closed-form M-step (Holmes 2012) are "
        f"diagonal: every off-diagonal entry fixed at 0, each diagonal entry fixed (>= 0) or "
        f"c * beta_j with one c > 0; {name} has no closed form otherwise"
    )
    if np.any(F[off] != 0) or np.any(G[off] != 0):
        raise ValueError(f"update[{name!r}]: {hint} (an off-diagonal entry is not fixed at 0)")
    fixed, group, coef = np.zeros(n), np.full(n, -1, np.int64), np.ones(n)
    for i in range(n):
        row = G[i, i]
        nz = np.flatnonzero(row)
        if nz.size == 0:
            if F[i, i] < 0:
                raise ValueError(f"update[{name!r}]: fixed variance {name}[{i}, {i}] < 0")
            fixed[i] = F[i, i]
        elif nz.size > 1 or row[nz[0]] <= 0 or F[i, i] != 0:
            raise ValueError(
                f"update[{name!r}]: {hint} ({name}[{i}, {i}] = {F[i, i]:g} + {row.tolist()} @ beta)"
            )
        else:
            group[i], coef[i] = nz[0], row[nz[0]]
    unused = sorted(set(range(G.shape[-1])) - set(group[group >= 0].tolist()))
    if unused:
        raise ValueError(
            f"update[{name!r}]: beta{unused} set no entry of {name} (zero columns of D)"
        )
    return Pattern(fixed, group, coef)


def _affine(name: str, raw, shape: tuple[int, ...]) -> Affine:
    """Resolve a mean-side structure to an :class:`Affine` map, or raise."""
    n = int(np.prod(shape))
    if isinstance(raw, str):
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(
                f"update[{name!r}] = {raw!r} needs a square {name}, got shape {shape}; use "
                "jaxssm.Linear(f, D)"
            )
        d = shape[0]
        diag = np.arange(d) * (d + 1)
        G = np.zeros((n, d if raw == "diagonal" else 1))
        G[diag, np.arange(d) if raw == "diagonal" else 0] = 1.0
        return Affine(shape, np.zeros(n), G)
    f, D = raw
    if f.shape[0] != n:
        raise ValueError(
            f"update[{name!r}]: Linear(f, D) for {name} of shape {shape} needs f [{n}] and "
            f"D [{n}, k] (row-major entries), got f of shape {f.shape}"
        )
    if np.linalg.matrix_rank(D) < D.shape[1]:
        raise ValueError(
            f"update[{name!r}]: the columns of D in Linear(f, D) are linearly dependent, so "
            f"{name}'s coordinates beta are not identified; drop the redundant columns"
        )
    return Affine(shape, f, D)


def _contradiction(name: str, x: np.ndarray, projected: np.ndarray, raw) -> None:
    scale = max(float(np.max(np.abs(x))) if x.size else 0.0, 1.0)
    tol = float(np.sqrt(np.finfo(x.dtype).eps)) * scale
    err = float(np.max(np.abs(x - projected))) if x.size else 0.0
    if not err <= tol:
        what = "Linear(f, D)" if isinstance(raw, tuple) else repr(raw)
        raise ValueError(
            f"the starting {name} contradicts its structure {what}: the nearest {name} with "
            f"the structure (least squares) differs by {err:.3g} in an entry (tolerance "
            f"{tol:.3g}); start from a {name} with the structure"
        )


def resolve_update(
    params: LGSSM, update: RawUpdate, absent: tuple[str, ...] = ()
) -> tuple[LGSSM, UpdateSpec]:
    """Resolve structures against checked ``params``; project the start onto them.

    Args:
        params: checked parameters (absent fields in ``update`` already set to zeros).
        update: from :func:`parse_update`.
        absent: fields that were ``None`` in the user's parameters: they start at the
            projection of zero, without the contradiction check.

    Returns:
        ``(params, spec)``: the structured fields replaced by their projection (equal to the
        start within ``sqrt(eps)`` relative), and the :class:`UpdateSpec`.

    Raises:
        ValueError: shapes that do not fit, a covariance structure without a closed form, a
            start that contradicts its structure, a structured mean-side field whose
            regression is weighted by a covariance that is singular on its rows.
    """
    names = tuple(update)
    raw = getattr(update, "structures", {})
    if not raw:
        return params, UpdateSpec(names, ())
    structures, new = [], {}
    for name in PARAMETER_NAMES:
        if name not in raw:
            continue
        x = getattr(params, name)
        if np.ndim(x) != (1 if name in _VECTORS else 2):
            raise ValueError(
                f"update[{name!r}]: {name} is time-varying; a structure needs a fixed {name}"
            )
        shape = tuple(np.shape(x))
        s = (
            _pattern(name, raw[name], shape[0])
            if name in COVARIANCE_FIELDS
            else _affine(name, raw[name], shape)
        )
        structures.append((name, s))
        if isinstance(x, jax.core.Tracer):
            continue
        value = s.value(s.coordinates(x), x.dtype)
        if name not in absent:
            _contradiction(name, np.asarray(x), np.asarray(value), raw[name])
        new[name] = value
    spec = UpdateSpec(names, tuple(structures))
    params = params._replace(**new)
    _check_weights(params, spec)
    return params, spec


def _check_weights(params: LGSSM, spec: UpdateSpec) -> None:
    """Check that a structured regression's covariance is nonsingular on the rows it sets.

    The constrained M-step is a generalised least squares weighted by the inverse of the
    current covariance (``Q`` for ``A, B, b``; ``R`` for ``H, D, d``; ``P0`` for ``m0``). A
    covariance with a structurally fixed zero variance on such a row, or a concrete start
    singular there, has no closed form.
    """
    for name, s in spec.structures:
        if not isinstance(s, Affine):
            continue
        cov_name = WEIGHT[name]
        G = s.G.reshape(s.shape[0], -1, s.k) if len(s.shape) == 2 else s.G[:, None, :]
        rows = np.flatnonzero(np.any(G != 0, axis=(1, 2)))
        pattern = spec.structure(cov_name)
        if isinstance(pattern, Pattern):
            bad = [int(i) for i in rows if pattern.group[i] < 0 and pattern.fixed[i] == 0]
            if bad:
                raise ValueError(
                    f"update[{name!r}]: its structure sets rows {bad} whose variance in "
                    f"{cov_name} is fixed at 0; the weighted regression has no closed form "
                    f"(fix those rows of {name}, or free the variances)"
                )
        C = getattr(params, cov_name)
        if isinstance(C, jax.core.Tracer) or np.ndim(C) != 2:
            continue
        sub = np.asarray(C, np.float64)[np.ix_(rows, rows)]
        eig = np.linalg.eigvalsh(0.5 * (sub + sub.T)) if rows.size else np.ones(1)
        if not eig[0] > np.finfo(np.asarray(C).dtype).eps * max(float(eig[-1]), 1e-300) * len(rows):
            raise ValueError(
                f"update[{name!r}]: the structured {name} is estimated by least squares "
                f"weighted by {cov_name}^-1, but {cov_name} is singular on the rows {name} "
                f"sets ({rows.tolist()}; smallest eigenvalue {eig[0]:.3g}); start from a "
                f"{cov_name} positive definite there"
            )
