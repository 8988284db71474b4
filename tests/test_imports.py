"""The package's imports run one way: each module imports only modules of earlier stages, no
module imports another's private names, and package imports sit at the top of a module (the CLI's
handlers and training's torch-only head excepted)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "splade_lucene"
ORDER = ["errors", "faults", "_java", "atomic", "collection", "quantize", "model", "onnx_export", "query_table",
         "reorder", "writing", "distributed", "encode", "lucene", "compressed", "impacts", "blockmax", "index",
         "search", "explain", "fusion",
         "bm25", "evaluate", "experiment", "splade_head", "training", "reproduce", "report", "cli", "__init__",
         "__main__"]
LAZY_ALLOWED = {"cli", "training"}


def package_imports(path: Path):
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            targets = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            for target in targets:
                yield target, [a.name for a in node.names] if node.module else [], id(node) in top


def test_every_module_is_placed_and_imports_only_earlier_stages():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert sorted(ORDER) == modules, "a new module needs its place in ORDER"
    for path in PACKAGE.glob("*.py"):
        for target, names, at_top in package_imports(path):
            assert ORDER.index(target) < ORDER.index(path.stem), f"{path.stem} imports {target}, a later stage"
            assert not [n for n in names if n.startswith("_")], f"{path.stem} imports private names of {target}"
            assert at_top or path.stem in LAZY_ALLOWED, f"{path.stem} imports {target} inside a function"
