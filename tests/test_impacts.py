"""The in-memory impact table's scoring and top-k selection, without a JVM: against brute force,
with ties ordered by doc id, and the queries it leaves to Lucene."""

from __future__ import annotations

import numpy as np
import pytest

from splade_lucene.impacts import _ADD, EXACT_LIMIT, ImpactTable, _add_at


def random_table(rng, docs=400, vocab=60, max_impact=40):
    """A table over random documents (ids whose string order differs from their row order), and the
    dense (docs x vocab) matrix of the same impacts."""
    dense = rng.integers(1, max_impact, size=(docs, vocab)) * (rng.random((docs, vocab)) < 0.15)
    terms = [f"t{i}" for i in range(vocab)]
    by_term = [np.flatnonzero(dense[:, j]) for j in range(vocab)]
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in by_term])]).astype(np.int64)
    postings = np.concatenate(by_term).astype(np.int32)
    impacts = np.concatenate([dense[d, j] for j, d in enumerate(by_term)]).astype(np.int32)
    ids = [f"d{rng.integers(10**6):06d}-{i}" for i in range(docs)]
    rank = np.empty(docs, dtype=np.int32)
    rank[np.argsort(np.array(ids, dtype=object), kind="stable")] = np.arange(docs)
    return ImpactTable(terms, offsets, postings, impacts, rank, int(dense.max())), dense, ids


def test_scatter_add_kernel_equals_numpy():
    rng = np.random.default_rng(3)
    docs = np.sort(rng.choice(1000, 300, replace=False)).astype(np.int32)
    impacts = rng.integers(1, 300, 300).astype(np.int32)
    a, b = np.zeros(1000, np.int32), np.zeros(1000, np.int32)
    for weight in (1, 7, 255):
        _ADD(a, docs, impacts, weight)
        _add_at(b, docs, impacts, weight)
    assert a.tolist() == b.tolist()
    assert a.sum() == impacts.sum() * 263


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_are_the_exact_dot_products(seed):
    rng = np.random.default_rng(seed)
    table, dense, _ = random_table(rng)
    query = {f"t{j}": int(rng.integers(1, 200)) for j in rng.choice(60, 12, replace=False)}
    query["absent-term"] = 5  # not in the index: contributes nothing
    weights = np.zeros(60, dtype=np.int64)
    for t, w in query.items():
        if t != "absent-term":
            weights[int(t[1:])] = w
    assert table.scores(query).tolist() == (dense @ weights).tolist()


@pytest.mark.parametrize("k", [1, 5, 37, 399, 400, 1000])
def test_top_k_is_by_score_then_doc_id(k):
    rng = np.random.default_rng(11)
    table, dense, ids = random_table(rng, max_impact=3)  # small impacts: many tied scores
    query = {"t1": 2, "t2": 1, "t3": 1}
    scores = dense[:, 1] * 2 + dense[:, 2] + dense[:, 3]
    expected = sorted(((int(s), ids[d], d) for d, s in enumerate(scores) if s > 0), key=lambda h: (-h[0], h[1]))[:k]
    got = table.top(query, k)
    assert [(d, s) for d, s in got] == [(d, float(s)) for s, _, d in expected]
    if k in (5, 37):  # the cut runs through tied documents, and the ones kept are the smallest ids
        kth = expected[-1][0]
        assert (scores == kth).sum() > sum(1 for s, _, _ in expected if s == kth)


def test_queries_it_cannot_answer_exactly_are_left_to_lucene():
    table, _, _ = random_table(np.random.default_rng(5))
    assert table.top({"t1": 0, "t2": 3}, 10) is None  # Lucene matches a zero-weight term with score 0
    assert table.top({"t1": -2}, 10) is None
    big = -(-EXACT_LIMIT // table.max_impact)  # the least weight whose score bound reaches the limit
    assert table.top({"t1": big}, 10) is None  # a score could leave float32's exact integers
    assert table.top({"t1": big - 1}, 10) is not None
    assert table.top({"absent": 4}, 10) == []


@pytest.mark.parametrize("case", ["random", "ties", "top-in-one-block", "few-matches"])
@pytest.mark.parametrize("k", [1, 3, 10, 999, 1000, 1001, 5000])
def test_candidates_are_every_document_reaching_the_kth_score(case, k):
    rng = np.random.default_rng(len(case) * 7 + k)
    n = 1000
    scores = {
        "random": rng.integers(0, 10**6, n),
        "ties": rng.integers(0, 4, n),
        "top-in-one-block": np.concatenate([np.arange(900, 1000), np.zeros(n - 100, dtype=np.int64)]),
        "few-matches": np.where(rng.random(n) < 0.005, rng.integers(1, 50, n), 0),
    }[case].astype(np.int32)
    table, _, _ = random_table(np.random.default_rng(0), docs=n)
    matched = np.sort(scores[scores > 0])[::-1]
    kth = matched[min(k, len(matched)) - 1] if len(matched) else 1
    expected = np.flatnonzero((scores >= kth) & (scores > 0))
    assert table.candidates(scores, k).tolist() == expected.tolist()
