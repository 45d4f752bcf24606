"""The SARCOS inverse-dynamics data set, and the model set-up of the exercise built on it.

SARCOS (Vijayakumar and Schaal; distributed with Rasmussen and Williams, *Gaussian Processes
for Machine Learning*, http://www.gaussianprocess.org/gpml/data/) records a seven-joint SARCOS
robot arm. Each row has 28 columns (0-based): 0-6 joint positions q1..q7 (rad), 7-13 joint
velocities, 14-20 joint accelerations, 21-27 joint torques. jaxssm treats the first 21
columns as a 21-dimensional time series (state layout "blocked": all positions, then all
velocities, then all accelerations, as in :mod:`jaxssm.priors`).

* ``load_sarcos("test")``: the 4,449-row test split, bundled with the package (offline).
* ``load_sarcos("train")``: the 44,484-row training split, not bundled. It is read from
  ``path``, ``$JAXSSM_DATA_DIR`` or :func:`cache_dir`, or downloaded once into the cache
  and verified by its git blob id.
* ``load_array(path)``: rows of the same layout from your own ``.npz``, ``.mat``, ``.npy``,
  ``.csv`` or ``.txt`` file, checked the same way.
* ``sarcos_stand_in()``: a series of the training split's shape built from the test split,
  for benchmarks where the real training split is not available. It is labelled as such.
* ``exercise_setup(Y, key)``: the exercise's (exercise 12) starting model and observations
  for a data array ``Y``: the whole state observed with the exercise's sensor noise, ``A``
  and ``Q`` to be learned from a white-noise start.

The loaders use numpy only (scipy, imported lazily, for ``.mat`` files) and are never on a
traced path; :func:`exercise_setup` returns JAX arrays.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.resources
import io
import os
import urllib.request
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jaxssm._args.checks import check_int
from jaxssm._base.types import LGSSM

__all__ = [
    "SarcosData",
    "load_sarcos",
    "load_array",
    "cache_dir",
    "sarcos_stand_in",
    "ExerciseSetup",
    "exercise_setup",
    "knock_out",
]

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
_ARRAY_SUFFIXES = (".npz", ".mat", ".npy", ".csv", ".txt")

#: Observation-noise variances of (position, velocity, acceleration) in the exercise.
EXERCISE_NOISE = (0.01, 0.01, 1.0)


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
    then ``sarcos_inv.mat`` or ``.npz`` in :func:`cache_dir`; failing those it downloads
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
    num_steps = check_int(num_steps, "num_steps")
    test = load_sarcos("test")
    index = _reflected_index(num_steps, test.inputs.shape[0])
    return SarcosData(
        inputs=test.inputs[index],
        torques=test.torques[index],
        name=(
            f"sarcos stand-in: test split ({test.inputs.shape[0]} rows) played forward and "
            f"backward to {int(num_steps)} rows"
        ),
    )


def load_array(path: str | os.PathLike[str]) -> SarcosData:
    """Read rows in the SARCOS column layout from a file of your own.

    The file holds one ``[N, 28]`` array (SARCOS column order: 21 inputs, then 7 torques) or
    ``[N, 21]`` array (the inputs only), as

    * ``.npz`` or ``.mat`` (needs scipy): under the name ``sarcos_inv`` or
      ``sarcos_inv_test``, or as the file's only array (as :func:`load_sarcos` reads them);
    * ``.npy``: a plain numpy array (no pickles);
    * ``.csv`` (comma-separated) or ``.txt`` (whitespace-separated): numbers only, one row
      per line; lines starting with ``#`` are skipped.

    The suffix picks the format (case-insensitive). The rows are checked as in
    :func:`load_sarcos`: two dimensions, 21 or 28 columns, at least one row, real and finite.

    Args:
        path: the file.

    Returns:
        :class:`SarcosData` with ``inputs [N, 21]`` and ``torques [N, 7]`` (``[N, 0]`` for a
        21-column file), float64, and ``name`` the file's path.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: an unsupported suffix; a file that cannot be parsed, is empty, or whose
            array has the wrong shape or holds NaN or Inf (the message names the file and, for
            NaN or Inf, the first bad row).
        ImportError: a ``.mat`` file without scipy installed.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"file not found: {file}")
    suffix = file.suffix.lower()
    if suffix not in _ARRAY_SUFFIXES:
        raise ValueError(
            f"{file}: unsupported file type {file.suffix!r}; use {', '.join(_ARRAY_SUFFIXES)}"
        )
    try:
        if suffix in (".npz", ".mat"):
            array = _read_file(file)  # its errors name the file already
        else:
            try:
                if suffix == ".npy":
                    array = np.load(file, allow_pickle=False)
                else:
                    delimiter = "," if suffix == ".csv" else None
                    array = np.loadtxt(file, delimiter=delimiter, ndmin=2, comments="#")
            except ValueError as err:
                raise ValueError(f"{file}: cannot read it as {suffix}: {err}") from err
    except EOFError as err:  # np.load of an empty or truncated file
        raise ValueError(f"{file}: the file is empty or truncated") from err
    return _to_data(array, str(file), str(file))


def cache_dir() -> Path:
    """Return the folder where :func:`load_sarcos` caches (and looks for) the training split.

    It is ``$XDG_CACHE_HOME/jaxssm``, or ``~/.cache/jaxssm`` when ``XDG_CACHE_HOME`` is unset
    or empty. The folder need not exist (it is created by the first download).

    Returns:
        The folder's path.
    """
    root = os.environ.get("XDG_CACHE_HOME")
    base = Path(root).expanduser() if root else Path.home() / ".cache"
    return base / "jaxssm"


# ---------------------------------------------------------------------------------------------
# The exercise's model set-up
# ---------------------------------------------------------------------------------------------


class ExerciseSetup(NamedTuple):
    """The exercise's initial model and the observations it is fitted to.

    Attributes:
        params: the white-noise starting :class:`~jaxssm.LGSSM` (``D = Dy = 3 J``).
        ys: observations ``y_1..y_N``, ``[N, 3 J]``: the data rows after the first.
    """

    params: LGSSM
    ys: jax.Array


def exercise_setup(
    Y: ArrayLike, key: jax.Array, *, dtype: DTypeLike | None = None
) -> ExerciseSetup:
    r"""Build the exercise's model set-up from a data array ``Y [N+1, 3 J]``.

    The exercise models the data (``J`` joints x position, velocity, acceleration) as a fully
    observed state with a not quite isotropic sensor noise, starts from the first data row,
    and learns the transition ``(A, Q)`` by EM from a white-noise model. This function builds
    that starting model. With ``J`` joints (7 for SARCOS, so ``3 J = 21``) and ``I`` the
    ``J x J`` identity:

    * ``m0 = Y[0]`` and ``ys = Y[1:]``, so smoother row ``k`` lines up with data row ``k``.
      NaN marks a missing entry (the filter skips it in ``ys``); a NaN in ``Y[0]`` is
      replaced in ``m0`` by the mean of its column's observed entries (0 for a column with
      none), since ``m0`` must be finite;
    * ``H = I_{3J}`` (the whole state is observed);
    * ``R = kron(diag(0.01, 0.01, 1), I)`` (positions and velocities are precise,
      accelerations noisy) and ``P0 = R``;
    * the white-noise start of the EM: ``A = 0`` and ``Q = 0.01 diag(u)`` with
      ``u ~ Uniform[eps, 1)^{3J}`` drawn from ``key`` in float32 whatever ``dtype`` is, then
      cast, so that one key gives the same start in float32 and float64 (``eps`` of
      float32, so that ``Q`` is never singular; the exercise draws from ``[0, 1)``).

    Args:
        Y: data ``[N+1, 3 J]`` with ``N >= 1``, columns ordered all positions, all velocities,
            all accelerations (as :func:`load_sarcos` returns them).
        key: a JAX PRNG key for ``u`` (no default: the start is random).
        dtype: ``float32`` or ``float64``; ``None`` follows ``Y`` (a float64 numpy array gives
            float64 only where JAX's x64 mode is on, float32 otherwise).

    Returns:
        :class:`ExerciseSetup` ``(params, ys)`` with ``params`` an :class:`~jaxssm.LGSSM`
        (``m0 [3J]``, ``P0, A, Q, H, R [3J, 3J]``) and ``ys [N, 3J]``, all of one dtype.

    Raises:
        ValueError: ``Y`` is not 2-D with at least 2 rows and a multiple of 3 columns, holds
            Inf, has no observed (non-NaN) entry after its first row, or ``dtype`` is not a
            floating dtype or is float64 while x64 is off.
    """
    Y_np = np.asarray(Y)
    if Y_np.ndim != 2 or Y_np.shape[0] < 2 or Y_np.shape[1] < 3 or Y_np.shape[1] % 3:
        raise ValueError(
            "Y must have shape [N+1, 3 J] (N >= 1 steps after the first row; J >= 1 joints, "
            f"columns positions, velocities, accelerations), got shape {Y_np.shape}"
        )
    if not (np.issubdtype(Y_np.dtype, np.floating) or np.issubdtype(Y_np.dtype, np.integer)):
        raise ValueError(f"Y must hold real numbers, got dtype {Y_np.dtype}")
    if np.any(np.isinf(Y_np)):
        row = int(np.flatnonzero(np.isinf(Y_np).any(axis=1))[0])
        raise ValueError(f"Y must be finite or NaN (missing); row {row} (0-based) holds Inf")
    if np.all(np.isnan(Y_np[1:])):
        raise ValueError("Y must have an observed (non-NaN) entry after its first row")
    if dtype is None:
        dtype = jnp.asarray(Y).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.result_type(float)
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype (float32 or float64), got {dtype}")
    if dtype.itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype float64 needs JAX's x64 mode: call jax.config.update('jax_enable_x64', True) "
            "at start-up, or use dtype=float32"
        )

    num_joints = Y_np.shape[1] // 3
    dim = 3 * num_joints
    R = jnp.asarray(np.kron(np.diag(EXERCISE_NOISE), np.eye(num_joints)), dtype)
    # Drawn in float32 (exact in float64 too): the same key gives the same start in any dtype.
    u = jax.random.uniform(
        key, (dim,), dtype=jnp.float32, minval=jnp.finfo(jnp.float32).eps, maxval=1.0
    ).astype(dtype)
    # m0 is the first row; a missing entry there takes its column's mean over the series.
    first = np.asarray(Y_np[0], np.float64)
    if np.any(np.isnan(first)):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column with no observed entry
            col_means = np.nanmean(np.asarray(Y_np, np.float64), axis=0)
        first = np.where(np.isnan(first), np.nan_to_num(col_means), first)
    params = LGSSM(
        m0=jnp.asarray(first, dtype),
        P0=R,
        A=jnp.zeros((dim, dim), dtype),
        Q=0.01 * jnp.diag(u),
        H=jnp.eye(dim, dtype=dtype),
        R=R,
    )
    return ExerciseSetup(params=params, ys=jnp.asarray(Y_np[1:], dtype))


def knock_out(
    ys: ArrayLike,
    *,
    entries: float = 0.0,
    rows: float = 0.0,
    gaps: Sequence[tuple[int, int]] = (),
    seed: int = 0,
) -> np.ndarray:
    """Return a copy of ``ys [N, Dy]`` (or ``[B, N, Dy]``) with entries set to NaN (missing).

    For experiments with missing data: every jaxssm entry point reads NaN as "not observed".

    Args:
        ys: observations.
        entries: probability that each entry is knocked out, independently.
        rows: probability that each whole row (time step) is knocked out.
        gaps: ``(start, length)`` pairs of whole-row gaps, rows ``start .. start+length-1``
            along the time axis (applied to every sequence of a batch).
        seed: seed of the :func:`numpy.random.default_rng` that draws the masks.

    Returns:
        A float64 numpy array of ``ys``' shape.

    Raises:
        ValueError: a probability outside ``[0, 1]``, a bad shape or a gap outside the series.
    """
    out = np.array(ys, dtype=np.float64)
    if out.ndim not in (2, 3):
        raise ValueError(f"ys must have shape [N, Dy] or [B, N, Dy], got shape {out.shape}")
    for name, p in (("entries", entries), ("rows", rows)):
        if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
            raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    rng = np.random.default_rng(seed)
    out[rng.uniform(size=out.shape) < entries] = np.nan
    out[rng.uniform(size=out.shape[:-1]) < rows] = np.nan
    N = out.shape[-2]
    for gap in gaps:
        start, length = (int(v) for v in gap)
        if start < 0 or length < 0 or start + length > N:
            raise ValueError(f"gap {tuple(gap)} must lie within the {N} rows of ys")
        out[..., start : start + length, :] = np.nan
    return out


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


def _train_candidates() -> list[Path]:
    dirs = []
    data_dir = os.environ.get("JAXSSM_DATA_DIR")
    if data_dir:
        dirs.append(Path(data_dir).expanduser())
    dirs.append(cache_dir())
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
    target = cache_dir() / f"{_TRAIN_STEM}.mat"
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
    # An .npz is a zip archive of .npy arrays. Anything else would reach np.load's pickle
    # branch and be reported as "pickled data": say what is wrong instead.
    try:
        z = np.load(file, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as err:  # EOFError: empty, see load_array
        reason = "it is not a zip archive" if "pickle" in str(err) else str(err)
        raise ValueError(
            f"{source}: not a valid .npz file (a zip archive of .npy arrays, as np.savez "
            f"writes): the file is corrupt, truncated or of another format ({reason})"
        ) from err
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{source}: a single .npy array saved as .npz; rename it to .npy")
    try:
        with z:
            return _pick_array({k: z[k] for k in z.files}, source)
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as err:
        raise ValueError(
            f"{source}: a corrupt .npz archive (an entry cannot be read: {err})"
        ) from err


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
    bad = np.isinf(array).any(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{source}: row {rows[0]} (0-based) holds Inf; {rows.size} of "
            f"{array.shape[0]} rows hold Inf (NaN marks a missing entry and is allowed)"
        )
    return SarcosData(
        inputs=np.ascontiguousarray(array[:, :NUM_INPUTS]),
        torques=np.ascontiguousarray(array[:, NUM_INPUTS:]),
        name=name,
    )
