#!/usr/bin/env python
"""The query side without the transformer: effectiveness and end-to-end latency on SciFact.

For each condition, the SciFact test queries are run from their text, one at a time, through
``Searcher.search(text, k)`` on the memory engine: tokenize, weights (the transformer, or the
table of an inference-free index), quantize, search. Reported: nDCG@10 / R@100 of the full run
(k=1000, BEIR's query-hit removal), and the end-to-end p50 / p99 latency at k=10 over R rounds of
every query (after one warm-up round), with torch and onnxruntime on ``--threads`` threads.

Conditions (models trained on the SciFact train split only; the test split is only measured):
- ``full``: a model trained with the default recipe, its queries through the transformer (torch);
- ``full-onnx``: the same, its queries through the model's ONNX export (onnxruntime);
- ``doc-only idf``: a model trained with ``--query-mode idf``, queries weighted by the index's IDF;
- ``doc-only learned``: trained with ``--query-mode learned``, queries weighted by the learned table;
- ``idf on full``: the full model's documents with IDF queries (no inference-free training).

    bash scripts/env.sh python scripts/bench_query_modes.py --full runs/sparsity-sweep/model-lambda-d-0.001 \\
        --idf runs/doc-only/model-idf --learned runs/doc-only/model-learned --json runs/bench-query-modes.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def latencies(searcher, queries, rounds: int, k: int) -> list[float]:
    for _, text in queries:
        searcher.search(text, k=k)  # warm-up
    out = []
    for _ in range(rounds):
        for _, text in queries:
            t0 = time.perf_counter()
            searcher.search(text, k=k)
            out.append(time.perf_counter() - t0)
    return out


def measure(name, index, query_encoder, queries, qrels, rounds, folder: Path):
    from splade_lucene.evaluation.metrics import evaluate
    from splade_lucene.formats.trec import read_run, write_run
    from splade_lucene.search.searcher import Searcher

    with Searcher(index, query_encoder, engine="memory") as s:
        results = s.batch_search(queries, k=1000)
        write_run(results, folder / f"{name.replace(' ', '-')}.trec", remove_query=True)
        metrics = evaluate(qrels, read_run(folder / f"{name.replace(' ', '-')}.trec"), remove_query=True).metrics
        terms = s.query_encoder.encode_batch([t for _, t in queries])
        lat = sorted(latencies(s, queries, rounds, 10))
        stats = json.loads((Path(index) / "splade_lucene.json").read_text())["index_stats"]
    row = {"condition": name, "nDCG@10": metrics["nDCG@10"], "R@100": metrics["R@100"],
           "terms_per_query": sum(map(len, terms)) / len(terms),
           "postings_per_doc": stats["postings"] / stats["documents"],
           "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))]}
    print(f"{name:18s} nDCG@10 {row['nDCG@10']:.4f}  R@100 {row['R@100']:.4f}  {row['terms_per_query']:5.1f} terms/q  "
          f"{row['postings_per_doc']:5.0f} postings/doc  e2e p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms",
          flush=True)
    return row


def ensure_index(model: str, folder: Path, dataset: Path, mode: str | None) -> Path:
    from splade_lucene.encoding.local import encode_corpus
    from splade_lucene.encoding.model import SpladeEncoder
    from splade_lucene.indexing.build import build_index

    collection, index = folder / "collection", folder / f"index-{mode or 'default'}"
    if not (collection / "collection.meta").is_file():
        encode_corpus(dataset / "corpus.jsonl", collection, encoder=SpladeEncoder(model), overwrite=True)
    if not (index / "splade_lucene.json").is_file():
        build_index(collection, index, quiet=True, overwrite=True, query_mode=mode)
    return index


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", required=True, help="model trained with the default recipe (query mode full)")
    ap.add_argument("--idf", default=None, help="model trained with --query-mode idf")
    ap.add_argument("--learned", default=None, help="model trained with --query-mode learned")
    ap.add_argument("--dataset", default=None, help="SciFact folder (default: from the data root)")
    ap.add_argument("--root", default="runs/bench-query-modes", help="collections and indexes, kept for reruns")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from splade_lucene.experiments.experiment import find_dataset, judged_dataset
    from splade_lucene.search.encoders import QueryEncoder

    dataset = find_dataset(args.dataset, "scifact")
    _, queries, qrels = judged_dataset(dataset)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    full = ensure_index(args.full, root / "full", dataset, None)
    rows.append(measure("full", full, None, queries, qrels, args.rounds, root))
    if not args.no_onnx:
        from splade_lucene.encoding.onnx import export_onnx

        onnx_dir = root / "full" / "onnx"
        if not (onnx_dir / "model.onnx").is_file():
            export_onnx(args.full, onnx_dir, overwrite=True)
        qenc = QueryEncoder(str(onnx_dir), backend="onnx", threads=args.threads)  # the index's scale, lengths
        rows.append(measure("full-onnx", full, qenc, queries, qrels, args.rounds, root))
    rows.append(measure("idf on full", ensure_index(args.full, root / "full", dataset, "idf"), None, queries, qrels,
                        args.rounds, root))
    for name, model in (("doc-only idf", args.idf), ("doc-only learned", args.learned)):
        if model:
            index = ensure_index(model, root / name.split()[-1], dataset, None)
            rows.append(measure(name, index, None, queries, qrels, args.rounds, root))
    base = rows[0]
    print("\nagainst full: " + ", ".join(f"{r['condition']}: nDCG@10 {r['nDCG@10'] - base['nDCG@10']:+.4f}, "
                                         f"p50 x{base['p50_ms'] / r['p50_ms']:.1f} faster" for r in rows[1:]))
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "rows": rows},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
