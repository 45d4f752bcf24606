"""The `jaxssm` command (the exercise set-up it runs is tested in test_datasets.py).

Numbers are checked against independent computations, not against the command's own output:
the fitted parameters in ``params.npz`` against a direct ``fit`` / ``fit_em`` call on the
set-up the command should have built (rtol 1e-12: the same loop on the same inputs; for EM
compiled once with the command's progress callback and once without, so equal up to
round-off from a different fusion of the kernels; this checks the command's wiring of data,
start, seed and options; fit and fit_em themselves are tested in test_fit.py and
test_em.py), and the log-likelihood trace against the plain numpy Kalman filter of
``tests/reference.py`` (rtol 1e-9: float64 round-off accumulated over 199 steps of explicit
solves).

Everything runs on 200 rows of the bundled SARCOS test split with a few E-steps (the
default ``--method fit`` with a small ``--max-iters``; ``--method em`` with 2-3
iterations), so the default suite stays fast; the time-parallel schedule is marked slow. The
command's reports of how fit and EM stopped are checked with stand-ins for ``fit`` and
``fit_em`` (no compilation).
"""

from __future__ import annotations

import ast
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

import jaxssm as ssm
from jaxssm import cli, datasets
from jaxssm._cli.data import enable_compilation_cache
from jaxssm._cli.options import DEFAULT_MAX_ITERS, DEFAULT_TOL
from jaxssm._cli.outputs import OUTPUT_FILES

NUM_ROWS = 200
ITERS = 3
MAX_ITERS = 30  # E-steps of the real default-path runs: not converged, but fast
#: The exercise's plain EM from its white-noise start (the command's behaviour before fit).
EM = ["--method", "em", "--start", "white"]
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


def read_trace(path, step_name="iteration"):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [step_name, "log_likelihood"]
    iterations = [int(r[0]) for r in rows[1:]]
    values = np.array([float(r[1]) for r in rows[1:]])
    return iterations, values


def start_params(sarcos_rows, seed, dtype=jnp.float64):
    return datasets.exercise_setup(sarcos_rows[:, :21], jax.random.PRNGKey(seed), dtype=dtype)


def reference_ll(params, sarcos_rows):
    """log p(y | params) of the plain numpy filter (an independent computation)."""
    model = reference.Model(*(np.asarray(x, np.float64) for x in params[:6]))
    return reference.numpy_filter(model, sarcos_rows[1:, :21])[-1]


def summary_fields(path):
    fields = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(": ")
        fields[key] = value
    return fields


# ---------------------------------------------------------------------------------------------
# jaxssm fit, in-process
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def em_run(tmp_path_factory, small_file):
    out = tmp_path_factory.mktemp("em") / "out"
    argv = ["fit", "--data", small_file, *EM, "--iters", ITERS, "--seed", 7, "--out", out]
    code, stdout, stderr = run_main(argv)
    return code, stdout, stderr, out


def test_fit_writes_outputs(em_run):
    code, stdout, stderr, out = em_run
    assert code == 0, stderr
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    assert str(out) in stdout
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert lines[1] == "compiling the EM loop (a few seconds) ..."
    # A tqdm bar after that line, which reached the end with the last E-step's value.
    bar = "\n".join(lines[2:])
    assert f"{ITERS}/{ITERS}" in bar and "100%" in bar
    _, values = read_trace(out / "log_likelihood.csv")
    assert f"log-likelihood {values[ITERS - 1]:.6g}" in bar.split(f"{ITERS}/{ITERS}")[-1]
    with np.load(out / "params.npz") as z:
        assert sorted(z.files) == sorted(ssm.LGSSM._fields[:6])  # absent B, b, D, d: not saved
        assert z["A"].shape == (21, 21) and z["A"].dtype == np.float64
    from PIL import Image

    with Image.open(out / "fit.png") as image:
        assert image.format == "PNG" and image.width > 500 and image.height > 500


def test_fit_params_equal_a_direct_em_run(em_run, sarcos_rows):
    out = em_run[3]
    setup = start_params(sarcos_rows, 7)
    expected, info = ssm.fit_em(setup.params, setup.ys, num_iters=ITERS, update=("A", "Q"))
    assert int(info.status) == ssm.EMStatus.MAX_ITERS
    with np.load(out / "params.npz") as z:
        for name in ssm.LGSSM._fields[:6]:
            assert_close(z[name], getattr(expected, name), rtol=1e-12, err_msg=name)
        np.testing.assert_array_equal(z["R"], EXERCISE_R)  # not learned: unchanged


def test_fit_trace_matches_the_numpy_filter(em_run, sarcos_rows):
    out = em_run[3]
    iterations, values = read_trace(out / "log_likelihood.csv")
    assert iterations == list(range(ITERS + 1))
    assert np.all(np.diff(values) > 0)  # EM raised the log-likelihood at every step
    with np.load(out / "params.npz") as z:
        fitted = [z[name] for name in ssm.LGSSM._fields[:6]]
    assert_close(values[0], reference_ll(start_params(sarcos_rows, 7).params, sarcos_rows), 1e-9)
    assert_close(values[-1], reference_ll(fitted, sarcos_rows), rtol=1e-9)
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
    argv = ["fit", "--data", small_file, "--method", "em", "--iters", ITERS, "--no-plot"]
    code, stdout, stderr = run_main(argv)
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
    argv = ["fit", "--data", small_file, "--method", "em", "--iters", ITERS, "--out", out]
    argv.append("--no-plot")
    assert run_main(argv)[0] == 2
    code, _, stderr = run_main([*argv, "--force"])
    assert code == 0, stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_fit_without_matplotlib_skips_the_plot(tmp_path, monkeypatch, small_file):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, "--method", "em", "--iters", ITERS, "--out", out]
    code, _, stderr = run_main(argv)
    assert code == 0, stderr
    assert not (out / "fit.png").exists() and (out / "params.npz").is_file()
    assert "matplotlib is not installed" in stderr and "jaxssm[plot]" in stderr


def test_fit_float32_and_update(tmp_path, small_file, sarcos_rows):
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, *EM, "--iters", 2, "--dtype", "float32", "--out", out]
    code, _, stderr = run_main([*argv, "--update", " Q", "--no-plot"])
    assert code == 0, stderr
    start = start_params(sarcos_rows, 0, jnp.float32).params
    with np.load(out / "params.npz") as z:
        assert all(z[name].dtype == np.float32 for name in z.files)
        np.testing.assert_array_equal(z["A"], np.asarray(start.A))  # not learned: A = 0 kept
        assert not np.allclose(z["Q"], np.asarray(start.Q))  # learned
    _, values = read_trace(out / "log_likelihood.csv")
    assert values[-1] > values[0]
    fields = summary_fields(out / "summary.txt")
    assert fields["method"] == "em (update Q)" and "--update Q " in fields["command"]


def test_fit_mle_adam(tmp_path, small_file, sarcos_rows):
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, "--method", "mle", "--start", "white", "--iters", 2]
    argv += ["--lr", 0.01]
    # optax.adam itself fails under the suite's strict dtype promotion (`b1 ** count`, a
    # Python float and an int32); the command runs with JAX's default, standard promotion.
    with jax.numpy_dtype_promotion("standard"):
        code, _, stderr = run_main([*argv, "--out", out, "--no-plot"])
    assert code == 0, stderr
    assert "compiling the MLE loop (a few seconds) ..." in stderr.splitlines()
    assert "2/2" in stderr and "MLE" in stderr  # the progress bar reached the end
    iterations, values = read_trace(out / "log_likelihood.csv")
    assert iterations == [0, 1, 2]
    assert values[-1] > values[0]
    # The first entry is the start's log-likelihood, the last the fitted parameters'.
    with np.load(out / "params.npz") as z:
        fitted = [z[name] for name in ssm.LGSSM._fields[:6]]
    assert_close(values[0], reference_ll(start_params(sarcos_rows, 0).params, sarcos_rows), 1e-9)
    assert_close(values[-1], reference_ll(fitted, sarcos_rows), rtol=1e-9)
    fields = summary_fields(out / "summary.txt")
    assert fields["method"].startswith("mle") and fields["optimizer"] == "adam (lr 0.01)"
    assert fields["iterations"].startswith("2 of 2; not converged: MLE reached the iteration limit")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fit_parallel_schedule_matches_sequential(tmp_path, small_file):
    runs = {}
    for schedule in ("sequential", "parallel"):
        out = tmp_path / schedule
        argv = ["fit", "--data", small_file, *EM, "--iters", 2, "--schedule", schedule]
        code, _, stderr = run_main([*argv, "--out", out])
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
    nan[3, 5] = np.inf  # NaN would be a missing entry (valid); Inf is an error
    np.savez(d / "inf.npz", x=nan)
    (d / "text.csv").write_text("a,b,c\n1,2,3\n")
    (d / "data.json").write_text("[]")
    np.savez(d / "short.npz", x=sarcos_rows[:1])
    return d


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["fit", "--data", "{bad}/missing.npz"], 1, "no such file"),
        (["fit", "--data", "{bad}/columns.npz"], 1, "shape"),
        (["fit", "--data", "{bad}/inf.npz"], 1, "row 3"),
        (["fit", "--data", "{bad}/text.csv"], 1, "text.csv"),
        (["fit", "--data", "{bad}/data.json"], 1, "unsupported file type"),
        (["fit", "--data", "{bad}/short.npz"], 1, "at least 2 rows"),
        (["fit", "--bogus"], 2, "unrecognized arguments"),
        (["frobnicate"], 2, "invalid choice"),
        (["fit", "--iters", "0"], 2, "--iters"),
        (["fit", "--iters", "ten"], 2, "--iters"),
        (["fit", "--method", "gibbs"], 2, "--method"),
        (["fit", "--window", "50"], 2, "START:STOP"),
        (["fit", "--window", "60:50"], 2, "START:STOP"),
        (["fit", "--data", "{small}", "--window", "100:300"], 2, "200 rows"),
        (["fit", "--lr", "0.1"], 2, "--method mle only"),
        (["fit", "--optimizer", "adam"], 2, "--method mle only"),
        (["fit", "--start", "zeros"], 2, "--start"),
        (["fit", "--max-iters", "2"], 2, "--max-iters"),
        (["fit", "--max-iters", "many"], 2, "--max-iters"),
        (["fit", "--iters", "5"], 2, "--iters applies to --method em and mle only"),
        (["fit", "--method", "em", "--max-iters", "50"], 2, "--max-iters applies to --method"),
        (["fit", "--method", "fit", "--tol", "-1"], 2, "--tol"),
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


@pytest.mark.parametrize("start", ["data", "white"])
@pytest.mark.parametrize("method", ["fit", "em", "mle"])
@pytest.mark.parametrize("names, bad", [("A,X", "'X'"), ("A,,Q", "''"), ("A,A", "A"), ("", "''")])
def test_bad_update_is_a_usage_error(tmp_path, small_file, method, start, names, bad):
    # The library's rule decides (initialize, fit, fit_em, fit_mle reject the names before
    # compiling).
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, "--method", method, "--start", start]
    argv += ["--update", names, "--out", out]
    code, stdout, stderr = run_main(argv)
    assert code == 2, stderr
    error = stderr.strip().splitlines()[-1]
    assert error.startswith(f"jaxssm fit: error: --update {names}: ")
    assert error.endswith("(see jaxssm fit --help)")
    assert bad in error and "update" in error.split(": ", 3)[-1]  # the library's message
    assert "Traceback" not in stderr and "it/s" not in stderr  # no progress bar was drawn
    assert stdout == "" and not out.exists()


KEPT = " (numerical breakdown; try --dtype float64); the last good parameters are kept"


def _fake_fit_em(trace, ll_after, count, status, decrease=0.0):
    """A stand-in for ssm.fit_em that reports a given run (and calls back per E-step)."""

    def fit_em(params, ys, *, num_iters, update, method, callback, tol=None):
        assert tol == DEFAULT_TOL  # the command's default reaches fit_em
        for i in range(count):
            callback(np.int32(i), np.float64(trace[i]))
        lls = np.full(num_iters, np.nan)
        lls[: len(trace)] = trace
        info = ssm.EMInfo(lls, np.float64(ll_after), np.int32(count), np.int32(status), decrease)
        return params, info

    return fit_em


@pytest.mark.parametrize(
    "case, expected_trace, note",
    [
        (  # converged at E-step 3: theta_2 returned, its value the last trace entry
            ([-10.0, -5.0, -4.9], -4.9, 3, ssm.EMStatus.CONVERGED),
            [-10.0, -5.0, -4.9],
            "; converged after 3 iterations",
        ),
        (  # a fall at E-step 3: theta_1 returned, the offending value dropped
            ([-10.0, -5.0, -7.0], -5.0, 3, ssm.EMStatus.DECREASED, 2.0),
            [-10.0, -5.0],
            "; EM stopped after 3 iterations: the log-likelihood fell by 2" + KEPT,
        ),
        (  # a fall at the final check: theta_4 kept, the trace is complete as it is
            ([-10.0, -5.0, -4.0, -3.5], -3.5, 4, ssm.EMStatus.DECREASED, 0.5),
            [-10.0, -5.0, -4.0, -3.5],
            "; EM stopped after 4 iterations: the log-likelihood fell by 0.5" + KEPT,
        ),
        (  # all iterations ran: the returned parameters' value is appended
            ([-10.0, -5.0, -4.0, -3.5], -3.0, 4, ssm.EMStatus.MAX_ITERS),
            [-10.0, -5.0, -4.0, -3.5, -3.0],
            "; not converged: EM reached the iteration limit while the log-likelihood was "
            "still rising by 0.5 per iteration (0.14 relative); raise --iters",
        ),
    ],
)
def test_fit_reports_how_em_stopped(tmp_path, monkeypatch, small_file, case, expected_trace, note):
    monkeypatch.setattr(ssm, "fit_em", _fake_fit_em(*case))
    out = tmp_path / "out"
    code, _, stderr = run_main(
        ["fit", "--data", small_file, *EM, "--iters", 4, "--out", out, "--no-plot"]
    )
    assert code == 0, stderr
    iterations, values = read_trace(out / "log_likelihood.csv")
    assert iterations == list(range(len(expected_trace)))
    np.testing.assert_array_equal(values, expected_trace)
    fields = summary_fields(out / "summary.txt")
    assert fields["iterations"] == f"{case[2]} of 4{note}"
    assert float(fields["log-likelihood after"]) == case[1]
    assert f"{case[2]}/4" in stderr  # the bar stopped where EM did


def test_fit_fails_on_a_non_finite_fit(tmp_path, monkeypatch, small_file):
    fake = _fake_fit_em([np.nan], -np.inf, 1, ssm.EMStatus.DECREASED, np.inf)
    monkeypatch.setattr(ssm, "fit_em", fake)
    out = tmp_path / "out"
    code, stdout, stderr = run_main(["fit", "--data", small_file, *EM, "--out", out])
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        "jaxssm fit: error: EM failed: the fitted log-likelihood is -inf (numerical "
        "breakdown; try --dtype float64, or rescale the data)"
    )
    assert stdout == "" and not out.exists()


CLI_FILES = [Path(cli.__file__), *sorted((Path(cli.__file__).parent / "_cli").glob("*.py"))]


@pytest.mark.parametrize("path", CLI_FILES, ids=lambda p: p.name)
def test_cli_uses_public_names_only(path):
    # The command is a user of the library: its public names, and its own _cli modules.
    tree = ast.parse(path.read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    package = {m for m in modules if m and m.split(".")[0] == "jaxssm"}
    own = {m for m in package if m.startswith("jaxssm._cli.")}
    assert package - own <= {"jaxssm", "jaxssm.plotting"}, package
    used = {
        (node.value.id, node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
    }
    assert {attr for name, attr in used if name == "ssm"} <= set(ssm.__all__)
    assert {attr for name, attr in used if name == "datasets"} <= set(datasets.__all__)


def test_cli_modules_stay_small():
    # Issue 30: every library module holds one idea in at most 600 lines.
    for path in CLI_FILES:
        assert len(path.read_text().splitlines()) <= 600, path


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
    assert capsys.readouterr().out.strip() == f"jaxssm {ssm.__version__} (jax {jax.__version__})"
    assert cli.main(["fit", "--help"]) == 0
    help_text = capsys.readouterr().out
    for option in (
        "--data",
        "--iters",
        "--max-iters",
        "--start",
        "--tol",
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
    words = " ".join(help_text.split())
    # What the code draws (jaxssm.datasets.exercise_setup), not the exercise's Uniform(0, 1).
    assert "Uniform[eps, 1)" in words and "Uniform(0, 1)" not in words
    assert "data (default, the fastest route to the answer)" in words
    assert "fit (default)" in words
    assert cli.main([]) == 2


# ---------------------------------------------------------------------------------------------
# A real process: python -m jaxssm
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_python_m_jaxssm_fit(tmp_path, small_file):
    # The default path (--method fit from the data start) in a real process.
    out = tmp_path / "out"
    argv = ["fit", "--max-iters", "6", "--data", str(small_file), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "jaxssm", *argv], capture_output=True, text=True, timeout=230
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(out) in proc.stdout
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    steps, values = read_trace(out / "log_likelihood.csv", "e_step")
    assert steps[0] == 0 and steps[-1] == 6 and values[-1] > values[0]
    assert "max_iters" in summary_fields(out / "summary.txt")["status"].lower()
    with np.load(out / "params.npz") as z:
        assert z["Q"].dtype == np.float64  # --dtype float64 (the default) enabled x64 there


# --- --tol and the convergence report (issue 16) ------------------------------------------


def _fake_fit_em_tol(seen):
    real = ssm.fit_em

    def fit_em(params, ys, *, num_iters, update, method, callback, tol=None):
        seen.append(tol)
        return real(params, ys, num_iters=num_iters, update=update, tol=tol)

    return fit_em


@pytest.mark.parametrize(
    "argv, expected, shown",
    [
        ([], DEFAULT_TOL, "--tol 1e-08"),
        (["--tol", "1e-3"], 1e-3, "--tol 0.001"),
        (["--tol", "0"], None, "--tol 0"),  # 0: run all iterations
    ],
)
def test_tol_reaches_fit_em(tmp_path, monkeypatch, small_file, argv, expected, shown):
    seen = []
    monkeypatch.setattr(ssm, "fit_em", _fake_fit_em_tol(seen))
    out = tmp_path / "out"
    code, _, stderr = run_main(
        ["fit", "--data", small_file, *EM, "--iters", 2, "--out", out, "--no-plot", *argv]
    )
    assert code == 0, stderr
    assert seen == [expected]
    assert shown in summary_fields(out / "summary.txt")["command"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--tol", "-1"], "--tol"),
        (["--tol", "nan"], "--tol"),
        (["--tol", "x"], "--tol"),
        (["--tol", "1e-3", "--method", "mle"], "--tol applies to --method fit and em only"),
    ],
)
def test_bad_tol_is_a_usage_error(tmp_path, small_file, argv, match):
    code, _, stderr = run_main(["fit", "--data", small_file, "--out", tmp_path / "o", *argv])
    assert code == 2
    assert match in stderr


def test_mle_report_says_it_was_still_rising(tmp_path, monkeypatch, small_file):
    def fit_mle(params, ys, *, num_iters, update, method, callback, optimizer):
        for i in range(num_iters):
            callback(np.int32(i), np.float64(-10.0 + i))
        info = ssm.MLEInfo(np.arange(num_iters) - 10.0, np.float64(-10.0 + num_iters))
        return params, info

    monkeypatch.setattr(ssm, "fit_mle", fit_mle)
    out = tmp_path / "out"
    code, _, stderr = run_main(
        ["fit", "--data", small_file, "--method", "mle", "--iters", 3, "--out", out, "--no-plot"]
    )
    assert code == 0, stderr
    assert "compiling the MLE loop" in stderr and "3/3" in stderr  # progress for MLE
    fields = summary_fields(out / "summary.txt")
    assert fields["iterations"] == (
        "3 of 3; not converged: MLE reached the iteration limit while the log-likelihood was "
        "still rising by 1 per iteration (0.12 relative); raise --iters"
    )


@pytest.mark.slow
def test_readme_em_numbers_come_from_the_snippet():
    """The fitting guide's EM-vs-MLE start and EM values are what its EM snippet computes."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "guides" / "fitting.md").read_text()
    section = text.split("## EM or gradient-based maximum likelihood?")[1].split("\n## ")[0]
    start_text = re.search(r"start's\s+log-likelihood is (-[\d,]+)", section).group(1)
    em_text = re.search(r"EM's after 100\s+iterations (-[\d,]+)", section).group(1)
    data = datasets.load_sarcos("test")
    start, ys = datasets.exercise_setup(data.inputs, jax.random.PRNGKey(0))
    _, info = ssm.fit_em(start, ys, num_iters=100, update=("A", "Q"))
    assert round(float(info.log_likelihoods[0])) == int(start_text.replace(",", ""))
    assert round(float(info.log_likelihood)) == int(em_text.replace(",", ""))


def test_fit_with_torques_as_inputs(tmp_path, small_file, sarcos_rows):
    """--inputs torques learns (A, B, Q) with the rows' torques driving the state."""
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, *EM, "--iters", ITERS, "--inputs", "torques"]
    code, _, stderr = run_main([*argv, "--out", out, "--no-plot"])
    assert code == 0, stderr
    setup = start_params(sarcos_rows, 0)
    u = jnp.asarray(sarcos_rows[1:, 21:])
    start = setup.params._replace(B=jnp.zeros((21, 7)))
    expected, _ = ssm.fit_em(
        start, setup.ys, inputs=u, num_iters=ITERS, update=("A", "B", "Q"), tol=1e-8
    )
    with np.load(out / "params.npz") as z:
        assert z["B"].shape == (21, 7) and np.any(z["B"] != 0)
        for name in ("A", "B", "Q"):
            assert_close(z[name], getattr(expected, name), rtol=1e-12, err_msg=name)
    fields = summary_fields(out / "summary.txt")
    assert fields["inputs"] == "torques" and "update A,B,Q" in fields["method"]
    assert "--inputs torques" in fields["command"]


def test_inputs_torques_errors(tmp_path, sarcos_rows):
    path = tmp_path / "inputs_only.npz"
    np.savez(path, sarcos_inv_test=sarcos_rows[:, :21])
    code, _, stderr = run_main(
        ["fit", "--data", path, "--inputs", "torques", "--out", tmp_path / "a"]
    )
    assert code == 1 and "no torque columns" in stderr
    code, _, stderr = run_main(
        ["fit", "--data", path, "--inputs", "torques", "--forecast", 3, "--out", tmp_path / "b"]
    )
    assert code == 2 and "future steps" in stderr


def test_compilation_cache_folder(monkeypatch, tmp_path):
    # The CLI (an application) points JAX's persistent cache at $JAXSSM_COMPILATION_CACHE,
    # by default at xla/ in jaxssm's cache folder; "off" disables it; a folder already set
    # for JAX is kept. The library itself never sets it.
    before = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        monkeypatch.setenv("JAXSSM_COMPILATION_CACHE", "off")
        assert enable_compilation_cache() is None
        assert jax.config.jax_compilation_cache_dir is None
        monkeypatch.delenv("JAXSSM_COMPILATION_CACHE")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        assert enable_compilation_cache() == tmp_path / "cache" / "jaxssm" / "xla"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache" / "jaxssm" / "xla")
        monkeypatch.setenv("JAXSSM_COMPILATION_CACHE", str(tmp_path / "mine"))
        assert enable_compilation_cache() == tmp_path / "cache" / "jaxssm" / "xla"  # kept
        jax.config.update("jax_compilation_cache_dir", None)
        assert enable_compilation_cache() == tmp_path / "mine"
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


# ---------------------------------------------------------------------------------------------
# The default: jaxssm.fit to convergence, from the data or the white-noise start (issue 31)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory, small_file):
    out = tmp_path_factory.mktemp("fit") / "out"
    code, stdout, stderr = run_main(
        ["fit", "--data", small_file, "--max-iters", MAX_ITERS, "--out", out]
    )
    return code, stdout, stderr, out


def test_default_runs_fit_from_the_data_start(fit_run, sarcos_rows):
    code, stdout, stderr, out = fit_run
    assert code == 0, stderr
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    assert str(out) in stdout and "Traceback" not in stderr
    # The same call made directly: initialize's start, then fit with the command's defaults.
    setup = start_params(sarcos_rows, 0)
    start = ssm.initialize(setup.params, setup.ys, update=("A", "Q"))
    expected, info = ssm.fit(
        start, setup.ys, update=("A", "Q"), max_iters=MAX_ITERS, start="params"
    )
    assert ssm.FitStatus(int(info.status)) == ssm.FitStatus.MAX_ITERS  # 30 E-steps: not yet
    with np.load(out / "params.npz") as z:
        for name in ssm.LGSSM._fields[:6]:
            assert_close(z[name], getattr(expected, name), rtol=1e-12, err_msg=name)
        fitted = [z[name] for name in ssm.LGSSM._fields[:6]]
        np.testing.assert_array_equal(z["R"], EXERCISE_R)  # not learned: unchanged
    steps, values = read_trace(out / "log_likelihood.csv", "e_step")
    assert steps[0] == 0 and steps[-1] == int(info.num_e_steps) - 1
    assert np.all(np.diff(steps) > 0) and np.all(np.diff(values) >= -1e-9 * np.abs(values[:-1]))
    assert_close(values[0], reference_ll(start, sarcos_rows), rtol=1e-9)
    assert_close(values[-1], reference_ll(fitted, sarcos_rows), rtol=1e-9)

    fields = summary_fields(out / "summary.txt")
    ll = values[-1]
    assert float(fields["log-likelihood before"]) == values[0]
    assert float(fields["log-likelihood after"]) == ll
    assert fields["method"] == "fit (update A,Q)"
    assert fields["start"].startswith("data (jaxssm.initialize), ")
    assert fields["e-steps"].startswith(
        f"{int(info.num_e_steps)} (the loop's budget --max-iters 30"
    )
    assert fields["status"].startswith("MAX_ITERS (not converged: the loop used its 30 E-steps")
    assert fields["free parameters"] == "672"  # A: 21^2, Q: 21 * 22 / 2
    assert_close(float(fields["AIC"]), 2 * 672 - 2 * ll, rtol=1e-12)
    assert_close(float(fields["BIC"]), 672 * np.log(NUM_ROWS - 1) - 2 * ll, rtol=1e-12)
    assert_close(float(fields["grad_norm"].split()[0]), float(info.grad_norm), rtol=1e-5)
    rise = float(fields["last relative change"].split()[0])
    assert rise > 1e-8  # not converged: the log-likelihood is still rising
    assert "E-steps" in fields["wall time"] and fields["wall time"].startswith("fit ")
    assert "--method fit --start data --max-iters 30 --tol 1e-08 " in fields["command"]
    # Printed: a start line and an end line (fit's loop is compiled: no bar), how far it is.
    lines = stderr.splitlines()
    assert lines[1].startswith("start: jaxssm.initialize's estimate from the data")
    assert lines[2].startswith("running jaxssm.fit (compiling, then at most 30 E-steps")
    end = lines[3]
    assert end.startswith(f"log-likelihood {values[0]:.6g} -> {ll:.6g} in ")
    assert f"{int(info.num_e_steps)} E-steps); not converged: " in end
    assert "how far from converged: relative change" in end and "raise --max-iters" in end
    assert (
        lines[4]
        == f"AIC {2 * 672 - 2 * ll:.6g}, BIC {float(fields['BIC']):.6g} (672 free parameters)"
    )


def test_start_white_runs_fit_from_the_exercise_start(tmp_path, small_file, sarcos_rows):
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, "--start", "white", "--seed", 3, "--max-iters", MAX_ITERS]
    code, _, stderr = run_main([*argv, "--out", out, "--no-plot"])
    assert code == 0, stderr
    start = start_params(sarcos_rows, 3).params
    expected, _ = ssm.fit(
        start, start_params(sarcos_rows, 3).ys, max_iters=MAX_ITERS, start="params"
    )
    with np.load(out / "params.npz") as z:
        for name in ("A", "Q"):
            assert_close(z[name], getattr(expected, name), rtol=1e-12, err_msg=name)
    _, values = read_trace(out / "log_likelihood.csv", "e_step")
    assert_close(values[0], reference_ll(start, sarcos_rows), rtol=1e-9)
    fields = summary_fields(out / "summary.txt")
    assert fields["start"] == "white (the exercise's)"
    assert "start: jaxssm.initialize" not in stderr


def _fake_fit(lls, ll, e_steps, status, grad_norm, seen=None, boundary=None):
    """A stand-in for ssm.fit that reports a given run (and records how it was called)."""

    def fit(params, ys, *, update, tol, max_iters, method, start, inputs=None):
        assert start == "params"  # the command builds the start itself (build_start)
        if seen is not None:
            seen.append(dict(params=params, update=update, tol=tol, max_iters=max_iters))
            seen[-1].update(method=method, inputs=inputs)
        trace = np.full(max_iters, np.nan)
        trace[: len(lls)] = lls
        k = 672
        info = ssm.FitInfo(
            log_likelihood=np.float64(ll),
            log_likelihoods=trace,
            num_e_steps=e_steps,
            status=status,
            grad_norm=np.float64(grad_norm),
            num_free_params=k,
            aic=np.float64(2 * k - 2 * ll),
            bic=np.float64(k * np.log(199) - 2 * ll),
            num_extrapolations=1,
            num_rejected=1,
            **(boundary or {}),
        )
        return params, info

    return fit


@pytest.mark.parametrize(
    "boundary, text",
    [
        (None, "not run (no learned covariance had a vanishing eigenvalue)"),
        (
            dict(num_grad_evals=106, rank_dropped={"Q": 5}, boundary_slope=-1.05e6),
            "106 exact gradients; eigenvalues held at zero: Q 5; KKT sign check -1.05e+06",
        ),
    ],
)
def test_fit_summary_reports_the_boundary_stage(tmp_path, monkeypatch, small_file, boundary, text):
    case = ([-10.0, -5.0, -4.0], -4.0, 4, ssm.FitStatus.CONVERGED, 1e-6)
    monkeypatch.setattr(ssm, "fit", _fake_fit(*case, boundary=boundary))
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, "--max-iters", 3, "--out", out, "--no-plot"]
    code, _, stderr = run_main(argv)
    assert code == 0, stderr
    assert summary_fields(out / "summary.txt")["boundary stage"].startswith(text)


@pytest.mark.parametrize(
    "case, status_text, note",
    [
        (
            ([-10.0, -5.0, np.nan, -4.9, -4.9, -4.9, -4.9], -4.9, 8, ssm.FitStatus.CONVERGED, 1e-4),
            "CONVERGED (the relative change and the scaled gradient both passed --tol)",
            "; converged (relative change 0 over the last SQUAREM cycle, scaled gradient "
            "0.0001 (predicted gain 0.5 grad_norm^2 = 5e-09 nats; tol |log p(y)| = 4.9e-08))",
        ),
        (
            ([-10.0, -5.0, -4.0, -3.5], -3.5, 5, ssm.FitStatus.MAX_ITERS, 2.0),
            "MAX_ITERS (not converged: the loop used its 4 E-steps (--max-iters))",
            "; not converged: the loop used its 4 E-steps (--max-iters); how far from "
            "converged: relative change 0.65 over the last SQUAREM cycle, scaled gradient 2 "
            "(predicted gain 0.5 grad_norm^2 = 2 nats; tol |log p(y)| = 3.5e-08); raise "
            "--max-iters",
        ),
        (
            ([-10.0, -5.0, -4.0, -4.0], -4.0, 5, ssm.FitStatus.STALLED, 3.0),
            "STALLED (not converged: stalled, the log-likelihood stopped rising",
            "; not converged: stalled,",
        ),
        (
            ([-10.0, -5.0, -4.0], -4.0, 4, ssm.FitStatus.DECREASED, 3.0),
            "DECREASED (not converged: an EM step lowered the log-likelihood",
            "; not converged: an EM step lowered the log-likelihood (numerical breakdown",
        ),
    ],
)
def test_fit_reports_how_it_stopped(tmp_path, monkeypatch, small_file, case, status_text, note):
    monkeypatch.setattr(ssm, "fit", _fake_fit(*case))
    out = tmp_path / "out"
    budget = max(len(case[0]), 3)
    argv = ["fit", "--data", small_file, "--max-iters", budget, "--out", out, "--no-plot"]
    code, _, stderr = run_main(argv)
    assert code == 0, stderr
    lls, ll, e_steps = case[:3]
    steps, values = read_trace(out / "log_likelihood.csv", "e_step")
    finite = [i for i, v in enumerate(lls) if np.isfinite(v)]
    assert steps == [*finite, e_steps - 1]  # rejected extrapolations left out, then the end
    np.testing.assert_array_equal(values, [lls[i] for i in finite] + [ll])
    fields = summary_fields(out / "summary.txt")
    assert fields["status"].startswith(status_text)
    assert fields["e-steps"].startswith(f"{e_steps} (the loop's budget --max-iters {budget}, ")
    assert fields["e-steps"].endswith("SQUAREM: 1 extrapolations, 1 rejected)")
    assert float(fields["grad_norm"].split()[0]) == case[4]
    (end,) = [line for line in stderr.splitlines() if line.startswith("log-likelihood ")]
    assert note in end
    assert f", {e_steps} E-steps)" in fields["wall time"]


def test_fit_says_when_the_boundary_stage_budget_ran_out(tmp_path, monkeypatch, small_file):
    # MAX_ITERS after 119 of 10,000 E-steps: the gradients ran out, not the E-steps.
    boundary = dict(num_grad_evals=1000, rank_dropped={"Q": 5}, boundary_slope=1.0)
    case = ([-10.0, -5.0, -4.0], -4.0, 119, ssm.FitStatus.MAX_ITERS, 2.0)
    monkeypatch.setattr(ssm, "fit", _fake_fit(*case, boundary=boundary))
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, "--max-iters", 10000, "--out", out, "--no-plot"]
    code, _, stderr = run_main(argv)
    assert code == 0, stderr
    status = summary_fields(out / "summary.txt")["status"]
    assert status.startswith(
        "MAX_ITERS (not converged: the boundary stage used its 1000 exact gradients"
    )
    assert "10000 E-steps" not in status


def test_fit_fails_on_a_non_finite_result(tmp_path, monkeypatch, small_file):
    monkeypatch.setattr(ssm, "fit", _fake_fit([-10.0], -np.inf, 4, ssm.FitStatus.DECREASED, 0))
    out = tmp_path / "out"
    code, stdout, stderr = run_main(["fit", "--data", small_file, "--out", out])
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        "jaxssm fit: error: fit failed: the fitted log-likelihood is -inf (numerical "
        "breakdown; try --dtype float64, or rescale the data)"
    )
    assert stdout == "" and not out.exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], dict(tol=DEFAULT_TOL, max_iters=DEFAULT_MAX_ITERS, update=("A", "Q"))),
        (
            ["--tol", "1e-3", "--max-iters", "50", "--update", "Q"],
            dict(tol=1e-3, max_iters=50, update=("Q",)),
        ),
        (["--tol", "0"], dict(tol=0.0, max_iters=DEFAULT_MAX_ITERS, update=("A", "Q"))),
    ],
)
def test_options_reach_fit(tmp_path, monkeypatch, small_file, argv, expected):
    seen = []
    monkeypatch.setattr(ssm, "fit", _fake_fit([-10.0, -5.0, -4.0], -4.0, 4, 1, 0.0, seen))
    out = tmp_path / "out"
    code, _, stderr = run_main(["fit", "--data", small_file, "--out", out, "--no-plot", *argv])
    assert code == 0, stderr
    (call,) = seen
    assert {k: call[k] for k in expected} == expected
    assert call["method"] == "sequential" and call["inputs"] is None
    command = summary_fields(out / "summary.txt")["command"]
    assert f"--max-iters {expected['max_iters']} --tol {expected['tol']:g}" in command


@pytest.mark.parametrize("start", ["data", "white"])
def test_start_option_builds_the_start(tmp_path, monkeypatch, small_file, sarcos_rows, start):
    seen = []
    monkeypatch.setattr(ssm, "fit", _fake_fit([-10.0, -5.0, -4.0], -4.0, 4, 1, 0.0, seen))
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, "--start", start, "--seed", 5, "--inputs", "torques"]
    code, _, stderr = run_main([*argv, "--out", out, "--no-plot"])
    assert code == 0, stderr
    (call,) = seen
    setup = start_params(sarcos_rows, 5)
    u = jnp.asarray(sarcos_rows[1:, 21:])
    white = setup.params._replace(B=jnp.zeros((21, 7)))
    np.testing.assert_array_equal(np.asarray(call["inputs"]), np.asarray(u))
    assert call["update"] == ("A", "B", "Q")
    if start == "white":
        expected = white
    else:
        expected = ssm.initialize(white, setup.ys, update=("A", "B", "Q"), inputs=u)
        assert np.any(np.asarray(expected.B) != 0)
    for name in ("m0", "P0", "A", "Q", "H", "R", "B"):
        got, want = getattr(call["params"], name), getattr(expected, name)
        assert_close(got, want, rtol=1e-12, err_msg=name)
    assert summary_fields(out / "summary.txt")["start"].startswith(start)


# ---------------------------------------------------------------------------------------------
# Issue 33: messages about the data, the m0 fill-in, a diverged MLE, the plot's convergence note
# ---------------------------------------------------------------------------------------------


def _issue33_fit_em(status, count=3):
    """A stand-in for ssm.fit_em (no compilation): a rising trace and the given status."""

    def fit_em(params, ys, *, num_iters, update, method, callback, **options):
        for i in range(count):
            callback(np.int32(i), np.float64(-10.0 + i))
        trace = np.full(num_iters, np.nan)
        trace[:count] = -10.0 + np.arange(count)
        info = ssm.EMInfo(
            trace, np.float64(-10.0 + count), np.int32(count), np.int32(status), np.float64(0.0)
        )
        return params, info

    return fit_em


def test_data_too_large_to_square_says_rescale(tmp_path, sarcos_rows):
    path = tmp_path / "huge.npz"
    np.savez(path, x=sarcos_rows * 1e200)
    code, _, stderr = run_main(["fit", "--data", path, *EM, "--out", tmp_path / "o"])
    assert code == 1
    assert "huge.npz: the data reach" in stderr and "squares overflow" in stderr
    assert "rescale the data, e.g. divide them by 1e+20" in stderr
    assert "-inf" not in stderr


def test_all_nan_data_names_the_file(tmp_path, sarcos_rows):
    path = tmp_path / "empty.npz"
    np.savez(path, x=np.full_like(sarcos_rows, np.nan))
    code, _, stderr = run_main(["fit", "--data", path, *EM, "--out", tmp_path / "o"])
    assert code == 1
    assert f"{path}: every value after the first row is NaN (missing)" in stderr
    assert "ValueError" not in stderr and "Y must" not in stderr


def test_nan_first_row_is_filled_and_reported(tmp_path, monkeypatch, sarcos_rows):
    rows = sarcos_rows.copy()
    rows[0, [2, 5]] = np.nan
    path = tmp_path / "gappy.npz"
    np.savez(path, x=rows)
    monkeypatch.setattr(ssm, "fit_em", _issue33_fit_em(ssm.EMStatus.CONVERGED))
    out = tmp_path / "out"
    code, _, stderr = run_main(["fit", "--data", path, *EM, "--out", out, "--no-plot"])
    assert code == 0, stderr
    expected = (
        "data row 0, with its missing (NaN) entries in columns [2, 5] replaced by their "
        f"column's mean over the {rows.shape[0]} rows (0 for a column with no observed entry)"
    )
    assert summary_fields(out / "summary.txt")["m0"] == expected
    assert f"m0: {expected}" in stderr
    fitted = np.load(out / "params.npz")["m0"]
    np.testing.assert_allclose(fitted[[2, 5]], np.nanmean(rows[:, [2, 5]], axis=0), rtol=1e-15)


@pytest.mark.parametrize(
    "status, note",
    [
        (ssm.EMStatus.CONVERGED, None),
        (ssm.EMStatus.MAX_ITERS, "not converged: EM reached the iteration limit"),
    ],
)
def test_fit_png_says_when_not_converged(tmp_path, monkeypatch, small_file, status, note):
    seen = {}

    def write_plot(path, *args, note=None, **kwargs):
        seen["note"] = note
        return ""

    monkeypatch.setattr(ssm, "fit_em", _issue33_fit_em(status))
    monkeypatch.setattr(cli, "write_plot", write_plot)
    code, _, stderr = run_main(["fit", "--data", small_file, *EM, "--out", tmp_path / "o"])
    assert code == 0, stderr
    if note is None:
        assert seen["note"] is None
    else:
        assert seen["note"].startswith(note)


def test_diverged_mle_keeps_the_best_iterate_in_the_report(tmp_path, monkeypatch, small_file):
    def fit_mle(params, ys, *, num_iters, update, method, callback, optimizer):
        trace = np.array([-10.0, -9.0, -50.0])
        info = ssm.MLEInfo(
            trace, np.float64(-9.0), np.int32(ssm.MLEStatus.DIVERGED), np.float64(91.0), 1
        )
        return params, info

    monkeypatch.setattr(ssm, "fit_mle", fit_mle)
    out = tmp_path / "out"
    argv = ["fit", "--data", small_file, "--method", "mle", "--iters", 3, "--out", out]
    code, _, stderr = run_main([*argv, "--no-plot"])
    assert code == 0, stderr
    assert "the optimiser diverged" in stderr and "the best iterate (1) is kept" in stderr
    _, values = read_trace(out / "log_likelihood.csv")
    np.testing.assert_array_equal(values, [-10.0, -9.0])
