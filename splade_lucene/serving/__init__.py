"""Serving indexes: the indexes a server holds and swaps (service), its metrics, the HTTP API and the
result browser (FastAPI on uvicorn: http, page), the worker processes (server), and MCP tools (mcp)."""
