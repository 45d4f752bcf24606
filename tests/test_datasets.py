import ast
import hashlib
import io
import sys
import urllib.error
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

import jaxssm
from jaxssm import datasets

TEST_ARRAY_SHA256 = "864dfd244626920ad1994a9aaecd5fa55fad8f7d4792bb3eb6dfe9bcaa28d817"
N_TEST = 4449
EXERCISE_R = np.kron(np.diag([0.01, 0.01, 1.0]), np.eye(7))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, no real cache or data directory: every test runs in tmp_path."""

    def no_network(url, timeout):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(datasets, "_fetch", no_network)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("JAXSSM_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def test_array():
    data = datasets.load_sarcos("test")
    return np.concatenate([data.inputs, data.torques], axis=1)


def _savez_exact_name(path, **arrays):
    with open(path, "wb") as f:  # np.savez(path) would append ".npz" to "f.NPZ"
        np.savez(f, **arrays)


def _save_exact_name(path, array):
    with open(path, "wb") as f:  # np.save(path) would append ".npy" to "b.NPY"
        np.save(f, array)


def _mat_bytes(array, key="sarcos_inv"):
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {key: array})
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# Bundled test split
# ----------------------------------------------------------------------------------------------


def test_bundled_test_split():
    data = datasets.load_sarcos()
    assert isinstance(data, datasets.SarcosData)
    assert data.inputs.shape == (N_TEST, 21)
    assert data.torques.shape == (N_TEST, 7)
    assert data.inputs.dtype == data.torques.dtype == np.float64
    assert np.all(np.isfinite(data.inputs)) and np.all(np.isfinite(data.torques))
    assert data.name == "sarcos_inv_test"
    raw = np.concatenate([data.inputs, data.torques], axis=1)
    digest = hashlib.sha256(np.ascontiguousarray(raw, dtype="<f8").tobytes()).hexdigest()
    assert digest == TEST_ARRAY_SHA256


def test_bundled_file_ships_in_package():
    path = Path(datasets.__file__).parent / "data" / "sarcos_inv_test.npz"
    assert path.is_file()


# ----------------------------------------------------------------------------------------------
# Files given by path
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "writer"),
    [
        ("a.mat", lambda p, x: scipy.io.savemat(p, {"sarcos_inv": x})),
        ("b.mat", lambda p, x: scipy.io.savemat(p, {"sarcos_inv_test": x})),
        ("c.mat", lambda p, x: scipy.io.savemat(p, {"whatever": x})),
        ("d.npz", lambda p, x: np.savez(p, sarcos_inv=x)),
        ("e.npz", lambda p, x: np.savez_compressed(p, sarcos_inv_test=x, other=x[:2])),
        ("f.NPZ", lambda p, x: _savez_exact_name(p, data=x)),
    ],
)
def test_load_from_path(tmp_path, test_array, filename, writer):
    path = tmp_path / filename
    writer(path, test_array)
    data = datasets.load_sarcos("train", path=path)
    np.testing.assert_array_equal(data.inputs, test_array[:, :21])
    np.testing.assert_array_equal(data.torques, test_array[:, 21:])
    assert data.name == "sarcos_inv"  # split only labels a file given by path
    assert datasets.load_sarcos("test", path=str(path)).name == "sarcos_inv_test"


def test_21_columns_give_empty_torques(tmp_path, test_array):
    path = tmp_path / "inputs.npz"
    np.savez(path, sarcos_inv=test_array[:, :21])
    data = datasets.load_sarcos(path=path)
    np.testing.assert_array_equal(data.inputs, test_array[:, :21])
    assert data.torques.shape == (N_TEST, 0)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        datasets.load_sarcos("train", path=tmp_path / "nope.mat")


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        datasets.load_sarcos("validation")


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda x: x[:, :27], r"expected shape \(N, 28\) .*got shape \(4449, 27\)"),
        (lambda x: x[:, 0], r"got shape \(4449,\)"),
        (lambda x: x[:0], r"got shape \(0, 28\)"),
        (lambda x: x.astype(complex), "real numbers"),
    ],
)
def test_bad_shape_or_dtype(tmp_path, test_array, make, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, sarcos_inv=make(test_array))
    with pytest.raises(ValueError, match=pattern) as info:
        datasets.load_sarcos(path=path)
    assert "bad.npz" in str(info.value)


@pytest.mark.parametrize("bad_value", [np.inf, -np.inf])
def test_infinite_rows(tmp_path, test_array, bad_value):
    array = test_array.copy()
    array[17, 3] = bad_value
    array[900, 25] = bad_value
    path = tmp_path / "inf.mat"
    scipy.io.savemat(path, {"sarcos_inv": array})
    with pytest.raises(ValueError, match=r"row 17 .*Inf; 2 of 4449 rows") as info:
        datasets.load_sarcos(path=path)
    assert "inf.mat" in str(info.value)


def test_nan_entries_load_as_missing(tmp_path, test_array):
    array = test_array.copy()
    array[0, 3] = np.nan
    array[900, 5] = np.nan
    path = tmp_path / "gaps.mat"
    scipy.io.savemat(path, {"sarcos_inv": array})
    data = datasets.load_sarcos(path=path)
    assert np.isnan(data.inputs[900, 5]) and np.isnan(data.inputs[0, 3])
    assert np.sum(np.isnan(data.inputs)) == 2
    # The exercise's start takes a missing first-row entry from its column's mean.
    start, ys = datasets.exercise_setup(data.inputs, jax.random.PRNGKey(0))
    assert np.all(np.isfinite(np.asarray(start.m0)))
    np.testing.assert_allclose(float(start.m0[3]), np.nanmean(array[:, 3]), rtol=1e-12)
    assert np.isnan(np.asarray(ys)[899, 5])


def test_knock_out():
    ys = np.arange(2000.0).reshape(500, 4)
    out = datasets.knock_out(ys, entries=0.1, rows=0.05, gaps=[(100, 50)], seed=3)
    assert out.shape == ys.shape and np.all(np.isnan(out[100:150]))
    kept = ~np.isnan(out)
    np.testing.assert_array_equal(out[kept], ys[kept])
    frac = np.mean(np.isnan(np.delete(out, np.s_[100:150], axis=0)))
    # 1 - 0.9 * 0.95 = 0.145 expected; 1800 entries, sd ~ 0.008 (rows correlate entries).
    assert 0.10 < frac < 0.19, frac
    np.testing.assert_array_equal(
        out, datasets.knock_out(ys, entries=0.1, rows=0.05, gaps=[(100, 50)], seed=3)
    )
    with pytest.raises(ValueError, match="entries must be a probability"):
        datasets.knock_out(ys, entries=1.5)
    with pytest.raises(ValueError, match="gap"):
        datasets.knock_out(ys, gaps=[(490, 20)])


def test_ambiguous_or_unsupported_file(tmp_path, test_array):
    path = tmp_path / "two.npz"
    np.savez(path, a=test_array, b=test_array)
    with pytest.raises(ValueError, match=r"sarcos_inv or sarcos_inv_test"):
        datasets.load_sarcos(path=path)
    csv = tmp_path / "x.csv"
    csv.write_text("1,2\n")
    with pytest.raises(ValueError, match=r"\.mat or \.npz"):
        datasets.load_sarcos(path=csv)


def test_mat_without_scipy(tmp_path, test_array, monkeypatch):
    path = tmp_path / "a.mat"
    scipy.io.savemat(path, {"sarcos_inv": test_array})
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # makes `from scipy.io import` fail
    with pytest.raises(ImportError, match="needs scipy"):
        datasets.load_sarcos(path=path)


# ----------------------------------------------------------------------------------------------
# load_array: files of your own
# ----------------------------------------------------------------------------------------------


def _save_text(path, array, delimiter):
    header = "q1 ... tau7, written by the test"  # a '#' comment line, skipped
    np.savetxt(path, array, fmt="%.17g", delimiter=delimiter, header=header)


@pytest.mark.parametrize(
    ("filename", "writer"),
    [
        ("a.npy", lambda p, x: np.save(p, x)),
        ("b.NPY", lambda p, x: _save_exact_name(p, x)),
        ("c.csv", lambda p, x: _save_text(p, x, ",")),
        ("d.txt", lambda p, x: _save_text(p, x, " ")),
        ("e.npz", lambda p, x: np.savez(p, anything=x)),
        ("f.mat", lambda p, x: scipy.io.savemat(p, {"sarcos_inv": x})),
    ],
)
@pytest.mark.parametrize("columns", [28, 21])
def test_load_array_formats(tmp_path, test_array, filename, writer, columns):
    array = test_array[:300, :columns]
    path = tmp_path / filename
    writer(path, array)
    data = datasets.load_array(path)
    np.testing.assert_array_equal(data.inputs, array[:, :21])  # "%.17g" round-trips exactly
    np.testing.assert_array_equal(data.torques, array[:, 21:])
    assert data.torques.shape == (300, columns - 21)
    assert data.inputs.dtype == np.float64 and data.inputs.flags.c_contiguous
    assert data.name == str(path)
    assert datasets.load_array(str(path)).name == str(path)


def test_load_array_integers_and_expanded_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    np.save(tmp_path / "ints.npy", np.arange(2 * 21).reshape(2, 21))
    data = datasets.load_array("~/ints.npy")
    assert data.inputs.dtype == np.float64
    np.testing.assert_array_equal(data.inputs[1], np.arange(21, 42))
    assert data.name == str(tmp_path / "ints.npy")


def test_load_array_missing_or_unsupported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        datasets.load_array(tmp_path / "nope.npy")
    with pytest.raises(FileNotFoundError):
        datasets.load_array(tmp_path)  # a folder is not a file
    (tmp_path / "data.json").write_text("[]")
    with pytest.raises(ValueError, match=r"data\.json: unsupported file type '\.json'") as info:
        datasets.load_array(tmp_path / "data.json")
    for suffix in (".npz", ".mat", ".npy", ".csv", ".txt"):
        assert suffix in str(info.value)


@pytest.mark.parametrize(
    ("filename", "content", "pattern"),
    [
        ("header.csv", "a,b,c\n1,2,3\n", r"header\.csv: cannot read it as \.csv"),
        ("ragged.txt", "1 2 3\n4 5\n", r"ragged\.txt: cannot read it as \.txt"),
        ("three.csv", "1,2,3\n4,5,6\n", r"three\.csv: expected shape .*got shape \(2, 3\)"),
        ("empty.npy", "", r"empty\.npy: the file is empty or truncated"),
        ("text.npy", "not numpy", r"text\.npy: cannot read it as \.npy"),
        ("empty.npz", "", r"empty\.npz: the file is empty or truncated"),
    ],
)
def test_load_array_unreadable(tmp_path, filename, content, pattern):
    path = tmp_path / filename
    path.write_text(content)
    with pytest.raises(ValueError, match=pattern):
        datasets.load_array(path)


def test_load_array_checks_rows(tmp_path, test_array):
    bad = test_array[:50].copy()
    bad[7, 2] = np.inf
    np.savetxt(tmp_path / "inf.csv", bad, delimiter=",")
    with pytest.raises(ValueError, match=r"inf\.csv: row 7 .*1 of 50 rows"):
        datasets.load_array(tmp_path / "inf.csv")
    bad[7, 2] = np.nan  # a gap: loads, marked missing
    np.savetxt(tmp_path / "gap.csv", bad, delimiter=",")
    assert np.isnan(datasets.load_array(tmp_path / "gap.csv").inputs[7, 2])
    np.save(tmp_path / "flat.npy", test_array[0])
    with pytest.raises(ValueError, match=r"flat\.npy: expected shape .*got shape \(28,\)"):
        datasets.load_array(tmp_path / "flat.npy")
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"pickled\.npy"):
        datasets.load_array(tmp_path / "pickled.npy")


# ----------------------------------------------------------------------------------------------
# Training split: data directory, cache, download
# ----------------------------------------------------------------------------------------------


def test_train_from_data_dir(tmp_path, test_array, monkeypatch):
    monkeypatch.setenv("JAXSSM_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "sarcos_inv.npz", sarcos_inv=test_array)
    data = datasets.load_sarcos("train")
    np.testing.assert_array_equal(data.inputs, test_array[:, :21])
    assert data.name == "sarcos_inv"


def test_train_from_cache(tmp_path, test_array):
    cache = tmp_path / "cache" / "jaxssm"
    cache.mkdir(parents=True)
    scipy.io.savemat(cache / "sarcos_inv.mat", {"sarcos_inv": test_array})
    data = datasets.load_sarcos("train")
    np.testing.assert_array_equal(data.torques, test_array[:, 21:])


def test_cache_dir(monkeypatch, tmp_path):
    assert datasets.cache_dir() == tmp_path / "cache" / "jaxssm"  # $XDG_CACHE_HOME/jaxssm
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in (
        lambda: monkeypatch.delenv("XDG_CACHE_HOME"),
        lambda: monkeypatch.setenv("XDG_CACHE_HOME", ""),
    ):
        unset()
        assert datasets.cache_dir() == tmp_path / "home" / ".cache" / "jaxssm"
    assert not (tmp_path / "home").exists()  # only a path: nothing is created


def test_missing_train_without_network(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_sarcos("train")
    message = str(info.value)
    assert "\n" not in message
    assert "JAXSSM_DATA_DIR" in message
    assert "path=" in message
    assert str(tmp_path / "cache" / "jaxssm" / "sarcos_inv.mat") in message
    assert "network disabled in tests" in message
    assert not (tmp_path / "cache" / "jaxssm" / "sarcos_inv.mat").exists()


def test_download_with_wrong_bytes_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_fetch", lambda url, timeout: b"<html>captive portal</html>")
    with pytest.raises(FileNotFoundError, match="git blob id"):
        datasets.load_sarcos("train")
    assert not (tmp_path / "cache" / "jaxssm").exists()


def test_download_verifies_caches_and_loads(tmp_path, test_array, monkeypatch):
    payload = _mat_bytes(test_array)
    calls = []

    def fake_fetch(url, timeout):
        calls.append((url, timeout))
        return payload

    monkeypatch.setattr(datasets, "_fetch", fake_fetch)
    monkeypatch.setattr(datasets, "SARCOS_TRAIN_GIT_BLOB", datasets._git_blob_sha1(payload))
    data = datasets.load_sarcos("train")
    np.testing.assert_array_equal(data.inputs, test_array[:, :21])
    assert calls == [(datasets.SARCOS_TRAIN_URL, datasets._DOWNLOAD_TIMEOUT_S)]
    cached = tmp_path / "cache" / "jaxssm" / "sarcos_inv.mat"
    assert cached.read_bytes() == payload
    # Second call reads the cache and does not download again.
    np.testing.assert_array_equal(datasets.load_sarcos("train").inputs, data.inputs)
    assert len(calls) == 1


def test_git_blob_id():
    # `printf 'hello\n' | git hash-object --stdin`
    assert datasets._git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert datasets._git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    datasets._verify_git_blob(b"hello\n", "ce013625030ba8dba906f756967f9e9ca394464a", "x")
    with pytest.raises(ValueError, match="does not match"):
        datasets._verify_git_blob(b"hello!\n", "ce013625030ba8dba906f756967f9e9ca394464a", "x")
    with pytest.raises(ValueError, match="does not match"):
        datasets._verify_git_blob(b"hello\n", datasets.SARCOS_TRAIN_GIT_BLOB, "x")


# ----------------------------------------------------------------------------------------------
# Stand-in
# ----------------------------------------------------------------------------------------------


def test_stand_in(test_array):
    stand_in = datasets.sarcos_stand_in()
    assert stand_in.inputs.shape == (44484, 21)
    assert stand_in.torques.shape == (44484, 7)
    assert "stand-in" in stand_in.name
    assert "train" not in stand_in.name.lower()
    inputs = test_array[:, :21]
    # Forward, then reversed without repeating the turning rows, then forward again.
    np.testing.assert_array_equal(stand_in.inputs[:N_TEST], inputs)
    np.testing.assert_array_equal(stand_in.inputs[N_TEST : 2 * N_TEST - 1], inputs[-2::-1])
    np.testing.assert_array_equal(stand_in.inputs[2 * N_TEST - 2 : 3 * N_TEST - 2], inputs)
    np.testing.assert_array_equal(stand_in.torques[N_TEST], test_array[N_TEST - 2, 21:])
    # No jumps: no step (joins included) is larger than the largest step inside the test split.
    largest_test_step = np.abs(np.diff(inputs, axis=0)).max(axis=0)
    largest_step = np.abs(np.diff(stand_in.inputs, axis=0)).max(axis=0)
    assert np.all(largest_step <= largest_test_step)
    for join in range(N_TEST - 1, 44484 - 1, N_TEST - 1):
        step = np.abs(stand_in.inputs[join + 1] - stand_in.inputs[join])
        assert np.all(step <= largest_test_step)
        assert np.any(step > 0)  # the turning row is not repeated


def test_stand_in_lengths():
    assert datasets.sarcos_stand_in(10).inputs.shape == (10, 21)
    assert datasets.sarcos_stand_in(np.int64(5000)).torques.shape == (5000, 7)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_steps"):
            datasets.sarcos_stand_in(bad)


def test_reflected_index():
    np.testing.assert_array_equal(
        datasets._reflected_index(11, 4), [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    )
    np.testing.assert_array_equal(datasets._reflected_index(3, 1), [0, 0, 0])


# ----------------------------------------------------------------------------------------------
# exercise_setup
# ----------------------------------------------------------------------------------------------


def test_exercise_setup_matches_the_exercise(test_array):
    Y = test_array[:200, :21]
    setup = datasets.exercise_setup(Y, jax.random.PRNGKey(3), dtype=jnp.float64)
    assert isinstance(setup, datasets.ExerciseSetup) and isinstance(setup.params, jaxssm.LGSSM)
    params, ys = setup
    np.testing.assert_array_equal(np.asarray(params.m0), Y[0])
    np.testing.assert_array_equal(np.asarray(ys), Y[1:])
    np.testing.assert_array_equal(np.asarray(params.H), np.eye(21))
    np.testing.assert_array_equal(np.asarray(params.R), EXERCISE_R)
    np.testing.assert_array_equal(np.asarray(params.P0), EXERCISE_R)
    np.testing.assert_array_equal(np.asarray(params.A), np.zeros((21, 21)))
    Q = np.asarray(params.Q)
    np.testing.assert_array_equal(Q, np.diag(np.diag(Q)))
    assert np.all(np.diag(Q) > 0) and np.all(np.diag(Q) < 0.01)
    assert all(x.dtype == jnp.float64 for x in params[:6]) and ys.dtype == jnp.float64
    jaxssm.validate_params(params)  # a valid model: covariances SPD


def test_exercise_setup_key_dtype_and_joints(test_array):
    Y = test_array[:200, :21]
    q = [np.diag(datasets.exercise_setup(Y, jax.random.PRNGKey(s)).params.Q) for s in (0, 0, 1)]
    np.testing.assert_array_equal(q[0], q[1])
    assert not np.allclose(q[0], q[2])
    p32, ys32 = datasets.exercise_setup(Y, jax.random.PRNGKey(0), dtype="float32")
    assert all(x.dtype == jnp.float32 for x in p32[:6]) and ys32.dtype == jnp.float32
    # Integer data and dtype=None: the default float dtype (float64 here, x64 is on).
    ints, ys_int = datasets.exercise_setup(np.ones((5, 6), dtype=np.int32), jax.random.PRNGKey(0))
    assert ints.Q.dtype == ys_int.dtype == jnp.float64
    # Any number of joints J (3 J columns): R = kron(diag(0.01, 0.01, 1), I_J).
    np.testing.assert_array_equal(np.diag(np.asarray(ints.R)), [0.01, 0.01, 0.01, 0.01, 1, 1])


@pytest.mark.parametrize(
    "Y, match",
    [
        (np.ones((10, 20)), r"shape \[N\+1, 3 J\]"),
        (np.ones((1, 21)), r"shape \[N\+1, 3 J\]"),
        (np.ones(21), r"shape \[N\+1, 3 J\]"),
        (np.ones((4, 21), dtype=complex), "real numbers"),
        (np.where(np.arange(21) == 4, np.inf, np.ones((6, 21))), "row 0 .*Inf"),
        (np.full((6, 21), np.nan), "observed"),
    ],
)
def test_exercise_setup_rejects_bad_data(Y, match):
    with pytest.raises(ValueError, match=match):
        datasets.exercise_setup(Y, jax.random.PRNGKey(0))


def test_exercise_setup_rejects_bad_dtype():
    with pytest.raises(ValueError, match="floating dtype"):
        datasets.exercise_setup(np.ones((4, 21)), jax.random.PRNGKey(0), dtype=jnp.int32)


def test_exercise_setup_float64_needs_x64():
    if not hasattr(jax, "enable_x64"):  # the context manager is new in jax 0.7
        pytest.skip("needs jax.enable_x64")
    with jax.enable_x64(False), pytest.raises(ValueError, match="x64 mode"):
        datasets.exercise_setup(np.ones((4, 21)), jax.random.PRNGKey(0), dtype="float64")
    with jax.enable_x64(False):
        params, ys = datasets.exercise_setup(np.ones((4, 21)), jax.random.PRNGKey(0))
    assert params.Q.dtype == ys.dtype == jnp.float32  # dtype=None follows x64 mode


def test_datasets_imports_only_types_and_argument_checks_from_the_package():
    # datasets is a leaf that loads data: it needs the parameter type and the one integer
    # check of the argument layer, none of the numerical modules.
    tree = ast.parse(Path(datasets.__file__).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m.split(".")[0] == "jaxssm"} == {
        "jaxssm._base.types",
        "jaxssm._args.checks",
    }
    assert {"ExerciseSetup", "exercise_setup", "load_array", "cache_dir"} <= set(datasets.__all__)


# --- corrupt archives and one start in every dtype (issue 16) -----------------------------


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: _write(p, b"not an archive at all"), r"not a valid \.npz file.*not a zip"),
        (lambda p: _write(p, b"PK\x03\x04" + b"\x00" * 40), r"not a valid \.npz file"),
        (
            lambda p: _write(p, _npz_bytes()[:-30]),
            r"not a valid \.npz file.*corrupt, truncated",
        ),
        (lambda p: _write(p, _npy_bytes()), r"a single \.npy array saved as \.npz"),
    ],
    ids=["garbage", "bad-zip-header", "truncated", "npy-renamed"],
)
def test_corrupt_npz_is_a_clear_error(tmp_path, make, match):
    path = make(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=match) as info:
        datasets.load_array(path)
    assert str(path) in str(info.value)
    assert "pickled" not in str(info.value)


def _npz_bytes():
    buf = io.BytesIO()
    np.savez(buf, sarcos_inv=np.ones((3, 28)))
    return buf.getvalue()


def _npy_bytes():
    buf = io.BytesIO()
    np.save(buf, np.ones((3, 28)))
    return buf.getvalue()


def test_exercise_setup_same_start_in_float32_and_float64():
    """One key, one start: Q of the float32 set-up is the float64 one rounded.

    ``u`` is drawn in float32 for both; ``0.01 u`` is then formed in each dtype, so they agree
    to float32 rounding (2 eps); different draws would differ by O(1).
    """
    Y = np.random.default_rng(0).standard_normal((6, 21))
    q64 = np.asarray(datasets.exercise_setup(Y, jax.random.PRNGKey(7), dtype="float64").params.Q)
    q32 = np.asarray(datasets.exercise_setup(Y, jax.random.PRNGKey(7), dtype="float32").params.Q)
    np.testing.assert_allclose(q32, q64, rtol=2 * np.finfo(np.float32).eps, atol=0)
    assert np.all(np.diag(q64) > 0)
