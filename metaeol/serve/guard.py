"""Which requests are let in at all: trusted ``Host``, same-origin (or allowed) ``Origin``,
and JSON bodies on POST. Against DNS rebinding and cross-site requests from a browser
(a ``text/plain`` POST needs no CORS preflight, so a web page could send one)."""

from __future__ import annotations

from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import Response

from metaeol.serve.errors import APIError, shown

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_WILDCARD_BINDS = ("0.0.0.0", "::", "")


def allowed_hosts(bound_host: str, extra: Sequence[str]) -> list[str]:
    """The Host names a server bound to ``bound_host`` answers: localhost, the bound address and
    ``extra`` ("*": any). Bound to all interfaces with no ``extra``: any name, since the names
    it is reached by there cannot be known."""
    wildcard = bound_host in _WILDCARD_BINDS
    if wildcard and not extra:
        return ["*"]
    bound = [] if wildcard else [host_name(bound_host)]
    return list(dict.fromkeys([*LOCAL_HOSTS, *bound, *extra]))


def host_name(host: str) -> str:
    """``"Example.com:8000"`` -> ``"example.com"``; ``"[::1]:8000"`` -> ``"::1"``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware answering 400 (foreign Host), 403 (cross-origin) or 415 (POST body not
    JSON) before the app sees the request; ``answer`` renders the error (and counts it)."""

    def __init__(self, app: Any, *, allowed_hosts: Sequence[str], allowed_origins: Sequence[str],
                 answer: Callable[[APIError], Response]):
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.hosts = {host_name(h) for h in allowed_hosts}
        self.any_origin = "*" in allowed_origins
        self.origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.answer = answer

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            error = self.check(scope)
            if error is not None:
                await self.answer(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, scope: dict) -> APIError | None:
        """The error refusing this request, or None to let it in."""
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not self.any_host and host_name(host) not in self.hosts:
            return APIError(400, f"this server does not answer to the Host {shown(host)}; start it with "
                                 "--allowed-hosts to add that name", code="host_not_allowed")
        origin = headers.get("origin")
        if origin is not None and not self._origin_ok(origin, host):
            return APIError(403, f"cross-origin request from {shown(origin)} refused; start the server with "
                                 "--allowed-origins to let that web origin call it", code="origin_not_allowed")
        if scope["method"] == "POST":
            media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
            if media_type != "application/json":
                return APIError(415, f"the request body must be sent as application/json, not "
                                     f"{media_type or 'without a Content-Type'}", code="unsupported_media_type")
        return None

    def _origin_ok(self, origin: str, host: str) -> bool:
        origin = origin.rstrip("/").lower()
        if self.any_origin or origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()  # same origin
