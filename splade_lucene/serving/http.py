"""The HTTP API and the result browser (FastAPI), a thin layer over :mod:`splade_lucene.serving.service`.

Routes: ``GET|POST /search``, ``POST /batch_search``, ``GET /doc/{docid}``, ``GET|POST /explain``,
``GET /indexes``, ``GET /healthz``, ``GET /metrics`` (Prometheus), ``POST /admin/reload``, ``GET /``
(the browser), ``GET /openapi.json`` and ``/docs``. Every refusal is a 4xx whose JSON names the field
at fault (``{"error": ..., "field": ...}``); the guard in front of the app checks the API key (in
constant time) and the body's size before any route runs, and times every request for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import signal
import sys
import threading
import time
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Annotated

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi import Query as Param
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.exceptions import HTTPException

from .metrics import Metrics
from .page import render
from .service import (
    Library,
    Query,
    RequestError,
    ServeConfig,
    bm25_hits,
    check_k,
    check_text,
    document_record,
    explain_record,
    query_of,
    run_query,
)

ROUTES = ("/search", "/batch_search", "/doc", "/explain", "/indexes", "/healthz", "/metrics", "/admin/reload",
          "/openapi.json", "/docs")
# set by the supervisor of several workers: a worker asked to reload signals it, and it signals all
SUPERVISOR_ENV = "SPLADE_LUCENE_SERVE_SUPERVISOR"


class SearchBody(BaseModel):
    """One query: ``query`` (text, encoded by the index's model) or ``terms`` (pre-encoded integer
    weights, as `splade-lucene encode-queries` writes them), never both."""

    model_config = ConfigDict(extra="forbid")
    query: str | None = Field(None, description="the query's text")
    terms: dict[str, StrictInt] | None = Field(None, description="pre-encoded query: {term: integer weight}")
    k: StrictInt = Field(10, description="how many hits")
    index: str | None = Field(None, description="the index's name (default: the first the server was started with)")
    fields: list[str] | None = Field(None, description="what each hit carries beyond id, score and rank: "
                                                       "'text' (the document), 'terms' (matched terms, expansions)")


class BatchQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    qid: str
    query: str | None = None
    terms: dict[str, StrictInt] | None = None


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[BatchQuery]
    k: StrictInt = 10
    index: str | None = None
    fields: list[str] | None = None


class ExplainBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    docid: str
    query: str | None = None
    terms: dict[str, StrictInt] | None = None
    index: str | None = None


def _route(path: str) -> str:
    if path == "/":
        return "/"
    head = "/" + path.lstrip("/").split("/", 1)[0]
    if path.startswith("/admin/"):
        head = path
    return head if head in ROUTES else "other"


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


class BodyTooLarge(RequestError):
    pass


class Guard:
    """ASGI middleware: the API key, the body size limit, and the metrics of every request."""

    def __init__(self, app, *, key: str | None, max_body: int, metrics: Metrics):
        self.app, self.max_body, self.metrics = app, max_body, metrics
        self.key = key.encode() if key else None

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if given is None and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        if given is None and auth[:6].lower() == b"basic ":  # a browser's login box: any user, the key as password
            try:
                given = base64.b64decode(auth[6:].strip(), validate=True).partition(b":")[2]
            except ValueError:
                given = None
        return given is not None and hmac.compare_digest(given, self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = _route(scope["path"])
        status = [500]
        started = time.perf_counter()
        self.metrics.started()

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            headers = dict(scope["headers"])
            if self.key is not None and route != "/healthz" and not self._authorized(headers):
                response = _error(401, "this server needs its API key: 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                                  None, {"WWW-Authenticate": 'Basic realm="splade-lucene"'})
                return await response(scope, receive, send_status)
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                return await _error(413, f"the request body is over {self.max_body} bytes", "body")(
                    scope, receive, send_status)
            seen = 0

            async def counted():
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.max_body:
                        raise BodyTooLarge("body", f"the request body is over {self.max_body} bytes", 413)
                return message

            await self.app(scope, counted, send_status)
        finally:
            self.metrics.finished(route, status[0], time.perf_counter() - started)


def _field_of(loc) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or None


class Worker:
    """What one worker process serves with: its settings, its indexes (opened when the app starts,
    unless given), its metrics and its reloads. The routes reach it as ``request.app.state.worker``."""

    def __init__(self, config: ServeConfig, library: Library | None):
        self.config, self.settings = config, config.settings
        self.library: Library = library  # type: ignore[assignment]  # set by the lifespan where None
        self.own = library is None
        self.metrics = Metrics()
        self._reloading = asyncio.Lock()

    async def reload(self) -> int:
        async with self._reloading:
            try:
                generation = await anyio.to_thread.run_sync(self.library.reload)
            except Exception:
                self.metrics.reload_failures += 1
                raise
            self.metrics.generation = generation
            say(f"reloaded: generation {generation}")
            return generation

    def on_signal(self) -> None:
        async def run():
            try:
                await self.reload()
            except Exception as exc:  # the old build keeps serving
                say(f"reload failed: {exc}")
        asyncio.get_running_loop().create_task(run())

    @asynccontextmanager
    async def lifespan(self, app: FastAPI):
        if self.own:
            import torch

            torch.set_num_threads(self.settings.threads or max(1, (os.cpu_count() or 1) // self.settings.workers))
            self.library = await anyio.to_thread.run_sync(Library, self.config)
        self.metrics.generation = self.library.generation
        loop = asyncio.get_running_loop()
        signals = [signal.SIGUSR1] + ([signal.SIGHUP] if not os.environ.get(SUPERVISOR_ENV) else [])
        handled = []
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                loop.add_signal_handler(sig, self.on_signal)
                handled.append(sig)
        say(f"ready: generation {self.metrics.generation}, indexes {', '.join(self.library.names)}")
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            if self.own:
                self.library.close()

    async def compute(self, fn, *args):
        """``fn(*args)`` in a worker thread, under the request time limit."""
        try:
            with anyio.fail_after(self.settings.timeout):
                return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        except TimeoutError:
            raise RequestError(None, f"the request ran past the {self.settings.timeout:g} s limit", 503) from None

    async def call(self, fn, *args, inline: bool = False) -> Response:
        """``fn``'s JSON answer (serialized here: FastAPI's generic encoder would walk every hit
        again), computed by :meth:`compute`, or, ``inline``, on the event loop: for searches of
        pre-encoded queries in an impact table, which take a fraction of a millisecond, less than the
        hop to a thread and back."""
        def run():
            return json.dumps(fn(*args), ensure_ascii=False, separators=(",", ":")).encode()
        return Response(run() if inline else await self.compute(run), media_type="application/json")

    def query(self, **fields) -> Query:
        return query_of(fields, self.settings)


def say(message: str) -> None:
    print(f"splade-lucene serve: worker {os.getpid()} {message}", file=sys.stderr, flush=True)


def create_app(config: ServeConfig, library: Library | None = None) -> FastAPI:
    """The app over ``config``'s indexes, opened when the app starts (or the ``library`` given,
    which the caller closes)."""
    worker = Worker(config, library)
    app = FastAPI(title="splade-lucene", version=version("splade-lucene"), lifespan=worker.lifespan,
                  description="SPLADE search over Lucene impact indexes: exact top-k, Anserini's scores.")
    app.state.worker = worker
    app.add_exception_handler(RequestError, refused)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(UnicodeDecodeError, not_utf8)
    app.include_router(router)
    app.add_middleware(Guard, key=config.settings.api_key(), max_body=config.settings.max_body_bytes,
                       metrics=worker.metrics)
    if config.settings.origins():
        app.add_middleware(CORSMiddleware, allow_origins=config.settings.origins(), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    return app


# ---- refusals: a JSON error naming the field ----------------------------------------------------


async def refused(request: Request, exc: RequestError):
    return _error(exc.status, exc.message, exc.field)


async def invalid(request: Request, exc: RequestValidationError):
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return _error(400, "the body is not valid JSON", "body")
    return _error(422, str(first.get("msg")), _field_of(first.get("loc", ())))


async def http_error(request: Request, exc: HTTPException):
    if isinstance(exc.__cause__, RequestError):  # raised while FastAPI read the body: the size limit
        return _error(exc.__cause__.status, exc.__cause__.message, exc.__cause__.field)
    if exc.status_code == 400:  # FastAPI's answer to a body it cannot decode
        return _error(400, "the body is not UTF-8 JSON", "body")
    return _error(exc.status_code, str(exc.detail), None)


async def not_utf8(request: Request, exc: UnicodeDecodeError):
    return _error(400, "the request is not UTF-8", "body")


# ---- routes -------------------------------------------------------------------------------------

router = APIRouter()


def worker_of(request: Request) -> Worker:
    return request.app.state.worker


@router.get("/healthz")
async def healthz(request: Request):
    """Liveness, without the API key: the worker answers and has its indexes open."""
    library = worker_of(request).library
    return {"status": "ok", "generation": library.generation, "indexes": library.names}


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(request: Request):
    return PlainTextResponse(worker_of(request).metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/indexes")
async def indexes(request: Request):
    """The indexes this server holds: name, build id, generation, documents, engine, model."""
    library = worker_of(request).library
    return await worker_of(request).call(lambda: {"indexes": library.describe()})


@router.get("/search")
async def search_get(request: Request, q: Annotated[str, Param(description="the query's text")],
                     k: Annotated[int, Param(description="how many hits")] = 10, index: str | None = None,
                     fields: Annotated[str | None, Param(description="'text', 'terms', comma-separated")] = None):
    """Search with a query text."""
    worker = worker_of(request)
    return await worker.call(run_query, worker.library, worker.query(query=q, k=k, index=index, fields=fields))


@router.post("/search")
async def search_post(request: Request, body: SearchBody):
    """Search with a query text or pre-encoded terms."""
    worker = worker_of(request)
    query = worker.query(**body.model_dump())
    inline = query.terms is not None and not query.fields and worker.library.in_memory(query.index)
    return await worker.call(run_query, worker.library, query, inline=inline)


@router.post("/batch_search")
async def batch_search(request: Request, body: BatchBody):
    """Search many queries; results by qid, in the order given."""
    worker = worker_of(request)
    if not body.queries:
        raise RequestError("queries", "queries is empty")
    if len(body.queries) > worker.settings.max_batch:
        raise RequestError("queries", f"{len(body.queries)} queries; the limit is {worker.settings.max_batch}", 413)
    qids = [q.qid for q in body.queries]
    if len(set(qids)) != len(qids):
        raise RequestError("queries", "query ids (qid) must differ")
    queries = [query_of({**q.model_dump(exclude={"qid"}), "k": body.k, "index": body.index, "fields": body.fields},
                        worker.settings, prefix=f"queries.{i}.") for i, q in enumerate(body.queries)]
    return await worker.call(batch_answer, worker.library, dict(zip(qids, queries)))


def batch_answer(library: Library, queries: dict[str, Query]) -> dict:
    results = {qid: run_query(library, q) for qid, q in queries.items()}
    first = next(iter(results.values()))
    return {"index": first["index"], "build": first["build"], "generation": first["generation"],
            "results": {qid: r["hits"] for qid, r in results.items()}}


@router.get("/doc/{docid:path}")
async def document(request: Request, docid: str, index: str | None = None):
    """A document's id, title and text, from the corpus the index was built from."""
    worker = worker_of(request)
    return await worker.call(document_record, worker.library, index, docid)


@router.get("/explain")
async def explain_get(request: Request, q: str, docid: str, index: str | None = None):
    """Why a document scores what it does for a query: each shared term's query weight x document
    weight, summing to Lucene's score, expansions marked."""
    worker = worker_of(request)
    return await worker.call(explain_record, worker.library, worker.query(query=q, index=index), docid)


@router.post("/explain")
async def explain_post(request: Request, body: ExplainBody):
    worker = worker_of(request)
    return await worker.call(explain_record, worker.library, worker.query(**body.model_dump(exclude={"docid"})),
                             body.docid)


@router.post("/admin/reload", status_code=200)
async def admin_reload(request: Request):
    """Reopen every index from the folders named at start-up; requests in flight finish on the
    old build. With several workers, every worker reloads (the answer comes before they finish)."""
    worker = worker_of(request)
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor:
        os.kill(int(supervisor), signal.SIGHUP)
        return JSONResponse({"status": "reloading", "workers": worker.settings.workers}, status_code=202)
    try:
        generation = await worker.reload()
    except Exception as exc:
        return _error(503, f"reload failed, the old build still serves: {exc}", None)
    return {"status": "reloaded", "generation": generation}


@router.get("/", response_class=HTMLResponse)
async def browser(request: Request, q: str | None = None, index: str | None = None, k: str | None = None):
    """The result browser."""
    worker = worker_of(request)
    library, settings = worker.library, worker.settings
    name = index if index in library.names else library.config.default_index
    shown = 10
    if not q:
        return HTMLResponse(render(names=library.names, index=name))
    try:
        shown = check_k(int(k) if k and k.strip().isdigit() else 10, settings)
        query = worker.query(query=check_text(q, settings), k=min(shown, 100), index=name, fields=["text", "terms"])
        result = await worker.compute(run_query, library, query)
        bm25 = await worker.compute(_bm25_with_texts, library, name, q, query.k)
    except RequestError as err:
        return HTMLResponse(render(names=library.names, index=name, query=q, k=shown, error=err.message),
                            status_code=err.status)
    return HTMLResponse(render(names=library.names, index=name, query=q, k=query.k, result=result, bm25=bm25))


def _bm25_with_texts(library: Library, name: str, text: str, k: int) -> list[dict] | None:
    hits = bm25_hits(library, text, k)
    if hits is None:
        return None
    with library.use(name) as served:
        for h in hits:
            doc = served.documents.get(h["docid"]) if served.documents is not None else None
            h["title"], h["text"] = (doc.title, doc.text) if doc is not None else (None, None)
    return hits
