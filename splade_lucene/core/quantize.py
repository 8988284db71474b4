"""Float SPLADE weights to the integer impacts Lucene stores.

``q = round(w * scale)``, rounding half to even (Python's ``round``, numpy's ``rint``) in float64;
terms that round to 0 are dropped. Anserini truncates non-integer weights (1.99 -> 1) and Pyserini
truncates query weights passed as floats, so every weight this package hands to Lucene is an int
that went through this one function.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import SettingError

DEFAULT_SCALE = 100.0


def check_scale(scale: float) -> float:
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise SettingError(f"scale must be a positive finite number, not {scale}")
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


def check_pruning(top_k: int | None, min_weight: float | None) -> tuple[int | None, float | None]:
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise SettingError(f"top_k must be a positive int or None, not {top_k!r}")
    if min_weight is not None and (not math.isfinite(float(min_weight)) or min_weight < 0):
        raise SettingError(f"min_weight must be a non-negative number or None, not {min_weight!r}")
    return (None if top_k is None else int(top_k)), (None if min_weight is None else float(min_weight))


def prune(ids: np.ndarray, weights: np.ndarray, *, top_k: int | None = None,
          min_weight: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Static pruning of one float vector, before quantization: keep the terms whose weight is at
    least ``min_weight`` and, of those, the ``top_k`` heaviest (ties at the k-th weight broken by the
    lower vocabulary id, so the result is deterministic). The kept terms stay in their input order."""
    top_k, min_weight = check_pruning(top_k, min_weight)
    ids, weights = np.asarray(ids), np.asarray(weights)
    keep = np.ones(len(ids), dtype=bool) if min_weight is None else weights >= min_weight
    if top_k is not None and keep.sum() > top_k:
        candidates = np.flatnonzero(keep)
        order = np.lexsort((ids[candidates], -weights[candidates].astype(np.float64)))[:top_k]
        keep = np.zeros(len(ids), dtype=bool)
        keep[candidates[order]] = True
    return ids[keep], weights[keep]
