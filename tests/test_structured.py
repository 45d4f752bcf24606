"""Structured ``update=`` (MARSS-style constraints) and standard errors (issue 32).

References and tolerances (float64):

- The constrained M-step is checked as the maximiser of ``expected_log_joint`` (an
  independent closed form of EM's objective) over the free coordinates, by autodiff: its
  gradient there, relative to the gradient's size at the starting parameters, below 1e-10
  (observed at most 9e-14 over all cases), and random feasible perturbations never increase
  it. A structured regression and its covariance learned together are an ECM step: the
  regression is checked given the covariance before the step, the covariance given the new
  regression.
- Standard errors: the Hessian of the filter's log-likelihood (``jax.hessian``) against the
  Jacobian (``jax.jacfwd``) of the Fisher-identity score through the E-step's statistics
  (Oakes 1999), a different computation, rtol 1e-8 (observed ~1e-14); with a singular ``Q``
  (where only the Hessian route applies) against central differences of the reverse-mode
  gradient, rtol 1e-6 (the differences' truncation and round-off); and against statsmodels'
  standard errors from its complex-step Hessian of its own Kalman filter
  (``cov_type="approx"``: minus the Hessian, as here; statsmodels' ``"oim"`` is Harvey's
  approximation, which drops a second-derivative term), rtol 1e-6 (observed 2e-8: the
  complex-step Hessian's own error).
- Structures hold exactly: fixed entries and zero off-diagonals bitwise, entries sharing a
  coordinate equal to rtol 1e-14 (the same ``f + G beta`` row, up to the matrix product's
  summation order).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import to_params
from reference import random_model, simulate

import jaxssm as ssm
from jaxssm._args.checks import StructuredUpdateError
from jaxssm._args.structures import parse_update, resolve_update
from jaxssm._base.structure import num_free_params, pack, unpack
from jaxssm._learn.uncertainty import observed_information

D, DY, DU, N = 3, 4, 2, 60


def _linear_A():
    """A [3, 3]: A[0, 0] = A[1, 1] = beta_0 (shared), A[0, 1] = beta_1, A[2, 2] = beta_2,
    A[1, 0] = 0.1 fixed, the rest fixed at 0."""
    f = np.zeros(9)
    f[3] = 0.1
    G = np.zeros((9, 3))
    G[0, 0] = G[4, 0] = 1.0
    G[1, 1] = 1.0
    G[8, 2] = 1.0
    return ssm.Linear(f, G)


def _linear_H():
    """H [4, 3] with its top block fixed at [[1, 0, 0], [0.5, 1, 0]] (identification)."""
    f = np.zeros(12)
    f[[0, 3, 4]] = [1.0, 0.5, 1.0]
    free = np.arange(6, 12)
    G = np.zeros((12, 6))
    G[free, np.arange(6)] = 1.0
    return ssm.Linear(f, G)


def _shared_R():
    """R [4, 4] diagonal: R00 = R11 = 2 q0, R22 = q1, R33 fixed at 0.3."""
    f = np.zeros(16)
    f[15] = 0.3
    G = np.zeros((16, 2))
    G[0, 0] = G[5, 0] = 2.0
    G[10, 1] = 1.0
    return ssm.Linear(f, G)


def _linear_m0():
    """m0 [3] = [beta_0, beta_0, 1]."""
    return ssm.Linear(np.array([0.0, 0.0, 1.0]), np.array([[1.0], [1.0], [0.0]]))


def _project(params, update):
    """Parameters with the structures of ``update`` (the least-squares projection)."""
    raw = parse_update(update)
    for name, s in raw.structures.items():
        x = np.asarray(getattr(params, name), np.float64)
        if s == "diagonal":
            params = params._replace(**{name: jnp.diag(jnp.diag(x))})
        elif s == "scalar":
            params = params._replace(**{name: float(np.mean(np.diag(x))) * jnp.eye(x.shape[0])})
        else:
            f, G = s
            beta = np.linalg.lstsq(G, x.reshape(-1) - f, rcond=None)[0]
            if name in ("P0", "Q", "R"):
                beta = np.abs(beta) + 0.1
            params = params._replace(**{name: jnp.asarray((f + G @ beta).reshape(x.shape))})
    return params


@pytest.fixture(scope="module")
def problem():
    """A model with inputs and offsets, and a series with missing entries."""
    rng = np.random.default_rng(32)
    model = random_model(rng, D, DY)
    _, ys = simulate(rng, model, N)
    inputs = rng.standard_normal((N, DU))
    ys = ys + inputs @ rng.standard_normal((DU, DY)) * 0.3
    ys[4, 1] = ys[11, :2] = ys[30, 3] = np.nan
    params = to_params(model)._replace(
        B=jnp.asarray(0.1 * rng.standard_normal((D, DU))),
        b=jnp.zeros(D),
        D=jnp.zeros((DY, DU)),
        d=jnp.zeros(DY),
    )
    return params, jnp.asarray(ys), jnp.asarray(inputs)


# One structure alone, then combinations (mean side and covariance of a regression together
# is an ECM step).
SLOW = pytest.mark.slow
CASES = [
    pytest.param({"A": _linear_A()}, marks=SLOW),
    pytest.param({"A": "diagonal"}, marks=SLOW),
    pytest.param({"A": "scalar"}, marks=SLOW),
    pytest.param({"H": _linear_H()}, marks=SLOW),
    pytest.param({"m0": _linear_m0()}, marks=SLOW),
    pytest.param({"Q": "diagonal"}, marks=SLOW),
    pytest.param({"R": "scalar"}, marks=SLOW),
    pytest.param({"R": _shared_R()}, marks=SLOW),
    pytest.param({"P0": "diagonal"}, marks=SLOW),
    pytest.param(
        {"A": _linear_A(), "B": "full", "b": ssm.Linear(np.zeros(3), np.eye(3)[:, :2])},
        marks=SLOW,
    ),
    # Default: every kind of structure, on both regressions and the initial state, with
    # inputs, offsets and missing entries.
    {"A": _linear_A(), "Q": "diagonal", "H": _linear_H(), "d": "full", "R": _shared_R()},
    {"A": "full", "Q": "scalar", "H": "full", "R": "diagonal", "m0": _linear_m0(), "P0": "scalar"},
    pytest.param(
        {"H": _linear_H(), "D": "full", "R": "diagonal", "m0": "full", "P0": "diagonal"},
        marks=SLOW,
    ),
]
MEAN = {"transition": ("A", "B", "b"), "observation": ("H", "D", "d"), "initial": ("m0",)}
COV = {"transition": "Q", "observation": "R", "initial": "P0"}


def _spec(params, update):
    return resolve_update(params, parse_update(update))


@pytest.fixture(scope="module")
def problem_stats(problem):
    """Statistics at the unstructured parameters: the M-step maximises Q(., theta_n) for any
    theta_n, so one E-step serves every case."""
    params, ys, inputs = problem
    return ssm.e_step(params, ys, inputs=inputs)[0]


@pytest.mark.parametrize("update", CASES, ids=lambda u: ",".join(f"{k}" for k in u))
def test_m_step_is_constrained_maximiser(problem, problem_stats, update):
    params, _, _ = problem
    stats = problem_stats
    params = _project(params, update)
    new = ssm.m_step(params, stats, update)
    params, spec = _spec(params, update)

    @jax.jit
    def objective(theta, template):
        return ssm.expected_log_joint(unpack(theta, template, spec), stats)

    grad_fn = jax.jit(jax.grad(objective))
    scale = np.max(np.abs(np.asarray(grad_fn(pack(params, spec), params))))

    # Each group of coordinates is checked where its closed form maximises: a regression
    # given the covariance before the step (ECM), the covariance given the new regression.
    for side, cov in COV.items():
        means = [n for n in MEAN[side] if n in spec.names]
        groups = [(means, new._replace(**{cov: getattr(params, cov)}))] if means else []
        if cov in spec.names:
            groups.append(([cov], new))
        for names, at in groups:
            theta = pack(at, spec)
            mask = np.zeros(theta.shape[0], bool)
            start = 0
            for n in spec.names:
                size = pack(at, spec._replace(names=(n,))).shape[0]
                mask[start : start + size] = n in names
                start += size
            grad = grad_fn(theta, at)
            rel = np.max(np.abs(np.asarray(grad)[mask])) / scale
            assert rel < 1e-10, (names, rel)
            best = float(objective(theta, at))
            rng = np.random.default_rng(0)
            for _ in range(5):
                step = np.where(mask, rng.standard_normal(theta.shape[0]), 0.0) * 1e-3
                assert float(objective(theta + step, at)) <= best, names


def _assert_structure(params, update, label):
    """Fixed entries bitwise, zero off-diagonals exactly, shared entries equal."""
    raw = parse_update(update)
    for name, s in raw.structures.items():
        x = np.asarray(getattr(params, name))
        if s in ("diagonal", "scalar"):
            off = ~np.eye(x.shape[0], dtype=bool)
            assert np.all(x[off] == 0), (label, name)
            if s == "scalar":
                np.testing.assert_allclose(np.diag(x), x[0, 0], rtol=1e-15, err_msg=label)
            continue
        f, G = s
        v = x.reshape(-1)
        fixed = ~np.any(G != 0, axis=1)
        assert np.array_equal(v[fixed], f[fixed]), (label, name)
        beta = np.linalg.lstsq(G, v - f, rcond=None)[0]
        np.testing.assert_allclose(v, f + G @ beta, rtol=1e-14, atol=1e-15, err_msg=label)


STRUCTURED = {"A": _linear_A(), "Q": "diagonal", "H": _linear_H(), "R": _shared_R()}


@pytest.mark.parametrize("accelerate", [None, pytest.param("squarem", marks=SLOW)])
def test_structures_hold_and_em_is_monotone(problem, problem_stats, accelerate):
    params, ys, inputs = problem
    params = _project(params, STRUCTURED)
    _assert_structure(ssm.m_step(params, problem_stats, STRUCTURED), STRUCTURED, "m_step")
    fitted, info = ssm.fit_em(
        params, ys, inputs=inputs, num_iters=12, update=STRUCTURED, accelerate=accelerate
    )
    _assert_structure(fitted, STRUCTURED, f"fit_em {accelerate}")
    trace = np.asarray(info.log_likelihoods)
    trace = trace[np.isfinite(trace)]
    assert np.all(np.diff(trace) >= -1e-9 * np.abs(trace[:-1])), accelerate
    assert float(info.log_likelihood) > trace[0] + 1.0
    assert int(info.status) != int(ssm.EMStatus.DECREASED)


@pytest.mark.slow
def test_fit_em_batch_structures(problem):
    params, ys, inputs = problem
    update = {"A": "diagonal", "R": "scalar", "m0": _linear_m0(), "P0": "diagonal"}
    params = _project(params, update)
    batch = jnp.stack([ys, ys[::-1]])
    fitted, info = ssm.fit_em(
        params, batch, inputs=jnp.stack([inputs, inputs[::-1]]), num_iters=8, update=update
    )
    _assert_structure(fitted, update, "batch")
    trace = np.asarray(info.log_likelihoods)
    assert np.all(np.diff(trace) >= -1e-9 * np.abs(trace[:-1]))


def test_fit_mle_structures(problem):
    optax = pytest.importorskip("optax")
    params, ys, inputs = problem
    update = {"A": _linear_A(), "Q": "diagonal", "R": "scalar", "H": "full"}
    params = _project(params, update)
    fitted, info = ssm.fit_mle(
        params, ys, inputs=inputs, optimizer=optax.adam(1e-2), num_iters=20, update=update
    )
    _assert_structure(fitted, update, "fit_mle")
    assert float(info.log_likelihood) > float(info.log_likelihoods[0])


def test_plain_names_unchanged(problem, problem_stats):
    """Names and the equivalent all-"full" mapping give the same M-step, bitwise."""
    params, _, _ = problem
    stats = problem_stats
    names = ("A", "B", "Q", "H", "R")
    a = ssm.m_step(params, stats, names)
    b = ssm.m_step(params, stats, dict.fromkeys(names, "full"))
    for x, y in zip(a, b, strict=True):
        assert (x is None and y is None) or np.array_equal(np.asarray(x), np.asarray(y))


def test_num_free_params_and_pack(problem):
    params, _, _ = problem
    update = {"A": _linear_A(), "Q": "full", "R": "diagonal", "H": _linear_H(), "m0": "full"}
    params, spec = _spec(_project(params, update), update)
    assert num_free_params(params, spec) == 3 + 6 + 4 + 6 + 3
    assert num_free_params(params, ("A", "Q")) == 9 + 6
    theta = pack(params, spec)
    assert theta.shape == (22,)
    back = unpack(theta, params, spec)
    for name in spec.names:
        np.testing.assert_allclose(getattr(back, name), getattr(params, name), rtol=1e-14)


@pytest.mark.parametrize(
    "update, error, match",
    [
        ({"Q": "banded"}, ValueError, "update\\['Q'\\] = 'banded' is not a structure"),
        ({"b": "diagonal"}, ValueError, "no meaning for the vector b"),
        ({"B": "diagonal"}, ValueError, "needs a square B"),
        ({"A": ssm.Linear(np.zeros(4), np.eye(4))}, ValueError, "for A of shape \\(3, 3\\)"),
        ({"A": ssm.Linear(np.zeros(9), np.ones((9, 2)))}, ValueError, "linearly dependent"),
        ({"A": ssm.Linear(np.zeros(9), np.zeros((9, 0)))}, ValueError, "no free coordinate"),
        ({"A": ssm.Linear(np.zeros(9), np.eye(3))}, ValueError, "same n"),
        ({"Q": ssm.Linear(np.zeros(9), np.eye(9)[:, [1]])}, ValueError, "no closed form"),
        ({"A": (np.zeros(9), np.eye(9))}, TypeError, "update\\['A'\\] must be"),
        ({"Q": "diagonal"}, ValueError, "starting Q contradicts its structure 'diagonal'"),
        ({"A": _linear_A()}, ValueError, "starting A contradicts its structure Linear"),
    ],
)
def test_errors_name_the_field(problem, update, error, match):
    params, ys, inputs = problem
    with pytest.raises(error, match=match):
        ssm.fit_em(params, ys, inputs=inputs, num_iters=2, update=update)


def test_weighted_regression_needs_variance_on_its_rows(problem):
    params, ys, inputs = problem
    update = {"A": _linear_A(), "Q": ssm.Linear(np.zeros(9), np.eye(9)[:, [0, 4]])}
    start = _project(params, {"A": _linear_A()})._replace(Q=jnp.diag(jnp.array([1.0, 1.0, 0])))
    with pytest.raises(ValueError, match="fixed at 0"):
        ssm.fit_em(start, ys, inputs=inputs, num_iters=2, update=update)


def test_entry_points_without_structures_say_so(problem):
    params, ys, _ = problem
    with pytest.raises(StructuredUpdateError, match="accepted by m_step, fit_em, fit"):
        ssm.score(params, ys, update={"A": "diagonal"})


# --- standard errors ----------------------------------------------------------------------


def _local_level(N=200, seed=3):
    rng = np.random.default_rng(seed)
    level = np.cumsum(rng.normal(scale=0.5, size=N + 1))
    ys = level[1:] + rng.normal(scale=1.0, size=N)
    params = ssm.LGSSM(
        m0=jnp.zeros(1),
        P0=jnp.eye(1),
        A=jnp.eye(1),
        Q=0.3 * jnp.eye(1),
        H=jnp.eye(1),
        R=0.8 * jnp.eye(1),
    )
    return params, jnp.asarray(ys[:, None])


def _identified(N=120, seed=7):
    """D = 2, Dy = 3 with H's top block fixed at I (the state basis is identified)."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, 2, 3)._replace(
        A=np.array([[0.8, 0.1], [0.0, 0.5]]),
        Q=np.diag([0.5, 0.3]),
        H=np.array([[1.0, 0.0], [0.0, 1.0], [0.7, -0.4]]),
        R=np.diag([0.2, 0.2, 0.3]),
    )
    _, ys = simulate(rng, model, N)
    ys[10, 0] = ys[40, 2] = np.nan
    H = ssm.Linear(np.array([1.0, 0, 0, 1, 0, 0]), np.eye(6)[:, 4:])
    R = ssm.Linear(
        np.diag([1.0, 0, 0]).reshape(-1) * 0,
        np.eye(9)[:, [0, 4, 8]] @ np.array([[1.0, 0], [1.0, 0], [0, 1.0]]),
    )
    update = {"A": "full", "Q": "diagonal", "H": H, "R": R, "m0": "full"}
    return to_params(model), jnp.asarray(ys), update


@pytest.fixture(scope="module")
def estimate():
    params, ys, update = _identified()
    fitted, info = ssm.fit_em(
        params, ys, num_iters=600, update=update, accelerate="squarem", tol=1e-13
    )
    assert int(info.status) == int(ssm.EMStatus.CONVERGED)
    return fitted, ys, update


@pytest.mark.slow
def test_standard_errors_two_routes(estimate):
    fitted, ys, update = estimate
    hess, labels = observed_information(fitted, ys, update=update)
    oakes, _ = observed_information(fitted, ys, update=update, route="score")
    assert len(labels) == hess.shape[0] == 4 + 2 + 2 + 2 + 2
    np.testing.assert_allclose(oakes, hess, rtol=1e-8, atol=1e-8 * np.max(np.abs(hess)))
    se = ssm.standard_errors(fitted, ys, update=update)
    want = np.sqrt(np.diag(np.linalg.inv(np.asarray(hess, np.float64))))
    # Coordinates in LGSSM order: m0 (2), A (4), Q (2), H.beta (2), R.beta (2).
    np.testing.assert_allclose(np.asarray(se.m0), want[0:2], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(se.A).reshape(-1), want[2:6], rtol=1e-12)
    np.testing.assert_allclose(np.diag(np.asarray(se.Q)), want[6:8], rtol=1e-12)
    assert np.all(np.asarray(se.Q)[[0, 1], [1, 0]] == 0)
    np.testing.assert_allclose(np.asarray(se.H)[2], want[8:10], rtol=1e-12)
    assert np.all(np.asarray(se.H)[:2] == 0)
    # R00 = R11 share one coordinate: the same error at both entries.
    np.testing.assert_allclose(np.diag(np.asarray(se.R)), want[[10, 10, 11]], rtol=1e-12)
    # A batch: the information of the summed log-likelihoods, by both routes.
    batch = jnp.stack([ys, ys[::-1]])
    hess_b, _ = observed_information(fitted, batch, update=update)
    oakes_b, _ = observed_information(fitted, batch, update=update, route="score")
    np.testing.assert_allclose(oakes_b, hess_b, rtol=1e-8, atol=1e-8 * np.max(np.abs(hess_b)))
    assert se.P0 is None and se.B is None


def test_standard_errors_match_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    params, ys = _local_level()
    update = ("Q", "R")
    # Standard errors at given parameters (near the truth; no fit needed to compare).
    fitted = params._replace(Q=0.26 * jnp.eye(1), R=0.95 * jnp.eye(1))
    se = ssm.standard_errors(fitted, ys, update=update)

    class LocalLevel(sm.tsa.statespace.MLEModel):
        """y_t = mu_t + eps_t, mu_t = mu_{t-1} + eta_t; statsmodels' alpha_1 is jaxssm's
        x_1 ~ N(A m0, A P0 A^T + Q), so the prior variance depends on Q here too."""

        def __init__(self, endog):
            super().__init__(endog, k_states=1)
            self.ssm["design", 0, 0] = 1.0
            self.ssm["transition", 0, 0] = 1.0
            self.ssm["selection", 0, 0] = 1.0

        @property
        def param_names(self):
            return ["q", "r"]

        def update(self, params, **kwargs):
            params = super().update(params, **kwargs)
            self.ssm["state_cov", 0, 0] = params[0]
            self.ssm["obs_cov", 0, 0] = params[1]
            self.ssm.initialize_known(np.zeros(1), np.array([[1.0 + params[0]]]))

    model = LocalLevel(np.asarray(ys[:, 0]))
    at = np.array([float(fitted.Q[0, 0]), float(fitted.R[0, 0])])
    res = model.filter(at, cov_type="approx")
    # The same model: the log-likelihoods agree to both filters' round-off.
    np.testing.assert_allclose(res.llf, float(ssm.log_likelihood(fitted, ys)), rtol=1e-10)
    np.testing.assert_allclose([se.Q[0, 0], se.R[0, 0]], res.bse, rtol=1e-6)


@pytest.mark.slow
def test_standard_errors_singular_information_names_fields():
    rng = np.random.default_rng(5)
    model = random_model(rng, 2, 3)
    _, ys = simulate(rng, model, 80)
    params = to_params(model)
    # Full A, Q and H: any invertible change of state basis gives the same likelihood.
    with pytest.raises(ValueError, match="not positive definite.*coordinates .*of [AHQ]"):
        ssm.standard_errors(params, jnp.asarray(ys), update=("A", "Q", "H"))


# --- command line -------------------------------------------------------------------------


def test_cli_update_syntax():
    from jaxssm._cli.options import UsageError, update_argument

    assert update_argument("A, Q") == ("A", "Q")
    assert update_argument("A,Q,R:diagonal") == {"A": "full", "Q": "full", "R": "diagonal"}
    with pytest.raises(UsageError, match="NAME or NAME:STRUCTURE"):
        update_argument("R:diagonal:x")
    # The library checks the result, naming the field.
    with pytest.raises(ValueError, match="update\\['R'\\] = 'banded'"):
        parse_update(update_argument("A,R:banded"))


@pytest.mark.slow
def test_cli_em_with_structure(tmp_path):
    EXERCISE_R = np.kron(np.diag([0.01, 0.01, 1.0]), np.eye(7))
    import contextlib
    import io

    from jaxssm import cli, datasets

    test = datasets.load_sarcos("test")
    rows = np.concatenate([test.inputs, test.torques], axis=1)[:200]
    path = tmp_path / "small.npz"
    np.savez(path, sarcos_inv_test=rows)
    out = tmp_path / "out"
    argv = ["fit", "--data", path, "--method", "em", "--start", "white", "--iters", 2]
    argv += ["--update", "A,Q,R:diagonal", "--out", out, "--no-plot"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main([str(a) for a in argv]) == 0
    fitted = np.load(out / "params.npz")
    R = fitted["R"]
    assert np.all(R[~np.eye(21, dtype=bool)] == 0)
    assert not np.allclose(np.diag(R), np.diag(EXERCISE_R))  # learned
    assert np.any(fitted["Q"][~np.eye(21, dtype=bool)] != 0)  # full


def _companion_ar2(N=300, seed=0):
    rng = np.random.default_rng(seed)
    z = np.zeros(N + 2)
    for k in range(2, N + 2):
        z[k] = 1.2 * z[k - 1] - 0.5 * z[k - 2] + rng.normal()
    ys = jnp.asarray(z[2:] + 0.7 * rng.normal(size=N))[:, None]
    A = ssm.Linear(np.array([0.0, 0.0, 1.0, 0.0]), np.eye(4)[:, :2])
    Q = ssm.Linear(np.zeros(4), np.eye(4)[:, :1])
    update = {"A": A, "Q": Q, "R": "full"}
    start = ssm.LGSSM(
        m0=jnp.zeros(2),
        P0=jnp.eye(2),
        A=jnp.array([[0.5, 0.0], [1.0, 0.0]]),
        Q=jnp.diag(jnp.array([1.0, 0.0])),
        H=jnp.array([[1.0, 0.0]]),
        R=jnp.array([[1.0]]),
    )
    return start, ys, update


def test_singular_covariance_takes_the_hessian_route():
    from jaxssm._learn.uncertainty import choose_route

    start, _, update = _companion_ar2(N=5)
    params, spec = _spec(start, update)
    assert choose_route(params, spec) == "hessian"  # Q = diag(q, 0): no Fisher identity
    params, spec = _spec(start, {"A": update["A"], "R": "full"})
    assert choose_route(params, spec) == "hessian"
    params, spec = _spec(start, {"R": "full"})
    assert choose_route(params, spec) == "score"


@pytest.mark.slow
def test_companion_ar_fit_and_standard_errors():
    """Singular Q: SQUAREM keeps the structure; the errors by the Hessian route against central
    differences of the reverse-mode gradient (rtol 1e-6: the differences' own error)."""
    start, ys, update = _companion_ar2()
    fitted, info = ssm.fit_em(
        start, ys, num_iters=600, update=update, accelerate="squarem", tol=1e-12
    )
    assert int(info.status) == int(ssm.EMStatus.CONVERGED)
    _assert_structure(fitted, update, "companion")
    assert float(fitted.Q[1, 1]) == 0.0 and np.array_equal(np.asarray(fitted.A[1]), [1.0, 0.0])
    info_h, _ = observed_information(fitted, ys, update=update, route="hessian")
    params, spec = _spec(fitted, update)
    theta = np.asarray(pack(params, spec))
    grad = jax.jit(jax.grad(lambda t: ssm.log_likelihood(unpack(t, params, spec), ys)))
    h = 1e-5
    fd = np.stack(
        [
            (np.asarray(grad(theta + h * e)) - np.asarray(grad(theta - h * e))) / (2 * h)
            for e in np.eye(theta.shape[0])
        ]
    )
    np.testing.assert_allclose(-fd, info_h, rtol=1e-6, atol=1e-6 * np.max(np.abs(info_h)))
    se = ssm.standard_errors(fitted, ys, update=update)
    want = np.sqrt(np.diag(np.linalg.inv(np.asarray(info_h))))
    np.testing.assert_allclose(np.asarray(se.A)[0], want[:2], rtol=1e-10)
    np.testing.assert_allclose([se.Q[0, 0], se.R[0, 0]], want[2:], rtol=1e-10)
    assert np.all(np.asarray(se.A)[1] == 0) and float(se.Q[1, 1]) == 0
