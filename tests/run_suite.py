"""Run the test suite in several pytest processes, a few test files each, two at a time.

Usage (from the repository root)::

    python tests/run_suite.py              # the default suite
    python tests/run_suite.py -m slow      # the slow tests (any pytest options pass through)
    RUN_SUITE_JOBS=1 python tests/run_suite.py   # one process at a time

Why not one ``python -m pytest``: in one process the default suite compiles over a thousand
XLA programs, and late in such a run jaxlib 0.10.2's CPU compiler crashed the process
(SIGSEGV or SIGABRT, no message) while compiling programs that compile fine in a fresh
process (seen three times in a row, at different tests, about 480 tests in). Groups of files
in separate processes stay well below that.

Why two at a time: the suite's time is mostly XLA compilation, which runs on one core, so
on a 2-core machine two processes finish in well under the time of one after the other.
``RUN_SUITE_JOBS`` sets the number of processes at a time (default: 2, or 1 on a one-core
machine).

Order: the groups holding the files in ``HEAVY`` start first (longest first is the classic
rule for running jobs on a few workers: a long group started last would run alone at the
end). The hint changes only the order, never what runs.

Progress: a line when each group starts (``[start 3/12] tests/test_a.py ...``); when a group
ends, its output whole, then a line with its result (pytest's last line), the number of
groups done and the time since the start (``[done 5/12, 2:31 elapsed] ... 40 passed in
61.2s``). Groups are printed in the order they end. The exit status is non-zero if any group
fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: Files per process; the groups are consecutive in name order.
GROUP_SIZE = 4
#: Files that take the longest (measured: each of their groups took 2-3 minutes of the default
#: suite's 9 on a 2-core CPU, the others under 1.5); their groups start first.
HEAVY = frozenset(
    {
        "test_diffuse.py",
        "test_dispatch.py",
        "test_em.py",
        "test_fit.py",
        "test_inputs.py",
        "test_missing.py",
        "test_mle.py",
        "test_sqrt.py",
        "test_steady.py",
    }
)


def _order(groups: list[list[Path]]) -> list[int]:
    """Indices of ``groups``, those with the most ``HEAVY`` files first (stable)."""
    weight = [sum(p.name in HEAVY for p in group) for group in groups]
    return sorted(range(len(groups)), key=lambda i: -weight[i])


def _jobs() -> int:
    default = min(2, os.cpu_count() or 1)
    return max(1, int(os.environ.get("RUN_SUITE_JOBS", default)))


def _run(argv: list[str], names: list[str]) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *argv, *names],
        cwd=TESTS.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc.returncode, proc.stdout


def _result_line(output: str) -> str:
    """Pytest's summary line (the last non-empty line of its output)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1].strip("= ") if lines else "(no output)"


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}"


def main(argv: list[str], *, files: list[Path] | None = None, run=_run, jobs=None) -> int:
    """Run the groups; ``files``, ``run(argv, names) -> (rc, output)`` and ``jobs`` for tests."""
    if files is None:
        files = sorted(p for p in TESTS.glob("test_*.py"))
    groups = [files[i : i + GROUP_SIZE] for i in range(0, len(files), GROUP_SIZE)]
    names = [[str(p.relative_to(TESTS.parent)) for p in group] for group in groups]
    total, t0, lock, failed, done = len(names), time.perf_counter(), threading.Lock(), [], [0]
    print(
        f"run_suite: {total} groups of up to {GROUP_SIZE} files, {jobs or _jobs()} at a time",
        flush=True,
    )

    def one(index: int, group: list[str]) -> None:
        with lock:
            print(f"[start {index + 1}/{total}] {' '.join(group)}", flush=True)
        rc, output = run(argv, group)
        with lock:
            done[0] += 1
            elapsed = _clock(time.perf_counter() - t0)
            print(f"== pytest {' '.join(argv)} {' '.join(group)}", flush=True)
            print(output, end="" if output.endswith("\n") or not output else "\n", flush=True)
            status = "" if rc in (0, 5) else f" FAILED (exit {rc})"
            print(
                f"[done {done[0]}/{total}, {elapsed} elapsed]{status} {' '.join(group)}: "
                f"{_result_line(output)}",
                flush=True,
            )
            if rc not in (0, 5):  # 5: every test of the group deselected
                failed.append((group, rc))

    with ThreadPoolExecutor(jobs or _jobs()) as pool:
        for future in [pool.submit(one, k, names[i]) for k, i in enumerate(_order(groups))]:
            future.result()
    for group, rc in failed:
        print(f"FAILED (exit {rc}): {' '.join(group)}", flush=True)
    print(f"run_suite: {total} groups in {_clock(time.perf_counter() - t0)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
