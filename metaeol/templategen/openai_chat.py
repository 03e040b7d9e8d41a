"""Generator: any OpenAI-compatible ``/chat/completions`` endpoint, over stdlib HTTP.

Works with hosted APIs and local servers (vLLM, llama.cpp ``llama-server``, Ollama):
``base_url`` is what the OpenAI SDK would take, e.g. ``http://localhost:8000/v1``.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from metaeol.templategen.errors import (
    AuthenticationError,
    GenerationError,
    MalformedReplyError,
    ServerUnreachableError,
)
from metaeol.templategen.instructions import Message

log = logging.getLogger(__name__)


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _excerpt(raw: bytes | str, limit: int = 300) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class OpenAIChat:
    """Chat completions from ``{base_url}/chat/completions``.

    ``timeout`` bounds each socket wait (connect, and each read) in seconds. Connection
    errors, timeouts, HTTP 408/429 and 5xx are retried ``retries`` times, waiting
    ``backoff`` seconds and doubling each time (capped at ``max_backoff``; a 429's
    ``Retry-After`` is honoured up to that cap). 401/403 and other 4xx are not retried.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def describe(self) -> dict[str, Any]:
        """What to record about this generator in a generated set."""
        return {"generator": "openai", "model": self.model, "base_url": self.base_url}

    def complete(
        self, messages: list[Message], *, temperature: float, seed: int | None, max_tokens: int | None
    ) -> str:
        """The assistant's reply text to ``messages``."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return self._content(self._post(json.dumps(body).encode("utf-8")))

    def _post(self, payload: bytes) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            unreachable = True
            try:
                with urlopen(Request(self.url, payload, headers, method="POST"), timeout=self.timeout) as resp:
                    return resp.read()
            except HTTPError as err:
                detail = _excerpt(err.read())
                if err.code in (401, 403):
                    raise AuthenticationError(
                        f"{self.url} rejected the API key (HTTP {err.code}): {detail}"
                    ) from None
                if not _retryable(err.code):
                    hint = " (is the base URL right? it usually ends in /v1)" if err.code == 404 else ""
                    raise GenerationError(f"{self.url} answered HTTP {err.code}{hint}: {detail}") from None
                unreachable = False
                failure = f"HTTP {err.code}: {detail}"
                retry_after = err.headers.get("Retry-After", "")
                if retry_after.replace(".", "", 1).isdigit():
                    delay = min(float(retry_after), self.max_backoff)
            except TimeoutError:
                failure = f"no reply within {self.timeout:g} s"
            except URLError as err:
                is_timeout = isinstance(err.reason, TimeoutError)
                failure = f"no reply within {self.timeout:g} s" if is_timeout else f"cannot connect: {err.reason}"
            except (ConnectionError, http.client.HTTPException) as err:
                failure = f"connection failed: {err!r}"
            if attempt < attempts:
                log.warning(
                    "%s: attempt %d/%d failed (%s); retrying in %.1f s", self.url, attempt, attempts, failure, delay
                )
                time.sleep(delay)
        error = ServerUnreachableError if unreachable else GenerationError
        raise error(f"{self.url}: gave up after {attempts} attempt(s); last error: {failure}")

    def _content(self, raw: bytes) -> str:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MalformedReplyError(f"{self.url} did not answer with JSON: {_excerpt(raw)!r}") from None
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise MalformedReplyError(
                f"{self.url} answered without choices[0].message.content: {_excerpt(raw)!r}"
            ) from None
        if not isinstance(content, str):
            raise MalformedReplyError(
                f"{self.url} answered with no text content (finish_reason={choice.get('finish_reason')!r})"
            )
        return content
