r"""The boundary stage's coordinates: its frame, the model it assembles, and L-BFGS's step.

:mod:`jaxssm._learn.boundary` searches ``log p(y)`` in coordinates scaled by the complete-data
information, so that one unit is about one standard error (its docstring says why and how).
This module holds the pieces that do not depend on the stage's state: the frame built at a
point (``build_frame``: the base, the left and right scalings, the kept ranks), the model at a
coordinate vector (``assemble``), ``log p(y)`` with its exact gradient there
(``value_and_grad``), the flattening of the coordinates (``Flat``) and L-BFGS's two-loop
recursion (``two_loop``), and the symmetric ``eigh`` the stage and its block share.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxssm._base import compile as _compile
from jaxssm._base.types import LGSSM
from jaxssm._schedules import dispatch as _dispatch
from jaxssm._schedules import plan as _plan

__all__ = [
    "COVARIANCES",
    "SCALE",
    "eigh",
    "inv_sqrt",
    "build_frame",
    "assemble",
    "value_and_grad",
    "Flat",
    "two_loop",
]

#: The covariances whose vanishing directions the stage handles.
COVARIANCES = ("Q", "R", "P0")
#: The field whose Gaussian term scales each field's coordinates.
SCALE = {"A": "Q", "B": "Q", "b": "Q", "H": "R", "D": "R", "d": "R", "m0": "P0"}


def eigh(c) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs (ascending) of the symmetric part of ``c``, in float64 NumPy."""
    c = np.asarray(c, np.float64)
    return np.linalg.eigh(0.5 * (c + c.T))


def inv_sqrt(s: np.ndarray) -> np.ndarray:
    """``s^{-1/2}`` of a symmetric PSD ``s``, its eigenvalues floored at ``1e-12 lambda_max``."""
    w, v = eigh(s)
    w = np.maximum(w, 1e-12 * max(w[-1], 1e-300))
    return (v / np.sqrt(w)) @ v.T


def build_frame(params: LGSSM, stats, update, rank_tol, num_steps, num_sequences):
    """Build the coordinates' frame at ``params``: ``(base, left, right, ranks)`` (NumPy)."""
    dtype = np.dtype(params.A.dtype)
    base, left, right, ranks = {}, {}, {}, {}
    scales = {}
    for cov in COVARIANCES:
        w, v = eigh(getattr(params, cov))
        keep = w > rank_tol * max(w[-1], 0.0)
        floor = w[keep].min() if keep.any() else max(w[-1], 1e-300)
        n = num_sequences if cov == "P0" else num_steps
        scales[cov] = (w, v, keep, (v * np.sqrt(np.maximum(w, floor))) / np.sqrt(n))
    for name in update:
        if name in COVARIANCES:
            w, v, keep, t = scales[name]
            # All n columns, the dropped ones masked by ``right`` (static shapes: one
            # compilation whatever the rank).
            base[name] = v * np.sqrt(np.maximum(w, 0.0))
            left[name] = t
            right[name] = np.diag(keep.astype(np.float64))
            ranks[name] = int(keep.sum())
            continue
        x = np.asarray(getattr(params, name), np.float64)
        base[name] = x
        left[name] = scales[SCALE[name]][3]
        if name == "A":
            right[name] = inv_sqrt(np.asarray(stats.Phi))
        elif name == "H":
            right[name] = inv_sqrt(np.asarray(stats.Sigma))
    cast = lambda d: {k: jnp.asarray(a, dtype) for k, a in d.items()}  # noqa: E731
    return cast(base), cast(left), cast(right), ranks


def assemble(theta, zeros, base, left, right, params):
    """Assemble the model at ``theta``; ``zeros`` (added to the covariances) carry ``dC``."""
    fields = {}
    for name, x in theta.items():
        if name in COVARIANCES:
            lmat = (base[name] + left[name] @ x) @ right[name]
            fields[name] = lmat @ lmat.T + zeros[name]
        else:
            step = left[name] @ x
            if name in right:
                step = step @ right[name]
            fields[name] = base[name] + step
    return params._replace(**fields)


@partial(_compile.jit, static_argnames=("schedule", "paths"))
def value_and_grad(theta, zeros, base, left, right, params, ys, inputs, *, schedule, paths):
    """``log p(y)``, its gradient in ``theta`` and in the full covariances (``zeros``).

    With ``paths`` the fast path alone (fully observed data), reverse mode goes one path at a
    time (:func:`jaxssm._schedules.plan.exact_on_fast_path`): through a program that holds
    both paths it pays for both branches' residuals.
    """

    def f(th_z, p):
        model = assemble(*th_z, base, left, right, params)
        return _dispatch.run(
            _dispatch.Kind.LOG_LIKELIHOOD, model, ys, schedule, inputs=inputs, paths=p
        )

    if paths is _dispatch.Paths.FAST:
        objective = _plan.exact_on_fast_path(f)
    else:
        objective = lambda th_z: f(th_z, paths)[0]  # noqa: E731
    value, (g_theta, g_cov) = jax.value_and_grad(objective)((theta, zeros))
    return value, g_theta, g_cov


class Flat:
    """Flatten ``{name: array}`` in a fixed order (NumPy float64)."""

    def __init__(self, shapes: dict):
        self.names = list(shapes)
        self.shapes = shapes
        self.sizes = [int(np.prod(shapes[n])) for n in self.names]

    def ravel(self, tree) -> np.ndarray:
        return np.concatenate([np.asarray(tree[n], np.float64).ravel() for n in self.names])

    def unravel(self, x: np.ndarray, dtype) -> dict:
        out, i = {}, 0
        for n, k in zip(self.names, self.sizes, strict=True):
            out[n] = jnp.asarray(x[i : i + k].reshape(self.shapes[n]), dtype)
            i += k
        return out


def two_loop(g, memory):
    """L-BFGS's ascent step ``H g`` (``memory``: pairs ``(s, y)``, ``y`` = -change of ``g``)."""
    q = g.copy()
    alphas = []
    for s, y in reversed(memory):
        a = (s @ q) / (y @ s)
        alphas.append(a)
        q -= a * y
    if memory:
        s, y = memory[-1]
        q *= (s @ y) / (y @ y)
    else:
        q /= max(float(np.linalg.norm(g)), 1.0)
    for (s, y), a in zip(memory, reversed(alphas), strict=True):
        b = (y @ q) / (y @ s)
        q += (a - b) * s
    return q
