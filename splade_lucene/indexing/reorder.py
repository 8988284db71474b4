"""Document reordering by recursive graph bisection (BP), for block-max search.

Dhulipala et al. (KDD 2016), as PISA and BMP run it (Mackenzie et al., ECIR 2019): the documents are
split in two halves, then documents are swapped between the halves while a swap lowers the estimated
cost of coding both halves' postings (a term of degree ``d`` in a half of ``n`` documents costs about
``d log2(n / (d + 1))`` bits); each half is split again, down to partitions of :data:`MIN_PARTITION`
documents or :data:`MAX_DEPTH` levels. Documents that share terms end up next to each other, which
makes the blocks of :mod:`splade_lucene.indexing.blockmax` hold similar documents: their per-term maxima are
tight, and a query touches few blocks.

Pure functions over a forward index (``doc_offsets`` into ``doc_terms``, each document's term numbers
in any order): no model, no JVM. Deterministic: no randomness, ties by position. ``terms_per_doc``
restricts the graph to each document's strongest terms (fewer postings to move around: faster, at
some cost in clustering).
"""

from __future__ import annotations

import numba
import numpy as np

ITERATIONS = 20
MIN_PARTITION = 16
MAX_DEPTH = 40


@numba.njit(cache=True, nogil=True)
def _partition_terms(doc_offsets, doc_terms, docs, lo, mid, hi, deg1, deg2, seen, terms_out):
    """Degrees of every term in the left (docs[lo:mid]) and right (docs[mid:hi]) halves; returns how
    many distinct terms, listed in terms_out (seen[t] marks them; the caller clears)."""
    n_terms = 0
    for x in range(lo, hi):
        d = docs[x]
        for p in range(doc_offsets[d], doc_offsets[d + 1]):
            t = doc_terms[p]
            if not seen[t]:
                seen[t] = True
                terms_out[n_terms] = t
                n_terms += 1
            if x < mid:
                deg1[t] += 1
            else:
                deg2[t] += 1
    return n_terms


@numba.njit(cache=True, nogil=True, inline="always")
def _cost(deg, log_n, log_table):
    return deg * (log_n - log_table[deg + 1])


@numba.njit(cache=True, nogil=True)
def _bisect_one(doc_offsets, doc_terms, docs, lo, hi, iterations, deg1, deg2, seen, terms_buf, gain_t1, gain_t2,
                log_table):
    """Split docs[lo:hi] into two halves of lowest estimated cost (in place)."""
    mid = lo + (hi - lo) // 2
    n_terms = _partition_terms(doc_offsets, doc_terms, docs, lo, mid, hi, deg1, deg2, seen, terms_buf)
    log1 = log_table[mid - lo]
    log2 = log_table[hi - mid]
    gains = np.empty(hi - lo, dtype=np.float64)
    for _ in range(iterations):
        # each term's gain for a document moving left -> right (gain_t1) and right -> left (gain_t2)
        for j in range(n_terms):
            t = terms_buf[j]
            a = deg1[t]
            b = deg2[t]
            before = _cost(a, log1, log_table) + _cost(b, log2, log_table)
            gain_t1[t] = before - (_cost(a - 1, log1, log_table) + _cost(b + 1, log2, log_table)) if a > 0 else 0.0
            gain_t2[t] = before - (_cost(a + 1, log1, log_table) + _cost(b - 1, log2, log_table)) if b > 0 else 0.0
        for x in range(lo, hi):
            d = docs[x]
            g = 0.0
            if x < mid:
                for p in range(doc_offsets[d], doc_offsets[d + 1]):
                    g += gain_t1[doc_terms[p]]
            else:
                for p in range(doc_offsets[d], doc_offsets[d + 1]):
                    g += gain_t2[doc_terms[p]]
            gains[x - lo] = g
        left = np.argsort(-gains[:mid - lo], kind="mergesort")
        right = np.argsort(-gains[mid - lo:], kind="mergesort")
        swaps = 0
        left_docs = docs[lo:mid].copy()
        right_docs = docs[mid:hi].copy()
        for i in range(min(len(left), len(right))):
            if gains[left[i]] + gains[mid - lo + right[i]] <= 0:
                break
            dl = left_docs[left[i]]
            dr = right_docs[right[i]]
            docs[lo + left[i]] = dr
            docs[mid + right[i]] = dl
            for p in range(doc_offsets[dl], doc_offsets[dl + 1]):
                deg1[doc_terms[p]] -= 1
                deg2[doc_terms[p]] += 1
            for p in range(doc_offsets[dr], doc_offsets[dr + 1]):
                deg1[doc_terms[p]] += 1
                deg2[doc_terms[p]] -= 1
            swaps += 1
        if swaps == 0:
            break
    for j in range(n_terms):
        t = terms_buf[j]
        deg1[t] = 0
        deg2[t] = 0
        seen[t] = False
    # each half in its original order (ties by position: the result does not depend on the sort)
    docs[lo:mid] = np.sort(docs[lo:mid])
    docs[mid:hi] = np.sort(docs[mid:hi])
    return mid


@numba.njit(cache=True, nogil=True)
def _bisect(doc_offsets, doc_terms, n_vocab, min_partition, max_depth, iterations):
    n_docs = len(doc_offsets) - 1
    docs = np.arange(n_docs).astype(np.int32)
    deg1 = np.zeros(n_vocab, dtype=np.int64)
    deg2 = np.zeros(n_vocab, dtype=np.int64)
    seen = np.zeros(n_vocab, dtype=np.bool_)
    terms_buf = np.empty(n_vocab, dtype=np.int64)
    gain_t1 = np.zeros(n_vocab, dtype=np.float64)
    gain_t2 = np.zeros(n_vocab, dtype=np.float64)
    log_table = np.zeros(n_docs + 2, dtype=np.float64)
    for i in range(1, n_docs + 2):
        log_table[i] = np.log2(i)
    # depth-first, with an explicit stack of (lo, hi, depth)
    stack = [(0, n_docs, 0)]
    while len(stack) > 0:
        lo, hi, depth = stack.pop()
        if hi - lo <= min_partition or depth >= max_depth:
            continue
        mid = _bisect_one(doc_offsets, doc_terms, docs, lo, hi, iterations, deg1, deg2, seen, terms_buf, gain_t1,
                          gain_t2, log_table)
        stack.append((mid, hi, depth + 1))
        stack.append((lo, mid, depth + 1))
    return docs


@numba.njit(cache=True, nogil=True)
def _strongest(doc_offsets, doc_terms, doc_impacts, keep):
    """Each document's ``keep`` highest-impact terms (ties by term number): a smaller forward index."""
    n_docs = len(doc_offsets) - 1
    sizes = np.empty(n_docs, dtype=np.int64)
    for d in range(n_docs):
        sizes[d] = min(keep, doc_offsets[d + 1] - doc_offsets[d])
    out_offsets = np.zeros(n_docs + 1, dtype=np.int64)
    out_offsets[1:] = np.cumsum(sizes)
    out_terms = np.empty(out_offsets[-1], dtype=doc_terms.dtype)
    for d in range(n_docs):
        lo, hi = doc_offsets[d], doc_offsets[d + 1]
        order = np.argsort(-doc_impacts[lo:hi].astype(np.int64), kind="mergesort")[:sizes[d]]
        out_terms[out_offsets[d]:out_offsets[d + 1]] = np.sort(doc_terms[lo:hi][order])
    return out_offsets, out_terms


def bisection_order(doc_offsets: np.ndarray, doc_terms: np.ndarray, n_terms: int, *,
                    doc_impacts: np.ndarray | None = None, terms_per_doc: int | None = None,
                    min_partition: int = MIN_PARTITION, max_depth: int = MAX_DEPTH,
                    iterations: int = ITERATIONS) -> np.ndarray:
    """The documents (0..n-1) in BP order: ``order[i]`` is the document placed i-th.

    ``doc_offsets`` (n + 1) into ``doc_terms`` (term numbers below ``n_terms``); ``terms_per_doc``
    keeps each document's strongest terms only (by ``doc_impacts``, aligned with ``doc_terms``)."""
    doc_offsets = np.ascontiguousarray(doc_offsets, dtype=np.int64)
    doc_terms = np.ascontiguousarray(doc_terms)
    if terms_per_doc is not None:
        if doc_impacts is None:
            raise ValueError("terms_per_doc needs doc_impacts")
        if terms_per_doc < 1:
            raise ValueError(f"terms_per_doc must be at least 1, not {terms_per_doc}")
        doc_offsets, doc_terms = _strongest(doc_offsets, doc_terms, np.ascontiguousarray(doc_impacts),
                                            int(terms_per_doc))
    if min_partition < 2:
        raise ValueError(f"min_partition must be at least 2, not {min_partition}")
    if len(doc_offsets) < 2:
        return np.zeros(0, dtype=np.int32)
    return _bisect(doc_offsets, doc_terms, int(n_terms), int(min_partition), int(max_depth), int(iterations))


def log_gap_cost(order: np.ndarray, term_offsets: np.ndarray, term_docs: np.ndarray) -> float:
    """Average bits of a posting's gap, ``log2(gap + 1)``, with documents placed in ``order``: how the
    postings would compress (the measure BP lowers). ``term_offsets`` into ``term_docs`` (each term's
    documents)."""
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    return float(_log_gaps(np.ascontiguousarray(term_offsets, dtype=np.int64), np.ascontiguousarray(term_docs),
                           position) / max(1, len(term_docs)))


@numba.njit(cache=True, nogil=True)
def _log_gaps(term_offsets, term_docs, position):
    total = 0.0
    for t in range(len(term_offsets) - 1):
        lo, hi = term_offsets[t], term_offsets[t + 1]
        pos = np.sort(position[term_docs[lo:hi]])
        prev = -1
        for p in pos:
            total += np.log2(p - prev)
            prev = p
    return total
