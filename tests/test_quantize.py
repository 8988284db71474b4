import numpy as np
import pytest

from splade_lucene.quantize import quantize, quantize_array, quantize_terms


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
