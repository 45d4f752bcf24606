"""The model set-up of the SARCOS exercise (exercise 12), built from a data array.

The exercise models the 21 SARCOS inputs (7 joints x position, velocity, acceleration,
ordered all positions, then all velocities, then all accelerations) as a fully observed
state with a (not quite isotropic) sensor noise, starts from the first data row and learns
the transition ``(A, Q)`` by EM from a white-noise model (``A = 0``, random diagonal ``Q``).
:func:`exercise_setup` builds exactly that model, for any number of joints.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jaxssm._model import LGSSM

__all__ = ["ExerciseSetup", "exercise_setup", "EXERCISE_NOISE"]

#: Observation-noise variances of (position, velocity, acceleration) in the exercise.
EXERCISE_NOISE = (0.01, 0.01, 1.0)


class ExerciseSetup(NamedTuple):
    """The exercise's initial model and the observations it is fitted to.

    Attributes:
        params: the white-noise starting :class:`~jaxssm.LGSSM` (``D = Dy = 3 J``).
        ys: observations ``y_1..y_N``, ``[N, 3 J]``: the data rows after the first.
    """

    params: LGSSM
    ys: jax.Array


def exercise_setup(
    Y: ArrayLike, key: jax.Array, *, dtype: DTypeLike | None = None
) -> ExerciseSetup:
    r"""Build the exercise's model set-up from a data array ``Y [N+1, 3 J]``.

    With ``J`` joints (7 for SARCOS, so ``3 J = 21``) and ``I`` the ``J x J`` identity:

    * ``m0 = Y[0]`` and ``ys = Y[1:]``, so smoother row ``k`` lines up with data row ``k``;
    * ``H = I_{3J}`` (the whole state is observed);
    * ``R = kron(diag(0.01, 0.01, 1), I)`` (positions and velocities are precise,
      accelerations noisy) and ``P0 = R``;
    * the white-noise start of the EM: ``A = 0`` and ``Q = 0.01 diag(u)`` with
      ``u ~ Uniform[eps, 1)^{3J}`` drawn from ``key`` (``eps`` of the dtype, so that ``Q``
      is never singular; the exercise draws from ``[0, 1)``).

    Args:
        Y: data ``[N+1, 3 J]`` with ``N >= 1``, columns ordered all positions, all velocities,
            all accelerations (as :func:`jaxssm.datasets.load_sarcos` returns them).
        key: a JAX PRNG key for ``u`` (no default: the start is random).
        dtype: ``float32`` or ``float64``; ``None`` follows ``Y`` (a float64 numpy array gives
            float64 only where JAX's x64 mode is on, float32 otherwise).

    Returns:
        :class:`ExerciseSetup` ``(params, ys)`` with ``params`` an :class:`~jaxssm.LGSSM`
        (``m0 [3J]``, ``P0, A, Q, H, R [3J, 3J]``) and ``ys [N, 3J]``, all of one dtype.

    Raises:
        ValueError: ``Y`` is not 2-D with at least 2 rows and a multiple of 3 columns, holds
            NaN or Inf, or ``dtype`` is not a floating dtype or is float64 while x64 is off.
    """
    Y_np = np.asarray(Y)
    if Y_np.ndim != 2 or Y_np.shape[0] < 2 or Y_np.shape[1] < 3 or Y_np.shape[1] % 3:
        raise ValueError(
            "Y must have shape [N+1, 3 J] (N >= 1 steps after the first row; J >= 1 joints, "
            f"columns positions, velocities, accelerations), got shape {Y_np.shape}"
        )
    if not (np.issubdtype(Y_np.dtype, np.floating) or np.issubdtype(Y_np.dtype, np.integer)):
        raise ValueError(f"Y must hold real numbers, got dtype {Y_np.dtype}")
    if not np.all(np.isfinite(Y_np)):
        row = int(np.flatnonzero(~np.isfinite(Y_np).all(axis=1))[0])
        raise ValueError(f"Y must be finite; row {row} (0-based) holds NaN or Inf")
    if dtype is None:
        dtype = jnp.asarray(Y).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.result_type(float)
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype (float32 or float64), got {dtype}")
    if dtype.itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype float64 needs JAX's x64 mode: call jax.config.update('jax_enable_x64', True) "
            "at start-up, or use dtype=float32"
        )

    num_joints = Y_np.shape[1] // 3
    dim = 3 * num_joints
    R = jnp.asarray(np.kron(np.diag(EXERCISE_NOISE), np.eye(num_joints)), dtype)
    u = jax.random.uniform(key, (dim,), dtype=dtype, minval=jnp.finfo(dtype).eps, maxval=1.0)
    params = LGSSM(
        m0=jnp.asarray(Y_np[0], dtype),
        P0=R,
        A=jnp.zeros((dim, dim), dtype),
        Q=0.01 * jnp.diag(u),
        H=jnp.eye(dim, dtype=dtype),
        R=R,
    )
    return ExerciseSetup(params=params, ys=jnp.asarray(Y_np[1:], dtype))
