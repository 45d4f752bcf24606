"""MkDocs hooks of the documentation site (``mkdocs.yml``, ``hooks:``).

At build time, without running or fetching anything:

- the benchmark pages: ``benchmarks/render.py`` (the one renderer) turns every
  ``benchmarks/results/*.json`` into ``benchmarks/NAME.md``, listed under "Benchmarks";
- the walk-through: ``notebooks/sarcos_em.ipynb`` becomes ``exercise.md`` (its markdown
  cells as they are, its code cells as code). The notebook is not executed here; with
  ``JAXSSM_NOTEBOOK_EXECUTED=path`` the page is rendered from that executed copy, outputs and
  figures included (``.ci/run`` has ``tests/test_notebook.py`` write one with ``QUICK=1``);
- the API pages: the reST roles of the docstrings (``:func:`x```) are shown as code.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "sarcos_em.ipynb"
#: An executed copy of the notebook (``JAXSSM_NOTEBOOK_OUT=path`` makes the notebook test write
#: one; ``.ci/run`` does): rendered with its outputs instead of the stored copy.
EXECUTED_ENV = "JAXSSM_NOTEBOOK_EXECUTED"


def _renderer():
    spec = importlib.util.spec_from_file_location("bench_render", ROOT / "benchmarks" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_config(config):
    """List one page per results JSON under "Benchmarks" in the navigation."""
    render = _renderer()
    titles = {p.stem: render.PAGES.get(p.stem, (p.stem,))[0] for p in render.RESULTS.glob("*.json")}
    order = sorted(titles, key=lambda name: (name != "cpu", titles[name]))  # the suite first
    pages = [{titles[name]: f"benchmarks/{name}.md"} for name in order]
    for entry in config["nav"]:
        if isinstance(entry, dict) and "Benchmarks" in entry:
            entry["Benchmarks"] = [*entry["Benchmarks"], *pages]
    return config


def _text_block(chunks: list[str]) -> list[str]:
    """Markdown lines of one text block holding ``chunks`` (nothing when empty)."""
    if not chunks:
        return []
    return ["```text", "\n".join(c.rstrip("\n") for c in chunks), "```", ""]


def notebook_markdown(path: Path = NOTEBOOK) -> tuple[str, dict[str, bytes]]:
    """Return the notebook as one markdown page, and the images of its stored outputs."""
    nb = json.loads(path.read_text())
    lines = [
        "<!-- generated from notebooks/sarcos_em.ipynb by docs/hooks.py -->",
        "",
        "!!! note",
        "    This page is the notebook `notebooks/sarcos_em.ipynb` (twin: "
        "`notebooks/sarcos_em.py`), rendered at build time from SOURCE. "
        "Run it yourself with `jupyter lab notebooks/sarcos_em.ipynb`; `QUICK=1` shortens it "
        "(CI runs it so, `python -m pytest -q -m notebook tests/test_notebook.py`).",
        "",
    ]
    images: dict[str, bytes] = {}
    has_outputs = False
    for i, cell in enumerate(nb["cells"]):
        source = "".join(cell["source"]).rstrip()
        if cell["cell_type"] == "markdown":
            if i == 0 and source.startswith("# "):  # the title above the note
                title, _, source = source.partition("\n")
                lines[2:2] = [title, ""]
            lines += [source, ""]
            continue
        if cell["cell_type"] != "code" or not source:
            continue
        lines += ["```python", source, "```", ""]
        text: list[str] = []  # consecutive text outputs (one print each) as one block
        for j, out in enumerate(cell.get("outputs", [])):
            has_outputs = True
            data = out.get("data", {})
            if "image/png" in data:
                lines += _text_block(text)
                text = []
                name = f"exercise/cell{i}_{j}.png"
                images[name] = base64.b64decode(data["image/png"])
                lines += [f"![output of cell {i}]({name})", ""]
            elif out.get("output_type") == "stream" or "text/plain" in data:
                chunk = out.get("text", data.get("text/plain", ""))
                text.append(chunk if isinstance(chunk, str) else "".join(chunk))
        lines += _text_block(text)
    source = (
        "the copy that `tests/test_notebook.py` executed with `QUICK=1` (short fits: its numbers "
        "are not the full run's)"
        if has_outputs
        else "its stored copy, which has no outputs (outputs are not kept in git)"
    )
    lines[:8] = [ln.replace("SOURCE", source) for ln in lines[:8]]
    return "\n".join(lines), images


def on_files(files, config):
    """Add the generated pages (benchmarks, the walk-through) and their images."""
    for name, text in _renderer().render_all().items():
        files.append(File.generated(config, f"benchmarks/{name}.md", content=text))
    png = ROOT / "benchmarks" / "results" / "em_vs_mle.png"
    if png.exists():
        files.append(File.generated(config, "benchmarks/em_vs_mle.png", content=png.read_bytes()))
    executed = os.environ.get(EXECUTED_ENV)
    if executed and not Path(executed).is_file():
        raise FileNotFoundError(f"{EXECUTED_ENV}={executed}: no such notebook")
    text, images = notebook_markdown(Path(executed) if executed else NOTEBOOK)
    files.append(File.generated(config, "exercise.md", content=text))
    for name, data in images.items():
        files.append(File.generated(config, name, content=data))
    return files


_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|attr|meth|data|exc|obj|math|const):(<code>)")


def on_page_content(html, page, config, files):
    """Show the docstrings' reST roles (``:func:`x```) as plain code."""
    html = _ROLE.sub(r"\1", html)
    html = re.sub(r"<p>\.\. math::</p>\s*", "", html)  # the math follows as a code block
    return re.sub(r"::(</p>)", r":\1", html)
