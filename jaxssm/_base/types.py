"""The values jaxssm passes around: parameters, results, statistics and diagnostics.

Every type is a :class:`typing.NamedTuple`, hence a JAX pytree, with named fields. This is
the bottom layer of the package: it imports nothing from jaxssm.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax
from jax.typing import ArrayLike

__all__ = [
    "LGSSM",
    "PARAMETER_NAMES",
    "OPTIONAL_NAMES",
    "TIME_VARYING_NAMES",
    "BASE_NDIM",
    "FilterResult",
    "SmootherResult",
    "CovFactors",
    "SufficientStats",
    "EMStatus",
    "EMInfo",
    "MLEInfo",
    "MLEStatus",
    "UnconstrainedParams",
    "SteadyInfo",
    "ScheduleInfo",
]


class LGSSM(NamedTuple):
    r"""Parameters of a linear-Gaussian state-space model (a pytree).

    .. math::

        x_0 \sim N(m_0, P_0), \quad
        x_k = A x_{k-1} + B u_k + b + q_k,\ q_k \sim N(0, Q), \quad
        y_k = H x_k + D u_k + d + r_k,\ r_k \sim N(0, R), \quad k = 1..N.

    ``x_0`` is not observed; ``ys`` holds ``y_1..y_N`` and ``inputs`` (where the model has
    ``B`` or ``D``) holds ``u_1..u_N``, ``[N, Du]``.

    **Time-varying matrices.** Any of ``A, B, b, Q, H, D, d, R`` may carry a leading axis
    of length ``N``: entry ``k - 1`` applies to step ``k`` (``A[k-1]`` maps ``x_{k-1}`` to
    ``x_k``). Such a model runs on the sequential and parallel schedules; the steady-state
    fast path is for time-invariant models and is skipped for it (statically).

    Attributes:
        m0: initial mean, ``[D]``.
        P0: initial covariance, ``[D, D]``, symmetric positive semi-definite.
        A: transition matrix, ``[D, D]`` (or ``[N, D, D]``).
        Q: process-noise covariance, ``[D, D]`` (or ``[N, D, D]``), symmetric PSD.
        H: observation matrix, ``[Dy, D]`` (or ``[N, Dy, D]``).
        R: observation-noise covariance, ``[Dy, Dy]`` (or ``[N, Dy, Dy]``), symmetric PSD.
        B: input gain of the state, ``[D, Du]`` (or ``[N, D, Du]``); ``None``: no term.
        b: state offset, ``[D]`` (or ``[N, D]``); ``None``: zero.
        D: input gain of the observation, ``[Dy, Du]`` (or ``[N, Dy, Du]``); ``None``: no term.
        d: observation offset, ``[Dy]`` (or ``[N, Dy]``); ``None``: zero.

    The optional fields cost nothing when absent: a model without them compiles to the
    program of the plain model.
    """

    m0: ArrayLike
    P0: ArrayLike
    A: ArrayLike
    Q: ArrayLike
    H: ArrayLike
    R: ArrayLike
    B: ArrayLike | None = None
    b: ArrayLike | None = None
    D: ArrayLike | None = None
    d: ArrayLike | None = None


#: The fields of :class:`LGSSM`, in order; the names that ``update=`` arguments accept.
PARAMETER_NAMES: tuple[str, ...] = LGSSM._fields

#: The optional fields of :class:`LGSSM` (``None``: absent, i.e. zero).
OPTIONAL_NAMES: tuple[str, ...] = ("B", "b", "D", "d")

#: The fields that may carry a leading time axis ``[N]``.
TIME_VARYING_NAMES: tuple[str, ...] = ("A", "B", "b", "Q", "H", "D", "d", "R")

#: The number of dimensions of each field of a time-invariant model.
BASE_NDIM: dict[str, int] = {
    "m0": 1,
    "P0": 2,
    "A": 2,
    "Q": 2,
    "H": 2,
    "R": 2,
    "B": 2,
    "b": 1,
    "D": 2,
    "d": 1,
}


class FilterResult(NamedTuple):
    """Output of a Kalman filter over ``k = 0..N``.

    Attributes:
        means: filtered means ``E[x_k | y_1:k]``, ``[N+1, D]``; row 0 is ``m0``.
        covs: filtered covariances, ``[N+1, D, D]``; row 0 is ``P0``.
        pred_means: predicted means ``E[x_k | y_1:k-1]`` for ``k = 1..N``, ``[N, D]``.
        pred_covs: predicted covariances for ``k = 1..N``, ``[N, D, D]``.
        log_likelihood: ``log p(y_1:N)``, a scalar.
    """

    means: jax.Array
    covs: jax.Array
    pred_means: jax.Array
    pred_covs: jax.Array
    log_likelihood: jax.Array


class SmootherResult(NamedTuple):
    """Output of a smoother over ``k = 0..N``.

    Attributes:
        means: smoothed means ``E[x_k | y_1:N]``, ``[N+1, D]``.
        covs: smoothed covariances, ``[N+1, D, D]``.
        gains: smoother gains ``G_k``, ``k = 0..N-1``, ``[N, D, D]``, with
            ``m_k^s = m_k + G_k (m_{k+1}^s - A m_k)``. The lag-one cross-covariance is
            ``Cov(x_{k+1}, x_k | y_1:N) = covs[k+1] @ gains[k].T``.
        log_likelihood: ``log p(y_1:N)``, a scalar.
    """

    means: jax.Array
    covs: jax.Array
    gains: jax.Array
    log_likelihood: jax.Array


class CovFactors(NamedTuple):
    """Lower-triangular factors ``L`` (``P = L L^T``) of a result's covariances (``form="sqrt"``).

    Attributes:
        covs: factors of ``covs``, ``[N+1, D, D]``.
        pred_covs: factors of a :class:`FilterResult`'s ``pred_covs``, ``[N, D, D]``;
            ``None`` for a smoother.
    """

    covs: jax.Array
    pred_covs: jax.Array | None


class SufficientStats(NamedTuple):
    r"""Expected sufficient statistics of the complete-data log-likelihood, normalised by N.

    With smoothed moments ``m_k^s, P_k^s`` and smoother gains ``G_k``:

    .. math::

        \Sigma = \tfrac1N \sum_{k=1}^N (P_k^s + m_k^s m_k^{sT}), \quad
        \Phi = \tfrac1N \sum_{k=1}^N (P_{k-1}^s + m_{k-1}^s m_{k-1}^{sT}),

        B = \tfrac1N \sum_{k=1}^N y_k m_k^{sT}, \quad
        C = \tfrac1N \sum_{k=1}^N (P_k^s G_{k-1}^T + m_k^s m_{k-1}^{sT}), \quad
        D = \tfrac1N \sum_{k=1}^N y_k y_k^T.

    With inputs or offsets in the model (any of ``B, b, D, d``, or ``inputs``), the
    regressions of the M-step run on ``[x_{k-1}; v_k]`` and ``[x_k; v_k]`` with the augmented
    input ``v_k = [u_k; 1]`` (``[1]`` without inputs), and four more sums are kept:
    ``U = (1/N) sum v_k v_k^T``, ``XU = (1/N) sum m_k^s v_k^T``,
    ``XpU = (1/N) sum m_{k-1}^s v_k^T`` and ``YU = (1/N) sum y_k v_k^T``. They are ``None``
    for the plain model.

    Attributes:
        Sigma: ``[D, D]``.
        Phi: ``[D, D]``.
        B: ``[Dy, D]``.
        C: ``[D, D]``.
        D: ``[Dy, Dy]``.
        m0_smoothed: ``E[x_0 | y]``, ``[D]`` (for a batch: the average over sequences).
        P0_smoothed: ``Cov[x_0 | y]``, ``[D, D]`` (for a batch: the average over sequences of
            ``P0s_b + (m0s_b - m0_smoothed)(m0s_b - m0_smoothed)^T``, so that the M-step's
            ``P0 = P0_smoothed`` when ``m0 = m0_smoothed``).
        num_steps: the number of steps N summed over (for a batch: B * N), an int32 scalar.
        U: ``[Du + 1, Du + 1]`` or ``None``.
        XU: ``[D, Du + 1]`` or ``None``.
        XpU: ``[D, Du + 1]`` or ``None``.
        YU: ``[Dy, Du + 1]`` or ``None``.
    """

    Sigma: jax.Array
    Phi: jax.Array
    B: jax.Array
    C: jax.Array
    D: jax.Array
    m0_smoothed: jax.Array
    P0_smoothed: jax.Array
    num_steps: jax.Array
    U: jax.Array | None = None
    XU: jax.Array | None = None
    XpU: jax.Array | None = None
    YU: jax.Array | None = None


class ScheduleInfo(NamedTuple):
    r"""Which path of the schedule computed a result, and where its covariances settled.

    On the steady-state schedule (``steady_state=True``, or ``None`` for ``N >= 2048``, on a
    time-invariant model) the covariances of the filter and smoother do not depend on the
    data and converge to fixed points; once they have, each step costs ``O(D^2)`` instead of
    ``O(D^3)``. The schedule computes the transients up to a static bound ``T``
    (``num_transient``) and then takes one of two paths:

    * the **fast path** (``fast_path`` true) when the covariances settled within ``T``
      steps and every entry of ``ys`` is observed: full steps in the transients, steady
      steps elsewhere;
    * the **gap-aware recursion** (``fast_path`` false, ``num_transient > 0``) otherwise:
      full steps at the start, at each missing entry and after it until the covariance is
      back at its fixed point, steady steps elsewhere (full steps everywhere when the
      covariances did not settle). With ``method="parallel"`` this fallback is the full
      associative scan.

    Every other schedule runs the **full recursion** (``num_transient == 0``): the
    sequential or parallel schedule, a short series, a time-varying model, a time-sharded
    series.

    Attributes:
        fast_path: whether the fast path computed the result, bool. For a batch, whether
            it did for every sequence.
        filter_transient: the last step at which the filter covariance still changed by
            more than the tolerance (``<= T``), int32; ``N`` where the full recursion ran
            (every step a full step).
        smoother_transient: the same for the smoother covariance, counted backward from
            ``k = N``, int32; ``N`` where the full recursion ran; ``0`` for a result that
            runs no smoother (a filter, a log-likelihood). For a batch, the largest over
            sequences (also for ``filter_transient``).
        num_transient: the static bound ``T`` on each transient, int32; 0 where the
            schedule has no fast path.
    """

    fast_path: jax.Array
    filter_transient: jax.Array
    smoother_transient: jax.Array
    num_transient: jax.Array


class EMStatus(enum.IntEnum):
    """Why :func:`~jaxssm.fit_em` stopped (the value of ``EMInfo.status``).

    An :class:`enum.IntEnum`, so ``int(info.status) == EMStatus.CONVERGED`` and
    ``info.status == EMStatus.CONVERGED`` (an array comparison) both work.
    """

    #: all ``num_iters`` iterations ran.
    MAX_ITERS = 0
    #: the relative improvement fell below ``tol``.
    CONVERGED = 1
    #: the log-likelihood fell by more than round-off (or became non-finite); the last
    #: parameters before the fall are returned.
    DECREASED = 2


class EMInfo(NamedTuple):
    """What happened in :func:`~jaxssm.fit_em`.

    Attributes:
        log_likelihoods: ``[num_iters]``; entry ``i`` is ``log p(y | theta_i)`` with
            ``theta_0`` the initial parameters, NaN for iterations that did not run (after
            convergence or a decrease).
        log_likelihood: ``log p(y | params)`` of the returned parameters, a scalar.
        num_iters: the number of E-steps run in the loop (the entries of
            ``log_likelihoods`` that were filled; the rest are NaN), an int32 scalar.
        status: an :class:`EMStatus` value, an int32 scalar.
        decrease: the size of a decrease, ``log p(y | theta_best) - log p(y | theta_bad)``
            (``inf`` for a non-finite log-likelihood); ``0`` unless
            ``status == EMStatus.DECREASED``.
        schedule: the :class:`ScheduleInfo` of the last E-step the loop ran: which path of
            the schedule computed it (the steady-state fast path, the gap-aware recursion or
            the full recursion) and where its covariances settled. ``None`` only in an
            ``EMInfo`` built by hand.
    """

    log_likelihoods: jax.Array
    log_likelihood: jax.Array
    num_iters: jax.Array
    status: jax.Array
    decrease: jax.Array
    schedule: ScheduleInfo | None = None


class MLEStatus(enum.IntEnum):
    """Which iterate :func:`~jaxssm.fit_mle` returned (the value of ``MLEInfo.status``).

    An :class:`enum.IntEnum` with the codes of :class:`EMStatus` where they mean the same:
    ``info.status == MLEStatus.DECREASED`` works on the array.
    """

    #: all ``num_iters`` steps ran and the last iterate is returned (its log-likelihood is
    #: within round-off of the best seen, or above it).
    MAX_ITERS = 0
    #: the last iterate's log-likelihood fell below the best seen by more than round-off
    #: (a non-monotone optimiser such as Adam oscillating about the maximum); the best
    #: iterate is returned instead.
    DECREASED = 2
    #: the optimiser diverged: the last iterate's log-likelihood is not finite or below the
    #: start's by more than round-off (a step size too large, say); the best iterate is
    #: returned instead.
    DIVERGED = 3


class MLEInfo(NamedTuple):
    """What happened in :func:`~jaxssm.fit_mle`.

    Attributes:
        log_likelihoods: ``[num_iters]``; entry ``i`` is ``log p(y | theta_i)``, the
            log-likelihood *before* optimiser step ``i`` (entry 0 is the starting point's).
        log_likelihood: ``log p(y | params)`` of the returned parameters, a scalar.
        status: an :class:`MLEStatus` value, an int32 scalar (``0``, ``MAX_ITERS``, in an
            ``MLEInfo`` built by hand).
        decrease: ``log p(y | theta_best) - log p(y | theta_last)`` with ``theta_last`` the
            iterate after the last step (``inf`` when its log-likelihood is not finite);
            ``0`` when ``status == MLEStatus.MAX_ITERS``.
        best_iter: the index ``i`` of the returned iterate ``theta_i`` (``num_iters`` for
            the last one), an int32 scalar; ``None`` in an ``MLEInfo`` built by hand.
    """

    log_likelihoods: jax.Array
    log_likelihood: jax.Array
    status: jax.Array | int = 0
    decrease: jax.Array | float = 0.0
    best_iter: jax.Array | None = None


class UnconstrainedParams(NamedTuple):
    """Unconstrained coordinates of the free parameters of an :class:`LGSSM`.

    A pytree for optax: fields that are not optimised are ``None`` (empty subtrees), so an
    optimiser never sees them.

    Attributes:
        m0: ``[D]`` (the mean itself), or ``None`` when fixed.
        P0: ``[D (D + 1) / 2]`` lower-triangle entries of the Cholesky factor of ``P0``, with the
            diagonal through ``softplus^{-1}``; or ``None``.
        A: ``[D, D]`` (the matrix itself), or ``None``.
        Q: ``[D (D + 1) / 2]``, as ``P0``; or ``None``.
        H: ``[Dy, D]`` (the matrix itself), or ``None``.
        R: ``[Dy (Dy + 1) / 2]``, as ``P0``; or ``None``.
        B, b, D, d: the input gains and offsets themselves, or ``None``.
    """

    m0: jax.Array | None = None
    P0: jax.Array | None = None
    A: jax.Array | None = None
    Q: jax.Array | None = None
    H: jax.Array | None = None
    R: jax.Array | None = None
    B: jax.Array | None = None
    b: jax.Array | None = None
    D: jax.Array | None = None
    d: jax.Array | None = None


class SteadyInfo(NamedTuple):
    """Diagnostics of the steady-state fast path for one model and series length.

    Attributes:
        num_transient: the static bound ``T`` on each transient, a Python int (0: the series
            is too short for the fast path).
        filter_transient: the last step at which the filter covariance still changed by more
            than the tolerance (``<= T``), int32.
        smoother_transient: the same for the smoother covariance, counted backward from
            ``k = N`` (``<= T``), int32; ``T`` when the filter did not converge.
        converged: whether the fast path runs (True) or the full recursion (False), bool.
    """

    num_transient: int
    filter_transient: jax.Array
    smoother_transient: jax.Array
    converged: jax.Array
