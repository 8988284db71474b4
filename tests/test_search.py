"""Pure parts of searching (no JVM): Anserini's tie adjustment, the brute-force reference scorer."""

from __future__ import annotations

import numpy as np

from splade_lucene.search.exact import exact_search, vectors_matrix
from splade_lucene.search.ties import _adjust_ties_sequential, adjust_ties


def test_tie_adjustment_is_anserinis():
    # The example in Anserini's ScoreTiesAdjusterReranker: rounded to 1e-4, ties lowered by 1e-6 a place.
    got = adjust_ties([23.439316, 22.087432, 22.087432, 22.087432, 21.602508])
    f = np.float32
    assert got == [float(f(23.4393)), float(f(22.0874)), float(f(f(22.0874) - f(1e-6))),
                   float(f(f(22.0874) - f(2e-6))), float(f(21.6025))]


def test_vectorised_tie_adjustment_equals_the_score_by_score_one():
    rng = np.random.default_rng(0)
    for trial in range(3000):
        n = int(rng.integers(1, 60))
        kinds = [rng.integers(0, 50, n).astype(float), rng.random(n) * 3, np.round(rng.random(n), 3),
                 rng.integers(0, 5, n) * 1.00005, 1 + rng.integers(0, 3, n) * 1.0001e-4]
        scores = np.sort(kinds[trial % len(kinds)])[::-1].astype(np.float32)
        rounded = (np.floor(scores.astype(np.float64) * 1e4 + 0.5) / 1e4).astype(np.float32)
        assert adjust_ties(scores) == _adjust_ties_sequential(rounded), scores


def test_exact_search_orders_like_trec_eval_and_keeps_positive_scores():
    docs = vectors_matrix([(np.array([0, 1]), np.array([2, 1])), (np.array([1]), np.array([3])),
                           (np.array([2]), np.array([5])), (np.array([0]), np.array([1]))], 3)
    queries = vectors_matrix([(np.array([0, 1]), np.array([1, 1]))], 3)
    hits = exact_search(queries, docs, ["q"], ["a", "b", "c", "d"], k=10)["q"]
    assert [(h.docid, h.score) for h in hits] == [("b", 3.0), ("a", 3.0), ("d", 1.0)]  # c scores 0: absent
    assert [h.docid for h in exact_search(queries, docs, ["q"], ["a", "b", "c", "d"], k=1)["q"]] == ["b"]
