r"""Checks of results: what an entry point returns from checked inputs.

The inputs are checked before the recursion runs (:mod:`jaxssm._args.validation`); these
checks look at what it returned, on concrete (eager) values only: a non-finite
log-likelihood (:func:`check_finite_result`, with its one known cause,
:func:`unobserved_unstable_modes`) and a returned covariance that left the positive
semi-definite cone (:func:`check_variances`).
"""

from __future__ import annotations

import math
import warnings

import jax.numpy as jnp
import numpy as np

from jaxssm._args.checks import is_concrete, psd_tolerance
from jaxssm._base.types import LGSSM

__all__ = [
    "MAX_EIGEN_STEPS",
    "unobserved_unstable_modes",
    "check_variances",
    "check_finite_result",
]


def unobserved_unstable_modes(params: LGSSM) -> list[complex]:
    """Return the eigenvalues of ``A`` outside the unit circle that ``H`` does not see.

    Eigenvalues ``lambda`` with ``|lambda| > 1`` whose eigenvector ``v`` has ``H v = 0`` (to
    ``sqrt(eps)``): state directions that grow without bound unobserved. Their filter
    variance grows like ``|lambda|^(2k)`` and overflows after about
    ``log(max) / (2 log |lambda|)`` steps. Concrete, time-invariant ``A`` and ``H`` only
    (else an empty list).
    """
    A, H = params.A, params.H
    if not (is_concrete(A) and is_concrete(H)) or A.ndim != 2 or H.ndim != 2:
        return []
    a, h = np.asarray(A, np.float64), np.asarray(H, np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(h))):
        return []
    values, vectors = np.linalg.eig(a)
    tol = np.sqrt(np.finfo(np.dtype(A.dtype)).eps) * max(float(np.linalg.norm(h, 2)), 1e-300)
    found = []
    for lam, v in zip(values, vectors.T, strict=True):
        if abs(lam) > 1 and np.linalg.norm(h @ v) <= tol * np.linalg.norm(v):
            found.append(complex(lam))
    return found


#: The eigenvalue check of :func:`check_variances` looks at no more than this many steps.
MAX_EIGEN_STEPS = 1024


def _sampled_steps(num: int) -> np.ndarray:
    """Return the steps of ``num`` whose eigenvalues :func:`check_variances` checks.

    Every step of a series of at most 64; else ``k = min(1024, max(64, num // 16))`` steps:
    the first and the last ``k // 4`` (the transients, where definiteness is lost) and the
    rest spread evenly over the whole series.
    """
    k = min(num, MAX_EIGEN_STEPS, max(64, num // 16))
    if k == num:
        return np.arange(num)
    q = k // 4
    spread = np.linspace(0, num - 1, k - 2 * q).round().astype(np.int64)
    return np.unique(np.concatenate([np.arange(q), spread, np.arange(num - q, num)]))


def check_variances(covs, where: str, what: str):
    """Warn when concrete covariances ``[..., n, n]`` clearly leave the PSD cone.

    The covariance form subtracts to update, so in float32 (stiff models, vague priors) a
    returned covariance can leave the positive semi-definite cone although the model is
    valid; the square-root form cannot. Two checks, with ``tol`` of :func:`psd_tolerance`
    and ``scale`` the largest ``|variance|`` over all steps (round-off is not reported):

    * every variance (the diagonal of every step): one below ``-tol * scale`` is reported
      with its index;
    * the smallest eigenvalue of each of a subsample of the steps (:func:`_sampled_steps`:
      all of a series of at most 64 steps, else up to :data:`MAX_EIGEN_STEPS` of them, the
      start and end transients and an even spread), in float64 on the host: one below
      ``-tol * max(scale, max |eigenvalue|)`` is reported with its index, for a covariance
      that lost definiteness off the diagonal with its variances nonnegative. A step outside
      the subsample is not checked off the diagonal (checking every step costs about as
      much as the filter itself).

    Skipped for traced values; steps with a non-finite entry are left out of the eigenvalue
    check (a non-finite result is :func:`check_finite_result`'s).

    Warns:
        RuntimeWarning: a negative variance, or a negative eigenvalue, beyond round-off.
    """
    if not is_concrete(covs):
        return
    var = jnp.diagonal(covs, axis1=-2, axis2=-1)
    lowest, scale = (float(x) for x in (jnp.min(var), jnp.max(jnp.abs(var))))
    dtype = np.dtype(var.dtype)
    tol = psd_tolerance(dtype, var.shape[-1])
    remedy = (
        "; the covariance form's update subtracts and rounding can cross zero on stiff models "
        "or vague priors. Use form='sqrt' (Cholesky factors, semi-definite by construction) "
        "or float64"
    )
    if lowest < -tol * scale:
        index = np.unravel_index(int(jnp.argmin(var)), var.shape)
        warnings.warn(
            f"{where}: the {what} lost positive semi-definiteness: a variance of {lowest:.3g} "
            f"at index {tuple(int(i) for i in index)} (largest variance {scale:.3g}, "
            f"{dtype}){remedy}",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    steps = var.shape[:-1]
    if not math.prod(steps) or not np.isfinite(scale):
        return
    picked = _sampled_steps(math.prod(steps))
    flat = jnp.reshape(covs, (-1, *covs.shape[-2:]))
    a = np.asarray(jnp.take(flat, jnp.asarray(picked), axis=0), np.float64)
    finite = np.all(np.isfinite(a), axis=(-2, -1))
    picked, a = picked[finite], a[finite]
    if not picked.size:
        return
    eig = np.linalg.eigvalsh(0.5 * (a + np.swapaxes(a, -1, -2)))
    bound = -tol * np.maximum(scale, np.max(np.abs(eig), axis=-1))
    bad = np.flatnonzero(eig[:, 0] < bound)
    if not bad.size:
        return
    first = bad[0]
    index = tuple(int(i) for i in np.unravel_index(int(picked[first]), steps))
    warnings.warn(
        f"{where}: the {what} lost positive semi-definiteness: its smallest eigenvalue at "
        f"index {index} is {eig[first, 0]:.3g} (largest |eigenvalue| there "
        f"{np.max(np.abs(eig[first])):.3g}, largest variance {scale:.3g}, {dtype}; "
        f"{bad.size} of {picked.size} checked steps), although every variance is "
        f"nonnegative{remedy}",
        RuntimeWarning,
        stacklevel=3,
    )


def check_finite_result(value, params: LGSSM, where: str):
    """Return ``value``; raise if it is concrete and not finite, saying why where we can.

    The entry points check their inputs; a non-finite log-likelihood from checked inputs
    comes from the recursion itself. The one known cause is an unobserved state direction
    that grows without bound (:func:`unobserved_unstable_modes`): its variance overflows to
    ``inf`` and ``inf * 0`` makes every covariance NaN, although ``log p(y)`` is finite.
    Skipped for traced values (under ``jit`` the NaN comes back; see :func:`check_values`).

    Raises:
        ValueError: ``value`` has a non-finite entry.
    """
    if not is_concrete(value):
        return value
    a = np.asarray(value)
    if np.all(np.isfinite(a)):
        return value
    got = "NaN" if np.isnan(a).any() else "infinite"
    modes = unobserved_unstable_modes(params)
    dtype = np.dtype(params.A.dtype)
    if modes:
        lam = max(modes, key=abs)
        steps = int(np.log(np.finfo(dtype).max) / (2 * np.log(abs(lam))))
        shown = f"{lam.real:.6g}" if lam.imag == 0 else f"{lam:.6g}"
        raise ValueError(
            f"{where}: the log-likelihood came out {got}, although log p(y) is finite: A has the "
            f"eigenvalue {shown} (|lambda| = {abs(lam):.6g} > 1) whose eigenvector H does not "
            f"see (H v = 0), so that state direction grows without bound unobserved. Its "
            f"filter variance grows like |lambda|^(2k) and overflows {dtype} after about "
            f"{steps} steps; inf * 0 then makes every covariance NaN. log p(y) does not depend "
            f"on an unobserved direction: drop it from the state (restrict the model to the "
            f"observed modes), or make it stable (|lambda| < 1)"
        )
    raise ValueError(
        f"{where}: the log-likelihood came out {got} although params and ys passed the "
        f"checks: the filter's covariances overflowed or lost definiteness ({dtype}). Try "
        f"float64, rescale the data, or check for a state direction that grows without "
        f"bound (an eigenvalue of A above 1 in modulus)"
    )
