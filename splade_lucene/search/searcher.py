"""Searching a splade-lucene impact index, and the query encoder that plugs into Pyserini.

Queries are encoded with the index's model, quantized with the index's query scale through
:func:`splade_lucene.core.quantize.quantize_terms`, and run as Anserini's impact query: integer weights,
never truncated floats, and no term is dropped for its idf (Pyserini's ``LuceneImpactSearcher`` drops
terms with idf <= ``min_idf``, 0 by default). A hit's score is Lucene's: the exact integer dot
product, less Anserini's 1e-6-per-rank nudge on ties. :func:`exact_search` is the brute-force
reference.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..core import java
from ..core.atomic import atomic_file, output_lock
from ..core.errors import (
    NotFoundError,
    OutputExistsError,
    SettingError,
    SettingTypeError,
    SpladeLuceneError,
    UnknownIdError,
)
from ..core.faults import fault_point
from ..core.quantize import DEFAULT_SCALE, check_pruning, check_scale, prune, quantize_terms
from ..encoding.distributed import start_ray
from ..encoding.model import DEFAULT_MAX_LENGTH, SparseVector, SpladeEncoder
from ..encoding.writing import MATCHING_KEYS
from ..formats.collection import read_queries, topic_line
from ..indexing.blockmax import BLOCK_DIR as BLOCKMAX_DIR
from ..indexing.blockmax import BlockMaxIndex, check_alpha, check_query_terms
from ..indexing.build import IncompatibleIndexError, check_compatible, read_metadata
from ..indexing.impacts import ImpactTable, ImpactTableError
from ..indexing.lucene import docid_table
from ..indexing.query_table import QUERY_MODES, TABLE_MODES, QueryTableError, TableQueryEncoder

DEFAULT_K = 1000
DEFAULT_TAG = "splade-lucene"
# Searcher: hits fetched beyond k, so that documents tied with the k-th can be ordered by id here.
TIE_MARGIN = 16
# exact_search: query rows scored at once, so that a block of dense scores stays near 200 MB.
_EXACT_BLOCK_CELLS = 25_000_000


@dataclass(frozen=True)
class Hit:
    docid: str
    score: float


class QueryEncoder:
    """SPLADE query encoder giving ``{term: int}``; plugs into Pyserini:

    ``LuceneImpactSearcher(index_dir, QueryEncoder.from_index(index_dir), min_idf=-1)``.
    """

    def __init__(self, model: str | Path | None = None, *, scale: float = DEFAULT_SCALE,
                 max_length: int = DEFAULT_MAX_LENGTH, pooling: str = "all", dtype: str = "fp32",
                 encoder: SpladeEncoder | None = None, top_k: int | None = None, min_weight: float | None = None,
                 backend: str = "auto", threads: int | None = None):
        self.scale = check_scale(scale)
        self.top_k, self.min_weight = check_pruning(top_k, min_weight)
        self.max_length = int(max_length)
        self.encoder = encoder or SpladeEncoder(model, max_length=max_length, pooling=pooling, dtype=dtype,
                                                backend=backend, threads=threads)

    @classmethod
    def from_index(cls, index_dir: str | Path, model: str | Path | None = None, *,
                   backend: str = "auto") -> "QueryEncoder | TableQueryEncoder":
        """The query encoder an index was built for (its recorded query model, scale, max length); for
        an index built for inference-free queries (``query_mode`` idf or learned), the model-free
        :class:`~splade_lucene.indexing.query_table.TableQueryEncoder` stored in it."""
        meta = read_metadata(index_dir)
        if meta.get("query_mode", "full") not in QUERY_MODES:
            raise QueryTableError(f"{index_dir}: the index records query mode {meta['query_mode']!r}, which this "
                                  f"version does not know (expected one of {', '.join(QUERY_MODES)})")
        if meta.get("query_mode", "full") in TABLE_MODES:
            if model is not None:
                raise QueryTableError(f"{index_dir} is built for inference-free queries (query mode "
                                      f"{meta['query_mode']!r}): its queries take no model, and --model {model} "
                                      "would not be used")
            return TableQueryEncoder.from_index(index_dir, meta)
        encoder = cls(model if model is not None else meta.get("query_model", meta.get("model")),
                      scale=meta.get("query_scale", meta["scale"]),
                      max_length=meta.get("query_max_length", DEFAULT_MAX_LENGTH),
                      pooling=meta.get("pooling", "all"), dtype=meta.get("dtype", "fp32"),
                      top_k=meta.get("query_top_k"), min_weight=meta.get("query_min_weight"), backend=backend)
        encoder.check(meta)
        return encoder

    def check(self, metadata: dict) -> None:
        mode = metadata.get("query_mode", "full")
        if mode != "full":
            raise QueryTableError(f"the index is built for inference-free queries (query mode {mode!r}), not "
                                  "for the model's: open it with QueryEncoder.from_index (or no query encoder)")
        check_compatible(metadata, model_sha256=self.encoder.weights_sha256, model=self.encoder.model_name,
                         scale=self.scale)

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    def encode(self, text: str) -> dict[str, int]:
        """One query's integer weights (Pyserini's ``QueryEncoder.encode`` contract)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """Integer weights per text; a text with no letter or digit (empty, blank, only punctuation)
        gets no terms (see :class:`~splade_lucene.encoding.model.SpladeEncoder`), so it matches nothing."""
        vectors = self.encoder.encode(texts, max_length=self.max_length)
        if self.top_k is not None or self.min_weight is not None:
            vectors = [SparseVector(*prune(v.ids, v.weights, top_k=self.top_k, min_weight=self.min_weight))
                       for v in vectors]
        return [quantize_terms(self.encoder.to_terms(v), self.scale) for v in vectors]


def check_query(terms: dict[str, int]) -> None:
    for term, weight in terms.items():
        if not isinstance(weight, int) or isinstance(weight, bool):
            raise SettingTypeError(f"query weight for {term!r} must be an int, got {weight!r} "
                            "(quantize with splade_lucene.core.quantize.quantize_terms)")


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


ENGINES = ("auto", "memory", "blockmax", "lucene")
# engine="auto" takes the block-max engine (where the index has one) for k up to BLOCKMAX_MAX_K, on
# indexes of at least BLOCKMAX_MIN_DOCS documents, for queries of at most BLOCKMAX_MAX_TERMS terms;
# exhaustive scoring elsewhere. Measured (docs/performance.md, "Choosing the engine"): block-max wins
# at k=10 with SciFact's queries (52 terms on average) on 60,000 and 100,000 wiki passages (1.3-1.5x),
# loses at k=100 there (0.5-0.7x), with ArguAna's queries (286 terms: 0.75x) and on SciFact's 5,183
# documents (0.47x)
BLOCKMAX_MAX_K = 10
BLOCKMAX_MIN_DOCS = 50_000
BLOCKMAX_MAX_TERMS = 100


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
    elsewhere.
    """

    def __new__(cls, index_dir=None, *args, **kwargs):
        # several shard indexes: one searcher over them all (ShardedSearcher)
        if cls is Searcher and isinstance(index_dir, (list, tuple)) and len(index_dir) != 1:
            return ShardedSearcher(index_dir, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, index_dir: str | Path, query_encoder: QueryEncoder | TableQueryEncoder | None = None, *,
                 model: str | Path | None = None, engine: str = "auto", pretokenized: bool = False,
                 prune: bool | None = None, alpha: float = 1.0, query_terms: int | None = None):
        if isinstance(index_dir, (list, tuple)):
            index_dir = index_dir[0]
        if engine not in ENGINES:
            raise SettingError(f"engine must be one of {ENGINES}, not {engine!r}")
        self.alpha = check_alpha(alpha)
        self.query_terms = check_query_terms(query_terms)
        if (self.alpha != 1.0 or self.query_terms is not None) and engine != "blockmax":
            raise SettingError("alpha and query_terms (approximate search) are settings of engine='blockmax'; "
                               f"engine={engine!r} is exact")
        self.index_dir = Path(index_dir)
        if not self.index_dir.is_dir():
            raise NotFoundError(f"index folder {self.index_dir} does not exist")
        self.metadata = read_metadata(self.index_dir)
        if pretokenized:
            if query_encoder is not None or model is not None:
                raise SettingError("pretokenized=True searches encoded queries: pass no query encoder or model")
        elif query_encoder is None:
            query_encoder = QueryEncoder.from_index(self.index_dir, model=model)
        else:
            query_encoder.check(self.metadata)
        self.query_encoder = query_encoder
        self._rows: dict[str, int] | None = None
        self._mapper = java.json_mapper()
        from jnius import autoclass, cast

        paths = autoclass("java.nio.file.Paths")
        self._directory = autoclass("org.apache.lucene.store.FSDirectory").open(
            paths.get(str(self.index_dir.resolve())))
        self._reader = autoclass("org.apache.lucene.index.DirectoryReader").open(self._directory)
        self._blockmax: BlockMaxIndex | None = None
        try:
            self._docids = docid_table(self.index_dir, self._reader)
            self._table = self._load_table(engine)
            if engine in ("memory", "blockmax") and self._table is None:
                raise ImpactTableError(f"{self.index_dir} has no impact table for engine={engine!r}; write one with "
                                       "`splade-lucene impacts` (or use engine='lucene')")
            if engine == "blockmax" or (engine == "auto" and self._table is not None
                                        and (self.index_dir / BLOCKMAX_DIR).is_dir()):
                self._blockmax = BlockMaxIndex.load(self.index_dir, self._table)
        except BaseException:
            self.close()
            raise
        self.engine = engine if engine != "auto" else "memory" if self._table is not None else "lucene"
        self.prune = prune
        self._searcher = autoclass("org.apache.lucene.search.IndexSearcher")(
            cast("org.apache.lucene.index.IndexReader", self._reader))
        self._searcher.setSimilarity(autoclass("io.anserini.search.similarity.ImpactSimilarity")())
        self._generator = autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        sort_field = autoclass("org.apache.lucene.search.SortField")
        self._sort = autoclass("org.apache.lucene.search.Sort")(
            sort_field.FIELD_SCORE, sort_field("id", autoclass("org.apache.lucene.search.SortField$Type").STRING_VAL))

    def _load_table(self, engine: str) -> ImpactTable | None:
        if engine == "lucene":
            return None
        try:
            return ImpactTable.load(self.index_dir, self._reader)
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

    def _query(self, terms: dict[str, int]):
        return self._generator.buildQuery("contents", self._mapper.readValue(json.dumps(terms), self._mapper.float_map))

    def lucene_score(self, terms: dict[str, int], row: int) -> float:
        """Lucene's own score (``IndexSearcher.explain``) of the document at Lucene docid ``row``."""
        return float(self._searcher.explain(self._query(terms), int(row)).getValue().floatValue())

    def lucene_doc_weights(self, terms, row: int) -> dict[str, int]:
        """The document's weight (its term frequency in the index) for each of ``terms``, read from
        Lucene's postings; 0 where the document lacks the term."""
        from jnius import autoclass, cast

        multi = autoclass("org.apache.lucene.index.MultiTerms")
        lucene_term = autoclass("org.apache.lucene.index.Term")
        reader = cast("org.apache.lucene.index.IndexReader", self._reader)
        out = {}
        for term in terms:
            postings = multi.getTermPostingsEnum(reader, "contents", lucene_term("contents", term).bytes())
            out[term] = int(postings.freq()) if postings is not None and postings.advance(int(row)) == row else 0
        return out

    @property
    def num_docs(self) -> int:
        return int(self._reader.numDocs())

    def _hits(self, top) -> list[tuple[int, float]]:
        # the TopDocs object itself is serialised: reading top.scoreDocs would wrap every hit in Python
        found = json.loads(self._mapper.writeValueAsString(top))["scoreDocs"]
        return [(d["doc"], d["score"]) for d in found]

    def _lucene_top(self, terms: dict[str, int], k: int) -> list[tuple[int, float]]:
        query = self._query(terms)
        fetch = k + max(TIE_MARGIN, k // 8)
        hits = self._hits(self._searcher.search(query, fetch))
        if len(hits) == fetch and hits[-1][1] == hits[k - 1][1]:
            # the documents tied with the k-th may go on past what was fetched: let Lucene pick by id
            hits = self._hits(self._searcher.search(query, int(k), self._sort, True))
        docids = self._docids
        ranked = sorted(((s, docids[d], d) for d, s in hits), key=lambda h: (-h[0], h[1]))[:k]
        return [(d, s) for s, _, d in ranked]

    def ranked_terms(self, terms: dict[str, int], k: int = 10) -> list[tuple[str, float]]:
        """The top ``k`` (doc id, score) of an already quantized query, by score then doc id, with
        Lucene's raw scores (integers) before Anserini's tie nudges: what shards' results merge on."""
        if k < 1:
            raise SettingError(f"k must be at least 1, not {k}")
        check_query(terms)
        if not terms:
            return []
        ranked = None
        if self.engine_for(k, len(terms)) == "blockmax":
            ranked = self._blockmax.top(terms, k, alpha=self.alpha, query_terms=self.query_terms)
        elif self._table is not None:
            ranked = self._table.top(terms, k, prune=self.prune)
        if ranked is None:
            ranked = self._lucene_top(terms, k)
        docids = self._docids
        return [(docids[d], s) for d, s in ranked]

    def engine_for(self, k: int, n_terms: int) -> str:
        """The engine a search for ``k`` hits with ``n_terms`` query terms runs on: the one asked for;
        with engine='auto', the block-max engine where the index has one, for k up to
        :data:`BLOCKMAX_MAX_K` and queries of at most :data:`BLOCKMAX_MAX_TERMS` terms on indexes of at
        least :data:`BLOCKMAX_MIN_DOCS` documents (where it measured faster than exhaustive scoring), else
        the memory engine where the index has an impact table, else Lucene. (A query the tables cannot
        answer exactly, with a weight below 1, still goes to Lucene.)"""
        if self._blockmax is None:
            return self.engine
        measured_faster = (k <= BLOCKMAX_MAX_K and n_terms <= BLOCKMAX_MAX_TERMS
                           and self._blockmax.num_docs >= BLOCKMAX_MIN_DOCS)
        return "blockmax" if self.engine == "blockmax" or measured_faster else self.engine

    def search_terms(self, terms: dict[str, int], k: int = 10) -> list[Hit]:
        """Search with an already quantized query."""
        return hits_of(self.ranked_terms(terms, k))

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_terms(self._encoder().encode(query), k)

    def batch_ranked_terms(self, queries: dict[str, dict[str, int]], k: int = 10,
                           threads: int = 1) -> dict[str, list[tuple[str, float]]]:
        """:meth:`ranked_terms` of many queries (``threads`` as in :meth:`batch_search_terms`)."""
        return _batch(self.ranked_terms, queries, k, threads)

    def batch_search_terms(self, queries: dict[str, dict[str, int]], k: int = 10,
                           threads: int = 1) -> dict[str, list[Hit]]:
        """Search many quantized queries; ``threads`` Python threads share the index, each taking an
        equal share of the queries (the memory engine's and Lucene's scoring run outside the GIL).
        Results keyed by qid in input order."""
        return _batch(self.search_terms, queries, k, threads)

    def batch_search(self, queries: Sequence[tuple[str, str]], k: int = 10, threads: int = 1,
                     progress: bool = False) -> dict[str, list[Hit]]:
        """Search (qid, text) pairs; results keyed by qid in input order."""
        return self.batch_search_terms(_encode_all(self._encoder(), queries, progress), k=k, threads=threads)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._directory.close()
            self._reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ShardError(SpladeLuceneError, RuntimeError):
    """A shard that kept failing: the search stops, naming it, and returns (writes) nothing."""


SHARD_WORKERS = ("local", "ray")


class ShardedSearcher:
    """One searcher over several shard indexes (``index --shard I/N`` builds them; so does any set of
    indexes of one model and settings with no document in two of them): ``Searcher([dir, ...])``.

    Each shard returns its top k by (score, doc id) with raw integer scores, and the shards' lists
    are merged on the same key: the global top k is within the union of the shards' top k, so the
    results equal the merged index's, hit for hit and score for score (Anserini's tie nudges are
    applied after the merge). ``workers="local"``: one :class:`Searcher` per shard in this process,
    searched side by side in threads; ``workers="ray"``: one Ray actor per shard (on the cluster at
    ``address``, or a local one), each opening its shard where it runs. Queries are encoded once, here.
    A shard that fails is retried ``retries`` times (a dead Ray actor is started again), then the
    search raises :class:`ShardError` naming it; nothing partial is returned.

    Inference-free ``idf`` indexes are refused: each shard's table holds its own postings' idf, not
    the whole collection's (merge the shards, which recomputes it).
    """

    def __init__(self, index_dirs: Sequence[str | Path], query_encoder: QueryEncoder | TableQueryEncoder | None = None,
                 *, model: str | Path | None = None, engine: str = "auto", pretokenized: bool = False,
                 prune: bool | None = None, workers: str = "local", address: str | None = None, retries: int = 2,
                 alpha: float = 1.0, query_terms: int | None = None):
        dirs = [Path(d) for d in index_dirs]
        if not dirs:
            raise SettingError("a sharded searcher needs at least one index")
        if workers not in SHARD_WORKERS:
            raise SettingError(f"workers must be one of {SHARD_WORKERS}, not {workers!r}")
        if engine not in ENGINES:
            raise SettingError(f"engine must be one of {ENGINES}, not {engine!r}")
        if retries < 0:
            raise SettingError(f"retries must be at least 0, not {retries}")
        if len({d.resolve() for d in dirs}) != len(dirs):
            raise SettingError("an index is named twice among the shards")
        metas = []
        for d in dirs:
            if not d.is_dir():
                raise NotFoundError(f"index {d} does not exist")
            metas.append(read_metadata(d))
        for key in (*MATCHING_KEYS, "query_mode", "query_table_sha256"):
            values = {json.dumps(m.get(key)) for m in metas}
            if len(values) > 1:
                shown = ", ".join(f"{d}: {m.get(key)!r}" for d, m in zip(dirs, metas))
                raise IncompatibleIndexError(f"the shards differ in {key} ({shown}); only indexes of the same "
                                             "encoder and settings search as one")
        if metas[0].get("query_mode") == "idf":
            raise IncompatibleIndexError("idf query tables are per shard (each the idf of its own postings, not the "
                                         "collection's): merge the shards (splade-lucene merge) to search them as one")
        if pretokenized:
            if query_encoder is not None or model is not None:
                raise SettingError("pretokenized=True searches encoded queries: pass no query encoder or model")
        else:
            query_encoder = query_encoder or QueryEncoder.from_index(dirs[0], model=model)
            for meta in metas:
                query_encoder.check(meta)
        self.query_encoder = query_encoder
        self.index_dirs = dirs
        self.workers = workers
        self.retries = retries
        self.engine = engine
        self._options = {"engine": engine, "prune": prune, "alpha": alpha, "query_terms": query_terms}
        self._shards: list = []
        self._ray = None
        try:
            if workers == "local":
                for d in dirs:
                    self._shards.append(Searcher(d, pretokenized=True, **self._options))
                shard_ids = [s.docids for s in self._shards]
            else:
                self._ray, _ = start_ray(address, workers=None if address else max(os.cpu_count() or 1, len(dirs)))
                self._actor = _shard_actor(self._ray)
                self._shards = [self._start(d) for d in dirs]
                shard_ids = self._ray.get([a.docids.remote() for a in self._shards])
        except BaseException:
            self.close()
            raise
        seen: dict[str, Path] = {}
        for d, ids in zip(dirs, shard_ids):
            for docid in ids:
                if docid in seen:
                    self.close()
                    raise IncompatibleIndexError(f"document {docid!r} is in both {seen[docid]} and {d}; shards "
                                                 "must not share documents")
                seen[docid] = d
        self.num_docs = len(seen)

    def _start(self, index_dir: Path):
        return self._actor.options(scheduling_strategy="SPREAD").remote(str(index_dir), self._options)

    def _encoder(self):
        if self.query_encoder is None:
            raise SettingError("this searcher was opened for pre-encoded queries (pretokenized=True): search "
                               "them with search_terms / batch_search_terms")
        return self.query_encoder

    def _shard_results(self, queries: dict[str, dict[str, int]], k: int, threads: int) -> list[dict]:
        """Every shard's {qid: [(doc id, raw score)]}, each shard retried where it fails."""
        if self.workers == "ray":
            return self._ray_results(queries, k, threads)
        from concurrent.futures import ThreadPoolExecutor

        def one(i: int) -> dict:
            for attempt in range(self.retries + 1):
                try:
                    return self._shards[i].batch_ranked_terms(queries, k, threads)
                except (SettingError, SettingTypeError):
                    raise
                except Exception as err:  # noqa: BLE001 - any failure of the shard is retried, then named
                    if attempt == self.retries:
                        raise ShardError(f"shard {self.index_dirs[i]} failed {attempt + 1} times: "
                                         f"{type(err).__name__}: {err}") from err
            raise AssertionError("unreachable")

        with ThreadPoolExecutor(max_workers=len(self._shards)) as pool:
            return list(pool.map(one, range(len(self._shards))))

    def _ray_results(self, queries, k, threads) -> list[dict]:
        ray = self._ray
        futures = [a.batch.remote(queries, k, threads) for a in self._shards]
        results: list = [None] * len(futures)
        for i, future in enumerate(futures):
            for attempt in range(self.retries + 1):
                try:
                    results[i] = ray.get(future)
                    break
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as err:
                    if isinstance(err, ray.exceptions.RayTaskError) and isinstance(
                            err.cause, (SettingError, SettingTypeError)):
                        raise err.cause from None
                    if attempt == self.retries:
                        raise ShardError(f"shard {self.index_dirs[i]} failed {attempt + 1} times: {err}") from None
                    # start the shard's actor again (it may have died with its process) and resend
                    ray.kill(self._shards[i], no_restart=True)
                    self._shards[i] = self._start(self.index_dirs[i])
                    future = self._shards[i].batch.remote(queries, k, threads)
        return results

    def batch_search_terms(self, queries: dict[str, dict[str, int]], k: int = 10,
                           threads: int = 1) -> dict[str, list[Hit]]:
        """Search many quantized queries on every shard (``threads`` per shard) and merge exactly."""
        _check_batch(queries, k, threads)
        per_shard = self._shard_results(queries, k, threads)
        out = {}
        for qid in queries:
            merged = sorted((hit for shard in per_shard for hit in shard[qid]), key=lambda h: (-h[1], h[0]))[:k]
            out[qid] = hits_of(merged)
        return out

    def search_terms(self, terms: dict[str, int], k: int = 10) -> list[Hit]:
        return self.batch_search_terms({"q": terms}, k)["q"]

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_terms(self._encoder().encode(query), k)

    def batch_search(self, queries: Sequence[tuple[str, str]], k: int = 10, threads: int = 1,
                     progress: bool = False) -> dict[str, list[Hit]]:
        return self.batch_search_terms(_encode_all(self._encoder(), queries, progress), k=k, threads=threads)

    def close(self) -> None:
        if self.workers == "ray" and self._ray is not None:
            for actor in self._shards:
                self._ray.kill(actor, no_restart=True)
        else:
            for shard in self._shards:
                shard.close()
        self._shards = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _shard_actor(ray):
    """The Ray actor class holding one shard's :class:`Searcher` (pre-encoded queries only)."""

    class Shard:
        def __init__(self, index_dir: str, options: dict):
            self.searcher = Searcher(index_dir, pretokenized=True, **options)

        def docids(self) -> list[str]:
            return self.searcher.docids

        def batch(self, queries, k, threads):
            return self.searcher.batch_ranked_terms(queries, k, threads)

    return ray.remote(num_cpus=1, max_restarts=0)(Shard)


def _encode_all(encoder, queries: Sequence[tuple[str, str]], progress: bool) -> dict[str, dict[str, int]]:
    from tqdm import tqdm

    encoded = {}
    for start in tqdm(range(0, len(queries), 256), desc="encode queries", disable=not progress, unit="batch"):
        chunk = queries[start:start + 256]
        for (qid, _), terms in zip(chunk, encoder.encode_batch([t for _, t in chunk])):
            encoded[qid] = terms
        fault_point("search.chunk")
    return encoded


def hits_of(ranked: Sequence[tuple[str, float]]) -> list[Hit]:
    """Hits from (doc id, raw score) pairs in rank order, with Anserini's tie nudges."""
    return [Hit(d, s) for (d, _), s in zip(ranked, adjust_ties([s for _, s in ranked]))]


def _check_batch(queries: dict[str, dict[str, int]], k: int, threads: int) -> None:
    if k < 1:
        raise SettingError(f"k must be at least 1, not {k}")
    if threads < 1:
        raise SettingError(f"threads must be at least 1, not {threads}")
    for terms in queries.values():
        check_query(terms)


def _batch(search, queries: dict[str, dict[str, int]], k: int, threads: int) -> dict:
    _check_batch(queries, k, threads)
    if threads == 1 or len(queries) < 2:
        return {qid: search(terms, k) for qid, terms in queries.items()}
    from concurrent.futures import ThreadPoolExecutor

    items = list(queries.items())
    shares = [items[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = dict(hit for share in pool.map(
            lambda share: [(qid, search(terms, k)) for qid, terms in share], shares) for hit in share)
    return {qid: found[qid] for qid in queries}


def run_lines(results: dict[str, list[Hit]], *, tag: str = DEFAULT_TAG, remove_query: bool = False,
              score_format: str = ".6f") -> Iterable[str]:
    """TREC run lines as Pyserini writes them (score with 6 decimals, ranks from 1)."""
    for qid, hits in results.items():
        if remove_query:
            hits = [h for h in hits if h.docid != qid]
        for rank, hit in enumerate(hits, 1):
            yield f"{qid} Q0 {hit.docid} {rank} {hit.score:{score_format}} {tag}\n"


def write_run(results: dict[str, list[Hit]], path: str | Path, *, tag: str = DEFAULT_TAG,
              remove_query: bool = False, score_format: str = ".6f", metadata: dict | None = None) -> None:
    """The TREC run file at ``path``; ``metadata`` (how the run was made: engine, approximate
    settings, k) goes beside it as ``PATH.json``."""
    with atomic_file(path) as fh:
        fh.writelines(run_lines(results, tag=tag, remove_query=remove_query, score_format=score_format))
    if metadata is not None:
        try:
            with atomic_file(f"{path}.json") as fh:
                fh.write(json.dumps(metadata, indent=2) + "\n")
        except BaseException:
            Path(path).unlink(missing_ok=True)  # a run without its record of how it was made is not left
            raise


def encode_queries(index_dir: str | Path, queries: str | Path, output: str | Path, *,
                   model: str | Path | None = None, overwrite: bool = False) -> dict[str, dict[str, int]]:
    """Encode a queries file with the index's query encoder (:meth:`QueryEncoder.from_index`: the
    model, or the table of a doc-only index) and write the quantized queries as TSV topics for plain
    Anserini (:func:`~splade_lucene.formats.collection.topic_line`; :func:`anserini_search_command` runs
    them). A query with no term is written with no term (Anserini then finds nothing for it, as we
    do). Returns {qid: terms}."""
    output = Path(output)
    with output_lock(output, "file"):
        if output.exists() and not overwrite:
            raise OutputExistsError(f"{output} already exists; pass --overwrite (overwrite=True) to replace it")
        items = read_queries(queries)
        encoder = QueryEncoder.from_index(index_dir, model=model)
        encoded = dict(zip([q for q, _ in items], encoder.encode_batch([t for _, t in items])))
        with atomic_file(output) as fh:
            for qid, terms in encoded.items():
                fh.write(topic_line(qid, terms))
    return encoded


def anserini_search_command(index_dir: str | Path, topics: str | Path, output: str | Path, *, hits: int = 1000,
                            threads: int = 1) -> list[str]:
    """Anserini's own ``SearchCollection`` on pre-encoded TSV topics, with the Java and the Anserini
    fatjar that ship with the installed packages: the same documents, ranks and scores as
    :class:`Searcher` (no project code runs)."""
    return [java.java_executable(), "-cp", str(java.anserini_jar()), "io.anserini.search.SearchCollection",
            "-index", str(index_dir), "-topics", str(topics), "-topicReader", "TsvString", "-output", str(output),
            "-impact", "-pretokenized", "-hits", str(hits), "-threads", str(threads)]


def vectors_matrix(vectors: Sequence, vocab_size: int):
    """Sparse vectors as a scipy CSR matrix, a row per vector: each a :class:`SparseVector` or an
    ``(ids, weights)`` pair (float weights, or integer ones from :func:`splade_lucene.core.quantize.quantize`)."""
    import scipy.sparse as sp

    pairs = [(v.ids, v.weights) if hasattr(v, "ids") else v for v in vectors]
    lengths = np.fromiter((len(ids) for ids, _ in pairs), dtype=np.int64, count=len(pairs))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.concatenate([np.asarray(i, dtype=np.int64) for i, _ in pairs]) if pairs else np.zeros(0, np.int64)
    values = np.concatenate([np.asarray(w, dtype=np.float64) for _, w in pairs]) if pairs else np.zeros(0)
    return sp.csr_matrix((values, ids, indptr), shape=(len(pairs), vocab_size))


def exact_search(queries, docs, qids: Sequence[str], docids: Sequence[str], k: int = DEFAULT_K) -> dict[str, list[Hit]]:
    """Brute-force retrieval: every document scored by its exact dot product with each query (float64).

    ``queries``, ``docs``: CSR matrices from :func:`vectors_matrix` over the same vocabulary. Returns
    the top ``k`` hits with a positive score per query, by score descending, ties by doc id
    descending (trec_eval's order). The reference the impact index is checked against.
    """
    block = max(1, _EXACT_BLOCK_CELLS // max(1, docs.shape[0]))
    docids_arr = np.asarray(docids, dtype=object)
    results: dict[str, list[Hit]] = {}
    for start in range(0, queries.shape[0], block):
        # (docs x vocab, sparse) @ (vocab x queries, dense): one pass over the documents per block
        scores = np.asarray(docs @ queries[start:start + block].T.toarray()).T
        for row, qid in zip(scores, qids[start:start + block]):
            positive = np.flatnonzero(row > 0)
            if len(positive) > k:
                # keep every document tied with the k-th score, then order exactly
                kth = np.partition(row[positive], len(positive) - k)[len(positive) - k]
                positive = positive[row[positive] >= kth]
            hits = sorted(zip(docids_arr[positive].tolist(), row[positive].tolist()),
                          key=lambda h: (h[1], h[0]), reverse=True)[:k]
            results[qid] = [Hit(d, sc) for d, sc in hits]
    return results
