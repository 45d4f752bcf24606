import jax

jax.config.update("jax_enable_x64", True)

import math  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.linalg import expm as scipy_expm  # noqa: E402
from scipy.linalg import solve_continuous_lyapunov  # noqa: E402

from jaxssm import priors  # noqa: E402

RTOL = 1e-12


# ----------------------------------------------------------------------------------------------
# Independent references (numpy / scipy, float64)
# ----------------------------------------------------------------------------------------------


def iwp_closed_form(q, dt, diffusion):
    n = q + 1
    A = np.zeros((n, n))
    Q = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if j >= i:
                A[i, j] = dt ** (j - i) / math.factorial(j - i)
            e = 2 * q + 1 - i - j
            Q[i, j] = diffusion * dt**e / (e * math.factorial(q - i) * math.factorial(q - j))
    return A, Q


def matern_sde(p, lengthscale, variance):
    """Companion F and L q L^T, built independently of the library."""
    n = p + 1
    lam = math.sqrt(2 * p + 1) / lengthscale
    F = np.diag(np.ones(n - 1), 1)
    F[-1, :] = [-math.comb(n, k) * lam ** (n - k) for k in range(n)]
    q = variance * math.factorial(p) ** 2 / math.factorial(2 * p) * (2 * lam) ** (2 * p + 1)
    G = np.zeros((n, n))
    G[-1, -1] = q
    return F, G


def van_loan_reference(F, G, dt):
    """Classical matrix fraction; accurate for moderate dt and decay rates."""
    n = F.shape[0]
    M = np.block([[-F, G], [np.zeros_like(F), F.T]]) * dt
    E = scipy_expm(M)
    A = E[n:, n:].T
    return A, A @ E[:n, n:]


def matern_kernel(p, tau, lengthscale, variance):
    r = math.sqrt(2 * p + 1) * abs(tau) / lengthscale
    poly = {0: 1.0, 1: 1.0 + r, 2: 1.0 + r + r**2 / 3.0}[p]
    return variance * poly * math.exp(-r)


def assert_rel_close(actual, expected, rtol):
    """Entrywise relative agreement (every nonzero entry, however small)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0.0)


# ----------------------------------------------------------------------------------------------
# Integrated Wiener process
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0, 1, 2, 3, 4, 10])
@pytest.mark.parametrize("dt", [1e-3, 0.1, 1.0, 7.5])
def test_iwp_matches_closed_form(q, dt):
    A, Q = priors.iwp(q, dt, diffusion=0.7)
    A_ref, Q_ref = iwp_closed_form(q, dt, 0.7)
    assert A.shape == Q.shape == (q + 1, q + 1)
    assert_rel_close(A, A_ref, RTOL)
    assert_rel_close(Q, Q_ref, RTOL)


def test_iwp_q0_is_random_walk():
    A, Q = priors.iwp(0, 0.3, diffusion=2.0)
    assert_rel_close(A, [[1.0]], RTOL)
    assert_rel_close(Q, [[0.6]], RTOL)


# ----------------------------------------------------------------------------------------------
# Matern
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0, 1, 2, 3])
@pytest.mark.parametrize("lengthscale", [0.05, 1.0, 20.0])
def test_matern_stationary_cov(p, lengthscale):
    P = np.asarray(priors.matern_stationary_cov(p, lengthscale=lengthscale, variance=2.5))
    assert P.shape == (p + 1, p + 1)
    np.testing.assert_allclose(P[0, 0], 2.5, rtol=RTOL)
    np.testing.assert_array_equal(P, P.T)
    np.linalg.cholesky(P)
    F, G = matern_sde(p, lengthscale, 2.5)
    residual = F @ P + P @ F.T + G
    assert np.max(np.abs(residual)) <= 1e-12 * np.max(np.abs(F @ P))


@pytest.mark.parametrize("p", [0, 1, 2, 3])
@pytest.mark.parametrize("lam_dt", [1e-3, 0.3, 1.0, 5.0, 100.0, 1e4])
def test_matern_q_keeps_stationary_cov(p, lam_dt):
    lengthscale = 0.8
    dt = lam_dt * lengthscale / math.sqrt(2 * p + 1)
    A, Q = priors.matern(p, dt, lengthscale=lengthscale, variance=1.7)
    P = priors.matern_stationary_cov(p, lengthscale=lengthscale, variance=1.7)
    assert np.all(np.isfinite(Q))
    err = np.max(np.abs(Q - (P - A @ P @ A.T)))
    assert err <= 1e-11 * np.max(np.abs(P))


@pytest.mark.parametrize("p", [0, 1, 2, 3])
@pytest.mark.parametrize("dt", [0.05, 0.5])
def test_matern_matches_classical_van_loan(p, dt):
    # The classical matrix fraction is accurate while lam * dt is of order one or less.
    A, Q = priors.matern(p, dt, lengthscale=1.3, variance=0.6)
    A_ref, Q_ref = van_loan_reference(*matern_sde(p, 1.3, 0.6), dt)
    np.testing.assert_allclose(A, A_ref, rtol=1e-11, atol=1e-12 * np.abs(A_ref).max())
    np.testing.assert_allclose(Q, Q_ref, rtol=1e-9, atol=1e-12 * np.abs(Q_ref).max())


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("dt", [2.0, 10.0])
def test_matern_long_steps_match_scipy(p, dt):
    # For long steps Q = P - A P A^T with scipy's expm and Lyapunov solver is accurate
    # (the classical matrix fraction is not: 1e-6 relative error at p=3, dt=2 here).
    F, G = matern_sde(p, 1.3, 0.6)
    P_ref = solve_continuous_lyapunov(F, -G)
    A_ref = scipy_expm(F * dt)
    A, Q = priors.matern(p, dt, lengthscale=1.3, variance=0.6)
    np.testing.assert_allclose(A, A_ref, rtol=1e-10, atol=1e-13 * np.abs(A_ref).max())
    Q_ref = P_ref - A_ref @ P_ref @ A_ref.T
    np.testing.assert_allclose(Q, Q_ref, rtol=1e-10, atol=1e-13 * np.abs(Q_ref).max())


@pytest.mark.parametrize("p", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.01, 0.4, 3.0])
def test_matern_covariance_function(p, tau):
    # Cov(f(t + tau), f(t)) of the stationary chain is the Matern kernel.
    A, _ = priors.matern(p, tau, lengthscale=0.9, variance=1.4)
    P = priors.matern_stationary_cov(p, lengthscale=0.9, variance=1.4)
    np.testing.assert_allclose((A @ P)[0, 0], matern_kernel(p, tau, 0.9, 1.4), rtol=RTOL)


@pytest.mark.parametrize("dt", [1e-3, 0.5, 50.0])
def test_matern12_is_ou_closed_form(dt):
    ell, s2 = 0.7, 1.9
    A, Q = priors.matern(0, dt, lengthscale=ell, variance=s2)
    np.testing.assert_allclose(A, [[math.exp(-dt / ell)]], rtol=RTOL, atol=1e-16)
    assert_rel_close(Q, [[s2 * -math.expm1(-2 * dt / ell)]], RTOL)
    assert_rel_close(priors.matern_stationary_cov(0, lengthscale=ell, variance=s2), [[s2]], RTOL)


def test_matern32_transition_closed_form():
    ell, dt = 1.1, 0.37
    lam = math.sqrt(3) / ell
    A, _ = priors.matern(1, dt, lengthscale=ell)
    A_ref = math.exp(-lam * dt) * np.array([[1 + lam * dt, dt], [-(lam**2) * dt, 1 - lam * dt]])
    assert_rel_close(A, A_ref, 1e-13)


# ----------------------------------------------------------------------------------------------
# Integrated Ornstein-Uhlenbeck
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0, 1, 2, 3])
def test_ioup_drift_to_zero_is_iwp(q):
    A0, Q0 = priors.iwp(q, 0.4, diffusion=1.3)
    A, Q = priors.ioup(q, 0.4, drift=0.0, diffusion=1.3)
    assert_rel_close(A, A0, 1e-14)
    assert_rel_close(Q, Q0, 1e-14)
    errors = []
    for drift in [1e-2, 1e-4, 1e-6]:
        A, Q = priors.ioup(q, 0.4, drift=drift, diffusion=1.3)
        errors.append(np.max(np.abs(Q - Q0) / Q0))
        np.testing.assert_allclose(A, A0, rtol=2 * drift, atol=2 * drift)
        np.testing.assert_allclose(Q, Q0, rtol=2 * drift)
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("dt", [1e-3, 0.5, 40.0])
def test_ioup_q0_is_ou(dt):
    theta, s2 = 1.7, 0.8
    A, Q = priors.ioup(0, dt, drift=theta, diffusion=s2)
    np.testing.assert_allclose(A, [[math.exp(-theta * dt)]], rtol=RTOL, atol=1e-16)
    assert_rel_close(Q, [[s2 / (2 * theta) * -math.expm1(-2 * theta * dt)]], RTOL)


@pytest.mark.parametrize("q", [1, 2, 3])
@pytest.mark.parametrize("drift", [0.3, 2.0])
def test_ioup_matches_classical_van_loan(q, drift):
    n = q + 1
    F = np.diag(np.ones(n - 1), 1)
    F[-1, -1] = -drift
    G = np.zeros((n, n))
    G[-1, -1] = 0.9
    A, Q = priors.ioup(q, 0.6, drift=drift, diffusion=0.9)
    A_ref, Q_ref = van_loan_reference(F, G, 0.6)
    np.testing.assert_allclose(A, A_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(Q, Q_ref, rtol=1e-9)


# ----------------------------------------------------------------------------------------------
# Shared properties: stacking, symmetry, definiteness, dtype, transformations
# ----------------------------------------------------------------------------------------------

PRIORS = {
    "iwp": lambda q, dt, **kw: priors.iwp(q, dt, diffusion=0.8, **kw),
    "matern": lambda q, dt, **kw: priors.matern(q, dt, lengthscale=0.6, variance=1.3, **kw),
    "ioup": lambda q, dt, **kw: priors.ioup(q, dt, drift=0.9, diffusion=0.8, **kw),
}


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_dim_blocked(name):
    prior = PRIORS[name]
    A1, Q1 = prior(2, 0.3)
    A, Q = prior(2, 0.3, dim=4)
    assert A.shape == Q.shape == (12, 12)
    np.testing.assert_array_equal(A, np.kron(A1, np.eye(4)))
    np.testing.assert_array_equal(Q, np.kron(Q1, np.eye(4)))


def test_order_interleaved():
    A1, Q1 = priors.iwp(2, 0.3)
    A, _ = priors.iwp(2, 0.3, dim=4)
    Ai, Qi = priors.iwp(2, 0.3, dim=4, order="interleaved")
    np.testing.assert_array_equal(Ai, np.kron(np.eye(4), A1))
    np.testing.assert_array_equal(Qi, np.kron(np.eye(4), Q1))
    # Blocked layout: value of every copy first, then first derivatives, then second.
    perm = np.arange(12).reshape(4, 3).T.reshape(-1)  # interleaved index of each blocked slot
    np.testing.assert_array_equal(A, np.asarray(Ai)[np.ix_(perm, perm)])


def test_stationary_cov_dim_and_order():
    P1 = priors.matern_stationary_cov(1, lengthscale=2.0)
    P = priors.matern_stationary_cov(1, lengthscale=2.0, dim=3)
    Pi = priors.matern_stationary_cov(1, lengthscale=2.0, dim=3, order="interleaved")
    np.testing.assert_array_equal(P, np.kron(P1, np.eye(3)))
    np.testing.assert_array_equal(Pi, np.kron(np.eye(3), P1))


@pytest.mark.parametrize("name", sorted(PRIORS))
@pytest.mark.parametrize("q", [0, 1, 2, 3])
@pytest.mark.parametrize("dt", [0.01, 1.0, 10.0])
def test_q_symmetric_positive_definite(name, q, dt):
    _, Q = PRIORS[name](q, dt)
    Q = np.asarray(Q)
    np.testing.assert_array_equal(Q, Q.T)
    d = np.sqrt(np.diag(Q))
    corr = Q / np.outer(d, d)  # scale-free: entries of Q span many orders of magnitude
    assert np.linalg.eigvalsh(corr).min() > 1e-10
    np.linalg.cholesky(Q)


def test_dtype_follows_inputs():
    A, Q = priors.iwp(2, 0.1)
    assert A.dtype == Q.dtype == jnp.float64  # x64 is on in this module
    A, Q = priors.iwp(2, 1)  # an int step still gives floats
    assert A.dtype == jnp.float64
    dt32 = jnp.asarray(0.25, jnp.float32)
    for name, prior in PRIORS.items():
        A32, Q32 = prior(2, dt32)
        assert A32.dtype == Q32.dtype == jnp.float32, name
        A64, Q64 = prior(2, 0.25)
        np.testing.assert_allclose(A32, A64, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(Q32, Q64, rtol=1e-4, atol=1e-7 * np.abs(Q64).max())
    P32 = priors.matern_stationary_cov(2, lengthscale=jnp.asarray(0.5, jnp.float32))
    assert P32.dtype == jnp.float32


def test_strict_promotion():
    dt32 = jnp.asarray(0.25, jnp.float32)
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        A, Q = priors.matern(1, 0.25, lengthscale=0.6, variance=1.3, dim=2)  # weak floats
        assert A.shape == Q.shape == (4, 4)
        A, Q = priors.ioup(1, dt32, drift=0.9, diffusion=0.8, dim=2)  # float32 and weak floats
        assert A.dtype == jnp.float32 and A.shape == (4, 4)
        priors.matern_stationary_cov(1, lengthscale=dt32, variance=2.0, dim=2)


def test_jit_and_no_retrace():
    traces = []

    def f(dt, ell):
        traces.append(None)
        return priors.matern(2, dt, lengthscale=ell)

    jf = jax.jit(f)
    for dt, ell in [(0.1, 1.0), (0.2, 0.5), (3.0, 0.01)]:
        A, Q = jf(dt, ell)
        A_ref, Q_ref = priors.matern(2, dt, lengthscale=ell)
        np.testing.assert_allclose(A, A_ref, rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(Q, Q_ref, rtol=1e-13, atol=1e-300)
    assert len(traces) == 1


def test_vmap_over_dt():
    dts = jnp.array([0.1, 0.5, 2.0])
    As, Qs = jax.vmap(lambda dt: priors.iwp(2, dt))(dts)
    assert As.shape == Qs.shape == (3, 3, 3)
    for k, dt in enumerate([0.1, 0.5, 2.0]):
        A_ref, Q_ref = iwp_closed_form(2, dt, 1.0)
        assert_rel_close(Qs[k], Q_ref, RTOL)
        np.testing.assert_allclose(As[k], A_ref, rtol=RTOL)


# ----------------------------------------------------------------------------------------------
# Gradients against central finite differences
# ----------------------------------------------------------------------------------------------

_W = np.random.default_rng(0).normal(size=(2, 4, 4))


def _weighted(A, Q):
    return jnp.sum(_W[0] * A) + jnp.sum(_W[1] * Q)


def _matern_objective(theta):
    lengthscale, variance, dt = theta
    return _weighted(*priors.matern(3, dt, lengthscale=lengthscale, variance=variance))


def _ioup_objective(theta):
    drift, diffusion, dt = theta
    return _weighted(*priors.ioup(3, dt, drift=drift, diffusion=diffusion))


def _iwp_objective(theta):
    diffusion, dt = theta
    return _weighted(*priors.iwp(3, dt, diffusion=diffusion))


OBJECTIVES = {"matern": _matern_objective, "ioup": _ioup_objective, "iwp": _iwp_objective}
GRADS = {name: jax.jit(jax.grad(f)) for name, f in OBJECTIVES.items()}  # one compile each


@pytest.mark.parametrize(
    ("name", "theta"),
    [
        ("matern", [0.7, 1.2, 0.3]),  # lam * dt < 1: time unit dt
        ("matern", [0.7, 1.2, 0.7 / math.sqrt(7)]),  # lam * dt = 1: where the unit switches
        ("matern", [0.7, 1.2, 2.0]),  # lam * dt > 1: time unit 1 / lam
        ("ioup", [0.0, 0.5, 0.3]),  # drift 0: the integrated Wiener process
        ("ioup", [1.5, 0.5, 0.3]),
        ("ioup", [1.5, 0.5, 2.0]),
        ("iwp", [0.5, 0.3]),
        ("iwp", [0.5, 4.0]),
    ],
)
def test_grad_matches_finite_differences(name, theta):
    f = OBJECTIVES[name]
    theta = np.asarray(theta)
    g = np.asarray(GRADS[name](jnp.asarray(theta)))
    assert np.all(np.isfinite(g))
    for k in range(theta.size):
        eps = 1e-6 * max(abs(theta[k]), 1.0)
        up, down = theta.copy(), theta.copy()
        up[k] += eps
        down[k] -= eps
        fd = (f(jnp.asarray(up)) - f(jnp.asarray(down))) / (2 * eps)
        np.testing.assert_allclose(g[k], fd, rtol=1e-6, atol=1e-8 * abs(f(jnp.asarray(theta))))


# ----------------------------------------------------------------------------------------------
# Argument validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "argname"),
    [
        (lambda: priors.iwp(-1, 0.1), "num_derivatives"),
        (lambda: priors.iwp(1.0, 0.1), "num_derivatives"),
        (lambda: priors.iwp(True, 0.1), "num_derivatives"),
        (lambda: priors.iwp(1, 0.0), "dt"),
        (lambda: priors.iwp(1, -0.1), "dt"),
        (lambda: priors.iwp(1, jnp.ones(2)), "dt"),
        (lambda: priors.iwp(1, 0.1, dim=0), "dim"),
        (lambda: priors.iwp(1, 0.1, order="joint"), "order"),
        (lambda: priors.ioup(1, -1.0, drift=1.0), "dt"),
        (lambda: priors.ioup(1, 0.1, drift=jnp.ones(3)), "drift"),
        (lambda: priors.matern(1, 0.1, lengthscale=0.0), "lengthscale"),
        (lambda: priors.matern(1, 0.1, lengthscale=-1.0), "lengthscale"),
        (lambda: priors.matern(1, 0.0, lengthscale=1.0), "dt"),
        (lambda: priors.matern(1, 0.1, lengthscale=1.0, order="x"), "order"),
        (lambda: priors.matern_stationary_cov(-2, lengthscale=1.0), "num_derivatives"),
        (lambda: priors.matern_stationary_cov(1, lengthscale=0.0), "lengthscale"),
        (lambda: priors.matern_stationary_cov(1, lengthscale=1.0, dim=0), "dim"),
    ],
)
def test_invalid_arguments(call, argname):
    with pytest.raises(ValueError, match=argname):
        call()


def test_traced_values_are_not_checked():
    # Inside jit the value of dt is unknown: no error at trace time, whatever it is.
    A, _ = jax.jit(lambda dt: priors.iwp(1, dt))(0.5)
    np.testing.assert_allclose(A, [[1.0, 0.5], [0.0, 1.0]], rtol=RTOL)
