#!/usr/bin/env python
"""Growth of the memory engine with collection size, Lucene left out: synthetic tables of 100k, 1M
and 3M documents (drawn from SciFact's term and weight distributions by
``scripts/synthetic_collection.py``, the same seed as ``bench_search.py``), built in memory straight
from the drawn postings, searched with real SciFact queries.

For each size it prints the table's bytes a posting, the time to write its arrays and to open them
again (memory-mapped), and p50/p99 one query at a time, one thread, at k=10 and k=1000 for the
exhaustive and the pruned kernel; every query's hits (documents and integer scores, ties by id) are
checked against a brute-force product of the postings matrix on the first --check queries.

    bash scripts/env.sh python scripts/bench_growth.py --sizes 100000,1000000,3000000 --json runs/growth.json

The postings are placed term-major in two passes over the seeded draw (document frequencies, then
placement), so memory is the raw postings (8 bytes each) plus the table (about 2.5).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import ensure_index  # noqa: E402
from synthetic_collection import synthetic_chunks  # noqa: E402

from splade_lucene.experiments.experiment import find_dataset  # noqa: E402
from splade_lucene.formats.collection import read_queries  # noqa: E402
from splade_lucene.indexing import compressed  # noqa: E402
from splade_lucene.indexing.impacts import ImpactTable  # noqa: E402
from splade_lucene.search.encoders import QueryEncoder

WARMUP = 20


def postings(source: Path, docs: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(vocabulary, offsets, docs, impacts) of a synthetic collection, term-major, docs ascending."""
    chunks = synthetic_chunks(source, docs, seed)
    vocab = next(chunks)
    df = np.zeros(len(vocab), dtype=np.int64)
    for _, terms, _ in chunks:
        df += np.bincount(terms, minlength=len(vocab))
    offsets = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(df, out=offsets[1:])
    rows = np.empty(int(offsets[-1]), dtype=np.int32)
    impacts = np.empty(int(offsets[-1]), dtype=np.int32)
    cursor = offsets[:-1].copy()
    chunks = synthetic_chunks(source, docs, seed)
    next(chunks)
    first_row = 0
    for lengths, terms, weights in chunks:
        row = np.repeat(np.arange(first_row, first_row + len(lengths), dtype=np.int32), lengths)
        order = np.argsort(terms, kind="stable")  # by term, each term's documents ascending
        ts = terms[order]
        counts = np.bincount(ts, minlength=len(vocab))
        start = np.zeros(len(vocab), dtype=np.int64)
        np.cumsum(counts[:-1], out=start[1:])
        at = cursor[ts] + (np.arange(len(ts)) - start[ts])
        rows[at] = row[order]
        impacts[at] = weights[order]
        cursor += counts
        first_row += len(lengths)
    assert (cursor == offsets[1:]).all()
    return vocab, offsets, rows, impacts


def brute_top(matrix, q_terms: np.ndarray, q_weights: np.ndarray, k: int) -> tuple[list[int], list[int]]:
    """Top k (rows, scores) by score, then row (a synthetic document's id rank is its row)."""
    query = np.zeros(matrix.shape[1], dtype=np.int32)
    query[q_terms] = q_weights
    scores = matrix @ query
    scores = np.asarray(scores).ravel()
    hits = np.nonzero(scores)[0]
    order = np.lexsort((hits, -scores[hits]))[:k]
    return hits[order].tolist(), scores[hits[order]].tolist()


def timed(fn, items) -> list[float]:
    for item in items[:WARMUP]:
        fn(item)
    out = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - t)
    return out


def bench_size(n: int, source: Path, seed: int, queries: list[tuple[list[str], dict[str, int]]], ks: list[int],
               check: int, scratch: Path) -> list[dict]:
    import scipy.sparse as sp

    t = time.perf_counter()
    vocab, offsets, rows, impacts = postings(source, n, seed)
    drawn = time.perf_counter() - t
    t = time.perf_counter()
    table = ImpactTable.from_postings(vocab, offsets, rows, impacts, np.arange(n, dtype=np.int32))
    encoded = time.perf_counter() - t
    folder = scratch / f"table-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, array in table.arrays.items():
        np.save(folder / f"{name}.npy", array)
    t = time.perf_counter()
    mapped = {name: np.load(folder / f"{name}.npy", mmap_mode="r").view(np.ndarray) for name in compressed.ARRAYS}
    table = ImpactTable(vocab, mapped, np.arange(n, dtype=np.int32), table.max_impact)
    opened = time.perf_counter() - t
    print(f"{n:,} documents: {table.postings:,} postings drawn in {drawn:.0f} s, encoded in {encoded:.0f} s, "
          f"{table.nbytes / table.postings:.3f} bytes a posting; opened in {opened * 1000:.1f} ms",
          file=sys.stderr, flush=True)
    term_id = {t: i for i, t in enumerate(vocab)}
    qs = []
    for _, terms in queries:
        found = [(term_id[t], w) for t, w in terms.items() if t in term_id]
        qs.append((np.array([t for t, _ in found], dtype=np.int64), np.array([w for _, w in found], dtype=np.int64)))
    matrix = sp.csc_matrix((impacts, rows, offsets), shape=(n, len(vocab)))
    acc = np.zeros(n, dtype=np.int32)
    work = np.zeros(n, dtype=np.int32)
    out = []
    for k in ks:
        for prune in (False, True):
            def run(q, k=k, prune=prune):
                return compressed.search(table.arrays, table.id_rank, q[0], q[1], k, prune, acc, work)

            exact = all(tuple(x.tolist() for x in run(q)) == brute_top(matrix, q[0], q[1], k) for q in qs[:check])
            stats = np.zeros(4, dtype=np.int64)
            read = []
            for q in qs:
                compressed.search(table.arrays, table.id_rank, q[0], q[1], k, prune, acc, work, stats)
                read.append(stats[0] / max(1, sum(int(table._df[t]) for t in q[0])))
            ms = np.array(timed(run, qs)) * 1000
            row = {"documents": n, "postings": table.postings, "bytes_per_posting": table.nbytes / table.postings,
                   "open_ms": opened * 1000, "k": k, "kernel": "pruned" if prune else "exhaustive",
                   "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                   "read_share": float(np.median(read)), "exact": exact, "checked": min(check, len(qs))}
            print(f"  k={k} {row['kernel']}: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                  f"median share of postings read {row['read_share']:.2f}, exact on {row['checked']}: {exact}",
                  file=sys.stderr, flush=True)
            out.append(row)
    shutil.rmtree(folder, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,3000000")
    ap.add_argument("--queries", type=int, default=300, help="first N SciFact queries")
    ap.add_argument("--ks", default="10,1000")
    ap.add_argument("--check", type=int, default=30, help="queries checked against brute force at each size")
    ap.add_argument("--root", default="indexes/bench")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    root = Path(args.root)
    scifact = ensure_index("scifact", root, args.seed, 2)
    texts = read_queries(find_dataset(None, "scifact") / "queries.jsonl")[:args.queries]
    encoded = QueryEncoder.from_index(scifact / "index").encode_batch([t for _, t in texts])
    queries = [(q, e) for (q, _), e in zip(texts, encoded) if e]
    print(f"{len(queries)} queries, {statistics.mean(len(e) for _, e in queries):.1f} terms each", file=sys.stderr)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        rows.extend(bench_size(n, scifact / "collection", args.seed, queries, [int(k) for k in args.ks.split(",")],
                               args.check, root / "growth-scratch"))
    print("\n| documents | bytes/posting | open ms | k | kernel | p50 ms | p99 ms | share read | exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['documents']:,} | {r['bytes_per_posting']:.2f} | {r['open_ms']:.1f} | {r['k']} | {r['kernel']} | "
              f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['read_share']:.2f} | "
              f"{'yes' if r['exact'] else 'NO'} ({r['checked']}) |")
    sizes = sorted({r["documents"] for r in rows})
    if len(sizes) > 1:
        print("\n| k | kernel | " + " | ".join(f"growth {a:,} -> {b:,}" for a, b in zip(sizes, sizes[1:])) + " |")
        print("|---|---|" + "---|" * (len(sizes) - 1))
        for k in sorted({r["k"] for r in rows}):
            for kernel in ("exhaustive", "pruned"):
                p = {r["documents"]: r["p50_ms"] for r in rows if r["k"] == k and r["kernel"] == kernel}
                steps = " | ".join(f"{p[b] / p[a]:.1f}x" for a, b in zip(sizes, sizes[1:]))
                print(f"| {k} | {kernel} | {steps} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
