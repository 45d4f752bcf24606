"""One EM iteration inside ``fit_em`` at N = 44,484, two source trees side by side.

For a change that must not move the EM loop's speed (a refactor): each round starts one
fresh process per tree, in alternating order, and each process times ``fit_em`` with
``k1`` and ``k2`` iterations (``tol=None``, so both run all iterations) after compiling
both, ``repeats`` times; the per-iteration time is the median of ``(t(k2) - t(k1)) / (k2 -
k1)``. The exercise's model (``datasets.exercise_setup``) on the 44,484-step stand-in,
float64, learning (A, Q).

    python benchmarks/compare_trees.py OLD_TREE NEW_TREE --rounds 4 --out results/x.json

A tree is a directory holding the ``jaxssm`` package (e.g. ``git worktree add /tmp/old
<commit>``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import jaxssm as ssm
from jaxssm import datasets
k1, k2, repeats = (int(a) for a in sys.argv[1:4])
data = datasets.sarcos_stand_in(44485)
params, ys = datasets.exercise_setup(data.inputs, jax.random.PRNGKey(0), dtype="float64")
def run(k):
    t = time.perf_counter()
    out, info = ssm.fit_em(params, ys, num_iters=k)
    jax.block_until_ready(out)
    return time.perf_counter() - t, float(info.log_likelihood)
run(k1); run(k2)  # compile both programs
per_iter, lls = [], []
for _ in range(repeats):
    t1, _ = run(k1)
    t2, ll = run(k2)
    per_iter.append((t2 - t1) / (k2 - k1))
    lls.append(ll)
print(json.dumps({"per_iter_s": per_iter, "log_likelihood": lls[-1], "jax": jax.__version__}))
"""


def _one(tree: Path, k1: int, k2: int, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(k1), str(k2), str(repeats)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--k1", type=int, default=20)
    ap.add_argument("--k2", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    times = {"old": [], "new": []}
    lls = {}
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for which in order:
            res = _one(getattr(args, which), args.k1, args.k2, args.repeats)
            times[which] += res["per_iter_s"]
            lls[which] = res["log_likelihood"]
            print(f"round {r} {which}: {[f'{t * 1e3:.1f}' for t in res['per_iter_s']]} ms")
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "what": "fit_em per-iteration time, N = 44,484 stand-in, exercise model, float64",
        "old": str(args.old),
        "new": str(args.new),
        "median_ms": {k: v * 1e3 for k, v in med.items()},
        "ratio_new_over_old": med["new"] / med["old"],
        "all_ms": {k: [t * 1e3 for t in v] for k, v in times.items()},
        "log_likelihood": lls,
        "k1": args.k1,
        "k2": args.k2,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "load_at_end": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(json.dumps({k: result[k] for k in ("median_ms", "ratio_new_over_old", "log_likelihood")}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
