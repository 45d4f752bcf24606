r"""Gauss-Markov priors from linear time-invariant SDEs, discretised exactly.

Each prior is a continuous-time linear SDE

.. math::

    \mathrm{d}x(t) = F x(t)\,\mathrm{d}t + L\,\mathrm{d}W(t),
    \qquad \mathbb{E}[\mathrm{d}W\,\mathrm{d}W^\top] = q\,\mathrm{d}t,

on the state :math:`x = (f, f', \dots, f^{(\nu)})` of one scalar process :math:`f` and its
first ``num_derivatives`` derivatives. Sampled every ``dt`` it becomes the linear-Gaussian
transition :math:`x_k = A x_{k-1} + q_k`, :math:`q_k \sim N(0, Q)`, with

.. math::

    A = e^{F\,\Delta t}, \qquad
    Q = \int_0^{\Delta t} e^{F s} L q L^\top e^{F^\top s}\,\mathrm{d}s.

Both come from one matrix exponential, evaluated with jnp operations only, so the results
are differentiable in ``dt`` and in the hyperparameters and the functions can be jitted and
vmapped (``num_derivatives``, ``dim`` and ``order`` are static; one compilation each).

How ``A`` and ``Q`` are computed. The textbook matrix fraction (Van Loan's block
:math:`\exp\big(\begin{bmatrix} -F & L q L^\top \\ 0 & F^\top \end{bmatrix}\Delta t\big)`
with a library ``expm``) goes wrong in two regimes. For short steps the block has a small
norm, ``expm`` picks a low-degree Pade approximant that is exact only to a low order in
:math:`\Delta t`, and the smallest entries of ``Q`` (order :math:`\Delta t^{2\nu+1}`) come out
wrong: 0.25% error for a 3-times integrated Wiener process at any ``dt <= 0.01``, with scipy
and jax alike. For stable priors the factor :math:`e^{-F\Delta t}` grows like
:math:`e^{\lambda\Delta t}`: 1e-6 relative error for a Matern-7/2 at ``lambda * dt = 4``, and
NaN from ``jax.scipy.linalg.expm`` (at most 16 squarings) at ``lambda * dt = 100``. Here:

1. The state is rescaled to a time unit :math:`c = \Delta t / \max(1, \lambda\Delta t)`
   (``lambda`` the decay rate; ``c = dt`` for the integrated Wiener process): component ``i``
   is multiplied by :math:`c^i`, so the rescaled drift :math:`\tilde F = c\,S F S^{-1}`,
   :math:`S = \mathrm{diag}(c^i)`, has unit couplings, entries of order one, and the step
   becomes :math:`h = \Delta t / c \ge 1`.
2. :math:`\mathrm{vec}(\tilde Q) = \int_0^h e^{(\tilde F \oplus \tilde F) s}\,\mathrm{d}s\;
   \mathrm{vec}(e e^\top)` is read off the exponential of the block matrix
   :math:`\begin{bmatrix} \tilde F \oplus \tilde F & \mathrm{vec}(e e^\top) \\ 0 & 0
   \end{bmatrix} h` (Van Loan 1978, theorem 1, applied to the Kronecker sum, which is as
   stable as :math:`F`; size :math:`(\nu+1)^2 + 1`); :math:`\tilde A = e^{\tilde F h}` is a
   diagonal block of the same exponential.
3. The exponential is a Taylor polynomial of degree ``max(18, 2 (num_derivatives + 1))``
   with scaling and squaring (exact for the nilpotent drift of the integrated Wiener
   process).
4. The scaling is undone by exact elementwise powers: :math:`A_{ij} = c^{j-i}\tilde A_{ij}`,
   :math:`Q_{ij} = q\,c^{2\nu+1-i-j}\tilde Q_{ij}`.

The integrated Wiener process then matches its closed form to about 1e-15 relative error in
every entry (``num_derivatives`` up to 12, ``dt`` from 1e-4 to 100), and the Matern priors
satisfy ``Q = P - A P A^T`` to about 1e-12 for ``lambda * dt`` from 1e-3 to 1e4.

For ``dim > 1`` independent copies of the process are stacked. With ``order="blocked"``
(the default) the state is ``(all values, all first derivatives, all second derivatives,
...)``, so ``A = kron(A_1, I_dim)`` and ``Q = kron(Q_1, I_dim)``: for two derivatives of
seven joints this is the SARCOS layout (positions, velocities, accelerations). With
``order="interleaved"`` the state is joint by joint: ``A = kron(I_dim, A_1)``.

The output dtype is the floating dtype of the inputs (``dt`` and the hyperparameters); Python
scalars take JAX's default float dtype (float64 only where the caller enabled x64).

Shapes: ``D = (num_derivatives + 1) * dim`` is the state dimension.

References:
    S. Sarkka and A. Solin, *Applied Stochastic Differential Equations*, Cambridge University
    Press, 2019 (ch. 6: linear SDEs, exact discretisation and the matrix fraction).
    C. F. Van Loan, "Computing integrals involving the matrix exponential", IEEE Transactions
    on Automatic Control 23(3), 1978.
    J. Hartikainen and S. Sarkka, "Kalman filtering and smoothing solutions to temporal
    Gaussian process regression models", IEEE MLSP, 2010 (Matern covariances in state-space
    form).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from jaxssm._args.checks import check_int

__all__ = ["iwp", "ioup", "matern", "matern_stationary_cov"]

_ORDERS = ("blocked", "interleaved")


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------


def _check_order(order: Any) -> str:
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    return order


def _concrete_value(x: ArrayLike) -> np.ndarray | None:
    """Return ``x`` as a numpy array, or None when it is traced (inside jit/grad)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None  # a tracer: its value is not known at trace time


def _check_scalar(x: ArrayLike, name: str, *, sign: str = "any") -> None:
    """Check a scalar argument; ``sign`` is ``"positive"``, ``"nonnegative"`` or ``"any"``."""
    if jnp.ndim(x) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(x)}")
    value = _concrete_value(x)
    if value is None:
        return
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if sign == "positive" and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if sign == "nonnegative" and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _float_dtype(*xs: ArrayLike) -> jnp.dtype:
    """Floating dtype that follows the inputs; weak Python scalars take the default."""
    return jnp.result_type(float, *xs)


def _as_dtype(x: ArrayLike, dtype: jnp.dtype) -> ArrayLike:
    """Concrete values become numpy scalars of ``dtype`` (one jit cache entry per dtype).

    Traced values pass through unchanged; the jitted core converts them.
    """
    value = _concrete_value(x)
    return x if value is None else value.astype(dtype)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _chain_drift(num_states: int, dtype: jnp.dtype) -> Array:
    """Drift of a chain of integrators: ones on the first superdiagonal."""
    return jnp.eye(num_states, k=1, dtype=dtype)


def _matern_drift_unit(num_states: int, rate: Array) -> Array:
    """Companion drift with characteristic polynomial ``(s + rate)^n``, ``n = num_states``."""
    n = num_states
    coeffs = jnp.stack([math.comb(n, k) * rate ** (n - k) for k in range(n)])
    return _chain_drift(n, rate.dtype).at[-1, :].set(-coeffs)


def _matern_constant(p: int) -> float:
    """``(p!)^2 / (2p)! * 2^(2p+1)``: spectral density / (variance * lam^(2p+1))."""
    return math.factorial(p) ** 2 / math.factorial(2 * p) * 2.0 ** (2 * p + 1)


def _index_sums(n: int, dtype: jnp.dtype) -> tuple[Array, Array]:
    """``(j - i, i + j)`` over the ``[n, n]`` grid, as floats of ``dtype``."""
    i = jnp.arange(n, dtype=dtype)
    return i[None, :] - i[:, None], i[:, None] + i[None, :]


_TAYLOR_DEGREE = 18  # 1 / 19! < 1e-17: truncation below float64 round-off at 1-norm <= 1
_MAX_SQUARINGS = 64


def _expm(M: Array, degree: int = _TAYLOR_DEGREE) -> Array:
    """Matrix exponential by scaling and squaring with a Taylor polynomial (degree >= 18).

    ``M`` is scaled by ``2**-s`` to 1-norm at most 1, the Taylor polynomial is evaluated by
    Horner's rule (no linear solve: sums of the nonnegative matrices of the integrated Wiener
    process stay accurate entry by entry), then squared ``s`` times. Both loops run in one
    fixed-length ``scan``, so the function is jit-, vmap- and reverse-mode-differentiable
    and compiles quickly.

    It replaces :func:`jax.scipy.linalg.expm`, which (jax 0.10) scales by
    ``2**floor(log2(norm / theta))`` and so evaluates its Pade approximant at 1-norms up to
    ``2 theta`` (about 4e-8 relative error for ``exp(-20)`` in float64), returns NaN beyond
    16 squarings (1-norm above about 3.5e5), and is slower to compile.

    References:
        N. J. Higham, *Functions of Matrices: Theory and Computation*, SIAM, 2008, ch. 10.
    """
    dot = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
    dtype = M.dtype
    norm = jax.lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(M), axis=0)))
    s = jnp.ceil(jnp.log2(norm))
    s = jnp.where(jnp.isfinite(s), jnp.clip(s, 0, _MAX_SQUARINGS), 0)
    X = M * jnp.exp2(-s).astype(dtype)
    eye = jnp.eye(M.shape[0], dtype=dtype)
    # Steps 0..degree-1: Horner, R <- I + X R / k for k = degree..1; then R <- R @ R while < s.
    steps = jnp.arange(degree + _MAX_SQUARINGS, dtype=dtype)
    k = jnp.maximum(degree - steps, 1)

    def step(R: Array, i_k: tuple[Array, Array]) -> tuple[Array, None]:
        i, k = i_k
        horner = eye + dot(X, R) / k
        squared = jnp.where(i - degree < s, dot(R, R), R)
        return jnp.where(i < degree, horner, squared), None

    R, _ = jax.lax.scan(step, eye, (steps, k))
    return R


def _discretise_unit(F_unit: Array, h: Array) -> tuple[Array, Array]:
    """Discretise ``dx = F_unit x ds + e_last dW`` (unit spectral density) over ``[0, h]``.

    ``Q`` comes from one exponential of the block matrix ``[[K, vec(e e^T)], [0, 0]] h`` with
    the Kronecker sum ``K = F kron I + I kron F`` (row-major vec): its last column above the
    corner is ``int_0^h exp(K s) ds vec(e e^T) = vec(int_0^h e^(F s) e e^T e^(F^T s) ds)``.
    """
    n = F_unit.shape[0]
    dtype = F_unit.dtype
    eye = jnp.eye(n, dtype=dtype)
    K = jnp.kron(F_unit, eye) + jnp.kron(eye, F_unit)
    m = n * n + 1
    # One exponential of blockdiag([[K, vec(e e^T)], [0, 0]], F_unit) * h gives Q and A.
    M = jnp.zeros((m + n, m + n), dtype).at[: n * n, : n * n].set(K)
    M = M.at[n * n - 1, n * n].set(1)  # vec(e_last e_last^T) is the last unit vector
    M = M.at[m:, m:].set(F_unit)
    # Degree >= 2n: exact for the nilpotent block of the integrated Wiener process (M^2n = 0).
    E = _expm(M * h, degree=max(_TAYLOR_DEGREE, 2 * n))
    Q = E[: n * n, n * n].reshape(n, n)
    A = E[m:, m:]
    return A, 0.5 * (Q + Q.T)


def _integrator_chain(
    nu: int, dt: Array, rate: Array, scale: Array, tail: str
) -> tuple[Array, Array]:
    """Discretise a chain of ``nu`` integrators whose top state decays at ``rate``.

    ``tail="iou"``: the top derivative is an Ornstein-Uhlenbeck process,
    ``d f^(nu) = -rate f^(nu) dt + dW``, and ``scale`` is the spectral density of ``dW``.
    ``tail="matern"``: companion form with characteristic polynomial ``(s + rate)^(nu+1)``
    and spectral density ``scale * rate^(2 nu + 1)`` (``scale`` = variance times
    :func:`_matern_constant`), applied without forming the possibly huge power.
    """
    n = nu + 1
    dtype = dt.dtype
    # Time unit c <= dt: dt for slow decay, 1 / rate for fast decay (then h = rate * dt).
    h = jnp.maximum(jnp.ones((), dtype), jnp.abs(rate) * dt)
    c = dt / h
    if tail == "matern":
        F_unit = _matern_drift_unit(n, rate * c)
    else:
        F_unit = _chain_drift(n, dtype).at[-1, -1].set(-rate * c)
    A_unit, Q_unit = _discretise_unit(F_unit, h)
    shift, total = _index_sums(n, dtype)
    A = A_unit * c**shift
    if tail == "matern":
        # q c^(2n-1-i-j) = scale rate^(i+j) (rate c)^(2n-1-i-j), with rate * c <= 1.
        Q = scale * Q_unit * rate**total * (rate * c) ** ((2 * n - 1) - total)
    else:
        Q = scale * Q_unit * c ** ((2 * n - 1) - total)
    return A, Q


def _unit_matern_lyapunov(p: int) -> np.ndarray:
    """Solve ``F P + P F^T + e e^T = 0`` for the companion ``F`` of ``(s + 1)^(p+1)``.

    A Kronecker-vec linear solve of size ``(p+1)^2`` in float64 numpy: ``p`` is static, so
    this is a constant at trace time.
    """
    n = p + 1
    F = np.eye(n, k=1)
    F[-1, :] = [-math.comb(n, k) for k in range(n)]
    eye = np.eye(n)
    K = np.kron(F, eye) + np.kron(eye, F)  # row-major vec(F P + P F^T)
    rhs = np.zeros(n * n)
    rhs[-1] = -1.0
    P = np.linalg.solve(K, rhs).reshape(n, n)
    return 0.5 * (P + P.T)


def _stack(A1: Array, Q1: Array, dim: int, order: str) -> tuple[Array, Array]:
    eye = jnp.eye(dim, dtype=A1.dtype)
    if order == "blocked":
        return jnp.kron(A1, eye), jnp.kron(Q1, eye)
    return jnp.kron(eye, A1), jnp.kron(eye, Q1)


@functools.partial(jax.jit, static_argnames=("nu", "tail", "dim", "order", "dtype"))
def _transition(
    dt: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    *,
    nu: int,
    tail: str,
    dim: int,
    order: str,
    dtype: jnp.dtype,
) -> tuple[Array, Array]:
    """Jitted core of the public priors: one compilation per static configuration.

    ``tail="iou"``: ``a`` is the decay rate of the top derivative (0 for the integrated Wiener
    process) and ``b`` the spectral density. ``tail="matern"``: ``a`` is the lengthscale and
    ``b`` the variance.
    """
    dt = jnp.asarray(dt, dtype)
    a = jnp.asarray(a, dtype)
    b = jnp.asarray(b, dtype)
    if tail == "matern":
        rate = jnp.sqrt(jnp.asarray(2 * nu + 1, dtype)) / a
        scale = b * _matern_constant(nu)
    else:
        rate, scale = a, b
    A1, Q1 = _integrator_chain(nu, dt, rate, scale, tail)
    return _stack(A1, Q1, dim, order)


@functools.partial(jax.jit, static_argnames=("p", "dim", "order", "dtype"))
def _stationary(
    lengthscale: ArrayLike, variance: ArrayLike, *, p: int, dim: int, order: str, dtype: jnp.dtype
) -> Array:
    """Jitted core of :func:`matern_stationary_cov`."""
    lam = jnp.sqrt(jnp.asarray(2 * p + 1, dtype)) / jnp.asarray(lengthscale, dtype)
    scale = jnp.asarray(variance, dtype) * _matern_constant(p)
    # In the time unit 1 / lam the drift is the fixed companion matrix of (s + 1)^(p+1);
    # its stationary covariance for unit noise is a constant, then P_ij scales by lam^(i+j).
    _, total = _index_sums(p + 1, dtype)
    P1 = scale * jnp.asarray(_unit_matern_lyapunov(p), dtype) * lam**total
    _, P = _stack(P1, P1, dim, order)
    return P


# ---------------------------------------------------------------------------------------------
# Public priors
# ---------------------------------------------------------------------------------------------


def iwp(
    num_derivatives: int,
    dt: ArrayLike,
    *,
    diffusion: ArrayLike = 1.0,
    dim: int = 1,
    order: str = "blocked",
) -> tuple[Array, Array]:
    r"""Transition of the ``num_derivatives``-times integrated Wiener process.

    The state is :math:`(f, f', \dots, f^{(\nu)})` with :math:`\nu` = ``num_derivatives``;
    :math:`f^{(\nu)}` is a Wiener process with spectral density ``diffusion``
    (:math:`F` has ones on the superdiagonal, :math:`L = e_\nu`). For ``num_derivatives=0``
    this is a random walk. The exact transition has the closed forms (0-based ``i, j``)

    .. math::

        A_{ij} = \frac{\Delta t^{j-i}}{(j-i)!} \; (j \ge i), \qquad
        Q_{ij} = \sigma^2 \frac{\Delta t^{2\nu+1-i-j}}{(2\nu+1-i-j)\,(\nu-i)!\,(\nu-j)!},

    which the Van Loan computation reproduces to round-off.

    Args:
        num_derivatives: number of derivatives :math:`\nu \ge 0` in the state.
        dt: step length, a positive scalar.
        diffusion: spectral density :math:`\sigma^2` of the driving white noise, scalar.
        dim: number of independent copies stacked into the state, ``>= 1``.
        order: ``"blocked"`` (all values, then all first derivatives, ...) or
            ``"interleaved"`` (copy by copy).

    Returns:
        ``(A, Q)``: transition matrix ``[D, D]`` and process-noise covariance ``[D, D]``,
        ``D = (num_derivatives + 1) * dim``.

    Raises:
        ValueError: for a negative or non-int ``num_derivatives``, ``dim < 1``, an unknown
            ``order``, or a concrete ``dt <= 0``.

    References:
        S. Sarkka and A. Solin, *Applied Stochastic Differential Equations*, 2019, ch. 6.
    """
    nu = check_int(num_derivatives, "num_derivatives", minimum=0)
    dim = check_int(dim, "dim")
    order = _check_order(order)
    _check_scalar(dt, "dt", sign="positive")
    _check_scalar(diffusion, "diffusion", sign="nonnegative")
    dtype = _float_dtype(dt, diffusion)
    dt, rate, diffusion = (_as_dtype(x, dtype) for x in (dt, 0.0, diffusion))
    return _transition(dt, rate, diffusion, nu=nu, tail="iou", dim=dim, order=order, dtype=dtype)


def ioup(
    num_derivatives: int,
    dt: ArrayLike,
    *,
    drift: ArrayLike,
    diffusion: ArrayLike = 1.0,
    dim: int = 1,
    order: str = "blocked",
) -> tuple[Array, Array]:
    r"""Transition of the ``num_derivatives``-times integrated Ornstein-Uhlenbeck process.

    As :func:`iwp`, but the highest derivative mean-reverts:
    :math:`\mathrm{d}f^{(\nu)} = -\theta f^{(\nu)}\,\mathrm{d}t + \mathrm{d}W` with
    :math:`\theta` = ``drift`` (so :math:`F_{\nu\nu} = -\theta`). ``drift -> 0`` recovers
    :func:`iwp`; ``num_derivatives=0`` is the Ornstein-Uhlenbeck process.

    Args:
        num_derivatives: number of derivatives :math:`\nu \ge 0` in the state.
        dt: step length, a positive scalar.
        drift: mean-reversion rate :math:`\theta` of the highest derivative, scalar.
        diffusion: spectral density of the driving white noise, scalar.
        dim: number of independent copies stacked into the state, ``>= 1``.
        order: ``"blocked"`` or ``"interleaved"`` (see :func:`iwp`).

    Returns:
        ``(A, Q)``: transition matrix ``[D, D]`` and process-noise covariance ``[D, D]``,
        ``D = (num_derivatives + 1) * dim``.

    Raises:
        ValueError: as :func:`iwp`.

    References:
        S. Sarkka and A. Solin, *Applied Stochastic Differential Equations*, 2019, ch. 6.
    """
    nu = check_int(num_derivatives, "num_derivatives", minimum=0)
    dim = check_int(dim, "dim")
    order = _check_order(order)
    _check_scalar(dt, "dt", sign="positive")
    _check_scalar(drift, "drift")
    _check_scalar(diffusion, "diffusion", sign="nonnegative")
    dtype = _float_dtype(dt, drift, diffusion)
    dt, drift, diffusion = (_as_dtype(x, dtype) for x in (dt, drift, diffusion))
    return _transition(dt, drift, diffusion, nu=nu, tail="iou", dim=dim, order=order, dtype=dtype)


def matern(
    num_derivatives: int,
    dt: ArrayLike,
    *,
    lengthscale: ArrayLike,
    variance: ArrayLike = 1.0,
    dim: int = 1,
    order: str = "blocked",
) -> tuple[Array, Array]:
    r"""Transition of a Matern process with :math:`\nu` = ``num_derivatives`` + 1/2.

    The Matern covariance :math:`k(\tau) = \sigma^2 \frac{2^{1-\nu}}{\Gamma(\nu)}
    (\lambda|\tau|)^\nu K_\nu(\lambda|\tau|)`, :math:`\lambda = \sqrt{2\nu}/\ell`, is the
    covariance of the first state of an SDE in companion form: :math:`F` has ones on the
    superdiagonal and last row :math:`-\binom{p+1}{k}\lambda^{p+1-k}`, :math:`k = 0..p`
    (characteristic polynomial :math:`(s+\lambda)^{p+1}`, :math:`p` = ``num_derivatives``),
    :math:`L = e_p`, and spectral density
    :math:`q = \sigma^2 \frac{(p!)^2}{(2p)!} (2\lambda)^{2p+1}`, chosen so that the
    stationary variance of :math:`f` is ``variance``. ``num_derivatives=0`` is the
    Ornstein-Uhlenbeck process (Matern-1/2), ``1`` Matern-3/2, ``2`` Matern-5/2.

    Started from :func:`matern_stationary_cov` ``P``, the chain stays stationary:
    ``Q = P - A P A^T``.

    Args:
        num_derivatives: :math:`p \ge 0`; the state holds :math:`f` and ``p`` derivatives.
        dt: step length, a positive scalar.
        lengthscale: :math:`\ell > 0`, scalar.
        variance: stationary variance :math:`\sigma^2` of :math:`f`, scalar.
        dim: number of independent copies stacked into the state, ``>= 1``.
        order: ``"blocked"`` or ``"interleaved"`` (see :func:`iwp`).

    Returns:
        ``(A, Q)``: transition matrix ``[D, D]`` and process-noise covariance ``[D, D]``,
        ``D = (num_derivatives + 1) * dim``.

    Raises:
        ValueError: as :func:`iwp`, and for a concrete ``lengthscale <= 0``.

    References:
        J. Hartikainen and S. Sarkka, "Kalman filtering and smoothing solutions to temporal
        Gaussian process regression models", IEEE MLSP, 2010.
        S. Sarkka and A. Solin, *Applied Stochastic Differential Equations*, 2019, ch. 6, 12.
    """
    p = check_int(num_derivatives, "num_derivatives", minimum=0)
    dim = check_int(dim, "dim")
    order = _check_order(order)
    _check_scalar(dt, "dt", sign="positive")
    _check_scalar(lengthscale, "lengthscale", sign="positive")
    _check_scalar(variance, "variance", sign="nonnegative")
    dtype = _float_dtype(dt, lengthscale, variance)
    dt, lengthscale, variance = (_as_dtype(x, dtype) for x in (dt, lengthscale, variance))
    return _transition(
        dt, lengthscale, variance, nu=p, tail="matern", dim=dim, order=order, dtype=dtype
    )


def matern_stationary_cov(
    num_derivatives: int,
    *,
    lengthscale: ArrayLike,
    variance: ArrayLike = 1.0,
    dim: int = 1,
    order: str = "blocked",
) -> Array:
    r"""Stationary covariance of the Matern state of :func:`matern`.

    Solves the continuous Lyapunov equation :math:`F P + P F^\top + L q L^\top = 0` as a
    linear system in :math:`\mathrm{vec}(P)` (size ``(num_derivatives + 1)**2``; meant for
    the small orders used in practice). ``P[0, 0]`` equals ``variance``; use ``P`` as the
    initial covariance ``P0`` of a stationary prior.

    Args:
        num_derivatives: :math:`p \ge 0`, as in :func:`matern`.
        lengthscale: :math:`\ell > 0`, scalar.
        variance: stationary variance :math:`\sigma^2` of :math:`f`, scalar.
        dim: number of independent copies stacked into the state, ``>= 1``.
        order: ``"blocked"`` or ``"interleaved"`` (see :func:`iwp`).

    Returns:
        Stationary covariance ``[D, D]``, ``D = (num_derivatives + 1) * dim``.

    Raises:
        ValueError: for a bad ``num_derivatives``, ``dim`` or ``order``, or a concrete
            ``lengthscale <= 0``.

    References:
        J. Hartikainen and S. Sarkka, "Kalman filtering and smoothing solutions to temporal
        Gaussian process regression models", IEEE MLSP, 2010.
    """
    p = check_int(num_derivatives, "num_derivatives", minimum=0)
    dim = check_int(dim, "dim")
    order = _check_order(order)
    _check_scalar(lengthscale, "lengthscale", sign="positive")
    _check_scalar(variance, "variance", sign="nonnegative")
    dtype = _float_dtype(lengthscale, variance)
    lengthscale, variance = (_as_dtype(x, dtype) for x in (lengthscale, variance))
    return _stationary(lengthscale, variance, p=p, dim=dim, order=order, dtype=dtype)
