"""Distillation from the hybrid (``--teacher hybrid``): the teacher's scores of a step's batch.

The teacher is the hybrid-linear condition of the experiments, on the batch: for each query, BM25
(Lucene's English analyzer, k1 0.9, b 0.4, with the corpus's document frequencies and lengths) and
the base model's dot product, each min-max normalised over the query's batch documents, then
``alpha * bm25 + (1 - alpha) * base``. The student learns the teacher's distribution over the batch
(a KL term beside the cross-entropy); documents judged for a query other than its target are left
out of both, as they are of the cross-entropy.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from ..indexing.query_table import idf_weights
from ..search.bm25 import BM25_B, BM25_K1, analyze


class BM25Stats:
    """What BM25 needs of a corpus: each term's idf (Lucene's, :func:`idf_weights`), the document
    count, the mean length."""

    def __init__(self, documents: Sequence[Sequence[str]]):
        self.n = len(documents)
        if not self.n:
            raise ValueError("BM25 statistics of an empty corpus")
        df: Counter = Counter()
        for terms in documents:
            df.update(set(terms))
        self.idf = dict(zip(df, idf_weights(np.fromiter(df.values(), dtype=np.int64, count=len(df)),
                                            self.n).tolist()))
        self.avgdl = sum(len(t) for t in documents) / self.n


_FREE = 24  # SmallFloat: lengths below 24 are kept exactly in the norm byte


def lucene_length(n: int) -> int:
    """A document length as Lucene's BM25 sees it: ``SmallFloat.byte4ToInt(intToByte4(n))``, four
    significant bits above 24."""
    if n < _FREE:
        return n
    i = n - _FREE
    shift = max(0, i.bit_length() - 4)
    return _FREE + (i >> shift << shift)


def bm25_score(query: Sequence[str], document: Sequence[str] | Counter, stats: BM25Stats, *,
               k1: float = BM25_K1, b: float = BM25_B) -> float:
    """Lucene's BM25 of analyzed terms (a repeated query term counts each time, as Lucene's boolean
    query of its clauses does): sum of idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)), with the
    document length ``dl`` as Lucene's one-byte norm keeps it (:func:`lucene_length`). ``document``:
    its terms, or their counts (a Counter, kept where a document is scored against many queries)."""
    tf = document if isinstance(document, Counter) else Counter(document)
    norm = k1 * (1 - b + b * lucene_length(tf.total()) / stats.avgdl)
    return sum(stats.idf[t] * tf[t] / (tf[t] + norm) for t in query if tf.get(t))


def hybrid_logits(bm25: np.ndarray, base: np.ndarray, left_out: np.ndarray, *, alpha: float,
                  temperature: float) -> np.ndarray:
    """(queries, documents) teacher logits: each score min-max normalised over a row's documents
    not ``left_out`` (a row of equal scores normalises to 0), ``(alpha * bm25 + (1 - alpha) * base)
    / temperature``; left-out entries are -inf."""
    def normalised(x: np.ndarray) -> np.ndarray:
        x = np.where(left_out, np.nan, x.astype(np.float64))
        low, high = np.nanmin(x, axis=1, keepdims=True), np.nanmax(x, axis=1, keepdims=True)
        span = np.where(high > low, high - low, 1.0)
        return (x - low) / span

    mixed = (alpha * normalised(bm25) + (1 - alpha) * normalised(base)) / temperature
    return np.where(left_out, -np.inf, mixed)


class HybridTeacher:
    """The teacher's logits for a batch of texts; the base model's vectors and the texts' analyzed
    terms are computed once per text and kept."""

    def __init__(self, base_model, corpus: dict[str, str], settings):
        self.model, self.s = base_model, settings
        texts = list(dict.fromkeys(corpus.values()))
        self._terms: dict[str, list[str]] = dict(zip(texts, analyze(texts)))  # by text, the corpus's first
        self.stats = BM25Stats([self._terms[t] for t in corpus.values()])
        self._counts: dict[str, Counter] = {}  # a document's term counts, by text, once it is scored
        self._vectors: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}  # by (max length, text)

    def _prepare(self, texts: list[str], max_length: int) -> None:
        import torch

        new = list(dict.fromkeys(t for t in texts if (max_length, t) not in self._vectors))
        if not new:
            return
        unseen = [t for t in new if t not in self._terms]
        for text, terms in zip(unseen, analyze(unseen)):
            self._terms[text] = terms
        was_training = self.model.model.training
        self.model.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(new), 32):
                    chunk = new[start:start + 32]
                    dense = self.model.vectors(chunk, max_length).float().cpu().numpy()
                    for text, row in zip(chunk, dense):
                        ids = np.flatnonzero(row)
                        self._vectors[max_length, text] = (ids, row[ids])
        finally:
            self.model.model.train(was_training)

    def _dot(self, q: tuple[int, str], d: tuple[int, str]) -> float:
        (qi, qw), (di, dw) = self._vectors[q], self._vectors[d]
        _, a, b = np.intersect1d(qi, di, assume_unique=True, return_indices=True)
        return float(np.dot(qw[a], dw[b]))

    def logits(self, queries: list[str], documents: list[str], left_out: np.ndarray) -> np.ndarray:
        """(len(queries), len(documents)) logits of the teacher (see :func:`hybrid_logits`)."""
        s = self.s
        q_len = s.query_max_length or s.max_length
        self._prepare(queries, q_len)
        self._prepare(documents, s.max_length)
        for d in documents:
            if d not in self._counts:
                self._counts[d] = Counter(self._terms[d])
        bm25 = np.array([[bm25_score(self._terms[q], self._counts[d], self.stats) for d in documents]
                         for q in queries])
        base = np.array([[self._dot((q_len, q), (s.max_length, d)) for d in documents] for q in queries])
        return hybrid_logits(bm25, base, left_out, alpha=s.teacher_alpha, temperature=s.teacher_temperature)
