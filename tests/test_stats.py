"""E-step statistics: the public ``e_step`` and the module that forms them (``_blocks.stats``).

References and tolerances (float64):

- E-step statistics vs ``reference.dense_sufficient_stats`` (exact posterior expectations from
  the dense joint Gaussian, plain numpy): rtol 1e-10 with an absolute floor of 1e-12 x the
  array's largest entry, for both schedules. Both sides lose at most a few hundred ulps on
  these well-conditioned models (observed ~1e-15), so 1e-10 leaves a wide margin. The same
  tolerance holds ``_stats.from_smoother`` applied to a public ``rts_smoother`` result.
- Batched e_step vs the per-sequence dense statistics pooled in numpy here: rtol 1e-10.
- A batch of B identical sequences vs one sequence: rtol 1e-13 (the pooled means of equal
  terms differ from one term by a rounding of the mean; the log-likelihood is B x one).
- ``_stats.pool`` vs the numpy pooling on arbitrary per-sequence statistics: rtol 1e-12 (a
  mean over B = 3 and one [D, B] @ [B, D] product, a few ulps each).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, count_compilations, to_params
from reference import dense_sufficient_stats, random_model, random_spd, simulate

import jaxssm as ssm
from jaxssm._blocks import stats as _stats

RTOL = 1e-10
STAT_FIELDS = ("Sigma", "Phi", "B", "C", "D", "m0_smoothed", "P0_smoothed")
METHODS = [
    "sequential",
    pytest.param("parallel", marks=pytest.mark.timeout(120)),
]

# (D, Dy, N, seed): D != Dy both ways, D = 1, N = 1.
CASES = [(3, 2, 6, 0), (2, 4, 5, 1), (1, 1, 7, 2), (3, 3, 1, 4)]

# The parallel schedule compiles slowly on CPU: one case (Dy > D) here; the batched test
# below covers D > Dy with it.
STAT_CASES = [case + ("sequential",) for case in CASES] + [
    pytest.param(*CASES[1], "parallel", marks=pytest.mark.timeout(120))
]


# --------------------------------------------------------------------------- e_step


@pytest.mark.parametrize("D, Dy, N, seed, method", STAT_CASES)
def test_stats_match_dense_posterior(D, Dy, N, seed, method):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=3.0)
    _, ys = simulate(rng, model, N)
    ref = dense_sufficient_stats(model, ys)
    stats, ll = ssm.e_step(to_params(model), ys, method=method)
    assert isinstance(stats, ssm.SufficientStats)
    for name in STAT_FIELDS:
        assert_close(getattr(stats, name), ref[name], RTOL, err_msg=name)
    assert int(stats.num_steps) == N and stats.num_steps.dtype == jnp.int32
    assert_close(ll, ref["log_likelihood"], RTOL)


def pool_numpy(refs):
    """Pool per-sequence statistics (equal lengths) as DESIGN.md/issue 4 prescribe."""
    out = {k: np.mean([r[k] for r in refs], axis=0) for k in ("Sigma", "Phi", "B", "C", "D")}
    m0 = np.mean([r["m0_smoothed"] for r in refs], axis=0)
    out["m0_smoothed"] = m0
    out["P0_smoothed"] = np.mean(
        [r["P0_smoothed"] + np.outer(r["m0_smoothed"] - m0, r["m0_smoothed"] - m0) for r in refs],
        axis=0,
    )
    out["log_likelihood"] = sum(r["log_likelihood"] for r in refs)
    return out


@pytest.mark.parametrize("method", METHODS)
def test_batched_e_step_pools_sequences(method):
    rng = np.random.default_rng(20)
    model = random_model(rng, 3, 2, mean_scale=3.0)
    # Different initial states per sequence, so that the m0/P0 pooling matters.
    ys = np.stack(
        [simulate(rng, model._replace(m0=rng.normal(size=3) * 3), 5)[1] for _ in range(4)]
    )
    ref = pool_numpy([dense_sufficient_stats(model, y) for y in ys])
    stats, ll = ssm.e_step(to_params(model), ys, method=method)
    for name in STAT_FIELDS:
        assert_close(getattr(stats, name), ref[name], RTOL, err_msg=name)
    assert int(stats.num_steps) == 4 * 5
    assert_close(ll, ref["log_likelihood"], RTOL)


def test_batch_of_identical_sequences_equals_one_sequence():
    rng = np.random.default_rng(21)
    model = random_model(rng, 2, 3)
    _, y = simulate(rng, model, 9)
    p = to_params(model)
    one, ll1 = ssm.e_step(p, y)
    many, llb = ssm.e_step(p, np.stack([y, y, y]))
    for name in STAT_FIELDS:
        assert_close(getattr(many, name), getattr(one, name), 1e-13, err_msg=name)
    assert_close(llb, 3 * ll1, 1e-13)


def test_e_step_rejects_bad_input():
    p = to_params(random_model(np.random.default_rng(0), 2, 3))
    with pytest.raises(ValueError, match=r"\[N, Dy\] or \[B, N, Dy\]"):
        ssm.e_step(p, np.zeros((2, 2, 4, 3)))
    with pytest.raises(ValueError, match="Dy = 3"):
        ssm.e_step(p, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="method"):
        ssm.e_step(p, np.zeros((4, 3)), method="fast")
    with pytest.raises(TypeError, match="steady_state"):
        ssm.e_step(p, np.zeros((4, 3)), steady_state="yes")


def test_e_step_compiles_once():
    rng = np.random.default_rng(22)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, 20)
    p = to_params(model)
    ssm.e_step(p, ys)
    p2, ys2 = p._replace(A=p.A + 0.1), ys * 2.0  # new values, same shapes and options
    with count_compilations() as events:
        ssm.e_step(p2, ys2)
    assert events == [], f"second call traced or compiled: {events}"
    # Positive control: a new length is a new shape, which must be traced and compiled.
    with count_compilations() as events:
        ssm.e_step(p2, ys2[:-1])
    assert any("backend_compile" in e for e, _ in events)


# --------------------------------------------------------------------------- jaxssm._blocks.stats


def test_from_smoother_of_public_smoother_matches_dense_posterior():
    rng = np.random.default_rng(23)
    model = random_model(rng, 3, 2, mean_scale=3.0)
    _, ys = simulate(rng, model, 7)
    ref = dense_sufficient_stats(model, ys)
    smoothed = ssm.rts_smoother(to_params(model), ys)
    params = to_params(model)
    stats = _stats.from_smoother(smoothed, jnp.asarray(ys), params.H, params.R)
    for name in STAT_FIELDS:
        assert_close(getattr(stats, name), ref[name], RTOL, err_msg=name)
    assert int(stats.num_steps) == 7
    for name in ("Sigma", "Phi", "D", "P0_smoothed"):  # exactly: symmetrised as built
        x = np.asarray(getattr(stats, name))
        np.testing.assert_array_equal(x, x.T, err_msg=name)


def test_pool_matches_numpy_pooling():
    rng = np.random.default_rng(24)
    D, Dy, B = 3, 2, 3
    refs = []
    for _ in range(B):
        refs.append(
            dict(
                Sigma=random_spd(rng, D),
                Phi=random_spd(rng, D),
                B=rng.standard_normal((Dy, D)),
                C=rng.standard_normal((D, D)),
                D=random_spd(rng, Dy),
                m0_smoothed=3.0 * rng.standard_normal(D),
                P0_smoothed=random_spd(rng, D),
                log_likelihood=0.0,
            )
        )
    batched = ssm.SufficientStats(
        **{k: jnp.asarray(np.stack([r[k] for r in refs])) for k in STAT_FIELDS},
        num_steps=jnp.full((B,), 5, jnp.int32),
    )
    pooled = _stats.pool(batched)
    ref = pool_numpy(refs)
    for name in STAT_FIELDS:
        assert_close(getattr(pooled, name), ref[name], 1e-12, err_msg=name)
    assert int(pooled.num_steps) == B * 5
    P0 = np.asarray(pooled.P0_smoothed)
    np.testing.assert_array_equal(P0, P0.T)


@pytest.mark.parametrize("batch", [False, True])
def test_data_sums_match_numpy_and_the_e_step(batch):
    """``data_sums`` (the EM loop's once-per-fit statistics) against plain numpy sums over all
    steps, and against the E-step's ``D, U, YU`` of the same data (rtol 1e-12: the same sums,
    reassociated; the E-step adds an offset back to ``y - d``)."""
    rng = np.random.default_rng(25)
    base = random_model(rng, 3, 2)
    p = to_params(base)._replace(
        B=jnp.asarray(rng.standard_normal((3, 2))), d=jnp.asarray(rng.standard_normal(2))
    )
    shape = (2, 40) if batch else (40,)
    ys = rng.standard_normal(shape + (2,)) + 1.5
    u = rng.standard_normal(shape + (2,))
    v = np.concatenate([u, np.ones(shape + (1,))], axis=-1)
    y2, v2 = ys.reshape(-1, 2), v.reshape(-1, 3)
    ref = dict(D=y2.T @ y2 / len(y2), U=v2.T @ v2 / len(v2), YU=y2.T @ v2 / len(y2))
    sums = _stats.data_sums(jnp.asarray(ys), jnp.asarray(v))
    assert sorted(sums) == sorted(ref)
    stats, _ = ssm.e_step(p, jnp.asarray(ys), inputs=jnp.asarray(u))
    for name, r in ref.items():
        assert_close(sums[name], r, 1e-13, err_msg=name)
        assert_close(sums[name], getattr(stats, name), 1e-12, err_msg=name)
    assert sorted(_stats.data_sums(jnp.asarray(ys), None)) == ["D"]
