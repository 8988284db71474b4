"""Running the HTTP server: one process, or a supervisor and worker processes sharing one socket
(uvicorn's), each worker opening the indexes once.

Signals: SIGTERM (or Ctrl-C) drains: the socket closes, requests in flight finish, the process
exits. SIGHUP reloads the indexes in every worker (each opens the new builds, then swaps:
:meth:`~splade_lucene.serving.service.Library.reload`); a worker that dies is replaced.
"""

from __future__ import annotations

import os
import signal
import sys

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from .http import SUPERVISOR_ENV, create_app
from .service import ServeConfig

CONFIG_ENV = "SPLADE_LUCENE_SERVE_CONFIG"  # the config, as JSON, for worker processes


def app_from_environment():
    """The app a worker process runs (uvicorn imports it by name)."""
    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))


class Supervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, with SIGHUP reloading each worker's indexes in place
    (uvicorn's own SIGHUP replaces the workers) and SIGTERM closing the listening socket first, so
    that new connections are refused while the workers drain."""

    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None and process.process.is_alive():
                os.kill(process.pid, signal.SIGUSR1)

    def handle_term(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().handle_term()

    handle_int = handle_term


def uvicorn_config(config: ServeConfig) -> uvicorn.Config:
    s = config.settings
    return uvicorn.Config(f"{__name__}:app_from_environment", factory=True, host=s.host, port=s.port,
                          workers=s.workers, log_level="warning", access_log=False, lifespan="on",
                          server_header=False, timeout_graceful_shutdown=int(s.timeout) + 5,
                          timeout_worker_healthcheck=30)


def serve(config: ServeConfig) -> None:
    """Serve ``config``'s indexes until SIGTERM or Ctrl-C. Prints ``listening on http://HOST:PORT``
    once the socket is bound, and one ``ready`` line for each worker once it has opened the indexes."""
    os.environ[CONFIG_ENV] = config.to_json()
    settings = config.settings
    config.settings.api_key()  # refuse a missing or short key before any worker starts
    uv = uvicorn_config(config)
    sock = uv.bind_socket()
    host, port = sock.getsockname()[:2]
    print(f"splade-lucene serve: listening on http://{host}:{port} with {settings.workers} worker"
          f"{'s' if settings.workers > 1 else ''}", file=sys.stderr, flush=True)
    if settings.workers == 1:
        os.environ.pop(SUPERVISOR_ENV, None)
        uvicorn.Server(uv).run(sockets=[sock])
    else:
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
        Supervisor(uv, [sock]).run()
