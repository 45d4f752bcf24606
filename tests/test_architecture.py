"""The package's layering: each module imports only from modules in lower layers.

Modules are named by their dotted path inside the package (``_schedules.steady``). Every
import of a jaxssm module counts, at module level or inside a function (a function-local
import is a circle all the same). The layers are those of DESIGN.md's "Architecture" and of
``docs/architecture.md``; a new module must be placed in one, or this test fails. A module
never imports another module's private (``_``-prefixed) names, by ``from m import _x`` or by
``m._x`` on an imported module: a block two modules use is public inside the package.
"""

import ast
from pathlib import Path

import pytest

import jaxssm

PACKAGE = Path(jaxssm.__file__).parent

# Folders hold layers: _base (types, model, compile options, platform rule, linear algebra,
# batching), _args (argument handling), _blocks (per-step algebra, associative elements,
# statistics), _schedules (sequential, steady-state, parallel, chunked; the dispatcher),
# _api (inference entry points), _learn (M-step, EM, MLE, fitting); leaves on top.
LAYERS = [
    ["_version", "_base.types", "_base.compile", "_base.platform"],
    ["_base.model", "_base.structure"],
    ["_base.linalg", "_base.batching"],
    ["_base.tria"],
    ["_args.checks", "_args.schedule"],
    ["_args.diffuse"],
    ["_args.callbacks", "_args.validation", "_args.structures", "_args.results"],
    ["_args.prologue"],
    ["steps", "_blocks.draws"],
    ["_blocks.elements", "_blocks.stats", "_blocks.sqrt_steps", "_blocks.sqrt_elements"],
    [
        "_schedules.sequential",
        "_schedules.parallel",
        "_schedules.settle",
        "_schedules.recursions",
        "_schedules.sqrt",
        "_schedules.diffuse",
    ],
    ["_schedules.steady"],
    ["_schedules.gappy", "_schedules.sqrt_steady"],
    ["_schedules.chunked"],
    ["_schedules.dispatch"],
    ["_schedules.plan"],
    ["sharding", "_learn.constrained", "_api.entry"],
    ["_api.inference", "_api.sampling", "_api.posterior", "_api.forecast", "_learn.mstep"],
    ["_learn.accelerate", "_learn.moments"],
    ["_learn.subspace", "_learn.frame"],
    ["_learn.em", "_learn.mle", "_learn.score", "_learn.initialize", "_learn.block"],
    ["_learn.boundary", "_learn.uncertainty"],
    ["_learn.fit", "_learn.errors"],
    ["priors", "datasets"],
    ["plotting"],
    ["__init__"],
    ["_cli.options"],
    ["_cli.data", "_cli.run", "_cli.outputs"],
    ["cli"],
    ["__main__"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
# A folder's __init__ holds only its docstring: it sits below everything.
FOLDERS = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


def _modules(package: Path | None = None):
    package = PACKAGE if package is None else package
    names = []
    for p in sorted(package.rglob("*.py")):
        parts = p.relative_to(package).with_suffix("").parts
        if len(parts) == 2 and parts[1] == "__init__":
            continue  # a folder's docstring-only __init__
        names.append(".".join(parts))
    return names


def _resolve(dotted: str, package: Path) -> str | None:
    """The module name of ``jaxssm.<dotted>`` (``None`` for a folder or a non-module)."""
    if not dotted:
        return "__init__"
    if (package / (dotted.replace(".", "/") + ".py")).exists():
        return dotted
    return None


def _parse(name: str, package: Path):
    return ast.parse((package / (name.replace(".", "/") + ".py")).read_text())


def _jaxssm_imports(name: str, package: Path | None = None) -> set[str]:
    """Names of the jaxssm modules that module ``name`` imports, anywhere in its source."""
    package = PACKAGE if package is None else package
    found = set()
    here = name.split(".")[:-1]  # the folder of ``name`` for relative imports
    for node in ast.walk(_parse(name, package)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "jaxssm":
                    found.add(_resolve(".".join(parts[1:]), package) or ".".join(parts[1:]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                mod = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            elif node.module and node.module.split(".")[0] == "jaxssm":
                mod = ".".join(node.module.split(".")[1:])
            else:
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}" if mod else alias.name
                found.add(_resolve(sub, package) or _resolve(mod, package) or mod)
    found.discard(name)
    return found


def _private_reach_ins(name: str, package: Path | None = None) -> list[str]:
    """Private names of other jaxssm modules that ``name`` uses: ``from m import _x``, ``m._x``."""
    package = PACKAGE if package is None else package
    tree = _parse(name, package)
    aliases, bad = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] != "jaxssm" or node.level:
                continue
            mod = ".".join(node.module.split(".")[1:])
            for alias in node.names:
                sub = f"{mod}.{alias.name}" if mod else alias.name
                if _resolve(sub, package):
                    aliases.add(alias.asname or alias.name)
                elif alias.name.startswith("_") and not alias.name.startswith("__"):
                    bad.append(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "jaxssm" and alias.asname:
                    aliases.add(alias.asname)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            bad.append(f"{node.value.id}.{node.attr}")
    return bad


def test_every_module_has_a_layer():
    assert set(_modules()) <= set(LAYER), set(_modules()) - set(LAYER)


@pytest.mark.parametrize("name", _modules())
def test_imports_only_from_lower_layers(name):
    bad = {m: LAYER.get(m) for m in _jaxssm_imports(name) if LAYER.get(m, 99) >= LAYER[name]}
    assert not bad, f"jaxssm.{name} (layer {LAYER[name]}) imports from layers {bad}"


@pytest.mark.parametrize("name", _modules())
def test_no_module_uses_another_modules_private_names(name):
    assert not _private_reach_ins(name), (name, _private_reach_ins(name))


def test_folder_inits_hold_no_code():
    for folder in FOLDERS:
        tree = ast.parse((PACKAGE / folder / "__init__.py").read_text())
        assert all(isinstance(n, ast.Expr) for n in tree.body), folder  # a docstring only


def test_the_checker_sees_function_local_relative_and_private_imports(tmp_path):
    # Positive control: upward imports (function-local, relative, a folder's module) and
    # private reach-ins are all caught.
    fake = tmp_path / "fake"
    (fake / "_base").mkdir(parents=True)
    (fake / "_schedules").mkdir()
    (fake / "_base" / "types.py").write_text(
        "def f():\n"
        "    from jaxssm._schedules.dispatch import resolve\n"
        "    from jaxssm._schedules import steady as _st\n"
        "    from . import model\n"
        "    return _st._hidden\n"
    )
    (fake / "_base" / "model.py").write_text("from jaxssm._base.types import _private\n")
    (fake / "_schedules" / "dispatch.py").write_text("")
    (fake / "_schedules" / "steady.py").write_text("")
    assert _modules(fake) == [
        "_base.model",
        "_base.types",
        "_schedules.dispatch",
        "_schedules.steady",
    ]
    found = _jaxssm_imports("_base.types", fake)
    assert found == {"_schedules.dispatch", "_schedules.steady", "_base.model"}
    assert _private_reach_ins("_base.types", fake) == ["_st._hidden"]
    assert _private_reach_ins("_base.model", fake) == ["jaxssm._base.types._private"]


def test_init_does_not_import_cli_or_plotting():
    imports = _jaxssm_imports("__init__")
    assert "cli" not in imports and "plotting" not in imports
