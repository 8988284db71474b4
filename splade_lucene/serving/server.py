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
    """The app a worker process runs (uvicorn imports it by name). A worker of a supervisor stops
    with it: on Linux the kernel sends it SIGTERM (it drains) when the supervisor dies."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor:
        stop_with_parent()
        if os.getppid() != int(supervisor):  # the supervisor died before the request was made
            sys.exit("splade-lucene serve: the supervisor is gone")
    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))


def stop_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux's
    PR_SET_PDEATHSIG; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG = 1


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


def listening_socket(uv: uvicorn.Config):
    """The server's socket, bound and already listening: a client that connects before a worker is
    ready waits in the backlog instead of being refused."""
    sock = uv.bind_socket()
    sock.listen(uv.backlog)
    return sock


def run_drained(uv: uvicorn.Config, sock) -> None:
    """Run one uvicorn server on ``sock`` until SIGTERM or Ctrl-C, then return once it has drained
    (uvicorn re-raises the signal it caught once it has stopped: here it finds a handler that lets
    the command end with status 0, as a drained server should)."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(uv).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(config: ServeConfig) -> None:
    """Serve ``config``'s indexes until SIGTERM or Ctrl-C. Prints ``listening on http://HOST:PORT``
    once the socket listens (requests wait until a worker is ready), and one ``ready`` line for each
    worker once it has opened the indexes."""
    os.environ[CONFIG_ENV] = config.to_json()
    settings = config.settings
    uv = uvicorn_config(config)
    sock = listening_socket(uv)
    host, port = sock.getsockname()[:2]
    print(f"splade-lucene serve: listening on http://{host}:{port} with {settings.workers} worker"
          f"{'s' if settings.workers > 1 else ''}", file=sys.stderr, flush=True)
    if settings.workers == 1:
        os.environ.pop(SUPERVISOR_ENV, None)
        run_drained(uv, sock)
    else:
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
        Supervisor(uv, [sock]).run()
