#!/usr/bin/env python
"""Document orders for the block-max engine, side by side on one index: build time, how well each
order compresses (average bits of a posting's gap, log2, the measure recursive graph bisection
lowers), and the block-max engine's exact p50 at k=10 and 1000 on pre-encoded queries, every query's
hits checked against the memory engine's exhaustive scoring.

Orders (--orders): ``random`` (seeded), ``index`` (Lucene's: the collection's), ``bp`` (bisection over
every term of every document), ``bpN`` (bisection over each document's N strongest terms, with
--terms-per-doc), ``written`` (the order of the index's block-max files, as `splade-lucene blockmax`
wrote it: other block sizes on the same order without ordering again, hours saved at a million).

    bash scripts/env.sh python scripts/bench_reorder.py --index INDEX --queries scifact \\
        --terms-per-doc 32,64 --blocks 2,4,8 --json runs/bench_reorder.json
    bash scripts/env.sh python scripts/bench_reorder.py --index INDEX --orders written --blocks 4,8,16 --ks 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import splade_lucene  # noqa: F401  (Java set-up)
from splade_lucene.experiments.experiment import dataset_files, find_dataset
from splade_lucene.formats.collection import read_queries
from splade_lucene.formats.trec import read_qrels
from splade_lucene.indexing.blockmax import BlockMaxIndex, build_arrays, forward_index, table_postings
from splade_lucene.indexing.impacts import ImpactTable
from splade_lucene.indexing.reorder import bisection_order, log_gap_cost
from splade_lucene.search.encoders import QueryEncoder


def encoded_queries(name: str, limit: int) -> list[dict[str, int]]:
    """The first ``limit`` judged test queries of a dataset, encoded with the default model."""
    folder = find_dataset(None, name)
    _, queries_file, qrels_file = dataset_files(folder, "test")
    qrels = read_qrels(qrels_file)
    texts = [t for q, t in read_queries(queries_file) if q in qrels][:limit]
    return QueryEncoder().encode_batch(texts)


def p50(fn, queries, k) -> float:
    for q in queries[:20]:
        fn(q, k)
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q, k)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="an index with its impact table")
    ap.add_argument("--queries", default="scifact", help="dataset whose judged test queries are used")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--orders", default="random,index,bp",
                    help="orders to compare: random, index, bp, written (the index's block-max order)")
    ap.add_argument("--terms-per-doc", default="", help="also bisect on each document's N strongest terms")
    ap.add_argument("--blocks", default="4", help="block sizes to time")
    ap.add_argument("--ks", default="10,1000")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    wanted = args.orders.split(",")
    unknown = set(wanted) - {"random", "index", "bp", "written"}
    if unknown:
        ap.error(f"unknown orders {sorted(unknown)}: random, index, bp or written")
    table = ImpactTable.load(args.index)
    if table is None:
        ap.error(f"{args.index} has no impact table")
    queries = encoded_queries(args.queries, args.limit)
    ks = [int(k) for k in args.ks.split(",")]
    offsets, rows, impacts = table_postings(table)
    orders = {}
    if "written" in wanted:  # the perm the block-max files keep (checked against the table when loaded)
        orders["written"] = (np.asarray(BlockMaxIndex.load(args.index, table).arrays["perm"], dtype=np.int32), 0.0)
    if "random" in wanted:
        orders["random"] = (np.random.default_rng(args.seed).permutation(table.num_docs).astype(np.int32), 0.0)
    if "index" in wanted:
        orders["index"] = (np.arange(table.num_docs, dtype=np.int32), 0.0)
    bisections = [0] if "bp" in wanted else []
    bisections += [int(x) for x in args.terms_per_doc.split(",") if x]
    fwd = forward_index(offsets, rows, impacts, table.num_docs) if bisections else None
    for n in bisections:
        start = time.perf_counter()
        order = bisection_order(fwd[0], fwd[1], len(table.terms), doc_impacts=fwd[2], terms_per_doc=n or None)
        name = f"bp{n or ''}"
        orders[name] = (order, time.perf_counter() - start)
        print(f"{name}: ordered in {orders[name][1]:.1f} s", file=sys.stderr, flush=True)
    reference = {k: [table.top(q, k, prune=False) for q in queries] for k in ks}
    exhaustive = {k: p50(lambda q, k: table.top(q, k, prune=False), queries, k) for k in ks}
    rows_out = []
    for name, (order, seconds) in orders.items():
        bits = log_gap_cost(order, offsets, rows)
        for block in (int(b) for b in args.blocks.split(",")):
            index = BlockMaxIndex(table, build_arrays(offsets, rows, impacts, order, block=block), block)
            for k in ks:
                same = all(index.top(q, k) == r for q, r in zip(queries, reference[k]))
                row = {"order": name, "order_seconds": round(seconds, 1), "gap_bits": round(bits, 3),
                       "block": block, "k": k, "p50_ms": round(p50(lambda q, k: index.top(q, k), queries, k), 3),
                       "exhaustive_p50_ms": round(exhaustive[k], 3), "same_results": same,
                       "bytes_a_posting": round(index.nbytes / table.postings, 2)}
                rows_out.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n{table.num_docs:,} documents, {table.postings:,} postings, {len(queries)} {args.queries} queries")
    print("| order | ordering s | gap bits | block | k | block-max p50 ms | exhaustive p50 ms | ratio | same |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows_out:
        print(f"| {r['order']} | {r['order_seconds']} | {r['gap_bits']} | {r['block']} | {r['k']} | {r['p50_ms']} | "
              f"{r['exhaustive_p50_ms']} | {r['exhaustive_p50_ms'] / r['p50_ms']:.2f}x | {r['same_results']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows_out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
