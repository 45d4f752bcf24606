r"""The subspace start (``H`` learned): canonical variate analysis, of the N4SID family.

**Subspace start** (``H`` learned; canonical variate analysis, of the N4SID family). Past
``p_k = [y_{k-1}; ..; y_{k-i}; u_{k-1}; ..; u_{k-i}]`` and future ``f_k = [y_k; ..;
y_{k+i-1}]`` stacked for every ``k`` (block Hankel matrices), ``f`` is regressed on ``p``
and the future inputs; the predicted part ``O_k = L_p p_k`` (the oblique projection, ``=
Gamma_i s_k`` for a state sequence ``s_k``) is weighted by ``Sigma_ff^{-1/2}`` and its top
``D`` principal directions give the states ``s_k``. Then ``[A, A B, b]`` is the regression of
``s_{k+1}`` on ``[s_k; u_k; 1]`` and ``[H, H B + D, d]`` that of ``y_k`` on the same, with
residuals ``w_k``, ``v_k`` (the innovations form: ``s_k + B u_k`` estimates the Kalman
predicted state ``x_{k|k-1}``). With ``S = 0`` assumed and ``P`` the steady predicted
covariance, ``Cov(w, v) = A P H^T``, ``Cov(v) = H P H^T + R`` and ``Cov(w) = A P H^T
Cov(v)^{-1} H P A^T``, which give ``P``, then ``R = Cov(v) - H P H^T`` and the Riccati
equation's ``Q = P - A P A^T + Cov(w)``.

References:
    P. Van Overschee and B. De Moor, *Subspace Identification for Linear Systems* (1996);
    W. E. Larimore, "Canonical variate analysis in identification, filtering, and adaptive
    control", IEEE CDC 1990.
"""

from __future__ import annotations

import math

import numpy as np

from jaxssm._learn.moments import (
    clip_psd,
    feasible,
    floor_cov,
    inv_sqrt,
    lstsq,
    mean_variance,
    spectral_radius,
    stack,
    sym,
    symmetric_solve,
    var1,
)

__all__ = ["subspace_horizon", "subspace_start"]


def subspace_horizon(num_steps: int, D: int, Dy: int, Du: int = 0) -> int:
    """Return the number ``i`` of past and of future block rows of the subspace start.

    ``i_min = ceil(D / Dy) + 1`` makes ``Dy i > D``, so the ``i``-step observability matrix
    can have rank ``D``; the target ``max(2 i_min, ceil(10 / Dy))`` lets the finite past
    approximate the Kalman state (its error decays as ``(A - K H)^i``); the cap keeps at
    least ``10 i (Dy + Du)`` Hankel columns, ten per past and future variable.

    Raises:
        ValueError: ``num_steps`` is too short for ``i_min`` under that cap.
    """
    i_min = -(-D // Dy) + 1
    target = max(2 * i_min, math.ceil(10 / Dy))

    def columns_ok(i):
        return num_steps - 2 * i + 1 >= 10 * i * (Dy + Du)

    if not columns_ok(i_min):
        need = 2 * i_min - 1 + 10 * i_min * (Dy + Du)
        raise ValueError(
            f"the subspace start for D = {D} states needs a horizon of at least {i_min} block "
            f"rows (Dy i > D with Dy = {Dy}) and so at least {need} steps in a sequence, got "
            f"{num_steps}; use a smaller state dimension or more data"
        )
    i = i_min
    while i < target and columns_ok(i + 1):
        i += 1
    return i


def _hankel(seqs, i: int, offsets: bool):
    """Stack the block Hankel rows of every sequence, for each ``k`` with a full past and future.

    Past ``[y_{k-1}..y_{k-i}, u_{k-1}..u_{k-i}]``, future ``[y_k..y_{k+i-1}]``, future
    inputs ``[u_k..u_{k+i-1}, 1]`` and ``(sequence, k)`` of each row.
    """
    P, F, Uf, S = [], [], [], []
    for j, (y, u) in enumerate(seqs):
        n = len(y)
        ks = np.arange(i, n - i + 1)
        if ks.size == 0:
            continue
        past = [y[ks - lag] for lag in range(1, i + 1)]
        if u is not None:
            past += [u[ks - lag] for lag in range(1, i + 1)]
        fut_u = [] if u is None else [u[ks + lag] for lag in range(i)]
        if offsets:
            fut_u.append(np.ones((ks.size, 1)))
        P.append(np.concatenate(past, axis=1))
        F.append(np.concatenate([y[ks + lag] for lag in range(i)], axis=1))
        Uf.append(np.concatenate(fut_u, axis=1) if fut_u else np.zeros((ks.size, 0)))
        S.append(np.stack([np.full(ks.size, j), ks], axis=1))
    return stack(P), stack(F), stack(Uf), stack(S)


def subspace_start(p: dict, names: tuple[str, ...], seqs) -> tuple[dict, list]:
    if "A" not in names:
        raise ValueError(
            "initialize learns H by subspace identification, which also fixes the state basis "
            "and so A: include 'A' in update (or keep H known for the regression start)"
        )
    D = p["A"].shape[0]
    Dy = seqs[0][0].shape[1]
    Du = 0 if seqs[0][1] is None else seqs[0][1].shape[1]
    learn = {n: n in names for n in ("B", "b", "D", "d", "Q", "R")}
    offsets = learn["b"] or learn["d"]
    i = subspace_horizon(max(len(y) for y, _ in seqs), D, Dy, Du)
    Pm, F, Uf, rows = _hankel(seqs, i, offsets)
    # Oblique projection of the future on the past along the future inputs (and 1).
    L = lstsq(np.concatenate([Pm, Uf], axis=1), F)
    Ob = Pm @ L[:, : Pm.shape[1]].T
    Ft = F - Uf @ lstsq(Uf, F).T
    W1 = inv_sqrt(Ft.T @ Ft / len(F))
    lam, U = np.linalg.eigh(sym(W1 @ (Ob.T @ Ob / len(Ob)) @ W1))
    s = Ob @ W1 @ U[:, ::-1][:, :D]  # states in the canonical-variate basis

    def regress(T, Z, intercept):
        Z = np.concatenate([Z, np.ones((len(Z), 1))], axis=1) if intercept else Z
        M = lstsq(Z, T)
        return M, T - Z @ M.T

    y_now = np.stack([seqs[j][0][k] for j, k in rows])
    u_now = None if Du == 0 else np.stack([seqs[j][1][k] for j, k in rows])
    obs_z = s if Du == 0 else np.concatenate([s, u_now], axis=1)
    d_fixed = np.zeros(Dy) if learn["d"] or p["d"] is None else p["d"]
    if offsets and not learn["d"]:
        # The states are centred; carry the data's mean in them (through b) instead of d.
        Mo, _ = regress(y_now - d_fixed, obs_z, True)
        s = s + np.linalg.lstsq(Mo[:, :D], Mo[:, -1], rcond=None)[0]
        obs_z = s if Du == 0 else np.concatenate([s, u_now], axis=1)
    Mo, v = regress(y_now - d_fixed, obs_z, learn["d"])
    nxt = np.flatnonzero((rows[1:, 0] == rows[:-1, 0]) & (rows[1:, 1] == rows[:-1, 1] + 1))
    Mt, w = regress(s[nxt + 1], obs_z[nxt], learn["b"])
    A, H = Mt[:, :D], Mo[:, :D]
    rho_data = spectral_radius(var1(seqs))
    if spectral_radius(A) >= 1.0 and rho_data < 1.0:
        A = A * (0.5 * (1.0 + rho_data) / spectral_radius(A))
        Mt = Mt.copy()
        Mt[:, :D] = A
        Zt = obs_z[nxt]
        Zt = np.concatenate([Zt, np.ones((len(Zt), 1))], axis=1) if learn["b"] else Zt
        w = s[nxt + 1] - Zt @ Mt.T
    out = {"A": A, "H": H}
    G_u, Dprime = Mt[:, D : D + Du], Mo[:, D : D + Du]
    B = np.linalg.pinv(A) @ G_u if learn["B"] else (np.zeros((D, Du)) if p["B"] is None else p["B"])
    if learn["B"]:
        out["B"] = B
    if learn["D"]:
        out["D"] = Dprime - H @ B
    if learn["b"]:
        out["b"] = Mt[:, -1]
    if learn["d"]:
        out["d"] = Mo[:, -1]
    # Noise covariances from the innovations form (S = 0): Cov(w, v) = A P H^T.
    vn = v[nxt]
    G = w.T @ vn / len(w)
    Sv = sym(v.T @ v / len(v))
    Sw = sym(w.T @ w / len(w))
    P = clip_psd(symmetric_solve(A, H, G))
    # P is weakly identified where A or H is near singular; scale it back so that R and Q
    # stay positive semi-definite.
    P = P * feasible([(Sv, -H @ P @ H.T), (Sw, P - A @ P @ A.T)])
    Q = floor_cov(P - A @ P @ A.T + Sw, mean_variance(s))
    if learn["R"]:
        out["R"] = floor_cov(Sv - H @ P @ H.T, float(np.trace(Sv)) / Dy)
    if learn["Q"]:
        out["Q"] = Q
    else:
        # Choose the state basis in which the estimated Q is the given one.
        Qf = np.asarray(p["Q"], np.float64)
        if np.linalg.eigvalsh(sym(Qf))[0] > 0:
            T = np.linalg.cholesky(sym(Qf)) @ np.linalg.inv(np.linalg.cholesky(Q))
            Ti = np.linalg.inv(T)
            out["A"], out["H"] = T @ out["A"] @ Ti, out["H"] @ Ti
            if "B" in out:
                out["B"] = T @ out["B"]
            if "b" in out:
                out["b"] = T @ out["b"]
            s = s @ T.T
    # The states of each sequence, for m0: predicted states x_{k|k-1} = s_k + B u_k.
    x_now = s if Du == 0 else s + u_now @ out.get("B", B).T
    states = [x_now[rows[:, 0] == j] for j in range(len(seqs))]
    return out, states
