#!/usr/bin/env python
"""Choose the hybrid settings on SciFact's *train* queries, never on a test split.

Reuses the BM25 and SPLADE indexes that `splade-lucene reproduce scripts/experiments/scifact.yaml`
wrote, searches the train queries with both, and grid-searches RRF's k and the interpolation weight
alpha (of BM25, after min-max normalization) for nDCG@10. The chosen values go, unchanged, into
every scripts/experiments/*.yaml.

    bash scripts/env.sh python scripts/tune_hybrid.py --reproduce-dir runs/reproduce
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import splade_lucene  # noqa: F401  (Java set-up)
from splade_lucene.evaluation.metrics import evaluate
from splade_lucene.experiments.experiment import find_dataset
from splade_lucene.formats.collection import read_queries
from splade_lucene.formats.trec import read_qrels, read_run, write_run
from splade_lucene.search import fusion
from splade_lucene.search.bm25 import BM25Searcher
from splade_lucene.search.searcher import Searcher

RRF_KS = (1, 2, 5, 10, 20, 40, 60, 100)
ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reproduce-dir", default="runs/reproduce")
    ap.add_argument("--dataset", default=None, help="SciFact folder (default: from the data root)")
    args = ap.parse_args()

    folder = find_dataset(args.dataset, name="scifact")
    qrels = read_qrels(folder / "qrels" / "train.tsv")
    queries = [(q, t) for q, t in read_queries(folder / "queries.jsonl") if q in qrels]
    base = Path(args.reproduce_dir) / "scifact"
    work = base / "tune-train"
    work.mkdir(parents=True, exist_ok=True)
    bm25 = BM25Searcher(base / "bm25" / "index")
    write_run(bm25.batch_search(queries, k=1000), work / "bm25.trec", remove_query=True)
    with Searcher(base / "splade" / "index") as splade:
        write_run(splade.batch_search(queries, k=1000), work / "splade.trec", remove_query=True)
    files = [work / "bm25.trec", work / "splade.trec"]

    def ndcg(results) -> float:
        return evaluate(qrels, {q: [(h.docid, h.score) for h in hits] for q, hits in results.items()},
                        remove_query=True, warn=False).metrics["nDCG@10"]

    print(f"SciFact train: {len(queries)} judged queries\n")
    for name in ("bm25", "splade"):
        metrics = evaluate(qrels, read_run(work / f"{name}.trec"), remove_query=True).metrics
        print(f"{name}: nDCG@10 {metrics['nDCG@10']:.4f}")
    rrf = {k: ndcg(fusion.rrf(files, rrf_k=k)) for k in RRF_KS}
    lin = {a: ndcg(fusion.interpolation(files, alpha=a)) for a in ALPHAS}
    print("\n| rrf_k | nDCG@10 |\n|---|---|")
    for k, v in rrf.items():
        print(f"| {k} | {v:.4f} |")
    print("\n| alpha (BM25 weight) | nDCG@10 |\n|---|---|")
    for a, v in lin.items():
        print(f"| {a} | {v:.4f} |")
    best_k = max(rrf, key=lambda k: (rrf[k], -k))
    best_a = max(lin, key=lambda a: (lin[a], -a))
    print(f"\nchosen: rrf_k = {best_k} (nDCG@10 {rrf[best_k]:.4f}), alpha = {best_a} (nDCG@10 {lin[best_a]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
