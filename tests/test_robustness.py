"""Edge inputs that must give a correct result or a clear error, never a silent wrong number.

Scale invariance (float64). Scaling ``m0, y`` by ``s`` and ``P0, Q, R`` by ``s^2`` changes
nothing but units, so ``log p(y)`` shifts by exactly ``-N Dy log s``. Tolerance: rtol 1e-12
of ``|log p(y)|`` (plus 1e-9 absolute): both sides are sums of N terms of the same
round-off size (about 1e-15 relative each); a fast path that misjudges convergence at an
extreme scale is off by about a nat (0.6 here before the fix).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import to_params
from reference import random_model, simulate

import jaxssm as ssm
from jaxssm import _steady

SCHEDULES = {
    "steady": dict(steady_state=True),
    "full": dict(steady_state=False),
    "parallel": dict(method="parallel"),
}


def _scaled(params, ys, s):
    return (
        params._replace(
            m0=params.m0 * s, P0=params.P0 * s**2, Q=params.Q * s**2, R=params.R * s**2
        ),
        ys * s,
    )


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("s", [1e100, 1e-90])
def test_log_likelihood_is_scale_invariant(schedule, s):
    rng = np.random.default_rng(3)
    model = random_model(rng, 3, 2)
    N = 64 if schedule == "parallel" else 600
    params = to_params(model)
    ys = jnp.asarray(simulate(rng, model, N)[1])
    kw = SCHEDULES[schedule]
    ref = float(ssm.log_likelihood(params, ys, **kw))
    p_s, ys_s = _scaled(params, ys, s)
    got = float(ssm.log_likelihood(p_s, ys_s, **kw))
    expected = ref - N * ys.shape[1] * np.log(s)
    assert abs(got - expected) <= 1e-12 * abs(expected) + 1e-9, (got, expected)
    if schedule == "steady":  # positive control: the fast path ran at this scale
        T = _steady.transient_bound(N)
        fs = _steady.filter_side(p_s, T)
        assert bool(fs.converged) and int(fs.transient) > 0


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("where", ["params", "ys"])
def test_half_precision_is_a_clear_type_error(dtype, where):
    rng = np.random.default_rng(0)
    model = random_model(rng, 2, 2)
    params, ys = to_params(model), jnp.asarray(simulate(rng, model, 5)[1])
    if where == "params":
        params, name = params._replace(Q=params.Q.astype(dtype)), "Q"
    else:
        ys, name = ys.astype(dtype), "ys"
    with pytest.raises(TypeError, match=rf"^{name} must have a real floating dtype"):
        ssm.kalman_filter(params, ys)
