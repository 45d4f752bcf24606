"""jaxssm.fit: accelerated EM to convergence; the answer is a maximum (score ~ 0, no EM gain)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxssm as ssm
from jaxssm._learn.fit import num_free_params
from jaxssm._learn.score import score

UPDATE = ("A", "Q")


def _fit(params, ys, **kwargs):
    # The paths under test start where the test says (fit's default picks the better of
    # the given start and the data start: test_start_auto).
    return ssm.fit(params, ys, **{"start": "params", **kwargs})


def _true(dtype=jnp.float64, Q=(0.1, 0.05)):
    return ssm.LGSSM(
        m0=jnp.zeros(2, dtype),
        P0=jnp.eye(2, dtype=dtype),
        A=jnp.array([[0.9, 0.1], [0.0, 0.8]], dtype),
        Q=jnp.diag(jnp.array(Q, dtype)),
        H=jnp.eye(2, dtype=dtype),
        R=0.1 * jnp.eye(2, dtype=dtype),
    )


def _start(true):
    dtype = true.A.dtype
    return true._replace(A=jnp.zeros((2, 2), dtype), Q=jnp.eye(2, dtype=dtype))


@pytest.fixture(scope="module")
def problem():
    true = _true()
    _, ys = ssm.sample(jax.random.PRNGKey(1), true, 500)
    return _start(true), ys


def _finite(trace):
    trace = np.asarray(trace)
    return trace[np.isfinite(trace)]


def _assert_monotone(info, rtol=1e-9):
    trace = _finite(info.log_likelihoods)
    assert np.all(np.diff(trace) >= -rtol * np.abs(trace[1:]))


def test_fit_reaches_the_maximum(problem):
    start, ys = problem
    params, info = _fit(start, ys)
    assert info.status == ssm.FitStatus.CONVERGED
    _assert_monotone(info)
    assert float(info.log_likelihood) == pytest.approx(
        float(ssm.log_likelihood(params, ys)), abs=1e-9
    )
    # The same maximum as a long plain EM run, in a fraction of its E-steps.
    _, plain = ssm.fit_em(start, ys, num_iters=2000)
    assert float(info.log_likelihood) >= float(plain.log_likelihood) - 1e-6
    assert info.num_e_steps < 200
    # At a maximum: the exact score is ~0 relative to the parameters' scale ...
    g = score(params, ys, update=UPDATE)
    # (each entry's gradient times the entry: nats per relative change, against |log p(y)|)
    scaled = max(float(jnp.max(jnp.abs(g.A * params.A))), float(jnp.max(jnp.abs(g.Q * params.Q))))
    assert scaled < 1e-4 * abs(float(info.log_likelihood))
    assert float(info.grad_norm) ** 2 / 2 <= 1e-9 * abs(float(info.log_likelihood))
    # ... and 50 more plain EM iterations gain (almost) nothing.
    _, more = ssm.fit_em(params, ys, num_iters=50)
    assert float(more.log_likelihood) - float(info.log_likelihood) < 1e-6


def test_information_criteria(problem):
    start, ys = problem
    params, info = _fit(start, ys, tol=1e-6)
    k = 2 * 2 + 3  # A: D^2, Q: D (D + 1) / 2
    assert info.num_free_params == k == num_free_params(params, UPDATE)
    assert num_free_params(params, ("A", "Q", "H", "R", "m0")) == 4 + 3 + 4 + 3 + 2
    ll = float(info.log_likelihood)
    assert float(info.aic) == pytest.approx(2 * k - 2 * ll)
    assert float(info.bic) == pytest.approx(k * math.log(ys.shape[0]) - 2 * ll)


def _boundary_problem():
    # The first component is noise free (Q[0, 0] = 0): the maximum sits where Q turns
    # singular, and plain EM crawls towards it (its rate tends to one).
    true = _true(Q=(0.0, 0.1))._replace(A=jnp.array([[0.99, 0.1], [0.0, 0.9]]))
    _, ys = ssm.sample(jax.random.PRNGKey(2), true, 300)
    return _start(true), ys


def _rank_one_maximum(params, ys):
    """The maximum over (A, l) with Q = l l^T by scipy's L-BFGS-B, from ``params`` (reference)."""
    import scipy.optimize

    w, v = np.linalg.eigh(np.asarray(params.Q))
    x0 = np.concatenate([np.asarray(params.A).ravel(), v[:, -1] * np.sqrt(w[-1])])

    def unpack(x):
        col = x[4:]
        return params._replace(A=x[:4].reshape(2, 2), Q=jnp.outer(col, col))

    vg = jax.jit(jax.value_and_grad(lambda x: -ssm.log_likelihood(unpack(x), ys)))

    def fun(x):
        f, g = vg(jnp.asarray(x))
        return float(f), np.asarray(g, np.float64)

    res = scipy.optimize.minimize(
        fun, x0, jac=True, method="L-BFGS-B", options=dict(maxiter=5000, gtol=1e-10, ftol=1e-15)
    )
    return -res.fun


# Slow suite (16 s): the default suite keeps the boundary stage's smaller cases (the add-back
# of wrongly held directions, the KKT sign check, a singular start).
@pytest.mark.slow
def test_boundary_maximum_with_a_singular_q():
    start, ys = _boundary_problem()
    params, info = _fit(start, ys, tol=1e-9)
    assert info.status == ssm.FitStatus.CONVERGED
    _assert_monotone(info)
    # The boundary stage ran: one direction of Q held at zero, exact gradients used.
    assert info.rank_dropped == {"Q": 1}
    assert info.num_grad_evals > 0
    assert len(info.grad_log_likelihoods) == info.num_grad_evals
    w = np.linalg.eigvalsh(np.asarray(params.Q))
    assert w[0] <= 1e-12 * w[1]
    ll = float(info.log_likelihood)
    assert ll == pytest.approx(float(ssm.log_likelihood(params, ys)), abs=1e-9)
    # The same maximum as a direct optimisation of the rank-one model (to 1e-5 nats) and
    # above long runs of plain and accelerated EM (which crawl towards it).
    reference = _rank_one_maximum(params, ys)
    assert ll == pytest.approx(reference, abs=1e-5)
    _, plain = ssm.fit_em(start, ys, num_iters=3000)
    assert ll > float(plain.log_likelihood) + 1e-3
    _, squarem = _fit(start, ys, rank_tol=None, max_iters=3000)
    assert ll >= float(squarem.log_likelihood)
    assert info.num_e_steps < 500
    # KKT at a boundary maximum: in the free coordinates of the rank-one model (A, l), with
    # Q = l l^T, the exact Newton decrement (exact Hessian, 6 parameters) is ~0 ...
    vals, vecs = np.linalg.eigh(np.asarray(params.Q))
    kept, null = vecs[:, 1], vecs[:, 0]

    def reduced(x):
        return ssm.log_likelihood(
            params._replace(A=x[:4].reshape(2, 2), Q=jnp.outer(x[4:], x[4:])), ys
        )

    x = jnp.concatenate([params.A.ravel(), jnp.asarray(kept * np.sqrt(vals[1]))])
    grad, hess = np.asarray(jax.grad(reduced)(x)), np.asarray(jax.hessian(reduced)(x))
    assert np.all(np.linalg.eigvalsh(hess) < 0)  # a strict local maximum of the reduced model
    assert -0.5 * grad @ np.linalg.solve(hess, grad) < 1e-6  # the gain Newton predicts, nats
    # ... and the full gradient in Q points out of the PSD cone along the dropped direction.
    g = jax.grad(lambda p: ssm.log_likelihood(p, ys))(params)
    gQ = 0.5 * (np.asarray(g.Q) + np.asarray(g.Q).T)
    assert null @ gQ @ null < 0
    assert info.boundary_slope < 0
    assert info.boundary_slope == pytest.approx(float(null @ gQ @ null) * vals[1], rel=1e-3)
    # 50 more plain EM iterations gain nothing.
    _, more = ssm.fit_em(params, ys, num_iters=50)
    assert float(more.log_likelihood) - ll < 1e-6


def test_boundary_stage_skipped_at_an_interior_maximum(problem):
    start, ys = problem
    _, info = _fit(start, ys)
    assert info.num_grad_evals == 0 and info.rank_dropped == {}
    assert np.isnan(info.boundary_slope)
    # Off by request: EM's stage alone (its status from EM's tests).
    start_b, ys_b = _boundary_problem()
    _, off = _fit(start_b, ys_b, rank_tol=None, max_iters=300)
    assert off.num_grad_evals == 0 and off.rank_dropped == {}


def test_boundary_with_a_singular_start():
    # A start that is already singular goes straight to the boundary stage; the dropped
    # direction's KKT sign is checked and the answer is the rank-one maximum.
    start, ys = _boundary_problem()
    ref, _ = _fit(start, ys, tol=1e-9)
    singular = ref._replace(A=ref.A + 0.01, Q=ref.Q)
    params, info = _fit(singular, ys, tol=1e-9)
    assert info.status == ssm.FitStatus.CONVERGED
    assert info.rank_dropped == {"Q": 1}
    assert float(info.log_likelihood) == pytest.approx(_rank_one_maximum(ref, ys), abs=1e-5)


def test_boundary_stage_adds_back_a_direction_that_violates_kkt(problem):
    # A singular start at an interior problem: the boundary stage starts with Q's null
    # direction held at zero, finds the KKT sign violated there (the likelihood rises out of
    # the face) and adds it back: the answer is the interior maximum.
    start, ys = problem
    ref, ref_info = _fit(start, ys)
    singular = start._replace(Q=jnp.diag(jnp.array([1.0, 0.0])))
    params, info = _fit(singular, ys)
    assert info.status == ssm.FitStatus.CONVERGED
    assert info.rank_dropped == {} and info.num_grad_evals > 0
    assert float(info.log_likelihood) == pytest.approx(float(ref_info.log_likelihood), abs=1e-4)
    np.testing.assert_allclose(np.asarray(params.Q), np.asarray(ref.Q), atol=1e-3)


# every=0 (the end-of-stage check alone, about 6.5 s) runs in the slow suite: the default
# suite is near its 10-minute limit, and test_boundary_stage_adds_back_a_direction_that_
# violates_kkt covers the end-of-stage check there.
@pytest.mark.parametrize("every", [pytest.param(0, marks=pytest.mark.slow), 3])
def test_boundary_stage_adds_back_every_wrongly_held_direction(monkeypatch, every):
    # Two of three directions held at zero at an interior maximum: both must grow back, by
    # the end-of-stage KKT check (every=0) or the periodic one (every=3 accepted steps).
    from jaxssm._learn import boundary

    monkeypatch.setattr(boundary, "_KKT_EVERY", every)
    true = ssm.LGSSM(
        m0=jnp.zeros(3),
        P0=jnp.eye(3),
        A=jnp.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.1], [0.0, 0.0, 0.7]]),
        Q=jnp.diag(jnp.array([0.1, 0.05, 0.08])),
        H=jnp.eye(3),
        R=0.1 * jnp.eye(3),
    )
    _, ys = ssm.sample(jax.random.PRNGKey(3), true, 400)
    start = true._replace(A=jnp.zeros((3, 3)), Q=jnp.eye(3))
    ref, ref_info = _fit(start, ys, rank_tol=None)
    singular = start._replace(Q=jnp.diag(jnp.array([1.0, 0.0, 0.0])))
    params, info = _fit(singular, ys)
    assert info.status == ssm.FitStatus.CONVERGED
    assert info.rank_dropped == {} and info.num_grad_evals > 0
    assert float(info.log_likelihood) == pytest.approx(float(ref_info.log_likelihood), abs=1e-4)
    np.testing.assert_allclose(np.asarray(params.Q), np.asarray(ref.Q), atol=1e-3)


def test_boundary_stage_keeps_a_direction_grown_back_below_rank_tol(problem):
    # rank_tol = 0.9 calls the interior maximum's smaller eigenvalue (half the larger)
    # vanishing: held at zero from a singular start, it fails the KKT check and its best size
    # lies below rank_tol * lambda_max. The grow-back finds that size and lowers the stage's
    # threshold under it, so the direction stays kept: the interior maximum, converged.
    start, ys = problem
    _, ref_info = _fit(start, ys)
    singular = start._replace(Q=jnp.diag(jnp.array([1.0, 0.0])))
    params, info = _fit(singular, ys, rank_tol=0.9)
    assert info.status == ssm.FitStatus.CONVERGED
    assert info.rank_dropped == {}
    w = np.linalg.eigvalsh(np.asarray(params.Q))
    assert w[0] < 0.9 * w[1]  # kept below the caller's rank_tol
    assert float(info.log_likelihood) == pytest.approx(float(ref_info.log_likelihood), abs=1e-4)


def test_boundary_stage_never_starts_below_its_point(problem):
    # At the interior maximum, rank_tol = 0.9 calls its smaller eigenvalue (half the larger)
    # vanishing, but holding it at zero costs nats. The stage's frame then holds only the
    # directions that are zero to round-off: it starts at the maximum and stops there, where
    # it used to start from the zeroed model and climb back (an L-BFGS search on the wrong
    # face, then the grow-back's filter passes).
    start, ys = problem
    ref, ref_info = _fit(start, ys, tol=1e-12)
    params, info = _fit(ref, ys, rank_tol=0.9)
    assert info.status == ssm.FitStatus.CONVERGED and info.rank_dropped == {}
    assert float(info.log_likelihood) >= float(ref_info.log_likelihood) - 1e-9
    # (tol 1e-8 of a flat maximum: log p within 1e-9, Q within 1e-5 of the tol 1e-12 fit)
    np.testing.assert_allclose(np.asarray(params.Q), np.asarray(ref.Q), atol=1e-5)
    # the start's filter pass, the zeroed frame, the settled frame, (a step that rises by
    # round-off at most), then the small direction's block at the stopping point (a restart
    # and one gradient per coordinate: its row of A and its column of L), whose Newton model
    # predicts no gain
    assert info.num_grad_evals <= 4 + 1 + 4


def test_boundary_stage_drops_a_kept_direction_whose_removal_raises_the_likelihood():
    # The rank-one maximum with its noise-free direction put back at 1e-4 lambda_max and a
    # rank_tol far below it: the stage starts with every direction kept, and its stopping test
    # passes short of the boundary (the eigenvalue's coordinate loses curvature as it
    # shrinks). The end-of-stage test finds that zeroing the direction raises log p(y), drops
    # it and goes on to the rank-one maximum (scipy's, on Q = l l^T).
    from jaxssm._args.prologue import prologue
    from jaxssm._learn.boundary import boundary_stage

    start, ys = _boundary_problem()
    ref, ref_info = _fit(start, ys, tol=1e-9)
    assert ref_info.rank_dropped == {"Q": 1}
    w, v = np.linalg.eigh(np.asarray(ref.Q))
    w[0] = 1e-4 * w[1]
    point = ref._replace(Q=jnp.asarray((v * w) @ v.T))
    point, ys_, inputs, schedule = prologue(
        point, ys, None, method="sequential", allow_batch=True, update=("A", "Q")
    )
    stats, _ = ssm.e_step(point, ys_)
    result = boundary_stage(
        point,
        ys_,
        inputs,
        stats,
        update=("A", "Q"),
        schedule=schedule,
        rank_tol=1e-9,
        tol=1e-6,
        max_evals=500,
        num_steps=ys.shape[0],
        num_sequences=1,
    )
    # tol = 1e-6: within tol |log p| (2.9e-4 nats) of the maximum. Without the end-of-stage
    # drop the stage stopped with the direction kept at 2e-6 lambda_max, 3.3e-3 nats below.
    assert result.converged and result.rank_dropped == {"Q": 1}
    gap = _rank_one_maximum(ref, ys) - result.log_likelihood
    assert -1e-8 < gap < 1e-6 * abs(result.log_likelihood)
    assert len(result.log_likelihoods) == result.num_grad_evals


def test_block_hessian_is_the_exact_hessian_on_the_small_directions():
    # The boundary stage's preconditioner: the Hessian of log p(y) on the coordinates along
    # the small directions of Q (A's rows, and L's kept small columns), by forward differences
    # of the stage's exact gradient. Reference: jax.hessian (forward over reverse) of the same
    # objective through the plain filter.
    from jaxssm._args.schedule import resolve
    from jaxssm._learn import block, frame
    from jaxssm._schedules import dispatch

    true = ssm.LGSSM(
        m0=jnp.zeros(3),
        P0=jnp.eye(3),
        A=jnp.array([[0.95, 0.1, 0.0], [0.0, 0.9, 0.1], [0.05, 0.0, 0.8]]),
        Q=jnp.diag(jnp.array([0.0, 1e-8, 0.1])),
        H=jnp.eye(3),
        R=0.1 * jnp.eye(3),
    )
    _, ys = ssm.sample(jax.random.PRNGKey(4), true, 200)
    stats, _ = ssm.e_step(true, ys)
    rank_tol, floor = 1e-6, 1e-12  # direction 0 held, direction 1 kept and small
    base, left, right, _ = frame.build_frame(true, stats, UPDATE, floor, ys.shape[0], 1)
    flat = frame.Flat({"A": (3, 3), "Q": (3, 3)})
    small = block.small_directions(true, rank_tol, floor)
    idx = block.block_indices(flat, small)
    # Q's eigenvalues ascend: A's rows 0 and 1 (coordinates 0-5) and L's column 1 (9 + 1, 4, 7).
    np.testing.assert_array_equal(idx, [0, 1, 2, 3, 4, 5, 10, 13, 16])
    zeros = {"Q": jnp.zeros((3, 3))}
    schedule = resolve("sequential", False, "cov")

    def objective(x):
        model = frame.assemble(flat.unravel(x, jnp.float64), zeros, base, left, right, true)
        return ssm.log_likelihood(model, ys)

    def grad(x):
        _, g, _ = frame.value_and_grad(
            flat.unravel(x, jnp.float64),
            zeros,
            base,
            left,
            right,
            true,
            ys,
            None,
            schedule=schedule,
            paths=dispatch.Paths.BOTH,
        )
        return flat.ravel(g)

    x0 = np.zeros(18)
    exact = np.asarray(jax.hessian(objective)(jnp.asarray(x0)))[np.ix_(idx, idx)]
    approx = block.block_hessian(grad, x0, grad(x0), idx)
    # Forward differences with a step of 1e-4 (in units of about one standard error):
    # truncation error of order the step times the third derivative (measured: 3e-8 of the
    # largest entry).
    np.testing.assert_allclose(approx, exact, rtol=0, atol=1e-6 * np.abs(exact).max())
    # The map is M^{-1/2}, M the negated Hessian with its eigenvalues' absolute values raised
    # to the floor (here one curvature is negative: this point is not a maximum).
    mu, u = np.linalg.eigh(-exact)
    m = (u * np.maximum(np.abs(mu), block.CURVATURE_FLOOR)) @ u.T
    s = block.block_map(grad, x0, grad(x0), idx)
    np.testing.assert_allclose(s.T @ m @ s, np.eye(idx.size), atol=1e-4)


def _newton_on_the_face(params, ys, rank):
    """The maximum over ``(A, L)`` with ``Q = L L^T``, ``L [n, rank]``: Newton's method on the
    exact Hessian (jax.hessian through the full recursion), from ``params`` (reference)."""
    n = params.A.shape[0]
    w, v = np.linalg.eigh(np.asarray(params.Q))
    theta = jnp.concatenate(
        [params.A.ravel(), jnp.asarray(v[:, -rank:] * np.sqrt(w[-rank:])).ravel()]
    )

    def f(th):
        col = th[n * n :].reshape(n, rank)
        model = params._replace(A=th[: n * n].reshape(n, n), Q=col @ col.T)
        return ssm.log_likelihood(model, ys, steady_state=False)

    value_and_grad, hessian = jax.jit(jax.value_and_grad(f)), jax.jit(jax.hessian(f))
    value, g = value_and_grad(theta)
    for _ in range(30):
        mu, u = np.linalg.eigh(-np.asarray(hessian(theta)))
        keep = mu > 1e-10 * mu.max()  # (L's columns turn freely: one flat direction)
        assert np.all(mu > -1e-10 * mu.max())  # a maximum on the face
        step = (u[:, keep] / mu[keep]) @ (u[:, keep].T @ np.asarray(g))
        decrement = float(np.asarray(g) @ step)
        t = 1.0
        while (trial := value_and_grad(theta + t * step))[0] < value and t > 1e-6:
            t /= 2
        theta, (value, g) = theta + t * step, trial
        if decrement < 1e-12:
            break
    assert decrement < 1e-10
    return float(value)


@pytest.mark.slow  # about 25 s on 2 cores: the fit and the Newton reference on 10,000 steps
def test_fit_goes_on_where_lbfgs_stops_short_of_the_maximum():
    # Q's eigenvalues 1e-6 .. 0.1 and 10,000 steps: two directions vanish at the maximum
    # and a third is small. Along the small directions' coordinates (their rows of A, their
    # column of L) the observed information is 1e-6 .. 1e-3 of the complete-data information
    # the boundary stage is scaled by, L-BFGS crawls, and its stopping test passed 1.17 nats
    # short. The block's exact Hessian (preconditioner) takes fit to the maximum on the face:
    # Newton's method with the exact Hessian from fit's answer.
    n = 4
    rng = np.random.default_rng(1)
    a = 0.9 * np.eye(n) + 0.1 * np.triu(rng.standard_normal((n, n)), 1)
    v = np.linalg.qr(rng.standard_normal((n, n)))[0]
    q = (v * np.array([1e-6, 1e-5, 1e-3, 0.1])) @ v.T
    true = ssm.LGSSM(
        m0=jnp.zeros(n),
        P0=jnp.eye(n),
        A=jnp.asarray(a),
        Q=jnp.asarray(q),
        H=jnp.eye(n),
        R=0.1 * jnp.eye(n),
    )
    _, ys = ssm.sample(jax.random.PRNGKey(1), true, 10_000)
    params, info = _fit(true._replace(A=jnp.zeros((n, n)), Q=jnp.eye(n)), ys)
    assert info.status == ssm.FitStatus.CONVERGED and info.rank_dropped == {"Q": 2}
    ll = float(info.log_likelihood)
    best = _newton_on_the_face(params, ys, rank=2)
    # fit's tol (1e-8): within tol |log p| (1.5e-4 nats) of the maximum; measured 7.8e-5
    assert best - 1e-8 * abs(ll) <= ll <= best + 1e-9 * abs(ll)


@pytest.mark.slow  # about 11-14 s on 2 cores: two compiled fits
def test_boundary_stage_on_the_steady_state_schedule():
    # Fully observed data on the steady-state schedule: the stage's gradients run on the
    # fast path alone (reverse mode through one path); the same maximum as the full
    # recursion's.
    start, ys = _boundary_problem()
    full, full_info = _fit(start, ys, tol=1e-9, steady_state=False)
    steady, info = _fit(start, ys, tol=1e-9, steady_state=True)
    assert info.status == ssm.FitStatus.CONVERGED and info.rank_dropped == {"Q": 1}
    assert info.num_grad_evals > 0
    assert float(info.log_likelihood) == pytest.approx(float(full_info.log_likelihood), abs=1e-6)
    np.testing.assert_allclose(np.asarray(steady.A), np.asarray(full.A), atol=1e-4)


def test_missing_entries(problem):
    start, ys = problem
    mask = jax.random.bernoulli(jax.random.PRNGKey(3), 0.15, ys.shape)
    gappy = jnp.where(mask, jnp.nan, ys)
    params, info = _fit(start, gappy)
    assert info.status == ssm.FitStatus.CONVERGED
    _assert_monotone(info)
    _, plain = ssm.fit_em(start, gappy, num_iters=1500)
    assert float(info.log_likelihood) >= float(plain.log_likelihood) - 1e-6
    # BIC counts the steps with an observed entry.
    observed = int(np.sum(~np.all(np.isnan(np.asarray(gappy)), axis=-1)))
    ll = float(info.log_likelihood)
    assert float(info.bic) == pytest.approx(info.num_free_params * math.log(observed) - 2 * ll)


def test_batch():
    true = _true()
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    ys = jax.vmap(lambda k: ssm.sample(k, true, 200)[1])(keys)
    start = _start(true)
    params, info = _fit(start, ys)
    assert info.status == ssm.FitStatus.CONVERGED
    _, plain = ssm.fit_em(start, ys, num_iters=1500)
    assert float(info.log_likelihood) >= float(plain.log_likelihood) - 1e-6


def test_inputs():
    true = _true()._replace(B=jnp.array([[0.5], [-0.2]]))
    u = jax.random.normal(jax.random.PRNGKey(5), (400, 1))
    _, ys = ssm.sample(jax.random.PRNGKey(6), true, 400, inputs=u)
    start = _start(true)._replace(B=jnp.zeros((2, 1)))
    update = ("A", "B", "Q")
    params, info = _fit(start, ys, inputs=u, update=update)
    assert info.status == ssm.FitStatus.CONVERGED
    assert info.num_free_params == 4 + 2 + 3
    _, plain = ssm.fit_em(start, ys, inputs=u, update=update, num_iters=1500)
    assert float(info.log_likelihood) >= float(plain.log_likelihood) - 1e-6


@pytest.mark.slow
def test_parallel_schedule_agrees(problem):
    start, ys = problem
    _, seq = _fit(start, ys)
    _, par = _fit(start, ys, method="parallel")
    assert float(par.log_likelihood) == pytest.approx(float(seq.log_likelihood), abs=1e-6)


def test_start_from_data(problem):
    start, ys = problem
    params, info = _fit(start, ys, start="data")
    _, ref = _fit(start, ys)
    assert info.status == ssm.FitStatus.CONVERGED and info.start == "data"
    assert ref.start == "params"
    assert float(info.log_likelihood) == pytest.approx(float(ref.log_likelihood), abs=1e-5)


def test_start_auto(problem):
    # The default starts at the better of the two starts: the data start from a poor one
    # (the same run as start="data", counting its two filter passes), the given start from
    # a better one (the maximum itself: one round of tests and it is done).
    start, ys = problem
    assert ssm.log_likelihood(ssm.initialize(start, ys), ys) > ssm.log_likelihood(start, ys)
    params, info = ssm.fit(start, ys)
    ref_params, ref = _fit(start, ys, start="data")
    assert info.start == "data" and info.num_e_steps == ref.num_e_steps + 2
    np.testing.assert_array_equal(np.asarray(params.A), np.asarray(ref_params.A))
    again, info2 = ssm.fit(ref_params, ys)
    assert info2.start == "params"
    assert float(info2.log_likelihood) >= float(ref.log_likelihood) - 1e-9


def test_start_both_keeps_the_run_that_ends_higher(problem):
    # start="both" is the two whole fits, the higher kept: with 4 E-steps neither converges
    # and they end apart, so keeping the wrong one (or always the same one) fails. From the
    # poor start the data start ends higher; from the maximum the given start does.
    start, ys = problem
    best_params, _ = _fit(start, ys)
    for here, want in ((start, "data"), (best_params, "params")):
        runs = {s: _fit(here, ys, start=s, max_iters=4) for s in ("params", "data")}
        lls = {s: float(info.log_likelihood) for s, (_, info) in runs.items()}
        assert abs(lls["data"] - lls["params"]) > 1e-6
        assert max(lls, key=lls.get) == want
        params, info = _fit(here, ys, start="both", max_iters=4)
        assert info.start == want
        assert float(info.log_likelihood) == lls[want]
        np.testing.assert_array_equal(np.asarray(params.A), np.asarray(runs[want][0].A))
        np.testing.assert_array_equal(np.asarray(params.Q), np.asarray(runs[want][0].Q))


def test_start_both_runs_the_given_start_where_initialize_cannot():
    # H of shape [1, 2]: the regression start needs H of full column rank, so start="data"
    # raises and start="both" is the given start's run alone.
    true = _true()._replace(H=jnp.array([[1.0, 0.5]]), R=jnp.array([[0.1]]))
    _, ys = ssm.sample(jax.random.PRNGKey(2), true, 200)
    start = _start(true)
    with pytest.raises(ValueError, match="full column rank"):
        _fit(start, ys, start="data", max_iters=4)
    params, info = _fit(start, ys, start="both", max_iters=4)
    ref_params, ref = _fit(start, ys, max_iters=4)
    assert info.start == "params"
    assert float(info.log_likelihood) == float(ref.log_likelihood)
    np.testing.assert_array_equal(np.asarray(params.A), np.asarray(ref_params.A))


def test_float32_runs_without_nan():
    true = _true(jnp.float32)
    _, ys = ssm.sample(jax.random.PRNGKey(1), true, 500)
    params, info = _fit(_start(true), ys, tol=1e-6, max_iters=600)
    assert params.A.dtype == jnp.float32 and params.Q.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(params.A))) and np.all(np.isfinite(np.asarray(params.Q)))
    assert np.isfinite(float(info.log_likelihood)) and np.isfinite(float(info.grad_norm))
    _assert_monotone(info, rtol=3.5e-4)


def test_bad_arguments(problem):
    start, ys = problem
    with pytest.raises(ValueError, match="start"):
        _fit(start, ys, start="nope")
    with pytest.raises((ValueError, TypeError)):
        _fit(start, ys, max_iters=2)
    with pytest.raises(ValueError, match="rank_tol"):
        _fit(start, ys, rank_tol=2.0)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the parallel schedule's programs compile slowly
@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_boundary_maximum_with_gaps(method):
    # The boundary stage on a series with missing entries (every schedule's gap path): the
    # rank-one maximum of the direct optimisation, and the KKT sign along the dropped
    # direction.
    start, ys = _boundary_problem()
    mask = jax.random.bernoulli(jax.random.PRNGKey(8), 0.2, ys.shape)
    gappy = jnp.where(mask, jnp.nan, ys)
    params, info = _fit(start, gappy, tol=1e-9, method=method)
    assert info.status == ssm.FitStatus.CONVERGED
    assert info.rank_dropped == {"Q": 1} and info.num_grad_evals > 0
    assert info.boundary_slope < 0
    ll = float(info.log_likelihood)
    assert ll == pytest.approx(float(ssm.log_likelihood(params, gappy)), abs=1e-9)
    assert ll == pytest.approx(_rank_one_maximum(params, gappy), abs=1e-5)
    _, plain = ssm.fit_em(start, gappy, num_iters=3000)
    assert ll > float(plain.log_likelihood) + 1e-4


def test_structured_update(problem):
    # A with its lower-left entry fixed at 0 (Linear), Q diagonal: the structures hold
    # exactly, the free coordinates' gradient is ~0, the maximum is at least a long
    # structured EM run's, and AIC/BIC count the free coordinates (3 + 2).
    start, ys = problem
    D = np.zeros((4, 3))
    D[0, 0] = D[1, 1] = D[3, 2] = 1.0
    update = {"A": ssm.Linear(np.zeros(4), D), "Q": "diagonal"}
    params, info = _fit(start, ys, update=update)
    assert info.status == ssm.FitStatus.CONVERGED
    assert info.rank_dropped == {} and info.num_grad_evals == 0  # no boundary stage
    assert float(params.A[1, 0]) == 0.0 and float(params.Q[0, 1]) == float(params.Q[1, 0]) == 0
    assert info.num_free_params == 5 == num_free_params(params, update)
    ll = float(info.log_likelihood)
    assert float(info.aic) == pytest.approx(2 * 5 - 2 * ll)
    _assert_monotone(info)

    def free(t):  # (A[0, 0], A[0, 1], A[1, 1], Q[0, 0], Q[1, 1])
        A = jnp.array([[t[0], t[1]], [0.0, t[2]]])
        return ssm.log_likelihood(params._replace(A=A, Q=jnp.diag(t[3:])), ys)

    t = jnp.array([params.A[0, 0], params.A[0, 1], params.A[1, 1], params.Q[0, 0], params.Q[1, 1]])
    g = np.asarray(jax.grad(free)(t))
    assert np.max(np.abs(g * np.asarray(t))) < 1e-4 * abs(ll)
    _, plain = ssm.fit_em(start, ys, update=update, num_iters=1500)
    assert ll >= float(plain.log_likelihood) - 1e-6
    # The data start, projected onto the structures, reaches the same maximum.
    auto_params, auto = ssm.fit(start, ys, update=update)
    assert auto.start == "data" and float(auto_params.A[1, 0]) == 0.0
    assert float(auto.log_likelihood) == pytest.approx(ll, abs=1e-5)


def test_sqrt_form_reaches_the_same_maximum(problem):
    # form="sqrt" runs every E-step, filter pass and gradient on Cholesky factors: the same
    # maximum as the covariance form (float64, to the fit's tolerance).
    start, ys = problem
    ref, ref_info = _fit(start, ys)
    params, info = _fit(start, ys, form="sqrt")
    assert info.status == ssm.FitStatus.CONVERGED
    assert float(info.log_likelihood) == pytest.approx(float(ref_info.log_likelihood), abs=1e-6)
    np.testing.assert_allclose(np.asarray(params.A), np.asarray(ref.A), atol=1e-3)


@pytest.mark.slow
def test_sqrt_form_boundary_stage():
    # The boundary stage's filter passes and gradients on Cholesky factors (Q = L L^T with
    # a direction held at zero): the same rank-one maximum as the covariance form.
    start, ys = _boundary_problem()
    _, ref = _fit(start, ys, tol=1e-9)
    _, info = _fit(start, ys, tol=1e-9, form="sqrt")
    assert info.status == ssm.FitStatus.CONVERGED and info.rank_dropped == {"Q": 1}
    assert float(info.log_likelihood) == pytest.approx(float(ref.log_likelihood), abs=1e-8)
