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
machine). Each group's output is printed whole when it ends. The exit status is non-zero if
any group fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: Files per process; the groups are consecutive in name order.
GROUP_SIZE = 4


def _jobs() -> int:
    default = min(2, os.cpu_count() or 1)
    return max(1, int(os.environ.get("RUN_SUITE_JOBS", default)))


def _run(argv: list[str], names: list[str]) -> tuple[list[str], int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *argv, *names],
        cwd=TESTS.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return names, proc.returncode, proc.stdout


def main(argv: list[str]) -> int:
    files = sorted(p for p in TESTS.glob("test_*.py"))
    groups = [files[i : i + GROUP_SIZE] for i in range(0, len(files), GROUP_SIZE)]
    names = [[str(p.relative_to(TESTS.parent)) for p in group] for group in groups]
    failed = []
    with ThreadPoolExecutor(_jobs()) as pool:
        for group, rc, output in pool.map(lambda n: _run(argv, n), names):
            print(f"== pytest {' '.join(argv)} {' '.join(group)}", flush=True)
            print(output, end="", flush=True)
            if rc not in (0, 5):  # 5: every test of the group deselected
                failed.append((group, rc))
    for group, rc in failed:
        print(f"FAILED (exit {rc}): {' '.join(group)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
