"""The documentation: every public name has an API entry, and every page's snippets run.

The API pages (``docs/api/*.md``) hold one ``::: identifier`` line per public name; the site
build (``mkdocs build --strict``, in ``.ci/run``) renders them from the docstrings. The
snippet tests run each page's ```python blocks in order, in one namespace per page
(``tests/docs_snippets.py``); README.md and the entry pages run in the default suite (in one
process: they share the quickstart's compiled programs), the guides (which compile the
parallel and sharded schedules, SARCOS fits) in the slow one.
"""

import importlib
import re

import jax.numpy as jnp
import numpy as np
import pytest
from docs_snippets import ROOT, python_blocks, run_page

import jaxssm

DOCS = ROOT / "docs"
SUBMODULES = ("steps", "priors", "datasets", "plotting", "sharding", "cli")


def _public_identifiers() -> set[str]:
    names = {f"jaxssm.{n}" for n in jaxssm.__all__}
    for mod in SUBMODULES:
        module = importlib.import_module(f"jaxssm.{mod}")
        names |= {f"jaxssm.{mod}"} | {f"jaxssm.{mod}.{n}" for n in module.__all__}
    return names


def _api_entries() -> set[str]:
    entries = set()
    for page in (DOCS / "api").glob("*.md"):
        entries |= set(re.findall(r"^::: (\S+)\s*$", page.read_text(), re.M))
    return entries


def test_every_public_name_has_an_api_entry():
    missing = sorted(_public_identifiers() - _api_entries())
    assert not missing, (
        f"public names without an API entry (add a '::: name' line to docs/api/): {missing}"
    )


def test_every_api_entry_is_a_public_name():
    extra = sorted(_api_entries() - _public_identifiers() - {"jaxssm"})
    assert not extra, f"API entries that are not public names (stale?): {extra}"


def test_snippet_extraction_honours_skip_markers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "x\n\n```python\na = 1\n```\n\n<!-- skip: slow -->\n```python\nraise SystemExit\n```\n"
        "```bash\nexit 1\n```\n```python\nb = a + 1\n```\n"
    )
    assert [s for _, s in python_blocks(page)] == [False, True, False]
    ns = run_page(page)
    assert ns["b"] == 2


README = ROOT / "README.md"


def test_readme_snippets_run_in_order():
    blocks = python_blocks(README)
    assert blocks and not any(skipped for _, skipped in blocks)  # the entry page skips nothing
    ns = run_page(README)
    ssm = ns["ssm"]
    assert ns["smoothed"].means.shape == (501, 2) and ns["xs"].shape == (501, 2)
    info = ns["info"]
    assert info.status == ssm.FitStatus.CONVERGED
    # the fit cannot end below its start's log-likelihood
    assert float(info.log_likelihood) >= float(ssm.log_likelihood(ns["start"], ns["ys"]))
    assert np.isfinite(np.asarray(ns["grads"].A)).all()


def test_readme_is_an_entry_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines; details go to docs/"
    text = "\n".join(lines)
    for command in ("jaxssm fit", "python tests/run_suite.py -q", "mkdocs serve"):
        assert command in text, command


ENTRY_PAGES = ["index.md", "getting-started.md"]
GUIDES = sorted(
    str(p.relative_to(DOCS))
    for p in DOCS.rglob("*.md")
    if p.parent.name != "api" and str(p.relative_to(DOCS)) not in ENTRY_PAGES and python_blocks(p)
)


@pytest.mark.parametrize("page", ENTRY_PAGES)
def test_entry_page_snippets_run(page):
    ns = run_page(DOCS / page)
    assert ns["smoothed"].means.shape[0] == 501


def _check_inputs(ns):
    np.testing.assert_allclose(np.asarray(ns["fit_drift"].b), [0.05], atol=0.03)
    np.testing.assert_allclose(np.asarray(ns["fit_driven"].B), [[0.5], [0.2]], atol=0.1)


def _check_missing(ns):
    assert np.isnan(np.asarray(ns["ys_gappy"])[100:150]).all()
    assert np.isfinite(np.asarray(ns["smoothed_gappy"].means)).all()
    lls = np.asarray(ns["info"].log_likelihoods)
    assert np.all(np.diff(lls) >= -1e-9 * np.abs(lls[:-1]))


def _check_fitting(ns):
    lls = np.asarray(ns["info_sarcos"].log_likelihoods)
    np.testing.assert_allclose(
        [lls[0], float(ns["info_sarcos"].log_likelihood)], [-2_534_476, -350_861], rtol=0, atol=1.0
    )  # the page's numbers
    assert float(ns["info"].log_likelihood) >= float(ns["em_info"].log_likelihood) - 1e-6


def _check_schedules(ns):
    assert float(jnp.abs(ns["fast"].means - ns["full"].means).max()) < 1e-10


def _check_structured(ns):
    Q, R = np.asarray(ns["fitted"].Q), np.asarray(ns["fitted"].R)
    assert Q[0, 1] == 0 and Q[1, 0] == 0 and R[0, 0] == R[1, 1] and R[0, 1] == 0
    A = np.asarray(ns["fitted_rot"].A)
    assert A[0, 0] == A[1, 1] and A[0, 1] == 0.2 and A[1, 0] == -0.2
    se = np.asarray(ns["se_rot"].A)
    assert se[0, 0] == se[1, 1] > 0 and se[0, 1] == 0 and se[1, 0] == 0


CHECKS = {
    "guides/structured.md": _check_structured,
    "guides/inputs.md": _check_inputs,
    "guides/missing-data.md": _check_missing,
    "guides/fitting.md": _check_fitting,
    "guides/schedules.md": _check_schedules,
}


@pytest.mark.slow
@pytest.mark.parametrize("page", GUIDES)
def test_guide_snippets_run(page):
    ns = run_page(DOCS / page)
    CHECKS.get(page, lambda ns: None)(ns)


def _renderer():
    import importlib.util

    spec = importlib.util.spec_from_file_location("render", ROOT / "benchmarks" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_renderer_gives_one_page_per_results_file():
    render = _renderer()
    pages = render.render_all()
    names = {p.stem for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert set(pages) == names
    for name, text in pages.items():
        title, command, _ = render.PAGES.get(name, (name, "", ""))
        assert text.startswith(f"# {title}\n"), name
        assert command in text and f"benchmarks/results/{name}.json" in text, name


def test_benchmark_renderer_tables():
    render = _renderer()
    text = render.render(
        "x",
        {
            "N": 44484,
            "rows": [{"case": "a", "s": 0.25}, {"case": "b", "s": 1.5e-15, "note": "n"}],
            "machine": {"cpu_count": 2},
        },
    )
    assert "| N | 44,484 |" in text
    assert "| case | s | note |" in text and "| a | 0.25 | - |" in text
    assert "| b | 1.5e-15 | n |" in text
    assert text.index("## Results") < text.index("## Machine and run")
    assert render.fmt(-41519.6667) == "-41,519.7" and render.fmt(None) == "-"


def test_notebook_page_renders_outputs(tmp_path):
    """docs/hooks.py: markdown cells as they are, text outputs merged, figures as images."""
    import base64
    import importlib.util
    import json

    pytest.importorskip("mkdocs")  # the hook imports mkdocs (the docs extra)
    spec = importlib.util.spec_from_file_location("hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    png = base64.b64encode(b"\x89PNG fake").decode()
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": ["# Title\n", "text"]},
            {
                "cell_type": "code",
                "source": ["print(1)\n", "print(2)"],
                "outputs": [
                    {"output_type": "stream", "text": ["1\n"]},
                    {"output_type": "stream", "text": "2\n"},
                    {"output_type": "display_data", "data": {"image/png": png}},
                ],
            },
        ]
    }
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    text, images = hooks.notebook_markdown(path)
    assert text.index("# Title") < text.index("!!! note") < text.index("text")
    assert "```text\n1\n2\n```" in text and "executed with `QUICK=1`" in text
    assert images == {"exercise/cell1_2.png": b"\x89PNG fake"}
    assert "![output of cell 1](exercise/cell1_2.png)" in text
