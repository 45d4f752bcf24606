"""The SARCOS inverse-dynamics data set, as numpy arrays.

SARCOS (Vijayakumar and Schaal; distributed with Rasmussen and Williams, *Gaussian Processes
for Machine Learning*, http://www.gaussianprocess.org/gpml/data/) records a seven-joint SARCOS
robot arm. Each row has 28 columns (0-based): 0-6 joint positions q1..q7 (rad), 7-13 joint
velocities, 14-20 joint accelerations, 21-27 joint torques. jaxssm treats the first 21
columns as a 21-dimensional time series (state layout "blocked": all positions, then all
velocities, then all accelerations, as in :mod:`jaxssm.priors`).

* ``load_sarcos("test")``: the 4,449-row test split, bundled with the package (offline).
* ``load_sarcos("train")``: the 44,484-row training split, not bundled. It is read from
  ``path``, ``$JAXSSM_DATA_DIR`` or the cache directory, or downloaded once into the cache
  and verified by its git blob id.
* ``sarcos_stand_in()``: a series of the training split's shape built from the test split,
  for benchmarks where the real training split is not available. It is labelled as such.

This module uses numpy only (scipy, imported lazily, for ``.mat`` files) and is never on a
traced path.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.resources
import io
import os
import urllib.request
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["SarcosData", "load_sarcos", "sarcos_stand_in"]

SARCOS_TRAIN_URL = "http://www.gaussianprocess.org/gpml/data/sarcos_inv.mat"
#: ``git hash-object sarcos_inv.mat`` of the original training-split file.
SARCOS_TRAIN_GIT_BLOB = "687b7aaa5faf5a9c67fc6655fd59fd8b4539ad55"
NUM_INPUTS = 21
NUM_TORQUES = 7
TRAIN_NUM_STEPS = 44_484

_TEST_RESOURCE = "sarcos_inv_test.npz"
_TRAIN_STEM = "sarcos_inv"
_ARRAY_KEYS = ("sarcos_inv", "sarcos_inv_test")
_SPLIT_NAMES = {"train": "sarcos_inv", "test": "sarcos_inv_test"}
_DOWNLOAD_TIMEOUT_S = 10.0


class SarcosData(NamedTuple):
    """SARCOS rows split into the 21 time-series inputs and the 7 torques.

    Attributes:
        inputs: ``[N, 21]`` float64: joint positions (columns 0-6), velocities (7-13) and
            accelerations (14-20).
        torques: ``[N, 7]`` float64 joint torques (file columns 21-27); ``[N, 0]`` when the
            file holds only the 21 input columns.
        name: where the rows come from, e.g. ``"sarcos_inv_test"``, ``"sarcos_inv"`` or a
            ``"... stand-in ..."`` label.
    """

    inputs: np.ndarray
    torques: np.ndarray
    name: str


# ---------------------------------------------------------------------------------------------
# Public loaders
# ---------------------------------------------------------------------------------------------


def load_sarcos(split: str = "test", path: str | os.PathLike[str] | None = None) -> SarcosData:
    """Load a SARCOS split.

    ``"test"`` without ``path`` reads the copy bundled with jaxssm (no network). ``"train"``
    without ``path`` looks, in order, for ``$JAXSSM_DATA_DIR/sarcos_inv.mat`` or ``.npz``,
    then ``<cache>/sarcos_inv.mat`` or ``.npz`` with ``<cache>`` =
    ``$XDG_CACHE_HOME/jaxssm`` (default ``~/.cache/jaxssm``); failing those it downloads
    :data:`SARCOS_TRAIN_URL` once into the cache and checks its git blob id against
    :data:`SARCOS_TRAIN_GIT_BLOB`.

    A ``.mat`` file (needs scipy) or ``.npz`` file may hold the array under the name
    ``sarcos_inv`` or ``sarcos_inv_test``, or as its only array. With ``path`` any such file
    is read and ``split`` only sets the ``name`` label.

    Args:
        split: ``"test"`` or ``"train"``.
        path: optional ``.mat`` or ``.npz`` file to read instead of the default location.

    Returns:
        :class:`SarcosData` with ``inputs [N, 21]`` and ``torques [N, 7]`` (float64), and
        ``name`` ``"sarcos_inv_test"`` or ``"sarcos_inv"``. N is 4,449 for the real test
        split and 44,484 for the real training split.

    Raises:
        ValueError: unknown ``split``; a file that is not 2-D with 28 (or 21) columns, holds
            NaN or Inf (the message names the first bad row), or has no recognisable array.
        FileNotFoundError: ``path`` does not exist, or the training split is nowhere on disk
            and could not be downloaded (the message says where to put it).
        ImportError: a ``.mat`` file without scipy installed.
    """
    if split not in _SPLIT_NAMES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    name = _SPLIT_NAMES[split]
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"SARCOS file not found: {file}")
        return _to_data(_read_file(file), str(file), name)
    if split == "test":
        resource = importlib.resources.files(__package__).joinpath("data").joinpath(_TEST_RESOURCE)
        with resource.open("rb") as f:
            array = _read_npz(f, f"jaxssm/data/{_TEST_RESOURCE}")
        return _to_data(array, f"jaxssm/data/{_TEST_RESOURCE} (bundled)", name)
    for file in _train_candidates():
        if file.is_file():
            return _to_data(_read_file(file), str(file), name)
    return _to_data(*_download_train(), name)


def sarcos_stand_in(num_steps: int = TRAIN_NUM_STEPS) -> SarcosData:
    """Build a SARCOS-shaped series of ``num_steps`` rows from the bundled test split.

    The test split's ``N = 4449`` rows are played forward, then backward, then forward
    again, and so on, without repeating the turning rows: row ``k`` of the stand-in is test
    row ``r`` if ``r < N`` and test row ``2 (N - 1) - r`` otherwise, where
    ``r = k mod 2 (N - 1)``. That is rows ``0, 1, ..., 4448, 4447, ..., 1, 0, 1, ...``
    (period 8,896 rows; the default 44,484 rows are five periods and four rows). Every step
    of the stand-in is a step of the test split, forward or reversed, so there is no jump at
    the joins. Torques are tiled the same way.

    It has the training split's shape, value range and step sizes, for timing and memory
    benchmarks. It is not training data and not a physical trajectory: in the reversed
    stretches the velocity and acceleration columns keep their recorded signs while the
    positions run backwards. It consists of test rows, so a model fitted to it must not be
    scored on the test split.

    Args:
        num_steps: number of rows, ``>= 1`` (default 44,484, the training split's length).

    Returns:
        :class:`SarcosData` with ``inputs [num_steps, 21]``, ``torques [num_steps, 7]`` and a
        ``name`` that says "stand-in".

    Raises:
        ValueError: ``num_steps`` is not a positive int.
    """
    if (
        isinstance(num_steps, (bool, np.bool_))
        or not isinstance(num_steps, (int, np.integer))
        or num_steps < 1
    ):
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    test = load_sarcos("test")
    index = _reflected_index(int(num_steps), test.inputs.shape[0])
    return SarcosData(
        inputs=test.inputs[index],
        torques=test.torques[index],
        name=(
            f"sarcos stand-in: test split ({test.inputs.shape[0]} rows) played forward and "
            f"backward to {int(num_steps)} rows"
        ),
    )


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _reflected_index(num_steps: int, n: int) -> np.ndarray:
    """Row indices ``0, 1, ..., n-1, n-2, ..., 1, 0, 1, ...`` of length ``num_steps``."""
    if n == 1:
        return np.zeros(num_steps, dtype=np.intp)
    period = 2 * (n - 1)
    r = np.arange(num_steps) % period
    return np.where(r < n, r, period - r)


def _cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxssm``, or ``~/.cache/jaxssm`` when that is unset or empty."""
    root = os.environ.get("XDG_CACHE_HOME")
    base = Path(root).expanduser() if root else Path.home() / ".cache"
    return base / "jaxssm"


def _train_candidates() -> list[Path]:
    dirs = []
    data_dir = os.environ.get("JAXSSM_DATA_DIR")
    if data_dir:
        dirs.append(Path(data_dir).expanduser())
    dirs.append(_cache_dir())
    return [d / f"{_TRAIN_STEM}{suffix}" for d in dirs for suffix in (".mat", ".npz")]


def _git_blob_sha1(data: bytes) -> str:
    """Return git's object id for a file with these bytes (``git hash-object``).

    That is the sha1 of ``b"blob <len>"``, a NUL byte, then ``data``.
    """
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _verify_git_blob(data: bytes, expected: str, source: str) -> None:
    """Raise ValueError unless ``data`` has the git blob id ``expected``."""
    actual = _git_blob_sha1(data)
    if actual != expected:
        raise ValueError(
            f"{source}: git blob id {actual} does not match the expected {expected} "
            f"({len(data)} bytes)"
        )


def _fetch(url: str, timeout: float) -> bytes:
    """Download ``url`` (the one network access in jaxssm; tests replace it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "jaxssm"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _download_train() -> tuple[np.ndarray, str]:
    """Download, verify and cache the training split; return its array and a source label."""
    target = _cache_dir() / f"{_TRAIN_STEM}.mat"
    try:
        data = _fetch(SARCOS_TRAIN_URL, _DOWNLOAD_TIMEOUT_S)
        _verify_git_blob(data, SARCOS_TRAIN_GIT_BLOB, SARCOS_TRAIN_URL)
    except (OSError, ValueError, http.client.HTTPException) as err:
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise FileNotFoundError(
            f"SARCOS training split not found locally and the download from "
            f"{SARCOS_TRAIN_URL} failed ({reason}); pass path=..., put sarcos_inv.mat or "
            f"sarcos_inv.npz in $JAXSSM_DATA_DIR, or save it as {target}"
        ) from err
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(data)
        os.replace(partial, target)
        source = str(target)
    except OSError as err:
        warnings.warn(f"could not cache the SARCOS training split at {target}: {err}", stacklevel=3)
        source = SARCOS_TRAIN_URL
    return _read_mat(io.BytesIO(data), source), source


def _read_file(file: Path) -> np.ndarray:
    suffix = file.suffix.lower()
    if suffix == ".mat":
        return _read_mat(file, str(file))
    if suffix == ".npz":
        return _read_npz(file, str(file))
    raise ValueError(f"{file}: expected a .mat or .npz file, got suffix {file.suffix!r}")


def _read_mat(file: Any, source: str) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError as err:
        raise ImportError(
            f"reading {source} (a .mat file) needs scipy: pip install scipy, or convert the "
            "file to .npz with numpy"
        ) from err
    contents = loadmat(file)
    arrays = {k: v for k, v in contents.items() if not k.startswith("__")}
    return _pick_array(arrays, source)


def _read_npz(file: Any, source: str) -> np.ndarray:
    with np.load(file, allow_pickle=False) as z:
        return _pick_array({k: z[k] for k in z.files}, source)


def _pick_array(arrays: dict[str, np.ndarray], source: str) -> np.ndarray:
    for key in _ARRAY_KEYS:
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise ValueError(
        f"{source}: expected an array named {' or '.join(_ARRAY_KEYS)} or a single array, "
        f"found {sorted(arrays)}"
    )


def _to_data(array: Any, source: str, name: str) -> SarcosData:
    """Validate a raw ``[N, 28]`` (or ``[N, 21]``) array and split its columns."""
    array = np.asarray(array)
    expected = f"(N, {NUM_INPUTS + NUM_TORQUES}) or (N, {NUM_INPUTS}), N >= 1"
    if (
        array.ndim != 2
        or array.shape[1] not in (NUM_INPUTS, NUM_INPUTS + NUM_TORQUES)
        or array.shape[0] < 1
    ):
        raise ValueError(f"{source}: expected shape {expected}, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{source}: expected real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{source}: row {rows[0]} (0-based) holds NaN or Inf; {rows.size} of "
            f"{array.shape[0]} rows are not finite"
        )
    return SarcosData(
        inputs=np.ascontiguousarray(array[:, :NUM_INPUTS]),
        torques=np.ascontiguousarray(array[:, NUM_INPUTS:]),
        name=name,
    )
