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


def test_em_snippet_runs():
    text = README.read_text()
    block = re.search(r"### EM in ten lines\n\n```python\n(.*?)```", text, re.S)
    assert block, "README has no EM snippet"
    code = block.group(1).replace("num_iters=100", "num_iters=3")
    namespace: dict = {}
    exec(compile(code, "README-em", "exec"), namespace)
    info = namespace["info"]
    lls = info.log_likelihoods
    assert lls.shape == (3,) and lls[2] > lls[0]
    assert int(info.status) == namespace["ssm"].EMStatus.MAX_ITERS
    assert info.log_likelihood > lls[2]
