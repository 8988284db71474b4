#!/usr/bin/env python
"""Static pruning: effectiveness against index size and query latency, on a BEIR dataset (SciFact).

Encodes the corpus once (float weights), then for each setting runs the package's pipeline
(``splade_lucene.evaluation.pipeline.run_pipeline``) on those vectors: prune
(``splade_lucene.core.quantize.prune``: each document's top-k terms and/or terms above a weight; the
queries' top-k recorded with the collection and applied by the index's query encoder), quantize at
the default scale, index with Anserini, search every judged query (k=1000, BEIR convention) and
evaluate. Latency: p50 of one query at a time at
k=10, after a warm-up. Prints a Markdown table; writes the rows as JSON and a PNG of nDCG@10 against
index size and against latency.

    bash scripts/env.sh python scripts/pruning_sweep.py --json runs/pruning-sweep.json --plot docs/pruning.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import splade_lucene  # noqa: F401  (Java set-up)
from splade_lucene.encoding.model import SpladeEncoder
from splade_lucene.evaluation.pipeline import run_pipeline
from splade_lucene.experiments.experiment import dataset_files, find_dataset, judged_dataset
from splade_lucene.formats.metadata import CollectionOptions
from splade_lucene.indexing.impacts import TABLE_DIR
from splade_lucene.search.engines import SearchSettings
from splade_lucene.search.searcher import Searcher

# (label, document top-k, document min weight, query top-k)
SETTINGS = [
    ("none", None, None, None),
    ("doc top-256", 256, None, None),
    ("doc top-128", 128, None, None),
    ("doc top-64", 64, None, None),
    ("doc top-32", 32, None, None),
    ("doc weight >= 0.5", None, 0.5, None),
    ("doc weight >= 1.0", None, 1.0, None),
    ("doc top-128, query top-16", 128, None, 16),
    ("doc top-64, query top-16", 64, None, 16),
]
WARMUP = 20


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2 ** 20


def p50_ms(searcher: Searcher, queries: list[dict[str, int]]) -> float:
    for terms in queries[:WARMUP]:
        searcher.search_terms(terms, k=10)
    times = []
    for terms in queries:
        t = time.perf_counter()
        searcher.search_terms(terms, k=10)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def measure(label: str, encoder: SpladeEncoder, corpus: Path, docids: list[str], doc_vectors,
            queries: list[tuple[str, str]], qrels, where: Path, *, doc_top_k: int | None = None,
            doc_min_weight: float | None = None, query_top_k: int | None = None) -> dict:
    """One setting through the package's pipeline (run_pipeline) on the vectors encoded once: write
    the collection (pruned as asked; query pruning is recorded with it and applied by the index's
    query encoder), index it, search (k=1000, BEIR convention) and evaluate; then time the queries,
    as searched, one at a time at k=10 on both engines."""
    if where.exists():
        shutil.rmtree(where)
    options = CollectionOptions(doc_top_k=doc_top_k, doc_min_weight=doc_min_weight, query_top_k=query_top_k)
    result = run_pipeline(corpus, queries, qrels, where, encoder=encoder, options=options,
                          search=SearchSettings(engine="memory"), vectors=zip(docids, doc_vectors), progress=False)
    stats = result.index_metadata["index_stats"]
    encoded = result.encoded
    row = {"setting": label, "doc_top_k": doc_top_k, "doc_min_weight": doc_min_weight, "query_top_k": query_top_k,
           **result.metrics}
    for engine in ("memory", "lucene"):
        with Searcher(result.index_dir, pretokenized=True, engine=engine) as searcher:
            row[f"{engine}_p50_ms"] = p50_ms(searcher, list(encoded.values()))
    row.update({"postings_per_doc": stats["postings"] / stats["documents"],
                "terms_per_query": statistics.mean(len(v) for v in encoded.values()),
                "lucene_mb": folder_mb(result.index_dir) - folder_mb(result.index_dir / TABLE_DIR),
                "table_mb": folder_mb(result.index_dir / TABLE_DIR)})
    print(f"{label}: nDCG@10 {row['nDCG@10']:.4f}, {row['postings_per_doc']:.0f} postings/doc, "
          f"{row['lucene_mb']:.1f} MiB, p50 {row['memory_p50_ms']:.2f} / {row['lucene_p50_ms']:.2f} ms",
          file=sys.stderr, flush=True)
    return row


def write_rows(rows: list[dict], path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(rows, indent=2) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "lucene_mb", "Lucene index size (MiB)"),
                           (axes[1], "lucene_p50_ms", "query latency, Lucene engine, p50 ms (k=10)")):
        ax.plot([r[key] for r in rows], [r["nDCG@10"] for r in rows], "o", color="tab:blue")
        for r in rows:
            ax.annotate(r["setting"], (r[key], r["nDCG@10"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("nDCG@10")
        ax.grid(alpha=0.3)
    fig.suptitle("SciFact, SPLADE-tiny: static pruning")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=None, help="BEIR folder (default: scifact from the data root)")
    ap.add_argument("--output", default="runs/pruning-sweep")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    ap.add_argument("--plot", default=None, help="write the PNG here")
    args = ap.parse_args()

    docs, queries, qrels = judged_dataset(args.dataset)
    corpus = dataset_files(find_dataset(args.dataset))[0]
    encoder = SpladeEncoder()
    t = time.perf_counter()
    doc_vectors = encoder.encode([d.text for d in docs])
    print(f"encoded {len(docs)} documents in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    docids = [d.id for d in docs]
    out = Path(args.output)
    rows = []
    for label, doc_k, doc_min, query_k in SETTINGS:
        where = out / label.replace(" ", "").replace(",", "-").replace(">=", "ge")
        rows.append(measure(label, encoder, corpus, docids, doc_vectors, queries, qrels, where, doc_top_k=doc_k,
                            doc_min_weight=doc_min, query_top_k=query_k))

    base = rows[0]
    print("| setting | nDCG@10 | change | R@1000 | postings/doc | terms/query | Lucene index MiB | "
          "p50 ms memory | p50 ms Lucene |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['nDCG@10']:.4f} | {r['nDCG@10'] - base['nDCG@10']:+.4f} | {r['R@1000']:.4f} | "
              f"{r['postings_per_doc']:.0f} | {r['terms_per_query']:.1f} | {r['lucene_mb']:.2f} | "
              f"{r['memory_p50_ms']:.2f} | {r['lucene_p50_ms']:.2f} |")
    write_rows(rows, args.json)
    if args.plot:
        plot(rows, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
