r"""EM M-step (closed forms) and the EM objective Q(theta, theta_n).

With the statistics of :func:`~jaxssm.e_step` computed at ``theta_n`` (normalised by N), the
expected complete-data log-likelihood (with the factor N on the transition and observation
traces, the statistics being averages over the N steps) is

.. math::

    \mathcal{Q}(\theta, \theta_n) =
    &-\tfrac12 \log|2\pi P_0| - \tfrac N2 \log|2\pi Q| - \tfrac N2 \log|2\pi R| \\
    &-\tfrac12 \mathrm{tr}\,P_0^{-1}[P_0^s + (m_0^s - m_0)(m_0^s - m_0)^T] \\
    &-\tfrac N2 \mathrm{tr}\,Q^{-1}[\Sigma - C A^T - A C^T + A \Phi A^T] \\
    &-\tfrac N2 \mathrm{tr}\,R^{-1}[D - B H^T - H B^T + H \Sigma H^T],

and its maximisers, taken in this order (each using the new values before it), are

.. math::

    A = C \Phi^{-1},\ Q = \Sigma - C A^T - A C^T + A \Phi A^T,\
    H = B \Sigma^{-1},\ R = D - H B^T - B H^T + H \Sigma H^T,\
    m_0 = m_0^s,\ P_0 = P_0^s + (m_0^s - m_0)(m_0^s - m_0)^T.

**Inputs and offsets.** With ``v_k = [u_k; 1]`` the transition is a regression of ``x_k``
on ``z_k = [x_{k-1}; v_k]`` with coefficients ``M = [A, B, b]`` and the observation one of
``y_k`` on ``w_k = [x_k; v_k]`` with ``[H, D, d]`` (absent gains and offsets are zero
columns). The expected complete-data log-likelihood depends on ``M`` only through
``E[(x_k - M z_k)(x_k - M z_k)^T]``, which every ``Q`` weighs the same way; for the columns
``F`` being updated, with the others ``X`` held at their values, its maximiser is

.. math::

    M_F = (E[x z_F^T] - M_X E[z_X z_F^T]) \, E[z_F z_F^T]^{-1}

(the normal equations), whatever ``Q``; then ``Q = E[(x - M z)(x - M z)^T]`` with the new
``M``. For a model without inputs and offsets these are the closed forms above.

**Structures** (``update`` a :class:`~jaxssm._base.structure.UpdateSpec`): a structured
block makes the regression a generalised least squares weighted by the current ``Q^{-1}``
(``R^{-1}``, ``P0^{-1}`` for ``m0``), and a structured covariance the maximiser over its
diagonal pattern (:mod:`jaxssm._learn.constrained`); the block is then a maximiser given the
covariance before the step and the covariance given the new block (ECM).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxssm._args.checks import check_int
from jaxssm._args.prologue import prologue
from jaxssm._args.structures import parse_update, resolve_update
from jaxssm._args.validation import check_finite_psd, check_positive_definite
from jaxssm._base import compile as _compile
from jaxssm._base import model as _model
from jaxssm._base.linalg import LAPACK, symmetrize
from jaxssm._base.structure import as_spec
from jaxssm._base.types import LGSSM, SufficientStats
from jaxssm._learn.constrained import (
    pattern_update,
    pseudo_inverse,
    weighted_mean,
    weighted_regression,
)
from jaxssm.steps import LOG_2PI

__all__ = ["m_step", "m_step_unchecked", "expected_log_joint"]


def _residual_cov(second: jax.Array, cross: jax.Array, M: jax.Array, prev: jax.Array):
    """``second - cross M^T - M cross^T + M prev M^T``, symmetrised.

    The expected outer product of ``a - M b`` when ``E[a a^T] = second``, ``E[a b^T] = cross``
    and ``E[b b^T] = prev``.
    """
    cMt = cross @ M.T
    return symmetrize(second - cMt - cMt.T + M @ prev @ M.T)


#: The coefficient blocks of each regression: (names, with the state matrix first).
TRANSITION = ("A", "B", "b", "Q")
OBSERVATION = ("H", "D", "d", "R")


def _regression(stats: SufficientStats, side: str):
    """``(E[t t^T], E[t z^T], E[z z^T])`` of one regression ``t = M z``, all but normalised.

    ``side`` is ``"transition"`` (``t = x_k``, ``z = [x_{k-1}; v_k]``) or ``"observation"``
    (``t = y_k``, ``z = [x_k; v_k]``); ``v`` is absent for the plain statistics.
    """
    if side == "transition":
        second, cross, zz, zv, tv = stats.Sigma, stats.C, stats.Phi, stats.XpU, stats.XU
    else:
        second, cross, zz, zv, tv = stats.D, stats.B, stats.Sigma, stats.XU, stats.YU
    if stats.U is None:
        return second, cross, zz
    cross = jnp.concatenate([cross, tv], axis=1)
    zz = jnp.block([[zz, zv], [zv.T, stats.U]])
    return second, cross, symmetrize(zz)


def _coefficients(params: LGSSM, side: str, Du: int) -> list:
    """Return the blocks ``[A, B, b]`` or ``[H, D, d]`` as matrices (absent: zeros)."""
    names = TRANSITION[:3] if side == "transition" else OBSERVATION[:3]
    main = getattr(params, names[0])
    rows, dtype = main.shape[0], main.dtype
    gain, offset = getattr(params, names[1]), getattr(params, names[2])
    gain = jnp.zeros((rows, Du), dtype) if gain is None else gain
    offset = jnp.zeros((rows,), dtype) if offset is None else offset
    return [main, gain, offset[:, None]]


def _structured_side(params: LGSSM, stats: SufficientStats, side: str, spec) -> dict:
    """Update one regression with a structured block, then its covariance.

    The blocks given the current covariance (:mod:`jaxssm._learn.constrained`), the
    covariance given the new blocks (ECM when both are learned).
    """
    names = TRANSITION if side == "transition" else OBSERVATION
    second, cross, zz = _regression(stats, side)
    if stats.U is None:
        blocks = [getattr(params, names[0])]
    else:
        blocks = _coefficients(params, side, stats.U.shape[0] - 1)
        blocks[2] = blocks[2][:, 0]
    structures = [
        (spec.structure(n) or "full") if n in spec.names else None for n in names[: len(blocks)]
    ]
    out = {}
    if any(s is not None for s in structures):
        W = pseudo_inverse(getattr(params, names[3]))
        blocks = weighted_regression(cross, zz, blocks, structures, W)
        for n, b, s in zip(names, blocks, structures, strict=False):
            if s is not None:
                out[n] = b
    if names[3] in spec.names:
        mats = [b if b.ndim == 2 else b[:, None] for b in blocks]
        S = _residual_cov(second, cross, jnp.concatenate(mats, axis=1), zz)
        pattern = spec.structure(names[3])
        out[names[3]] = S if pattern is None else pattern_update(S, pattern)
    return out


def _update_side(params: LGSSM, stats: SufficientStats, side: str, update) -> dict:
    """Closed-form update of one regression's blocks and its noise covariance."""
    names = TRANSITION if side == "transition" else OBSERVATION
    spec = as_spec(update)
    if any(spec.structure(n) is not None for n in names[:3]):
        return _structured_side(params, stats, side, spec)
    out = _full_side(params, stats, side, spec.names)
    pattern = spec.structure(names[3])
    if pattern is not None and names[3] in out:
        out[names[3]] = pattern_update(out[names[3]], pattern)
    return out


def _full_side(params: LGSSM, stats: SufficientStats, side: str, update) -> dict:
    """:func:`_update_side` with every block full (the unweighted normal equations)."""
    names = TRANSITION if side == "transition" else OBSERVATION
    second, cross, zz = _regression(stats, side)
    out = {}
    if stats.U is None:  # the plain model: only the matrix and the covariance
        M = getattr(params, names[0])
        if names[0] in update:
            M = LAPACK.cho_solve(LAPACK.cholesky(zz), cross.T).T
            out[names[0]] = M
        if names[3] in update:
            out[names[3]] = _residual_cov(second, cross, M, zz)
        return out
    Du = stats.U.shape[0] - 1
    blocks = _coefficients(params, side, Du)
    sizes = [blocks[0].shape[1], Du, 1]
    starts = [0, sizes[0], sizes[0] + Du]
    free = [i for i in range(3) if names[i] in update]
    if free:
        cols = np.concatenate([np.arange(starts[i], starts[i] + sizes[i]) for i in free])
        fixed = [i for i in range(3) if i not in free]
        target = cross[:, cols]
        if fixed:
            fcols = np.concatenate([np.arange(starts[i], starts[i] + sizes[i]) for i in fixed])
            M_fixed = jnp.concatenate([blocks[i] for i in fixed], axis=1)
            target = target - M_fixed @ zz[fcols][:, cols]
        zz_ff = zz[cols][:, cols]
        M_free = LAPACK.cho_solve(LAPACK.cholesky(symmetrize(zz_ff)), target.T).T
        offset = 0
        for i in free:
            blocks[i] = M_free[:, offset : offset + sizes[i]]
            out[names[i]] = blocks[i][:, 0] if i == 2 else blocks[i]  # the offset is a vector
            offset += sizes[i]
    if names[3] in update:
        M = jnp.concatenate(blocks, axis=1)
        out[names[3]] = _residual_cov(second, cross, M, zz)
    return out


def m_step_unchecked(params: LGSSM, stats: SufficientStats, update) -> LGSSM:
    """Unchecked M-step; ``update`` already checked (names or an ``UpdateSpec``).

    ``update`` is a tuple of names (:func:`jaxssm._args.checks.check_update`) or an
    :class:`~jaxssm._base.structure.UpdateSpec`
    (:func:`jaxssm._args.structures.resolve_update`).

    The closed forms are applied in the order (A, B, b), Q, (H, D, d), R, m0, P0 whatever
    the order of ``update``; a structured regression or ``m0`` uses the covariance before
    its update (ECM).
    """
    spec = as_spec(update)
    new = {}
    new.update(_update_side(params, stats, "transition", spec))
    new.update(_update_side(params, stats, "observation", spec))
    m0 = params.m0
    if "m0" in spec.names:
        m0_structure = spec.structure("m0")
        if m0_structure is None:
            m0 = stats.m0_smoothed
        else:
            W = pseudo_inverse(params.P0)
            m0 = weighted_mean(stats.m0_smoothed, m0_structure, W)
        new["m0"] = m0
    if "P0" in spec.names:
        dev = stats.m0_smoothed - m0
        P0 = symmetrize(stats.P0_smoothed + jnp.outer(dev, dev))
        pattern = spec.structure("P0")
        new["P0"] = P0 if pattern is None else pattern_update(P0, pattern)
    return params._replace(**new)


_m_step_jit = _compile.jit(m_step_unchecked, static_argnames="update")


def _check_stats(stats: SufficientStats, params: LGSSM) -> SufficientStats:
    if not isinstance(stats, SufficientStats):
        raise TypeError(f"stats must be a jaxssm.SufficientStats, got {type(stats).__name__}")
    D, Dy = params.A.shape[-1], params.H.shape[-2]
    expected = {
        "Sigma": (D, D),
        "Phi": (D, D),
        "B": (Dy, D),
        "C": (D, D),
        "D": (Dy, Dy),
        "m0_smoothed": (D,),
        "P0_smoothed": (D, D),
        "num_steps": (),
    }
    out = {}
    for name, shape in expected.items():
        x = jnp.asarray(getattr(stats, name))
        if tuple(x.shape) != shape:
            raise ValueError(
                f"stats.{name} must have shape {shape} (D = {D}, Dy = {Dy} from params), "
                f"got {tuple(x.shape)}"
            )
        if name != "num_steps" and x.dtype != params.A.dtype:
            raise TypeError(
                f"stats.{name} must have the parameters' dtype {params.A.dtype}, got {x.dtype}"
            )
        out[name] = x
    extra = ("U", "XU", "XpU", "YU")
    present = [n for n in extra if getattr(stats, n) is not None]
    if present and len(present) != len(extra):
        raise ValueError(
            f"stats.U, XU, XpU and YU must be all set or all None, got {', '.join(present)} set"
        )
    if present:
        U = jnp.asarray(stats.U)
        if U.ndim != 2 or U.shape[0] != U.shape[1] or U.shape[0] < 1:
            raise ValueError(f"stats.U must have shape [Du + 1, Du + 1], got {tuple(U.shape)}")
        p = U.shape[0]
        for name, shape in (("U", (p, p)), ("XU", (D, p)), ("XpU", (D, p)), ("YU", (Dy, p))):
            x = jnp.asarray(getattr(stats, name))
            if tuple(x.shape) != shape:
                raise ValueError(
                    f"stats.{name} must have shape {shape} (D = {D}, Dy = {Dy}, Du + 1 = {p}), "
                    f"got {tuple(x.shape)}"
                )
            out[name] = x
        for name in ("B", "D"):
            g = getattr(params, name)
            if g is not None and g.shape[-1] != p - 1:
                raise ValueError(
                    f"params.{name} has Du = {g.shape[-1]} input columns but stats were "
                    f"computed with Du = {p - 1} (stats.U is {tuple(U.shape)})"
                )
    return SufficientStats(**out)


def _check_stats_values(stats: SufficientStats) -> None:
    """Eager value checks of checked ``stats``: a count ``num_steps >= 1``, finite sums.

    Skipped when any field is traced (under ``jit`` / ``vmap`` the values are unknown).
    """
    fields = [(n, x) for n, x in zip(stats._fields, stats, strict=True) if x is not None]
    if any(isinstance(x, jax.core.Tracer) for _, x in fields):
        return
    count = int(np.asarray(stats.num_steps))
    if count < 1:
        raise ValueError(
            f"stats.num_steps must be >= 1 (the number of steps the sums average over), got "
            f"{count}: compute stats with e_step"
        )
    for name, x in fields:
        a = np.asarray(x)
        if not np.all(np.isfinite(a)):
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise ValueError(f"stats.{name} must be finite, got {a[first]} at index {first}")


def _check_m_step_result(new: LGSSM, update) -> LGSSM:
    """Eager check of an M-step's result: finite, PSD covariances; else say why.

    A singular second-moment matrix (all-zero statistics, a state component never excited,
    an input that is constant) has no inverse: the normal equations then give NaN or
    ``inf``. Skipped for traced values.
    """
    if any(isinstance(x, jax.core.Tracer) for x in new if x is not None):
        return new
    try:
        check_finite_psd(new)
    except ValueError as err:
        raise ValueError(
            f"m_step's result is not a valid model ({err}). The statistics do not determine "
            f"update {list(update)}: a second-moment matrix the M-step inverts (stats.Phi for "
            "A, B, b; stats.Sigma for H, D, d; with the input sums stats.U) is singular, as "
            "for all-zero statistics or a state that is never excited; or a covariance held "
            "fixed is invalid. Compute stats with e_step, or leave those fields out of update"
        ) from err
    return new


def check_m_step(params: LGSSM, update: tuple[str, ...], num_inputs: int | None) -> None:
    """Reject an M-step that the statistics cannot express (static; clear messages).

    * ``B, b, D, d`` need the input sums (statistics from a model with inputs or offsets:
      ``num_inputs`` is their ``Du``, ``None`` without them); ``B`` and ``D`` need
      inputs (``Du >= 1``).
    * A regression with any time-varying field is not updated: pooled statistics cannot
      weigh the steps by their own matrices (time-varying fields held fixed on the other
      side are fine).
    """
    for name in ("B", "b", "D", "d"):
        if name in update and num_inputs is None:
            raise ValueError(
                f"update names {name!r}, but stats have no input sums (stats.U is None): "
                "compute them with e_step on a model with inputs or offsets (set "
                f"params.{name}, e.g. to zeros)"
            )
    for name in ("B", "D"):
        if name in update and num_inputs == 0:
            raise ValueError(
                f"update names {name!r}, an input gain, but the model has no inputs (Du = 0); "
                "pass inputs= [N, Du]"
            )
    for side in (TRANSITION, OBSERVATION):
        varying = [n for n in side if _model.is_time_varying(params, n)]
        touched = [n for n in side if n in update]
        if varying and touched:
            raise ValueError(
                f"cannot update {', '.join(touched)} by EM while {', '.join(varying)} "
                "vary over time (their closed forms need time-invariant "
                f"{', '.join(side)}); hold them fixed, or use fit_mle"
            )


def m_step(
    params: LGSSM, stats: SufficientStats, update: str | Iterable[str] | Mapping = ("A", "Q")
) -> LGSSM:
    r"""M-step of EM: maximise :func:`expected_log_joint` over the parameters in ``update``.

    Closed forms (DESIGN.md, "EM"), applied in the order A, Q, H, R, m0, P0, each using the
    values updated before it (so ``Q`` uses the new ``A``, ``R`` the new ``H`` and ``P0`` the
    new ``m0``); parameters not in ``update`` are returned unchanged:

    .. math::

        A = C \Phi^{-1}, \quad Q = \Sigma - C A^T - A C^T + A \Phi A^T, \quad
        H = B \Sigma^{-1}, \quad R = D - H B^T - B H^T + H \Sigma H^T,

        m_0 = m_0^s, \quad P_0 = P_0^s + (m_0^s - m_0)(m_0^s - m_0)^T.

    ``Phi^{-1}`` and ``Sigma^{-1}`` are applied through Cholesky solves; ``Q``, ``R`` and
    ``P0`` are symmetrised. The joint maximiser over all parameters, a block-coordinate one
    otherwise (each block is the exact maximiser given the others).

    Args:
        params: the current :class:`~jaxssm.LGSSM` (supplies the entries not updated).
        stats: :class:`~jaxssm.SufficientStats` from :func:`~jaxssm.e_step`.
        update: a parameter name or a tuple of names from ``"m0", "P0", "A", "Q", "H", "R",
            "B", "b", "D", "d"`` (any subset, any order; the order of application is fixed as
            above). With input sums in ``stats`` (a model with inputs or offsets), ``(A, B,
            b)`` and ``(H, D, d)`` are joint regressions (module docstring): the blocks named
            are the exact maximiser given the others. Or a mapping ``{field: structure}``
            with structure ``"full"``, ``"diagonal"``, ``"scalar"`` or
            :class:`~jaxssm.Linear` (guide: structured models): a structured regression block
            or ``m0`` is the generalised least squares weighted by the current noise
            covariance's inverse (Holmes 2012), a structured covariance the maximiser over
            its diagonal pattern (the diagonal of the unconstrained update, its mean for
            ``"scalar"``); with a block and its covariance both learned the step is a
            conditional maximisation (ECM), each part exact given the parts before it.

    **Values.** Called eagerly, ``params`` are checked as by :func:`~jaxssm.validate_params`
    (finite, PSD covariances), ``stats`` must be finite with ``num_steps >= 1``, and the
    result is checked: statistics that do not determine the update (all-zero statistics, a
    singular ``Phi`` or ``Sigma``) raise a ``ValueError`` that says so instead of returning
    NaN. Under ``jit`` or ``vmap`` the values are unknown and not checked: such statistics
    give NaN fields; check the result with :func:`~jaxssm.check_values` under
    :func:`jax.experimental.checkify.checkify` where that matters. (:func:`~jaxssm.fit_em`
    reports a NaN step as ``EMStatus.DECREASED`` and keeps the last good parameters.)

    Returns:
        The updated :class:`~jaxssm.LGSSM`.

    Raises:
        ValueError: ``update`` is empty, repeats or names an unknown parameter; ``stats``
            has shapes that do not match ``params``; eagerly, invalid ``params`` values,
            non-finite ``stats``, ``stats.num_steps < 1``, or statistics that give a
            non-finite or indefinite result; ``update`` names ``B, b, D, d`` without
            input sums in ``stats``, or a regression with a time-varying field; a structure
            does not fit its field, has no closed form, or contradicts the starting value.
        TypeError: ``update`` is not a name or an iterable of names.

    References:
        Z. Ghahramani and G. E. Hinton, "Parameter estimation for linear dynamical
        systems" (1996); S. Sarkka, *Bayesian Filtering and Smoothing* (2013), Section 12.3.3.
    """
    names = parse_update(update)
    params = prologue(params).params
    stats = _check_stats(stats, params)
    _check_stats_values(stats)
    check_m_step(params, tuple(names), None if stats.U is None else stats.U.shape[0] - 1)
    params, spec = resolve_update(params, names)
    new = _m_step_jit(params, stats, update=spec if spec.structures else spec.names)
    return _check_m_step_result(new, spec.names)


def _expected_log_joint(
    params: LGSSM, stats: SufficientStats, num_sequences: int | jax.Array = 1
) -> jax.Array:
    """Unchecked :func:`expected_log_joint`."""
    m0, P0, Q, R = params.m0, params.P0, params.Q, params.R
    dtype = Q.dtype
    n = jnp.asarray(stats.num_steps).astype(dtype)
    b = jnp.asarray(num_sequences).astype(dtype)

    def gaussian_term(cov, scatter):
        """``-(log|2 pi cov| + tr(cov^-1 scatter)) / 2`` through a Cholesky factor."""
        chol = LAPACK.cholesky(symmetrize(cov))
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        trace = jnp.trace(LAPACK.cho_solve(chol, scatter))
        return -0.5 * (cov.shape[0] * LOG_2PI + logdet + trace)

    def scatter(side):
        second, cross, zz = _regression(stats, side)
        if stats.U is None:
            M = params.A if side == "transition" else params.H
        else:
            M = jnp.concatenate(_coefficients(params, side, stats.U.shape[0] - 1), axis=1)
        cMt = cross @ M.T
        return second - cMt - cMt.T + M @ zz @ M.T

    dev = stats.m0_smoothed - m0
    initial = gaussian_term(P0, stats.P0_smoothed + jnp.outer(dev, dev))
    transition = gaussian_term(Q, scatter("transition"))
    observation = gaussian_term(R, scatter("observation"))
    return b * initial + n * (transition + observation)


def expected_log_joint(
    params: LGSSM, stats: SufficientStats, *, num_sequences: int = 1
) -> jax.Array:
    r"""Evaluate the EM objective ``Q(theta, theta_n) = E[log p(x_0:N, y_1:N | theta)]``.

    The expectation is under ``p(x_0:N | y_1:N, theta_n)``, summarised by ``stats`` (from
    ``e_step(theta_n, ys)``); ``params`` is ``theta``. In terms of the N-normalised
    statistics: the transition and observation terms are multiplied
    by ``N = stats.num_steps``, the initial-state term is not:

    .. math::

        -\tfrac12 \log|2\pi P_0| - \tfrac12 \mathrm{tr}\,P_0^{-1}[P_0^s +
        (m_0^s - m_0)(m_0^s - m_0)^T]
        - \tfrac N2 \log|2\pi Q| - \tfrac N2 \mathrm{tr}\,Q^{-1}[\Sigma - C A^T - A C^T +
        A \Phi A^T]
        - \tfrac N2 \log|2\pi R| - \tfrac N2 \mathrm{tr}\,R^{-1}[D - B H^T - H B^T +
        H \Sigma H^T].

    For statistics pooled over ``B`` sequences (``num_steps = B * N``) pass
    ``num_sequences=B``: the initial-state term is then multiplied by ``B``, giving the sum of
    the sequences' objectives. It is differentiable in ``params`` (``jax.grad``); by Fisher's
    identity its gradient at ``theta = theta_n`` equals that of ``log p(y | theta)``.
    ``P0``, ``Q`` and ``R`` are symmetrised before use, so gradients with respect to them are
    symmetric.

    Args:
        params: :class:`~jaxssm.LGSSM` ``theta``.
        stats: :class:`~jaxssm.SufficientStats` computed at ``theta_n``.
        num_sequences: the number of sequences pooled in ``stats`` (``B``), a positive int.

    **Values.** Called eagerly, ``params`` are checked as by :func:`~jaxssm.validate_params`
    and ``P0``, ``Q``, ``R`` must be positive definite (their log-determinants enter; a
    singular one is an error, not ``-inf`` or NaN); ``stats`` must be finite with
    ``num_steps >= 1``. Under ``jit`` or ``vmap`` nothing is checked: an indefinite or
    singular covariance gives NaN or ``-inf``; use :func:`~jaxssm.check_values` under
    :func:`jax.experimental.checkify.checkify` for an error there.

    Returns:
        A scalar with the parameters' dtype.

    Raises:
        ValueError: ``stats`` shapes that do not match ``params``, a time-varying model,
            inputs or offsets without input sums; eagerly, invalid ``params`` values, a
            singular ``P0``, ``Q`` or ``R``, non-finite ``stats``, ``stats.num_steps < 1``
            or ``num_sequences < 1``.
        TypeError: ``stats`` is not a :class:`~jaxssm.SufficientStats`, or ``num_sequences``
            is not an int.
    """
    params = prologue(params).params
    stats = _check_stats(stats, params)
    _check_stats_values(stats)
    check_positive_definite(params, ("P0", "Q", "R"), "expected_log_joint")
    if not isinstance(num_sequences, jax.core.Tracer):
        num_sequences = check_int(
            num_sequences, "num_sequences", hint="the number of sequences pooled in stats"
        )
    if _model.time_varying_names(params):
        raise ValueError(
            "expected_log_joint needs a time-invariant model (pooled statistics cannot weigh "
            f"each step by its own matrices), got time-varying "
            f"{', '.join(_model.time_varying_names(params))}"
        )
    if stats.U is None and _model.has_extras(params):
        raise ValueError(
            "params has inputs or offsets but stats have no input sums (stats.U is None); "
            "compute stats with e_step on this model"
        )
    return _expected_log_joint(params, stats, num_sequences)
