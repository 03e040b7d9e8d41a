"""Run the app under uvicorn; SIGTERM or Ctrl-C stops accepting, finishes accepted requests
(for at most ``shutdown_timeout_s``), exits 0."""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any, Callable

import uvicorn

from metaeol.serve.app import ServeSettings, create_app


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app as soon as a shutdown starts (``on_shutdown``);
    ``worker_running()`` says whether the model's thread still runs a batch after it."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None], worker_running: Callable[[], bool]):
        super().__init__(config)
        self.on_shutdown = on_shutdown
        self.worker_running = worker_running

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_shutdown()
        await super().shutdown(sockets=sockets)


def make_server(encoder: Any, settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000,
                log_level: str = "info", access_log: bool = False) -> uvicorn.Server:
    """A uvicorn server for ``encoder``; ``.run()`` serves until a shutdown signal (or ``should_exit``).

    When a shutdown starts, batches waiting for company run at once and new requests get 503; requests still
    running after ``settings.shutdown_timeout_s`` are cancelled.
    """
    app = create_app(encoder, settings, bound_host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=settings.shutdown_timeout_s)
    return _Server(config, on_shutdown=app.state.begin_shutdown, worker_running=app.state.worker_running)


def run(encoder: Any, settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000,
        log_level: str = "info", access_log: bool = False) -> bool:
    """Serve ``encoder`` until a shutdown signal; return whether the server started.

    If the model's thread still runs a batch when ``settings.shutdown_timeout_s`` is over, the
    process exits at once (status 0): letting the interpreter finalize under a running torch
    thread aborts it.
    """
    server = make_server(encoder, settings, host=host, port=port, log_level=log_level, access_log=access_log)

    def stop(signum: int, frame: Any) -> None:
        server.should_exit = True

    # uvicorn handles SIGINT/SIGTERM while it runs, then re-raises them to the handlers it found:
    # ours turns that into a normal return (exit status 0) instead of a death by signal.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if server.worker_running():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if server.started else 1)
    return server.started
