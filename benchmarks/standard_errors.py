#!/usr/bin/env python
"""The two routes of ``jaxssm.standard_errors``' observed information, side by side.

The exercise's model on the first ``--steps`` steps of the SARCOS test split (D = Dy = 21),
at ``jaxssm.initialize``'s start (a full-rank ``Q``, so both routes apply), float64: the
information in the free coordinates of ``--update`` by

* ``score``: ``jax.jacfwd`` of the Fisher-identity score through the E-step (the default
  where the covariances the score needs are nonsingular);
* ``hessian``: ``jax.hessian`` of the filter's log-likelihood.

Each route is called once to compile, then ``--runs`` times; the median is reported with
the largest relative difference between the two matrices.

Usage (from the repository root)::

    python benchmarks/standard_errors.py --steps 1000 --update A
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxssm as ssm  # noqa: E402
from jaxssm._learn.uncertainty import observed_information  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--update", default="A")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    update = tuple(args.update.split(","))
    data = ssm.datasets.load_sarcos("test")
    white, ys = ssm.datasets.exercise_setup(
        data.inputs[: args.steps + 1], jax.random.PRNGKey(0), dtype=jnp.float64
    )
    start = ssm.initialize(white, ys, update=("A", "Q"))
    rows, infos = [], {}
    for route in ("score", "hessian"):
        t = time.perf_counter()
        info, labels = observed_information(start, ys, update=update, route=route)
        infos[route] = np.asarray(jax.block_until_ready(info))
        first = time.perf_counter() - t
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            jax.block_until_ready(observed_information(start, ys, update=update, route=route)[0])
            times.append(time.perf_counter() - t)
        rows.append(dict(route=route, first_call_s=first, median_s=float(np.median(times))))
        print(rows[-1], flush=True)
    scale = np.max(np.abs(infos["hessian"]))
    meta = dict(
        device=f"CPU ({os.cpu_count()} cores, shared: timings noisy)",
        jax=jax.__version__,
        dtype="float64",
        N=int(ys.shape[0]),
        D=int(ys.shape[1]),
        update=list(update),
        num_coordinates=len(labels),
        max_rel_diff=float(np.max(np.abs(infos["score"] - infos["hessian"])) / scale),
        runs=args.runs,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "standard_errors.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print(meta)


if __name__ == "__main__":
    main()
