"""The shape of the package, counted the same way before and after a refactoring.

    python scripts/code_shape.py                       # tree, stage graph, longest functions/classes
    python scripts/code_shape.py --trace DATASET_DIR   # + the calls one run_experiment makes
    python scripts/code_shape.py --option stride       # the lines and files naming an option

The trace runs ``run_experiment`` on DATASET_DIR's first ``--docs`` documents (and the queries judged
on them) under ``sys.setprofile`` and follows the package's own Python functions in the order of their
first call (so that a loop over documents counts once): a *stop* is a first call in another package
module than the previous one's, a *return to a module already left* is a stop into a module that was
visited before.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "splade_lucene"


def modules() -> dict[str, Path]:
    """Dotted module name (relative to the package) -> file, subpackages included."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        found[".".join(parts) or "__init__"] = path
    return found


# the flat layout before the stages (issue 30): each module's stage is the folder it moved to
FLAT_STAGES = {
    "errors": "core", "faults": "core", "_java": "core", "atomic": "core", "quantize": "core",
    "collection": "formats", "model": "encoding", "onnx_export": "encoding", "splade_head": "encoding",
    "encode": "encoding", "distributed": "encoding", "writing": "encoding", "lucene": "indexing",
    "index": "indexing", "impacts": "indexing", "compressed": "indexing", "query_table": "indexing",
    "reorder": "indexing", "blockmax": "indexing", "search": "search", "explain": "search", "fusion": "search",
    "bm25": "search", "evaluate": "evaluation", "report": "evaluation", "training": "training",
    "experiment": "experiments", "reproduce": "experiments"}


def stage_of_module(name: str) -> str:
    """A traced module's stage: its subpackage, or for the flat layout the folder it moved to."""
    return FLAT_STAGES.get(name, name.split(".")[0])


def stage(name: str) -> str:
    """A module's stage: its subpackage, or the module itself where the package is flat."""
    return name.split(".")[0]


def longest(kind: type, top_n: int = 5) -> list[tuple[int, str]]:
    sizes = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, kind) or (kind is ast.FunctionDef and isinstance(node, ast.AsyncFunctionDef)):
                sizes.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    return sorted(sizes, reverse=True)[:top_n]


def stage_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    names = modules()
    for name, path in names.items():
        here = name.split(".")
        package = [] if name == "__init__" else here[:-1] if path.name != "__init__.py" else here
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join(base + (node.module.split(".") if node.module else []))
                if not target:
                    continue
                a, b = stage(name), stage(target)
                if a != b:
                    graph.setdefault(a, set()).add(b)
    return graph


def option_places(option: str) -> tuple[int, int]:
    pattern = re.compile(rf"\b{re.escape(option)}\b|--{re.escape(option.replace('_', '-'))}\b")
    lines = files = 0
    for path in modules().values():
        hits = sum(1 for line in path.read_text().splitlines() if pattern.search(line))
        lines += hits
        files += bool(hits)
    return lines, files


def small_dataset(source: Path, docs: int, target: Path) -> Path:
    """The first ``docs`` documents of a BEIR folder and the test queries judged on them."""
    (target / "qrels").mkdir(parents=True)
    kept = []
    with open(source / "corpus.jsonl") as f, open(target / "corpus.jsonl", "w") as out:
        for line, _ in zip(f, range(docs)):
            out.write(line)
            kept.append(json.loads(line)["_id"])
    kept_set = set(kept)
    rows = [r for r in (source / "qrels" / "test.tsv").read_text().splitlines()[1:]
            if r.split("\t")[1] in kept_set]
    (target / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    judged = {r.split("\t")[0] for r in rows}
    with open(source / "queries.jsonl") as f, open(target / "queries.jsonl", "w") as out:
        out.writelines(line for line in f if json.loads(line)["_id"] in judged)
    return target


def trace_experiment(dataset: Path, docs: int) -> dict:
    import splade_lucene as sl

    first: dict[tuple[str, str], None] = {}
    edges: set[tuple[str, str]] = set()
    prefix = "splade_lucene"
    total = 0

    def name_of(frame) -> str | None:
        module = frame.f_globals.get("__name__", "") if frame is not None else ""
        return (module[len(prefix) + 1:] or "__init__") if module.startswith(prefix) else None

    def profile(frame, event, arg):
        nonlocal total
        if event == "call" and frame.f_code.co_name != "<module>":  # not an import
            module = name_of(frame)
            if module is not None:
                total += 1
                first.setdefault((module, frame.f_code.co_qualname), None)
                caller = name_of(frame.f_back)
                if caller is not None and caller != module:
                    edges.add((caller, module))

    with tempfile.TemporaryDirectory() as tmp:
        folder = small_dataset(dataset, docs, Path(tmp) / "data")
        sys.setprofile(profile)
        try:
            sl.run_experiment(folder, Path(tmp) / "out", progress=False)
        finally:
            sys.setprofile(None)
    calls = [module for module, _ in first]

    def walk(names):
        stops = [m for i, m in enumerate(names) if i == 0 or m != names[i - 1]]
        seen: set[str] = set()
        returns = 0
        for m in stops:
            returns += m in seen
            seen.add(m)
        return stops, seen, returns

    stops, seen, returns = walk(calls)
    stage_stops, stages, stage_returns = walk([stage_of_module(m) for m in calls])
    order = ["core", "formats", "encoding", "indexing", "search", "evaluation", "training", "experiments", "cli",
             "__init__"]
    up = sorted(f"{a} -> {b}" for a, b in edges
                if order.index(stage_of_module(b)) > order.index(stage_of_module(a)))
    return {"calls": total, "functions": len(calls), "call_edges_between_modules": len(edges),
            "calls_up_the_stages": up, "stops": len(stops), "modules": len(seen),
            "returns_to_left_modules": returns, "stage_stops": len(stage_stops), "stages": len(stages),
            "returns_to_left_stages": stage_returns, "stage_path": stage_stops,
            "stops_by_module": dict(Counter(stops).most_common())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", type=Path, help="a BEIR dataset folder to run one experiment on")
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--option", action="append", default=[], help="count the places naming this option")
    args = parser.parse_args()

    names = modules()
    print(f"{len(names)} modules, {sum(len(p.read_text().splitlines()) for p in names.values())} lines")
    for name in names:
        print("  " + name)
    print("\nimports between stages:")
    for a, targets in sorted(stage_graph().items()):
        print(f"  {a} -> {', '.join(sorted(targets))}")
    for label, kind in (("functions", ast.FunctionDef), ("classes", ast.ClassDef)):
        print(f"\nlongest {label}:")
        for lines, name in longest(kind):
            print(f"  {lines:4d}  {name}")
    for option in args.option:
        lines, files = option_places(option)
        print(f"\noption {option}: {lines} lines in {files} modules")
    if args.trace:
        print("\ntrace of run_experiment:")
        print(json.dumps(trace_experiment(args.trace, args.docs), indent=2))


if __name__ == "__main__":
    main()
