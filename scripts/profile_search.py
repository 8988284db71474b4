#!/usr/bin/env python
"""Where a search spends its time: the Searcher's steps, timed on the benchmark indexes.

Lucene engine, per query: building the Lucene query (JSON to a Java map, then Anserini's query
generator), Lucene's search, bringing the hits back (one JSON string), and ordering them by (score,
id) with Anserini's tie nudges. Memory engine (the impact table), per query: scoring every document
term-at-a-time, selecting the candidates (the k-th score, then every document reaching it), ordering
them by (score, id), and the tie nudges with the hits' ids. Medians over the first N SciFact queries
after 20 warm-up queries. Run ``scripts/bench_search.py --prepare-only`` first.

    bash scripts/env.sh python scripts/profile_search.py --indexes scifact,synthetic-100k
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from splade_lucene.collection import read_queries
from splade_lucene.experiment import find_dataset
from splade_lucene.search import TIE_MARGIN, QueryEncoder, Searcher, adjust_ties

WARMUP = 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--indexes", default="scifact,synthetic-100k")
    ap.add_argument("--root", default="indexes/bench")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()

    root = Path(args.root)
    qenc = QueryEncoder.from_index(root / "scifact" / "index")
    queries = read_queries(find_dataset(None, "scifact") / "queries.jsonl")[:args.queries]
    encoded = [terms for terms in qenc.encode_batch([t for _, t in queries]) if terms]
    print("| index | k | score (ms) | select (ms) | order (ms) | ties + ids (ms) |\n|---|---|---|---|---|---|")
    for name in args.indexes.split(","):
        with Searcher(root / name / "index", qenc, engine="memory") as s:
            table = s._table
            for k in (10, 1000):
                steps = {p: [] for p in ("score", "select", "order", "ties")}
                for terms in encoded[:WARMUP] + encoded:
                    t0 = time.perf_counter()
                    scores = table.scores(terms)
                    t1 = time.perf_counter()
                    candidates = table.candidates(scores, k)
                    t2 = time.perf_counter()
                    ranked = table.order(scores, candidates, k)
                    t3 = time.perf_counter()
                    [(s._docids[d], sc) for (d, _), sc in zip(ranked, adjust_ties([sc for _, sc in ranked]))]
                    t4 = time.perf_counter()
                    for step, a, b in zip(steps, (t0, t1, t2, t3), (t1, t2, t3, t4)):
                        steps[step].append(b - a)
                medians = [1000 * statistics.median(v[WARMUP:]) for v in steps.values()]
                print(f"| {name} | {k} | " + " | ".join(f"{m:.2f}" for m in medians) + " |", flush=True)
    print("\n| index | k | query (ms) | Lucene (ms) | hits back (ms) | order + ties (ms) |\n|---|---|---|---|---|---|")
    for name in args.indexes.split(","):
        with Searcher(root / name / "index", qenc, engine="lucene") as s:
            for k in (10, 1000):
                steps: dict[str, list[float]] = {p: [] for p in ("query", "lucene", "hits", "order")}
                for terms in encoded[:WARMUP] + encoded:
                    t0 = time.perf_counter()
                    query = s._generator.buildQuery("contents", s._mapper.readValue(json.dumps(terms),
                                                                                    s._mapper.float_map))
                    t1 = time.perf_counter()
                    top = s._searcher.search(query, k + max(TIE_MARGIN, k // 8))
                    t2 = time.perf_counter()
                    hits = s._hits(top)
                    t3 = time.perf_counter()
                    ranked = sorted(((sc, s._docids[d]) for d, sc in hits), key=lambda h: (-h[0], h[1]))[:k]
                    adjust_ties([sc for sc, _ in ranked])
                    t4 = time.perf_counter()
                    for step, a, b in zip(steps, (t0, t1, t2, t3), (t1, t2, t3, t4)):
                        steps[step].append(b - a)
                medians = [1000 * statistics.median(v[WARMUP:]) for v in steps.values()]
                print(f"| {name} | {k} | " + " | ".join(f"{m:.2f}" for m in medians) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
