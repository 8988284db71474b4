#!/usr/bin/env python
"""Long documents: how many documents of each shipped collection pass 256 and 512 tokens, and what
encoding them in overlapping windows (``--stride``) instead of truncating does to nDCG@10 and to
encoding time. Each (collection, max length, mode) is a full experiment (encode, index, search,
evaluate; BEIR convention).

    bash scripts/env.sh python scripts/long_documents.py --datasets scifact,cranfield,cacm --max-lengths 256,512
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import splade_lucene  # noqa: F401  (Java set-up)
from splade_lucene.encoding.model import EncoderSettings, SpladeEncoder
from splade_lucene.experiments.experiment import dataset_files, find_dataset, run_experiment
from splade_lucene.formats.collection import read_corpus


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="scifact,cranfield,cacm")
    ap.add_argument("--max-lengths", default="256,512")
    ap.add_argument("--output", default="runs/long-documents")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    tokenizer = SpladeEncoder().tokenizer
    lengths = [int(x) for x in args.max_lengths.split(",")]
    rows = []
    for name in args.datasets.split(","):
        folder = find_dataset(None, name)
        corpus, _, _ = dataset_files(folder)
        tokens = [len(tokenizer(d.text, verbose=False)["input_ids"]) for d in read_corpus(corpus)]
        over = {n: sum(1 for t in tokens if t > n) for n in lengths}
        print(f"{name}: {len(tokens)} documents; " + ", ".join(f"{over[n]} over {n} tokens" for n in lengths),
              file=sys.stderr, flush=True)
        for n in lengths:
            if not over[n]:
                rows.append({"dataset": name, "max_length": n, "documents": len(tokens), "over": 0})
                continue
            row = {"dataset": name, "max_length": n, "documents": len(tokens), "over": over[n]}
            for mode, stride in (("truncate", None), ("windows", n // 2)):
                r = run_experiment(folder, Path(args.output) / f"{name}-{n}-{mode}",
                                   encoder=EncoderSettings(max_length=n, stride=stride), overwrite=True,
                                   progress=False)
                row[f"{mode}_ndcg10"] = r.metrics["nDCG@10"]
                row[f"{mode}_encode_s"] = r.seconds["encode"]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print("| collection | max length | documents over it | nDCG@10 truncated | nDCG@10 windows | change | "
          "encode s truncated | encode s windows |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if not r["over"]:
            print(f"| {r['dataset']} | {r['max_length']} | 0 of {r['documents']} | | | | | |")
            continue
        print(f"| {r['dataset']} | {r['max_length']} | {r['over']} of {r['documents']} | {r['truncate_ndcg10']:.4f} | "
              f"{r['windows_ndcg10']:.4f} | {r['windows_ndcg10'] - r['truncate_ndcg10']:+.4f} | "
              f"{r['truncate_encode_s']:.0f} | {r['windows_encode_s']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
