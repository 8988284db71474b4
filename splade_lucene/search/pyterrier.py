"""PyTerrier transformers over this package (``pip install 'splade-lucene[pyterrier]'``), so that
SPLADE on a Lucene impact index composes with PyTerrier's pipelines and ``pt.Experiment``:

- :class:`SpladeQueryEncoder`: queries (``qid``, ``query``) gain ``query_toks``, {term: integer
  weight}, the index's query encoder's (PyTerrier's learned-sparse column);
- :class:`SpladeDocEncoder`: documents (``docno``, ``text``, optional ``title``) gain ``toks``,
  {term: integer weight} at the document scale, as ``encode`` writes them;
- :class:`SpladeRetriever`: a retriever over an index of ours (queries with ``query_toks`` are
  searched as they are, others are encoded first);
- :class:`BM25Retriever`: BM25 on a Pyserini index (``bm25-index``), as ``reproduce`` runs it;
- :class:`Fusion`: reciprocal rank fusion or min-max interpolation of retrievers, with Pyserini's
  fusion code as ``reproduce``'s hybrids.

Results have PyTerrier's columns (``qid``, ``query``, ``docno``, ``score``, ``rank`` from 0).
``topics`` and ``qrels`` read this package's query and qrels files as PyTerrier frames. None of it
needs Terrier's Java jars: PyTerrier's Java side is never started.

.. code-block:: python

    import pyterrier as pt
    from splade_lucene.search.pyterrier import BM25Retriever, Fusion, SpladeRetriever, qrels, topics

    bm25 = BM25Retriever("indexes/scifact-bm25", remove_query=True)
    splade = SpladeRetriever("indexes/scifact", remove_query=True)
    pt.Experiment([bm25, splade, Fusion(bm25, splade, rrf_k=1)], topics(QUERIES, QRELS), qrels(QRELS),
                  eval_metrics=["ndcg_cut_10", "recip_rank", "map"], names=["BM25", "SPLADE", "RRF"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import pyterrier as pt

from ..core.errors import SettingError
from ..core.quantize import DEFAULT_SCALE
from ..encoding.model import SpladeEncoder, quantized_records
from ..formats.collection import read_queries
from ..formats.trec import Hit, read_qrels
from . import fusion
from .bm25 import BM25_B, BM25_K1, BM25Searcher
from .encoders import QueryEncoder
from .shards import open_searcher

RESULT_COLUMNS = ["qid", "query", "docno", "score", "rank"]


def _need(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SettingError(f"{what} needs the column(s) {', '.join(missing)}; it was given "
                           f"{', '.join(map(str, frame.columns)) or 'none'}")


def _queries(topics: pd.DataFrame, what: str) -> dict[str, str]:
    _need(topics, ["qid"], what)
    qids = [str(q) for q in topics["qid"]]
    if len(set(qids)) != len(qids):
        raise SettingError(f"{what}: the topics repeat a qid ({next(q for q in qids if qids.count(q) > 1)!r})")
    texts = [str(t) for t in topics["query"]] if "query" in topics.columns else [""] * len(qids)
    return dict(zip(qids, texts))


def results_frame(results: dict[str, list[Hit]], queries: dict[str, str], *, remove_query: bool = False
                  ) -> pd.DataFrame:
    """Hits as PyTerrier's result frame, queries in their order, ranks from 0; ``remove_query``
    drops a hit whose docno is its query's qid (BEIR's rule), as this package's run files do."""
    rows = []
    for qid, text in queries.items():
        hits = [h for h in results.get(qid, []) if not (remove_query and h.docid == qid)]
        rows.extend((qid, text, h.docid, h.score, rank) for rank, h in enumerate(hits))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def hits_of_frame(frame: pd.DataFrame) -> dict[str, list[Hit]]:
    """A result frame back as hits per qid, in the order of its ``rank`` column (without one: by
    score, then docno)."""
    _need(frame, ["qid", "docno", "score"], "a result frame")
    data = frame.assign(qid=frame["qid"].astype(str), docno=frame["docno"].astype(str))
    return fusion.frame_hits(data, "qid", "docno", rank="rank" if "rank" in data.columns else None)


def topics(path: str | Path) -> pd.DataFrame:
    """A queries file (BEIR ``queries.jsonl`` or ``qid<TAB>text``) as PyTerrier topics (qid, query)."""
    return pd.DataFrame(read_queries(path), columns=["qid", "query"])


def judged_topics(queries: str | Path, qrels_file: str | Path) -> pd.DataFrame:
    """The queries of ``queries`` that ``qrels_file`` judges, as an experiment searches them."""
    judged = read_qrels(qrels_file)
    frame = topics(queries)
    return frame[frame["qid"].isin(judged)].reset_index(drop=True)


def qrels(path: str | Path) -> pd.DataFrame:
    """A qrels file (BEIR TSV or TREC) as PyTerrier qrels (qid, docno, label)."""
    return pd.DataFrame([(q, d, rel) for q, docs in read_qrels(path).items() for d, rel in docs.items()],
                        columns=["qid", "docno", "label"])


class SpladeQueryEncoder(pt.Transformer):
    """Queries gain ``query_toks``: each text's {term: integer weight} from ``encoder`` (the index's,
    ``SpladeQueryEncoder.from_index``: its model and query scale, or its table for an
    inference-free index)."""

    def __init__(self, encoder):
        self.encoder = encoder

    @classmethod
    def from_index(cls, index: str | Path, **options) -> "SpladeQueryEncoder":
        return cls(QueryEncoder.from_index(index, **options))

    def transform(self, topics: pd.DataFrame) -> pd.DataFrame:
        _need(topics, ["qid", "query"], "SpladeQueryEncoder")
        return topics.assign(query_toks=self.encoder.encode_batch([str(t) for t in topics["query"]]))


class SpladeDocEncoder(pt.Transformer):
    """Documents gain ``toks``: {term: integer weight} of ``title`` + " " + ``text`` (``text`` alone
    without a title), quantized at ``scale`` (and pruned with ``doc_top_k`` / ``doc_min_weight``), as
    ``encode`` writes a collection's vectors. ``encoder``: a :class:`SpladeEncoder` (default: the
    default model)."""

    def __init__(self, encoder: SpladeEncoder | None = None, *, scale: float = DEFAULT_SCALE,
                 doc_top_k: int | None = None, doc_min_weight: float | None = None):
        self.encoder = encoder or SpladeEncoder()
        self.scale, self.doc_top_k, self.doc_min_weight = scale, doc_top_k, doc_min_weight

    def transform(self, docs: pd.DataFrame) -> pd.DataFrame:
        _need(docs, ["docno", "text"], "SpladeDocEncoder")
        titles = docs["title"].fillna("").astype(str) if "title" in docs.columns else [""] * len(docs)
        texts = [f"{t} {x}".strip() if t else str(x) for t, x in zip(titles, docs["text"])]
        vectors = self.encoder.encode(texts)
        records = quantized_records(zip(docs["docno"].astype(str), vectors), self.encoder.id_to_term, self.scale,
                                    doc_top_k=self.doc_top_k, doc_min_weight=self.doc_min_weight)
        return docs.assign(toks=[terms for _, terms, _ in records])


class SpladeRetriever(pt.Transformer):
    """Retrieval over an index of ours (or several shards): ``k`` hits a query, with the engine
    ``engine`` (:class:`~splade_lucene.search.searcher.Searcher`'s). Topics carrying ``query_toks``
    are searched with those weights; others have their ``query`` encoded by the index's query
    encoder. ``remove_query``: drop a hit whose docno is the qid (BEIR)."""

    def __init__(self, index, *, k: int = 1000, engine: str = "auto", threads: int = 1,
                 remove_query: bool = False, query_encoder=None):
        self.searcher = open_searcher(index, query_encoder, engine=engine)
        self.k, self.threads, self.remove_query = int(k), int(threads), remove_query

    def transform(self, topics: pd.DataFrame) -> pd.DataFrame:
        queries = _queries(topics, "SpladeRetriever")
        if "query_toks" in topics.columns:
            terms = {str(q): {str(t): int(w) for t, w in toks.items()}
                     for q, toks in zip(topics["qid"], topics["query_toks"])}
            results = self.searcher.batch_search_terms(terms, k=self.k, threads=self.threads)
        else:
            _need(topics, ["query"], "SpladeRetriever")
            results = self.searcher.batch_search(list(queries.items()), k=self.k, threads=self.threads)
        return results_frame(results, queries, remove_query=self.remove_query)

    def close(self) -> None:
        self.searcher.close()


class BM25Retriever(pt.Transformer):
    """BM25 (``k1``, ``b``; Pyserini's BEIR flat defaults) over a Pyserini index of the corpus's text
    (``splade-lucene bm25-index``), ``k`` hits a query."""

    def __init__(self, index: str | Path, *, k: int = 1000, k1: float = BM25_K1, b: float = BM25_B,
                 threads: int = 1, remove_query: bool = False):
        self.searcher = BM25Searcher(index, k1=k1, b=b)
        self.k, self.threads, self.remove_query = int(k), int(threads), remove_query

    def transform(self, topics: pd.DataFrame) -> pd.DataFrame:
        _need(topics, ["qid", "query"], "BM25Retriever")
        queries = _queries(topics, "BM25Retriever")
        results = self.searcher.batch_search(list(queries.items()), k=self.k, threads=self.threads)
        return results_frame(results, queries, remove_query=self.remove_query)

    def close(self) -> None:
        self.searcher.close()


class Fusion(pt.Transformer):
    """Hybrid retrieval: each retriever's results for the topics, fused by ``method`` ``rrf``
    (reciprocal rank fusion, ``rrf_k``) or ``interpolation`` (min-max normalised, ``alpha`` times the
    first plus 1 - ``alpha`` times the second) over their first ``depth`` hits, ``k`` kept: Pyserini's
    fusion on the runs as their files read back, so the figures equal ``reproduce``'s hybrids."""

    def __init__(self, *retrievers: pt.Transformer, method: str = "rrf", rrf_k: int = 60, alpha: float = 0.5,
                 depth: int = 1000, k: int = 1000):
        if method not in ("rrf", "interpolation"):
            raise SettingError(f"method must be 'rrf' or 'interpolation', not {method!r}")
        if len(retrievers) < 2 or (method == "interpolation" and len(retrievers) != 2):
            raise SettingError(f"{method} fuses {'exactly two' if method == 'interpolation' else 'two or more'} "
                               f"retrievers, not {len(retrievers)}")
        self.retrievers, self.method = retrievers, method
        self.rrf_k, self.alpha, self.depth, self.k = int(rrf_k), float(alpha), int(depth), int(k)

    def transform(self, topics: pd.DataFrame) -> pd.DataFrame:
        queries = _queries(topics, "Fusion")
        runs = [fusion.trec_run(hits_of_frame(r.transform(topics))) for r in self.retrievers]
        if self.method == "rrf":
            fused = fusion.fuse_rrf(runs, rrf_k=self.rrf_k, depth=self.depth, k=self.k)
        else:
            fused = fusion.fuse_interpolation(runs, alpha=self.alpha, depth=self.depth, k=self.k)
        # reproduce writes fused scores with 8 decimals: the same values rank the same way here
        fused = {q: [Hit(h.docid, float(f"{h.score:.8f}")) for h in hits] for q, hits in fused.items()}
        return results_frame(fused, queries)
