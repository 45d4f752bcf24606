"""M-step and the EM objective Q(theta, theta_n) (``jaxssm.m_step``, ``expected_log_joint``).

Independent references: the closed forms of DESIGN.md written here in plain numpy (with
``np.linalg.solve``), and Q(theta, theta_n) computed from the dense joint Gaussian posterior
of ``reference.py`` term by term. Tolerances (float64):

- m_step vs numpy closed forms, rtol 1e-10: both are a few D x D products and one solve of a
  well-conditioned system (cond(Phi), cond(Sigma) < 1e3 here), so they differ by ~1e-13.
- expected_log_joint vs the dense expectation, rtol 1e-10 (sums of O(N) well-scaled terms).
- Stationarity: the gradient of Q at the M-step result, relative to its size at the starting
  parameters, below 1e-8 (a root of a smooth function computed in float64; the observed values
  are ~1e-13).
- Fisher's identity, rtol 1e-8 with an absolute floor of 1e-10 x the largest gradient entry:
  the two sides come from different computations (autodiff through the filter vs through Q),
  each with relative round-off ~1e-12 here.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from reference import dense_posterior, dense_sufficient_stats, random_model, simulate

import jaxssm as ssm

NAMES = ("A", "Q", "H", "R", "m0", "P0")
# Every non-empty subset (an empty update is an error since 0.2).
ALL_SUBSETS = [s for r in range(1, len(NAMES) + 1) for s in itertools.combinations(NAMES, r)]


def numpy_m_step(model, st, update):
    """The closed forms of DESIGN.md in numpy, in the order A, Q, H, R, m0, P0."""
    m0, P0, A, Q, H, R = (np.asarray(x, np.float64).copy() for x in model[:6])
    Sigma, Phi, B, C, D = st["Sigma"], st["Phi"], st["B"], st["C"], st["D"]
    if "A" in update:
        A = C @ np.linalg.inv(Phi)
    if "Q" in update:
        Q = Sigma - C @ A.T - A @ C.T + A @ Phi @ A.T
    if "H" in update:
        H = B @ np.linalg.inv(Sigma)
    if "R" in update:
        R = D - H @ B.T - B @ H.T + H @ Sigma @ H.T
    if "m0" in update:
        m0 = st["m0_smoothed"]
    if "P0" in update:
        d = st["m0_smoothed"] - m0
        P0 = st["P0_smoothed"] + np.outer(d, d)
    return m0, P0, A, Q, H, R


def to_stats(st, N, dtype=jnp.float64):
    return ssm.SufficientStats(
        **{k: jnp.asarray(st[k], dtype) for k in ssm.SufficientStats._fields[:7]},
        num_steps=jnp.asarray(N, jnp.int32),
    )


def dense_expected_log_joint(theta, post, ys):
    """E[log p(x_0:N, y_1:N | theta)] under the dense posterior ``post`` (of theta_n)."""
    m0, P0, A, Q, H, R = (np.asarray(x, np.float64) for x in theta)
    N, D = ys.shape[0], A.shape[0]
    mean, cov = post.joint_mean, post.joint_cov
    second = cov + np.outer(mean, mean)

    def S(k, j):
        return second[k * D : (k + 1) * D, j * D : (j + 1) * D]

    def mu(k):
        return mean[k * D : (k + 1) * D]

    def term(covariance, scatter):
        _, logdet = np.linalg.slogdet(2 * np.pi * covariance)
        return -0.5 * (logdet + np.trace(np.linalg.solve(covariance, scatter)))

    scatter0 = S(0, 0) - np.outer(mu(0), m0) - np.outer(m0, mu(0)) + np.outer(m0, m0)
    total = term(P0, scatter0)
    for k in range(1, N + 1):
        ex = S(k, k) - S(k, k - 1) @ A.T - A @ S(k - 1, k) + A @ S(k - 1, k - 1) @ A.T
        total += term(Q, ex)
        y = ys[k - 1]
        ey = np.outer(y, y) - np.outer(y, mu(k)) @ H.T - H @ np.outer(mu(k), y) + H @ S(k, k) @ H.T
        total += term(R, ey)
    return total


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(42)
    model = random_model(rng, 3, 2, mean_scale=2.0)
    _, ys = simulate(rng, model, 8)
    return model, ys, dense_sufficient_stats(model, ys)


@pytest.mark.parametrize("update", ALL_SUBSETS, ids=lambda u: "+".join(u))
def test_m_step_matches_numpy_closed_forms(problem, update):
    model, ys, st = problem
    N = ys.shape[0]
    # Eagerly (no compile per subset, to keep the 63 cases fast); the compiled path is
    # checked against the eager one in the next test.
    with jax.disable_jit():
        out = ssm.m_step(to_params(model), to_stats(st, N), update=update)
    expected = numpy_m_step(model, st, update)
    for name, got, want in zip(ssm.LGSSM._fields[:6], out[:6], expected, strict=True):
        assert_close(got, want, 1e-10, err_msg=f"{name} (update={update})")
        if name not in update:  # untouched entries are returned as they were
            np.testing.assert_array_equal(got, getattr(model, name))
    for name in {"P0", "Q", "R"} & set(update):
        x = np.asarray(getattr(out, name))
        np.testing.assert_array_equal(x, x.T, err_msg=f"{name} not exactly symmetric")


@pytest.mark.parametrize("update", [("A", "Q"), NAMES], ids=lambda u: "+".join(u))
def test_m_step_compiled_equals_eager(problem, update):
    model, ys, st = problem
    p, stats = to_params(model), to_stats(st, ys.shape[0])
    with jax.disable_jit():
        eager = ssm.m_step(p, stats, update=update)
    compiled = ssm.m_step(p, stats, update=update)
    for name, a, b in zip(ssm.LGSSM._fields, compiled, eager, strict=True):
        assert_close(a, b, 1e-13, err_msg=name)


def test_m_step_update_order_and_string_argument(problem):
    model, ys, st = problem
    p, stats = to_params(model), to_stats(st, ys.shape[0])
    # Any order of names gives the DESIGN.md order; a single string is one name.
    a = ssm.m_step(p, stats, update=("P0", "R", "Q", "m0", "H", "A"))
    b = ssm.m_step(p, stats, update=NAMES)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = ssm.m_step(p, stats, update="A")
    # Any iterable of names is accepted, a one-shot iterator and a set included.
    for same in (["A"], ("A",), {"A"}, iter(["A"]), (n for n in ["A"])):
        d = ssm.m_step(p, stats, update=same)
        for x, y in zip(c, d, strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(c.Q, p.Q)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (("A", "X"), ValueError, r"unknown parameter 'X'.*valid names: 'm0', 'P0'"),
        (("a",), ValueError, "valid names"),
        ("Qs", ValueError, "valid names"),
        ((), ValueError, "at least one"),
        ([], ValueError, "at least one"),
        (("A", "Q", "A"), ValueError, "repeat"),
        (None, TypeError, r"update must be a parameter name.*'m0', 'P0'.*got NoneType"),
        (3, TypeError, r"update must be a parameter name.*got int"),
        (("A", 3), TypeError, "update must hold parameter names"),
        (b"A", TypeError, "update must hold parameter names"),
    ],
)
def test_m_step_rejects_bad_update(problem, bad, error, match):
    model, ys, st = problem
    with pytest.raises(error, match=match):
        ssm.m_step(to_params(model), to_stats(st, ys.shape[0]), update=bad)


def test_m_step_rejects_mismatched_stats(problem):
    model, ys, st = problem
    stats = to_stats(st, ys.shape[0])._replace(B=jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"stats\.B must have shape \(2, 3\)"):
        ssm.m_step(to_params(model), stats)


def test_expected_log_joint_matches_dense_expectation(problem):
    model, ys, st = problem
    post = dense_posterior(model, ys)
    stats = to_stats(st, ys.shape[0])
    rng = np.random.default_rng(3)
    other = random_model(rng, 3, 2)  # theta != theta_n
    for theta in (model, other):
        want = dense_expected_log_joint(theta, post, ys)
        got = ssm.expected_log_joint(to_params(theta), stats)
        assert_close(got, want, 1e-10)


@pytest.mark.parametrize(
    "update",
    [("A", "Q"), ("A",), ("Q",), ("H", "R"), ("R",), ("m0", "P0"), ("P0",), NAMES],
    ids=lambda u: "+".join(u),
)
def test_m_step_is_stationary_point_of_q(problem, update):
    model, ys, st = problem
    # Start away from theta_n so the gradient at the start is not small.
    start = to_params(random_model(np.random.default_rng(7), 3, 2))
    stats = to_stats(st, ys.shape[0])
    grad = jax.jit(jax.grad(ssm.expected_log_joint))
    new = ssm.m_step(start, stats, update=update)
    g_start, g_new = grad(start, stats), grad(new, stats)
    for name in update:
        scale = np.max(np.abs(getattr(g_start, name)))
        assert scale > 1e-3, f"gradient for {name} at the start is too small to test"
        rel = np.max(np.abs(getattr(g_new, name))) / scale
        assert rel < 1e-8, f"dQ/d{name} at the M-step result is {rel:.2e} of its start size"
    # And the M-step increases Q.
    assert ssm.expected_log_joint(new, stats) > ssm.expected_log_joint(start, stats)


@pytest.mark.parametrize("seed, D, Dy, N", [(0, 3, 2, 8), (1, 2, 3, 5)])
def test_fishers_identity(seed, D, Dy, N):
    """grad log p(y | theta) at theta_n == grad_theta Q(theta, theta_n) at theta = theta_n."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=2.0)
    _, ys = simulate(rng, model, N)
    theta_n = to_params(model)
    stats, _ = ssm.e_step(theta_n, ys)
    g_ll = jax.grad(ssm.log_likelihood)(theta_n, jnp.asarray(ys))
    g_q = jax.grad(ssm.expected_log_joint)(theta_n, stats)
    for name in ssm.LGSSM._fields[:6]:
        a, b = getattr(g_ll, name), getattr(g_q, name)
        assert np.max(np.abs(b)) > 1e-6, f"degenerate gradient for {name}"
        assert_close(a, b, 1e-8, err_msg=f"d/d{name}")


def test_fishers_identity_batch():
    rng = np.random.default_rng(5)
    model = random_model(rng, 2, 2, mean_scale=2.0)
    ys = np.stack([simulate(rng, model, 6)[1] for _ in range(3)])
    theta_n = to_params(model)
    stats, _ = ssm.e_step(theta_n, ys)

    def total_ll(p):
        return sum(ssm.log_likelihood(p, jnp.asarray(y)) for y in ys)

    g_ll = jax.grad(total_ll)(theta_n)
    g_q = jax.grad(lambda p: ssm.expected_log_joint(p, stats, num_sequences=3))(theta_n)
    for name in ssm.LGSSM._fields[:6]:
        assert_close(getattr(g_ll, name), getattr(g_q, name), 1e-8, err_msg=f"d/d{name}")
