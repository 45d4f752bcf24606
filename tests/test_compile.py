"""jaxssm._base.compile: the library's top-level programs and their per-program CPU option."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from reference import dense_posterior, random_model, simulate

import jaxssm as ssm
from jaxssm._base import compile as _compile
from jaxssm._schedules import dispatch as _dispatch


@pytest.fixture
def case():
    rng = np.random.default_rng(170)
    model = random_model(rng, 3, 2)
    _, ys = simulate(rng, model, 40)
    return model, to_params(model), jnp.asarray(ys)


def test_this_jax_accepts_the_option():
    # On the CPU backend the suite runs on, with the jax it installs, the option is accepted;
    # a jax that does not accept it gets {} and the plain jit, tested below.
    assert jax.default_backend() == "cpu"
    assert _compile.options() == _compile.CPU_OPTIONS


def test_no_option_off_cpu(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    _compile.options.cache_clear()
    try:
        assert _compile.options() == {}
    finally:
        monkeypatch.undo()
        _compile.options.cache_clear()
    assert _compile.options() == _compile.CPU_OPTIONS


def test_top_level_calls_use_the_option_and_traced_calls_the_plain_jit(case):
    _, params, ys = case
    program = _dispatch.run
    assert program._get() is not program._plain  # top level: the program with the option
    seen = []

    @jax.jit
    def traced(p, y):
        seen.append(program._get() is program._plain)
        return ssm.log_likelihood(p, y)

    traced(params, ys)
    jax.vmap(lambda y: ssm.log_likelihood(params, y))(jnp.stack([ys, ys]))
    jax.grad(lambda a: ssm.log_likelihood(params._replace(A=a), ys))(params.A)
    assert seen == [True]


def test_without_the_option_the_plain_jit_runs(case, monkeypatch):
    _, params, ys = case
    monkeypatch.setattr(_compile, "options", lambda: {})
    program = _compile.jit(lambda p, y: _dispatch.run("log_likelihood", p, y, "sequential")[0])
    assert program._get() is program._plain
    assert np.isfinite(float(program(params, ys)))


# The parallel case in the slow suite (9 s: the associative scan compiled twice).
@pytest.mark.parametrize("method", ["sequential", pytest.param("parallel", marks=pytest.mark.slow)])
def test_the_option_changes_no_result(case, method):
    """The program compiled with the option against the plain one and the dense posterior.

    The two programs run the same operations; only the code emitted for fused element-wise
    kernels differs, so they agree to a few ulps (rtol 1e-13) and both match the dense
    joint Gaussian to 1e-10 (the recursions' round-off on this short series).
    """
    model, params, ys = case
    smooth = _compile.jit(ssm.rts_smoother, static_argnames="method")
    tuned = smooth(params, ys, method=method)
    plain = smooth._plain(params, ys, method=method)
    assert smooth._tuned is not smooth._plain
    dense = dense_posterior(model, np.asarray(ys))
    np.testing.assert_allclose(tuned.means, plain.means, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(tuned.covs, plain.covs, rtol=1e-13, atol=1e-14)
    assert_close(tuned.means, dense.smooth_means, 1e-10)
    assert_close(tuned.covs, dense.smooth_covs, 1e-10)


def test_attributes_reach_the_jit(case):
    _, params, ys = case
    lowered = _dispatch.run.lower("log_likelihood", params, ys, "sequential")
    ll, _ = lowered.compile()(params, ys)
    np.testing.assert_allclose(ll, ssm.log_likelihood(params, ys, method="sequential"), rtol=1e-13)
    assert _dispatch.run.__doc__.startswith("Compute one")
