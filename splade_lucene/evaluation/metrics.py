"""trec_eval metrics: nDCG@10, RR@10, R@100, R@1000, MAP, computed by trec_eval's own code
(pytrec_eval, through ir_measures), with our readers and the BEIR conventions around it.

The values are trec_eval 9's as shipped in Anserini's jar (tested), with the flags Pyserini uses for
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
import warnings
from dataclasses import dataclass
from pathlib import Path

import ir_measures
from ir_measures import AP, RR, R, nDCG

from ..core.atomic import write_text
from ..formats.trec import Qrels, Run, read_qrels, read_run

METRICS = ("nDCG@10", "RR@10", "R@100", "R@1000", "MAP")


def _trec_order(hits: list[tuple[str, float]]) -> list[tuple[str, float]]:
    # trec_eval: score descending, then doc id descending (strcmp order on bytes).
    return sorted(hits, key=lambda h: (h[1], h[0].encode()), reverse=True)


def _as_scores(hits: list[tuple[str, float]]) -> dict[str, float]:
    """A query's hits as ir_measures takes them; a doc id listed twice keeps its first (best) line."""
    out: dict[str, float] = {}
    for docid, score in hits:
        out.setdefault(docid, score)
    return out


def _without_query_hits(run: Run) -> Run:
    """The BEIR convention: a hit whose doc id equals its query id is dropped."""
    return {qid: [h for h in hits if h[0] != qid] for qid, hits in run.items()}


def _judged_scores(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """The judged queries' hits as ir_measures takes them."""
    return {q: _as_scores(hits) for q, hits in run.items() if q in qrels and hits}


def per_query_metrics(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """The five metrics of every judged query, computed by trec_eval's own code (pytrec_eval, through
    ir_measures); a judged query without hits scores 0 (``-c``). ``RR@10`` is ``recip_rank`` with
    ``-M 10``: the run cut to its first 10 documents in trec_eval's order before the rank is taken
    (pytrec_eval ignores an RR cutoff)."""
    measures = {nDCG@10: "nDCG@10", R@100: "R@100", R@1000: "R@1000", AP: "MAP"}
    full = _judged_scores(qrels, run)
    top10 = {q: dict(_trec_order(list(scores.items()))[:10]) for q, scores in full.items()}
    per_query = {q: {m: 0.0 for m in METRICS} for q in qrels}
    for m in ir_measures.pytrec_eval.iter_calc(list(measures), qrels, full):
        per_query[m.query_id][measures[m.measure]] = float(m.value)
    for m in ir_measures.pytrec_eval.iter_calc([RR], qrels, top10):
        per_query[m.query_id]["RR@10"] = float(m.value)
    return per_query


def recall_at_depths(qrels: Qrels, run: Run, depths, *, remove_query: bool = False) -> list[float]:
    """Mean recall at each depth over every judged query (``-c``), as R@100 and R@1000 above."""
    full = _judged_scores(qrels, _without_query_hits(run) if remove_query else run)
    sums = dict.fromkeys(depths, 0.0)
    by_measure = {R@d: d for d in depths}
    for m in ir_measures.pytrec_eval.iter_calc(list(by_measure), qrels, full):
        sums[by_measure[m.measure]] += float(m.value)
    return [sums[d] / len(qrels) for d in depths]


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
    per_query = per_query_metrics(qrels, _without_query_hits(run) if remove_query else run)
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
