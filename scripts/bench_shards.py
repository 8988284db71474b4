#!/usr/bin/env python
"""Batch throughput of sharded search on this machine: one index against the same collection in N
shard indexes (``index --shard I/N``), searched as one locally (threads) and on a local Ray cluster
(one actor per shard), in one process on the same pre-encoded queries. Every run is checked to be
the one index's run, byte for byte.

    bash scripts/env.sh python scripts/bench_shards.py --index synthetic-100k --shards 2

The collection is one of ``bench_search.py``'s (built under --root on first use); the shards are
built beside it, from a copy of the collection cut into N part files. Queries: every SciFact query
(test and train), encoded with the default model.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import ensure_index  # noqa: E402

from splade_lucene.experiments.experiment import find_dataset  # noqa: E402
from splade_lucene.formats.collection import COLLECTION_METADATA_FILE, collection_files, read_queries  # noqa: E402
from splade_lucene.formats.trec import run_lines
from splade_lucene.indexing.build import build_index
from splade_lucene.search.encoders import QueryEncoder
from splade_lucene.search.searcher import Searcher
from splade_lucene.search.shards import ShardedSearcher


def reparted(collection: Path, out: Path, n: int) -> Path:
    """A copy of ``collection`` in ``n`` part files of consecutive records (a collection of one part
    cannot be sharded), with its ``collection.meta``; made once."""
    if out.is_dir():
        return out
    lines = [line for path in collection_files(collection) for line in open(path, encoding="utf-8") if line.strip()]
    tmp = out.with_name(out.name + ".writing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    size = -(-len(lines) // n)
    for i in range(n):
        (tmp / f"part-{i:05d}.jsonl").write_text("".join(lines[i * size:(i + 1) * size]), encoding="utf-8")
    shutil.copy(collection / COLLECTION_METADATA_FILE, tmp / COLLECTION_METADATA_FILE)
    tmp.rename(out)
    return out


def timed_runs(searcher, queries: dict, k: int, threads: int, repeats: int) -> tuple[float, str]:
    """(best qps over ``repeats`` batch calls, the run text)."""
    searcher.batch_search_terms(dict(list(queries.items())[:50]), k=k, threads=threads)  # warm-up
    best, text = 0.0, ""
    for _ in range(repeats):
        t = time.perf_counter()
        results = searcher.batch_search_terms(queries, k=k, threads=threads)
        best = max(best, len(queries) / (time.perf_counter() - t))
        text = "".join(run_lines(results))
    return best, text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default="synthetic-100k", help="a bench_search.py index name")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--ks", default="10,1000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--root", default="indexes/bench")
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    root = Path(args.root)
    cores = os.cpu_count() or 1
    folder = ensure_index(args.index, root, 13, cores)
    parts = reparted(folder / "collection", folder / f"shards-{args.shards}" / "collection", args.shards)
    shard_dirs = []
    for i in range(args.shards):
        out = folder / f"shards-{args.shards}" / f"shard-{i}"
        if not out.is_dir():
            build_index(parts, out, shard=f"{i}/{args.shards}", threads=cores, quiet=True)
        shard_dirs.append(out)
    scifact = ensure_index("scifact", root, 13, cores)
    texts = read_queries(find_dataset(None, "scifact") / "queries.jsonl")
    encoder = QueryEncoder.from_index(scifact / "index")
    queries = {q: e for (q, _), e in zip(texts, encoder.encode_batch([t for _, t in texts])) if e}
    print(f"{args.index}: {len(queries)} queries, {args.shards} shards, {cores} cores", file=sys.stderr)
    configs = [("one index", lambda: Searcher(folder / "index", encoder), cores),
               (f"{args.shards} shards, local", lambda: ShardedSearcher(shard_dirs, encoder),
                max(1, cores // args.shards))]
    if not args.no_ray:
        configs.append((f"{args.shards} shards, Ray", lambda: ShardedSearcher(shard_dirs, encoder, executor="ray"),
                        max(1, cores // args.shards)))
    print("\n| k | searcher | threads each | qps | / one index | same run |")
    print("|---|---|---|---|---|---|")
    for k in [int(k) for k in args.ks.split(",")]:
        reference = None
        for name, opener, threads in configs:
            with opener() as searcher:
                qps, text = timed_runs(searcher, queries, k, threads, args.repeats)
            if reference is None:
                reference = (qps, text)
            print(f"| {k} | {name} | {threads} | {qps:.0f} | {qps / reference[0]:.2f}x | "
                  f"{'yes' if text == reference[1] else 'NO'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
