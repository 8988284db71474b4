"""Searching one splade-lucene impact index.

Queries are encoded with the index's model (:mod:`splade_lucene.search.encoders`), quantized with the
index's query scale, and answered by one of the engines (:mod:`splade_lucene.search.engines`) with
Anserini's results: integer weights, never truncated floats, and no term dropped for its idf
(Pyserini's ``LuceneImpactSearcher`` drops terms with idf <= ``min_idf``, 0 by default). A hit's
score is Lucene's: the exact integer dot product, less Anserini's 1e-6-per-rank nudge on ties.
Several shard indexes are searched as one by :class:`~splade_lucene.search.shards.ShardedSearcher`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

from ..core.errors import NotFoundError, SettingError, UnknownIdError
from ..formats.metadata import read_metadata
from ..formats.trec import Hit
from ..indexing.blockmax import BLOCK_DIR as BLOCKMAX_DIR
from ..indexing.blockmax import BlockMaxIndex
from ..indexing.impacts import ImpactTable, ImpactTableError
from ..indexing.lucene import docid_table
from .batch import run_batch
from .encoders import QueryEncoder, check_query, encode_all, open_query_encoder
from .engines import BlockMaxEngine, LuceneEngine, MemoryEngine, SearchSettings
from .ties import hits_of


class Searcher:
    """Exact top-k search over a splade-lucene impact index, with Anserini's results.

    Hits, scores and order are those of Anserini's ``SimpleImpactSearcher`` (and so of Pyserini's
    ``LuceneImpactSearcher`` with ``min_idf=-1``): the sum of query weight times impact over shared
    terms, ties broken by doc id, scores rounded and nudged as Anserini does. Two engines give them:

    - ``memory``: the index's impact table (:mod:`splade_lucene.indexing.impacts`, written by ``build_index``),
      memory-mapped (about 2.5 bytes a posting, one copy shared by every process on the machine),
      scores term-at-a-time in one integer accumulator, by impact tiers; several times faster than
      Lucene. ``prune=True`` stops reading postings once the rest cannot change the top k (exact
      either way; the default, ``None``, prunes up to k=100 on indexes of at most 20,000 documents,
      where it is faster; exhaustive scoring is faster on every 100k and 1M index measured). A
      query it cannot answer exactly (a weight below 1) goes to Lucene.
    - ``lucene``: the same Lucene query as Anserini's (a bag of boosted terms under
      ``ImpactSimilarity``) over a shorter path across JNI: the query crosses as one JSON string, the
      hits come back as one, and ids are looked up in the index's docid table, so no stored field is
      read and no Java object is made per term or per hit. Lucene returns a few more than k hits by
      score, ordered by (score, id) here; only when the documents tied with the k-th run past those
      does the search rerun sorted by (score, id) in Lucene, Anserini's order.

    ``engine="auto"`` (the default) takes ``memory`` where the index has a table and ``lucene``
    elsewhere (``blockmax`` where the index has block-max files and it measured faster:
    :meth:`engine_for`). The settings are one :class:`~splade_lucene.search.engines.SearchSettings`.
    """

    def __init__(self, index_dir: str | Path, query_encoder: QueryEncoder | None = None, *,
                 model: str | Path | None = None, engine: str = "auto", pretokenized: bool = False,
                 prune: bool | None = None, alpha: float = 1.0, query_terms: int | None = None):
        if isinstance(index_dir, (list, tuple)):
            raise SettingError("a Searcher opens one index: search several shard indexes as one with "
                               "ShardedSearcher([dir, ...]) (or open_searcher, which takes one or several)")
        self.settings = SearchSettings(engine=engine, prune=prune, alpha=alpha, query_terms=query_terms)
        self.index_dir = Path(index_dir)
        if not self.index_dir.is_dir():
            raise NotFoundError(f"index folder {self.index_dir} does not exist")
        self.metadata = read_metadata(self.index_dir)
        self.query_encoder = open_query_encoder(self.index_dir, [self.metadata], query_encoder, model=model,
                                                pretokenized=pretokenized)
        self._rows: dict[str, int] | None = None
        self.table: ImpactTable | None = None
        self._memory: MemoryEngine | None = None
        self._blockmax: BlockMaxEngine | None = None
        self._lucene = LuceneEngine(self.index_dir)
        try:
            self._docids = docid_table(self.index_dir, self._lucene.reader)
            self._lucene.open_searcher(self._docids)
            self.table = self._load_table(engine)
            if engine in ("memory", "blockmax") and self.table is None:
                raise ImpactTableError(f"{self.index_dir} has no impact table for engine={engine!r}; write one with "
                                       "`splade-lucene impacts` (or use engine='lucene')")
            if self.table is not None:
                self._memory = MemoryEngine(self.table, prune)
            if engine == "blockmax" or (engine == "auto" and self.table is not None
                                        and (self.index_dir / BLOCKMAX_DIR).is_dir()):
                self._blockmax = BlockMaxEngine(BlockMaxIndex.load(self.index_dir, self.table), self.settings.alpha,
                                                self.settings.query_terms)
        except BaseException:
            self.close()
            raise
        self.engine = engine if engine != "auto" else "memory" if self.table is not None else "lucene"

    def _load_table(self, engine: str) -> ImpactTable | None:
        if engine == "lucene":
            return None
        try:
            return ImpactTable.load(self.index_dir, self._lucene.reader)
        except ImpactTableError as err:
            if engine == "memory":
                raise
            warnings.warn(f"{err}; searching through Lucene", stacklevel=3)
            return None

    @property
    def docids(self) -> list[str]:
        """The index's external doc ids, by Lucene docid."""
        return self._docids

    def docid_row(self, docid: str) -> int:
        """A document's Lucene docid; KeyError naming it where the index has no such document."""
        if self._rows is None:
            self._rows = {d: i for i, d in enumerate(self._docids)}
        try:
            return self._rows[docid]
        except KeyError:
            raise UnknownIdError(f"no document {docid!r} in {self.index_dir}") from None

    def _encoder(self):
        if self.query_encoder is None:
            raise SettingError("this searcher was opened for pre-encoded queries (pretokenized=True): search "
                               "them with search_terms / batch_search_terms")
        return self.query_encoder

    def lucene_score(self, terms: dict[str, int], row: int) -> float:
        """Lucene's own score (``IndexSearcher.explain``) of the document at Lucene docid ``row``."""
        return self._lucene.score(terms, row)

    def lucene_doc_weights(self, terms, row: int) -> dict[str, int]:
        """The document's weight (its term frequency in the index) for each of ``terms``, read from
        Lucene's postings; 0 where the document lacks the term."""
        return self._lucene.doc_weights(terms, row)

    @property
    def num_docs(self) -> int:
        return self._lucene.num_docs

    def ranked_terms(self, terms: dict[str, int], k: int = 10) -> list[tuple[str, float]]:
        """The top ``k`` (doc id, score) of an already quantized query, by score then doc id, with
        Lucene's raw scores (integers) before Anserini's tie nudges: what shards' results merge on."""
        if k < 1:
            raise SettingError(f"k must be at least 1, not {k}")
        check_query(terms)
        if not terms:
            return []
        engine = self._blockmax if self.engine_for(k, len(terms)) == "blockmax" else self._memory
        ranked = engine.top(terms, k) if engine is not None else None
        if ranked is None:
            ranked = self._lucene.top(terms, k)
        docids = self._docids
        return [(docids[d], s) for d, s in ranked]

    def engine_for(self, k: int, n_terms: int) -> str:
        """The engine a search for ``k`` hits with ``n_terms`` query terms runs on: the one asked for;
        with engine='auto', the block-max engine where the index has one, for k up to
        ``BLOCKMAX_MAX_K`` and queries of at most ``BLOCKMAX_MAX_TERMS`` terms on indexes of at
        least ``BLOCKMAX_MIN_DOCS`` documents (:mod:`splade_lucene.search.engines`: where it measured
        faster than exhaustive scoring), else the memory engine where the index has an impact table,
        else Lucene. (A query the tables cannot answer exactly, with a weight below 1, still goes to
        Lucene.)"""
        if self._blockmax is None:
            return self.engine
        return "blockmax" if self.engine == "blockmax" or self._blockmax.measured_faster(k, n_terms) else self.engine

    def search_terms(self, terms: dict[str, int], k: int = 10) -> list[Hit]:
        """Search with an already quantized query."""
        return hits_of(self.ranked_terms(terms, k))

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_terms(self._encoder().encode(query), k)

    def batch_ranked_terms(self, queries: dict[str, dict[str, int]], k: int = 10,
                           threads: int = 1) -> dict[str, list[tuple[str, float]]]:
        """:meth:`ranked_terms` of many queries (``threads`` as in :meth:`batch_search_terms`)."""
        return run_batch(self.ranked_terms, queries, k, threads)

    def batch_search_terms(self, queries: dict[str, dict[str, int]], k: int = 10,
                           threads: int = 1) -> dict[str, list[Hit]]:
        """Search many quantized queries; ``threads`` Python threads share the index, each taking an
        equal share of the queries (the memory engine's and Lucene's scoring run outside the GIL).
        Results keyed by qid in input order."""
        return run_batch(self.search_terms, queries, k, threads)

    def batch_search(self, queries: Sequence[tuple[str, str]], k: int = 10, threads: int = 1,
                     progress: bool = False) -> dict[str, list[Hit]]:
        """Search (qid, text) pairs; results keyed by qid in input order."""
        return self.batch_search_terms(encode_all(self._encoder(), queries, progress), k=k, threads=threads)

    def close(self) -> None:
        self._lucene.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
