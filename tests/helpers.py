"""Small shared test utilities."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxssm as ssm


def to_params(model, dtype=jnp.float64) -> ssm.LGSSM:
    """numpy reference Model -> jaxssm.LGSSM of the given dtype."""
    return ssm.LGSSM(*(jnp.asarray(x, dtype) for x in model))


def assert_close(actual, expected, rtol, atol_scale=1e-2, err_msg=""):
    """assert_allclose with an absolute floor of ``rtol * atol_scale * max|expected|``.

    Entries that cancel to near zero (off-diagonal covariances) have no meaningful relative
    error; the floor ties their tolerance to the size of the whole array instead. Two
    ``None`` (an absent optional field of an LGSSM) are equal; ``None`` and an array are not.
    """
    if actual is None or expected is None:
        assert actual is None and expected is None, f"{err_msg}: {actual!r} vs {expected!r}"
        return
    expected = np.asarray(expected, np.float64)
    atol = rtol * atol_scale * max(float(np.max(np.abs(expected))), 1e-300)
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol, err_msg=err_msg
    )


COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/backend_compile_duration",
)


@contextlib.contextmanager
def count_compilations():
    """Record every jaxpr trace and XLA compilation inside the block (``jax.monitoring``).

    ``with count_compilations() as events: ...`` leaves one ``(event, function name)`` pair
    in ``events`` per trace or backend compilation; an empty list means a cache hit.
    """
    events = []

    def listener(event, duration, **kwargs):
        if event in COMPILE_EVENTS:
            events.append((event, kwargs.get("fun_name")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
