"""Gradient-based maximum likelihood: the parameterisation, gradients and fit_mle.

Tolerances (float64):
- Round trip of the parameterisation, rtol 1e-12: a Cholesky factorisation, softplus and its
  inverse and one matrix product, each a few ulps on the well-conditioned matrices used.
- The map against an independent numpy implementation, rtol 1e-13 (same few-ulp operations).
- Gradients against central finite differences of an independent numpy log-likelihood
  (tests/reference.py's loop filter fed by a numpy copy of the map), rtol 1e-6 with an
  absolute floor of 1e-6 x the largest gradient entry: with step h = 1e-5 the truncation error
  is O(h^2) ~ 1e-10 relative and the cancellation error eps |f| / h ~ 1e-9 relative, so 1e-6
  leaves a wide margin while any wrong term (a missing chain-rule factor, a transposed
  triangle) shows up at O(1).
- Log-likelihoods reported by fit_mle against ssm.log_likelihood at the same parameters,
  rtol 1e-10 (the same filter in two compiled programs; the normalisation by T undone).
  ``MLEInfo.log_likelihood`` (the returned parameters', computed after the loop without the
  normalisation) against ssm.log_likelihood there: rtol 1e-12.
- The values passed to ``callback`` against the trace: bitwise (the same product in the
  same program, once inside the scan and once after it).
- A replayed optimisation loop (plain optax in Python) against fit_mle's scan, rtol 1e-9 over
  a few Adam steps (round-off in the gradient can only move Adam's first steps by ~ulps).
- fit_mle with one steady-state path in the gradient against the previous program (both
  paths and their lax.cond), rtol 1e-10: the same value and gradient functions in two
  compiled programs (seen: ~1e-15); against the full recursion (steady_state=False) after 12
  L-BFGS steps, rtol 1e-8 (the steady-state schedule is exact to its settling tolerance
  1e4 eps, which the steps can amplify).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_close, count_compilations, to_params
from reference import Model, numpy_filter, random_model, simulate

import jaxssm as ssm

FIELDS = ("m0", "P0", "A", "Q", "H", "R")
COVS = ("P0", "Q", "R")


# One shared problem (D = Dy = 3, N = 300; H square, so (A, Q) are identifiable and the
# optimisers converge) and one optimiser object per kind, so that the compiled loops are reused
# across tests (compilation dominates their cost).
ADAM_STEPS = 800


# conftest.py makes dtype promotion strict. optax 0.2.8 is not written for that (adam's bias
# correction ``1 - decay**count`` raises a Python float to an int32 power; lbfgs mixes int32
# and int64 indices and, for float32 parameters, writes float64 into float32 memory), so
# fit_mle runs optax's own init/update under standard promotion; the tests below use plain
# optax optimisers and so also check that fit_mle works for users who trace strictly.
ADAM = optax.adam(optax.cosine_decay_schedule(5e-2, ADAM_STEPS, alpha=0.01))
LBFGS = optax.lbfgs()


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(2024)
    model = random_model(rng, 3, 3)
    _, ys = simulate(rng, model, 300)
    truth = to_params(model)
    D = truth.A.shape[0]
    start = truth._replace(A=0.2 * jnp.eye(D), Q=2.0 * jnp.eye(D))
    return truth, start, jnp.asarray(ys)


# --- an independent numpy copy of the documented map ------------------------------------------


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_vector_to_cov(v, d):
    rows, cols = np.tril_indices(d)
    L = np.zeros((d, d))
    L[rows, cols] = np.where(rows == cols, np_softplus(v), v)
    return L @ L.T


def np_from_unconstrained(theta: dict, template: Model) -> Model:
    fields = template._asdict()
    for name, v in theta.items():
        v = np.asarray(v, np.float64)
        fields[name] = np_vector_to_cov(v, fields[name].shape[0]) if name in COVS else v
    return Model(**fields)


def random_theta(rng, D, Dy, update=FIELDS, scale=1.0):
    sizes = dict(
        m0=(D,),
        P0=(D * (D + 1) // 2,),
        A=(D, D),
        Q=(D * (D + 1) // 2,),
        H=(Dy, D),
        R=(Dy * (Dy + 1) // 2,),
    )
    return {n: scale * rng.standard_normal(sizes[n]) for n in update}


# --- parameterisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("D, Dy, seed", [(3, 2, 0), (1, 1, 1), (4, 5, 2)])
def test_round_trip_params(D, Dy, seed):
    params = to_params(random_model(np.random.default_rng(seed), D, Dy))
    theta = ssm.to_unconstrained(params)
    assert theta.P0.shape == (D * (D + 1) // 2,) and theta.R.shape == (Dy * (Dy + 1) // 2,)
    back = ssm.from_unconstrained(theta, params)
    for name in FIELDS:
        assert_close(getattr(back, name), getattr(params, name), 1e-12, err_msg=name)


@pytest.mark.parametrize("D, Dy, seed", [(3, 2, 3), (1, 2, 4)])
def test_round_trip_theta_and_numpy_map(D, Dy, seed):
    rng = np.random.default_rng(seed)
    template = random_model(rng, D, Dy)
    theta_np = random_theta(rng, D, Dy)
    theta = ssm.UnconstrainedParams(**{k: jnp.asarray(v) for k, v in theta_np.items()})
    params = ssm.from_unconstrained(theta, to_params(template))
    expected = np_from_unconstrained(theta_np, template)
    for name in FIELDS:
        assert_close(getattr(params, name), getattr(expected, name), 1e-13, err_msg=name)
    again = ssm.to_unconstrained(params)
    for name in FIELDS:
        assert_close(getattr(again, name), theta_np[name], 1e-12, err_msg=name)


def test_every_theta_gives_spd_covariances():
    rng = np.random.default_rng(5)
    template = to_params(random_model(rng, 4, 3))
    for _ in range(20):
        theta = ssm.UnconstrainedParams(
            **{k: jnp.asarray(v) for k, v in random_theta(rng, 4, 3, COVS).items()}
        )
        params = ssm.from_unconstrained(theta, template)
        for name in COVS:
            S = np.asarray(getattr(params, name))
            np.testing.assert_array_equal(S, S.T)
            assert np.min(np.linalg.eigvalsh(S)) > 0, name


def test_fixed_fields_are_absent_and_untouched():
    params = to_params(random_model(np.random.default_rng(6), 3, 2))
    theta = ssm.to_unconstrained(params, update=("A", "Q"))
    assert theta.m0 is None and theta.P0 is None and theta.H is None and theta.R is None
    assert len(jax.tree.leaves(theta)) == 2  # an optimiser sees A and Q only
    grads = jax.grad(
        lambda th: ssm.log_likelihood(ssm.from_unconstrained(th, params), jnp.ones((4, 2)))
    )(theta)
    assert grads.m0 is None and grads.R is None and grads.A.shape == (3, 3)
    back = ssm.from_unconstrained(theta, params)
    for name in ("m0", "P0", "H", "R"):
        np.testing.assert_array_equal(getattr(back, name), getattr(params, name))


# --- gradients ----------------------------------------------------------------------------------


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(7)
    model = random_model(rng, 3, 2, mean_scale=2.0)
    _, ys = simulate(rng, model, 40)
    template = to_params(model)
    theta = ssm.to_unconstrained(template)  # all six fields free

    def ll(th):
        return ssm.log_likelihood(ssm.from_unconstrained(th, template), ys)

    grads = jax.grad(ll)(theta)
    theta_np = {n: np.asarray(getattr(theta, n)) for n in FIELDS}

    def ll_np(th):
        return numpy_filter(np_from_unconstrained(th, model), ys)[-1]

    h = 1e-5
    for name in FIELDS:
        fd = np.zeros(theta_np[name].size)
        for i in range(fd.size):
            plus = {k: v.copy() for k, v in theta_np.items()}
            minus = {k: v.copy() for k, v in theta_np.items()}
            plus[name].reshape(-1)[i] += h
            minus[name].reshape(-1)[i] -= h
            fd[i] = (ll_np(plus) - ll_np(minus)) / (2 * h)
        g = np.asarray(getattr(grads, name)).reshape(-1)
        assert np.max(np.abs(g)) > 1e-3, name  # the check is not vacuous
        assert_close(g, fd, 1e-6, atol_scale=1.0, err_msg=name)


# --- fit_mle ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adam_fit(problem):
    _, start, ys = problem
    return ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=ADAM_STEPS)  # update = (A, Q)


@pytest.fixture(scope="module")
def lbfgs_fit(problem):
    _, start, ys = problem
    return ssm.fit_mle(start, ys, optimizer=LBFGS, num_iters=100)  # update = (A, Q)


def test_adam_improves_likelihood(problem, adam_fit):
    truth, start, ys = problem
    fitted, info = adam_fit
    assert isinstance(info, ssm.MLEInfo)
    lls = info.log_likelihoods
    assert lls.shape == (ADAM_STEPS,) and lls.dtype == jnp.float64
    assert info.log_likelihood.shape == () and info.log_likelihood.dtype == jnp.float64
    assert_close(lls[0], ssm.log_likelihood(start, ys), 1e-10)
    final = float(ssm.log_likelihood(fitted, ys))
    assert_close(info.log_likelihood, final, 1e-12)
    # The start is far off (A = 0.2 I, Q = 2 I); the maximum over (A, Q) is at least the
    # log-likelihood of the true parameters, so a converged fit must pass it.
    assert final > float(ssm.log_likelihood(truth, ys)) > float(lls[0]) + 50.0
    assert final >= float(np.max(lls)) - 1e-6 * abs(final)


def test_lbfgs_improves_likelihood_monotonically(problem, lbfgs_fit):
    truth, start, ys = problem
    fitted, info = lbfgs_fit
    lls = info.log_likelihoods
    assert_close(lls[0], ssm.log_likelihood(start, ys), 1e-10)
    final = float(ssm.log_likelihood(fitted, ys))
    assert_close(info.log_likelihood, final, 1e-12)
    assert final > float(ssm.log_likelihood(truth, ys)) > float(lls[0]) + 50.0
    # The zoom line search enforces sufficient decrease of -log p: never a step down.
    assert np.all(np.diff(np.asarray(lls)) >= -1e-9 * abs(final))
    assert final >= float(lls[-1]) - 1e-9 * abs(final)


def test_fitted_covariances_symmetric_positive_definite(problem):
    truth, start, ys = problem
    start = start._replace(P0=3.0 * jnp.eye(3), R=0.1 * jnp.eye(3))
    fitted, info = ssm.fit_mle(start, ys, optimizer=optax.adam(3e-2), num_iters=200, update=FIELDS)
    final = float(ssm.log_likelihood(fitted, ys))
    assert final > float(info.log_likelihoods[0]) + 100.0
    assert_close(info.log_likelihood, final, 1e-12)
    for name in COVS:
        S = np.asarray(getattr(fitted, name))
        assert not np.allclose(S, getattr(start, name), rtol=0.05), name  # it moved
        np.testing.assert_array_equal(S, S.T)
        assert np.min(np.linalg.eigvalsh(S)) > 0, name
    ssm.validate_params(fitted)


def test_fixed_fields_returned_bitwise(problem, adam_fit):
    _, start, _ = problem
    fitted, _ = adam_fit  # update = ("A", "Q")
    for name in ("m0", "P0", "H", "R"):
        np.testing.assert_array_equal(getattr(fitted, name), getattr(start, name))
    assert not np.array_equal(fitted.A, start.A) and not np.array_equal(fitted.Q, start.Q)


def test_log_likelihoods_are_before_each_step(problem):
    """Replay the optimiser in Python: entry i is log p(y | theta_i), before step i."""
    _, start, ys = problem
    num_iters = 4
    fitted, info = ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=num_iters)
    T = ys.shape[0]
    theta = ssm.to_unconstrained(start, update=("A", "Q"))

    def neg_ll(th):
        return -ssm.log_likelihood(ssm.from_unconstrained(th, start), ys) / T

    with jax.numpy_dtype_promotion("standard"):  # optax's own arithmetic (see ADAM above)
        state = ADAM.init(theta)
    for i in range(num_iters):
        value, grad = jax.value_and_grad(neg_ll)(theta)
        assert_close(info.log_likelihoods[i], -T * value, 1e-10, err_msg=f"step {i}")
        with jax.numpy_dtype_promotion("standard"):
            updates, state = ADAM.update(grad, state, theta)
        theta = optax.apply_updates(theta, updates)
    replayed = ssm.from_unconstrained(theta, start)
    assert_close(fitted.A, replayed.A, 1e-9)
    assert_close(fitted.Q, replayed.Q, 1e-9)
    # The returned parameters are theta_num_iters, after the last step: theirs is apart.
    assert_close(info.log_likelihood, ssm.log_likelihood(fitted, ys), 1e-12)


def test_second_call_does_not_recompile(problem):
    _, start, ys = problem
    ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=4)
    start2, ys2 = start._replace(A=0.5 * start.A), ys + 1.0
    # New values, same shapes and options (the update names in another order): no retrace.
    with count_compilations() as events:
        ssm.fit_mle(start2, ys2, optimizer=ADAM, num_iters=4)
        ssm.fit_mle(start2, ys2, optimizer=ADAM, num_iters=4, update=["Q", "A"])
    assert events == [], f"a repeated call traced or compiled: {events}"
    # Positive control: another optimiser object is another program, which must be compiled.
    with count_compilations() as events:
        ssm.fit_mle(start2, ys2, optimizer=optax.sgd(1e-3), num_iters=4)
    assert any("backend_compile" in e for e, _ in events)


def test_callback_and_progress(problem, capsys):
    """``callback(i, ll)`` runs once per step, in order, with the trace's values."""
    _, start, ys = problem
    num_iters = 4
    seen = []

    def record(i, ll):
        seen.append((int(i), float(ll)))

    _, info = ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=num_iters, callback=record)
    assert [i for i, _ in seen] == list(range(num_iters))
    np.testing.assert_array_equal([v for _, v in seen], info.log_likelihoods)
    assert capsys.readouterr().err == ""  # no progress unless asked
    seen.clear()
    _, info = ssm.fit_mle(
        start, ys, optimizer=ADAM, num_iters=num_iters, progress=True, callback=record
    )
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"MLE step {i}/{num_iters}" for i in range(1, num_iters + 1)
    ]
    np.testing.assert_array_equal([v for _, v in seen], info.log_likelihoods)

    def jaxpr(**kwargs):
        fit = lambda p, y: ssm.fit_mle(p, y, optimizer=ADAM, num_iters=2, **kwargs)  # noqa: E731
        return str(jax.make_jaxpr(fit)(start, ys))

    assert "callback" not in jaxpr()
    assert "callback" in jaxpr(callback=record)


def test_batched_sums_log_likelihoods(problem):
    truth, start, ys = problem
    rng = np.random.default_rng(8)
    _, ys2 = simulate(rng, Model(*(np.asarray(x) for x in truth[:6])), ys.shape[0])
    batch = jnp.stack([ys, jnp.asarray(ys2)])
    fitted, info = ssm.fit_mle(start, batch, optimizer=ADAM, num_iters=4)
    each = [ssm.log_likelihood(start, y) for y in batch]
    assert_close(info.log_likelihoods[0], sum(each), 1e-10)
    assert_close(info.log_likelihood, ssm.log_likelihood(fitted, batch), 1e-12)
    # One sequence with a batch axis is the unbatched problem (same normalisation T = N).
    single, info1 = ssm.fit_mle(start, ys[None], optimizer=ADAM, num_iters=4)
    ref, info_ref = ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=4)
    assert_close(info1.log_likelihoods, info_ref.log_likelihoods, 1e-10)
    assert_close(single.A, ref.A, 1e-9)


def test_float32_follows_inputs(problem):
    _, start, ys = problem
    start32 = ssm.LGSSM(*(x.astype(jnp.float32) for x in start[:6]))
    fitted, info = ssm.fit_mle(start32, ys.astype(jnp.float32), optimizer=LBFGS, num_iters=5)
    assert info.log_likelihoods.dtype == jnp.float32
    assert info.log_likelihood.dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in fitted[:6])
    assert float(ssm.log_likelihood(fitted, ys.astype(jnp.float32))) > float(
        info.log_likelihoods[0]
    )


# The heavier case (D = 2, N = 13, five steps) is slow; the default suite runs the same
# comparison at D = 1, N = 3 (compiling the gradient of the associative scan dominates).
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "seed, D, N, num_iters",
    [(10, 1, 3, 2), pytest.param(9, 2, 13, 5, marks=pytest.mark.slow)],
    ids=["D1-N3", "D2-N13"],
)
def test_parallel_method_matches_sequential(seed, D, N, num_iters):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, D)
    _, ys = simulate(rng, model, N)
    start = to_params(model)._replace(A=0.3 * jnp.eye(D))
    opt = optax.adam(1e-2)
    seq, info_seq = ssm.fit_mle(start, ys, optimizer=opt, num_iters=num_iters)
    par, info_par = ssm.fit_mle(start, ys, optimizer=opt, num_iters=num_iters, method="parallel")
    assert_close(info_par.log_likelihoods, info_seq.log_likelihoods, 1e-9)
    assert_close(info_par.log_likelihood, info_seq.log_likelihood, 1e-9)
    assert_close(par.A, seq.A, 1e-9)
    assert_close(par.Q, seq.Q, 1e-9)


def test_reaches_em_log_likelihood(problem, adam_fit, lbfgs_fit):
    """From the same start, fit_mle ends at least as high as a long EM run (update A, Q).

    Measured (seed 2024, D = Dy = 3, N = 300): EM after 1,000 iterations -1397.57950; Adam
    (800 steps, cosine-decayed 5e-2) +2.2e-3 above it, L-BFGS (100 steps) +7.3e-3 above it.
    """
    _, start, ys = problem
    em_params, _ = ssm.fit_em(start, ys, num_iters=1000, update=("A", "Q"))
    ll_em = float(ssm.log_likelihood(em_params, ys))
    ll_adam = float(ssm.log_likelihood(adam_fit[0], ys))
    ll_lbfgs = float(ssm.log_likelihood(lbfgs_fit[0], ys))
    print(f"EM {ll_em:.6f}  Adam {ll_adam - ll_em:+.3e}  L-BFGS {ll_lbfgs - ll_em:+.3e}")
    assert ll_adam >= ll_em
    assert ll_lbfgs >= ll_em


# --- errors -------------------------------------------------------------------------------------


def test_bad_update_names(problem):
    _, start, ys = problem
    with pytest.raises(ValueError, match=r"unknown parameter.*'X'.*valid names.*'m0'"):
        ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=2, update=("A", "X"))
    with pytest.raises(ValueError, match="at least one"):
        ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=2, update=())
    with pytest.raises(ValueError, match="repeat"):
        ssm.to_unconstrained(start, update=("A", "A"))
    with pytest.raises(ValueError, match="valid names"):
        ssm.to_unconstrained(start, update=("q",))


def test_bad_arguments(problem):
    _, start, ys = problem
    with pytest.raises(ValueError, match="method"):
        ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=2, method="fast")
    with pytest.raises(TypeError, match="steady_state"):
        ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=2, method="parallel", steady_state=1)
    with pytest.raises(ValueError, match="num_iters"):
        ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=0)
    with pytest.raises(TypeError, match="num_iters"):
        ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=2.5)
    with pytest.raises(TypeError, match="num_steps"):  # renamed num_iters in 0.2
        ssm.fit_mle(start, ys, optimizer=ADAM, num_steps=2)
    with pytest.raises(TypeError, match="callback"):
        ssm.fit_mle(start, ys, optimizer=ADAM, num_iters=2, callback=3)
    with pytest.raises(TypeError, match="optimizer"):
        ssm.fit_mle(start, ys, optimizer="adam", num_iters=2)
    with pytest.raises(ValueError, match=r"ys must have shape \[N, Dy\] or \[B, N, Dy\]"):
        ssm.fit_mle(start, ys[:, :1], optimizer=ADAM, num_iters=2)
    with pytest.raises(ValueError, match="Q must be symmetric positive definite"):
        ssm.fit_mle(start._replace(Q=-jnp.eye(3)), ys, optimizer=ADAM, num_iters=2)
    theta = ssm.to_unconstrained(start, update=("Q",))
    with pytest.raises(ValueError, match=r"theta.Q must have shape"):
        ssm.from_unconstrained(theta._replace(Q=jnp.zeros(5)), start)
    with pytest.raises(TypeError, match="UnconstrainedParams"):
        ssm.from_unconstrained({"Q": theta.Q}, start)


def test_import_jaxssm_does_not_import_optax():
    # optax is imported on use, so `import jaxssm` works on machines with only jax (GPU boxes).
    import subprocess
    import sys

    code = "import sys, jaxssm; assert 'optax' not in sys.modules, 'optax imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the steady-state paths of the gradient -----------------------------------------------------
#
# On fully observed data with a steady-state bound, fit_mle differentiates through the fast path
# alone, and through the gap-aware recursion alone where the fast path does not cover a point
# (jaxssm._schedules.plan.exact_on_fast_path); with a missing entry through the gap-aware
# recursion alone. The reference is the previous program: the same call with both paths and
# the lax.cond (plan.choose_paths forced to Paths.BOTH), whose value and gradient are the same
# functions, so rtol 1e-10 (observed: ~1e-15; the loops compile to different programs, so not
# bitwise). One optimiser object, N and num_iters throughout: the compiled loops are shared.
PATHS_OPT = optax.adam(0.3)
PATHS_ITERS = 15
PATHS_N = 400  # steady_state=True: the bound T = 128 (settle.transient_bound)


def _fit_paths(start, ys, monkeypatch=None, both=False, optimizer=PATHS_OPT, num_iters=PATHS_ITERS):
    """fit_mle on the steady-state schedule; the paths it chose; ``both``: force Paths.BOTH."""
    from jaxssm._schedules import plan as _plan

    real, seen = _plan.choose_paths, []

    def spy(*args):
        seen.append(_plan.Paths.BOTH if both else real(*args))
        return seen[-1]

    monkeypatch.setattr(_plan, "choose_paths", spy)
    out = ssm.fit_mle(start, ys, optimizer=optimizer, num_iters=num_iters, steady_state=True)
    monkeypatch.setattr(_plan, "choose_paths", real)
    return out, seen


def _covered(params, ys) -> bool:
    """Whether the steady-state fast path covers ``params`` (settled within the bound)."""
    from jaxssm._args.schedule import resolve
    from jaxssm._schedules import dispatch as _dispatch

    kind, fast = _dispatch.Kind.LOG_LIKELIHOOD, _dispatch.Paths.FAST
    return bool(_dispatch.run(kind, params, ys, resolve("sequential", True), paths=fast)[1][0])


def _assert_same_fit(one, both, rtol=1e-10):
    (p1, i1), (p2, i2) = one, both
    assert np.all(np.isfinite(np.asarray(i1.log_likelihoods)))
    assert_close(i1.log_likelihoods, i2.log_likelihoods, rtol)
    assert_close(i1.log_likelihood, i2.log_likelihood, rtol)
    for name in ("A", "Q"):
        assert_close(getattr(p1, name), getattr(p2, name), rtol)
    assert int(i1.status) == int(i2.status) and int(i1.best_iter) == int(i2.best_iter)


@pytest.fixture(scope="module")
def paths_problem():
    """D = Dy = 2, N = 400, a model that settles within a few dozen steps."""
    rng = np.random.default_rng(31)
    model = random_model(rng, 2, 2)
    _, ys = simulate(rng, model, PATHS_N)
    start = to_params(model)._replace(A=0.3 * jnp.eye(2), Q=1.5 * jnp.eye(2))
    return start, jnp.asarray(ys)


def test_choose_paths_follows_the_data(paths_problem):
    from jaxssm._args.schedule import resolve
    from jaxssm._schedules import plan as _plan

    P = _plan.Paths
    start, ys = paths_problem
    steady, full, auto = (resolve("sequential", s) for s in (True, False, None))
    assert _plan.choose_paths(start, ys, None, steady) is P.FAST
    assert _plan.choose_paths(start, ys.at[3, 1].set(jnp.nan), None, steady) is P.GAP_AWARE
    assert _plan.choose_paths(start, ys, None, full) is P.BOTH  # no fast path: unchanged
    assert _plan.choose_paths(start, ys, None, auto) is P.BOTH  # N < MIN_STEADY_STEPS
    seen = []
    jax.jit(lambda p: seen.append(_plan.choose_paths(p, ys, None, steady)))(start)
    jax.jit(lambda y: seen.append(_plan.choose_paths(start, y, None, steady)))(ys)
    assert seen == [P.BOTH, P.BOTH]  # traced: both paths, chosen on device
    # prepare_stats (EM's plan) makes the same choice.
    for y in (ys, ys.at[3, 1].set(jnp.nan)):
        for s in (steady, full):
            assert _plan.prepare_stats(start, y, None, s).paths is _plan.choose_paths(
                start, y, None, s
            )


def test_exact_on_fast_path_picks_each_points_gradient():
    """The custom VJP on a stand-in objective: the fast branch where covered, else the other.

    ``f(x, FAST) = (sum x^2, covered = x_0 < 1)``, ``f(x, GAP_AWARE) = sum x^3``,
    ``f(x, BOTH)`` the one that applies: exact gradients ``2 x`` and ``3 x^2``, bitwise.
    """
    from types import SimpleNamespace

    from jaxssm._schedules import plan as _plan

    P = _dispatch_paths()

    def f(theta, paths):
        x = theta["x"]
        fast, other, covered = jnp.sum(x**2), jnp.sum(x**3), x[0] < 1
        value = {P.FAST: fast, P.GAP_AWARE: other, P.BOTH: jnp.where(covered, fast, other)}
        return value[paths], SimpleNamespace(fast_path=covered if paths is P.FAST else None)

    objective = jax.jit(jax.value_and_grad(_plan.exact_on_fast_path(f)))
    for x, expected in ((jnp.array([0.5, -2.0]), "fast"), (jnp.array([1.5, -2.0]), "other")):
        value, grad = objective({"x": x})
        ref_value = jnp.sum(x**2) if expected == "fast" else jnp.sum(x**3)
        ref_grad = 2 * x if expected == "fast" else 3 * x**2
        assert float(value) == float(ref_value), expected
        np.testing.assert_array_equal(grad["x"], ref_grad, err_msg=expected)
        assert float(_plan.exact_on_fast_path(f)({"x": x})) == float(ref_value)  # primal


@pytest.mark.slow  # test_uncovered_points_fall_back_and_match covers this in the default suite
def test_fast_path_gradient_matches_both_paths(paths_problem, monkeypatch):
    start, ys = paths_problem
    assert _covered(start, ys)
    one, seen = _fit_paths(start, ys, monkeypatch)
    assert seen == [_dispatch_paths().FAST]
    both, _ = _fit_paths(start, ys, monkeypatch, both=True)
    _assert_same_fit(one, both)
    assert float(one[1].log_likelihood) > float(one[1].log_likelihoods[0])  # it does fit


@pytest.mark.slow  # about 11-14 s on 2 cores: two compiled fits
def test_uncovered_points_fall_back_and_match(monkeypatch):
    """A start whose covariances do not settle within the bound, and a run that leaves it.

    A = 0.999 I, Q = 1e-6 I, R = I: the steady-state gain is ~1e-3, the closed-loop pole
    ~0.998, so the covariances take thousands of steps to settle (T = 128); Adam grows Q
    until they settle, so the loop evaluates on both sides of the fast path's cover.
    """
    rng = np.random.default_rng(7)
    D = 2
    true = Model(np.zeros(D), np.eye(D), 0.9 * np.eye(D), 0.3 * np.eye(D), np.eye(D), np.eye(D))
    _, ys = simulate(rng, true, PATHS_N)
    ys = jnp.asarray(ys)
    start = to_params(true)._replace(A=0.999 * jnp.eye(D), Q=1e-6 * jnp.eye(D))
    one, seen = _fit_paths(start, ys, monkeypatch)
    assert seen == [_dispatch_paths().FAST]
    assert not _covered(start, ys) and _covered(one[0], ys)  # both sides
    both, _ = _fit_paths(start, ys, monkeypatch, both=True)
    _assert_same_fit(one, both)


@pytest.mark.slow  # the gap-aware path is dispatch's (test_dispatch.py); the choice is tested above
def test_missing_entries_take_the_gap_aware_path(paths_problem, monkeypatch):
    start, ys = paths_problem
    ys = ys.at[50, 0].set(jnp.nan).at[200].set(jnp.nan)
    one, seen = _fit_paths(start, ys, monkeypatch)
    assert seen == [_dispatch_paths().GAP_AWARE]
    both, _ = _fit_paths(start, ys, monkeypatch, both=True)
    _assert_same_fit(one, both)


@pytest.mark.slow
def test_lbfgs_line_search_on_one_path_matches_both_paths(paths_problem, monkeypatch):
    """L-BFGS's zoom line search evaluates trial points: every one is exact too."""
    start, ys = paths_problem
    slow = start._replace(A=0.999 * jnp.eye(2), Q=1e-6 * jnp.eye(2))  # starts uncovered
    for s in (start, slow):
        one, _ = _fit_paths(s, ys, monkeypatch, optimizer=LBFGS, num_iters=12)
        both, _ = _fit_paths(s, ys, monkeypatch, both=True, optimizer=LBFGS, num_iters=12)
        _assert_same_fit(one, both)
        full = ssm.fit_mle(s, ys, optimizer=LBFGS, num_iters=12, steady_state=False)
        _assert_same_fit(one, full, 1e-8)


def _dispatch_paths():
    from jaxssm._schedules.dispatch import Paths

    return Paths
