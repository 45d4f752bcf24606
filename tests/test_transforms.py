"""grad, vmap and jit: gradients against finite differences, batches against loops, no retrace.

Finite differences: central differences with step h = 1e-5 in float64 have truncation error
O(h^2 |f'''|) ~ 1e-10 and round-off O(eps |f| / h) ~ 1e-10 relative here, so directional
derivatives must agree to rtol 1e-6 (a wrong gradient is off by O(1)).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import count_compilations, to_params
from reference import numpy_filter, random_model, simulate

import jaxssm as ssm


def _problem(seed=0, D=3, Dy=2, N=6):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=2.0)
    _, ys = simulate(rng, model, N)
    return model, to_params(model), jnp.asarray(ys)


def _direction(rng, name, shape):
    v = rng.standard_normal(shape)
    if name in ("P0", "Q", "R"):
        v = v + v.T  # stay within symmetric matrices
    return v


@pytest.mark.parametrize("field", ["m0", "P0", "A", "Q", "H", "R"])
def test_gradient_matches_central_differences(field):
    model, params, ys = _problem()
    grads = jax.grad(ssm.log_likelihood)(params, ys)
    rng = np.random.default_rng(1)
    h = 1e-5
    for _ in range(3):
        v = _direction(rng, field, getattr(model, field).shape)

        def f(t, v=v):
            m = model._replace(**{field: getattr(model, field) + t * v})
            return numpy_filter(m, np.asarray(ys))[-1]

        fd = (f(h) - f(-h)) / (2 * h)
        ad = float(jnp.sum(getattr(grads, field) * v))
        np.testing.assert_allclose(ad, fd, rtol=1e-6, atol=1e-9)


def test_gradient_wrt_observations():
    model, params, ys = _problem(seed=2)
    g = jax.grad(ssm.log_likelihood, argnums=1)(params, ys)
    rng = np.random.default_rng(3)
    v = rng.standard_normal(ys.shape)
    h = 1e-5
    f = lambda t: numpy_filter(model, np.asarray(ys) + t * v)[-1]  # noqa: E731
    np.testing.assert_allclose(float(jnp.sum(g * v)), (f(h) - f(-h)) / (2 * h), rtol=1e-6)


def test_smoother_outputs_differentiable():
    _, params, ys = _problem(seed=4)
    loss = lambda p: jnp.sum(ssm.rts_smoother(p, ys).means ** 2)  # noqa: E731
    g = jax.grad(loss)(params)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(g))


def test_vmap_over_sequences_equals_loop():
    _, params, _ = _problem(seed=5)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    batch = jnp.stack([ssm.sample(k, params, 30)[1] for k in keys])
    out = jax.vmap(ssm.rts_smoother, in_axes=(None, 0))(params, batch)
    for b in range(batch.shape[0]):
        single = ssm.rts_smoother(params, batch[b])
        for x, y in zip(out, single, strict=True):
            np.testing.assert_allclose(x[b], y, rtol=1e-12, atol=1e-14)


def test_vmap_over_parameters():
    _, params, ys = _problem(seed=6)
    scales = jnp.array([0.5, 1.0, 2.0])
    batched = jax.vmap(lambda s: params._replace(Q=s * params.Q))(scales)
    lls = jax.vmap(ssm.log_likelihood, in_axes=(0, None))(batched, ys)
    for i, s in enumerate(scales):
        np.testing.assert_allclose(
            lls[i], ssm.log_likelihood(params._replace(Q=s * params.Q), ys), rtol=1e-13
        )


def test_second_call_does_not_retrace():
    _, params, ys = _problem(seed=7)
    calls = []

    @jax.jit
    @chex.assert_max_traces(n=1)
    def traced(p, y):
        calls.append(1)
        return ssm.rts_smoother(p, y).means

    traced(params, ys)
    traced(params._replace(A=0.5 * params.A), ys + 1.0)
    assert len(calls) == 1


def test_public_functions_hit_the_compilation_cache():
    _, params, ys = _problem(seed=8)
    ssm.kalman_filter(params, ys)
    ssm.rts_smoother(params, ys)
    ssm.log_likelihood(params, ys)
    ssm.rts_smoother_from_filter(params, ssm.kalman_filter(params, ys))
    # New values, same shapes and options (computed outside the counted block).
    p1, p2 = params._replace(m0=params.m0 + 1.0), params._replace(A=params.A * 0.9)
    ys2, ys3 = ys * 2.0, ys * 3.0
    filtered = ssm.kalman_filter(p1, ys2)
    with count_compilations() as events:
        ssm.kalman_filter(p1, ys2)
        ssm.rts_smoother(params, ys3)
        ssm.log_likelihood(p2, ys)
        ssm.rts_smoother_from_filter(p1, filtered)
    assert events == [], f"a repeated call traced or compiled: {events}"
    # Positive control: another length is another shape, which must be traced and compiled.
    with count_compilations() as events:
        ssm.log_likelihood(params, ys[:-1])
    assert any("backend_compile" in e for e, _ in events)
