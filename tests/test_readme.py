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


def test_missing_data_snippet_runs_after_the_quickstart():
    import numpy as np

    text = README.read_text()
    quick = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.S).group(1)
    block = re.search(r"## Missing data\n\n.*?```python\n(.*?)```", text, re.S)
    assert block, "README has no missing-data snippet"
    namespace: dict = {}
    exec(compile(quick + block.group(1), "README-missing", "exec"), namespace)
    sm, ys_gappy = namespace["smoothed_gappy"], np.asarray(namespace["ys_gappy"])
    assert np.isnan(ys_gappy[100:150]).all() and np.isfinite(np.asarray(sm.means)).all()
    lls = np.asarray(namespace["info"].log_likelihoods)
    assert np.all(np.isfinite(lls)) and np.all(np.diff(lls) >= -1e-9 * np.abs(lls[:-1]))


def test_inputs_snippet_runs_after_the_quickstart():
    """The README's drift and input examples run and recover what they simulate."""
    import numpy as np

    text = README.read_text()
    quick = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.S).group(1)
    block = re.search(
        r"## Inputs, offsets and time-varying matrices\n\n.*?```python\n(.*?)```", text, re.S
    )
    assert block, "README has no inputs snippet"
    namespace: dict = {}
    exec(compile(quick + block.group(1), "README-inputs", "exec"), namespace)
    np.testing.assert_allclose(np.asarray(namespace["fit_drift"].b), [0.05], atol=0.03)
    np.testing.assert_allclose(np.asarray(namespace["fit_driven"].B), [[0.5], [0.2]], atol=0.1)
    assert np.isfinite(np.asarray(namespace["smoothed_driven"].means)).all()
