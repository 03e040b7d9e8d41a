"""Reading and decoding request bodies: bounded in size and time, never a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.requests import ClientDisconnect, Request

from metaeol.serve.errors import APIError, shown

# A child of uvicorn's error logger: its lines go where (and in the format) uvicorn's go.
log = logging.getLogger("uvicorn.error.metaeol")


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body: 413 over ``limit`` bytes (checked on Content-Length before reading),
    408 when it does not arrive within ``timeout_s``, 499 when the client hangs up meanwhile."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise APIError(400, f"invalid Content-Length header {shown(declared)}")
    if declared is not None and int(declared) > limit:
        raise APIError(413, f"the request body ({declared} bytes) is over this server's limit of {limit} bytes "
                            "(--max-request-bytes)", code="request_too_large")
    try:
        body = await asyncio.wait_for(_collect(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout_s:g} s (--body-timeout)",
                       code="request_timeout", headers={"Connection": "close"}) from None
    except ClientDisconnect:
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s closed the connection while sending its request body (answered 499)", client)
        raise APIError(499, "the client closed the connection while sending its request body",
                       code="client_closed_request") from None
    if not body:
        raise APIError(400, "the request body is empty; send a JSON object", code="invalid_json")
    return body


async def _collect(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the request body is over this server's limit of {limit} bytes "
                                "(--max-request-bytes)", code="request_too_large")
    return bytes(body)


def decode_json(body: bytes) -> Any:
    """``body`` decoded as JSON; 400 when it is not JSON, is nested too deeply or holds a number
    too long to convert."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise APIError(400, f"the request body is not valid JSON: {err}", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply to decode; an embeddings request needs at most "
                            "3 levels (an object holding a list of token-id lists)", code="invalid_json") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise APIError(400, f"the request body cannot be decoded: {err}", code="invalid_json") from None
