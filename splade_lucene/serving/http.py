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
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Request
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


def create_app(config: ServeConfig, library: Library | None = None) -> FastAPI:
    """The app over ``config``'s indexes, opened when the app starts (or the ``library`` given,
    which the caller closes)."""
    settings = config.settings
    metrics = Metrics()
    state: dict[str, Any] = {"library": library}
    reloading = asyncio.Lock()

    async def reload() -> int:
        async with reloading:
            try:
                generation = await anyio.to_thread.run_sync(state["library"].reload)
            except Exception:
                metrics.reload_failures += 1
                raise
            metrics.generation = generation
            print(f"splade-lucene serve: worker {os.getpid()} reloaded: generation {generation}",
                  file=sys.stderr, flush=True)
            return generation

    def on_signal() -> None:
        async def run():
            try:
                await reload()
            except Exception as exc:  # the old build keeps serving
                print(f"splade-lucene serve: worker {os.getpid()} reload failed: {exc}", file=sys.stderr, flush=True)
        asyncio.get_running_loop().create_task(run())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own = state["library"] is None
        if own:
            import torch

            torch.set_num_threads(settings.threads or max(1, (os.cpu_count() or 1) // settings.workers))
            state["library"] = await anyio.to_thread.run_sync(Library, config)
        metrics.generation = state["library"].generation
        loop = asyncio.get_running_loop()
        signals = [signal.SIGUSR1] + ([signal.SIGHUP] if not os.environ.get(SUPERVISOR_ENV) else [])
        handled = []
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                loop.add_signal_handler(sig, on_signal)
                handled.append(sig)
        print(f"splade-lucene serve: worker {os.getpid()} ready: generation {metrics.generation}, indexes "
              f"{', '.join(state['library'].names)}", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            if own:
                state["library"].close()

    app = FastAPI(title="splade-lucene", version=version("splade-lucene"), lifespan=lifespan,
                  description="SPLADE search over Lucene impact indexes: exact top-k, Anserini's scores.")

    def lib() -> Library:
        return state["library"]

    async def call(fn, *args, inline: bool = False) -> Response:
        """``fn``'s JSON answer (serialized here: FastAPI's generic encoder would walk every hit
        again), computed in a worker thread under the request time limit, or, ``inline``, on the
        event loop: for searches of pre-encoded queries in an impact table, which take a fraction of
        a millisecond, less than the hop to a thread and back."""
        def run():
            return json.dumps(fn(*args), ensure_ascii=False, separators=(",", ":")).encode()
        if inline:
            return Response(run(), media_type="application/json")
        try:
            with anyio.fail_after(settings.timeout):
                body = await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        except TimeoutError:
            raise RequestError(None, f"the request ran past the {settings.timeout:g} s limit", 503) from None
        return Response(body, media_type="application/json")

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        return _error(exc.status, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        status = 400 if first.get("type") == "json_invalid" else 422
        if status == 400:
            return _error(400, "the body is not valid JSON", "body")
        return _error(422, str(first.get("msg")), _field_of(first.get("loc", ())))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if isinstance(exc.__cause__, RequestError):  # raised while FastAPI read the body: the size limit
            return _error(exc.__cause__.status, exc.__cause__.message, exc.__cause__.field)
        if exc.status_code == 400:  # FastAPI's answer to a body it cannot decode
            return _error(400, "the body is not UTF-8 JSON", "body")
        return _error(exc.status_code, str(exc.detail), None)

    @app.exception_handler(UnicodeDecodeError)
    async def not_utf8(request: Request, exc: UnicodeDecodeError):
        return _error(400, "the request is not UTF-8", "body")

    @app.get("/healthz")
    async def healthz():
        """Liveness, without the API key: the worker answers and has its indexes open."""
        return {"status": "ok", "generation": lib().generation, "indexes": lib().names}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/indexes")
    async def indexes():
        """The indexes this server holds: name, build id, generation, documents, engine, model."""
        return {"indexes": await call(lib().describe)}

    def get_query(q, terms, k, index, fields) -> Query:
        return query_of({"query": q, "terms": terms, "k": k, "index": index, "fields": fields}, settings)

    @app.get("/search")
    async def search_get(q: Annotated[str, Param(description="the query's text")],
                         k: Annotated[int, Param(description="how many hits")] = 10,
                         index: str | None = None,
                         fields: Annotated[str | None, Param(description="'text', 'terms', comma-separated")] = None):
        """Search with a query text."""
        return await call(run_query, lib(), get_query(q, None, k, index, fields))

    @app.post("/search")
    async def search_post(body: SearchBody):
        """Search with a query text or pre-encoded terms."""
        query = query_of(body.model_dump(), settings)
        return await call(run_query, lib(), query, inline=query.terms is not None and not query.fields
                          and lib().in_memory(query.index))

    @app.post("/batch_search")
    async def batch_search(body: BatchBody):
        """Search many queries; results by qid, in the order given."""
        if not body.queries:
            raise RequestError("queries", "queries is empty")
        if len(body.queries) > settings.max_batch:
            raise RequestError("queries", f"{len(body.queries)} queries; the limit is {settings.max_batch}", 413)
        qids = [q.qid for q in body.queries]
        if len(set(qids)) != len(qids):
            raise RequestError("queries", "query ids (qid) must differ")
        queries = [query_of({**q.model_dump(exclude={"qid"}), "k": body.k, "index": body.index,
                             "fields": body.fields}, settings, prefix=f"queries.{i}.")
                   for i, q in enumerate(body.queries)]

        def run() -> dict:
            results = {qid: run_query(lib(), q) for qid, q in zip(qids, queries)}
            first = next(iter(results.values()))
            return {"index": first["index"], "build": first["build"], "generation": first["generation"],
                    "results": {qid: r["hits"] for qid, r in results.items()}}

        return await call(run)

    @app.get("/doc/{docid:path}")
    async def document(docid: str, index: str | None = None):
        """A document's id, title and text, from the corpus the index was built from."""
        return await call(document_record, lib(), index, docid)

    @app.get("/explain")
    async def explain_get(q: str, docid: str, index: str | None = None):
        """Why a document scores what it does for a query: each shared term's query weight x document
        weight, summing to Lucene's score, expansions marked."""
        return await call(explain_record, lib(), get_query(q, None, 10, index, None), docid)

    @app.post("/explain")
    async def explain_post(body: ExplainBody):
        query = query_of(body.model_dump(exclude={"docid"}), settings)
        return await call(explain_record, lib(), query, body.docid)

    @app.post("/admin/reload", status_code=200)
    async def admin_reload():
        """Reopen every index from the folders named at start-up; requests in flight finish on the
        old build. With several workers, every worker reloads (the answer comes before they finish)."""
        supervisor = os.environ.get(SUPERVISOR_ENV)
        if supervisor:
            os.kill(int(supervisor), signal.SIGHUP)
            return JSONResponse({"status": "reloading", "workers": settings.workers}, status_code=202)
        try:
            generation = await reload()
        except Exception as exc:
            return _error(503, f"reload failed, the old build still serves: {exc}", None)
        return {"status": "reloaded", "generation": generation}

    @app.get("/", response_class=HTMLResponse)
    async def browser(q: str | None = None, index: str | None = None, k: str | None = None):
        """The result browser."""
        library = lib()
        name = index if index in library.names else library.config.default_index
        shown = 10
        if not q:
            return HTMLResponse(render(names=library.names, index=name))
        try:
            shown = check_k(int(k) if k and k.strip().isdigit() else 10, settings)
            query = query_of({"query": check_text(q, settings), "k": min(shown, 100), "index": name,
                              "fields": ["text", "terms"]}, settings)
            result = json.loads((await call(run_query, library, query)).body)
            bm25 = json.loads((await call(_bm25_with_texts, library, name, q, query.k)).body)
        except RequestError as err:
            return HTMLResponse(render(names=library.names, index=name, query=q, k=shown, error=err.message),
                                status_code=err.status)
        return HTMLResponse(render(names=library.names, index=name, query=q, k=query.k, result=result, bm25=bm25))

    app.add_middleware(Guard, key=settings.api_key(), max_body=settings.max_body_bytes, metrics=metrics)
    if settings.origins():
        app.add_middleware(CORSMiddleware, allow_origins=settings.origins(), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    return app


def _bm25_with_texts(library: Library, name: str, text: str, k: int) -> list[dict] | None:
    hits = bm25_hits(library, text, k)
    if hits is None:
        return None
    with library.use(name) as served:
        for h in hits:
            doc = served.documents.get(h["docid"]) if served.documents is not None else None
            h["title"], h["text"] = (doc.title, doc.text) if doc is not None else (None, None)
    return hits
