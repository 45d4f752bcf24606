"""Chunked and time-sharded filter + smoother, and a sharded-batch E-step, against one device.

Standalone (needs only jaxssm and its dependencies)::

    python benchmarks/sharding.py                      # N = 44,484, D = 21, 2 host devices
    python benchmarks/sharding.py --quick              # N = 2,000, D = 6: a smoke run
    python benchmarks/sharding.py --devices 4 --chunks 8 32 --out DIR

``--devices`` sets ``XLA_FLAGS=--xla_force_host_platform_device_count`` before jax starts
(on a CPU; on a machine with several accelerators pass ``--devices 0`` to use them as they
are). What is timed, in one run, float64, median of ``--runs`` calls after compilation
(``workloads.time_call``), every result compared with the sequential one:

- ``sequential``: ``rts_smoother(steady_state=False)``, the full ``lax.scan`` recursion;
- ``parallel``: ``rts_smoother(method="parallel")``, today's fully parallel associative scan;
- ``chunked/K``: ``sharding.chunked_smoother(num_chunks=K)`` on one device (sequential
  within each of K chunks, associative across them);
- ``time-sharded/C``: ``sharding.chunked_smoother(mesh=...)``, one chunk per device;
- ``e_step batch``: ``e_step`` of ``B`` sequences on one device and sharded over the devices
  (``sharding.shard_batch``).

Model: ``workloads.random_dense_model(D)`` with data from ``workloads.simulate`` and 5% of the
entries missing (NaN), so the steady-state fast path does not apply. Results go to
``--out`` (default ``benchmarks/results/local/``) as ``sharding.json`` and ``sharding.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=44_484)
    ap.add_argument("--dim", type=int, default=21)
    ap.add_argument("--devices", type=int, default=2, help="forced host devices (0: as is)")
    ap.add_argument("--chunks", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batch-steps", type=int, default=4_448)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "local")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.dim, args.batch_steps, args.chunks = 2_000, 6, 500, [8]
    if args.devices:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.devices}"
        )

    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)  # a benchmark script, not the library
    sys.path.insert(0, str(Path(__file__).parent))
    import workloads

    import jaxssm as ssm

    N, D = args.steps, args.dim
    model = workloads.random_dense_model(D)
    rng = np.random.default_rng(1)
    ys = workloads.simulate(model, N)
    ys[rng.uniform(size=ys.shape) < 0.05] = np.nan
    params = ssm.LGSSM(*(jax.numpy.asarray(x) for x in model))
    ys_j = jax.numpy.asarray(ys)
    mesh = ssm.sharding.device_mesh("time")
    num_devices = len(mesh.devices)

    cases = {
        "sequential": lambda p, y: ssm.rts_smoother(p, y, steady_state=False),
        "parallel": lambda p, y: ssm.rts_smoother(p, y, method="parallel"),
    }
    for K in args.chunks:
        cases[f"chunked/{K}"] = lambda p, y, K=K: ssm.sharding.chunked_smoother(p, y, num_chunks=K)
    if num_devices > 1:
        cases[f"time-sharded/{num_devices}"] = lambda p, y: ssm.sharding.chunked_smoother(
            p, y, mesh=mesh
        )

    rows, reference = [], None
    for name, fn in cases.items():
        print(f"[sharding] filter + smoother: {name}", flush=True)
        t = workloads.time_call(fn, params, ys_j, runs=args.runs)
        out = t.out
        if reference is None:
            reference = out
        err = max(
            float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
            for a, b in zip(
                jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(reference), strict=True
            )
        )
        rows.append(
            {"op": "filter + smoother", "case": name, "compile_s": t.compile_s,
             "median_s": t.median_s, "max_rel_err": err}
        )  # fmt: skip

    if num_devices > 1 and args.batch % num_devices == 0:
        batch = np.stack(
            [workloads.simulate(model, args.batch_steps, seed=s) for s in range(args.batch)]
        )
        batch[rng.uniform(size=batch.shape) < 0.05] = np.nan
        one = jax.numpy.asarray(batch)
        sharded = ssm.sharding.shard_batch(batch, ssm.sharding.device_mesh("batch"))
        ref = None
        for name, data in (("one device", one), (f"sharded over {num_devices}", sharded)):
            print(f"[sharding] e_step batch: {name}", flush=True)

            def fn(p, y):
                return ssm.e_step(p, y, steady_state=False)

            t = workloads.time_call(fn, params, data, runs=args.runs)
            stats, ll = t.out
            ref = (stats, ll) if ref is None else ref
            err = abs(float(ll) - float(ref[1])) / abs(float(ref[1]))
            rows.append(
                {"op": f"e_step B={args.batch}, N={args.batch_steps}", "case": name,
                 "compile_s": t.compile_s, "median_s": t.median_s, "max_rel_err": err}
            )  # fmt: skip

    info = workloads.machine_info()
    result = {"N": N, "D": D, "dtype": "float64", "devices": num_devices, "machine": info,
              "missing_fraction": 0.05, "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sharding.json").write_text(json.dumps(result, indent=2, default=str))
    lines = [
        f"N = {N}, D = {D}, float64, {num_devices} device(s) ({info.get('device', '')}), "
        f"jax {jax.__version__}, median of {args.runs} runs after compilation",
        "",
        "| operation | case | compile s | median s | max rel. err vs first row |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['op']} | {r['case']} | {r['compile_s']:.1f} | {r['median_s']:.3f} | "
            f"{r['max_rel_err']:.1e} |"
        )
    (args.out / "sharding.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
