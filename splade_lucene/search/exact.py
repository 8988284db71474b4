"""Brute-force retrieval: the reference the impact index is checked against."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..formats.trec import DEFAULT_K, Hit

# exact_search: query rows scored at once, so that a block of dense scores stays near 200 MB.
_EXACT_BLOCK_CELLS = 25_000_000



def vectors_matrix(vectors: Sequence, vocab_size: int):
    """Sparse vectors as a scipy CSR matrix, a row per vector: each a :class:`SparseVector` or an
    ``(ids, weights)`` pair (float weights, or integer ones from :func:`splade_lucene.core.quantize.quantize`)."""
    import scipy.sparse as sp

    pairs = [(v.ids, v.weights) if hasattr(v, "ids") else v for v in vectors]
    lengths = np.fromiter((len(ids) for ids, _ in pairs), dtype=np.int64, count=len(pairs))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.concatenate([np.asarray(i, dtype=np.int64) for i, _ in pairs]) if pairs else np.zeros(0, np.int64)
    values = np.concatenate([np.asarray(w, dtype=np.float64) for _, w in pairs]) if pairs else np.zeros(0)
    return sp.csr_matrix((values, ids, indptr), shape=(len(pairs), vocab_size))



def exact_search(queries, docs, qids: Sequence[str], docids: Sequence[str], k: int = DEFAULT_K) -> dict[str, list[Hit]]:
    """Brute-force retrieval: every document scored by its exact dot product with each query (float64).

    ``queries``, ``docs``: CSR matrices from :func:`vectors_matrix` over the same vocabulary. Returns
    the top ``k`` hits with a positive score per query, by score descending, ties by doc id
    descending (trec_eval's order). The reference the impact index is checked against.
    """
    block = max(1, _EXACT_BLOCK_CELLS // max(1, docs.shape[0]))
    docids_arr = np.asarray(docids, dtype=object)
    results: dict[str, list[Hit]] = {}
    for start in range(0, queries.shape[0], block):
        # (docs x vocab, sparse) @ (vocab x queries, dense): one pass over the documents per block
        scores = np.asarray(docs @ queries[start:start + block].T.toarray()).T
        for row, qid in zip(scores, qids[start:start + block]):
            positive = np.flatnonzero(row > 0)
            if len(positive) > k:
                # keep every document tied with the k-th score, then order exactly
                kth = np.partition(row[positive], len(positive) - k)[len(positive) - k]
                positive = positive[row[positive] >= kth]
            hits = sorted(zip(docids_arr[positive].tolist(), row[positive].tolist()),
                          key=lambda h: (h[1], h[0]), reverse=True)[:k]
            results[qid] = [Hit(d, sc) for d, sc in hits]
    return results
