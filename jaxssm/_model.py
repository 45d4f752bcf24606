"""The model's parameters and the checks every public entry point runs on its inputs."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["LGSSM", "validate_params", "validate_observations"]


class LGSSM(NamedTuple):
    r"""Parameters of a linear-Gaussian state-space model (a pytree).

    .. math::

        x_0 \sim N(m_0, P_0), \quad
        x_k = A x_{k-1} + q_k,\ q_k \sim N(0, Q), \quad
        y_k = H x_k + r_k,\ r_k \sim N(0, R), \quad k = 1..N.

    ``x_0`` is not observed; ``ys`` holds ``y_1..y_N``.

    Attributes:
        m0: initial mean, ``[D]``.
        P0: initial covariance, ``[D, D]``, symmetric positive definite.
        A: transition matrix, ``[D, D]``.
        Q: process-noise covariance, ``[D, D]``, symmetric positive definite.
        H: observation matrix, ``[Dy, D]``.
        R: observation-noise covariance, ``[Dy, Dy]``, symmetric positive definite.
    """

    m0: ArrayLike
    P0: ArrayLike
    A: ArrayLike
    Q: ArrayLike
    H: ArrayLike
    R: ArrayLike


_COVARIANCES = ("P0", "Q", "R")


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _as_float_array(name: str, x) -> jax.Array:
    """Convert to a JAX array and insist on a real floating dtype."""
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = jnp.asarray(x)
        dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a real floating dtype (float32 or float64), got {np.dtype(dtype)}"
        )
    return jnp.asarray(x)


def _check_shape(name: str, x, expected: tuple, meaning: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {meaning} = {tuple(expected)}, got shape {tuple(x.shape)}"
        )


def _check_spd(name: str, x) -> None:
    """Symmetry and positive definiteness of a concrete matrix (skipped under tracing)."""
    if not _is_concrete(x):
        return
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got non-finite entries")
    eps = float(jnp.finfo(x.dtype).eps)
    scale = max(float(np.max(np.abs(a))), np.finfo(np.float64).tiny)
    if np.max(np.abs(a - a.T)) > np.sqrt(eps) * scale:
        raise ValueError(
            f"{name} must be symmetric positive definite, got a matrix of shape {a.shape} "
            f"with max |{name} - {name}^T| = {np.max(np.abs(a - a.T)):.3g}"
        )
    try:
        np.linalg.cholesky(0.5 * (a + a.T))
    except np.linalg.LinAlgError:
        eig = np.linalg.eigvalsh(0.5 * (a + a.T))
        raise ValueError(
            f"{name} must be symmetric positive definite, got shape {a.shape} "
            f"with smallest eigenvalue {eig[0]:.3g}"
        ) from None


def validate_params(params: LGSSM, *, check_values: bool = True) -> LGSSM:
    """Check shapes, dtypes and (for concrete values) covariances of ``params``.

    Shapes and dtypes are checked at trace time. When the values are concrete (not traced),
    ``P0``, ``Q`` and ``R`` are also checked to be finite, symmetric and positive definite.

    Args:
        params: an :class:`LGSSM`.
        check_values: also check symmetry / positive definiteness of concrete covariances.

    Returns:
        ``params`` with every field converted to a JAX array.

    Raises:
        TypeError: a field is missing, not floating point, or the dtypes differ.
        ValueError: a field has the wrong shape, or a covariance is not SPD.
    """
    if not isinstance(params, LGSSM):
        raise TypeError(f"params must be a jaxssm.LGSSM, got {type(params).__name__}")
    fields = {name: _as_float_array(name, getattr(params, name)) for name in LGSSM._fields}
    A = fields["A"]
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix [D, D], got shape {tuple(A.shape)}")
    D = A.shape[0]
    H = fields["H"]
    if H.ndim != 2 or H.shape[1] != D:
        raise ValueError(
            f"H must have shape [Dy, D] with D = {D} (from A), got shape {tuple(H.shape)}"
        )
    Dy = H.shape[0]
    _check_shape("m0", fields["m0"], (D,), "[D]")
    _check_shape("P0", fields["P0"], (D, D), "[D, D]")
    _check_shape("Q", fields["Q"], (D, D), "[D, D]")
    _check_shape("R", fields["R"], (Dy, Dy), "[Dy, Dy]")
    dtypes = {name: np.dtype(x.dtype) for name, x in fields.items()}
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{k}={v}" for k, v in dtypes.items())
        raise TypeError(f"all LGSSM fields must share one floating dtype, got {listing}")
    if check_values:
        for name in _COVARIANCES:
            _check_spd(name, fields[name])
    return LGSSM(**fields)


def validate_observations(
    ys, params: LGSSM, *, name: str = "ys", allow_batch: bool = False
) -> jax.Array:
    """Check ``ys`` against validated ``params``: shape ``[N, Dy]`` (or ``[B, N, Dy]``), N >= 1.

    Args:
        ys: observations.
        params: parameters already passed through :func:`validate_params`.
        name: the argument's name for error messages.
        allow_batch: accept a leading batch axis ``[B, N, Dy]``.

    Returns:
        ``ys`` as a JAX array.
    """
    ys = _as_float_array(name, ys)
    Dy = params.H.shape[0]
    expected = "[N, Dy] or [B, N, Dy]" if allow_batch else "[N, Dy]"
    ok_ndim = (2, 3) if allow_batch else (2,)
    if ys.ndim not in ok_ndim:
        hint = "" if allow_batch or ys.ndim != 3 else " (use jax.vmap for a batch of sequences)"
        raise ValueError(
            f"{name} must have shape {expected} with Dy = {Dy}, "
            f"got shape {tuple(ys.shape)} (ndim {ys.ndim}){hint}"
        )
    if ys.shape[-1] != Dy:
        raise ValueError(
            f"{name} must have shape {expected} with Dy = {Dy} (from H), "
            f"got shape {tuple(ys.shape)}"
        )
    if ys.shape[-2] < 1:
        raise ValueError(f"{name} must hold at least one step (N >= 1), got shape {ys.shape}")
    if ys.dtype != params.A.dtype:
        raise TypeError(
            f"{name} must have the parameters' dtype {np.dtype(params.A.dtype)}, "
            f"got {np.dtype(ys.dtype)}"
        )
    return ys
