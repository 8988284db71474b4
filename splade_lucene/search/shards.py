"""Several shard indexes searched as one, locally or on Ray, merged exactly; and
:func:`open_searcher`, the door that opens one index or several."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..core.errors import NotFoundError, SettingError, SettingTypeError, SpladeLuceneError
from ..encoding.distributed import start_ray
from ..formats.metadata import MATCHING_KEYS, IncompatibleIndexError, read_metadata
from ..formats.trec import Hit
from .batch import check_batch
from .encoders import QueryEncoder, encode_all, open_query_encoder
from .engines import SearchSettings
from .searcher import Searcher
from .ties import hits_of


class ShardError(SpladeLuceneError, RuntimeError):
    """A shard that kept failing: the search stops, naming it, and returns (writes) nothing."""


EXECUTORS = ("local", "ray")



class ShardedSearcher:
    """One searcher over several shard indexes (``index --shard I/N`` builds them; so does any set of
    indexes of one model and settings with no document in two of them).

    Each shard returns its top k by (score, doc id) with raw integer scores, and the shards' lists
    are merged on the same key: the global top k is within the union of the shards' top k, so the
    results equal the merged index's, hit for hit and score for score (Anserini's tie nudges are
    applied after the merge). ``executor="local"``: one :class:`Searcher` per shard in this process,
    searched side by side in threads; ``executor="ray"``: one Ray actor per shard (on the cluster at
    ``address``, or a local one), each opening its shard where it runs. Queries are encoded once, here.
    A shard that fails is retried ``retries`` times (a dead Ray actor is started again), then the
    search raises :class:`ShardError` naming it; nothing partial is returned.

    Inference-free ``idf`` indexes are refused: each shard's table holds its own postings' idf, not
    the whole collection's (merge the shards, which recomputes it).
    """

    def __init__(self, index_dirs: Sequence[str | Path], query_encoder: QueryEncoder | None = None,
                 *, model: str | Path | None = None, engine: str = "auto", pretokenized: bool = False,
                 prune: bool | None = None, executor: str = "local", address: str | None = None, retries: int = 2,
                 alpha: float = 1.0, query_terms: int | None = None):
        dirs = [Path(d) for d in index_dirs]
        if not dirs:
            raise SettingError("a sharded searcher needs at least one index")
        if executor not in EXECUTORS:
            raise SettingError(f"executor must be one of {EXECUTORS}, not {executor!r}")
        settings = SearchSettings(engine=engine, prune=prune, alpha=alpha, query_terms=query_terms)
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
        query_encoder = open_query_encoder(dirs[0], metas, query_encoder, model=model, pretokenized=pretokenized)
        self.query_encoder = query_encoder
        self.index_dirs = dirs
        self.executor = executor
        self.retries = retries
        self.engine = engine
        self.settings = settings
        self._shards: list = []
        self._ray = None
        try:
            if executor == "local":
                for d in dirs:
                    self._shards.append(Searcher(d, pretokenized=True, **settings.record()))
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
        return self._actor.options(scheduling_strategy="SPREAD").remote(str(index_dir), self.settings.record())

    def _encoder(self):
        if self.query_encoder is None:
            raise SettingError("this searcher was opened for pre-encoded queries (pretokenized=True): search "
                               "them with search_terms / batch_search_terms")
        return self.query_encoder

    def _shard_results(self, queries: dict[str, dict[str, int]], k: int, threads: int) -> list[dict]:
        """Every shard's {qid: [(doc id, raw score)]}, each shard retried where it fails."""
        if self.executor == "ray":
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
        check_batch(queries, k, threads)
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
        return self.batch_search_terms(encode_all(self._encoder(), queries, progress), k=k, threads=threads)

    def close(self) -> None:
        if self.executor == "ray" and self._ray is not None:
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


def open_searcher(index: str | Path | Sequence[str | Path], query_encoder: QueryEncoder | None = None,
                  **options) -> Searcher | ShardedSearcher:
    """A :class:`Searcher` over one index, or a :class:`ShardedSearcher` over several (a list of
    one opens that one index); ``options`` as the class takes them."""
    if isinstance(index, (list, tuple)):
        if len(index) != 1:
            return ShardedSearcher(index, query_encoder, **options)
        index = index[0]
    return Searcher(index, query_encoder, **options)
