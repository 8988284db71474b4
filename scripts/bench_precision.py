#!/usr/bin/env python
"""Reduced precision against fp32: speed, agreement of the integer vectors and retrieval quality.

Encodes a BEIR dataset (default: SciFact, every document and judged test query) with the default
model in fp32 and in bf16 on one device, quantizes both at the default scale, retrieves the top 1000
for each query by exact integer dot products (the scores the impact index gives; see
``splade_lucene.search.searcher.exact_search``) and evaluates with BEIR's remove-query convention. Prints the
documents per second, the share of identical (term, weight) pairs between bf16 and fp32 and their
largest difference, and the metrics of each.

    bash scripts/env.sh python scripts/bench_precision.py [--device cuda] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import splade_lucene  # noqa: F401  (Java set-up, harmless where no Java is needed)
from splade_lucene.core.quantize import DEFAULT_SCALE, quantize
from splade_lucene.encoding.model import DEFAULT_MAX_LENGTH, SpladeEncoder
from splade_lucene.evaluation.metrics import METRICS, evaluate
from splade_lucene.experiments.experiment import find_dataset, judged_dataset
from splade_lucene.search.exact import exact_search, vectors_matrix


def agreement(a, b) -> tuple[float, int]:
    """Share of identical (term, integer weight) pairs over the union of both vectors' terms, and the
    largest difference."""
    same = total = worst = 0
    for (ia, wa), (ib, wb) in zip(a, b):
        x, y = dict(zip(ia.tolist(), wa.tolist())), dict(zip(ib.tolist(), wb.tolist()))
        for term in x.keys() | y.keys():
            diff = abs(x.get(term, 0) - y.get(term, 0))
            total += 1
            same += diff == 0
            worst = max(worst, diff)
    return same / max(total, 1), worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=None, help="BEIR folder (default: scifact from the data root)")
    ap.add_argument("--model", default=None, help="model folder (default: splade-tiny)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH)
    ap.add_argument("--scale", type=float, default=DEFAULT_SCALE)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    folder = find_dataset(args.dataset)
    docs, queries, qrels = judged_dataset(folder)
    docids, qids = [d.id for d in docs], [q for q, _ in queries]

    rows, quantized = [], {}
    for dtype in ("fp32", "bf16"):
        enc = SpladeEncoder(args.model, max_length=args.max_length, device=args.device, dtype=dtype)
        enc.encode([d.text for d in docs[:64]])  # warm-up
        start = time.perf_counter()
        doc_vectors = enc.encode([d.text for d in docs])
        seconds = time.perf_counter() - start
        query_vectors = enc.encode([t for _, t in queries])
        dq = [quantize(v.ids, v.weights, args.scale) for v in doc_vectors]
        qq = [quantize(v.ids, v.weights, args.scale) for v in query_vectors]
        quantized[dtype] = dq
        hits = exact_search(vectors_matrix(qq, enc.vocab_size), vectors_matrix(dq, enc.vocab_size), qids, docids)
        run = {q: [(h.docid, h.score) for h in hs] for q, hs in hits.items()}
        metrics = evaluate(qrels, run, remove_query=True).metrics
        rows.append({"dataset": folder.name, "device": args.device, "dtype": dtype, "documents": len(docs),
                     "docs_per_s": len(docs) / seconds, **metrics})
        print(f"{dtype}: {len(docs)} documents in {seconds:.1f} s, nDCG@10 {metrics['nDCG@10']:.4f}",
              file=sys.stderr, flush=True)
    ident, worst = agreement(quantized["bf16"], quantized["fp32"])
    rows[1]["identical_pairs_vs_fp32"], rows[1]["max_weight_diff_vs_fp32"] = ident, worst

    print(f"\n{folder.name}: {len(docs)} documents, {len(qids)} judged queries, max length {args.max_length}, "
          f"scale {args.scale:g}, device {args.device}; exact integer dot products, top 1000\n")
    print("| dtype | docs/s | " + " | ".join(METRICS) + " | identical pairs vs fp32 | largest diff |")
    print("|---|---|" + "---|" * len(METRICS) + "---|---|")
    for r in rows:
        same = f"{r['identical_pairs_vs_fp32'] * 100:.3f}%" if "identical_pairs_vs_fp32" in r else "-"
        diff = r.get("max_weight_diff_vs_fp32", "-")
        print(f"| {r['dtype']} | {r['docs_per_s']:.1f} | " + " | ".join(f"{r[m]:.4f}" for m in METRICS)
              + f" | {same} | {diff} |")
    print(f"\nnDCG@10 bf16 - fp32: {rows[1]['nDCG@10'] - rows[0]['nDCG@10']:+.4f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
