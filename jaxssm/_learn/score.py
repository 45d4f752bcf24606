r"""The score: the exact gradient of ``log p(y)`` by Fisher's identity (one E-step).

For a latent-variable model, the gradient of the log-likelihood of the observed data is the
posterior expectation of the gradient of the complete-data log-likelihood (Fisher's identity):

.. math::

    \nabla_\theta \log p(y \mid \theta) \big|_{\theta = \theta_n}
    = E\big[\nabla_\theta \log p(x_{0:N}, y \mid \theta) \,\big|\, y, \theta_n\big]
    = \nabla_\theta \mathcal{Q}(\theta, \theta_n) \big|_{\theta = \theta_n},

where :math:`\mathcal{Q}(\theta, \theta_n)` is EM's objective
(:func:`~jaxssm.expected_log_joint`), the expected complete-data log-likelihood under
:math:`p(x_{0:N} \mid y, \theta_n)`. For a linear-Gaussian model :math:`\mathcal{Q}` is a
closed form in the E-step's statistics (:class:`~jaxssm.SufficientStats`), so the score costs
one smoother pass plus a gradient of a function of ``[D, D]``-sized matrices, on whatever
schedule the E-step runs (sequential, steady-state, parallel), instead of reverse-mode
differentiation through the filter's recursion over ``N`` steps.

Missing entries are latent like the states (the E-step's statistics of ``y`` are conditional
expectations given the observed entries), so the identity holds for ``log p(y_obs)`` as it
stands: the complete data are ``(x, y_obs, y_mis)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import jax
import numpy as np
from jax.typing import ArrayLike

from jaxssm._args.checks import check_update, psd_tolerance
from jaxssm._args.prologue import prologue
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.types import LGSSM, SufficientStats
from jaxssm._learn.mstep import OBSERVATION, TRANSITION, expected_log_joint
from jaxssm._schedules import dispatch as _dispatch

__all__ = ["score", "value_and_score", "score_from_stats"]

#: The covariance whose Gaussian term each field's gradient goes through.
_TERM_COVARIANCE = {
    **{name: "Q" for name in TRANSITION},
    **{name: "R" for name in OBSERVATION},
    "m0": "P0",
    "P0": "P0",
}


def _check_nonsingular(params: LGSSM, update: tuple[str, ...]) -> None:
    """Refuse a singular covariance that an updated field's Gaussian term goes through.

    A Gaussian term with a singular covariance has no density (EM's objective is ``-inf``
    there), so Fisher's identity cannot be taken through it, although ``log p(y)`` may still
    be differentiable. Checked for concrete values only (eager calls).
    """
    for cov_name in sorted({_TERM_COVARIANCE[n] for n in update}):
        x = getattr(params, cov_name)
        if isinstance(x, jax.core.Tracer):
            continue
        a = np.asarray(x, np.float64)
        eig = np.linalg.eigvalsh(0.5 * (a + a.T))
        tol = psd_tolerance(x.dtype, a.shape[0]) * max(float(np.max(np.abs(eig))), 1e-300)
        if not eig[0] > tol:
            users = [n for n in update if _TERM_COVARIANCE[n] == cov_name]
            raise ValueError(
                f"score by Fisher's identity needs {cov_name} positive definite for "
                f"{', '.join(users)} (the complete-data term through {cov_name} has no "
                f"density when it is singular), got smallest eigenvalue {eig[0]:.3g}; use "
                "jax.grad(log_likelihood) for this model"
            )


def _prologue(params, ys, update, inputs, method, steady_state, form):
    """Check the arguments of :func:`score`; return what :func:`_value_and_score` takes."""
    names = check_update(update)
    params, ys, inputs, schedule = prologue(
        params,
        ys,
        inputs,
        method=method,
        steady_state=steady_state,
        form=form,
        allow_batch=True,
        update=names,
    )
    varying = _model.time_varying_names(params)
    if varying:
        raise ValueError(
            "score needs a time-invariant model (Fisher's identity is taken through EM's "
            "objective, whose pooled statistics cannot weigh each step by its own matrices), "
            f"got time-varying {', '.join(varying)}; use jax.grad(log_likelihood)"
        )
    _check_nonsingular(params, names)
    num_sequences = ys.shape[0] if ys.ndim == 3 else 1
    return params, ys, inputs, names, schedule, num_sequences


def score_from_stats(
    params: LGSSM, stats: SufficientStats, update: tuple[str, ...], num_sequences: int = 1
) -> LGSSM:
    """Fisher's-identity gradient from statistics computed at ``params`` (unchecked, traceable).

    ``stats`` must come from the E-step at ``params`` itself (``theta_n``); with statistics
    from other parameters this is the gradient of EM's objective, not of ``log p(y)``.
    ``update`` is a checked tuple of names; ``num_sequences`` the ``B`` pooled in ``stats``.
    """
    stats = jax.lax.stop_gradient(stats)

    def objective(free: dict) -> jax.Array:
        theta = params._replace(**free)
        return expected_log_joint(theta, stats, num_sequences=num_sequences)

    grads = jax.grad(objective)({name: getattr(params, name) for name in update})
    return LGSSM(**{name: grads.get(name) for name in LGSSM._fields})


@partial(_compile.jit, static_argnames=("update", "schedule", "num_sequences"))
def _value_and_score(
    params: LGSSM,
    ys: jax.Array,
    inputs: jax.Array | None,
    *,
    update: tuple[str, ...],
    schedule: str,
    num_sequences: int,
) -> tuple[jax.Array, LGSSM]:
    """Unchecked :func:`value_and_score` (jitted; ``update``, ``schedule`` static)."""
    stats, ll = _dispatch.stats(params, ys, schedule, inputs=inputs)
    return ll, score_from_stats(params, stats, update, num_sequences)


def value_and_score(
    params: LGSSM,
    ys: ArrayLike,
    *,
    update: str | Iterable[str] = ("A", "Q"),
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
) -> tuple[jax.Array, LGSSM]:
    """``(log p(y | params), score(params, ys, ...))`` from one E-step.

    The log-likelihood comes with the E-step's smoother for free; fitting code that needs
    both calls this rather than :func:`score` and :func:`~jaxssm.log_likelihood`. Arguments,
    conventions and errors are those of :func:`score`.

    Returns:
        ``(log_likelihood, grads)``: a scalar and an :class:`~jaxssm.LGSSM` as :func:`score`.
    """
    params, ys, inputs, names, schedule, num_sequences = _prologue(
        params, ys, update, inputs, method, steady_state, form
    )
    return _value_and_score(
        params, ys, inputs, update=names, schedule=schedule, num_sequences=num_sequences
    )


def score(
    params: LGSSM,
    ys: ArrayLike,
    *,
    update: str | Iterable[str] = ("A", "Q"),
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
) -> LGSSM:
    r"""Exact gradient of ``log p(y | params)`` for the fields in ``update`` (Fisher's identity).

    One E-step at :math:`\theta_n` = ``params`` (:func:`~jaxssm.e_step`, on the schedule that
    ``method`` and ``steady_state`` choose), then the gradient of EM's objective at
    :math:`\theta = \theta_n`:

    .. math::

        \nabla_\theta \log p(y \mid \theta)\big|_{\theta_n}
        = \nabla_\theta \mathcal{Q}(\theta, \theta_n)\big|_{\theta = \theta_n},
        \quad \mathcal{Q}(\theta, \theta_n) = E[\log p(x_{0:N}, y \mid \theta) \mid y,
        \theta_n],

    with :math:`\mathcal{Q}` the closed form of :func:`~jaxssm.expected_log_joint`. It equals
    ``jax.grad(log_likelihood)`` restricted to ``update`` (to round-off), at the cost of one
    smoother pass.

    **Symmetric covariances.** ``P0``, ``Q`` and ``R`` enter both
    :func:`~jaxssm.log_likelihood` and :func:`~jaxssm.expected_log_joint` through their
    symmetric parts, so their gradients are symmetric matrices: the gradient of
    :math:`M \mapsto \ell((M + M^T)/2)`, whose entry ``(i, j)`` is half the derivative with
    respect to the one free parameter ``Q_ij = Q_ji`` for ``i != j``. This is the convention of
    ``jax.grad(log_likelihood)``, so the two agree entry by entry.

    Batches ``ys [B, N, Dy]`` give the gradient of the sum of the sequences'
    log-likelihoods; NaN entries are missing (the gradient of ``log p(y_obs)``); inputs and
    offsets are supported. An absent ``B, b, D, d`` named in ``update`` is evaluated at zero
    (the gradient there, as where :func:`~jaxssm.fit_em` starts it).

    Args:
        params: an :class:`~jaxssm.LGSSM`, time-invariant.
        ys: observations ``[N, Dy]`` or a batch ``[B, N, Dy]``; NaN marks a missing entry.
        update: a field name or names from ``"m0", "P0", "A", "Q", "H", "R", "B", "b", "D",
            "d"``.
        inputs: ``u_1..u_N`` ``[N, Du]`` (``[B, N, Du]`` with a batch) when the model has
            ``B`` or ``D`` (or ``update`` names them).
        method: ``"sequential"`` or ``"parallel"``, as in :func:`~jaxssm.kalman_filter`.
        steady_state: as in :func:`~jaxssm.kalman_filter`.
        form: the E-step's form, ``"cov"`` or ``"sqrt"`` (the smoother on Cholesky factors),
            as in :func:`~jaxssm.e_step`; the same gradient to round-off in float64.

    Returns:
        An :class:`~jaxssm.LGSSM` holding ``d log p(y) / d field`` for the fields in
        ``update`` (each shaped like its field) and ``None`` for the others.

    Raises:
        ValueError: ``update`` is empty, repeats or names an unknown field; a field of
            ``params`` varies over time; a covariance that an updated field's term goes
            through is singular (``Q`` for ``A, B, b, Q``; ``R`` for ``H, D, d, R``; ``P0``
            for ``m0, P0``); or as :func:`~jaxssm.e_step`.
        TypeError: as :func:`~jaxssm.e_step`.

    References:
        O. Cappé, E. Moulines and T. Rydén, *Inference in Hidden Markov Models* (2005),
        Proposition 10.1.6 (Fisher's identity); S. Sarkka, *Bayesian Filtering and
        Smoothing* (2013), Section 12.3; R. H. Shumway and D. S. Stoffer (1982).
    """
    return value_and_score(
        params,
        ys,
        update=update,
        inputs=inputs,
        method=method,
        steady_state=steady_state,
        form=form,
    )[1]
