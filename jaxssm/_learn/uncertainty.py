r"""Standard errors from the exact observed information, in the free coordinates of ``update``.

The observed information is :math:`\mathcal{I}(\hat\theta) = -\nabla^2_\theta \log
p(y \mid \theta)` at the estimate, with :math:`\theta` the free coordinates of
:mod:`jaxssm._base.structure` in natural units (a full mean-side field its entries; a full
covariance the entries of its upper triangle; ``beta`` of a :class:`~jaxssm.Linear`; the
variances ``q`` of a diagonal, scalar or shared-variance covariance). It is computed by
automatic differentiation of the Kalman filter's log-likelihood (``jax.hessian``, forward
over reverse), or, as a second route, by forward differentiation of the exact score
(Fisher's identity, differentiated with the E-step's statistics: Oakes 1999). The
asymptotic covariance of the maximum-likelihood estimate is :math:`\mathcal{I}^{-1}`; the
standard error of an entry of a field is the square root of the diagonal of
:math:`J \mathcal{I}^{-1} J^T`, with :math:`J` the (constant) Jacobian of the field's
entries in the coordinates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxssm._args.checks import psd_tolerance
from jaxssm._args.prologue import prologue
from jaxssm._args.structures import parse_update, resolve_update
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.structure import coordinate_labels, pack, unpack
from jaxssm._base.types import LGSSM
from jaxssm._learn.mstep import expected_log_joint
from jaxssm._schedules import dispatch as _dispatch

__all__ = ["standard_errors", "observed_information", "choose_route"]

ROUTES = ("hessian", "score")


@partial(_compile.jit, static_argnames=("spec", "schedule", "route", "num_sequences"))
def _information(params, ys, inputs, *, spec, schedule, route, num_sequences):
    """``-d^2 log p(y) / d theta^2`` at ``pack(params, spec)`` (unchecked, jitted)."""
    theta = pack(params, spec)

    def log_lik(t):
        return _dispatch.log_likelihood(unpack(t, params, spec), ys, schedule, inputs=inputs)

    if route == "hessian":
        return -jax.hessian(log_lik)(theta)

    def grad(t):
        # Fisher's identity at theta_n = t: the gradient in u of Q(u, t) at u = t. The
        # statistics stay differentiable in t, so jacfwd of this gives the observed
        # information (Oakes 1999), not the complete-data one.
        stats, _ = _dispatch.stats(unpack(t, params, spec), ys, schedule, inputs=inputs)

        def objective(u):
            return expected_log_joint(unpack(u, params, spec), stats, num_sequences=num_sequences)

        return jax.grad(objective)(t)

    return -jax.jacfwd(grad)(theta)


def _prepare(params, ys, update, inputs, method, steady_state, form):
    raw = parse_update(update)
    absent = tuple(n for n in raw if getattr(params, n, None) is None)
    params, ys, inputs, schedule = prologue(
        params,
        ys,
        inputs,
        method=method,
        steady_state=steady_state,
        form=form,
        allow_batch=True,
        update=tuple(raw),
    )
    varying = [n for n in raw if _model.is_time_varying(params, n)]
    if varying:
        raise ValueError(
            f"standard_errors needs time-invariant estimated fields, got time-varying "
            f"{', '.join(varying)} in update"
        )
    params, spec = resolve_update(params, raw, absent)
    num_sequences = ys.shape[0] if ys.ndim == 3 else 1
    return params, ys, inputs, schedule, spec, num_sequences


def observed_information(
    params: LGSSM,
    ys: ArrayLike,
    *,
    update: str | Iterable[str] | Mapping = ("A", "Q"),
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
    route: str = "hessian",
) -> tuple[jax.Array, list[str]]:
    """Return the observed information in the free coordinates, and their labels.

    Args: as :func:`standard_errors`; ``route`` is ``"hessian"`` (``jax.hessian`` of the
    filter's log-likelihood) or ``"score"`` (``jax.jacfwd`` of the Fisher-identity score).

    Returns:
        ``(information [k, k], labels)``, ``labels[i]`` naming coordinate ``i`` (``"A[0, 1]"``,
        ``"Q[0, 2]"`` for the upper triangle of a full covariance, ``"R.beta[0]"``).
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    info, labels, _, _ = _observed(params, ys, update, inputs, method, steady_state, form, route)
    return info, labels


#: The covariance whose Gaussian term each field's complete-data gradient goes through.
_TERM = {"A": "Q", "B": "Q", "b": "Q", "Q": "Q", "H": "R", "D": "R", "d": "R", "R": "R"}


def choose_route(params: LGSSM, spec) -> str:
    """Return the route of the observed information: ``"score"`` or ``"hessian"``.

    ``"score"`` (forward-mode over the E-step, no reverse pass through the filter) where
    Fisher's identity applies: every covariance whose complete-data term an estimated field
    goes through is positive definite. EM's objective has no density through a singular
    covariance (a companion-form ``Q = diag(q, 0)``); the filter's log-likelihood does, so
    ``"hessian"`` there (and for traced parameters).
    """
    for name in sorted({_TERM.get(n, "P0") for n in spec.names}):
        x = getattr(params, name)
        if isinstance(x, jax.core.Tracer):
            return "hessian"
        a = np.asarray(x, np.float64)
        eig = np.linalg.eigvalsh(0.5 * (a + a.T))
        tol = psd_tolerance(np.asarray(x).dtype, a.shape[0]) * max(float(eig[-1]), 1e-300)
        if not eig[0] > tol:
            return "hessian"
    return "score"


def _observed(params, ys, update, inputs, method, steady_state, form, route=None):
    """Check the arguments; return ``(information, labels, params, spec)`` of the checked model.

    ``route``: that of :func:`_information`; ``None`` for :func:`choose_route`'s.
    """
    params, ys, inputs, schedule, spec, num_sequences = _prepare(
        params, ys, update, inputs, method, steady_state, form
    )
    info = _information(
        params,
        ys,
        inputs,
        spec=spec,
        schedule=schedule,
        route=choose_route(params, spec) if route is None else route,
        num_sequences=num_sequences,
    )
    return info, coordinate_labels(params, spec), params, spec


def _invert(info: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decompose the symmetrised information; raise naming the weak coordinates."""
    info = 0.5 * (info + info.T)
    if not np.all(np.isfinite(info)):
        raise ValueError(
            "the observed information is not finite (the log-likelihood is not twice "
            "differentiable at these parameters)"
        )
    w, V = np.linalg.eigh(info)
    scale = max(float(np.max(np.abs(w))), np.finfo(info.dtype).tiny)
    tol = max(info.shape[0], 10) * np.finfo(info.dtype).eps * scale
    weak = np.flatnonzero(w <= tol)
    if weak.size:
        involved = []
        for j in weak:
            v = np.abs(V[:, j])
            involved += [labels[i] for i in np.flatnonzero(v >= 0.3 * v.max())]
        fields = sorted({lab.split("[")[0].split(".")[0] for lab in involved})
        names = ", ".join(dict.fromkeys(involved))
        raise ValueError(
            f"the observed information (minus the Hessian of log p(y)) is not positive "
            f"definite: {weak.size} eigenvalue(s) <= {tol:.3g} (smallest {w[0]:.3g}, largest "
            f"{w[-1]:.3g}), along the coordinates {names} of {', '.join(fields)}. The estimate "
            "is on a boundary (e.g. a variance at 0), not a maximum (fit to convergence "
            "first), or those coordinates are not identified (fix or constrain them)"
        )
    return w, V


def standard_errors(
    params: LGSSM,
    ys: ArrayLike,
    *,
    update: str | Iterable[str] | Mapping = ("A", "Q"),
    inputs: ArrayLike | None = None,
    method: str = "sequential",
    steady_state: bool | None = None,
    form: str = "cov",
) -> LGSSM:
    r"""Compute standard errors of the estimated fields from the exact observed information.

    At a maximum-likelihood estimate ``params`` (from :func:`~jaxssm.fit`,
    :func:`~jaxssm.fit_em` or :func:`~jaxssm.fit_mle` with the same ``update``), the
    observed information :math:`\mathcal{I} = -\nabla^2 \log p(y \mid \theta)` is computed
    exactly by automatic differentiation in the free coordinates :math:`\theta` of
    ``update``: forward-mode (``jax.jacfwd``) of the exact score, Fisher's identity through
    the E-step's statistics (Oakes 1999), or, where a covariance that an estimated field's
    complete-data term goes through is singular, ``jax.hessian`` of the Kalman filter's
    log-likelihood (the two agree to round-off where both apply). The coordinates are in
    natural units:

    * a full mean-side field (``m0, A, B, b, H, D, d``): its entries;
    * a full covariance (``P0, Q, R``): the entries of its upper triangle, ``S_ij = S_ji``
      one coordinate (variances and covariances, not a Cholesky factor or logarithm);
    * :class:`~jaxssm.Linear` (and ``"diagonal"`` / ``"scalar"`` on a square mean-side
      field): its ``beta``;
    * a ``"diagonal"``, ``"scalar"`` or diagonal ``Linear`` covariance: its variances.

    :math:`\mathcal{I}` is symmetrised and eigendecomposed; every eigenvalue must exceed
    ``max(k, 10) eps`` times the largest, else a ``ValueError`` names the coordinates of the
    near-null directions (a variance on the boundary at 0, a point that is not a maximum, or
    coordinates that the data do not identify). The standard error of entry ``e`` of a
    field is :math:`\sqrt{(J \mathcal{I}^{-1} J^T)_{ee}}` with :math:`J` the Jacobian of
    the entries in the coordinates: a shared coordinate's error at each entry it sets, the
    same error at ``S_ij`` and ``S_ji`` of a full covariance, 0 at fixed entries.

    These are the classical asymptotic errors ``sqrt(diag(inv(-H)))``, those of statsmodels'
    ``cov_type="approx"`` (its numerical Hessian; its ``"oim"`` is Harvey's 1989 formula,
    which omits a second-derivative term and differs at finite N); they are meaningful at
    an interior maximum (the gradient in the free coordinates near zero). NaN entries of
    ``ys`` are missing; batches ``[B, N, Dy]`` sum the sequences' log-likelihoods; inputs
    and offsets are supported. The cost is a Hessian of the filter: about ``k``
    forward-over-reverse passes for ``k`` coordinates.

    Args:
        params: the estimate, an :class:`~jaxssm.LGSSM` (time-invariant fields in
            ``update``). A structured field must have its structure.
        ys: observations ``[N, Dy]`` or a batch ``[B, N, Dy]``.
        update: the estimated fields, names or ``{field: structure}`` as in
            :func:`~jaxssm.fit_em`.
        inputs: ``u_1..u_N`` ``[N, Du]`` when the model has ``B`` or ``D``.
        method: ``"sequential"`` or ``"parallel"``, as in :func:`~jaxssm.kalman_filter`.
        steady_state: as in :func:`~jaxssm.kalman_filter`.
        form: ``"cov"`` or ``"sqrt"``, as in :func:`~jaxssm.kalman_filter`: the filter
            (``"hessian"`` route) or the E-step's smoother (``"score"`` route) that is
            differentiated runs on Cholesky factors with ``"sqrt"``; the same errors to
            round-off in float64.

    Returns:
        An :class:`~jaxssm.LGSSM` of standard errors, each estimated field shaped like the
        field, ``None`` for the fields not in ``update``.

    Raises:
        ValueError: the information is not positive definite (the message names the
            coordinates); the errors of :func:`~jaxssm.fit_em` for ``update``, ``params``
            and ``ys``.

    References:
        J. Durbin and S. J. Koopman, *Time Series Analysis by State Space Methods* (2012),
        section 7.3 (asymptotic errors from the observed information); E. E. Holmes (2012),
        "Derivation of an EM algorithm for constrained and unconstrained MARSS models".
    """
    info, labels, params, spec = _observed(params, ys, update, inputs, method, steady_state, form)
    w, V = _invert(np.asarray(info, np.float64), labels)
    root = V / np.sqrt(w)[None, :]  # inv(I) = root root^T
    theta = pack(params, spec)
    out = {n: None for n in LGSSM._fields}
    for name in spec.names:
        template = getattr(params, name)

        def entries(t, name=name):
            return getattr(unpack(t, params, spec), name).reshape(-1)

        J = np.asarray(jax.jacfwd(entries)(theta), np.float64)
        se = np.sqrt(np.sum((J @ root) ** 2, axis=1))
        out[name] = jnp.asarray(se.reshape(np.shape(template)), template.dtype)
    return LGSSM(**out)
