"""Adapters that put each implementation behind one interface for the benchmark worker.

``prepare(impl, op, schedule, workload, dtype)`` returns a :class:`Prepared`: a function and
its arguments (JAX functions are jitted and compiled ahead of time by the worker, so that
compile time is measured apart from the steady-state runs), a function that reads the
log-likelihood from the output, and notes. An implementation that is not installed, or an
operation it does not offer, raises :class:`Unavailable` with the reason, which the report
shows instead of a number.

Implementations (``impl``):

- ``jaxssm``: this library, through its public names only (``ssm.kalman_filter``,
  ``ssm.rts_smoother``, ``ssm.e_step``, ``ssm.m_step``, ``ssm.fit_em``, ``ssm.fit_mle``), in
  three schedules: ``sequential`` (``steady_state=False``: the full covariance recursion, the
  same work as the peers), ``steady`` (``steady_state=True``: the steady-state fast path once
  the covariances have converged; the default ``steady_state=None`` is the same for
  N >= 2048) and ``parallel`` (``method="parallel"``).
- ``dynamax``: ``lgssm_filter`` / ``lgssm_smoother`` (sequential), the same names from
  ``dynamax.linear_gaussian_ssm.parallel_inference`` (parallel), and one iteration of
  ``LinearGaussianSSM.fit_em`` (which re-estimates every parameter, biases included).
- ``cuthbert``: ``cuthbert.gaussian.kalman`` filter and smoother through ``cuthbert.filter`` /
  ``cuthbert.smoother`` with ``parallel=False/True`` (square-root form).
- ``pykalman``: ``KalmanFilter.loglikelihood`` / ``filter`` / ``smooth`` / ``em`` on the first
  ``PYKALMAN_SUBSET`` steps; times are extrapolated linearly to N and labelled so.
- ``numpy``: a plain Python loop over time with numpy/scipy, written like the exercise's
  (``cho_factor``/``cho_solve``, explicit per-step predict/update/smooth functions), with
  the exercise's defects fixed (no jitter, correct predicted moments, current ``A``).

Conventions: dynamax and pykalman observe their first state, so they get the prior of our
``x_1`` (:func:`workloads.first_observed_prior`); cuthbert and the numpy loop use jaxssm's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from workloads import Model, Workload, first_observed_prior

PYKALMAN_SUBSET = 4_448
ALL_OPS = ("filter", "smoother", "e_step", "em_iter", "em_100", "mle_step")
EM_ITERS = 100


class Unavailable(Exception):
    """This implementation/operation cannot be run here; the message says why."""


class Prepared(NamedTuple):
    """What the worker times.

    Attributes:
        fn: for ``is_jax``, a function of ``args`` that the worker jits; else a plain callable.
        args: its arguments.
        is_jax: JAX (compile + steady-state runs) or plain Python (no compile step).
        loglik: reads ``log p(y_1:N)`` from the output (``None`` when the op has none).
        note: a label for the report (convention mapping, extrapolation, ...).
        scale: factor applied to measured times (pykalman's extrapolation; 1 otherwise).
        num_steps: the N actually run (differs from the workload's N only for a subset).
        long: one timed run is enough (the op already loops, e.g. 100 EM iterations).
    """

    fn: Callable
    args: tuple
    is_jax: bool
    loglik: Callable[[Any], float] | None
    note: str = ""
    scale: float = 1.0
    num_steps: int | None = None
    long: bool = False


def _np_dtype(dtype: str):
    return np.float64 if dtype == "float64" else np.float32


# ------------------------------------------------------------------------------------------
# jaxssm
# ------------------------------------------------------------------------------------------


def _jaxssm(op: str, schedule: str, w: Workload, dtype: str) -> Prepared:
    """jaxssm cells, through public names only. ``schedule``: ``"steady"`` (``steady_state=True``:
    the fast path, which is the default ``steady_state=None`` for N >= 2048), ``"sequential"``
    (the full covariance recursion, ``steady_state=False``) or ``"parallel"``."""
    import jax.numpy as jnp

    import jaxssm as ssm

    if schedule not in ("sequential", "steady", "parallel"):
        raise Unavailable(f"unknown schedule {schedule!r}")
    dt = _np_dtype(dtype)
    args = (ssm.LGSSM(*(jnp.asarray(x, dt) for x in w.model)), jnp.asarray(w.ys, dt))
    if schedule == "parallel":
        kw = {"method": "parallel"}
    else:
        kw = {"method": "sequential", "steady_state": schedule == "steady"}
    note = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    if op in ("filter", "smoother"):
        f = ssm.kalman_filter if op == "filter" else ssm.rts_smoother
        return Prepared(lambda p, y: f(p, y, **kw), args, True, lambda o: o.log_likelihood, note)
    if op == "e_step":
        return Prepared(lambda p, y: ssm.e_step(p, y, **kw), args, True, lambda o: o[1], note)
    if op == "em_iter":

        def one_iteration(p, y):
            stats, ll = ssm.e_step(p, y, **kw)
            return ssm.m_step(p, stats), ll

        note = "e_step + m_step, update=(A, Q); " + note
        return Prepared(one_iteration, args, True, lambda o: o[1], note)
    first_ll = lambda o: o[1].log_likelihoods[0]  # noqa: E731  (log p(y | theta_0))
    if op == "em_100":
        note = f"fit_em(num_iters={EM_ITERS}), update=(A, Q); " + note
        fit = lambda p, y: ssm.fit_em(p, y, num_iters=EM_ITERS, **kw)  # noqa: E731
        return Prepared(fit, args, True, first_ll, note, long=True)
    if op == "mle_step":
        import optax

        opt = optax.adam(1e-3)
        note = "fit_mle(optax.adam(1e-3), num_iters=1); " + note
        fit = lambda p, y: ssm.fit_mle(p, y, optimizer=opt, num_iters=1, **kw)  # noqa: E731
        return Prepared(fit, args, True, first_ll, note)
    raise Unavailable(f"jaxssm has no benchmark op {op!r}")


# ------------------------------------------------------------------------------------------
# dynamax
# ------------------------------------------------------------------------------------------


def _dynamax(op: str, schedule: str, w: Workload, dtype: str) -> Prepared:
    try:
        import jax.numpy as jnp
        from dynamax.linear_gaussian_ssm import inference as seq
        from dynamax.linear_gaussian_ssm import parallel_inference as par_inf
    except ImportError as e:
        raise Unavailable(f"dynamax not installed ({e})") from None
    dt = _np_dtype(dtype)
    m1, P1 = first_observed_prior(w.model)
    a = lambda x: jnp.asarray(x, dt)  # noqa: E731
    params = seq.make_lgssm_params(
        a(m1), a(P1), a(w.model.A), a(w.model.Q), a(w.model.H), a(w.model.R)
    )
    ys = a(w.ys)
    note = "first state observed: prior of x_1 passed as (A m0, A P0 A^T + Q)"
    mod = par_inf if schedule == "parallel" else seq
    if op == "filter":
        return Prepared(mod.lgssm_filter, (params, ys), True, lambda o: o.marginal_loglik, note)
    if op == "smoother":
        return Prepared(mod.lgssm_smoother, (params, ys), True, lambda o: o.marginal_loglik, note)
    if op == "em_iter":
        if schedule == "parallel":
            raise Unavailable("dynamax's fit_em has no parallel option")
        from dynamax.linear_gaussian_ssm import LinearGaussianSSM

        D, Dy = w.model.A.shape[0], w.model.H.shape[0]
        model = LinearGaussianSSM(D, Dy)
        init, props = model.initialize(
            initial_mean=a(m1),
            initial_covariance=a(P1),
            dynamics_weights=a(w.model.A),
            dynamics_bias=a(np.zeros(D)),
            dynamics_covariance=a(w.model.Q),
            emission_weights=a(w.model.H),
            emission_bias=a(np.zeros(Dy)),
            emission_covariance=a(w.model.R),
        )
        return Prepared(
            lambda p, y: model.fit_em(p, props, y, num_iters=1, verbose=False),
            (init, ys),
            True,
            lambda o: o[1][0],
            note + "; fit_em(num_iters=1) re-estimates all parameters (biases too)",
        )
    raise Unavailable(f"not benchmarked for dynamax ({op})")


# ------------------------------------------------------------------------------------------
# cuthbert
# ------------------------------------------------------------------------------------------


def _cuthbert(op: str, schedule: str, w: Workload, dtype: str) -> Prepared:
    try:
        import cuthbert
        import jax.numpy as jnp
        from cuthbert.gaussian import kalman
    except ImportError as e:
        raise Unavailable(f"cuthbert not installed ({e})") from None
    if op not in ("filter", "smoother"):
        raise Unavailable(f"not benchmarked for cuthbert ({op})")
    dt = _np_dtype(dtype)
    params = tuple(jnp.asarray(x, dt) for x in w.model)
    ys = jnp.asarray(w.ys, dt)
    parallel = schedule == "parallel"
    smooth = op == "smoother"

    def run(p, y):
        m0, P0, A, Q, H, R = p
        cQ, cR = jnp.linalg.cholesky(Q), jnp.linalg.cholesky(R)
        c, d = jnp.zeros(A.shape[0], A.dtype), jnp.zeros(H.shape[0], H.dtype)
        get_dyn = lambda _: (A, c, cQ)  # noqa: E731
        get_obs = lambda yt: (H, d, cR, yt)  # noqa: E731
        filt = kalman.build_filter(m0, jnp.linalg.cholesky(P0), get_dyn, get_obs)
        states = cuthbert.filter(filt, y, filt.init_prepare(), parallel=parallel)
        ll = states.log_normalizing_constant[-1]
        if not smooth:
            return states, ll
        sm = cuthbert.smoother(kalman.build_smoother(get_dyn), states, parallel=parallel)
        return sm, ll

    return Prepared(run, (params, ys), True, lambda o: o[1], "square-root (Cholesky) form")


# ------------------------------------------------------------------------------------------
# pykalman (subset, extrapolated)
# ------------------------------------------------------------------------------------------


def _pykalman(op: str, schedule: str, w: Workload, dtype: str) -> Prepared:
    try:
        from pykalman import KalmanFilter
    except ImportError as e:
        raise Unavailable(f"pykalman not installed ({e})") from None
    if schedule != "sequential" or dtype != "float64":
        raise Unavailable("pykalman is sequential numpy float64 only")
    N = w.ys.shape[0]
    n = min(N, PYKALMAN_SUBSET)
    ys = w.ys[:n]
    m1, P1 = first_observed_prior(w.model)

    def make():
        return KalmanFilter(
            transition_matrices=w.model.A,
            observation_matrices=w.model.H,
            transition_covariance=w.model.Q,
            observation_covariance=w.model.R,
            transition_offsets=np.zeros(w.model.A.shape[0]),
            observation_offsets=np.zeros(w.model.H.shape[0]),
            initial_state_mean=m1,
            initial_state_covariance=P1,
        )

    kf = make()
    scale = N / n
    note = "first state observed: prior of x_1 passed" + (
        f"; run on the first {n} steps, time extrapolated x{scale:.2f} to N = {N}" if n < N else ""
    )
    if op == "filter":
        # loglikelihood() runs the filter and sums the predictive densities.
        return Prepared(lambda: kf.loglikelihood(ys), (), False, lambda o: o, note, scale, n)
    if op == "smoother":
        return Prepared(lambda: kf.smooth(ys), (), False, None, note, scale, n)
    if op == "em_iter":

        def em():
            return make().em(ys, n_iter=1, em_vars=["transition_matrices", "transition_covariance"])

        return Prepared(em, (), False, None, note + "; em(n_iter=1, A and Q)", scale, n)
    raise Unavailable(f"not benchmarked for pykalman ({op})")


# ------------------------------------------------------------------------------------------
# plain numpy/scipy loop, written like the exercise's
# ------------------------------------------------------------------------------------------


def _sym(M):
    return 0.5 * (M + M.T)


def np_predict(m, P, A, Q):
    return A @ m, _sym(A @ P @ A.T + Q)


def np_update(m_pred, P_pred, H, R, y):
    import scipy.linalg as sla

    S = _sym(H @ P_pred @ H.T + R)
    cf = sla.cho_factor(S)
    cross = P_pred @ H.T
    K = sla.cho_solve(cf, cross.T).T
    r = y - H @ m_pred
    z = sla.cho_solve(cf, r)
    logdet = 2.0 * np.sum(np.log(np.abs(np.diag(cf[0]))))
    ll = -0.5 * (r @ z + logdet + y.shape[0] * np.log(2.0 * np.pi))
    return m_pred + K @ r, _sym(P_pred - K @ S @ K.T), ll


def np_filter(model: Model, Y: np.ndarray):
    """Exercise-style filter loop; returns filtered and predicted moments and log p(y)."""
    m0, P0, A, Q, H, R = model
    N, D = Y.shape[0], A.shape[0]
    means, covs = np.empty((N + 1, D)), np.empty((N + 1, D, D))
    pmeans, pcovs = np.empty((N, D)), np.empty((N, D, D))
    means[0], covs[0] = m0, P0
    m, P, total = m0, P0, 0.0
    for k in range(N):
        mp, Pp = np_predict(m, P, A, Q)
        m, P, ll = np_update(mp, Pp, H, R, Y[k])
        pmeans[k], pcovs[k], means[k + 1], covs[k + 1] = mp, Pp, m, P
        total += ll
    return means, covs, pmeans, pcovs, total


def np_smoother_step(filt_m, filt_P, pred_m, pred_P, smooth_m, smooth_P, A):
    import scipy.linalg as sla

    G = sla.cho_solve(sla.cho_factor(pred_P, lower=True), A @ filt_P).T
    return filt_m + G @ (smooth_m - pred_m), _sym(filt_P + G @ (smooth_P - pred_P) @ G.T), G


def np_smoother(model: Model, Y: np.ndarray):
    means, covs, pmeans, pcovs, ll = np_filter(model, Y)
    N = Y.shape[0]
    sm, sc, gains = means.copy(), covs.copy(), np.empty_like(pcovs)
    for k in range(N - 1, -1, -1):
        sm[k], sc[k], gains[k] = np_smoother_step(
            means[k], covs[k], pmeans[k], pcovs[k], sm[k + 1], sc[k + 1], model.A
        )
    return sm, sc, gains, ll


def np_em_iteration(model: Model, Y: np.ndarray):
    """One EM iteration for (A, Q): E-step statistics as the exercise sums them, M-step."""
    import scipy.linalg as sla

    sm, sc, G, ll = np_smoother(model, Y)
    N = Y.shape[0]
    Sigma = sum(sc[k] + np.outer(sm[k], sm[k]) for k in range(1, N + 1)) / N
    Phi = sum(sc[k - 1] + np.outer(sm[k - 1], sm[k - 1]) for k in range(1, N + 1)) / N
    C = sum(sc[k] @ G[k - 1].T + np.outer(sm[k], sm[k - 1]) for k in range(1, N + 1)) / N
    A = sla.cho_solve(sla.cho_factor(_sym(Phi)), C.T).T
    Q = _sym(Sigma - C @ A.T - A @ C.T + A @ Phi @ A.T)
    return model._replace(A=A, Q=Q), ll


def _numpy(op: str, schedule: str, w: Workload, dtype: str) -> Prepared:
    if schedule != "sequential" or dtype != "float64":
        raise Unavailable("the numpy loop is sequential float64 only")
    note = "Python loop over time, numpy/scipy (exercise style)"
    if op == "filter":
        return Prepared(lambda: np_filter(w.model, w.ys), (), False, lambda o: o[-1], note)
    if op == "smoother":
        return Prepared(lambda: np_smoother(w.model, w.ys), (), False, lambda o: o[-1], note)
    if op == "em_iter":
        return Prepared(lambda: np_em_iteration(w.model, w.ys), (), False, lambda o: o[1], note)
    raise Unavailable(f"not benchmarked for the numpy loop ({op})")


ADAPTERS = {
    "jaxssm": _jaxssm,
    "dynamax": _dynamax,
    "cuthbert": _cuthbert,
    "pykalman": _pykalman,
    "numpy": _numpy,
}


def prepare(impl: str, op: str, schedule: str, w: Workload, dtype: str) -> Prepared:
    """The :class:`Prepared` cell for ``impl``; raises :class:`Unavailable` when it cannot run."""
    if impl not in ADAPTERS:
        raise Unavailable(f"unknown implementation {impl!r}")
    return ADAPTERS[impl](op, schedule, w, dtype)
