"""The package's imports run one way. The package is cut into stages (subpackages), each importing
only stages before it; inside a stage the modules import each other without a circle; no module
imports another's private names; package imports sit at the top of a module (the CLI's handlers
and training's torch-only head excepted)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "splade_lucene"
STAGES = ["core", "formats", "encoding", "indexing", "search", "evaluation", "training", "experiments", "serving",
          "cli", "__init__", "__main__"]
LAZY_ALLOWED = {"cli", "training.objective"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def stage_of(module: str) -> str:
    return module.split(".")[0]


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def package_imports(module: str, path: Path):
    """(imported module, imported names, at the module's top level) for each import of the package."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    here = module.split(".")
    package = here if path.name == "__init__.py" and len(here) > 0 and module != "__init__" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[:len(package) - node.level + 1]
            prefix = base + (node.module.split(".") if node.module else [])
            if node.module:
                yield ".".join(prefix), [a.name for a in node.names], id(node) in top
            else:
                for alias in node.names:
                    yield ".".join(prefix + [alias.name]), [], id(node) in top


def test_every_module_belongs_to_a_stage():
    assert not [m for m in MODULES if stage_of(m) not in STAGES], "a new stage needs its place in STAGES"
    flat = [m for m in MODULES if "." not in m and (PACKAGE / f"{m}.py").is_file()]
    assert sorted(flat) == ["__init__", "__main__", "cli"], "a module's home is its stage's folder"
    for stage in STAGES[:-3]:
        doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text()))
        assert doc, f"{stage}/__init__.py says what the stage holds"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_stages(module):
    for target, names, at_top in package_imports(module, MODULES[module]):
        assert target in MODULES, f"{module} imports {target}, which does not exist"
        assert STAGES.index(stage_of(target)) <= STAGES.index(stage_of(module)), \
            f"{module} imports {target}, a later stage"
        assert not [n for n in names if n.startswith("_")], f"{module} imports private names of {target}"
        assert at_top or module in LAZY_ALLOWED, f"{module} imports {target} inside a function"


def test_no_circle_inside_a_stage():
    graph = {m: {t for t, _, _ in package_imports(m, p) if stage_of(t) == stage_of(m) and t != m and
                 not MODULES[t].name == "__init__.py"}
             for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import circle: " + " -> ".join(path + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for t in graph[m]:
            visit(t, path + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])


def test_every_public_name_resolves():
    import splade_lucene as sl

    missing = [name for name in sl.__all__ if not hasattr(sl, name)]
    assert not missing, f"import splade_lucene names {missing}, which their modules do not define"
