"""The memory engine without a JVM: the compressed table holds every posting as given, and its top k,
pruned or exhaustive, equals brute force (ties ordered by doc id), including the queries it leaves to
Lucene."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splade_lucene.indexing import compressed
from splade_lucene.indexing.impacts import EXACT_LIMIT, PRUNE_MAX_DOCS, PRUNE_MAX_K, ImpactTable


def table_of(dense: np.ndarray, ids: list[str]) -> ImpactTable:
    terms = [f"t{i}" for i in range(dense.shape[1])]
    by_term = [np.flatnonzero(dense[:, j]) for j in range(dense.shape[1])]
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in by_term])]).astype(np.int64)
    postings = np.concatenate(by_term).astype(np.int32)
    impacts = np.concatenate([dense[d, j] for j, d in enumerate(by_term)]).astype(np.int32)
    rank = np.empty(len(ids), dtype=np.int32)
    rank[np.argsort(np.array(ids, dtype=object), kind="stable")] = np.arange(len(ids))
    return ImpactTable.from_postings(terms, offsets, postings, impacts, rank)


def random_table(rng, docs=400, vocab=60, max_impact=40, density=0.15):
    """A table over random documents (ids whose string order differs from their row order), and the
    dense (docs x vocab) matrix of the same impacts; every term in at least one document."""
    dense = rng.integers(1, max_impact, size=(docs, vocab)) * (rng.random((docs, vocab)) < density)
    dense[rng.integers(0, docs, vocab), np.arange(vocab)] = rng.integers(1, max_impact, vocab)
    ids = [f"d{rng.integers(10**6):06d}-{i}" for i in range(docs)]
    return table_of(dense, ids), dense, ids


def brute_top(dense, ids, query: dict[str, int], k: int):
    weights = np.zeros(dense.shape[1], dtype=np.int64)
    for t, w in query.items():
        if t.startswith("t") and int(t[1:]) < dense.shape[1]:
            weights[int(t[1:])] = w
    scores = dense @ weights
    ranked = sorted(((int(s), ids[d], d) for d, s in enumerate(scores) if s > 0), key=lambda h: (-h[0], h[1]))[:k]
    return [(d, float(s)) for s, _, d in ranked]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_table_holds_every_posting(seed):
    rng = np.random.default_rng(seed)
    # wide impacts (several one-byte runs a term) and long gaps (two- and four-byte blocks)
    dense = np.zeros((200_000, 6), dtype=np.int64)
    for j, count in enumerate([3, 40, 900, 5000, 30_000, 120_000]):
        rows = rng.choice(200_000, count, replace=False)
        dense[rows, j] = rng.integers(1, [3, 300, 700, 2000, 40_000, 100][j], count)
    table = table_of(dense, [f"d{i:07d}" for i in range(len(dense))])
    for j in range(6):
        docs, impacts = table.postings_of(f"t{j}")
        assert docs.tolist() == np.flatnonzero(dense[:, j]).tolist()
        assert impacts.tolist() == dense[docs, j].tolist()
        assert table.df(f"t{j}") == len(docs)
    widths = np.bincount(table.arrays["block_width"], minlength=3)
    assert (widths > 0).all()  # one-, two- and four-byte gaps all occur
    assert table.postings == int((dense > 0).sum())
    for row in rng.choice(np.flatnonzero(dense.any(axis=1)), 20).tolist():
        assert table.document(row) == {f"t{j}": int(v) for j, v in enumerate(dense[row]) if v}
    assert table.df("absent") == 0 and len(table.postings_of("absent")[0]) == 0


def test_a_dense_table_takes_about_two_bytes_a_posting():
    rng = np.random.default_rng(4)
    dense = rng.integers(1, 200, size=(20_000, 30)) * (rng.random((20_000, 30)) < 0.3)
    table = table_of(dense, [str(i) for i in range(20_000)])
    assert table.nbytes / table.postings < 2.3  # 1 for the impact, 1 for the gap, a little per block


@pytest.mark.parametrize(("docs", "k", "pruned"), [(PRUNE_MAX_DOCS, 10, True), (PRUNE_MAX_DOCS, PRUNE_MAX_K + 1, False),
                                                   (PRUNE_MAX_DOCS + 1, 10, False)])
def test_the_default_prunes_only_small_indexes_at_small_k(monkeypatch, docs, k, pruned):
    rng = np.random.default_rng(5)
    dense = rng.integers(1, 50, size=(docs, 8)) * (rng.random((docs, 8)) < 0.05)
    dense[0] = 1
    ids = [f"{i:06d}" for i in range(docs)]
    table = table_of(dense, ids)
    seen, search = [], compressed.search
    monkeypatch.setattr(compressed, "search", lambda *a: seen.append(a[5]) or search(*a))
    query = {"t0": 3, "t5": 7}
    assert table.top(query, k) == table.top(query, k, prune=not pruned) == brute_top(dense, ids, query, k)
    assert seen == [pruned, not pruned]


@pytest.mark.parametrize("prune", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_top_k_equals_brute_force(seed, prune):
    rng = np.random.default_rng(seed)
    table, dense, ids = random_table(rng, docs=3000, vocab=40, max_impact=[3, 40, 400, 3000][seed])
    for _ in range(5):
        query = {f"t{j}": int(rng.integers(1, 300)) for j in rng.choice(40, int(rng.integers(1, 30)), replace=False)}
        query["absent-term"] = 5  # not in the index: contributes nothing
        for k in (1, 3, 10, 100, 2999, 5000):
            assert table.top(query, k, prune=prune) == brute_top(dense, ids, query, k), (query, k)


@pytest.mark.parametrize("k", [1, 5, 37, 399, 400, 1000])
def test_ties_at_the_cut_keep_the_smallest_ids(k):
    rng = np.random.default_rng(11)
    table, dense, ids = random_table(rng, max_impact=3)  # small impacts: many tied scores
    query = {"t1": 2, "t2": 1, "t3": 1}
    expected = brute_top(dense, ids, query, k)
    for prune in (False, True):
        assert table.top(query, k, prune=prune) == expected
    if k in (5, 37):  # the cut runs through tied documents
        scores = dense[:, 1] * 2 + dense[:, 2] + dense[:, 3]
        assert (scores == expected[-1][1]).sum() > sum(1 for _, s in expected if s == expected[-1][1])


def test_pruning_reads_fewer_postings_where_a_few_documents_stand_out():
    rng = np.random.default_rng(8)
    dense = rng.integers(1, 20, size=(50_000, 20)) * (rng.random((50_000, 20)) < 0.2)
    dense[:30] = rng.integers(500, 900, size=(30, 20))  # thirty documents far ahead of the rest
    table = table_of(dense, [f"{i:06d}" for i in range(50_000)])
    query = {f"t{j}": 10 for j in range(20)}
    weights = [10] * 20
    stats = {}
    for prune in (False, True):
        stat = np.zeros(4, dtype=np.int64)
        acc, work = np.zeros(50_000, np.int32), np.zeros(50_000, np.int32)
        rows, scores = compressed.search(table.arrays, table.id_rank, np.arange(20), np.array(weights), 10, prune,
                                         acc, work, stat)
        stats[prune] = (rows.tolist(), scores.tolist(), int(stat[0]))
    assert stats[True][:2] == stats[False][:2]
    assert stats[False][2] == table.postings and stats[True][2] < table.postings / 4
    assert table.top(query, 10, prune=True) == brute_top(dense, [f"{i:06d}" for i in range(50_000)], query, 10)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.sampled_from([2, 5, 300, 5000]), st.booleans())
def test_any_table_any_query(seed, k, max_impact, prune):
    rng = np.random.default_rng(seed)
    docs = int(rng.integers(1, 500))
    table, dense, ids = random_table(rng, docs=docs, vocab=int(rng.integers(1, 12)), max_impact=max_impact,
                                     density=float(rng.random()))
    query = {f"t{j}": int(rng.integers(1, 50)) for j in range(dense.shape[1]) if rng.random() < 0.6}
    assert table.top(query, k, prune=prune) == brute_top(dense, ids, query, k)


def test_queries_it_cannot_answer_exactly_are_left_to_lucene():
    table, _, _ = random_table(np.random.default_rng(5))
    assert table.top({"t1": 0, "t2": 3}, 10) is None  # Lucene matches a zero-weight term with score 0
    assert table.top({"t1": -2}, 10) is None
    big = -(-EXACT_LIMIT // table.max_impact)  # the least weight whose score bound reaches the limit
    assert table.top({"t1": big}, 10) is None  # a score could leave float32's exact integers
    assert table.top({"t1": big - 1}, 10) is not None
    assert table.top({"absent": 4}, 10) == []


def test_scratch_space_is_left_clean_between_queries():
    rng = np.random.default_rng(6)
    table, dense, ids = random_table(rng, docs=800)
    queries = [{f"t{j}": int(rng.integers(1, 30)) for j in rng.choice(60, 8, replace=False)} for _ in range(20)]
    for query in queries:
        for prune in (True, False):
            assert table.top(query, 7, prune=prune) == brute_top(dense, ids, query, 7)
    assert not table._scratch.acc.any()


@pytest.mark.parametrize("k", [1, 10, 1000, 5000])
def test_a_large_table_where_every_document_ties(k):
    """40,000 documents all scoring the same, ids in an order unlike their rows: the top k are the
    first k by id, whichever kernel, across many slices of the accumulator (whose candidate buffers
    must hold whatever the ties)."""
    rng = np.random.default_rng(5)
    docs = 40_000
    dense = np.zeros((docs, 3), dtype=np.int64)
    dense[:, 0] = 7
    dense[rng.random(docs) < 0.5, 1] = 2  # half the documents ahead, in no order of ids
    ids = [f"d{v:08d}" for v in rng.permutation(docs)]
    table = table_of(dense, ids)
    for query in ({"t0": 3}, {"t0": 3, "t1": 5}):
        expected = brute_top(dense, ids, query, k)
        for prune in (False, True):
            assert table.top(query, k, prune=prune) == expected
