"""Run the test suite in several pytest processes, a few test files each.

Usage (from the repository root)::

    python tests/run_suite.py              # the default suite
    python tests/run_suite.py -m slow      # the slow tests (any pytest options pass through)

Why not one ``python -m pytest``: in one process the default suite compiles over a thousand
XLA programs, and late in such a run jaxlib 0.10.2's CPU compiler crashed the process
(SIGSEGV or SIGABRT, no message) while compiling programs that compile fine in a fresh
process (seen three times in a row, at different tests, about 480 tests in). Groups of files
in separate processes stay well below that. The exit status is non-zero if any group fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: Files per process; the groups are consecutive in name order.
GROUP_SIZE = 6


def main(argv: list[str]) -> int:
    files = sorted(p for p in TESTS.glob("test_*.py"))
    groups = [files[i : i + GROUP_SIZE] for i in range(0, len(files), GROUP_SIZE)]
    failed = []
    for group in groups:
        names = [str(p.relative_to(TESTS.parent)) for p in group]
        print(f"== pytest {' '.join(argv)} {' '.join(names)}", flush=True)
        rc = subprocess.call([sys.executable, "-m", "pytest", *argv, *names], cwd=TESTS.parent)
        if rc not in (0, 5):  # 5: every test of the group deselected
            failed.append((names, rc))
    for names, rc in failed:
        print(f"FAILED (exit {rc}): {' '.join(names)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
