"""What a server does, without the web: the named indexes it holds (opened once, swapped for a new
build without a pause), the checks a request passes, and the answers' JSON.

A request names an index by the name given at start-up (never a path). A reload opens every index
anew from the folders named at start-up (point a name at a symbolic link and switch the link to a
new build), swaps them in once all are open, and closes each old one when its last request ends:
requests in flight finish on the old build, new ones go to the new one, none fails. A build that
does not open leaves the old one serving.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from ..core.errors import SettingError, SpladeLuceneError, UnknownIdError
from ..core.faults import fault_point
from ..core.settings import setting
from ..formats.documents import DocumentStore
from ..formats.metadata import METADATA_FILE, read_metadata
from ..formats.trec import Hit
from ..search.bm25 import BM25Searcher
from ..search.engines import SearchSettings
from ..search.explain import corpus_path, document_vector, explain, wordpieces
from ..search.searcher import Searcher

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FIELDS = ("text", "terms")  # what a hit may carry beyond id, score and rank, on request
MAX_TERM_CHARS = 100  # longer than any WordPiece term


@dataclass(frozen=True)
class ServeSettings:
    """How a server listens and what it accepts."""

    host: str = setting("127.0.0.1", "address to listen on (loopback by default: no other machine can connect)")
    port: int = setting(8000, "port to listen on (0: a free one, printed at start)")
    workers: int = setting(1, "worker processes sharing the port, each opening the indexes once (the "
                              "memory-mapped tables are shared between them)")
    api_key_file: str | None = setting(None, "a file holding the key that every request but /healthz must carry "
                                             "(header 'Authorization: Bearer KEY' or 'X-API-Key: KEY')",
                                       default_help="none: no key")
    max_k: int = setting(1000, "the most hits a request may ask for")
    max_query_chars: int = setting(2000, "the longest query text accepted, in characters")
    max_query_terms: int = setting(1024, "the most terms a pre-encoded query may have")
    max_batch: int = setting(256, "the most queries in one /batch_search")
    max_body_bytes: int = setting(1_000_000, "the largest request body accepted, in bytes")
    timeout: float = setting(30.0, "seconds a request may run before it is answered 503")
    cors_origins: str | None = setting(None, "origins whose pages may call the API from script, comma-separated",
                                       default_help="none: CORS off")
    threads: int | None = setting(None, "torch threads each worker encodes queries with",
                                  default_help="cores / workers")

    def __post_init__(self):
        for name in ("workers", "max_k", "max_query_chars", "max_query_terms", "max_batch", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise SettingError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise SettingError(f"port must be 0-65535, not {self.port}")
        if not self.timeout > 0:
            raise SettingError(f"timeout must be above 0 seconds, not {self.timeout}")
        if self.threads is not None and self.threads < 1:
            raise SettingError(f"threads must be at least 1, not {self.threads}")
        self.api_key()  # a missing or short key is refused before anything starts

    def api_key(self) -> str | None:
        """The key in ``api_key_file`` (surrounding whitespace dropped); an empty file is refused."""
        if self.api_key_file is None:
            return None
        path = Path(self.api_key_file)
        if not path.is_file():
            raise SettingError(f"no API key file {path}")
        key = path.read_text(encoding="utf-8").strip()
        if len(key) < 16:
            raise SettingError(f"the API key in {path} is shorter than 16 characters")
        return key

    def origins(self) -> list[str]:
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]


@dataclass(frozen=True)
class ServeConfig:
    """Everything a server is started with: its indexes by name (the first the default), an optional
    BM25 index for the browser's side-by-side, how to search and how to listen. Passed whole to each
    worker process (:meth:`to_json`)."""

    indexes: tuple[tuple[str, str], ...]
    bm25: str | None = None
    search: SearchSettings = field(default_factory=SearchSettings)
    settings: ServeSettings = field(default_factory=ServeSettings)

    def __post_init__(self):
        if not self.indexes:
            raise SettingError("name at least one index to serve (--index DIR or --index NAME=DIR)")
        names = [n for n, _ in self.indexes]
        for name, path in self.indexes:
            if not NAME.match(name):
                raise SettingError(f"index name {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
            if not Path(path).is_dir():
                raise SettingError(f"index {name!r}: no folder {path}")
            read_metadata(path)  # an index this package built, or a clear error before any worker starts
        if len(set(names)) != len(names):
            raise SettingError(f"index names must differ: {', '.join(names)}")
        if self.bm25 is not None and not Path(self.bm25).is_dir():
            raise SettingError(f"no BM25 index folder {self.bm25}")

    @property
    def default_index(self) -> str:
        return self.indexes[0][0]

    def to_json(self) -> str:
        return json.dumps({"indexes": [list(i) for i in self.indexes], "bm25": self.bm25,
                           "search": dataclasses.asdict(self.search), "settings": dataclasses.asdict(self.settings)})

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        obj = json.loads(text)
        return cls(tuple(tuple(i) for i in obj["indexes"]), obj["bm25"], SearchSettings(**obj["search"]),
                   ServeSettings(**obj["settings"]))


def index_specs(specs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--index`` values, ``DIR`` (named after its folder) or ``NAME=DIR``, as (name, folder) pairs."""
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not NAME.match(name):
            name, path = Path(spec.rstrip("/")).name, spec
        out.append((name, path))
    return tuple(out)


class RequestError(SpladeLuceneError, ValueError):
    """A request the server refuses: the HTTP status, the field at fault, and why."""

    def __init__(self, field: str | None, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status

    def to_json(self) -> dict:
        return {"error": self.message, "field": self.field}


def build_id(index_dir: Path) -> str:
    """A short id of an index build: its metadata and its Lucene commit."""
    digest = hashlib.sha256((index_dir / METADATA_FILE).read_bytes())
    for commit in sorted(p.name for p in index_dir.glob("segments_*")):
        digest.update(commit.encode())
    return digest.hexdigest()[:12]


class ServedIndex:
    """One index as a server holds it: its searcher, its corpus's documents where the corpus is still
    where the index records it, its build id and the generation it was opened in."""

    def __init__(self, name: str, path: str, search: SearchSettings, generation: int):
        self.name, self.generation = name, generation
        folder = Path(path).resolve()
        self.build = build_id(folder)
        self.searcher = Searcher(folder, engine=search.engine, prune=search.prune, alpha=search.alpha,
                                 query_terms=search.query_terms)
        try:
            corpus = corpus_path(self.searcher)
            self.documents = DocumentStore(corpus) if corpus is not None else None
        except BaseException:
            self.searcher.close()
            raise
        self.active = 0
        self.retired = False

    @property
    def tokenizer(self):
        return self.searcher.query_encoder.tokenizer if self.searcher.query_encoder is not None else None

    def describe(self) -> dict:
        meta = self.searcher.metadata
        return {"name": self.name, "build": self.build, "generation": self.generation,
                "documents": self.searcher.num_docs, "engine": self.searcher.engine,
                "model": Path(str(meta.get("query_model", meta.get("model", "")))).name,
                "query_mode": meta.get("query_mode", "full"), "texts": self.documents is not None}

    def close(self) -> None:
        self.searcher.close()


class _Pending:
    __slots__ = ("encoder", "text", "result", "error", "done")

    def __init__(self, encoder, text: str):
        self.encoder, self.text = encoder, text
        self.result: dict[str, int] | None = None
        self.error: BaseException | None = None
        self.done = False


class QueryBatcher:
    """Encodes the query texts of concurrent requests together: a request whose text arrives while
    another batch is being encoded waits, and the first of the waiting requests then encodes every
    waiting text of the same encoder (at most ``limit``, its own among them) in one forward pass.
    Alone, a request encodes its text at once; under load, batches form by themselves. One encoding
    runs at a time (the tokenizer is not thread-safe, and each pass already uses the worker's torch
    threads). A text's weights do not depend on the batch it is encoded in (tested)."""

    def __init__(self, limit: int = 32):
        self.limit = limit
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._busy = False

    @property
    def waiting(self) -> int:
        """Texts waiting for a batch."""
        with self._cond:
            return len(self._pending)

    def encode(self, encoder, text: str) -> dict[str, int]:
        item = _Pending(encoder, text)
        with self._cond:
            self._pending.append(item)
            while self._busy and not item.done:
                self._cond.wait()
            if not item.done:
                self._busy = True
                same = [p for p in self._pending if p.encoder is encoder and p is not item][:self.limit - 1]
                batch = same + [item]
                taken = set(map(id, batch))
                self._pending = [p for p in self._pending if id(p) not in taken]
        if not item.done:
            try:
                results = encoder.encode_batch([p.text for p in batch])
                for p, r in zip(batch, results):
                    p.result = r
            except BaseException as exc:
                for p in batch:
                    p.error = exc
            finally:
                with self._cond:
                    for p in batch:
                        p.done = True
                    self._busy = False
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error
        return item.result


class Library:
    """The named indexes of a server (:class:`ServedIndex`), used through :meth:`use` and swapped by
    :meth:`reload`. Query texts are encoded through one :class:`QueryBatcher`."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.generation = 0
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self.batcher = QueryBatcher()
        self._indexes = self._open(1)
        self.generation = 1
        self.bm25 = BM25Searcher(config.bm25) if config.bm25 else None

    def _open(self, generation: int) -> dict[str, ServedIndex]:
        opened: dict[str, ServedIndex] = {}
        try:
            for name, path in self.config.indexes:
                opened[name] = ServedIndex(name, path, self.config.search, generation)
        except BaseException:
            for served in opened.values():
                served.close()
            raise
        return opened

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.config.indexes]

    def describe(self) -> list[dict]:
        with self.use_all() as indexes:
            return [s.describe() for s in indexes]

    @contextmanager
    def use(self, name: str | None) -> Iterator[ServedIndex]:
        """The index named ``name`` (None: the default one), kept open until the block ends."""
        name = self.config.default_index if name is None else name
        with self._lock:
            served = self._indexes.get(name)
            if served is None:
                raise RequestError("index", f"no index named {name!r}; this server has: {', '.join(self.names)}", 404)
            served.active += 1
        try:
            yield served
        finally:
            self._release([served])

    @contextmanager
    def use_all(self) -> Iterator[list[ServedIndex]]:
        with self._lock:
            held = list(self._indexes.values())
            for served in held:
                served.active += 1
        try:
            yield held
        finally:
            self._release(held)

    def _release(self, held: list[ServedIndex]) -> None:
        closing = []
        with self._lock:
            for served in held:
                served.active -= 1
                if served.retired and served.active == 0:
                    closing.append(served)
        for served in closing:
            served.close()

    def reload(self) -> int:
        """Open every index anew and swap them in; the new generation. Raises (the old indexes still
        serving) where a new build does not open."""
        with self._reload_lock:
            fresh = self._open(self.generation + 1)
            closing = []
            with self._lock:
                old, self._indexes = self._indexes, fresh
                self.generation += 1
                for served in old.values():
                    served.retired = True
                    if served.active == 0:
                        closing.append(served)
            for served in closing:
                served.close()
            return self.generation

    def in_memory(self, name: str | None) -> bool:
        """Whether the index named ``name`` answers from its memory-mapped impact table (an unknown
        name: False, and the search then refuses it)."""
        with self._lock:
            served = self._indexes.get(self.config.default_index if name is None else name)
            return served is not None and served.searcher.table is not None

    def encode(self, served: ServedIndex, text: str) -> dict[str, int]:
        encoder = served.searcher.query_encoder
        if encoder is None:
            raise RequestError("query", f"index {served.name!r} takes pre-encoded queries only ('terms')")
        return self.batcher.encode(encoder, text)

    def close(self) -> None:
        with self._lock:
            held, self._indexes = list(self._indexes.values()), {}
        for served in held:
            served.close()
        if self.bm25 is not None:
            self.bm25.close()


# ---- requests: pure checks, each naming the field at fault -------------------------------------


def check_k(k, settings: ServeSettings) -> int:
    if not isinstance(k, int) or isinstance(k, bool):
        raise RequestError("k", f"k must be an integer, not {k!r}")
    if not 1 <= k <= settings.max_k:
        raise RequestError("k", f"k must be between 1 and {settings.max_k}, not {k}")
    return k


def check_text(text, settings: ServeSettings, name: str = "query") -> str:
    if not isinstance(text, str):
        raise RequestError(name, f"{name} must be a string")
    if not text.strip():
        raise RequestError(name, f"{name} is empty")
    if len(text) > settings.max_query_chars:
        raise RequestError(name, f"{name} is {len(text)} characters long; the limit is {settings.max_query_chars}",
                           413)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise RequestError(name, f"{name} holds a lone surrogate, which is no Unicode character")
    return text


def check_terms(terms, settings: ServeSettings, name: str = "terms") -> dict[str, int]:
    if not isinstance(terms, dict) or not terms:
        raise RequestError(name, f"{name} must be a non-empty object of term: integer weight")
    if len(terms) > settings.max_query_terms:
        raise RequestError(name, f"{name} has {len(terms)} terms; the limit is {settings.max_query_terms}", 413)
    for term, weight in terms.items():
        if not isinstance(term, str) or not term or len(term) > MAX_TERM_CHARS:
            raise RequestError(name, f"{name}: each term must be a string of 1 to {MAX_TERM_CHARS} characters")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight < 2 ** 31:
            raise RequestError(name, f"{name}: the weight of {term!r} must be a positive integer below 2^31, "
                                     f"not {weight!r}")
    return dict(terms)


def check_fields(fields, name: str = "fields") -> frozenset[str]:
    if fields is None:
        return frozenset()
    if isinstance(fields, str):
        fields = [f for f in fields.split(",") if f]
    if not isinstance(fields, (list, tuple)) or not all(isinstance(f, str) for f in fields):
        raise RequestError(name, f"{name} must be a list of: {', '.join(FIELDS)}")
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise RequestError(name, f"unknown {name} {', '.join(map(repr, unknown))}; known: {', '.join(FIELDS)}")
    return frozenset(fields)


def check_docid(docid) -> str:
    if not isinstance(docid, str) or not docid or len(docid) > 1000:
        raise RequestError("docid", "docid must be a string of 1 to 1000 characters")
    return docid


@dataclass(frozen=True)
class Query:
    """One checked query: text to encode, or pre-encoded terms; how many hits; which index; what
    each hit carries."""

    text: str | None
    terms: dict[str, int] | None
    k: int
    index: str | None
    fields: frozenset[str]


def query_of(obj: dict, settings: ServeSettings, *, prefix: str = "") -> Query:
    """A :class:`Query` from a request's fields (``query`` or ``terms``, ``k``, ``index``, ``fields``)."""
    text, terms = obj.get("query"), obj.get("terms")
    if (text is None) == (terms is None):
        raise RequestError(f"{prefix}query", "give exactly one of 'query' (text) and 'terms' (pre-encoded)")
    k = check_k(obj.get("k", 10), settings)
    index = obj.get("index")
    if index is not None and not isinstance(index, str):
        raise RequestError(f"{prefix}index", "index must be a name")
    return Query(None if text is None else check_text(text, settings, f"{prefix}query"),
                 None if terms is None else check_terms(terms, settings, f"{prefix}terms"), k, index,
                 check_fields(obj.get("fields"), f"{prefix}fields"))


# ---- answers ------------------------------------------------------------------------------------


def run_query(library: Library, query: Query) -> dict:
    """Search one checked query; the answer's JSON object."""
    with library.use(query.index) as served:
        fault_point("serve.request")
        terms = query.terms if query.terms is not None else library.encode(served, query.text)
        hits = served.searcher.search_terms(terms, query.k)
        return answer(served, query, terms, hits)


def answer(served: ServedIndex, query: Query, terms: dict[str, int], hits: list[Hit]) -> dict:
    out = {"index": served.name, "build": served.build, "generation": served.generation,
           "hits": [hit_record(served, h, rank, terms, query.fields) for rank, h in enumerate(hits, 1)]}
    if "terms" in query.fields:
        out["query_terms"] = term_records(terms, query.text, served.tokenizer)
    return out


def term_records(terms: dict[str, int], text: str | None, tokenizer) -> list[dict]:
    """A query's terms, heaviest first, each marked as an expansion where the text lacks it (None
    where the text is not known: pre-encoded queries)."""
    pieces = wordpieces(tokenizer, text) if text is not None and tokenizer is not None else None
    return [{"term": t, "weight": w, "expansion": None if pieces is None else t not in pieces}
            for t, w in sorted(terms.items(), key=lambda kv: (-kv[1], kv[0]))]


def hit_record(served: ServedIndex, hit: Hit, rank: int, terms: dict[str, int], fields: frozenset[str]) -> dict:
    record: dict = {"rank": rank, "docid": hit.docid, "score": hit.score}
    doc = served.documents.get(hit.docid) if served.documents is not None and fields else None
    if "text" in fields:
        record["title"] = doc.title if doc is not None else None
        record["text"] = doc.text if doc is not None else None
    if "terms" in fields:
        vector = document_vector(served.searcher, hit.docid) or {}
        pieces = wordpieces(served.tokenizer, doc.text) if doc is not None and served.tokenizer is not None else None
        matched = [{"term": t, "query_weight": w, "doc_weight": vector[t], "contribution": w * vector[t],
                    "expansion": None if pieces is None else t not in pieces}
                   for t, w in terms.items() if vector.get(t)]
        matched.sort(key=lambda m: (-m["contribution"], m["term"]))
        record["matched"] = matched
        record["expansions"] = None if pieces is None else [t for t in vector if t not in pieces][:50]
    return record


def document_record(library: Library, index: str | None, docid: str) -> dict:
    docid = check_docid(docid)
    with library.use(index) as served:
        if served.documents is None:
            raise RequestError("index", f"index {served.name!r} has no corpus at hand: its documents' texts "
                                        "cannot be shown", 404)
        try:
            doc = served.documents[docid]
        except UnknownIdError:
            raise RequestError("docid", f"no document {docid!r} in index {served.name!r}", 404) from None
        return {"index": served.name, "docid": doc.id, "title": doc.title, "text": doc.text}


def explain_record(library: Library, query: Query, docid: str) -> dict:
    docid = check_docid(docid)
    with library.use(query.index) as served:
        terms = query.terms if query.terms is not None else library.encode(served, query.text)
        try:
            served.searcher.docid_row(docid)
        except UnknownIdError:
            raise RequestError("docid", f"no document {docid!r} in index {served.name!r}", 404) from None
        if served.searcher.query_encoder is None:
            raise RequestError("index", f"index {served.name!r} has no tokenizer to explain with")
        ex = explain(served.searcher, terms, docid, documents=served.documents)
        return {"index": served.name, "build": served.build, **ex.to_json()}


def bm25_hits(library: Library, text: str, k: int) -> list[dict] | None:
    """BM25's hits for a query text, where the server holds a BM25 index."""
    if library.bm25 is None:
        return None
    return [{"rank": r, "docid": h.docid, "score": h.score} for r, h in enumerate(library.bm25.search(text, k), 1)]
