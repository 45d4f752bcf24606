r"""A start for learning, estimated from the data's moments: regression or subspace identification.

Two estimators, chosen by whether ``H`` is learned (both in float64 numpy on the host: they
run once per fit, on concrete arrays, and make data-dependent choices):

**Regression start** (``H`` known, of full column rank). With ``H^+`` its pseudo-inverse,
``xh_k = H^+ (y_k - D u_k - d)`` is the state plus white noise ``v_k = H^+ r_k`` of covariance
``W = H^+ R H^{+T}``. The transition is the regression of ``xh_k`` on ``z_k = [xh_{k-1}; u_k;
1]`` (the blocks that the model has or ``update`` names). Ordinary least squares is biased
here (errors in variables: ``E[xh_{k-1} xh_{k-1}^T]`` holds ``W``), so the moments are
corrected before solving, the consistent moment-matching estimator:

.. math::

    \Gamma_{tt} = \overline{xh_k xh_k^T} - W, \quad
    \Gamma_{tz} = \overline{xh_k z_k^T}, \quad
    \Gamma_{zz} = \overline{z_k z_k^T} - \mathrm{diag}(W, 0), \quad
    M = \Gamma_{tz} \Gamma_{zz}^{-1}, \quad
    Q = \Gamma_{tt} - \Gamma_{tz} M^T - M \Gamma_{zt} + M \Gamma_{zz} M^T,

(bars: averages over steps; ``v_k`` is independent of ``z_k``'s noise ``v_{k-1}``, so
``Gamma_tz`` needs no correction). ``Q`` is then the covariance of the residual ``q_k + v_k -
A v_{k-1}`` less ``W + A W A^T``. With ``R = 0`` and ``H = I`` this is exactly the
least-squares VAR(1) of ``y`` (residual covariance normalised by the number of pairs).

**Subspace start** (``H`` learned): :mod:`jaxssm._learn.subspace`.

See :func:`initialize` for the rules on noise, stability, inputs, offsets and gaps.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxssm._api.inference import log_likelihood
from jaxssm._args.checks import check_update
from jaxssm._args.prologue import prologue
from jaxssm._args.validation import validate_params
from jaxssm._base import model as _model
from jaxssm._base.types import LGSSM
from jaxssm._learn.moments import (
    clip_psd,
    feasible,
    floor_cov,
    mean_variance,
    moments,
    regression,
    right_solve,
    sequences,
    shrink,
    stack,
    stationary_cov,
    sym,
    to_stable,
)
from jaxssm._learn.subspace import subspace_horizon, subspace_start

__all__ = ["initialize", "subspace_horizon"]


# ---------------------------------------------------------------- the regression start


def _left_inverse(H: np.ndarray, R: np.ndarray | None) -> np.ndarray:
    """Return a left inverse ``L`` of ``H`` (``L H = I``) to read the states off ``y``.

    Generalised least squares ``(H^T R^-1 H)^-1 H^T R^-1`` for a positive definite ``R`` and
    ``Dy > D`` (the states with the least noise), ``H^+`` otherwise.
    """
    if R is not None and H.shape[0] > H.shape[1]:
        lam = np.linalg.eigvalsh(sym(R))
        if lam[0] > 1e-8 * lam[-1]:
            RiH = np.linalg.solve(sym(R), H)
            return np.linalg.solve(H.T @ RiH, RiH.T)
    return np.linalg.pinv(H)


def _regression_start(p: dict, names: tuple[str, ...], seqs, R_weight=None) -> list:
    H = p["H"]
    Dy, D = H.shape
    Du = 0 if seqs[0][1] is None else seqs[0][1].shape[1]
    sv = np.linalg.svd(H, compute_uv=False)
    if D > Dy or sv[-1] <= 1e-10 * sv[0]:
        raise ValueError(
            f"initialize with H known needs H of full column rank D = {D} (its states are read "
            f"off the observations through H^+), got H {H.shape} of rank "
            f"{int(np.sum(sv > 1e-10 * sv[0]))}; include 'H' (and 'A') in update for the "
            "subspace start"
        )
    # x' = L y reads the states off y; (I - H L) y holds what the states cannot explain.
    Hp = _left_inverse(H, p["R"] if "R" not in names else R_weight)
    Pperp = np.eye(Dy) - H @ Hp
    zero = {"B": np.zeros((D, Du)), "b": np.zeros(D), "D": np.zeros((Dy, Du)), "d": np.zeros(Dy)}
    fixed = {n: (zero[n] if n in names or p[n] is None else p[n]) for n in zero}
    learn = {n: n in names for n in ("A", "B", "b", "D", "d", "Q", "R")}
    # y with the known observation offsets removed, its out-of-range part, and x' = H^+ y.
    yk = [y - (0.0 if u is None else u @ fixed["D"].T) - fixed["d"] for y, u in seqs]
    xp = [y @ Hp.T for y in yk]
    # Out-of-range parts of D and d: regress (I - H H^+) y on [u; 1].
    out = [y @ Pperp.T for y in yk]
    V = []
    for y, u in seqs:
        cols = ([u] if learn["D"] else []) + ([np.ones((len(y), 1))] if learn["d"] else [])
        V.append(np.concatenate(cols, axis=1) if cols else np.zeros((len(y), 0)))
    Vall, Oall = stack(V), stack(out)
    G_perp = np.zeros((Dy, Vall.shape[1]))
    if Vall.shape[1]:
        G_perp = right_solve(sym(Vall.T @ Vall), Oall.T @ Vall)
    rho = [o - v @ G_perp.T for o, v in zip(out, V, strict=True)]
    D_perp = G_perp[:, :Du] if learn["D"] else np.zeros((Dy, Du))
    d_perp = G_perp[:, -1] if learn["d"] else np.zeros(Dy)

    # Transition regressors z_k = [x'_{k-1}; u_k; u_{k-1}; 1] (blocks present / free).
    has_u = Du > 0 and (learn["B"] or learn["D"] or p["B"] is not None)
    has_ul = Du > 0 and learn["D"]
    has_1 = learn["b"] or learn["d"] or p["b"] is not None
    blocks = [("x", D, learn["A"], p["A"])]
    if has_u:
        blocks.append(("u", Du, learn["B"] or learn["D"], fixed["B"]))
    if has_ul:
        blocks.append(("ul", Du, True, np.zeros((D, Du))))
    if has_1:
        blocks.append(("1", 1, learn["b"] or learn["d"], fixed["b"][:, None]))
    free = np.concatenate([np.full(w, f) for _, w, f, _ in blocks])
    M_fixed = np.concatenate([m for *_, m in blocks], axis=1)
    q = free.size

    def design(start, lag=1):
        """Stack targets x'_k and regressors z_k (x' lagged ``lag``) for k >= ``start``.

        Also each row's sequence number; all sequences pooled.
        """
        T, Z, S = [], [], []
        for j, (x, (_, u)) in enumerate(zip(xp, seqs, strict=True)):
            n = len(x)
            if n <= start:
                continue
            ks = np.arange(start, n)
            cols = [x[ks - lag]]
            if has_u:
                cols.append(u[ks])
            if has_ul:
                cols.append(u[ks - 1])
            if has_1:
                cols.append(np.ones((ks.size, 1)))
            T.append(x[ks])
            Z.append(np.concatenate(cols, axis=1))
            S.append(np.full(ks.size, j))
        if not T or sum(len(t) for t in T) < q + 2:
            raise ValueError(
                f"too few steps for the regression start: it needs at least {q + 2 + start} "
                f"steps for {q} regressors, got {max(len(x) for x in xp)}"
            )
        return stack(T), stack(Z), stack(S)

    T1, Z1, _ = design(1)
    Stt, Stz, Szz = moments(T1, Z1)
    scale = mean_variance(T1)
    M_iv = None
    if learn["R"]:
        W, M_iv = _noise_from_lag(design, free, M_fixed, D)
    else:
        W = Hp @ p["R"] @ Hp.T
    Wz = np.zeros((q, q))
    Wz[:D, :D] = W
    alpha = shrink(Szz, Wz)
    W = alpha * W
    Wz = alpha * Wz
    M_data, _ = regression(Stt, Stz, Szz, free, M_fixed)

    def finish(M_c):
        """Build the start for consistent coefficients ``M_c`` (made stable, then split)."""

        def refit(weight):
            M = M_data + weight * (M_c - M_data)
            StzMt = Stz @ M.T
            return M, sym(Stt - W - StzMt - StzMt.T + M @ (Szz - Wz) @ M.T)

        if learn["A"]:
            M, Q = to_stable(M_c[:, :D], M_data[:, :D], refit)
        else:
            M, Q = refit(1.0)
        out_params = {}
        A = M[:, :D]
        col = D
        G_u = M[:, col : col + Du] if has_u else np.zeros((D, Du))
        col += Du if has_u else 0
        G_l = M[:, col : col + Du] if has_ul else np.zeros((D, Du))
        col += Du if has_ul else 0
        beta = M[:, col] if has_1 else np.zeros(D)
        # x'_k = x_k + H^+ D u_k + c + noise gives G_u = B + H^+ D, G_l = -A H^+ D and
        # beta = b + (I - A) c: split them.
        HpD = np.zeros((D, Du))
        if learn["D"]:
            HpD = -np.linalg.pinv(A) @ G_l if learn["B"] else G_u - fixed["B"]
        c = np.zeros(D)
        if learn["d"] and not learn["b"]:
            c = np.linalg.lstsq(np.eye(D) - A, beta - fixed["b"], rcond=None)[0]
        if learn["A"]:
            out_params["A"] = A
        if learn["Q"]:
            out_params["Q"] = floor_cov(Q, scale)
        if learn["B"]:
            out_params["B"] = G_u - HpD
        if learn["b"]:
            out_params["b"] = beta - (np.eye(D) - A) @ c
        if learn["D"]:
            out_params["D"] = H @ HpD + D_perp
        if learn["d"]:
            out_params["d"] = H @ c + d_perp
        states = [
            x - (0.0 if u is None else u @ HpD.T) - c for x, (_, u) in zip(xp, seqs, strict=True)
        ]
        if learn["R"]:
            Xs, Rh = stack(states), stack(rho)
            n = Xs.shape[0]
            Srx = Rh.T @ Xs / n @ H.T
            R = Rh.T @ Rh / n + Srx + Srx.T + H @ W @ H.T
            out_params["R"] = floor_cov(R, mean_variance(stack(yk)))
        return out_params, states

    # The consistent coefficients: the regression on noise-corrected moments; with R learned
    # also the IV coefficients (robust where W is poorly determined), for the caller to
    # choose between by likelihood.
    candidates = [finish(regression(Stt - W, Stz, Szz - Wz, free, M_fixed)[0])]
    if M_iv is not None:
        candidates.append(finish(M_iv))
    return candidates


def _noise_from_lag(design, free, M_fixed, D):
    """Return ``W = H^+ R H^{+T}`` from the residuals' lag-1 covariance, and the IV coefficients.

    The instrumental-variable regression (``x'_{k-2}`` instruments ``x'_{k-1}``) is
    consistent whatever ``W``; its residual ``e_k = q_k + v_k - A v_{k-1}`` has
    ``E[e_k e_{k-1}^T] = -A W``, solved in least squares (``W = -A^+ E[e_k e_{k-1}^T]``),
    symmetrised, clipped to the PSD cone and scaled back (if needed) so that ``Q`` and the
    states' covariance stay PSD. Where ``A`` is near singular ``W`` is weakly identified.
    """
    T, Z, seq = design(2)
    _, Zeta, _ = design(2, lag=2)  # the same rows with x'_{k-2}: the instruments
    n = T.shape[0]
    M = M_fixed.copy()
    if free.any():
        X = ~free
        Sz = Z.T @ Zeta / n
        target = T.T @ Zeta[:, free] / n - M[:, X] @ Sz[np.ix_(X, free)]
        M[:, free] = np.linalg.lstsq(Sz[np.ix_(free, free)].T, target.T, rcond=None)[0].T
    e = T - Z @ M.T
    same = seq[1:] == seq[:-1]  # consecutive rows of one sequence
    lag1 = e[1:][same].T @ e[:-1][same] / max(int(same.sum()), 1)
    A = M[:, :D]
    W = clip_psd(-np.linalg.pinv(A) @ lag1)
    # Scale W back where it would leave no room for Q (Cov(e) = Q + W + A W A^T) or for the
    # states' own variance (E[x' x'^T] = E[x x^T] + W).
    See, Sxx = sym(e.T @ e / n), sym(Z[:, :D].T @ Z[:, :D] / n)
    return W * feasible([(See, -(W + A @ W @ A.T)), (Sxx, -W)]), M


# ---------------------------------------------------------------- the entry point


def initialize(
    params: LGSSM,
    ys: ArrayLike,
    *,
    update: str | Iterable[str] = ("A", "Q"),
    inputs: ArrayLike | None = None,
) -> LGSSM:
    r"""Estimate a start for the fields in ``update`` from the data's moments; keep the others.

    A valid model near the maximum likelihood, to start :func:`~jaxssm.fit_em` or
    :func:`~jaxssm.fit` from instead of a guess. Two estimators (module docstring for the
    derivations):

    * **Regression start**, when ``H`` is known (not in ``update``; full column rank). The
      states are read off the data, ``xh_k = H^+ (y_k - D u_k - d)`` (``y`` itself for
      ``H = I``), and ``(A, B, b)`` is the regression of ``xh_k`` on ``[xh_{k-1}; u_k; 1]``
      with the moments corrected for the observation noise ``W = H^+ R H^{+T}`` that both
      sides carry (errors in variables): ``A = C_1 (C_0 - W)^{-1}`` in the plain case
      (``C_j`` the lag-``j`` second moments of ``xh``), and ``Q = C_0 - W - A C_1^T``
      ``- C_1 A^T + A (C_0 - W) A^T``, the residual covariance less ``W + A W A^T``. This is
      the consistent moment estimator; with ``R = 0`` it is the least-squares VAR(1).
      With ``Dy > D`` and ``R`` known, ``H^+`` is the generalised least-squares left inverse
      ``(H^T R^{-1} H)^{-1} H^T R^{-1}`` (the states with the least noise).
      When ``R`` is learned too, ``W`` comes first from the residuals' lag-1 covariance
      ``E[e_k e_{k-1}^T] = -A W`` of an instrumental-variable regression (``xh_{k-2}``
      instruments ``xh_{k-1}``), scaled back if needed so that ``Q`` stays PSD; ``R = H W H^T``
      plus the parts of ``R`` outside the range of ``H``, which the residuals of ``(I - H
      H^+) y`` give directly. Two consistent starts follow (the IV coefficients, and the
      corrected regression with this ``W``) and the one with the larger log-likelihood is
      returned (one filter pass each; with ``Dy > D`` the two are formed again with ``H^+``
      weighted by the estimated ``R``). ``W`` is weakly identified along directions where
      ``A`` is near singular (there noise and innovation look alike), and the start is
      noisier than with ``R`` known.
    * **Subspace start**, when ``H`` is learned (``A`` must be learned with it: the two fix
      the state basis). Canonical variate analysis on block Hankel matrices of ``i`` past and
      ``i`` future rows (:func:`subspace_horizon` chooses ``i`` from ``N``, ``D``, ``Dy``),
      giving a state sequence of dimension ``D = params.A.shape[0]``; then ``A, H`` (and
      ``B, b, D, d``) by regression on the states and ``Q``, ``R`` (with ``S = 0``) from the
      residual covariances of the innovations form; ``P`` is the least-squares symmetric
      solution of ``A P H^T = Cov(w, v)``, scaled back if needed so that ``Q`` and ``R`` stay
      PSD. With ``Dy < D`` (or a near-singular ``A`` or ``H``) the split of the noise between
      ``Q`` and ``R`` is not determined by the output's moments and this choice is one of
      many; the start is then approximate. The result is in the canonical-variate
      state basis, except that a fixed, positive definite ``Q`` (not in ``update``) picks the
      basis in which the estimated ``Q`` equals it. Other fixed fields that depend on the
      basis (``B``, ``b``, ``m0``, ``P0``) are kept as given.

    Rules common to both:

    * **Covariances** are projected to the positive semi-definite cone with eigenvalues at
      least ``1e-6`` times their scale (their largest eigenvalue, or the data's variance if
      that is larger), so the start is a valid model with nonsingular ``Q`` and ``R``. Where
      the noise correction would make a corrected moment indefinite (an overstated ``R``, a
      short series) it is scaled back until that moment is safely positive definite.
    * **Stability.** If the estimated ``A`` has spectral radius ``>= 1`` while the data's own
      least-squares VAR(1) is stable (the data are), ``A`` is moved toward that stable fit
      (regression start; the subspace start scales ``A``) until its spectral radius is at
      most ``(1 + rho_data) / 2``, and ``Q`` is re-estimated for it. Data whose own VAR(1) is
      not stable (a random walk) keep the unstable estimate.
    * **Inputs and offsets.** ``u_k`` and a constant enter the regressions where the model has
      ``B, D`` or ``b, d`` or ``update`` names them; moments are raw (uncentred), as the
      model's own. In the regression start ``x'_k = H^+ y_k`` obeys ``x'_k = A x'_{k-1} +
      (B + H^+ D) u_k - A H^+ D u_{k-1} + b + (I - A) H^+ d``, from which ``B`` and the
      in-range part of ``D`` are solved (with ``u_{k-1}`` as a regressor when ``D`` is
      learned); the parts of ``D, d`` outside the range of ``H`` come from regressing
      ``(I - H H^+) y`` on ``[u; 1]``. When ``b`` and ``d`` are both learned, the constant is
      put in ``b`` (the in-range part of ``d`` is not separable from it and is set to zero).
      In the subspace start the transition coefficient of ``u_k`` is ``A B`` (``B = A^+ (A
      B)``) and the observation's is ``H B + D``.
    * **Missing entries** (NaN) are filled with their column's mean over the observed
      entries before the moments are formed; trailing all-NaN rows of a sequence are dropped.
      The start is then approximate (the filled entries shrink the autocovariances), still
      valid; EM from it uses the gaps exactly.
    * **Batches** ``ys [B, N, Dy]``: the moments are pooled over the sequences (lags never
      cross from one sequence to the next).
    * ``m0`` is the estimated state of the first step (averaged over sequences); for the
      subspace start, whose first ``i`` steps have no past to estimate a state from, the state
      at step ``i + 1``. ``P0`` is the stationary covariance of the estimated model (``P =
      A P A^T + Q``) when ``A`` is stable, else the sample covariance of the estimated states.

    It runs on the host in float64 numpy (one pass of moments, ``O(N (Dy i)^2)`` for the
    subspace start) and returns the parameters' dtype; it is not traceable (no ``jit``,
    ``vmap``, ``grad``).

    Args:
        params: an :class:`~jaxssm.LGSSM`, time-invariant: the fixed fields and the shapes (``D``
            from ``A``).
        ys: observations ``[N, Dy]`` or a batch ``[B, N, Dy]``; NaN marks a missing entry.
        update: a field name or names from ``"m0", "P0", "A", "Q", "H", "R", "B", "b", "D",
            "d"``; an absent ``B, b, D, d`` named here is estimated.
        inputs: ``u_1..u_N`` ``[N, Du]`` (``[B, N, Du]`` with a batch) when the model has ``B`` or
            ``D`` or ``update`` names them.

    Returns:
        An :class:`~jaxssm.LGSSM` with the fields in ``update`` estimated and the others as
        given, in the dtype of ``params``; it passes :func:`~jaxssm.validate_params`.

    Raises:
        ValueError: ``update`` is empty, repeats or names an unknown field; a field varies
            over time; ``H`` is known but not of full column rank; ``H`` is learned without
            ``A``; the series is too short for the regressions, or for the subspace horizon
            that ``D`` needs (``Dy i > D``); a column of ``ys`` is never observed; or as
            :func:`~jaxssm.e_step` for shapes and dtypes.
        TypeError: an argument is traced (under ``jit``, ``vmap`` or ``grad``), or as
            :func:`~jaxssm.e_step`.

    References:
        P. Van Overschee and B. De Moor, *Subspace Identification for Linear Systems*
        (1996), ch. 3-4 (stochastic and combined identification; the CVA weighting);
        S. Gibson and B. Ninness, "Robust maximum-likelihood estimation of multivariable
        dynamic systems", Automatica 41 (2005) (a subspace start, then EM);
        W. A. Fuller, *Measurement Error Models* (1987), section 1.2 (moment correction for
        errors in variables).
    """
    names = check_update(update)
    params, ys, inputs, _ = prologue(params, ys, inputs, allow_batch=True, update=names)
    varying = _model.time_varying_names(params)
    if varying:
        raise ValueError(
            "initialize needs a time-invariant model (its estimators are moment regressions "
            f"with one matrix per field), got time-varying {', '.join(varying)}"
        )
    for x in (ys, inputs, *params):
        if isinstance(x, jax.core.Tracer):
            raise TypeError(
                "initialize runs on concrete arrays (its estimators make data-dependent "
                "choices on the host); call it outside jit, vmap and grad"
            )
    dtype = params.A.dtype
    p = {n: None if x is None else np.asarray(x, np.float64) for n, x in params._asdict().items()}
    seqs = sequences(ys, inputs)
    if not seqs:
        raise ValueError("ys holds no observed entry")
    if "H" in names:
        return _assemble(p, names, *subspace_start(p, names, seqs), dtype)
    candidates = _regression_start(p, names, seqs)
    if len(candidates) == 1:
        return _assemble(p, names, *candidates[0], dtype)

    def best(cands):
        starts = [_assemble(p, names, out, states, dtype) for out, states in cands]
        lls = np.array([float(log_likelihood(s, ys, inputs=inputs)) for s in starts])
        i = int(np.argmax(np.where(np.isfinite(lls), lls, -np.inf)))
        return starts[i], lls[i], cands[i][0]

    start, ll, out = best(candidates)
    if p["H"].shape[0] > p["H"].shape[1]:  # Dy > D: read the states off y weighted by R
        again, ll2, _ = best(_regression_start(p, names, seqs, R_weight=out["R"]))
        start = again if ll2 > ll else start
    return start


def _assemble(p: dict, names: tuple[str, ...], out: dict, states: list, dtype) -> LGSSM:
    """Put a start together: the estimated fields, ``m0`` and ``P0``, the kept fields."""
    new = {**p, **out}
    if "m0" in names:
        new["m0"] = np.mean([x[0] for x in states], axis=0)
    if "P0" in names:
        P0 = stationary_cov(new["A"], new["Q"])
        if P0 is None:
            X = stack(states)
            P0 = np.cov(X.T, bias=True).reshape(X.shape[1], X.shape[1])
        new["P0"] = floor_cov(P0, float(np.trace(P0)) / P0.shape[0])
    result = LGSSM(**{n: None if x is None else jnp.asarray(x, dtype) for n, x in new.items()})
    return validate_params(result)
