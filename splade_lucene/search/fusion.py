"""Hybrid runs: BM25 and SPLADE fused with Pyserini's fusion code.

- ``rrf``: reciprocal rank fusion, score = sum over runs of 1 / (rrf_k + rank) (Cormack et al. 2009);
- ``interpolation``: per-query min-max normalization of each run's scores, then
  ``alpha * first + (1 - alpha) * second`` (a document absent from a run gets 0 from it).

Both go through ``pyserini.fusion`` on ``TrecRun`` objects read from run files; ties are broken by
doc id, so the fused run is deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..core.errors import SettingError
from ..formats.trec import Hit


def _trec_run(path: str | Path):
    from pyserini.trectools import TrecRun

    run = TrecRun(str(path))
    run.run_data["topic"] = run.run_data["topic"].astype(str)
    run.run_data["docid"] = run.run_data["docid"].astype(str)
    return run


def frame_hits(frame, qid: str, docid: str, *, k: int | None = None, rank: str | None = None) -> dict[str, list[Hit]]:
    """Hits per query (ids as strings) of a frame of (``qid``, ``docid``, ``score``) rows: by score,
    highest first, then document id (with ``rank``: in the order of that column, ties kept in the
    frame's order); at most ``k`` a query."""
    if rank is not None:
        data = frame.sort_values([qid, rank], kind="mergesort")
    else:
        data = frame.sort_values([qid, "score", docid], ascending=[True, False, True], kind="mergesort")
    out: dict[str, list[Hit]] = {}
    for topic, doc, score in zip(data[qid], data[docid], data["score"]):
        hits = out.setdefault(str(topic), [])
        if k is None or len(hits) < k:
            hits.append(Hit(str(doc), float(score)))
    return out


def trec_run(results: dict[str, list[Hit]], *, score_format: str = ".6f"):
    """Results in memory as Pyserini's ``TrecRun``, exactly as their run file reads back (ranks from 1,
    scores printed with ``score_format``), so fusing them equals fusing the files."""
    import pandas as pd
    from pyserini.trectools import TrecRun

    rows = [(str(qid), "Q0", str(h.docid), rank, float(f"{h.score:{score_format}}"), "run")
            for qid, hits in results.items() for rank, h in enumerate(hits, 1)]
    run = TrecRun()
    run.run_data = pd.DataFrame(rows, columns=TrecRun.columns)
    return run


def rrf(run_files: Sequence[str | Path], *, rrf_k: int = 60, depth: int = 1000, k: int = 1000) -> dict[str, list[Hit]]:
    """Reciprocal rank fusion of run files."""
    return fuse_rrf([_trec_run(f) for f in run_files], rrf_k=rrf_k, depth=depth, k=k)


def fuse_rrf(runs: Sequence, *, rrf_k: int = 60, depth: int = 1000, k: int = 1000) -> dict[str, list[Hit]]:
    """Reciprocal rank fusion of ``TrecRun`` objects (:func:`trec_run` for results in memory)."""
    from pyserini.fusion import reciprocal_rank_fusion

    if len(runs) < 2:
        raise SettingError("fusion needs at least two runs")
    return frame_hits(reciprocal_rank_fusion(list(runs), rrf_k=rrf_k, depth=depth, k=k).run_data, "topic", "docid", k=k)


def interpolation(run_files: Sequence[str | Path], *, alpha: float = 0.5, depth: int = 1000,
                  k: int = 1000) -> dict[str, list[Hit]]:
    """Min-max normalised linear interpolation of two run files."""
    return fuse_interpolation([_trec_run(f) for f in run_files], alpha=alpha, depth=depth, k=k)


def fuse_interpolation(runs: Sequence, *, alpha: float = 0.5, depth: int = 1000, k: int = 1000) -> dict[str, list[Hit]]:
    """:func:`interpolation` of two ``TrecRun`` objects."""
    from pyserini.fusion import interpolation as pyserini_interpolation
    from pyserini.trectools import RescoreMethod

    if len(runs) != 2:
        raise SettingError("interpolation fuses exactly two runs")
    if not 0.0 <= alpha <= 1.0:
        raise SettingError(f"alpha must be in [0, 1], not {alpha}")
    runs = [run.rescore(method=RescoreMethod.NORMALIZE) for run in runs]
    return frame_hits(pyserini_interpolation(runs, alpha=alpha, depth=depth, k=k).run_data, "topic", "docid", k=k)
