"""Run the app under uvicorn; SIGTERM or Ctrl-C stops accepting, finishes accepted requests
(for at most ``shutdown_timeout_s``), exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from typing import Any, Callable

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from metaeol.serve.app import ServeSettings, create_app


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when a shutdown starts (``on_shutdown``);
    ``worker_running()`` says whether the model's thread still runs a batch after it."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None], worker_running: Callable[[], bool]):
        super().__init__(config)
        self.on_shutdown = on_shutdown
        self.worker_running = worker_running

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_shutdown()
        await super().shutdown(sockets=sockets)


class _HeaderDeadline:
    """Mixin for uvicorn's HTTP protocol: close a connection whose request headers do not
    arrive within ``header_timeout_s`` (uvicorn has no such deadline: a client that connects
    and sends nothing, or half its headers, would hold its connection for ever)."""

    header_timeout_s: float
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self._in_request():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self._in_request():  # keep-alive: the next request's headers get the same deadline
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _in_request(self) -> bool:
        cycle = self.cycle  # type: ignore[attr-defined]
        return cycle is not None and not cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)  # type: ignore[attr-defined]

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        transport = self.transport  # type: ignore[attr-defined]
        if not self._in_request() and not transport.is_closing():
            transport.close()


def make_server(encoder: Any, settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000,
                log_level: str = "info", access_log: bool = False) -> uvicorn.Server:
    """A uvicorn server for ``encoder``; ``.run()`` serves until a shutdown signal (or ``should_exit``).

    A client has ``settings.body_timeout_s`` to send its request headers, then as long for
    its body. On shutdown, requests still running after ``settings.shutdown_timeout_s`` are
    cancelled (and answered 503).
    """
    app = create_app(encoder, settings, bound_host=host)
    protocol = type("HTTPProtocol", (_HeaderDeadline, AutoHTTPProtocol), {"header_timeout_s": settings.body_timeout_s})
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log, http=protocol,
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
