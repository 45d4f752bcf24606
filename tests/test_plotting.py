"""jaxssm.plotting: what is drawn where, and that matplotlib stays an optional, lazy import.

The drawn data are compared exactly with the input columns (plotting copies numbers, it
computes nothing but ``mean +/- num_sd * sqrt(variance)``, checked at rtol 1e-12 against
numpy on the same inputs).
"""

from __future__ import annotations

import subprocess
import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from jaxssm import plotting  # noqa: E402


@pytest.fixture
def axes():
    fig, axs = plt.subplots(3, 1)
    yield axs
    plt.close(fig)


def series(T, J, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(T, 3 * J))
    L = rng.normal(size=(T, 3 * J, 3 * J))
    covs = L @ np.swapaxes(L, 1, 2)
    return means, covs


@pytest.mark.parametrize("J", [7, 2])
def test_plot_data_one_marker_line_per_joint(axes, J):
    Y, _ = series(12, J)
    t = np.arange(100, 112)
    returned = plotting.plot_data(axes, Y, t=t)
    assert list(returned) == list(axes)
    for block, ax in enumerate(axes):
        assert len(ax.lines) == J
        for j, line in enumerate(ax.lines):
            np.testing.assert_array_equal(line.get_xdata(), t)
            np.testing.assert_array_equal(line.get_ydata(), Y[:, block * J + j])
            assert line.get_marker() == "x" and line.get_linestyle() == "None"
            assert line.get_color() == f"C{j}" and line.get_label() == f"joint {j}"


def test_plot_estimate_lines_and_bands(axes):
    J, T = 7, 9
    means, covs = series(T, J, seed=1)
    plotting.plot_estimate(axes, means, covs, num_sd=2.0)
    sd = np.sqrt(np.einsum("tii->ti", covs))
    for block, ax in enumerate(axes):
        assert len(ax.lines) == J
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == J
        for j in range(J):
            col = block * J + j
            np.testing.assert_array_equal(ax.lines[j].get_xdata(), np.arange(T))
            np.testing.assert_array_equal(ax.lines[j].get_ydata(), means[:, col])
            y = bands[j].get_paths()[0].vertices[:, 1]
            np.testing.assert_allclose(y.max(), np.max(means[:, col] + 2 * sd[:, col]), rtol=1e-12)
            np.testing.assert_allclose(y.min(), np.min(means[:, col] - 2 * sd[:, col]), rtol=1e-12)


def test_plot_estimate_accepts_variances(axes):
    means, covs = series(5, 1, seed=2)
    variances = np.einsum("tii->ti", covs)
    fig, other = plt.subplots(3, 1)
    try:
        plotting.plot_estimate(axes, means, covs)
        plotting.plot_estimate(other, means, variances)
        for a, b in zip(axes, other, strict=True):
            pa = a.collections[0].get_paths()[0].vertices
            pb = b.collections[0].get_paths()[0].vertices
            np.testing.assert_array_equal(pa, pb)
    finally:
        plt.close(fig)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda axs: plotting.plot_data(axs[:2], np.ones((4, 21))), "3 axes"),
        (lambda axs: plotting.plot_data(axs, np.ones((4, 20))), r"shape \[T, 3 J\]"),
        (lambda axs: plotting.plot_data(axs, np.ones((4, 21)), t=np.arange(5)), "t must"),
        (lambda axs: plotting.plot_estimate(axs, np.ones((4, 6)), np.ones((4, 5, 5))), "covs"),
        (lambda axs: plotting.plot_estimate(axs, np.ones((4, 6)), -np.ones((4, 6))), "negative"),
        (
            lambda axs: plotting.plot_estimate(axs, np.ones((4, 6)), np.ones((4, 6)), num_sd=-1),
            "num_sd",
        ),
    ],
)
def test_bad_arguments(axes, call, match):
    with pytest.raises(ValueError, match=match):
        call(axes)


class FakeSmoothed:
    def __init__(self, means, covs):
        self.means, self.covs = means, covs


def test_plot_fit_window():
    Y, _ = series(30, 7, seed=3)
    means, covs = series(30, 7, seed=4)
    fig = plotting.plot_fit(Y, FakeSmoothed(means, covs), (10, 25))
    try:
        axs = fig.axes
        assert len(axs) == 3
        assert [ax.get_ylabel() for ax in axs] == list(plotting.QUANTITIES)
        for block, ax in enumerate(axs):
            assert len(ax.lines) == 2 * 7  # 7 estimate lines, then 7 data marker lines
            np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(10, 25))
            np.testing.assert_array_equal(ax.lines[0].get_ydata(), means[10:25, block * 7])
            np.testing.assert_array_equal(ax.lines[7].get_ydata(), Y[10:25, block * 7])
        fig2 = plotting.plot_fit(Y, FakeSmoothed(means, covs), slice(10, 25))
        np.testing.assert_array_equal(fig2.axes[2].lines[3].get_ydata(), means[10:25, 17])
        plt.close(fig2)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("window", [(25, 10), (0, 31), (-1, 5), "abc"])
def test_plot_fit_bad_window(window):
    Y, _ = series(30, 7)
    with pytest.raises(ValueError, match="window"):
        plotting.plot_fit(Y, FakeSmoothed(*series(30, 7)), window)
    assert plt.get_fignums() == []


def test_plot_fit_shape_mismatch():
    Y, _ = series(30, 7)
    with pytest.raises(ValueError, match="smoothed.means"):
        plotting.plot_fit(Y, FakeSmoothed(*series(29, 7)), (0, 5))


def test_missing_matplotlib_names_the_extra(monkeypatch, axes):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"jaxssm\[plot\]"):
        plotting.plot_data(axes, np.ones((3, 21)))


def test_matplotlib_is_imported_lazily():
    code = (
        "import sys, jaxssm, jaxssm.plotting, jaxssm.cli; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'; "
        "assert 'plotting' not in jaxssm.__all__ and 'cli' not in jaxssm.__all__"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_plot_fit_per_joint_with_residuals_and_note():
    J = 3
    Y, _ = series(30, J, seed=5)
    means, covs = series(30, J, seed=6)
    note = "not converged: EM reached the iteration limit"
    fig = plotting.plot_fit(
        Y, FakeSmoothed(means, covs), (10, 25), joints="all", residuals=True, note=note
    )
    try:
        assert len(fig.axes) == 2 * J * 3  # a panel and its residual panel per joint and block
        assert fig.get_supxlabel() == note
        grid = np.asarray(fig.axes, dtype=object).reshape(2 * J, 3)
        sd = np.sqrt(np.einsum("tii->ti", covs))[10:25]
        for j in range(J):
            for block in range(3):
                col = block * J + j
                panel, residual = grid[2 * j, block], grid[2 * j + 1, block]
                estimate, data = panel.lines
                np.testing.assert_array_equal(estimate.get_ydata(), means[10:25, col])
                np.testing.assert_array_equal(data.get_ydata(), Y[10:25, col])
                (band,) = [c for c in panel.collections if isinstance(c, PolyCollection)]
                upper = band.get_paths()[0].vertices[:, 1].max()
                np.testing.assert_allclose(
                    upper, np.max(means[10:25, col] + 2 * sd[:, col]), rtol=1e-12
                )
                res = [line for line in residual.lines if len(line.get_xdata()) == 15]
                np.testing.assert_array_equal(res[0].get_ydata(), Y[10:25, col] - means[10:25, col])
        assert grid[0, 0].get_ylabel() == "joint 0" and grid[1, 0].get_ylabel() == "residual"
    finally:
        plt.close(fig)
    fig = plotting.plot_fit(Y, FakeSmoothed(means, covs), (10, 25), joints=[2])
    try:
        assert len(fig.axes) == 3 and fig.axes[0].get_ylabel() == "joint 2"
        assert fig.get_supxlabel() in ("", None)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match=r"joints must hold at least one index in 0\.\.2"):
        plotting.plot_fit(Y, FakeSmoothed(means, covs), (10, 25), joints=[3])


def test_plot_forecast_per_joint_history_line_one_band_per_panel():
    class FakeForecast:
        pass

    J, h = 2, 8
    Y, _ = series(40, J, seed=7)
    fc = FakeForecast()
    fc.obs_means, fc.obs_covs = series(h, J, seed=8)
    fig = plotting.plot_forecast(Y, fc, history=10, joints="all")
    try:
        grid = np.asarray(fig.axes, dtype=object).reshape(J, 3)
        for j in range(J):
            for block in range(3):
                col = block * J + j
                ax = grid[j, block]
                history, mean = ax.lines[:2]
                assert history.get_linestyle() == "-" and history.get_marker() in ("None", None)
                np.testing.assert_array_equal(history.get_xdata(), np.arange(30, 40))
                np.testing.assert_array_equal(history.get_ydata(), Y[30:, col])
                np.testing.assert_array_equal(mean.get_xdata(), np.arange(40, 48))
                np.testing.assert_array_equal(mean.get_ydata(), fc.obs_means[:, col])
                bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
                assert len(bands) == 1
    finally:
        plt.close(fig)
