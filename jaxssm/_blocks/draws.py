r"""What drawing from a Gaussian needs: a draw through a semidefinite factor.

:func:`gaussian_draw` factors the covariance with :func:`jaxssm._base.linalg.psd_cholesky`:
the covariances drawn from may be positive *semi*-definite (the conditional covariances of
backward sampling, ``P_k - G_k P_{k+1}^- G_k^T``, are singular whenever a state component is
determined by its successor, and singular to round-off in many ordinary models), where a
plain Cholesky factor is NaN. No jitter is added.
"""

from __future__ import annotations

import jax

from jaxssm._base.linalg import psd_cholesky

__all__ = ["gaussian_draw"]


def gaussian_draw(mean: jax.Array, cov: jax.Array, noise: jax.Array) -> jax.Array:
    """Return ``mean + F noise`` with ``F F^T = cov``, ``[D]``.

    ``F`` is the semidefinite factor :func:`jaxssm._base.linalg.psd_cholesky`, so singular
    directions of ``cov`` get no noise. A draw from ``N(mean, cov)`` when ``noise`` is
    standard normal.

    Args:
        mean: ``[D]``.
        cov: ``[D, D]``, symmetric positive semi-definite.
        noise: ``[D]``.

    Returns:
        ``[D]``.
    """
    return mean + psd_cholesky(cov) @ noise
