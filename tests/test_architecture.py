"""The package's layering: each module imports only from modules in lower layers.

Every import of a jaxssm module counts, at module level or inside a function (a
function-local import is a circle all the same). The layers are those of DESIGN.md's
"Architecture"; a new module must be placed in one, or this test fails.
"""

import ast
from pathlib import Path

import pytest

import jaxssm

PACKAGE = Path(jaxssm.__file__).parent

LAYERS = [
    ["_version", "_types", "_compile"],
    ["_model"],
    ["_validation", "_linalg", "_draws"],
    ["steps"],
    ["_stats"],
    ["_sequential", "_steady", "_parallel"],
    ["_chunked"],
    ["_dispatch", "sharding"],
    ["_inference", "_sampling", "_mstep", "_posterior", "_forecast"],
    ["_em", "_mle"],
    ["priors", "datasets"],
    ["plotting"],
    ["__init__"],
    ["cli"],
    ["__main__"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules():
    return sorted(p.stem for p in PACKAGE.glob("*.py"))


def _jaxssm_imports(name: str) -> set[str]:
    """Names of the jaxssm modules that module ``name`` imports, anywhere in its source."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "jaxssm":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = (node.module or "").split(".")[0]
                found.update([base] if base else [a.name for a in node.names])
            elif node.module and node.module.split(".")[0] == "jaxssm":
                parts = node.module.split(".")
                if len(parts) > 1:
                    found.add(parts[1])
                else:  # from jaxssm import x: x is a module or a public name of __init__
                    for alias in node.names:
                        is_module = (PACKAGE / f"{alias.name}.py").exists()
                        found.add(alias.name if is_module else "__init__")
    found.discard(name)
    return found


def test_every_module_has_a_layer():
    assert set(_modules()) <= set(LAYER), set(_modules()) - set(LAYER)


@pytest.mark.parametrize("name", _modules())
def test_imports_only_from_lower_layers(name):
    bad = {m: LAYER.get(m) for m in _jaxssm_imports(name) if LAYER.get(m, 99) >= LAYER[name]}
    assert not bad, f"jaxssm.{name} (layer {LAYER[name]}) imports from layers {bad}"


def test_the_checker_sees_function_local_and_relative_imports(tmp_path, monkeypatch):
    # Positive control: a module with a function-local upward import is caught.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "_types.py").write_text(
        "def f():\n    from jaxssm._dispatch import resolve\n    from . import _em\n"
    )
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert _jaxssm_imports("_types") == {"_dispatch", "_em"}


def test_init_does_not_import_cli_or_plotting():
    imports = _jaxssm_imports("__init__")
    assert "cli" not in imports and "plotting" not in imports
