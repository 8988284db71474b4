#!/usr/bin/env python
"""Synthetic impact collections drawn from a real one, reproducibly from a seed.

Each synthetic document takes its number of terms from the source collection's documents (an
empirical draw), its terms from the source's term distribution (a term is drawn with probability
proportional to its document frequency, with replacement: 15% more terms are drawn and the first
distinct ones kept), and each term's integer weight from that term's own observed weights. Queries
stay real: the point is an index of realistic posting lists at 100k or 1M documents. The source's
``collection.meta`` (model, scales) is carried over, with the seed and source recorded.

    bash scripts/env.sh python scripts/synthetic_collection.py SOURCE_COLLECTION OUTPUT --docs 1000000 --seed 13
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from splade_lucene.formats.collection import COLLECTION_METADATA_FILE, PART_SIZE, collection_files
from splade_lucene.formats.metadata import read_collection_metadata

CHUNK = 20_000
OVERDRAW = 1.15


def read_vectors(collection: Path) -> list[dict[str, int]]:
    vectors = []
    for path in collection_files(collection):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    vectors.append(json.loads(line)["vector"])
    if not vectors:
        raise SystemExit(f"{collection} holds no vector records")
    return vectors


class TermModel:
    """The source's term and weight distributions, ready for vectorised draws."""

    def __init__(self, vectors: list[dict[str, int]]):
        self.vocab = sorted({t for v in vectors for t in v})
        index = {t: i for i, t in enumerate(self.vocab)}
        self.lengths = np.array([len(v) for v in vectors], dtype=np.int64)
        term_ids = np.array([index[t] for v in vectors for t in v], dtype=np.int64)
        weights = np.array([w for v in vectors for w in v.values()], dtype=np.int64)
        order = np.argsort(term_ids, kind="stable")
        self.weights = weights[order]  # grouped by term
        self.df = np.bincount(term_ids, minlength=len(self.vocab))
        self.offsets = np.concatenate([[0], np.cumsum(self.df)[:-1]])
        self.cdf = np.cumsum(self.df / self.df.sum())
        self.cdf[-1] = 1.0

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` documents as flat arrays: terms per document, term ids (indexes into ``vocab``) and
        weights. A document draws 15% more terms than its length, with replacement, and keeps its
        first ``length`` distinct ones (with the weight of their first draw)."""
        lengths = rng.choice(self.lengths, size=n)
        drawn = np.ceil(lengths * OVERDRAW).astype(np.int64)
        terms = np.searchsorted(self.cdf, rng.random(int(drawn.sum())), side="right")
        picks = self.offsets[terms] + (rng.random(len(terms)) * self.df[terms]).astype(np.int64)
        weights = self.weights[picks]
        doc = np.repeat(np.arange(n), drawn)
        position = np.arange(len(terms))
        # first draw of each (document, term), back in draw order, then the first `length` of each document
        order = np.lexsort((position, terms, doc))
        first = np.ones(len(order), dtype=bool)
        first[1:] = (doc[order][1:] != doc[order][:-1]) | (terms[order][1:] != terms[order][:-1])
        kept = np.sort(order[first])
        starts = np.searchsorted(doc[kept], np.arange(n))
        rank = np.arange(len(kept)) - starts[doc[kept]]
        kept = kept[rank < lengths[doc[kept]]]
        return np.bincount(doc[kept], minlength=n), terms[kept], weights[kept]


def synthetic_chunks(source: str | Path, docs: int, seed: int):
    """(vocabulary, then per chunk: lengths, term ids, weights), the same for the same source and seed."""
    model = TermModel(read_vectors(Path(source)))
    rng = np.random.default_rng(seed)
    yield model.vocab
    for start in range(0, docs, CHUNK):
        yield model.draw(rng, min(CHUNK, docs - start))


def generate(source: str | Path, output: str | Path, *, docs: int, seed: int, overwrite: bool = False,
             arrays: str | Path | None = None) -> Path:
    """Write a synthetic collection of ``docs`` documents (ids ``syn0000000``...) to ``output``,
    atomically (a temporary folder renamed into place); ``arrays`` also saves the vectors as numpy
    arrays (``vocab``, ``lengths``, ``terms``, ``weights``), for a brute-force scorer."""
    source, output = Path(source), Path(output)
    if output.exists():
        if not overwrite:
            raise FileExistsError(f"{output} already exists")
        shutil.rmtree(output)
    tmp = output.parent / f".{output.name}.writing"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    width = max(7, len(str(docs - 1)))
    chunks = synthetic_chunks(source, docs, seed)
    vocab = np.array(next(chunks), dtype=object)
    saved: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    i = 0
    fh = None
    for lengths, terms, weights in chunks:
        if arrays is not None:
            saved.append((lengths.astype(np.int32), terms.astype(np.int32), weights.astype(np.int32)))
        names, values = vocab[terms].tolist(), weights.tolist()
        start = 0
        for length in lengths.tolist():
            if i % PART_SIZE == 0:
                if fh is not None:
                    fh.close()
                fh = open(tmp / f"part-{i // PART_SIZE:05d}.jsonl", "w", encoding="utf-8")
            vector = json.dumps(dict(zip(names[start:start + length], values[start:start + length])))
            fh.write(f'{{"id": "syn{i:0{width}d}", "contents": "", "vector": {vector}}}\n')
            start += length
            i += 1
    if fh is not None:
        fh.close()
    meta = read_collection_metadata(source)
    meta.update({"documents": docs, "empty_documents": 0, "synthetic": {
        "source": source.name, "seed": seed, "overdraw": OVERDRAW}})
    meta.pop("corpus", None)
    (tmp / COLLECTION_METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if arrays is not None:
        np.savez(arrays, vocab=np.array(vocab.tolist()), lengths=np.concatenate([c[0] for c in saved]),
                 terms=np.concatenate([c[1] for c in saved]), weights=np.concatenate([c[2] for c in saved]))
    tmp.rename(output)
    return output


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="a vector collection folder (e.g. SciFact encoded by splade-lucene)")
    ap.add_argument("output")
    ap.add_argument("--docs", type=int, required=True)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    start = time.perf_counter()
    out = generate(args.source, args.output, docs=args.docs, seed=args.seed, overwrite=args.overwrite)
    print(f"{args.docs} documents in {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
