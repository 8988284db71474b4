#!/usr/bin/env python
"""Quantization loss and index size against the scale, on a BEIR dataset (default: SciFact).

Encodes the corpus and the judged queries once (float weights), then for each scale runs the
package's pipeline (splade_lucene.evaluation.pipeline.run_pipeline) on those vectors: quantize, index
with Anserini, search, evaluate; the first row is the unquantized reference (exact float dot
products, brute force). Prints a Markdown table; --json writes the rows.

    bash scripts/env.sh python scripts/quantization_sweep.py --scales 32,51.2,100,256
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import splade_lucene  # noqa: F401  (Java set-up)
from splade_lucene.encoding.model import SpladeEncoder
from splade_lucene.evaluation.metrics import evaluate
from splade_lucene.evaluation.pipeline import run_pipeline
from splade_lucene.experiments.experiment import dataset_files, find_dataset, judged_dataset
from splade_lucene.formats.metadata import CollectionOptions
from splade_lucene.search.exact import exact_search, vectors_matrix


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=None, help="BEIR folder (default: scifact from the data root)")
    ap.add_argument("--scales", default="32,51.2,100,256")
    ap.add_argument("--output", default="runs/quantization-sweep")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    args = ap.parse_args()

    folder = find_dataset(args.dataset)
    docs, queries, qrels = judged_dataset(folder)
    corpus = dataset_files(folder)[0]
    encoder = SpladeEncoder()
    doc_vectors = encoder.encode([d.text for d in docs])
    query_vectors = encoder.encode([t for _, t in queries])
    docids = [d.id for d in docs]
    qids = [q for q, _ in queries]

    rows = []
    exact = exact_search(vectors_matrix(query_vectors, encoder.vocab_size),
                         vectors_matrix(doc_vectors, encoder.vocab_size), qids, docids)
    ref = evaluate(qrels, {q: [(h.docid, h.score) for h in hits] for q, hits in exact.items()},
                   remove_query=True).metrics
    rows.append({"scale": "float (brute force)", **ref, "index_mb": None, "postings_per_doc": None})
    out = Path(args.output)
    for scale in [float(s) for s in args.scales.split(",")]:
        where = out / f"scale-{scale:g}"
        if where.exists():
            shutil.rmtree(where)
        result = run_pipeline(corpus, queries, qrels, where, encoder=encoder, options=CollectionOptions(scale=scale),
                              vectors=zip(docids, doc_vectors), progress=False)
        metrics = result.metrics
        size = sum(f.stat().st_size for f in result.index_dir.iterdir() if f.is_file())
        stats = result.index_metadata["index_stats"]
        rows.append({"scale": scale, **metrics, "index_mb": size / 2**20,
                     "postings_per_doc": stats["postings"] / stats["documents"]})
        print(f"scale {scale:g}: nDCG@10 {metrics['nDCG@10']:.4f}", file=sys.stderr)

    print(f"\n{folder.name}, {len(docs)} documents, {len(queries)} judged queries, SPLADE-tiny, max length 512\n")
    print("| scale | nDCG@10 | RR@10 | R@100 | R@1000 | MAP | index MB | postings/doc |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mb = f"{r['index_mb']:.2f}" if r["index_mb"] is not None else "-"
        ppd = f"{r['postings_per_doc']:.1f}" if r["postings_per_doc"] is not None else "-"
        scale = r["scale"] if isinstance(r["scale"], str) else f"{r['scale']:g}"
        print(f"| {scale} | {r['nDCG@10']:.4f} | {r['RR@10']:.4f} | {r['R@100']:.4f} | {r['R@1000']:.4f} "
              f"| {r['MAP']:.4f} | {mb} | {ppd} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
