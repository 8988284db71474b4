#!/usr/bin/env python
"""Where document encoding spends its time: the default encoder's stages, timed on SciFact documents.

Stages: tokenization, the transformer body, the head's transform, the vocabulary projection with its
max (the fused block loop), and the conversion to sparse vectors. Also prints, for comparison, what
the plain formula's full-logits projection costs on the same batches.

    bash scripts/env.sh python scripts/profile_encode.py --docs 500 --max-length 512
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import torch

from splade_lucene.encoding.model import SpladeEncoder
from splade_lucene.encoding.pooling import dense_to_sparse
from splade_lucene.experiments.experiment import find_dataset
from splade_lucene.formats.collection import read_corpus


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=500)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    texts = [d.text for _, d in zip(range(args.docs), read_corpus(find_dataset(None, "scifact") / "corpus.jsonl"))]
    texts.sort(key=len)  # the encoder batches by length within a window; do the same here
    enc = SpladeEncoder(args.model, max_length=args.max_length)
    transform, blocks, bias = enc.runtime._fused
    decoder = enc.model.get_output_embeddings()
    spent: dict[str, float] = defaultdict(float)

    def clock(name, fn, *a, **kw):
        start = time.perf_counter()
        out = fn(*a, **kw)
        spent[name] += time.perf_counter() - start
        return out

    enc.encode(texts[:64])  # warm-up
    rows = 0
    with torch.inference_mode():
        for start in range(0, len(texts), enc.batch_size):
            chunk = texts[start:start + enc.batch_size]
            batch = clock("tokenize", enc.tokenize, chunk)
            mask = batch["attention_mask"].bool()
            hidden = clock("transformer body", lambda: enc.runtime._body(input_ids=batch["input_ids"],
                                                                 attention_mask=batch["attention_mask"])[0])
            hidden = clock("head transform", transform, hidden)
            real = hidden[mask]
            rows += real.shape[0]
            pooled = clock("projection + max (fused)", enc.runtime._fused_max_pool, real, mask.sum(dim=1).tolist())
            clock("to sparse vectors", dense_to_sparse, pooled.numpy(), enc.runtime.special_ids)
            # the plain formula's projection: full logits for every padded position, then the max
            clock("(plain: full logits + max)", lambda: torch.log1p(torch.relu(decoder(hidden))).amax(dim=1))
    ours = sum(v for k, v in spent.items() if not k.startswith("("))
    print(f"\n{len(texts)} SciFact documents, max length {args.max_length}, batch {enc.batch_size}, "
          f"{torch.get_num_threads()} threads, {rows} real token positions\n")
    print("| stage | seconds | share of the encoder |\n|---|---|---|")
    for name, seconds in spent.items():
        share = f"{100 * seconds / ours:.1f}%" if not name.startswith("(") else "-"
        print(f"| {name} | {seconds:.2f} | {share} |")
    print(f"| total (ours) | {ours:.2f} | 100% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
