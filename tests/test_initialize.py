"""The data-driven start (``jaxssm.initialize``): exactness, consistency, validity, errors.

References and tolerances (float64):

- Noise-free regression start (``R = 0``, ``H = I``): equal to numpy's least-squares VAR(1)
  (``lstsq``; residual covariance over the number of pairs) at rtol 1e-10. The same normal
  equations solved two ways (eigen-decomposition vs SVD) on condition numbers below 1e3:
  round-off ~1e-13.
- Regression start with ``R`` known, N = 200,000 from a known 2- or 3-state model: every entry
  of ``A`` and ``Q`` within 6 approximate standard errors of the truth. The standard errors are
  the sandwich form of the errors-in-variables estimator, ``se(A_ij)^2 = V_ii [G_c^-1 G_0
  G_c^-1]_jj / N`` (``V = Q + W + A W A^T`` the residual covariance, ``G_0`` the observed state
  covariance, ``G_c = G_0 - W``) and ``se(Q_ij)^2 = (V_ii V_jj + V_ij^2) / N``; they ignore the
  residual's MA(1) correlation, so they are approximate. Over 6 seeds the largest
  error was 3.2 of them (over all entries); least squares without the noise correction is off by
  more than 30 of them (positive control), so 6 separates a consistent estimator from a biased
  one with margin on both sides.
- Regression start with ``R`` learned too (instrumental variables; ``A`` with poles 0.9, 0.7,
  0.5, N = 200,000): ``R`` within 0.06 of the truth entrywise (largest error seen 0.044 over
  six seeds, entries of order 0.5-1). ``A`` and ``Q`` are weakly identified along some
  directions (errors up to 0.14 where the likelihood is flat), so they are checked through the
  likelihood: within 1e-3 nats per step of the true model's on 20,000 steps (largest shortfall
  seen 4.5e-4). With ``Dy > D`` the part of ``R`` outside the range of ``H`` is read off
  directly: within 0.02 (largest seen 0.0063 at N = 50,000).
- Subspace start, N = 200,000, ``H`` with singular values in [1, 2], mildly non-normal ``A``:
  the eigenvalues of ``A`` within 0.02 of the truth (largest seen 0.0074 over six models) and
  the model's output autocovariances ``H A^k Sigma H^T (+ R at k = 0)``, k = 0..3, which do
  not depend on the state basis, within 2% of the largest lag-0 entry of the truth (largest
  seen 0.9%) and within 0.5% of the data's own sample autocovariances (largest seen 0.18%):
  the sample moments of a series with a pole at 0.9 differ from the truth by about 1% at this
  N, and the start matches the sample moments more closely than the truth.
- Validity (random small models, gaps, inputs, batches, the SARCOS test split): every start
  passes ``validate_params``, is finite, has ``Q`` and ``R`` positive definite and ``A`` stable
  where the data's own VAR(1) is.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from reference import Model, random_model, random_spd

import jaxssm as ssm
from jaxssm import datasets
from jaxssm._learn.initialize import subspace_horizon


def _simulate(rng, model, N, inputs=None, B=None):
    """Draw y_1..y_N (fast: the noise is drawn in one call, the loop is matrix-vector only)."""
    D, Dy = model.A.shape[0], model.H.shape[0]
    q = rng.standard_normal((N, D)) @ np.linalg.cholesky(model.Q).T
    if inputs is not None:
        q = q + inputs @ B.T
    Lr = np.linalg.cholesky(model.R) if np.any(model.R) else np.zeros((Dy, Dy))
    r = rng.standard_normal((N, Dy)) @ Lr.T
    x = rng.multivariate_normal(model.m0, model.P0)
    xs = np.empty((N, D))
    for k in range(N):
        x = model.A @ x + q[k]
        xs[k] = x
    return xs @ model.H.T + r


def _stationary(A, Q):
    P, Ak = Q.copy(), A.copy()
    for _ in range(60):
        P, Ak = P + Ak @ P @ Ak.T, Ak @ Ak
    return P


def _autocov(A, Q, H, R, k):
    return H @ np.linalg.matrix_power(A, k) @ _stationary(A, Q) @ H.T + (R if k == 0 else 0)


def _np(params):
    return {
        n: None if x is None else np.asarray(x, np.float64) for n, x in params._asdict().items()
    }


def _white(model, **changes):
    D = model.A.shape[0]
    return to_params(model)._replace(A=jnp.zeros((D, D)), Q=jnp.eye(D), **changes)


def _assert_valid(params, data_stable=True):
    ssm.validate_params(params)
    p = _np(params)
    for name, x in p.items():
        assert x is None or np.all(np.isfinite(x)), name
    for name in ("P0", "Q", "R"):
        assert np.linalg.eigvalsh(p[name])[0] > 0, name
    if data_stable:
        assert np.max(np.abs(np.linalg.eigvals(p["A"]))) < 1


# ------------------------------------------------------------------ the regression start


def test_noise_free_regression_start_is_the_least_squares_var():
    rng = np.random.default_rng(0)
    model = random_model(rng, 3, 3)._replace(H=np.eye(3), R=np.zeros((3, 3)))
    ys = _simulate(rng, model, 400)
    start = ssm.initialize(_white(model), jnp.asarray(ys))
    X0, X1 = ys[:-1], ys[1:]
    A = np.linalg.lstsq(X0, X1, rcond=None)[0].T
    E = X1 - X0 @ A.T
    assert_close(start.A, A, 1e-10)
    assert_close(start.Q, E.T @ E / len(E), 1e-10)
    for name in ("m0", "P0", "H", "R"):  # the others are kept
        np.testing.assert_array_equal(getattr(start, name), getattr(to_params(model), name))


def test_noise_free_regression_start_with_inputs_and_offset_is_least_squares():
    rng = np.random.default_rng(1)
    model = random_model(rng, 2, 2)._replace(H=np.eye(2), R=np.zeros((2, 2)))
    N, Du = 400, 2
    u = rng.standard_normal((N, Du))
    ys = _simulate(rng, model, N, inputs=u, B=rng.standard_normal((2, Du))) + 0.3
    start = ssm.initialize(_white(model), jnp.asarray(ys), update=("A", "B", "b", "Q"), inputs=u)
    Z = np.concatenate([ys[:-1], u[1:], np.ones((N - 1, 1))], axis=1)
    M = np.linalg.lstsq(Z, ys[1:], rcond=None)[0].T
    E = ys[1:] - Z @ M.T
    assert_close(start.A, M[:, :2], 1e-10)
    assert_close(start.B, M[:, 2:4], 1e-10)
    assert_close(start.b, M[:, 4], 1e-10)
    assert_close(start.Q, E.T @ E / len(E), 1e-10)


def _se(model):
    """Approximate standard errors of the corrected regression's A and Q (module docstring)."""
    A, Q, R = model.A, model.Q, model.R
    G0 = _stationary(A, Q) + R
    Gi = np.linalg.inv(G0 - R)
    V = Q + R + A @ R @ A.T
    seA = np.sqrt(np.outer(np.diag(V), np.diag(Gi @ G0 @ Gi)))
    seQ = np.sqrt(np.outer(np.diag(V), np.diag(V)) + V**2)
    return seA, seQ


@pytest.mark.parametrize("seed, D", [(0, 2), (1, 3)])
def test_regression_start_recovers_A_and_Q_with_known_noise(seed, D):
    rng = np.random.default_rng(100 + seed)
    model = random_model(rng, D, D)._replace(H=np.eye(D))
    N = 200_000
    ys = _simulate(rng, model, N)
    start = _np(ssm.initialize(_white(model), jnp.asarray(ys)))
    seA, seQ = (s / np.sqrt(N) for s in _se(model))
    assert np.max(np.abs(start["A"] - model.A) / seA) < 6
    assert np.max(np.abs(start["Q"] - model.Q) / seQ) < 6
    # Positive control: least squares without the noise correction is far off.
    X0, X1 = ys[:-1], ys[1:]
    A_ols = np.linalg.lstsq(X0, X1, rcond=None)[0].T
    assert np.max(np.abs(A_ols - model.A) / seA) > 30


def _model_with_poles(rng, eigs, Dy, R_scale=1.0):
    """A model with the given real poles, an ``H`` with singular values in [1, 2]."""
    D = len(eigs)
    V = np.eye(D) + 0.3 * rng.standard_normal((D, D))  # mildly non-normal A
    U1, _ = np.linalg.qr(rng.standard_normal((Dy, D)))
    U2, _ = np.linalg.qr(rng.standard_normal((D, D)))
    H = U1 @ np.diag(np.linspace(1.0, 2.0, D)) @ U2.T
    A = V @ np.diag(eigs) @ np.linalg.inv(V)
    Q, R = random_spd(rng, D, 0.5), random_spd(rng, Dy, R_scale)
    return Model(np.zeros(D), np.eye(D), A, Q, H, R)


def test_regression_start_learns_R_from_the_lag_structure():
    rng = np.random.default_rng(2)
    model = _model_with_poles(rng, [0.9, 0.7, 0.5], 3)._replace(H=np.eye(3))
    ys = _simulate(rng, model, 200_000)
    guess = _white(model, R=jnp.eye(3))
    start = ssm.initialize(guess, jnp.asarray(ys), update=("A", "Q", "R"))
    _assert_valid(start)
    assert np.max(np.abs(np.asarray(start.R) - model.R)) < 0.06
    # A and Q are weakly identified along some directions (the likelihood is flat there), so
    # the check on them is the likelihood: within 1e-3 nats per step of the truth's.
    y = jnp.asarray(ys[:20_000])
    gap = float(ssm.log_likelihood(start, y) - ssm.log_likelihood(to_params(model), y))
    assert gap > -1e-3 * y.shape[0]


def test_regression_start_with_a_tall_H_and_R_learned():
    # Dy > D: the part of R outside the range of H is read off (I - H H^+) y directly.
    rng = np.random.default_rng(3)
    model = _model_with_poles(rng, [0.9, 0.6], 4)
    ys = _simulate(rng, model, 50_000)
    start = ssm.initialize(_white(model, R=jnp.eye(4)), jnp.asarray(ys), update=("A", "Q", "R"))
    _assert_valid(start)
    Pperp = np.eye(4) - model.H @ np.linalg.pinv(model.H)
    err = Pperp @ (np.asarray(start.R) - model.R) @ Pperp
    assert np.max(np.abs(err)) < 0.02
    y = jnp.asarray(ys[:20_000])
    gap = float(ssm.log_likelihood(start, y) - ssm.log_likelihood(to_params(model), y))
    assert gap > -1e-3 * y.shape[0]


def test_m0_is_the_first_state_and_P0_the_stationary_covariance():
    rng = np.random.default_rng(4)
    model = random_model(rng, 2, 3)
    ys = _simulate(rng, model, 300)
    start = _np(ssm.initialize(to_params(model), jnp.asarray(ys), update=("m0", "P0", "A", "Q")))
    # Dy > D with R known: the states are read off by generalised least squares.
    RiH = np.linalg.solve(model.R, model.H)
    assert_close(start["m0"], np.linalg.solve(model.H.T @ RiH, RiH.T @ ys[0]), 1e-10)
    A, Q, P0 = start["A"], start["Q"], start["P0"]
    assert_close(P0, A @ P0 @ A.T + Q, 1e-10)


def test_stable_data_give_a_stable_A_when_the_noise_correction_overshoots():
    # An overstated R (1.0 for 0.5): the corrected regression alone gives A = 1.85 on a
    # stable AR(1) with pole 0.95 (least squares: 0.64).
    rng = np.random.default_rng(5)
    one = np.eye(1)
    model = Model(np.zeros(1), one, 0.95 * one, 0.1 * one, one, 0.5 * one)
    ys = _simulate(rng, model, 20_000)
    rho_data = abs(np.linalg.lstsq(ys[:-1], ys[1:], rcond=None)[0][0, 0])
    assert rho_data < 1
    overstated = _white(model, R=jnp.array([[1.0]]))
    A = float(ssm.initialize(overstated, jnp.asarray(ys)).A[0, 0])
    assert abs(A) <= 0.5 * (1 + rho_data) + 1e-9
    # Positive control: with the true R the corrected estimate is near the truth (se ~0.005).
    A_true_R = float(ssm.initialize(_white(model), jnp.asarray(ys)).A[0, 0])
    assert abs(A_true_R - 0.95) < 0.03


# ------------------------------------------------------------------ the subspace start


@pytest.mark.parametrize("D, eigs", [(2, [0.9, -0.6]), (3, [0.9, -0.6, 0.5])])
def test_subspace_start_recovers_the_transfer_function(D, eigs):
    rng = np.random.default_rng(6 + D)
    model = _model_with_poles(rng, eigs, D, 0.5)
    N = 200_000
    ys = _simulate(rng, model, N)
    guess = _white(model, H=jnp.ones((D, D)))
    start = ssm.initialize(guess, jnp.asarray(ys), update=("A", "Q", "H", "R"))
    _assert_valid(start)
    p = _np(start)
    est = np.sort(np.linalg.eigvals(p["A"]).real)
    assert np.max(np.abs(est - np.sort(eigs))) < 0.02
    scale = np.max(np.abs(_autocov(model.A, model.Q, model.H, model.R, 0)))
    for k in range(4):
        fitted = _autocov(p["A"], p["Q"], p["H"], p["R"], k)
        truth = _autocov(model.A, model.Q, model.H, model.R, k)
        sample = ys[k:].T @ ys[: N - k] / (N - k)
        assert np.max(np.abs(fitted - truth)) < 0.02 * scale, k
        assert np.max(np.abs(fitted - sample)) < 0.005 * scale, k


def test_fixed_Q_picks_the_state_basis_without_changing_the_transfer_function():
    rng = np.random.default_rng(9)
    model = _model_with_poles(rng, [0.8, -0.5], 2, 0.5)
    ys = jnp.asarray(_simulate(rng, model, 20_000))
    guess = _white(model, H=jnp.ones((2, 2)))._replace(Q=jnp.asarray(model.Q))
    free = _np(ssm.initialize(guess, ys, update=("A", "Q", "H", "R")))
    fixed = _np(ssm.initialize(guess, ys, update=("A", "H", "R")))
    np.testing.assert_array_equal(fixed["Q"], model.Q)
    for k in range(3):
        a = _autocov(fixed["A"], fixed["Q"], fixed["H"], fixed["R"], k)
        b = _autocov(free["A"], free["Q"], free["H"], free["R"], k)
        assert_close(a, b, 1e-8)


def test_subspace_horizon_rule():
    assert subspace_horizon(10_000, 2, 1) == 10  # ceil(10 / Dy) for a scalar series
    assert subspace_horizon(44_484, 21, 21) == 4  # 2 i_min, i_min = ceil(D / Dy) + 1 = 2
    assert subspace_horizon(60, 2, 2) == 2  # capped by the data (10 i (Dy + Du) columns)
    with pytest.raises(ValueError, match="at least"):
        subspace_horizon(40, 2, 2)


# ------------------------------------------------------------------ always valid


@pytest.mark.parametrize("seed", range(4))
def test_random_models_give_valid_starts(seed):
    rng = np.random.default_rng(50 + seed)
    D, Dy, Du = 1 + seed % 3, 1 + (seed + 1) % 3, 2
    model = random_model(rng, D, Dy)
    N = 600
    u = rng.standard_normal((N, Du))
    ys = _simulate(rng, model, N)
    ys[rng.random(ys.shape) < 0.1] = np.nan
    ys = jnp.asarray(ys)
    base = to_params(model)
    cases = [
        (("A", "Q"), None, base),
        (("m0", "P0", "A", "Q", "R"), None, base),
        (("A", "Q", "H", "R", "m0", "P0"), None, base),
        (("A", "B", "b", "Q", "D", "d"), u, base),
        (("A", "Q", "H", "R", "B", "b", "D", "d"), u, base),
    ]
    for update, inputs, params in cases:
        if "H" not in update and Dy < D:
            continue  # the regression start needs H of full column rank
        start = ssm.initialize(params, ys, update=update, inputs=inputs)
        _assert_valid(start, data_stable=False)
        assert np.isfinite(float(ssm.log_likelihood(start, ys, inputs=inputs)))
        for name in ssm.LGSSM._fields:
            if name not in update:
                kept, given = getattr(start, name), getattr(params, name)
                assert (kept is None) == (given is None), name


def test_batch_pools_the_sequences():
    rng = np.random.default_rng(60)
    model = random_model(rng, 2, 2)._replace(H=np.eye(2), R=np.zeros((2, 2)))
    ys = np.stack([_simulate(rng, model, 200) for _ in range(3)])
    ys[1, 150:] = np.nan  # a ragged batch: trailing rows are not data
    start = ssm.initialize(_white(model), jnp.asarray(ys))
    X0 = np.concatenate([ys[0, :-1], ys[1, :149], ys[2, :-1]])
    X1 = np.concatenate([ys[0, 1:], ys[1, 1:150], ys[2, 1:]])
    A = np.linalg.lstsq(X0, X1, rcond=None)[0].T
    assert_close(start.A, A, 1e-10)


def test_float32_parameters_give_a_float32_start():
    rng = np.random.default_rng(61)
    model = random_model(rng, 2, 2)._replace(H=np.eye(2))
    ys = _simulate(rng, model, 300)
    start = ssm.initialize(to_params(model, jnp.float32), jnp.asarray(ys, jnp.float32))
    assert start.A.dtype == jnp.float32 and start.Q.dtype == jnp.float32


def test_sarcos_test_split_start_is_far_above_the_white_noise_start():
    Y = np.asarray(datasets.load_sarcos("test").inputs[:, :21], np.float64)
    white, ys = datasets.exercise_setup(Y, jax.random.key(0), dtype=jnp.float64)
    ll_white = float(ssm.log_likelihood(white, ys))
    start = ssm.initialize(white, ys)
    _assert_valid(start)
    ll = float(ssm.log_likelihood(start, ys))
    # Measured -45,581 (white noise: -2,534,476; the uncorrected regression start:
    # -49,459); the bound leaves room for other BLAS round-off and floors.
    assert ll > -50_000 and ll > ll_white + 2_000_000
    subspace = ssm.initialize(white, ys, update=("A", "Q", "H", "R"))
    _assert_valid(subspace)
    assert float(ssm.log_likelihood(subspace, ys)) > -40_000


# ------------------------------------------------------------------ errors


def test_errors_are_clear():
    rng = np.random.default_rng(70)
    model = random_model(rng, 3, 2)
    ys = jnp.asarray(_simulate(rng, model, 200))
    params = to_params(model)
    with pytest.raises(ValueError, match="unknown parameter"):
        ssm.initialize(params, ys, update=("A", "Z"))
    varying = params._replace(A=jnp.broadcast_to(params.A, (200, 3, 3)))
    with pytest.raises(ValueError, match="time-invariant"):
        ssm.initialize(varying, ys)
    with pytest.raises(ValueError, match="full column rank"):
        ssm.initialize(params, ys)  # H is 2 x 3: the states cannot be read off y
    with pytest.raises(ValueError, match="include 'A'"):
        ssm.initialize(params, ys, update=("H", "R"))
    with pytest.raises(ValueError, match="steps"):
        ssm.initialize(params, ys[:20], update=("A", "H"))  # D = 3 needs a longer series
    square = to_params(random_model(rng, 2, 2))
    with pytest.raises(ValueError, match="too few steps"):
        ssm.initialize(square, ys[:2])
    gappy = np.array(ys)
    gappy[:, 1] = np.nan
    with pytest.raises(ValueError, match="never observed"):
        ssm.initialize(square, jnp.asarray(gappy))
    with pytest.raises(TypeError, match="outside jit"):
        jax.jit(lambda p, y: ssm.initialize(p, y))(square, ys)
