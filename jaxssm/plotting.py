"""Plots of SARCOS-style series and their smoothed estimates (matplotlib, imported lazily).

The data layout is SARCOS's (:mod:`jaxssm.datasets`): ``3 J`` columns for ``J`` joints, all
positions first, then all velocities, then all accelerations. :func:`plot_data` and
:func:`plot_estimate` draw on three axes (positions, velocities, accelerations) with one
colour per joint (``C0``, ``C1``, ...). :func:`plot_fit` and :func:`plot_forecast` draw that
overlay by default, or, with ``joints=``, small multiples: one row of three panels per joint
(one band per panel), with the fit's residuals under each row on request.

matplotlib is an optional dependency (the ``plot`` extra: ``pip install "jaxssm[plot]"``).
Importing this module does not import it; the first plotting call does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from jaxssm._args.checks import check_int

__all__ = ["plot_data", "plot_estimate", "plot_fit", "plot_forecast", "QUANTITIES"]

#: Titles of the three axes, in column-block order.
QUANTITIES = ("positions", "velocities", "accelerations")


def _require_matplotlib():
    """Import and return ``matplotlib.pyplot``, or raise an ImportError naming the extra."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "jaxssm.plotting needs matplotlib, an optional dependency: "
            'pip install "jaxssm[plot]" (or pip install matplotlib)'
        ) from err
    return plt


def _check_axes(axs: Any) -> list:
    axes = list(np.ravel(np.asarray(axs, dtype=object)))
    if len(axes) != 3:
        raise ValueError(
            f"axs must hold 3 axes (positions, velocities, accelerations), got {len(axes)}"
        )
    return axes


def _check_series(name: str, x: ArrayLike) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 3 or x.shape[1] % 3:
        raise ValueError(
            f"{name} must have shape [T, 3 J] (J joints: positions, velocities, "
            f"accelerations), got shape {x.shape}"
        )
    return x


def _check_time(t: ArrayLike | None, num_rows: int) -> np.ndarray:
    if t is None:
        return np.arange(num_rows)
    t = np.asarray(t)
    if t.shape != (num_rows,):
        raise ValueError(f"t must have shape [T] = ({num_rows},), got shape {t.shape}")
    return t


def plot_data(axs: Sequence[Any], Y: ArrayLike, *, t: ArrayLike | None = None) -> list:
    """Draw data points: positions, velocities and accelerations on three axes.

    One marker line (``x`` markers, no connecting line) per joint and axis, coloured
    ``C{joint}`` and labelled ``joint {joint}``.

    Args:
        axs: three matplotlib axes (positions, velocities, accelerations).
        Y: data ``[T, 3 J]``: all positions, then all velocities, then all accelerations.
        t: time stamps ``[T]``; default ``0..T-1``.

    Returns:
        The three axes, as a list.

    Raises:
        ValueError: not three axes, or bad shapes of ``Y`` or ``t``.
        ImportError: matplotlib is not installed.
    """
    _require_matplotlib()
    axes = _check_axes(axs)
    Y = _check_series("Y", Y)
    t = _check_time(t, Y.shape[0])
    num_joints = Y.shape[1] // 3
    for block, ax in enumerate(axes):
        for j in range(num_joints):
            ax.plot(
                t,
                Y[:, block * num_joints + j],
                linestyle="none",
                marker="x",
                markersize=4,
                color=f"C{j}",
                label=f"joint {j}",
            )
    return axes


def plot_estimate(
    axs: Sequence[Any],
    means: ArrayLike,
    covs: ArrayLike,
    *,
    t: ArrayLike | None = None,
    num_sd: float = 2.0,
) -> list:
    """Draw a Gaussian estimate: mean lines with a ``mean +/- num_sd * sd`` band.

    One line and one shaded band per joint and axis, coloured ``C{joint}``.

    Args:
        axs: three matplotlib axes (positions, velocities, accelerations).
        means: ``[T, 3 J]`` estimated means (e.g. ``SmootherResult.means`` rows).
        covs: ``[T, 3 J, 3 J]`` covariances, or ``[T, 3 J]`` marginal variances.
        t: time stamps ``[T]``; default ``0..T-1``.
        num_sd: half-width of the band in standard deviations (default 2).

    Returns:
        The three axes, as a list.

    Raises:
        ValueError: not three axes, mismatched shapes, negative variances or ``num_sd``.
        ImportError: matplotlib is not installed.
    """
    _require_matplotlib()
    axes = _check_axes(axs)
    means = _check_series("means", means)
    covs = np.asarray(covs, dtype=np.float64)
    T, D = means.shape
    if covs.shape == (T, D, D):
        variances = np.diagonal(covs, axis1=1, axis2=2)
    elif covs.shape == (T, D):
        variances = covs
    else:
        raise ValueError(
            f"covs must have shape [T, D, D] = {(T, D, D)} or [T, D] = {(T, D)} to match "
            f"means, got shape {covs.shape}"
        )
    if np.any(variances < 0):
        raise ValueError("covs must have non-negative variances (diagonal entries)")
    if not np.isfinite(num_sd) or num_sd < 0:
        raise ValueError(f"num_sd must be a finite number >= 0, got {num_sd!r}")
    t = _check_time(t, T)
    half_width = num_sd * np.sqrt(variances)
    num_joints = D // 3
    for block, ax in enumerate(axes):
        for j in range(num_joints):
            col = block * num_joints + j
            ax.plot(t, means[:, col], color=f"C{j}", linewidth=1.2)
            ax.fill_between(
                t,
                means[:, col] - half_width[:, col],
                means[:, col] + half_width[:, col],
                color=f"C{j}",
                alpha=0.3,
                linewidth=0,
            )
    return axes


def _window_slice(window: Any, num_rows: int) -> slice:
    if isinstance(window, slice):
        start, stop, step = window.indices(num_rows)
        if step != 1:
            raise ValueError(f"window must have step 1, got {window}")
    else:
        try:
            start, stop = (int(w) for w in window)
        except (TypeError, ValueError):
            raise ValueError(
                f"window must be a slice or a (start, stop) pair, got {window!r}"
            ) from None
    if not 0 <= start < stop <= num_rows:
        raise ValueError(
            f"window must satisfy 0 <= start < stop <= {num_rows} (the number of rows), "
            f"got start={start}, stop={stop}"
        )
    return slice(start, stop)


def _check_joints(joints: Any, num_joints: int) -> list[int] | None:
    """``None`` (the overlay), ``"all"`` or a sequence of joint indices -> a list or None."""
    if joints is None:
        return None
    if isinstance(joints, str):
        if joints != "all":
            raise ValueError(f"joints must be None, 'all' or joint indices, got {joints!r}")
        return list(range(num_joints))
    try:
        picked = [int(j) for j in joints]
    except (TypeError, ValueError):
        raise ValueError(f"joints must be None, 'all' or joint indices, got {joints!r}") from None
    if not picked or any(not 0 <= j < num_joints for j in picked):
        raise ValueError(
            f"joints must hold at least one index in 0..{num_joints - 1} (J = {num_joints}), "
            f"got {list(picked)}"
        )
    return picked


def _small_multiples(plt, joints: list[int], residuals: bool):
    """Make a figure with one row of three panels per joint (a residual row under each).

    Returns ``(fig, panels, residual_panels)``: ``panels[i][block]`` the axes of joint
    ``joints[i]`` and quantity ``block``; ``residual_panels`` likewise, or ``None``.
    """
    rows = len(joints) * (2 if residuals else 1)
    ratios = [3, 1] * len(joints) if residuals else [1] * len(joints)
    height = 1.9 * len(joints) * (1.35 if residuals else 1.0) + 0.9
    fig, grid = plt.subplots(
        rows,
        3,
        figsize=(13, height),
        sharex=True,
        squeeze=False,
        layout="constrained",
        gridspec_kw={"height_ratios": ratios},
    )
    step = 2 if residuals else 1
    panels = [list(grid[i * step]) for i in range(len(joints))]
    residual_panels = [list(grid[i * step + 1]) for i in range(len(joints))] if residuals else None
    for i, j in enumerate(joints):
        for block, ax in enumerate(panels[i]):
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize="x-small")
            if i == 0:
                ax.set_title(QUANTITIES[block], fontsize="medium")
        panels[i][0].set_ylabel(f"joint {j}")
        if residuals:
            for ax in residual_panels[i]:
                ax.axhline(0.0, color="k", linewidth=0.6, alpha=0.6)
                ax.grid(True, alpha=0.3)
                ax.tick_params(labelsize="x-small")
            residual_panels[i][0].set_ylabel("residual", fontsize="x-small")
    for ax in grid[-1]:
        ax.set_xlabel("time step (data row)")
    return fig, panels, residual_panels


def _band(ax, t, mean, sd, num_sd: float, color: str) -> None:
    """One mean line and one ``mean +/- num_sd sd`` band on ``ax``."""
    ax.plot(t, mean, color=color, linewidth=1.2)
    ax.fill_between(t, mean - num_sd * sd, mean + num_sd * sd, color=color, alpha=0.3, linewidth=0)


def _figure_note(fig, note: str | None) -> None:
    """Write ``note`` (a warning such as "not converged") in red under the title."""
    if note:
        import textwrap

        text = "\n".join(textwrap.wrap(note, 120))
        fig.supxlabel(text, color="red", fontsize="medium", fontweight="bold")


def plot_fit(
    Y: ArrayLike,
    smoothed: Any,
    window: slice | tuple[int, int],
    *,
    num_sd: float = 2.0,
    title: str | None = None,
    joints: str | Sequence[int] | None = None,
    residuals: bool = False,
    note: str | None = None,
):
    """Plot data against the smoothed estimate over a window of rows, on a new figure.

    Row ``k`` of ``Y`` is compared with row ``k`` of the smoother, which holds when the
    model was set up with ``m0 = Y[0]`` and ``ys = Y[1:]`` (:func:`jaxssm.datasets.exercise_setup`).
    Only the window's covariance diagonals are read.

    With ``joints=None`` (default) every joint is overlaid on three axes. With ``joints``
    (``"all"`` or indices) each joint gets its own row of three panels (positions,
    velocities, accelerations): data as ``x`` markers, the smoothed mean as a line and one
    band. ``residuals=True`` adds a short panel under each, ``Y - mean`` (data minus the
    smoothed mean) about zero.

    Args:
        Y: data ``[N+1, 3 J]``.
        smoothed: a :class:`~jaxssm.SmootherResult` (or anything with ``means [N+1, 3 J]``
            and ``covs [N+1, 3 J, 3 J]``) of the same number of rows.
        window: the rows to draw, a ``slice`` or ``(start, stop)``.
        num_sd: half-width of the bands in standard deviations.
        title: figure title (optional).
        joints: ``None`` (the overlay), ``"all"`` or a sequence of joint indices (small
            multiples, one row per joint).
        residuals: with ``joints``, add a residual panel under each panel.
        note: a line written in red at the foot of the figure (e.g. that the fit did not
            converge).

    Returns:
        A ``matplotlib.figure.Figure``: three axes (positions, velocities, accelerations),
        or with ``joints`` a grid of ``3`` columns and one row per joint (two with
        ``residuals``); x axis the row index.

    Raises:
        ValueError: mismatched shapes, a window outside the rows, or bad ``joints``.
        ImportError: matplotlib is not installed.
    """
    plt = _require_matplotlib()
    Y = _check_series("Y", Y)
    means = np.asarray(smoothed.means)
    if means.shape != Y.shape:
        raise ValueError(
            f"smoothed.means must have the shape of Y {Y.shape} (rows k = 0..N), "
            f"got shape {means.shape}"
        )
    rows = _window_slice(window, Y.shape[0])
    num_joints = Y.shape[1] // 3
    picked = _check_joints(joints, num_joints)
    covs = smoothed.covs[rows]
    variances = np.diagonal(np.asarray(covs, dtype=np.float64), axis1=1, axis2=2)
    t = np.arange(rows.start, rows.stop)
    band = f"mean +/- {num_sd:g} sd" if num_sd else "mean"
    if picked is not None:
        fig, panels, residual_panels = _small_multiples(plt, picked, residuals)
        sd = np.sqrt(np.maximum(variances, 0.0))
        for i, j in enumerate(picked):
            for block in range(3):
                col = block * num_joints + j
                ax = panels[i][block]
                _band(ax, t, means[rows, col], sd[:, col], num_sd, f"C{j % 10}")
                ax.plot(t, Y[rows, col], linestyle="none", marker="x", markersize=4, color="k")
                if residual_panels is not None:
                    residual_panels[i][block].plot(
                        t, Y[rows, col] - means[rows, col], color=f"C{j % 10}", linewidth=1.0
                    )
        fig.suptitle(title or f"data (x) and smoothed estimate ({band}), per joint")
        _figure_note(fig, note)
        return fig
    fig, axs = plt.subplots(3, 1, figsize=(10, 9), sharex=True, layout="constrained")
    plot_estimate(axs, means[rows], variances, t=t, num_sd=num_sd)
    plot_data(axs, Y[rows], t=t)
    for ax, quantity in zip(axs, QUANTITIES, strict=True):
        ax.set_ylabel(quantity)
        ax.grid(True, alpha=0.3)
    axs[-1].set_xlabel("time step (data row)")
    axs[0].legend(
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize="small",
        frameon=False,
    )
    fig.suptitle(title or f"data (x) and smoothed estimate ({band})")
    _figure_note(fig, note)
    return fig


def plot_forecast(
    Y: ArrayLike,
    forecast: Any,
    *,
    history: int = 50,
    num_sd: float = 2.0,
    title: str | None = None,
    joints: str | Sequence[int] | None = None,
):
    """Plot the last ``history`` data rows and the forecast beyond them, on a new figure.

    Row ``k`` of ``Y`` is step ``k`` (``m0 = Y[0]``, ``ys = Y[1:]``, as
    :func:`jaxssm.datasets.exercise_setup` sets up), so forecast row ``j`` is drawn at step
    ``N + 1 + j`` with ``N + 1`` the number of rows of ``Y``.

    With ``joints=None`` (default) every joint is overlaid on three axes (data as ``x``
    markers). With ``joints`` (``"all"`` or indices) each joint gets its own row of three
    panels: the history as a black line, the forecast mean as a line with one band.

    Args:
        Y: data ``[N+1, 3 J]``.
        forecast: a :class:`~jaxssm.Forecast` (or anything with ``obs_means [h, 3 J]`` and
            ``obs_covs [h, 3 J, 3 J]``) of the observations.
        history: how many of the last data rows to draw (at most all of them).
        num_sd: half-width of the bands in standard deviations.
        title: figure title (optional).
        joints: ``None`` (the overlay), ``"all"`` or a sequence of joint indices (small
            multiples, one row per joint).

    Returns:
        A ``matplotlib.figure.Figure``: three axes (positions, velocities, accelerations),
        or with ``joints`` a grid of 3 columns and one row per joint; x axis the time step.

    Raises:
        ValueError: mismatched shapes, a ``history`` below 1, or bad ``joints``.
        ImportError: matplotlib is not installed.
    """
    plt = _require_matplotlib()
    Y = _check_series("Y", Y)
    means = _check_series("forecast.obs_means", forecast.obs_means)
    if means.shape[1] != Y.shape[1]:
        raise ValueError(
            f"forecast.obs_means must have {Y.shape[1]} columns (those of Y), "
            f"got shape {means.shape}"
        )
    history = check_int(history, "history")
    num_rows, h = Y.shape[0], means.shape[0]
    start = max(0, num_rows - history)
    t_future = np.arange(num_rows, num_rows + h)
    band = f"mean +/- {num_sd:g} sd" if num_sd else "mean"
    num_joints = Y.shape[1] // 3
    picked = _check_joints(joints, num_joints)
    if picked is not None:
        covs = np.asarray(forecast.obs_covs, dtype=np.float64)
        if covs.shape != (h, Y.shape[1], Y.shape[1]):
            raise ValueError(
                f"forecast.obs_covs must have shape {(h, Y.shape[1], Y.shape[1])}, "
                f"got shape {covs.shape}"
            )
        sd = np.sqrt(np.maximum(np.diagonal(covs, axis1=1, axis2=2), 0.0))
        fig, panels, _ = _small_multiples(plt, picked, residuals=False)
        t_past = np.arange(start, num_rows)
        for i, j in enumerate(picked):
            for block in range(3):
                col = block * num_joints + j
                ax = panels[i][block]
                ax.plot(t_past, Y[start:, col], color="k", linewidth=1.0)
                _band(ax, t_future, means[:, col], sd[:, col], num_sd, f"C{j % 10}")
                ax.axvline(num_rows - 0.5, color="k", linewidth=0.8, alpha=0.5)
        fig.suptitle(title or f"data (line) and {h}-step forecast ({band}), per joint")
        return fig
    fig, axs = plt.subplots(3, 1, figsize=(10, 9), sharex=True, layout="constrained")
    plot_estimate(axs, means, forecast.obs_covs, t=t_future, num_sd=num_sd)
    plot_data(axs, Y[start:], t=np.arange(start, num_rows))
    for ax, quantity in zip(axs, QUANTITIES, strict=True):
        ax.axvline(num_rows - 0.5, color="k", linewidth=0.8, alpha=0.5)
        ax.set_ylabel(quantity)
        ax.grid(True, alpha=0.3)
    axs[-1].set_xlabel("time step (data row)")
    axs[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    fig.suptitle(title or f"data (x) and {h}-step forecast ({band})")
    return fig
