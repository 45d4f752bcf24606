"""The README's quickstart runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs():
    text = README.read_text()
    block = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.S)
    assert block, "README has no Quickstart python block"
    namespace: dict = {}
    exec(compile(block.group(1), "README-quickstart", "exec"), namespace)
    assert namespace["smoothed"].means.shape[0] == 501
