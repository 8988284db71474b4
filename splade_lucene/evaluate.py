"""trec_eval-compatible metrics: nDCG@10, RR@10, R@100, R@1000, MAP.

The definitions follow trec_eval 9 as shipped in Anserini's jar, with the flags Pyserini uses for
BEIR (``-c``: the mean is over every query of the qrels, a query missing from the run scores 0):

- a run is sorted by score descending, ties by doc id descending (trec_eval's order);
- a document is relevant when its judgment is >= 1; nDCG gains are the judgment values;
- ``nDCG@10`` = ``ndcg_cut.10``, ``RR@10`` = ``recip_rank`` with ``-M 10``, ``R@k`` = ``recall.k``,
  ``MAP`` = ``map`` over the whole run.

With ``remove_query`` (Pyserini's ``--remove-query``, the BEIR convention), a hit whose doc id
equals its query id is dropped before scoring.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_text
from .collection import open_text
from .errors import SettingError

METRICS = ("nDCG@10", "RR@10", "R@100", "R@1000", "MAP")

Qrels = dict[str, dict[str, int]]
Run = dict[str, list[tuple[str, float]]]


def read_qrels(path: str | Path) -> Qrels:
    """Read BEIR qrels (``query-id<TAB>corpus-id<TAB>score`` with a header) or TREC qrels
    (``qid iter docid rel``). CRLF line endings are accepted."""
    qrels: Qrels = {}
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if lineno == 1 and parts[0].lower() in ("query-id", "query_id", "qid"):
                continue
            if len(parts) == 3:
                qid, docid, rel = parts
            elif len(parts) == 4:
                qid, _, docid, rel = parts
            else:
                raise SettingError(f"{path}:{lineno}: expected 3 (BEIR) or 4 (TREC) columns, got {len(parts)}")
            try:
                value = int(rel)
            except ValueError:
                raise SettingError(f"{path}:{lineno}: relevance {rel!r} is not an integer") from None
            qrels.setdefault(qid, {})[docid] = value
    if not qrels:
        raise SettingError(f"{path}: no judgments")
    return qrels


def read_run(path: str | Path) -> Run:
    """Read a TREC run file ``qid Q0 docid rank score tag``."""
    run: Run = {}
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise SettingError(f"{path}:{lineno}: a TREC run line has 6 columns, got {len(parts)}")
            run.setdefault(parts[0], []).append((parts[2], float(parts[4])))
    return run


def _trec_order(hits: list[tuple[str, float]]) -> list[str]:
    # trec_eval: score descending, then doc id descending (strcmp order on bytes).
    ordered = sorted(hits, key=lambda h: (h[1], h[0].encode()), reverse=True)
    return [docid for docid, _ in ordered]


def query_metrics(judged: dict[str, int], ranking: list[str]) -> dict[str, float]:
    """The five metrics for one query; ``ranking`` is already in trec_eval order."""
    num_rel = sum(1 for r in judged.values() if r >= 1)
    rels = [judged.get(d, 0) for d in ranking]
    dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rels[:10]) if r > 0)
    ideal = sorted((r for r in judged.values() if r > 0), reverse=True)[:10]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    rr = next((1.0 / (i + 1) for i, r in enumerate(rels[:10]) if r >= 1), 0.0)
    hits_so_far, ap_sum = 0, 0.0
    for i, r in enumerate(rels):
        if r >= 1:
            hits_so_far += 1
            ap_sum += hits_so_far / (i + 1)
    return {
        "nDCG@10": dcg / idcg if idcg > 0 else 0.0,
        "RR@10": rr,
        "R@100": sum(1 for r in rels[:100] if r >= 1) / num_rel if num_rel else 0.0,
        "R@1000": sum(1 for r in rels[:1000] if r >= 1) / num_rel if num_rel else 0.0,
        "MAP": ap_sum / num_rel if num_rel else 0.0,
    }


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    queries_without_run: int
    run_queries_without_qrels: int
    unjudged_run_docs: int
    judged_docs_not_in_corpus: int | None = None  # where the corpus ids were given


def evaluate(qrels: Qrels, run: Run, *, remove_query: bool = False, warn: bool = True,
             corpus_ids=None) -> Evaluation:
    """Mean metrics over every query in ``qrels`` (trec_eval ``-c``).

    Warns with counts where judged queries have no hits in the run, and (given ``corpus_ids``, a
    container of the corpus's doc ids) where judged documents are not in the corpus: trec_eval counts
    them as relevant documents that can never be retrieved, and so do these metrics."""
    per_query = {}
    for qid, judged in qrels.items():
        hits = run.get(qid, [])
        if remove_query:
            hits = [h for h in hits if h[0] != qid]
        per_query[qid] = query_metrics(judged, _trec_order(hits))
    n = len(per_query)
    metrics = {m: sum(q[m] for q in per_query.values()) / n for m in METRICS}
    missing = sum(1 for q in qrels if q not in run)
    extra = sum(1 for q in run if q not in qrels)
    unjudged = sum(1 for qid, hits in run.items() if qid in qrels for d, _ in hits if d not in qrels[qid])
    if warn and missing:
        warnings.warn(f"{missing} of {n} judged queries have no hits in the run; they score 0 (trec_eval -c)",
                      stacklevel=2)
    outside = None
    if corpus_ids is not None:
        outside = sum(1 for judged in qrels.values() for d in judged if d not in corpus_ids)
        if warn and outside:
            in_queries = sum(1 for judged in qrels.values() if any(d not in corpus_ids for d in judged))
            warnings.warn(f"{outside} judged documents (in {in_queries} queries) are not in the corpus; they count "
                          "as relevant documents never retrieved, as in trec_eval", stacklevel=2)
    return Evaluation(metrics, per_query, missing, extra, unjudged, outside)


def evaluate_files(qrels_path: str | Path, run_path: str | Path, *, remove_query: bool = False) -> Evaluation:
    return evaluate(read_qrels(qrels_path), read_run(run_path), remove_query=remove_query)


def format_table(metrics: dict[str, float], title: str | None = None) -> str:
    header = " ".join(f"{m:>8}" for m in METRICS)
    values = " ".join(f"{metrics[m]:>8.4f}" for m in METRICS)
    lines = ([title] if title else []) + [header, values]
    return "\n".join(lines)


def write_metrics(metrics: dict[str, float], path: str | Path) -> None:
    write_text(path, json.dumps({m: float(metrics[m]) for m in METRICS}, indent=2) + "\n")
