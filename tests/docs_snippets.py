"""The ```python blocks of a Markdown page, in order, and a runner for them.

Used by tests/test_docs.py.

A block preceded by a line ``<!-- skip: reason -->`` is not run (it needs data or time the
tests do not have, or it changes the process's JAX configuration); every other block runs as
written, all blocks of a page in one namespace, so a page's snippets must run in order.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"^(<!-- skip:[^\n]*-->\n)?```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[str, bool]]:
    """``(code, skipped)`` for each ```python block of ``path``, in order."""
    return [(m.group(2), bool(m.group(1))) for m in _BLOCK.finditer(path.read_text())]


def run_page(path: Path) -> dict:
    """Run the page's blocks that are not skipped, in order, in one namespace; return it."""
    namespace: dict = {"__name__": f"snippets:{path.name}"}
    blocks = python_blocks(path)
    assert blocks, f"{path} has no python block"
    for i, (code, skipped) in enumerate(blocks):
        if not skipped:
            exec(compile(code, f"{path.name}[block {i}]", "exec"), namespace)
    return namespace
