#!/usr/bin/env python
"""ONNX backend against torch: query encoding latency and document encoding throughput.

One process, the same model (SPLADE-tiny unless --model), its ONNX export (written once under
--root), the same texts: the SciFact test queries one at a time (batch 1; p50 / p99 over R rounds
after a warm-up round), and the first N SciFact documents (docs/s, median of R runs), at 1 and 2
threads (torch.set_num_threads, onnxruntime's intra-op threads). Agreement: the share of equal
(term, weight) pairs of the quantized vectors (scale 100) and the largest difference.

    bash scripts/env.sh python scripts/bench_onnx.py --docs 256 --json runs/bench-onnx.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def per_query(encoder, texts, rounds):
    encoder.encode(texts[:20])
    lat = []
    for _ in range(rounds):
        for t in texts:
            t0 = time.perf_counter()
            encoder.encode([t])
            lat.append(time.perf_counter() - t0)
    lat.sort()
    return 1000 * statistics.median(lat), 1000 * lat[int(0.99 * (len(lat) - 1))]


def docs_per_second(encoder, docs, rounds):
    encoder.encode(docs[:8])
    runs = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        vectors = encoder.encode(docs)
        runs.append(len(docs) / (time.perf_counter() - t0))
    return statistics.median(runs), vectors


def agreement(a, b):
    from splade_lucene.core.quantize import quantize

    pairs = equal = worst = 0
    for x, y in zip(a, b):
        qa = dict(zip(*[z.tolist() for z in quantize(x.ids, x.weights, 100)]))
        qb = dict(zip(*[z.tolist() for z in quantize(y.ids, y.weights, 100)]))
        for t in set(qa) | set(qb):
            pairs += 1
            equal += qa.get(t) == qb.get(t)
            worst = max(worst, abs(qa.get(t, 0) - qb.get(t, 0)))
    return equal / pairs, worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="masked-LM folder (default: SPLADE-tiny)")
    ap.add_argument("--docs", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8, help="documents per batch, both backends")
    ap.add_argument("--root", default="runs/bench-onnx")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from splade_lucene.encoding.model import SpladeEncoder
    from splade_lucene.encoding.onnx import export_onnx
    from splade_lucene.experiments.experiment import find_dataset, judged_dataset
    from splade_lucene.formats.collection import read_corpus

    folder = Path(args.root) / "onnx"
    if not (folder / "model.onnx").is_file():
        export_onnx(args.model, folder, overwrite=True)
    dataset = find_dataset(None, "scifact")
    _, queries, _ = judged_dataset(dataset)
    texts = [t for _, t in queries]
    docs = [d.text for _, d in zip(range(args.docs), read_corpus(dataset / "corpus.jsonl"))]
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        enc = {"torch": SpladeEncoder(args.model, batch_size=args.batch_size, backend="torch"),
               "onnx": SpladeEncoder(str(folder), batch_size=args.batch_size, backend="onnx", threads=threads)}
        out = {}
        for name, e in enc.items():
            p50, p99 = per_query(e, texts, args.rounds)
            rate, vectors = docs_per_second(e, docs, args.rounds)
            out[name] = {"query_p50_ms": p50, "query_p99_ms": p99, "docs_per_s": rate, "vectors": vectors}
            print(f"threads {threads} {name:5s}: query p50 {p50:.2f} ms  p99 {p99:.2f} ms   documents {rate:.1f}/s",
                  flush=True)
        share, worst = agreement(out["torch"]["vectors"], out["onnx"]["vectors"])
        qshare, qworst = agreement(enc["torch"].encode(texts), enc["onnx"].encode(texts))
        t, o = out["torch"], out["onnx"]
        print(f"threads {threads}: onnx/torch query p50 x{t['query_p50_ms'] / o['query_p50_ms']:.2f} "
              f"faster, documents x{o['docs_per_s'] / t['docs_per_s']:.2f}; equal pairs: queries "
              f"{qshare:.5f} (max diff {qworst}), documents {share:.5f} (max diff {worst})", flush=True)
        rows.append({"threads": threads,
                     **{f"{n}_{k}": v for n, r in out.items() for k, v in r.items() if k != "vectors"},
                     "query_equal_pairs": qshare, "doc_equal_pairs": share, "max_diff": max(worst, qworst)})
    if args.json:
        Path(args.json).write_text(json.dumps({"docs": args.docs, "batch_size": args.batch_size, "rows": rows},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
