import hashlib
import io
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from jaxssm import datasets

TEST_ARRAY_SHA256 = "864dfd244626920ad1994a9aaecd5fa55fad8f7d4792bb3eb6dfe9bcaa28d817"
N_TEST = 4449


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


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_rows(tmp_path, test_array, bad_value):
    array = test_array.copy()
    array[17, 3] = bad_value
    array[900, 25] = bad_value
    path = tmp_path / "nan.mat"
    scipy.io.savemat(path, {"sarcos_inv": array})
    with pytest.raises(ValueError, match=r"row 17 .*2 of 4449 rows") as info:
        datasets.load_sarcos(path=path)
    assert "nan.mat" in str(info.value)


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


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets._cache_dir() == tmp_path / ".cache" / "jaxssm"


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
