"""The pipeline every measurement runs: encode a corpus, index it, search judged queries, evaluate.

:func:`run_pipeline` is what ``experiment``, training's dev evaluation, ``reproduce`` and the sweep
scripts share. It writes into one folder: ``collection/``, ``index/``, ``run.trec`` and
``metrics.json``. What is already built with the same inputs is kept: a collection whose recorded
settings (corpus by path, size and modification time, model, options) are the ones asked for is
not encoded again, and an index built from that collection with the same query mode is not built
again (``reuse=True``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..encoding.local import encode_corpus, write_vectors
from ..encoding.model import SpladeEncoder
from ..encoding.pooling import SparseVector
from ..encoding.writing import collection_metadata, corpus_sha256
from ..formats.collection import COLLECTION_METADATA_FILE
from ..formats.metadata import METADATA_FILE, CollectionOptions, read_collection_metadata, read_metadata
from ..formats.trec import DEFAULT_K, Qrels, read_run, write_run
from ..indexing.build import build_index
from ..search.encoders import QueryEncoder, encode_all
from ..search.engines import SearchSettings
from ..search.searcher import Searcher
from .metrics import evaluate, write_metrics


@dataclass
class PipelineResult:
    output: Path
    collection: Path
    index_dir: Path
    run_file: Path
    metrics: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    index_metadata: dict = field(default_factory=dict)
    encoded: dict[str, dict[str, int]] = field(default_factory=dict)  # the judged queries, as searched
    reused: tuple[str, ...] = ()

    @property
    def mean_terms_per_query(self) -> float:
        return sum(len(q) for q in self.encoded.values()) / max(1, len(self.encoded))

    @property
    def mean_terms_per_document(self) -> float:
        stats = self.index_metadata["index_stats"]
        return stats["postings"] / max(1, stats["documents"])


def judged(queries: Sequence[tuple[str, str]], qrels: Qrels) -> list[tuple[str, str]]:
    """The queries that ``qrels`` judges, in their order: the ones a run is made and scored for."""
    return [(qid, text) for qid, text in queries if qid in qrels]


def query_encoder_for(index_dir: Path, encoder: SpladeEncoder | None = None):
    """The query encoder an index wants (:meth:`QueryEncoder.from_index`), reusing ``encoder`` where
    the index's queries take that model."""
    return QueryEncoder.from_index(index_dir, encoder=encoder)


COUNTS = ("documents", "empty_documents", "truncated_documents", "model_path", "corpus", "corpus_sha256")


def built_from(collection: Path, corpus: Path, encoder: SpladeEncoder, options: CollectionOptions) -> bool:
    """Whether ``collection`` is what encoding ``corpus`` with ``encoder`` and ``options`` writes: its
    ``collection.meta`` records the same corpus (by the sha256 of its bytes; a collection written
    before that was recorded: by its path, and written after the corpus last changed), model and
    settings."""
    meta = read_collection_metadata(collection)
    if not meta or not meta.get("corpus"):
        return False
    if meta.get("corpus_sha256"):
        if meta["corpus_sha256"] != corpus_sha256(corpus):
            return False
    elif Path(meta["corpus"]).resolve() != corpus.resolve() or \
            corpus.stat().st_mtime_ns > (collection / COLLECTION_METADATA_FILE).stat().st_mtime_ns:
        return False
    wanted = collection_metadata(encoder, [], options)
    return all(meta.get(k) == v for k, v in wanted.items() if k not in COUNTS)


def run_pipeline(corpus: str | Path, queries: Sequence[tuple[str, str]], qrels: Qrels, output: str | Path, *,
                 encoder: SpladeEncoder, options: CollectionOptions | None = None,
                 search: SearchSettings | None = None, k: int = DEFAULT_K, threads: int = 1,
                 query_mode: str | None = None, remove_query: bool = True, reuse: bool = False,
                 progress: bool = True, warn: bool = True,
                 vectors: Iterable[tuple[str, SparseVector]] | None = None) -> PipelineResult:
    """Encode ``corpus`` with ``encoder`` and ``options`` into ``OUTPUT/collection``, index it
    (``query_mode``: the index's, default: what the model was trained for), search the judged
    ``queries`` with the query encoder the index wants and the ``search`` settings (``k`` hits,
    ``threads``), write ``OUTPUT/run.trec`` and score it against ``qrels`` into
    ``OUTPUT/metrics.json``. ``remove_query``: hits whose doc id is the query id are dropped (BEIR).
    ``vectors``: the corpus's (doc id, float vector) pairs, already encoded by ``encoder`` (a sweep
    encodes once and writes them with each setting's options), written instead of encoding ``corpus``."""
    corpus, output = Path(corpus), Path(output)
    options = options or CollectionOptions()
    search = search or SearchSettings()
    collection, index_dir, run_file = output / "collection", output / "index", output / "run.trec"
    seconds: dict[str, float] = {}
    reused: list[str] = []

    t = time.perf_counter()
    if reuse and vectors is None and built_from(collection, corpus, encoder, options):
        reused.append("collection")
    elif vectors is not None:
        write_vectors(vectors, collection, encoder=encoder, options=options, corpus=corpus, overwrite=True,
                      progress=progress)
    else:
        encode_corpus(corpus, collection, encoder=encoder, options=options, overwrite=True, progress=progress)
    seconds["encode"] = time.perf_counter() - t

    t = time.perf_counter()
    if reused and (index_dir / METADATA_FILE).is_file() and query_mode in (
            None, read_metadata(index_dir).get("query_mode")):
        reused.append("index")
    else:
        build_index(collection, index_dir, threads=threads, overwrite=True, quiet=not progress, query_mode=query_mode)
    seconds["index"] = time.perf_counter() - t

    t = time.perf_counter()
    query_encoder = query_encoder_for(index_dir, encoder)
    queries = judged(queries, qrels)
    encoded = encode_all(query_encoder, queries, progress)
    with Searcher(index_dir, query_encoder, **search.record()) as searcher:
        results = searcher.batch_search_terms(encoded, k=k, threads=threads)
        corpus_ids = set(searcher.docids)
    write_run(results, run_file, remove_query=remove_query)
    seconds["search"] = time.perf_counter() - t

    metrics = evaluate(qrels, read_run(run_file), remove_query=remove_query, corpus_ids=corpus_ids,
                       warn=warn).metrics
    write_metrics(metrics, output / "metrics.json")
    return PipelineResult(output, collection, index_dir, run_file, metrics, seconds, read_metadata(index_dir),
                          encoded, tuple(reused))
