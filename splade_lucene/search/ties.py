"""Anserini's order of tied hits: scores rounded and nudged as its ``ScoreTiesAdjusterReranker`` does."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..formats.trec import Hit


def adjust_ties(scores: Sequence[float]) -> list[float]:
    """Anserini's ``ScoreTiesAdjusterReranker`` in float32: each score rounded to 1e-4, and each run of
    tied scores lowered by 1e-6 per place, so that any tool sorting by score keeps the order.
    ``scores`` are Lucene's float32 scores in rank order."""
    f32 = np.float32
    raw = np.asarray(scores, dtype=np.float32)
    rounded = (np.floor(raw.astype(np.float64) * 1e4 + 0.5) / 1e4).astype(np.float32)  # Math.round(s * 1e4d) / 1e4d
    if len(rounded) < 2:
        return rounded.astype(np.float64).tolist()
    gaps = rounded[:-1] - rounded[1:]
    # Anserini compares with the previous score after its nudge; that can only matter where a gap is
    # within the nudges (<= 1e-6 per place) of 1e-4: replay it score by score there.
    if np.any((gaps > f32(1e-4)) & (gaps <= f32(1e-4) + f32(1e-6) * f32(len(rounded) + 1))):
        return _adjust_ties_sequential(rounded)
    place = np.arange(len(rounded))
    starts = np.concatenate([[True], gaps > f32(1e-4)])
    dup = place - np.maximum.accumulate(np.where(starts, place, 0))
    return (rounded - f32(1e-6) * dup.astype(np.float32)).astype(np.float32).astype(np.float64).tolist()



def _adjust_ties_sequential(rounded: np.ndarray) -> list[float]:
    f32 = np.float32
    out: list[float] = []
    dup = 0
    prev = f32(0)
    for i, score in enumerate(rounded):
        if i == 0 or prev - score > f32(1e-4):
            dup = 0
        else:
            dup += 1
            score = f32(score - f32(f32(1e-6) * f32(dup)))
        out.append(float(score))
        prev = score
    return out



def hits_of(ranked: Sequence[tuple[str, float]]) -> list[Hit]:
    """Hits from (doc id, raw score) pairs in rank order, with Anserini's tie nudges."""
    return [Hit(d, s) for (d, _), s in zip(ranked, adjust_ties([s for _, s in ranked]))]
