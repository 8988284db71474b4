import numpy as np
import pytest

from splade_lucene.core.quantize import quantize, quantize_array, quantize_terms


def test_round_not_truncate():
    # Anserini truncates: 1.99 -> 1. We round: 0.0199 * 100 = 1.99 -> 2.
    assert quantize_terms({"a": 0.0199, "b": 0.007}, 100) == {"a": 2, "b": 1}


def test_drops_terms_that_round_to_zero():
    assert quantize_terms({"a": 0.004, "b": 0.005, "c": 0.0051}, 100) == {"c": 1}
    ids, q = quantize(np.array([3, 7, 9]), np.array([0.004, 0.5, 1.0], dtype=np.float32), 100)
    assert ids.tolist() == [7, 9] and q.tolist() == [50, 100]


def test_half_to_even_in_float64_same_for_array_and_terms():
    w = np.array([0.5, 1.5, 2.5, 0.125, 2.3456], dtype=np.float32)
    arr = quantize_array(w, 2.0).tolist()
    assert arr == [1, 3, 5, 0, 5]
    terms = quantize_terms({str(i): float(x) for i, x in enumerate(w)}, 2.0)
    assert terms == {str(i): v for i, v in enumerate(arr) if v}


def test_returns_python_ints():
    out = quantize_terms({"a": 1.2345}, 51.2)
    assert out == {"a": 63} and type(out["a"]) is int


@pytest.mark.parametrize("scale", [0, -1, float("nan"), float("inf")])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        quantize_terms({"a": 1.0}, scale)


def test_pruning_keeps_exactly_the_top_k_and_the_threshold():
    from splade_lucene.core.quantize import prune

    rng = np.random.default_rng(4)
    ids = np.sort(rng.choice(30522, 300, replace=False))
    weights = rng.random(300).astype(np.float32) * 3
    weights[[10, 20, 30]] = weights[5]  # ties at some weight
    for k in (1, 7, 50, 299, 300, 1000):
        kept_ids, kept_w = prune(ids, weights, top_k=k)
        ranked = sorted(zip(-weights.astype(np.float64), ids))[:k]
        assert sorted(kept_ids.tolist()) == sorted(i for _, i in ranked)
        assert list(kept_ids) == sorted(kept_ids)  # input order kept
    kept_ids, kept_w = prune(ids, weights, min_weight=1.5)
    assert kept_ids.tolist() == ids[weights >= 1.5].tolist() and (kept_w >= 1.5).all()
    both_ids, _ = prune(ids, weights, top_k=20, min_weight=2.9)
    assert set(both_ids) == set(ids[weights >= 2.9]) and len(both_ids) <= 20
    assert prune(ids, weights)[0].tolist() == ids.tolist()
    for bad in ({"top_k": 0}, {"top_k": 2.5}, {"min_weight": -1}, {"min_weight": float("nan")}):
        with pytest.raises(ValueError):
            prune(ids, weights, **bad)
