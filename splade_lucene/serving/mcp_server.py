"""The Model Context Protocol server: the same search over MCP, for agents, with the official SDK
(``mcp``): tools ``search``, ``get_document``, ``explain`` and ``list_indexes``, over stdio or
streamable HTTP. A refused argument is a tool error naming the field."""

from __future__ import annotations

import functools
import sys
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from .http import Guard
from .metrics import Metrics
from .server import listening_socket, run_drained
from .service import Library, RequestError, ServeConfig, document_record, explain_record, query_of, run_query

INSTRUCTIONS = ("Search document collections with SPLADE (learned sparse retrieval on Lucene). `search` "
                "takes a natural-language query and returns the top documents with their scores and texts; "
                "`get_document` returns one document by id; `explain` shows which terms made a document score.")


def refusals(fn):
    """A tool whose refusals (:class:`RequestError`) reach the agent as tool errors naming the field."""
    @functools.wraps(fn)
    def tool(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RequestError as err:
            raise ToolError(f"{err.field}: {err.message}" if err.field else err.message) from None
    return tool


def mcp_server(library: Library) -> MCPServer:
    settings = library.config.settings
    server = MCPServer("splade-lucene", instructions=INSTRUCTIONS)

    @server.tool()
    @refusals
    def search(query: str, k: int = 10, index: str | None = None, include_text: bool = True) -> dict[str, Any]:
        """Search an index with a query text; the top k documents (id, score, rank; title and text
        where include_text), best first."""
        fields = ["text"] if include_text else []
        return run_query(library, query_of({"query": query, "k": k, "index": index, "fields": fields}, settings))

    @server.tool()
    @refusals
    def get_document(docid: str, index: str | None = None) -> dict[str, Any]:
        """One document's id, title and text."""
        return document_record(library, index, docid)

    @server.tool()
    @refusals
    def explain(query: str, docid: str, index: str | None = None) -> dict[str, Any]:
        """Why a document scores what it does for a query: each shared term's query weight times
        document weight (they sum to the score), terms the document's text lacks marked as expansions."""
        return explain_record(library, query_of({"query": query, "index": index}, settings), docid)

    @server.tool()
    @refusals
    def list_indexes() -> dict[str, Any]:
        """The indexes this server holds (name, build id, number of documents, model)."""
        return {"indexes": library.describe()}

    return server


def run_mcp(config: ServeConfig, transport: str = "stdio") -> None:
    """Serve MCP over ``stdio`` or ``http`` (streamable HTTP at ``/mcp`` on the config's host and port,
    behind the HTTP server's guard: the API key where one is given, the body size limit; prints
    ``listening on http://HOST:PORT/mcp`` once bound)."""
    library = Library(config)
    try:
        server = mcp_server(library)
        if transport == "stdio":
            anyio.run(server.run_stdio_async)
            return
        s = config.settings
        app = Guard(server.streamable_http_app(max_request_body_size=s.max_body_bytes, host=s.host),
                    key=s.api_key(), max_body=s.max_body_bytes, metrics=Metrics())
        uv = uvicorn.Config(app, host=s.host, port=s.port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=int(s.timeout) + 5)
        sock = listening_socket(uv)
        host, port = sock.getsockname()[:2]
        print(f"splade-lucene mcp: listening on http://{host}:{port}/mcp", file=sys.stderr, flush=True)
        run_drained(uv, sock)
    finally:
        library.close()
