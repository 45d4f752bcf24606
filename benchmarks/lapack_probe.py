"""Does this jaxlib hang on batched LAPACK calls inside an associative scan (CPU)?

Standalone::

    python benchmarks/lapack_probe.py [--num-steps 4096] [--kind smooth] [--timeout 120]

Runs jaxssm's parallel filter (``--kind log_likelihood``, the default) or filter and smoother
(``--kind smooth``) once in a child process with its per-step algebra switched
from the loop form (``jaxssm._base.linalg.BATCHED``, what the library uses on CPU) to the
backend's LAPACK kernels (``jaxssm._base.linalg.LAPACK``), vmapped over time: the independent
batched ``cholesky`` / ``triangular_solve`` calls that hung jaxlib 0.10 on 2-core CPU
machines (``docs/numerics.md``, "The CPU deadlock"). On CPU the library vmaps its per-step
algebra over tiles of 32 steps at a time; ``--untiled`` vmaps it over all steps at once.
Prints one line: ``ok`` with the run time, the compile times of both forms and the relative
difference from the loop form's log-likelihood, or ``hang``
when the child is still running after ``--timeout`` seconds (with its CPU time, near zero for
the deadlock), and the jax/jaxlib versions. The exit status is 0 for ok, 1 for a hang.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

CHILD = r"""
import sys, time
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import jaxssm as ssm
from jaxssm._schedules import dispatch as _dispatch
from jaxssm._base import linalg as _linalg
from jaxssm._base import batching as _batching
from jaxssm._blocks import elements as _elements

N, D, kind, untiled = int(sys.argv[1]), 21, sys.argv[2], sys.argv[3] == "1"
rng = np.random.default_rng(0)
A = rng.normal(size=(D, D)); A *= 0.95 / np.max(np.abs(np.linalg.eigvals(A)))
M = rng.normal(size=(D, D)); Q = M @ M.T / D + 0.1 * np.eye(D)
params = ssm.LGSSM(jnp.zeros(D), jnp.eye(D), jnp.asarray(A), jnp.asarray(Q), jnp.eye(D),
                   0.5 * jnp.eye(D))
_, ys = ssm.sample(jax.random.PRNGKey(0), params, N)
def run():
    fn = jax.jit(lambda p, y: _dispatch.run(kind, p, y, "parallel")[0])
    t = time.perf_counter()
    compiled = fn.lower(params, ys).compile()
    c = time.perf_counter() - t
    jax.block_until_ready(compiled(params, ys))
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(params, ys))
    return out if kind == "log_likelihood" else out.log_likelihood, c, time.perf_counter() - t
loop_ll, loop_c, loop_t = run()
print("loop form: compile %.1f s, run %.3f s" % (loop_c, loop_t), flush=True)
_elements.LA = _linalg.LAPACK   # the backend's kernels, vmapped over time
if untiled:  # one vmap over all N steps instead of tiles of 32 (as other libraries do)
    _batching.CPU_TILE = 10**9
print("compiling", flush=True)
ll, c, t = run()
print("ok: LAPACK form compile %.1f s, run %.3f s (loop form %.1f s, %.3f s), rel. diff %.1e"
      % (c, t, loop_c, loop_t, abs(float(ll) - float(loop_ll)) / abs(float(loop_ll))), flush=True)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-steps", type=int, default=4096)
    ap.add_argument("--kind", choices=("log_likelihood", "smooth"), default="log_likelihood")
    ap.add_argument("--untiled", action="store_true", help="vmap over all steps at once")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    import jax
    import jaxlib

    versions = f"jax {jax.__version__}, jaxlib {jaxlib.__version__}"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(args.num_steps), args.kind, str(int(args.untiled))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    t0 = time.perf_counter()
    try:
        out, _ = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        cpu = _cpu_seconds(proc.pid)
        proc.kill()
        out, _ = proc.communicate()
        stage = "in the LAPACK form" if "compiling" in out else "in the loop form"
        print(
            f"hang: still running after {time.perf_counter() - t0:.0f} s "
            f"({stage}; child CPU time {cpu}), "
            f"{args.kind}, N = {args.num_steps:,}, {versions}"
        )
        return 1
    last = [line for line in out.splitlines() if line.startswith("ok")]
    if proc.returncode != 0 or not last:
        print(f"error (exit {proc.returncode}), {versions}:\n{out[-2000:]}")
        return 2
    print(f"{last[-1]}; {args.kind}, N = {args.num_steps:,}, {versions}")
    return 0


def _cpu_seconds(pid: int) -> str:
    """User + system CPU seconds of a running process (Linux ``/proc``), as text."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        import os

        ticks = os.sysconf("SC_CLK_TCK")
        return f"{(int(fields[11]) + int(fields[12])) / ticks:.1f} s"
    except (OSError, IndexError, ValueError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
