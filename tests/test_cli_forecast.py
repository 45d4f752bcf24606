"""`jaxssm fit --forecast H`: the written forecast against a direct ssm.forecast call.

forecast.npz is compared with ``ssm.forecast`` of the same parameters on the set-up the
command builds (rtol 1e-12: the same computation on the same inputs; forecast itself is
tested in test_forecast.py). The writer is tested directly on the exercise's start (cheap);
the whole command with an EM fit and the plot, as test_cli.py runs it, is marked slow.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import pytest
from helpers import assert_close
from test_cli import ITERS, run_main, start_params, summary_fields

import jaxssm as ssm
from jaxssm import datasets
from jaxssm._cli.outputs import write_forecast

H = 5
NUM_ROWS = 200


@pytest.fixture(scope="module")
def rows():
    test = datasets.load_sarcos("test")
    return np.concatenate([test.inputs, test.torques], axis=1)[:NUM_ROWS]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, sarcos_inv_test=rows)
    return path


def _check_written(out, params, ys):
    written = np.load(out / "forecast.npz")
    assert written["obs_means"].shape == (H, 21) and written["covs"].shape == (H, 21, 21)
    want = ssm.forecast(params, ys, H)
    for name in ssm.Forecast._fields:
        assert_close(written[name], getattr(want, name), rtol=1e-12, err_msg=name)


def test_the_forecast_writer(tmp_path, rows):
    params, ys = start_params(rows, 7)
    args = argparse.Namespace(forecast=H, schedule="sequential", no_plot=True, method="em")
    written = []
    note = write_forecast(tmp_path, params, ys, rows[:, :21], args, written)
    assert note.startswith(f"{H} steps") and written == ["forecast.npz"]
    _check_written(tmp_path, params, ys)


@pytest.mark.slow
def test_fit_writes_the_forecast(tmp_path, data_file, rows):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    argv = ["fit", "--data", data_file, "--method", "em", "--iters", ITERS, "--seed", 7]
    argv += ["--out", out]
    code, stdout, stderr = run_main([*argv, "--forecast", H])
    assert code == 0, stderr
    assert "forecast.npz" in stdout and "forecast.png" in stdout
    assert (out / "forecast.png").stat().st_size > 0
    with np.load(out / "params.npz") as saved:
        fitted = ssm.LGSSM(*(jax.numpy.asarray(saved[n]) for n in ssm.PARAMETER_NAMES[:6]))
    _check_written(out, fitted, start_params(rows, 7)[1])
    fields = summary_fields(out / "summary.txt")
    assert fields["forecast"].startswith(f"{H} steps")
    assert fields["command"].endswith(f"--forecast {H}")


def test_forecast_must_be_a_positive_int(tmp_path, data_file):
    code, _, stderr = run_main(["fit", "--data", data_file, "--forecast", 0, "--out", tmp_path])
    assert code == 2 and "--forecast" in stderr


def test_plot_forecast_checks_its_arguments(rows):
    pytest.importorskip("matplotlib")
    from jaxssm.plotting import plot_forecast

    fc = ssm.Forecast(None, None, np.zeros((3, 21)), np.zeros((3, 21, 21)))
    with pytest.raises(ValueError, match="history must be a positive int"):
        plot_forecast(rows[:, :21], fc, history=0)
    with pytest.raises(ValueError, match="forecast.obs_means must have 21 columns"):
        plot_forecast(rows[:, :21], fc._replace(obs_means=np.zeros((3, 6))))
