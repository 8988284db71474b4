#!/usr/bin/env python
"""Growth on real text: the exhaustive and block-max engines on the first 100k, 300k, ... passages of
one encoded collection (wiki-passages-1m, encoded with the default model), one thread, SciFact's
test queries; then a power-law fit of p50 against the number of documents, extrapolated to MS MARCO's
8.8 million passages, with the bytes each engine keeps.

The collection may still be encoding: its finished parts (``.NAME.writing/progress.json``) are used,
so a size is measured as soon as its documents are encoded. For each size, under --root: a folder
whose collection is hard links to the first parts (parts of 20,000 documents: sizes are multiples of
the part size), its Lucene index (one thread), impact table and block-max engine, built on first use
and kept. Every query's hits from the block-max engine are checked against exhaustive scoring.

    bash scripts/env.sh python scripts/bench_growth_real.py --collection DATA/wiki-1m/collection \\
        --sizes 100000,300000,1000000 --root DATA/growth --json runs/growth_real.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_reorder import encoded_queries, p50  # noqa: E402

from splade_lucene.formats.collection import COLLECTION_METADATA_FILE  # noqa: E402
from splade_lucene.indexing.blockmax import BLOCK_DIR, BlockMaxIndex, write_blockmax  # noqa: E402
from splade_lucene.indexing.build import build_index  # noqa: E402
from splade_lucene.indexing.impacts import ImpactTable  # noqa: E402

MS_MARCO = 8_841_823


def finished_parts(collection: Path) -> tuple[list[Path], dict]:
    """The collection's part files in order and its metadata; for a collection still being encoded,
    the parts its progress file records (and the metadata those settings give)."""
    if (collection / COLLECTION_METADATA_FILE).is_file():
        return sorted(collection.glob("part-*.jsonl")), json.loads((collection / COLLECTION_METADATA_FILE).read_text())
    writing = collection.parent / f".{collection.name}.writing"
    progress = json.loads((writing / "progress.json").read_text())
    parts = [writing / p["file"] for p in progress["parts"]]
    return parts, {"progress_settings": progress["settings"], "parts": progress["parts"]}


def prefix_collection(collection: Path, size: int, folder: Path, template: Path | None) -> Path:
    parts, meta = finished_parts(collection)
    counts = [sum(1 for _ in open(p, "rb")) for p in parts[:1]]
    per_part = counts[0]
    if size % per_part:
        raise SystemExit(f"--sizes must be multiples of the part size ({per_part})")
    need = size // per_part
    if need > len(parts):
        raise SystemExit(f"{collection}: only {len(parts) * per_part} documents encoded so far, not {size}")
    out = folder / "collection"
    out.mkdir(parents=True, exist_ok=True)
    for part in parts[:need]:
        if not (out / part.name).exists():
            os.link(part, out / part.name)
    if "progress_settings" in meta:
        if template is None:
            raise SystemExit("the collection is still encoding: pass --meta-template, the collection.meta of a "
                             "collection encoded with the same settings, for the prefix's metadata")
        meta = json.loads(template.read_text())
    (out / COLLECTION_METADATA_FILE).write_text(json.dumps({**meta, "documents": size}, indent=2))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", required=True, help="an encoded collection folder (or one still encoding)")
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--root", required=True, help="where the prefixes' indexes are built and kept")
    ap.add_argument("--meta-template", default=None, help="collection.meta for a collection still encoding")
    ap.add_argument("--queries", default="scifact")
    ap.add_argument("--ks", default="10,1000")
    ap.add_argument("--json", default=None)
    ap.add_argument("--index-threads", type=int, default=1,
                    help="Anserini indexing threads for a prefix's index (default 1, as the rows measured before; "
                         "the hits are the same with any count, the build time is not)")
    args = ap.parse_args()

    queries = encoded_queries(args.queries, 300)
    ks = [int(k) for k in args.ks.split(",")]
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        folder = Path(args.root) / f"prefix-{size}"
        collection = prefix_collection(Path(args.collection), size, folder,
                                       Path(args.meta_template) if args.meta_template else None)
        built = {}
        if not (folder / "index").is_dir():
            start = time.perf_counter()
            build_index(collection, folder / "index", threads=args.index_threads, quiet=True)
            built["index_s"] = round(time.perf_counter() - start, 1)
            built["index_threads"] = args.index_threads
        if not (folder / "index" / BLOCK_DIR).is_dir():
            write_blockmax(folder / "index")
        meta = json.loads((folder / "index" / BLOCK_DIR / "blockmax.json").read_text())
        table = ImpactTable.load(folder / "index")
        index = BlockMaxIndex.load(folder / "index", table)
        for k in ks:
            same = all(index.top(q, k) == table.top(q, k, prune=False) for q in queries)
            row = {"documents": size, "postings": table.postings, "k": k,
                   "exhaustive_p50_ms": round(p50(lambda q, k: table.top(q, k, prune=False), queries, k), 3),
                   "blockmax_p50_ms": round(p50(lambda q, k: index.top(q, k), queries, k), 3), "same_results": same,
                   "table_bytes_a_posting": round(table.nbytes / table.postings, 2),
                   "blockmax_bytes_a_posting": round(index.nbytes / table.postings, 2),
                   "order_s": round(meta["seconds"]["order_s"], 1), **built}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| documents | k | exhaustive p50 ms | block-max p50 ms | same | table B/posting | block-max B/posting "
          "| BP s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['documents']:,} | {r['k']} | {r['exhaustive_p50_ms']} | {r['blockmax_p50_ms']} | "
              f"{r['same_results']} | {r['table_bytes_a_posting']} | {r['blockmax_bytes_a_posting']} | "
              f"{r['order_s']} |")
    for k in ks:
        sized = [r for r in rows if r["k"] == k]
        if len(sized) >= 2:
            x = np.log([r["documents"] for r in sized])
            for engine in ("exhaustive", "blockmax"):
                slope, level = np.polyfit(x, np.log([r[f"{engine}_p50_ms"] for r in sized]), 1)
                at = float(np.exp(level + slope * np.log(MS_MARCO)))
                print(f"k={k} {engine}: p50 ~ documents^{slope:.2f}; at {MS_MARCO:,} documents about {at:.1f} ms")
            last = sized[-1]
            per_doc = last["postings"] / last["documents"]
            for engine in ("table", "blockmax"):
                gb = last[f"{engine}_bytes_a_posting"] * per_doc * MS_MARCO / 1e9
                print(f"{engine} at {MS_MARCO:,} documents of {per_doc:.0f} postings: about {gb:.1f} GB")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
