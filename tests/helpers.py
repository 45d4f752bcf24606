"""Small shared test utilities."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import jaxssm as ssm


def to_params(model, dtype=jnp.float64) -> ssm.LGSSM:
    """numpy reference Model -> jaxssm.LGSSM of the given dtype."""
    return ssm.LGSSM(*(jnp.asarray(x, dtype) for x in model))


def assert_close(actual, expected, rtol, atol_scale=1e-2, err_msg=""):
    """assert_allclose with an absolute floor of ``rtol * atol_scale * max|expected|``.

    Entries that cancel to near zero (off-diagonal covariances) have no meaningful relative
    error; the floor ties their tolerance to the size of the whole array instead.
    """
    expected = np.asarray(expected, np.float64)
    atol = rtol * atol_scale * max(float(np.max(np.abs(expected))), 1e-300)
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol, err_msg=err_msg
    )
