#!/usr/bin/env python
"""Index-build throughput: ``splade-lucene index`` against Anserini's IndexCollection run directly on
the same collection files (the limit for this stage), on the synthetic collections of
``scripts/bench_search.py`` (drawn from SciFact's vector statistics; build them with it first).

Each build runs as its own process, one after another (nothing else of ours running); the figures:
wall seconds, documents a second, peak memory (the largest sum of resident memory over the build's
process tree, sampled every 0.2 s, and the kernel's peak of its largest process), and the size of
the index on disk (ours: Lucene files, then the impact table beside them). Rows:

- ``anserini``: ``java -cp anserini-fatjar.jar io.anserini.index.IndexCollection -collection
  JsonVectorCollection -generator DefaultLuceneDocumentGenerator -impact -pretokenized -threads T``
  with the same Java 21;
- ``ours``: ``splade-lucene index --threads T`` (the same Anserini run, then the count check, the
  docid table and the impact table, checked against the index term by term);
- ``ours-no-table``: ``splade-lucene index --no-impact-table``.

    python scripts/bench_index.py --collections synthetic-100k,synthetic-1m --json runs/bench_index.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from splade_lucene.core import java as _java  # noqa: E402
from splade_lucene.indexing.build import anserini_command  # noqa: E402


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every process under it."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    total = 0
    for pid in rss:
        p, hops = pid, 0
        while p and p != root and hops < 20:
            p, hops = parents.get(p, 0), hops + 1
        if p == root:
            total += rss[pid]
    return total


def measure(cmd: list[str], env: dict) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"seconds": seconds, "peak_tree_rss": peak[0], "peak_process_rss": usage.ru_maxrss * 1024}


def size_of(folder: Path, skip: str | None = None) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not (skip and skip in p.parts))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="indexes/bench")
    ap.add_argument("--collections", default="synthetic-100k,synthetic-1m")
    ap.add_argument("--variants", default="anserini,ours,ours-no-table",
                    help="rows to run for every collection (ours-no-table is skipped above --no-table-limit)")
    ap.add_argument("--no-table-limit", type=int, default=200_000,
                    help="run ours-no-table only on collections up to this many documents")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scratch", default="indexes/bench/build-bench")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    _java.configure_environment()
    env = dict(os.environ)
    java, jar = _java.java_executable(), str(_java.anserini_jar())
    scratch = Path(args.scratch)
    rows = []
    for name in args.collections.split(","):
        collection = Path(args.root) / name / "collection"
        meta = json.loads((collection / "collection.meta").read_text())
        docs = int(meta["documents"])
        input_bytes = sum(p.stat().st_size for p in collection.glob("*.jsonl"))
        for repeat in range(args.repeats):
            for variant in args.variants.split(","):
                if variant == "ours-no-table" and docs > args.no_table_limit:
                    continue
                out = scratch / f"{name}-{variant}"
                shutil.rmtree(out, ignore_errors=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                if variant == "anserini":
                    cmd = [java, "-cp", jar, *anserini_command(collection, out, fmt="vector", threads=args.threads)]
                else:
                    cmd = [sys.executable, "-m", "splade_lucene", "--quiet", "index", "--collection", str(collection),
                           "--index", str(out), "--threads", str(args.threads)]
                    if variant == "ours-no-table":
                        cmd.append("--no-impact-table")
                print(f"{name} {variant} (repeat {repeat + 1}) ...", file=sys.stderr, flush=True)
                r = measure(cmd, env)
                row = {"collection": name, "documents": docs, "input_bytes": input_bytes, "variant": variant,
                       "repeat": repeat, **r, "docs_per_s": docs / r["seconds"],
                       "lucene_bytes": size_of(out, skip="impacts"),
                       "table_bytes": size_of(out / "impacts") if (out / "impacts").is_dir() else 0}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                shutil.rmtree(out, ignore_errors=True)

    def med(name: str, variant: str, key: str) -> float | None:
        values = [r[key] for r in rows if r["collection"] == name and r["variant"] == variant]
        return statistics.median(values) if values else None

    mib = 2 ** 20
    print("| collection | documents | build | seconds | docs/s | time vs Anserini | peak memory (tree) MiB | "
          "memory vs Anserini | Lucene MiB | impact table MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.collections.split(","):
        base_s, base_m = med(name, "anserini", "seconds"), med(name, "anserini", "peak_tree_rss")
        for variant in args.variants.split(","):
            s = med(name, variant, "seconds")
            if s is None:
                continue
            m = med(name, variant, "peak_tree_rss")
            docs = next(r["documents"] for r in rows if r["collection"] == name)
            print(f"| {name} | {docs:,} | {variant} | {s:.1f} | {docs / s:,.0f} | "
                  f"{s / base_s:.3f}x | {m / mib:,.0f} | {m / base_m:.2f}x | "
                  f"{med(name, variant, 'lucene_bytes') / mib:,.0f} | {med(name, variant, 'table_bytes') / mib:,.0f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
