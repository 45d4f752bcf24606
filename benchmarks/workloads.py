"""Benchmark workloads and the one timing helper every benchmark script uses.

The data and models are plain numpy (float64) and deterministic, so that every worker process
rebuilds exactly the same arrays and all implementations see the same data.

Two kinds of workload:

- ``sarcos``: the SARCOS series (first ``D`` columns, ``D <= 21``). The real 44,484-step
  training split is used when a local copy exists (``$JAXSSM_DATA_DIR`` or jaxssm's cache
  folder; the benchmark never downloads); otherwise the labelled stand-in
  ``jaxssm.datasets.sarcos_stand_in`` (the 4,449-step test split played forward and
  backward) is used. The model is *dense*: ``A`` is the least-squares VAR(1) fit of the series
  (spectral radius capped at 0.999), ``Q`` the covariance of its residuals (plus a small
  ridge), ``H = I``, and ``R``, ``P0`` the exercise's ``kron(diag(0.01, 0.01, 1), I_7)``.
  This is what EM learns on this data (dense matrices), not the exercise's block-structured
  Matern prior, whose ``kron(A1, I_7)`` form splits into seven 3-dimensional problems
  (see ENVIRONMENT.md).
- ``simulated``: :func:`random_dense_model` (spectral radius 0.95, ``H = I``), the one random
  model of every script here, and a series drawn from it by :func:`simulate`.

Conventions: jaxssm does not observe ``x_0`` (``y_1..y_N`` observe ``x_1..x_N``); dynamax
and pykalman observe their first state. :func:`first_observed_prior` gives the prior of
``x_1`` so that their first state is our ``x_1`` and the log-likelihoods agree exactly.
cuthbert uses jaxssm's convention.

Timing: :func:`time_call` (compile apart, then the median of several runs, each ended by
``jax.block_until_ready``) and :func:`machine_info` (what a result records about the run).
jax is imported only when a JAX function is timed.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

SARCOS_TRAIN_STEPS = 44_484
SARCOS_DIM = 21


class Model(NamedTuple):
    """Model parameters as float64 numpy arrays (jaxssm's field names and convention)."""

    m0: np.ndarray
    P0: np.ndarray
    A: np.ndarray
    Q: np.ndarray
    H: np.ndarray
    R: np.ndarray


class Workload(NamedTuple):
    """Data ``ys [N, Dy]`` and a model, both float64, with a human-readable source label."""

    ys: np.ndarray
    model: Model
    source: str
    kind: str


def _exercise_noise(D: int) -> np.ndarray:
    """The exercise's ``kron(diag(0.01, 0.01, 1), I_7)`` for D = 21, its analogue otherwise."""
    if D % 3 == 0:
        return np.kron(np.diag([0.01, 0.01, 1.0]), np.eye(D // 3))
    return 0.1 * np.eye(D)


def _train_split_file() -> Path | None:
    """A local copy of the training split, if there is one (the benchmark never downloads).

    Looked for as ``sarcos_inv.mat`` / ``.npz`` in ``$JAXSSM_DATA_DIR`` and in jaxssm's cache
    folder (``$XDG_CACHE_HOME/jaxssm``, default ``~/.cache/jaxssm``), where
    ``jaxssm.datasets.load_sarcos("train")`` keeps it.
    """
    dirs = []
    if os.environ.get("JAXSSM_DATA_DIR"):
        dirs.append(Path(os.environ["JAXSSM_DATA_DIR"]).expanduser())
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    dirs.append(Path(cache) / "jaxssm")
    for d in dirs:
        for suffix in (".mat", ".npz"):
            if (d / f"sarcos_inv{suffix}").is_file():
                return d / f"sarcos_inv{suffix}"
    return None


def load_sarcos_series(num_steps: int) -> tuple[np.ndarray, str]:
    """The first ``num_steps`` rows of the 21-column SARCOS series and a label for them.

    The real training split when a local copy exists (:func:`_train_split_file`) and is
    long enough; otherwise ``jaxssm.datasets.sarcos_stand_in(num_steps)``, labelled a
    stand-in.
    """
    from jaxssm import datasets

    file = _train_split_file()
    if file is not None:
        data = datasets.load_sarcos("train", path=file)
        if data.inputs.shape[0] >= num_steps:
            Y = np.asarray(data.inputs[:num_steps, :SARCOS_DIM], dtype=np.float64)
            return Y, f"SARCOS training split ({file}), first {num_steps} rows"
    data = datasets.sarcos_stand_in(num_steps)
    Y = np.asarray(data.inputs[:, :SARCOS_DIM], dtype=np.float64)
    label = (
        f"STAND-IN, not the training split: jaxssm.datasets.sarcos_stand_in({num_steps}) "
        f"({data.name})"
    )
    return np.ascontiguousarray(Y), label


def var1_model(Y: np.ndarray) -> Model:
    """Dense model fitted to a series: VAR(1) least squares for ``A``, residuals for ``Q``."""
    X0, X1 = Y[:-1], Y[1:]
    At = np.linalg.lstsq(X0, X1, rcond=None)[0]
    A = At.T
    radius = np.max(np.abs(np.linalg.eigvals(A)))
    if radius > 0.999:
        A = A * (0.999 / radius)
    E = X1 - X0 @ A.T
    Q = np.cov(E.T)
    Q = 0.5 * (Q + Q.T) + 1e-3 * np.mean(np.diag(Q)) * np.eye(Y.shape[1])
    D = Y.shape[1]
    noise = _exercise_noise(D)
    return Model(m0=Y[0].copy(), P0=noise.copy(), A=A, Q=Q, H=np.eye(D), R=noise.copy())


def _random_spd(rng: np.random.Generator, d: int, scale: float) -> np.ndarray:
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return scale * (U * rng.uniform(0.2, 1.2, size=d)) @ U.T


def random_dense_model(D: int, seed: int = 0) -> Model:
    """A random dense stable model: spectral radius 0.95, SPD ``Q``, ``R``, ``P0``, ``H = I``."""
    rng = np.random.default_rng(seed + 1000 * D)
    A = rng.standard_normal((D, D))
    A *= 0.95 / np.max(np.abs(np.linalg.eigvals(A)))
    return Model(
        m0=rng.standard_normal(D),
        P0=_random_spd(rng, D, 1.0),
        A=A,
        Q=_random_spd(rng, D, 0.5),
        H=np.eye(D),
        R=_random_spd(rng, D, 0.5),
    )


def simulate(model: Model, num_steps: int, seed: int = 0) -> np.ndarray:
    """Draw ``y_1..y_N`` from ``model`` (numpy, float64)."""
    rng = np.random.default_rng(seed)
    D, Dy = model.A.shape[0], model.H.shape[0]
    Lq = np.linalg.cholesky(model.Q)
    Lr = np.linalg.cholesky(model.R)
    q = rng.standard_normal((num_steps, D)) @ Lq.T
    x = model.m0 + np.linalg.cholesky(model.P0) @ rng.standard_normal(D)
    xs = np.empty((num_steps, D))
    for k in range(num_steps):
        x = model.A @ x + q[k]
        xs[k] = x
    return xs @ model.H.T + rng.standard_normal((num_steps, Dy)) @ Lr.T


def build(kind: str, num_steps: int, dim: int) -> Workload:
    """The workload ``kind`` (``"sarcos"`` or ``"simulated"``) with ``N = num_steps``, ``D = dim``.

    For ``sarcos`` all ``N`` rows are observations ``y_1..y_N`` and the prior mean of ``x_0``
    is the first row (``m0 = Y[0]``, as the exercise sets it), so ``N = 44,484`` uses the
    whole series.
    """
    if kind == "sarcos":
        if dim > SARCOS_DIM:
            raise ValueError(f"the SARCOS workload has at most {SARCOS_DIM} dimensions")
        Y, source = load_sarcos_series(num_steps)
        Y = Y[:, :dim]
        model = var1_model(Y)
        return Workload(ys=Y, model=model, source=source, kind=kind)
    if kind == "simulated":
        model = random_dense_model(dim)
        ys = simulate(model, num_steps)
        return Workload(
            ys=ys,
            model=model,
            source="simulated from a random dense stable model (spectral radius 0.95)",
            kind=kind,
        )
    raise ValueError(f"unknown workload kind {kind!r}")


def first_observed_prior(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Prior of ``x_1`` (``A m0``, ``A P0 A^T + Q``): the initial state for dynamax/pykalman."""
    m1 = model.A @ model.m0
    P1 = model.A @ model.P0 @ model.A.T + model.Q
    return m1, 0.5 * (P1 + P1.T)


def fingerprint(w: Workload) -> str:
    """Short hash of the data and model, to show that all implementations saw the same."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(w.ys).tobytes())
    for x in w.model:
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()[:12]


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------


class Timing(NamedTuple):
    """What :func:`time_call` measured, in seconds.

    Attributes:
        out: the output of the last call.
        times_s: wall time of every timed run.
        cpu_times_s: process CPU time (all threads) of the same runs.
        compile_s: compilation alone (``None`` without ``jit``).
        compile_kind: ``"aot"``, ``"first call (...)"`` or ``"none"``.
        warmup_s: the untimed warm-up call, if there was one.
    """

    out: Any
    times_s: list
    cpu_times_s: list
    compile_s: float | None = None
    compile_kind: str = "none"
    warmup_s: float | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu_times_s)


def time_call(
    fn: Callable,
    *args,
    runs: int = 5,
    jit: bool = True,
    warmup_below: float = 1.0,
    min_runs: int = 1,
    max_seconds: float = math.inf,
    phase: Callable[[str], None] | None = None,
    compiler_options: dict | None = None,
) -> Timing:
    """Time ``fn(*args)``: compilation apart, then ``runs`` calls (report their median).

    With ``jit`` (a JAX function) ``fn`` is wrapped in ``jax.jit`` and compiled ahead of time
    (``lower(*args).compile()``: ``compile_s``); a function that cannot be jitted as a whole
    is compiled by its first call instead (``compile_kind`` says so). Every call is ended by
    ``jax.block_until_ready``. The first call after compilation is an untimed warm-up when it
    takes at most ``warmup_below`` seconds, else the first timed run (``warmup_below=0``: every
    call counts, for loops that are long anyway). Fewer than ``runs`` calls are made (not below
    ``min_runs``) when ``runs`` of them would take longer than ``max_seconds``. Without ``jit``
    (plain Python) there is no compile step and no warm-up. ``phase(msg)`` is told what runs.
    ``compiler_options`` are passed to ``jax.jit`` (per-program XLA options, such as the ones
    ``jaxssm._base.compile`` gives the library's top-level programs on CPU).
    """
    say = phase or (lambda msg: None)
    compile_s, kind, call = None, "none", fn
    if jit:
        import jax

        say("compiling")
        t0 = time.perf_counter()
        try:
            call = jax.jit(fn, compiler_options=compiler_options).lower(*args).compile()
            compile_s, kind = time.perf_counter() - t0, "aot"
        except Exception as e:  # not jittable as a whole: the first call compiles
            kind = f"first call (jit-wrap failed: {type(e).__name__})"
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            compile_s = time.perf_counter() - t0

        def once():
            return jax.block_until_ready(call(*args))
    else:

        def once():
            return call(*args)

    times, cpu_times = [], []

    def timed():
        t0, c0 = time.perf_counter(), time.process_time()
        res = once()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        return res

    say("first run")
    out = timed()
    first, warmup = times[0], None
    if jit and first <= warmup_below:
        warmup = times.pop()
        cpu_times.pop()
    fit = runs if math.isinf(max_seconds) else int(max_seconds / max(first, 1e-9))
    n = max(min_runs, min(runs, fit))
    while len(times) < n:
        say(f"run {len(times) + 1}/{n}")
        out = timed()
    return Timing(out, times, cpu_times, compile_s, kind, warmup)


def machine_info() -> dict:
    """Versions, device, cores, load and date of this run (imports jax)."""
    import jax
    import jaxlib

    dev = jax.devices()[0]
    return dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        jax=jax.__version__,
        jaxlib=jaxlib.__version__,
        backend=jax.default_backend(),
        device=str(dev),
        device_kind=str(getattr(dev, "device_kind", dev.platform)),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        platform=platform.platform(),
        machine=platform.machine(),
        load_average_at_start=list(os.getloadavg()),
    )
