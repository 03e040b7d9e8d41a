"""Run the app under uvicorn; SIGTERM or Ctrl-C stops accepting, finishes accepted requests, exits 0."""

from __future__ import annotations

import signal
from typing import Any

import uvicorn

from metaeol.serve.app import ServeSettings, create_app


def make_server(encoder: Any, settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000,
                log_level: str = "info", access_log: bool = False) -> uvicorn.Server:
    """A uvicorn server for ``encoder``; ``.run()`` serves until a shutdown signal (or ``should_exit``)."""
    config = uvicorn.Config(create_app(encoder, settings), host=host, port=port, log_level=log_level,
                            access_log=access_log, timeout_graceful_shutdown=None)
    return uvicorn.Server(config)


def run(encoder: Any, settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000,
        log_level: str = "info", access_log: bool = False) -> bool:
    """Serve ``encoder`` until a shutdown signal; return whether the server started."""
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
    return server.started
