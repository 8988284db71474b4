#!/usr/bin/env python
"""An index exported to Milvus Lite (`splade-lucene export --to milvus`) against the index itself:
every query's top 10 from Milvus (``QueryEncoder.encode_ids``, inner product) compared with
``Searcher``'s, ties aside (the same scores, the same documents above the 10th score), and both
timed one query at a time.

    bash scripts/env.sh python scripts/check_milvus.py --index indexes/scifact \\
        --queries ../shared/datasets/scifact/queries.jsonl --uri runs/scifact.db
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymilvus import MilvusClient  # noqa: E402

from splade_lucene.formats.collection import read_queries  # noqa: E402
from splade_lucene.indexing.export import export_milvus  # noqa: E402
from splade_lucene.search.searcher import Searcher  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--uri", required=True, help="the Milvus Lite file to write")
    ap.add_argument("--collection", default="docs")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    r = export_milvus(args.index, args.uri, args.collection, overwrite=True)
    print(f"exported {r['documents']} documents in {r['seconds']:.1f} s")
    client = MilvusClient(args.uri)
    same, ours_t, theirs_t = 0, [], []
    queries = read_queries(args.queries)
    with Searcher(args.index) as searcher:
        for qid, text in queries:
            terms = searcher.query_encoder.encode(text)
            t = time.perf_counter()
            ours = searcher.ranked_terms(terms, args.k)
            ours_t.append(time.perf_counter() - t)
            sparse = searcher.query_encoder.encode_ids(text)
            t = time.perf_counter()
            found = client.search(args.collection, [sparse], anns_field="vector", limit=args.k,
                                  search_params={"metric_type": "IP"})[0]
            theirs_t.append(time.perf_counter() - t)
            theirs = [(h["id"], h["distance"]) for h in found]
            last = min((s for _, s in ours), default=0)
            ok = sorted(s for _, s in ours) == sorted(s for _, s in theirs) and \
                {d for d, s in ours if s > last} == {d for d, s in theirs if s > last}
            same += ok
    client.close()
    print(f"{same} of {len(queries)} queries: Milvus's top {args.k} equals the index's, ties aside")
    print(f"p50 per query: index {statistics.median(ours_t) * 1000:.3f} ms, Milvus Lite "
          f"{statistics.median(theirs_t) * 1000:.3f} ms")


if __name__ == "__main__":
    main()
