"""Run the app under uvicorn; SIGTERM or Ctrl-C stops accepting, finishes accepted requests, exits 0."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from metaeol.serve.app import ServeSettings, create_app


def run(encoder: Any, settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000,
        log_level: str = "info", access_log: bool = False, sock: socket.socket | None = None) -> bool:
    """Serve ``encoder`` until a shutdown signal; return whether the server started."""
    config = uvicorn.Config(create_app(encoder, settings), host=host, port=port, log_level=log_level,
                            access_log=access_log, timeout_graceful_shutdown=None)
    server = uvicorn.Server(config)
    server.run(sockets=[sock] if sock is not None else None)
    return server.started
