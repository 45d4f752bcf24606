r"""Checks of a diffuse ``P0``: ``+inf`` on its diagonal marks an exactly diffuse component.

:func:`diffuse_components` checks the pattern of a concrete ``P0`` with ``inf`` entries and
returns the diffuse mask; :func:`check_p0` is ``validate_params``'s check of ``P0``;
:data:`DIFFUSE_SUPPORTED` names the entry points that accept a diffuse ``P0``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxssm._args.checks import check_psd, is_concrete

__all__ = ["DIFFUSE_SUPPORTED", "diffuse_components", "check_p0"]

#: The entry points that accept a diffuse ``P0`` (``inf`` on its diagonal).
DIFFUSE_SUPPORTED = (
    "kalman_filter, rts_smoother, log_likelihood, posterior_sample, forecast, e_step and "
    "fit_em, with method='sequential', steady_state None or False and form='cov'"
)


def diffuse_components(a: np.ndarray) -> np.ndarray:
    """Check the pattern of a concrete ``P0`` with ``inf`` entries; return the diffuse mask.

    ``+inf`` may appear only on the diagonal, and a diffuse component's row and column of
    ``P0`` are otherwise zero; ``-inf`` and NaN are errors. The message names ``P0``.
    """
    nan = np.isnan(a)
    if nan.any():
        first = tuple(int(i) for i in np.argwhere(nan)[0])
        raise ValueError(
            f"P0 must be finite, or +inf on its diagonal to mark a diffuse component, got nan "
            f"at index {first}"
        )
    neg = np.isneginf(a)
    if neg.any():
        first = tuple(int(i) for i in np.argwhere(neg)[0])
        raise ValueError(
            f"P0 must be finite, or +inf on its diagonal to mark a diffuse component, got -inf "
            f"at index {first}"
        )
    pos = np.isposinf(a)
    off = pos & ~np.eye(a.shape[0], dtype=bool)
    if off.any():
        first = tuple(int(i) for i in np.argwhere(off)[0])
        raise ValueError(
            f"P0 may hold inf only on its diagonal (a diffuse component of x_0), got inf at "
            f"index {first}"
        )
    diffuse = np.diagonal(pos).copy()
    rows = diffuse[:, None] | diffuse[None, :]
    bad = rows & ~np.eye(a.shape[0], dtype=bool) & (a != 0)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        c = i if diffuse[i] else j
        raise ValueError(
            f"P0's row and column of the diffuse component {c} (inf at P0[{c}, {c}]) must "
            f"otherwise be zero, got P0[{i}, {j}] = {a[i, j]:.6g}"
        )
    return diffuse


def check_p0(x, allow_diffuse: bool) -> None:
    """``P0``: PSD, or (where ``allow_diffuse``) a diffuse pattern with a PSD known part."""
    if not is_concrete(x):
        return
    a = np.asarray(x, dtype=np.float64)
    if not np.isinf(a).any():
        check_psd("P0", x)
        return
    diffuse = diffuse_components(a)
    if not allow_diffuse:
        raise ValueError(
            f"P0 has inf on its diagonal (exact diffuse initialisation of the components "
            f"{np.flatnonzero(diffuse).tolist()}), which this entry point does not support; "
            f"diffuse P0 is supported by {DIFFUSE_SUPPORTED}; elsewhere give P0 finite"
        )
    known = np.where(diffuse[:, None] | diffuse[None, :], 0.0, a)
    check_psd(
        "P0 (its known part, without the diffuse rows and columns)", jnp.asarray(known, x.dtype)
    )
