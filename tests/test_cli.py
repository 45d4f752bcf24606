"""The `jaxssm` command and the exercise set-up it runs.

Numbers are checked against independent computations, not against the command's own output:
the fitted parameters in ``params.npz`` against a direct ``fit_em`` call on the set-up the
command should have built (rtol 1e-12: the same compiled loop on the same inputs, so equal up
to any non-determinism of the CPU kernels; this checks the command's wiring of data, seed and
options, fit_em itself is tested in test_em.py), and the log-likelihood trace against the
plain numpy Kalman filter of ``tests/reference.py`` (rtol 1e-9: float64 round-off accumulated
over 199 steps of explicit solves).

Everything runs on 200 rows of the bundled SARCOS test split with 2-3 iterations, so the
default suite stays fast; the time-parallel schedule is marked slow.
"""

from __future__ import annotations

import contextlib
import csv
import io
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import assert_close

import jaxssm
from jaxssm import cli, datasets

NUM_ROWS = 200
ITERS = 3
EXERCISE_R = np.kron(np.diag([0.01, 0.01, 1.0]), np.eye(7))


@pytest.fixture(scope="module")
def sarcos_rows():
    test = datasets.load_sarcos("test")
    return np.concatenate([test.inputs, test.torques], axis=1)[:NUM_ROWS]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory, sarcos_rows):
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, sarcos_inv_test=sarcos_rows)
    return path


def run_main(argv):
    """Call cli.main in-process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def read_trace(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["iteration", "log_likelihood"]
    iterations = [int(r[0]) for r in rows[1:]]
    values = np.array([float(r[1]) for r in rows[1:]])
    return iterations, values


def summary_fields(path):
    fields = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(": ")
        fields[key] = value
    return fields


# ---------------------------------------------------------------------------------------------
# exercise_setup
# ---------------------------------------------------------------------------------------------


def test_exercise_setup_matches_the_exercise(sarcos_rows):
    Y = sarcos_rows[:, :21]
    params, ys = jaxssm.exercise_setup(Y, jax.random.PRNGKey(3), dtype=jnp.float64)
    np.testing.assert_array_equal(np.asarray(params.m0), Y[0])
    np.testing.assert_array_equal(np.asarray(ys), Y[1:])
    np.testing.assert_array_equal(np.asarray(params.H), np.eye(21))
    np.testing.assert_array_equal(np.asarray(params.R), EXERCISE_R)
    np.testing.assert_array_equal(np.asarray(params.P0), EXERCISE_R)
    np.testing.assert_array_equal(np.asarray(params.A), np.zeros((21, 21)))
    Q = np.asarray(params.Q)
    np.testing.assert_array_equal(Q, np.diag(np.diag(Q)))
    assert np.all(np.diag(Q) > 0) and np.all(np.diag(Q) < 0.01)
    assert all(x.dtype == jnp.float64 for x in params) and ys.dtype == jnp.float64
    jaxssm.validate_params(params)  # a valid model: covariances SPD


def test_exercise_setup_key_dtype_and_joints(sarcos_rows):
    Y = sarcos_rows[:, :21]
    q = [np.diag(jaxssm.exercise_setup(Y, jax.random.PRNGKey(s)).params.Q) for s in (0, 0, 1)]
    np.testing.assert_array_equal(q[0], q[1])
    assert not np.allclose(q[0], q[2])
    p32, ys32 = jaxssm.exercise_setup(Y, jax.random.PRNGKey(0), dtype="float32")
    assert all(x.dtype == jnp.float32 for x in p32) and ys32.dtype == jnp.float32
    # Any number of joints J (3 J columns): R = kron(diag(0.01, 0.01, 1), I_J).
    small, _ = jaxssm.exercise_setup(np.ones((5, 6)), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.diag(np.asarray(small.R)), [0.01, 0.01, 0.01, 0.01, 1, 1])


@pytest.mark.parametrize(
    "Y, match",
    [
        (np.ones((10, 20)), r"shape \[N\+1, 3 J\]"),
        (np.ones((1, 21)), r"shape \[N\+1, 3 J\]"),
        (np.ones(21), r"shape \[N\+1, 3 J\]"),
        (np.where(np.arange(21) == 4, np.nan, np.ones((6, 21))), "row 0"),
    ],
)
def test_exercise_setup_rejects_bad_data(Y, match):
    with pytest.raises(ValueError, match=match):
        jaxssm.exercise_setup(Y, jax.random.PRNGKey(0))


def test_exercise_setup_rejects_bad_dtype():
    with pytest.raises(ValueError, match="floating dtype"):
        jaxssm.exercise_setup(np.ones((4, 21)), jax.random.PRNGKey(0), dtype=jnp.int32)


# ---------------------------------------------------------------------------------------------
# jaxssm fit, in-process
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def em_run(tmp_path_factory, small_file):
    out = tmp_path_factory.mktemp("em") / "out"
    argv = ["fit", "--data", small_file, "--iters", ITERS, "--seed", 7, "--out", out]
    code, stdout, stderr = run_main(argv)
    return code, stdout, stderr, out


def test_fit_writes_outputs(em_run):
    code, stdout, stderr, out = em_run
    assert code == 0, stderr
    for name in cli.OUTPUT_FILES:
        assert (out / name).is_file(), name
    assert str(out) in stdout
    assert "Traceback" not in stderr
    assert f"{ITERS}/{ITERS}" in stderr  # the progress bar reached the end
    with np.load(out / "params.npz") as z:
        assert sorted(z.files) == sorted(jaxssm.LGSSM._fields)
        assert z["A"].shape == (21, 21) and z["A"].dtype == np.float64
    from PIL import Image

    with Image.open(out / "fit.png") as image:
        assert image.format == "PNG" and image.width > 500 and image.height > 500


def test_fit_params_equal_a_direct_em_run(em_run, sarcos_rows):
    out = em_run[3]
    setup = jaxssm.exercise_setup(sarcos_rows[:, :21], jax.random.PRNGKey(7), dtype=jnp.float64)
    # The command's (no-op outside a run) progress callback: the same compiled loop is reused.
    expected, _ = jaxssm.fit_em(
        setup.params, setup.ys, num_iters=ITERS, update=("A", "Q"), callback=cli._progress
    )
    with np.load(out / "params.npz") as z:
        for name in jaxssm.LGSSM._fields:
            assert_close(z[name], getattr(expected, name), rtol=1e-12, err_msg=name)
        np.testing.assert_array_equal(z["R"], EXERCISE_R)  # not learned: unchanged


def test_fit_trace_matches_the_numpy_filter(em_run, sarcos_rows):
    out = em_run[3]
    Y = sarcos_rows[:, :21]
    iterations, values = read_trace(out / "log_likelihood.csv")
    assert iterations == list(range(ITERS + 1))
    assert np.all(np.diff(values) > 0)  # EM raised the log-likelihood at every step
    with np.load(out / "params.npz") as z:
        fitted = reference.Model(*(z[name] for name in jaxssm.LGSSM._fields))
    start = jaxssm.exercise_setup(Y, jax.random.PRNGKey(7), dtype=jnp.float64).params
    ll_start = reference.numpy_filter(reference.Model(*map(np.asarray, start)), Y[1:])[-1]
    ll_fitted = reference.numpy_filter(fitted, Y[1:])[-1]
    assert_close(values[0], ll_start, rtol=1e-9)
    assert_close(values[-1], ll_fitted, rtol=1e-9)
    fields = summary_fields(out / "summary.txt")
    assert float(fields["log-likelihood before"]) == values[0]
    assert float(fields["log-likelihood after"]) == values[-1]
    assert fields["N"].startswith(f"{NUM_ROWS - 1} ")
    assert fields["dtype"] == "float64"
    assert fields["method"].startswith("em")
    assert fields["schedule"] == "sequential"
    assert fields["iterations"].startswith(f"{ITERS} of {ITERS}")
    assert fields["data"].endswith("small.npz")


def test_fit_default_out_no_plot_and_force(tmp_path, monkeypatch, small_file):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = run_main(["fit", "--data", small_file, "--iters", ITERS, "--no-plot"])
    assert code == 0, stderr
    (out,) = tmp_path.glob("jaxssm-fit-*")
    assert str(out) in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "log_likelihood.csv",
        "params.npz",
        "summary.txt",
    ]
    assert "--no-plot" in summary_fields(out / "summary.txt")["plot window"]
    # An existing non-empty folder: refused without --force, written into with it.
    (out / "notes.txt").write_text("mine")
    argv = ["fit", "--data", small_file, "--iters", ITERS, "--out", out, "--no-plot"]
    assert run_main(argv)[0] == 2
    code, _, stderr = run_main([*argv, "--force"])
    assert code == 0, stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_fit_without_matplotlib_skips_the_plot(tmp_path, monkeypatch, small_file):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "out"
    code, _, stderr = run_main(["fit", "--data", small_file, "--iters", ITERS, "--out", out])
    assert code == 0, stderr
    assert not (out / "fit.png").exists() and (out / "params.npz").is_file()
    assert "matplotlib is not installed" in stderr and "jaxssm[plot]" in stderr


def test_fit_float32(tmp_path, small_file):
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, "--iters", 2, "--dtype", "float32", "--out", out]
    code, _, stderr = run_main([*argv, "--no-plot"])
    assert code == 0, stderr
    with np.load(out / "params.npz") as z:
        assert all(z[name].dtype == np.float32 for name in z.files)
    _, values = read_trace(out / "log_likelihood.csv")
    assert values[-1] > values[0]


def test_fit_mle_adam(tmp_path, small_file):
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, "--method", "mle", "--iters", 2, "--lr", 0.01]
    code, _, stderr = run_main([*argv, "--out", out, "--no-plot"])
    assert code == 0, stderr
    iterations, values = read_trace(out / "log_likelihood.csv")
    assert iterations == [0, 1, 2]
    assert values[-1] > values[0]
    fields = summary_fields(out / "summary.txt")
    assert fields["method"].startswith("mle") and fields["optimizer"] == "adam (lr 0.01)"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fit_parallel_schedule_matches_sequential(tmp_path, small_file):
    runs = {}
    for schedule in ("sequential", "parallel"):
        out = tmp_path / schedule
        argv = ["fit", "--data", small_file, "--iters", 2, "--schedule", schedule, "--out", out]
        code, _, stderr = run_main(argv)
        assert code == 0, stderr
        runs[schedule] = read_trace(out / "log_likelihood.csv")[1]
    assert_close(runs["parallel"], runs["sequential"], rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# Bad input: one line on stderr, no traceback, non-zero exit
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, sarcos_rows):
    d = tmp_path_factory.mktemp("bad")
    np.savez(d / "columns.npz", x=sarcos_rows[:50, :20])
    nan = sarcos_rows[:50].copy()
    nan[3, 5] = np.nan
    np.savez(d / "nan.npz", x=nan)
    (d / "text.csv").write_text("a,b,c\n1,2,3\n")
    (d / "data.json").write_text("[]")
    np.savez(d / "short.npz", x=sarcos_rows[:1])
    return d


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["fit", "--data", "{bad}/missing.npz"], 1, "no such file"),
        (["fit", "--data", "{bad}/columns.npz"], 1, "shape"),
        (["fit", "--data", "{bad}/nan.npz"], 1, "row 3"),
        (["fit", "--data", "{bad}/text.csv"], 1, "text.csv"),
        (["fit", "--data", "{bad}/data.json"], 1, "unsupported file type"),
        (["fit", "--data", "{bad}/short.npz"], 1, "at least 2 rows"),
        (["fit", "--bogus"], 2, "unrecognized arguments"),
        (["frobnicate"], 2, "invalid choice"),
        (["fit", "--iters", "0"], 2, "--iters"),
        (["fit", "--iters", "ten"], 2, "--iters"),
        (["fit", "--method", "gibbs"], 2, "--method"),
        (["fit", "--update", "A,X"], 2, "unknown parameter name"),
        (["fit", "--update", "A,,Q"], 2, "--update"),
        (["fit", "--update", "A,A"], 2, "must not repeat"),
        (["fit", "--window", "50"], 2, "START:STOP"),
        (["fit", "--window", "60:50"], 2, "START:STOP"),
        (["fit", "--data", "{small}", "--window", "100:300"], 2, "200 rows"),
        (["fit", "--lr", "0.1"], 2, "--method mle only"),
        (["fit", "--method", "mle", "--optimizer", "lbfgs", "--lr", "0.1"], 2, "adam only"),
        (["fit", "--lr", "-1", "--method", "mle"], 2, "positive"),
        (["fit", "--dtype", "float16"], 2, "--dtype"),
    ],
)
def test_bad_input_one_line_error(argv, code, needle, bad_files, small_file):
    argv = [a.format(bad=bad_files, small=small_file) for a in argv]
    got, stdout, stderr = run_main(argv)
    assert got == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert needle in lines[0] and "error" in lines[0]
    assert "Traceback" not in stderr and stdout == ""


def test_train_split_missing_is_one_line(monkeypatch, tmp_path):
    def no_network(url, timeout):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(datasets, "_fetch", no_network)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("JAXSSM_DATA_DIR", raising=False)
    code, _, stderr = run_main(["fit", "--data", "train"])
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert "JAXSSM_DATA_DIR" in line and "--data FILE" in line and "Traceback" not in stderr


def test_existing_out_folder_is_not_overwritten(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    code, _, stderr = run_main(["fit", "--out", tmp_path])
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert "--force" in line
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_version_help_and_no_command(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jaxssm {jaxssm.__version__} (jax {jax.__version__})"
    assert cli.main(["fit", "--help"]) == 0
    help_text = capsys.readouterr().out
    for option in (
        "--data",
        "--iters",
        "--method",
        "--schedule",
        "--dtype",
        "--update",
        "--window",
        "--seed",
        "--out",
        "--force",
        "--no-plot",
        "--lr",
        "--optimizer",
    ):
        assert option in help_text
    assert cli.main([]) == 2


# ---------------------------------------------------------------------------------------------
# A real process: python -m jaxssm
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_python_m_jaxssm_fit(tmp_path, small_file):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxssm",
            "fit",
            "--iters",
            "2",
            "--data",
            str(small_file),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(out) in proc.stdout
    for name in cli.OUTPUT_FILES:
        assert (out / name).is_file(), name
    iterations, values = read_trace(out / "log_likelihood.csv")
    assert iterations == [0, 1, 2] and values[-1] > values[0]
    with np.load(out / "params.npz") as z:
        assert z["Q"].dtype == np.float64  # --dtype float64 (the default) enabled x64 there
