#!/usr/bin/env python
"""Check that two jaxssm trees lower the plain model to the same program.

The generality added to the model (inputs, offsets, time-varying matrices) must cost nothing
when unused: for a model without them, the StableHLO text of each entry point (without
source locations) should be identical to that of an older tree. Usage::

    git worktree add /tmp/jaxssm-old <commit>
    python benchmarks/same_program.py /tmp/jaxssm-old .

It lowers filter, smoother (sequential, steady-state and parallel), e_step and fit_em at
N = 100 (the full recursion) and N = 3000 (the steady-state path) in each tree, in a
subprocess with that tree first on ``sys.path``, and prints SAME or DIFF per program.
"""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = r"""
import hashlib
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np, jaxssm as ssm
rng = np.random.default_rng(0)
D, Dy = 3, 2
p = ssm.LGSSM(jnp.zeros(D), jnp.eye(D), jnp.asarray(0.5 * np.eye(D)), jnp.eye(D),
              jnp.asarray(rng.standard_normal((Dy, D))), jnp.eye(Dy))
for N in (100, 3000):
    ys = jnp.asarray(rng.standard_normal((N, Dy)))
    calls = {
        "kalman_filter": lambda p, y: ssm.kalman_filter(p, y),
        "rts_smoother": lambda p, y: ssm.rts_smoother(p, y),
        "rts_smoother parallel": lambda p, y: ssm.rts_smoother(p, y, method="parallel"),
        "e_step": lambda p, y: ssm.e_step(p, y),
        "fit_em(3)": lambda p, y: ssm.fit_em(p, y, num_iters=3),
    }
    for name, f in calls.items():
        text = jax.jit(f).lower(p, ys).as_text()
        print(f"N={N} {name}|{hashlib.sha256(text.encode()).hexdigest()}")
"""


def hashes(tree: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("|") for line in out.strip().splitlines())


def main() -> int:
    old, new = sys.argv[1], sys.argv[2]
    a, b = hashes(old), hashes(new)
    same = True
    for key in a:
        ok = a[key] == b.get(key)
        same &= ok
        print(f"{key:36s} {'SAME' if ok else 'DIFF'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
