"""Float SPLADE weights to the integer impacts Lucene stores.

``q = round(w * scale)``, rounding half to even (Python's ``round``, numpy's ``rint``) in float64;
terms that round to 0 are dropped. Anserini truncates non-integer weights (1.99 -> 1) and Pyserini
truncates query weights passed as floats, so every weight this package hands to Lucene is an int
that went through this one function.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_SCALE = 100.0


def check_scale(scale: float) -> float:
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, not {scale}")
    return scale


def quantize_array(weights: np.ndarray, scale: float) -> np.ndarray:
    """Integer impacts (int64) for an array of non-negative float weights; zeros stay zero."""
    return np.rint(np.asarray(weights, dtype=np.float64) * check_scale(scale)).astype(np.int64)


def quantize(ids: np.ndarray, weights: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Quantize a sparse vector; returns (ids, int weights) without the terms that round to 0."""
    q = quantize_array(weights, scale)
    keep = q > 0
    return np.asarray(ids)[keep], q[keep]


def quantize_terms(weights: dict[str, float], scale: float) -> dict[str, int]:
    """Quantize a {term: float} map, dropping terms that round to 0."""
    scale = check_scale(scale)
    out = {}
    for term, w in weights.items():
        q = round(float(w) * scale)
        if q > 0:
            out[term] = int(q)
    return out
