"""jaxssm._base.batching and jaxssm._base.platform: the map over time and the platform rule.

- ``batched(fn)`` equals ``jax.vmap(fn)`` exactly (bitwise: the same per-row arithmetic),
  for batch sizes below, at and above the CPU tile and not a multiple of it, with ``None``
  leaves and closures, and so does its gradient.
- The form follows the platform a program is lowered for: lowered for CPU, a batch longer
  than a tile is a loop over tiles; lowered for CUDA (no GPU needed to lower), the same
  program is one vmap, without the loop.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssm._base import batching
from jaxssm._base.platform import cpu_or_default


def _step(x, y, w):
    # A per-row function with a loop in it, like the per-step algebra.
    def body(i, acc):
        return acc + jnp.sin(x * i) @ w + y

    return jax.lax.fori_loop(0, 3, body, jnp.zeros_like(y)), None


@pytest.mark.parametrize("size", [1, batching.CPU_TILE, batching.CPU_TILE + 1, 70])
def test_batched_equals_vmap(size):
    rng = np.random.default_rng(size)
    x, y = jnp.asarray(rng.normal(size=(size, 3))), jnp.asarray(rng.normal(size=(size, 2)))
    w = jnp.asarray(rng.normal(size=(3, 2)))
    out = jax.jit(batching.batched(lambda a, b: _step(a, b, w)))(x, y)
    ref = jax.jit(jax.vmap(lambda a, b: _step(a, b, w)))(x, y)
    np.testing.assert_array_equal(out[0], ref[0])
    assert out[1] is None

    def loss(w, f):
        return jnp.sum(f(lambda a, b: _step(a, b, w))(x, y)[0] ** 2)

    np.testing.assert_allclose(
        jax.grad(loss)(w, batching.batched), jax.grad(loss)(w, jax.vmap), rtol=1e-13
    )


def _has_loop(fn, *args, platform):
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()
    return "stablehlo.while" in text


def test_the_form_follows_the_platform_the_program_is_lowered_for():
    x = jnp.ones((3 * batching.CPU_TILE, 2))
    fn = batching.batched(lambda a: 2.0 * a)
    assert _has_loop(fn, x, platform="cpu")
    assert not _has_loop(fn, x, platform="cuda")
    assert not _has_loop(fn, x[: batching.CPU_TILE], platform="cpu")  # one tile: one vmap
    # The rule itself: one form per platform, the other absent from the lowered program.
    choose = cpu_or_default(lambda a: jnp.sin(a), lambda a: jnp.cos(a))
    sine, cosine = "stablehlo.sine ", "stablehlo.cosine "
    for platform, present, absent in [("cpu", sine, cosine), ("cuda", cosine, sine)]:
        text = jax.jit(choose).trace(x).lower(lowering_platforms=(platform,)).as_text()
        assert present in text and absent not in text, platform
    expected = jnp.sin(x) if jax.default_backend() == "cpu" else jnp.cos(x)
    np.testing.assert_array_equal(choose(x), expected)  # eagerly: the default device's
