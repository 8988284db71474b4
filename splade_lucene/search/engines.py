"""The engines that answer a quantized query over one index, behind one small interface.

An engine's ``top(terms, k)`` gives the top ``k`` (Lucene docid, raw integer score) by score, then
doc id: Lucene's hits for Anserini's impact query. The memory and block-max engines return ``None``
for a query they cannot answer exactly (a weight below 1); the searcher then asks Lucene.

- :class:`MemoryEngine`: the impact table (:mod:`splade_lucene.indexing.impacts`), term at a time;
- :class:`BlockMaxEngine`: the block-max files (:mod:`splade_lucene.indexing.blockmax`), exact unless
  ``alpha`` or ``query_terms`` ask for approximate search;
- :class:`LuceneEngine`: Lucene itself, with Anserini's similarity and query.

What a search is made with is one :class:`SearchSettings`, checked once.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from ..core import java
from ..core.errors import SettingError
from ..core.settings import setting
from ..indexing.blockmax import BlockMaxIndex, check_alpha, check_query_terms
from ..indexing.impacts import ImpactTable

ENGINES = ("auto", "memory", "blockmax", "lucene")
# engine="auto" takes the block-max engine (where the index has one) for k up to BLOCKMAX_MAX_K, on
# indexes of at least BLOCKMAX_MIN_DOCS documents, for queries of at most BLOCKMAX_MAX_TERMS terms;
# exhaustive scoring elsewhere. Measured (docs/performance.md, "Choosing the engine", "Groups of
# blocks"): block-max wins at k=10 with SciFact's queries (52 terms on average) on 60,000 to 1,000,000
# wiki passages (1.3-1.5x at 60,000-100,000 before its groups of blocks; 1.7x and 3.2x at 100,000 and
# 1,000,000 with them); loses at k=100 (0.5-0.7x before the groups) and k=1000 (0.3-0.5x with them),
# with ArguAna's queries (286 terms: 0.75x) and on SciFact's 5,183 documents (0.47x)
BLOCKMAX_MAX_K = 10
BLOCKMAX_MIN_DOCS = 50_000
BLOCKMAX_MAX_TERMS = 100
# Lucene: hits fetched beyond k, so that documents tied with the k-th can be ordered by id here.
TIE_MARGIN = 16


@dataclass(frozen=True)
class SearchSettings:
    """How an index is searched: the ``engine`` (``auto``, ``memory``, ``blockmax``, ``lucene``);
    ``prune`` for the memory engine (``None``: its measured default); ``alpha`` and ``query_terms``,
    the block-max engine's approximate settings (off by default; refused with other engines)."""

    engine: str = setting("auto", "memory: the index's impact table, every posting scored; blockmax: the index's "
                          "block-max engine (`splade-lucene blockmax`); lucene: Lucene's query evaluation; auto: "
                          "blockmax or memory as measured faster for the index and k, else lucene. All give the "
                          "same results", choices=ENGINES)
    prune: bool | None = setting(None, "memory engine: stop reading postings once the rest cannot change the top k "
                                 "(exact either way; auto: on up to k=100 on indexes of at most 20,000 documents, "
                                 "where it is faster)", words={"auto": None, "on": True, "off": False},
                                 default_help="auto")
    alpha: float = setting(1.0, "blockmax engine, approximate: skip blocks whose bound times ALPHA cannot beat the "
                           "k-th score (0 < ALPHA <= 1; 1: exact)")
    query_terms: int | None = setting(None, "blockmax engine, approximate: bound the blocks with each query's N "
                                      "strongest terms only (every term still scores)", default_help="all, exact")

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise SettingError(f"engine must be one of {ENGINES}, not {self.engine!r}")
        object.__setattr__(self, "alpha", check_alpha(self.alpha))
        object.__setattr__(self, "query_terms", check_query_terms(self.query_terms))
        if self.approximate and self.engine != "blockmax":
            raise SettingError("alpha and query_terms (approximate search) are settings of engine='blockmax'; "
                               f"engine={self.engine!r} is exact")

    @property
    def approximate(self) -> bool:
        return self.alpha != 1.0 or self.query_terms is not None

    def record(self) -> dict:
        return dataclasses.asdict(self)


class Engine(Protocol):
    name: str

    def top(self, terms: dict[str, int], k: int) -> list[tuple[int, float]] | None: ...


class MemoryEngine:
    name = "memory"

    def __init__(self, table: ImpactTable, prune: bool | None):
        self.table = table
        self.prune = prune

    def top(self, terms: dict[str, int], k: int) -> list[tuple[int, float]] | None:
        return self.table.top(terms, k, prune=self.prune)


class BlockMaxEngine:
    name = "blockmax"

    def __init__(self, index: BlockMaxIndex, alpha: float, query_terms: int | None):
        self.index = index
        self.alpha = alpha
        self.query_terms = query_terms

    @property
    def num_docs(self) -> int:
        return self.index.num_docs

    def measured_faster(self, k: int, n_terms: int) -> bool:
        """Where block-max measured faster than exhaustive scoring (the constants above)."""
        return k <= BLOCKMAX_MAX_K and n_terms <= BLOCKMAX_MAX_TERMS and self.num_docs >= BLOCKMAX_MIN_DOCS

    def top(self, terms: dict[str, int], k: int) -> list[tuple[int, float]] | None:
        return self.index.top(terms, k, alpha=self.alpha, query_terms=self.query_terms)


class LuceneEngine:
    """The same Lucene query as Anserini's (a bag of boosted terms under ``ImpactSimilarity``) over a
    short path across JNI: the query crosses as one JSON string, the hits come back as one, and ids
    are looked up in the index's docid table, so no stored field is read and no Java object is made
    per term or per hit. Lucene returns a few more than k hits by score, ordered by (score, id) here;
    only when the documents tied with the k-th run past those does the search rerun sorted by
    (score, id) in Lucene, Anserini's order."""

    name = "lucene"

    def __init__(self, index_dir: Path):
        self._mapper = java.json_mapper()  # first: it starts the JVM with Anserini's jar (importing jnius would not)
        from jnius import autoclass

        paths = autoclass("java.nio.file.Paths")
        self._directory = autoclass("org.apache.lucene.store.FSDirectory").open(paths.get(str(index_dir.resolve())))
        self.reader = autoclass("org.apache.lucene.index.DirectoryReader").open(self._directory)
        self.docids: Sequence[str] = ()
        self._searcher = None

    def open_searcher(self, docids: Sequence[str]) -> None:
        """Ready to search, once the index's doc ids (by Lucene docid) are known."""
        from jnius import autoclass, cast

        self.docids = docids
        self._searcher = autoclass("org.apache.lucene.search.IndexSearcher")(
            cast("org.apache.lucene.index.IndexReader", self.reader))
        self._searcher.setSimilarity(autoclass("io.anserini.search.similarity.ImpactSimilarity")())
        self._generator = autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        sort_field = autoclass("org.apache.lucene.search.SortField")
        self._sort = autoclass("org.apache.lucene.search.Sort")(
            sort_field.FIELD_SCORE, sort_field("id", autoclass("org.apache.lucene.search.SortField$Type").STRING_VAL))

    @property
    def num_docs(self) -> int:
        return int(self.reader.numDocs())

    def query(self, terms: dict[str, int]):
        return self._generator.buildQuery("contents", self._mapper.readValue(json.dumps(terms), self._mapper.float_map))

    def _hits(self, top) -> list[tuple[int, float]]:
        # the TopDocs object itself is serialised: reading top.scoreDocs would wrap every hit in Python
        found = json.loads(self._mapper.writeValueAsString(top))["scoreDocs"]
        return [(d["doc"], d["score"]) for d in found]

    def top(self, terms: dict[str, int], k: int) -> list[tuple[int, float]]:
        query = self.query(terms)
        fetch = k + max(TIE_MARGIN, k // 8)
        hits = self._hits(self._searcher.search(query, fetch))
        if len(hits) == fetch and hits[-1][1] == hits[k - 1][1]:
            # the documents tied with the k-th may go on past what was fetched: let Lucene pick by id
            hits = self._hits(self._searcher.search(query, int(k), self._sort, True))
        docids = self.docids
        ranked = sorted(((s, docids[d], d) for d, s in hits), key=lambda h: (-h[0], h[1]))[:k]
        return [(d, s) for s, _, d in ranked]

    def score(self, terms: dict[str, int], row: int) -> float:
        """Lucene's own score (``IndexSearcher.explain``) of the document at Lucene docid ``row``."""
        return float(self._searcher.explain(self.query(terms), int(row)).getValue().floatValue())

    def doc_weights(self, terms, row: int) -> dict[str, int]:
        """The document's weight (its term frequency in the index) for each of ``terms``, read from
        Lucene's postings; 0 where the document lacks the term."""
        from jnius import autoclass, cast

        multi = autoclass("org.apache.lucene.index.MultiTerms")
        lucene_term = autoclass("org.apache.lucene.index.Term")
        reader = cast("org.apache.lucene.index.IndexReader", self.reader)
        out = {}
        for term in terms:
            postings = multi.getTermPostingsEnum(reader, "contents", lucene_term("contents", term).bytes())
            out[term] = int(postings.freq()) if postings is not None and postings.advance(int(row)) == row else 0
        return out

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self._directory.close()
            self.reader = None
