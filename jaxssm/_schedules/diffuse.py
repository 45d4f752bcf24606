r"""Exact diffuse initialisation: the augmented Kalman filter and smoother.

``inf`` on the diagonal of ``P0`` marks a diffuse component of ``x_0`` (its row and column
otherwise zero; the rest of ``P0`` is the known part ``P_*``). With ``W`` the columns of the
identity at the diffuse components, the prior is

.. math::

    x_0 = m_0 + W \delta + \eta_0, \qquad \eta_0 \sim N(0, P_*), \qquad
    \delta \sim N(0, \kappa I_q), \quad \kappa \to \infty.

Everything here is the exact limit ``kappa -> inf``, computed without a large number, by the
augmented Kalman filter (de Jong 1991; Durbin and Koopman 2012, section 5.7): the covariance
recursion is the ordinary one started from ``P_*``, and the means carry ``q`` extra columns
``X_k`` (the filtered mean is ``a_k + X_k delta`` given ``delta``). With the whitened
innovations ``z_k = L_k^{-1} (y_k - H a_k^-)`` and regressors ``Z_k = L_k^{-1} H X_k^-``
(``S_k = L_k L_k^T`` the innovation covariance of the known part, observed entries only), the
filter accumulates ``s_k = sum Z_j^T z_j`` and ``S_k = sum Z_j^T Z_j``, and for every kappa

.. math::

    \log p_\kappa(y) = \ell_0 - \tfrac{q}{2} \log \kappa
        - \tfrac12 \log |S_N + I/\kappa| + \tfrac12 s_N^T (S_N + I/\kappa)^{-1} s_N,

``ell_0`` the log-likelihood of the known part (the ordinary filter's sum). The diffuse
log-likelihood (Durbin and Koopman 2012, section 7.2.2, what statsmodels reports with an
exact diffuse initialisation) is ``lim (log p_kappa + q/2 log kappa)``:
``ell_0 - log|S_N| / 2 + s_N^T S_N^{-1} s_N / 2``. Given ``y_1:N``, ``delta`` is
``N(S_N^{-1} s_N, S_N^{-1})``; the smoothed moments are those of the known part's RTS
smoother, with the extra columns smoothed by the same gains (``J_k``), plus ``J_k delta``:
mean ``m_k^s + J_k S_N^{-1} s_N`` and covariance ``P_k^s + J_k S_N^{-1} J_k^T``.

The diffuse components must be identified by the data (``S_N`` positive definite; a diffuse
component never observed has no posterior). The filtered and predicted moments of a step
at which ``S_k`` is still singular are infinite in some directions: they are returned as the
entrywise limit (``+-inf`` where the ``kappa`` coefficient of the covariance is nonzero, the
finite limit elsewhere; the means are finite).

References:
    P. de Jong, "The diffuse Kalman filter", Annals of Statistics 19(2), 1991;
    J. Durbin and S. J. Koopman, *Time Series Analysis by State Space Methods*, 2nd ed.,
    Oxford University Press (2012), sections 5.7 and 7.2.2.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxssm import steps
from jaxssm._args.diffuse import DIFFUSE_SUPPORTED
from jaxssm._args.schedule import Schedule
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.linalg import psd_solve, symmetrize
from jaxssm._base.types import LGSSM, FilterResult, SmootherResult, SufficientStats
from jaxssm._blocks import stats as _stats
from jaxssm._blocks.draws import gaussian_draw

__all__ = [
    "SUPPORTED",
    "diffuse_index",
    "check_schedule",
    "check_identified",
    "filter",
    "smooth",
    "log_likelihood",
    "posterior_sample",
    "stats",
    "stats_unchecked",
    "check_em",
]

#: The entry points that accept a diffuse ``P0`` (on the sequential schedule).
SUPPORTED = DIFFUSE_SUPPORTED


def diffuse_index(P0) -> tuple[int, ...]:
    """Return the diffuse components of a checked ``P0`` (``inf`` diagonal); ``()`` if traced."""
    if isinstance(P0, jax.core.Tracer) or P0.ndim != 2:
        return ()
    return tuple(int(i) for i in np.flatnonzero(np.isinf(np.diagonal(np.asarray(P0)))))


def check_schedule(schedule: Schedule | None, where: str) -> None:
    """Refuse a schedule other than the sequential one with the full recursion."""
    if schedule is None:
        return
    form = getattr(schedule, "form", "cov")
    if schedule.parallel or schedule.steady_state or form != "cov":
        raise ValueError(
            f"P0 has inf on its diagonal (exact diffuse initialisation), which {where} "
            f"supports with method='sequential', steady_state None or False and form='cov' "
            f"only, got method={schedule.method!r}, steady_state={schedule.steady_state!r}, "
            f"form={form!r}"
        )


class _Augmented(NamedTuple):
    means: jax.Array  # a_k [N+1, D], the known part's filtered means
    covs: jax.Array  # P_k [N+1, D, D]
    pred_means: jax.Array  # [N, D]
    pred_covs: jax.Array  # [N, D, D]
    cols: jax.Array  # X_k [N+1, D, q]
    pred_cols: jax.Array  # X_k^- [N, D, q]
    score: jax.Array  # s_k [N+1, q]
    info: jax.Array  # S_k [N+1, q, q]
    log_likelihood: jax.Array  # ell_0


def _prior(params: LGSSM, index: tuple[int, ...]):
    """``(m0, P_*, W)`` of a diffuse ``P0``."""
    D = params.P0.shape[-1]
    diffuse = np.zeros(D, bool)
    diffuse[list(index)] = True
    zero = jnp.asarray(diffuse[:, None] | diffuse[None, :])
    P_star = jnp.where(zero, jnp.zeros((), params.P0.dtype), params.P0)
    W = jnp.eye(D, dtype=params.P0.dtype)[:, list(index)]
    return params.m0, P_star, W


def _augmented_filter(params: LGSSM, ys: jax.Array, index: tuple[int, ...]) -> _Augmented:
    """Run the augmented filter over a reduced model (:func:`jaxssm._base.model.reduce`)."""
    m0, P_star, W = _prior(params, index)
    q = W.shape[-1]
    dtype = m0.dtype
    fixed, varying = _model.split(params)

    def body(carry, inputs):
        mean, cols, cov, s, S, ll = carry
        y, per_step = inputs
        p = _model.merge(fixed, per_step)
        pred_mean = steps.predict_mean(mean, p.A, p.b)
        pred_cols = p.A @ cols
        pred_cov = steps.predict_cov(cov, p.A, p.Q)
        obs = steps.mask_observation(y, p.H, p.R)
        half = steps.update_cov(pred_cov, obs.H, obs.R)
        z = steps.whitened_innovation(pred_mean, obs.y, obs.H, half.chol)
        Z = jax.scipy.linalg.solve_triangular(half.chol, obs.H @ pred_cols, lower=True)
        mean = steps.update_mean(pred_mean, half.obs_factor, z)
        cols = pred_cols - half.obs_factor.T @ Z
        s = s + Z.T @ z
        S = symmetrize(S + Z.T @ Z)
        ll = ll + steps.log_normal_whitened(z, half.chol, obs.num_observed)
        carry = (mean, cols, half.cov, s, S, ll)
        return carry, (mean, cols, half.cov, s, S, pred_mean, pred_cols, pred_cov)

    init = (m0, W, P_star, jnp.zeros(q, dtype), jnp.zeros((q, q), dtype), jnp.zeros((), dtype))
    carry, out = jax.lax.scan(body, init, (ys, varying))
    means, cols, covs, s, S, pred_means, pred_cols, pred_covs = out

    def first(x0, xs):
        return jnp.concatenate([x0[None], xs], axis=0)

    return _Augmented(
        first(m0, means),
        first(P_star, covs),
        pred_means,
        pred_covs,
        first(W, cols),
        pred_cols,
        first(init[3], s),
        first(init[4], S),
        carry[-1],
    )


def _final(aug: _Augmented):
    """``(log-likelihood, delta_hat, Sigma_delta, identified)`` from the last ``S_N, s_N``."""
    S, s = aug.info[-1], aug.score[-1]
    q = S.shape[-1]
    L = jnp.linalg.cholesky(S)
    eig = jnp.linalg.eigvalsh(S)
    eps = jnp.finfo(S.dtype).eps
    identified = (eig[0] > 100.0 * q * eps * eig[-1]) & jnp.all(jnp.isfinite(L))
    delta = jax.scipy.linalg.cho_solve((L, True), s)
    cov = jax.scipy.linalg.cho_solve((L, True), jnp.eye(q, dtype=S.dtype))
    ll = aug.log_likelihood - jnp.sum(jnp.log(jnp.diagonal(L))) + 0.5 * (s @ delta)
    return ll, delta, symmetrize(cov), identified


def _limit(a, X, P, s, S, S_final):
    """Return the entrywise limit of one step's moments as kappa -> inf (``+-inf``: diffuse)."""
    q = S.shape[-1]
    eps = jnp.finfo(S.dtype).eps
    lam, U = jnp.linalg.eigh(S)
    top = jnp.linalg.eigvalsh(S_final)[-1]
    null = lam <= 100.0 * q * eps * top
    inv = jnp.where(null, 0.0, 1.0 / jnp.where(null, 1.0, lam))
    Sp = (U * inv[None, :]) @ U.T
    mean = a + X @ (Sp @ s)
    cov = symmetrize(P + X @ Sp @ X.T)
    XU = X @ jnp.where(null[None, :], U, jnp.zeros((), U.dtype))
    V = XU @ XU.T  # the coefficient of kappa
    d = jnp.diagonal(V)
    root = jnp.sqrt(jnp.finfo(S.dtype).eps)
    big = d > root * jnp.max(d, initial=0.0)
    pattern = big[:, None] & big[None, :] & (jnp.abs(V) > root * jnp.sqrt(jnp.outer(d, d)))
    inf = jnp.asarray(jnp.inf, P.dtype)
    cov = jnp.where(pattern, jnp.where(V > 0, inf, -inf), cov)
    return mean, cov


def _filter_result(aug: _Augmented, ll) -> FilterResult:
    S_final = aug.info[-1]
    limit = jax.vmap(_limit, in_axes=(0, 0, 0, 0, 0, None))
    means, covs = limit(aug.means, aug.cols, aug.covs, aug.score, aug.info, S_final)
    pred_means, pred_covs = limit(
        aug.pred_means, aug.pred_cols, aug.pred_covs, aug.score[:-1], aug.info[:-1], S_final
    )
    return FilterResult(means, covs, pred_means, pred_covs, ll)


def _known_smoother(params: LGSSM, aug: _Augmented):
    """RTS over the known part, with the extra columns ``J_k`` smoothed by the same gains.

    Returns ``(means, covs, cols, cross)``; ``cross[k] = Cov(x_k, x_{k+1} | y, delta)``.
    """
    A = params.A
    A_steps = A if _model.is_time_varying(params, "A") else None

    def body(carry, inputs):
        next_mean, next_cov, next_cols = carry
        mean, cov, cols, pred_mean, pred_cov, pred_cols, A_k = inputs
        gain = steps.smoother_gain(cov, pred_cov, A if A_k is None else A_k)
        new_mean = steps.smooth_mean(mean, pred_mean, next_mean, gain)
        new_cov = steps.smooth_cov(cov, pred_cov, next_cov, gain)
        new_cols = cols + gain @ (next_cols - pred_cols)
        return (new_mean, new_cov, new_cols), (new_mean, new_cov, new_cols, gain @ next_cov)

    last = (aug.means[-1], aug.covs[-1], aug.cols[-1])
    inputs = (
        aug.means[:-1],
        aug.covs[:-1],
        aug.cols[:-1],
        aug.pred_means,
        aug.pred_covs,
        aug.pred_cols,
        A_steps,
    )
    _, (means, covs, cols, cross) = jax.lax.scan(body, last, inputs, reverse=True)

    def cat(xs, x_last):
        return jnp.concatenate([xs, x_last[None]], axis=0)

    return cat(means, last[0]), cat(covs, last[1]), cat(cols, last[2]), cross


def _smoother_result(params: LGSSM, aug: _Augmented) -> SmootherResult:
    ll, delta, cov_delta, _ = _final(aug)
    means, covs, cols, cross = _known_smoother(params, aug)
    means = means + cols @ delta
    covs = jax.vmap(lambda P, J: symmetrize(P + J @ cov_delta @ J.T))(covs, cols)
    cross = cross + cols[:-1] @ cov_delta @ jnp.swapaxes(cols[1:], -1, -2)
    # G_k solves G_k P_{k+1}^s = Cov(x_k, x_{k+1} | y), as the RTS gain does.
    gains = jax.vmap(lambda P, C: psd_solve(P, C.T).T)(covs[1:], cross)
    return SmootherResult(means, covs, gains, ll)


def _run(params: LGSSM, ys: jax.Array, inputs, index):
    core, y_s, _ = _model.reduce(params, ys, inputs)
    return core, _augmented_filter(core, y_s, index)


@partial(_compile.jit, static_argnames="index")
def _filter(params, ys, inputs, index):
    _, aug = _run(params, ys, inputs, index)
    ll, _, _, identified = _final(aug)
    return _filter_result(aug, ll), identified


@partial(_compile.jit, static_argnames="index")
def _smooth(params, ys, inputs, index):
    core, aug = _run(params, ys, inputs, index)
    identified = _final(aug)[-1]
    return _smoother_result(core, aug), identified


@partial(_compile.jit, static_argnames="index")
def _log_likelihood(params, ys, inputs, index):
    def one(y, u):
        _, aug = _run(params, y, u, index)
        ll, _, _, identified = _final(aug)
        return ll, identified

    if ys.ndim == 2:
        return one(ys, inputs)
    ll, identified = jax.vmap(one)(ys, inputs)
    return jnp.sum(ll), jnp.all(identified)


def check_identified(identified, index: tuple[int, ...]) -> None:
    """Raise when the data do not identify the diffuse components (eager values only)."""
    if isinstance(identified, jax.core.Tracer):
        return
    if not bool(identified):
        raise ValueError(
            f"the diffuse components {list(index)} of x_0 (inf on the diagonal of P0) are not "
            "identified by the observed entries of ys: the information matrix of the diffuse "
            "part is singular, so the diffuse likelihood and the posterior do not exist; "
            "give those components a finite prior variance in P0, or more observations"
        )


def filter(params: LGSSM, ys: jax.Array, inputs, index: tuple[int, ...]) -> FilterResult:
    """Run the exact diffuse Kalman filter (checked arguments, concrete ``index``)."""
    result, identified = _filter(params, ys, inputs, index)
    check_identified(identified, index)
    return result


def smooth(params: LGSSM, ys: jax.Array, inputs, index: tuple[int, ...]) -> SmootherResult:
    """Run the exact diffuse smoother: the limits of the smoothed moments as kappa -> inf."""
    result, identified = _smooth(params, ys, inputs, index)
    check_identified(identified, index)
    return result


def log_likelihood(params: LGSSM, ys: jax.Array, inputs, index: tuple[int, ...]) -> jax.Array:
    """Return the diffuse log-likelihood (of a batch ``[B, N, Dy]``: the sum)."""
    ll, identified = _log_likelihood(params, ys, inputs, index)
    check_identified(identified, index)
    return ll


@partial(_compile.jit, static_argnames="index")
def _posterior_sample(key, params, ys, inputs, index):
    core, aug = _run(params, ys, inputs, index)
    _, delta, cov_delta, identified = _final(aug)
    _, _, cols, _ = _known_smoother(core, aug)
    A = core.A
    A_steps = A if _model.is_time_varying(core, "A") else None
    key_x, key_d = jax.random.split(key)
    u = jax.random.normal(key_x, aug.means.shape, aug.means.dtype)
    x_last = gaussian_draw(aug.means[-1], aug.covs[-1], u[-1])

    def body(x_next, inputs):
        mean, cov, next_pred_mean, next_pred_cov, noise, A_k = inputs
        gain = steps.smoother_gain(cov, next_pred_cov, A if A_k is None else A_k)
        cond_mean = steps.smooth_mean(mean, next_pred_mean, x_next, gain)
        cond_cov = steps.smooth_cov(cov, next_pred_cov, jnp.zeros_like(cov), gain)
        x = gaussian_draw(cond_mean, cond_cov, noise)
        return x, x

    inputs = (aug.means[:-1], aug.covs[:-1], aug.pred_means, aug.pred_covs, u[:-1], A_steps)
    _, xs = jax.lax.scan(body, x_last, inputs, reverse=True)
    xs = jnp.concatenate([xs, x_last[None]], axis=0)  # a draw given delta = 0
    q = delta.shape[-1]
    d = gaussian_draw(delta, cov_delta, jax.random.normal(key_d, (q,), delta.dtype))
    return xs + cols @ d, identified


def posterior_sample(key, params: LGSSM, ys: jax.Array, inputs, index: tuple[int, ...]):
    """One draw of ``x_0..x_N`` from the diffuse posterior: ``delta`` given ``y``, then the rest.

    Given ``delta``, the path is a draw of the known part's posterior (forward filtering,
    backward sampling) shifted by ``J_k delta``; ``delta`` is drawn from ``N(S_N^{-1} s_N,
    S_N^{-1})``.
    """
    xs, identified = _posterior_sample(key, params, ys, inputs, index)
    check_identified(identified, index)
    return xs


def stats(params: LGSSM, ys: jax.Array, inputs, index: tuple[int, ...]):
    """EM sufficient statistics and the diffuse log-likelihood, summed over a batch."""
    result, identified = _stats_program(params, ys, inputs, index)
    check_identified(identified, index)
    return result


def stats_unchecked(params: LGSSM, ys: jax.Array, inputs, index: tuple[int, ...]):
    """``(stats, log-likelihood)`` of the diffuse smoother, traceable (an EM loop's E-step).

    Data that do not identify the diffuse components give a NaN log-likelihood (the loops'
    decrease guard stops there); the eager entry points check first.
    """
    (st, ll), identified = _stats_traced(params, ys, inputs, index)
    return st, jnp.where(identified, ll, jnp.nan)


@partial(_compile.jit, static_argnames="index")
def _stats_program(params, ys, inputs, index):
    return _stats_traced(params, ys, inputs, index)


def _stats_traced(params, ys, inputs, index) -> tuple[tuple[SufficientStats, jax.Array], jax.Array]:
    extended = _model.uses_input_sums(params, inputs)

    def one(y, u):
        core, y_s, e = _model.reduce(params, y, u)
        aug = _augmented_filter(core, y_s, index)
        identified = _final(aug)[-1]
        smoothed = _smoother_result(core, aug)
        v = _model.augmented_inputs(u, y.shape[:-1], y.dtype) if extended else None
        st = _stats.from_smoother(smoothed, y_s, core.H, core.R, e, v)
        return st, (smoothed.log_likelihood, identified)

    if ys.ndim == 2:
        st, (ll, identified) = one(ys, inputs)
        return (st, ll), identified
    st, (ll, identified) = jax.vmap(one)(ys, inputs)
    return (_stats.pool(st), jnp.sum(ll)), jnp.all(identified)


def check_em(schedule: Schedule | None, update, where: str) -> None:
    """Refuse EM with a diffuse ``P0`` off the sequential schedule or learning ``m0``, ``P0``."""
    check_schedule(schedule, where)
    learned = [n for n in ("m0", "P0") if n in update]
    if learned:
        raise ValueError(
            f"update names {', '.join(learned)}, but P0 has inf on its diagonal (exact diffuse "
            f"initialisation): the prior of the diffuse components is not estimated; leave m0 "
            f"and P0 out of update (they are held fixed), or give P0 finite"
        )
