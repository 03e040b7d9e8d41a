"""A real `metaeol serve` uvicorn server in a background thread, for the tests in tests/serve."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from metaeol.serve.app import ServeSettings
from metaeol.serve.server import make_server

KEY = "test-key"
NAME = "stories"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_TOKENS = 16  # the test encoder's --max-sentence-tokens


class LiveServer:
    """A real uvicorn server in a background thread, on a free port."""

    def __init__(self, encoder, **settings):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server(encoder, ServeSettings(**{"served_model_name": NAME, **settings}),
                                  log_level="warning")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except SystemExit:  # uvicorn's answer to a failed startup
            pass

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def post(self, body=None, headers=AUTH, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/embeddings", json=body, headers=headers, **{"timeout": 60, **kwargs})

    def metrics(self) -> dict[tuple[str, tuple], float]:
        text = httpx.get(f"{self.url}/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


def reference(encoder, texts) -> np.ndarray:
    return encoder.encode(list(texts), normalize_embeddings=True)


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
