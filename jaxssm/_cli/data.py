"""The ``jaxssm`` command's surroundings: its data, its output folder, its compilation cache."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import jax
import numpy as np

from jaxssm import datasets
from jaxssm._cli.options import InputError, UsageError

__all__ = [
    "COMPILATION_CACHE_ENV",
    "DEFAULT_WINDOW_START",
    "DEFAULT_WINDOW_LEN",
    "enable_compilation_cache",
    "load_data",
    "resolve_out",
    "resolve_window",
]

#: Environment variable naming the CLI's compilation-cache folder (``off``: no cache).
COMPILATION_CACHE_ENV = "JAXSSM_COMPILATION_CACHE"
DEFAULT_WINDOW_START = 1000
DEFAULT_WINDOW_LEN = 50


def enable_compilation_cache() -> Path | None:
    """Point JAX's persistent compilation cache at a folder (this process only).

    The folder is ``$JAXSSM_COMPILATION_CACHE``, or ``xla/`` in
    :func:`jaxssm.datasets.cache_dir` when the variable is unset; ``off``, ``0``, ``no`` or
    an empty value disable the cache. A cache folder already configured for JAX
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept. JAX writes an entry only for
    programs that took at least ``jax_persistent_cache_min_compile_time_secs`` (1 s by
    default) to compile, such as the EM loop.

    Returns:
        The cache folder in use, or None.
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    setting = os.environ.get(COMPILATION_CACHE_ENV)
    if setting is not None and setting.strip().lower() in ("", "off", "0", "no", "false"):
        return None
    folder = Path(setting).expanduser() if setting else datasets.cache_dir() / "xla"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder


def resolve_out(out: Path | None, force: bool) -> Path:
    """Return the output folder: ``out``, or a new time-stamped folder here when ``None``.

    Raises:
        UsageError: ``out`` is a file, or a non-empty folder without ``force``.
    """
    if out is None:  # a new folder named after the time, never an existing one
        base = Path.cwd() / f"jaxssm-fit-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        candidate, n = base, 1
        while candidate.exists():
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        return candidate
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(
            f"--out {out} exists and is not empty; choose another folder or pass --force"
        )
    return out


def load_data(spec: str) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Return the ``[N, 21]`` series, its ``[N, 7]`` torques, a name and a plot label.

    The torques are ``[N, 0]`` for a file that has none.

    Raises:
        InputError: the data cannot be found or read (the message names the file).
    """
    try:
        if spec == "test":
            loaded = datasets.load_sarcos("test")
            name = f"{loaded.name} (SARCOS test split, bundled)"
            return loaded.inputs, loaded.torques, name, "SARCOS test split"
        if spec == "train":
            try:
                loaded = datasets.load_sarcos("train")
            except FileNotFoundError as err:
                cause = err.__cause__
                reason = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
                raise InputError(
                    "--data train: the SARCOS training split is not on this machine and could "
                    f"not be downloaded{reason}; put sarcos_inv.mat or sarcos_inv.npz in "
                    f"$JAXSSM_DATA_DIR or {datasets.cache_dir()}, or pass --data FILE"
                ) from err
            name = f"{loaded.name} (SARCOS training split)"
            return loaded.inputs, loaded.torques, name, "SARCOS training split"
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InputError(
                f"--data {spec}: no such file (give a .npz/.mat/.npy/.csv/.txt file, "
                "'test' or 'train')"
            )
        loaded = datasets.load_array(path)
        return loaded.inputs, loaded.torques, str(path), path.name
    except (OSError, ValueError, ImportError, EOFError) as err:
        raise InputError(f"--data: {err}") from err  # the messages name the file


def resolve_window(window: tuple[int, int] | None, num_rows: int) -> tuple[int, int]:
    """Return the plotted rows ``(start, stop)``: ``window``, or the default for the data.

    Raises:
        UsageError: ``window`` reaches past the data.
    """
    if window is None:
        length = min(DEFAULT_WINDOW_LEN, num_rows)
        start = min(DEFAULT_WINDOW_START, num_rows - length)
        return start, start + length
    start, stop = window
    if stop > num_rows:
        raise UsageError(
            f"--window {start}:{stop} reaches past the data's {num_rows} rows "
            f"(need STOP <= {num_rows})"
        )
    return start, stop
