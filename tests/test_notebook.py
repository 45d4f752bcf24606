"""The notebook runs top to bottom (QUICK=1) in a fresh kernel, and its twin is in sync.

Marked ``notebook``: excluded from the default suite, run by ``.ci/run`` as its own step
(``python -m pytest -m notebook``), since executing it takes one to two minutes. With
``JAXSSM_NOTEBOOK_OUT=path`` the executed notebook is written there (the docs build renders
it: ``JAXSSM_NOTEBOOK_EXECUTED=path mkdocs build``).
"""

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _cells(nb: dict, kind: str) -> list[str]:
    return ["".join(c["source"]).strip() for c in nb["cells"] if c["cell_type"] == kind]


def test_ipynb_matches_py_twin():
    nb = json.loads((NOTEBOOKS / "sarcos_em.ipynb").read_text())
    twin = (NOTEBOOKS / "sarcos_em.py").read_text()
    for src in _cells(nb, "code"):
        assert src in twin, f"notebook cell missing from the .py twin:\n{src[:200]}"
    for src in _cells(nb, "markdown"):  # jupytext's percent format: "# " before each line
        commented = "\n".join(f"# {line}".rstrip() for line in src.splitlines())
        assert commented in twin, f"markdown cell missing from the .py twin:\n{src[:200]}"
    assert twin.count("# %%") == len(nb["cells"])
    # Outputs are stripped in git: the notebook stays small and diffable.
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.notebook
@pytest.mark.timeout(600)
def test_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOKS / "sarcos_em.ipynb", as_version=4)
    out = os.environ.get("JAXSSM_NOTEBOOK_OUT")
    # Agg draws nothing into the notebook; for an executed copy the figures go inline.
    backend = "module://matplotlib_inline.backend_inline" if out else "Agg"
    env = {"QUICK": "1", "MPLBACKEND": backend}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        )
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "monotone: True" in text
    assert "status: MAX_ITERS" in text
    if out:  # the executed copy, for the docs build (.ci/run; docs/hooks.py renders it)
        nbformat.write(nb, out)
