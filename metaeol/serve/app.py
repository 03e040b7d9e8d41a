"""The ASGI app: routes, authentication, errors and the model's lifecycle."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from metaeol.serve.batcher import Batcher, Closing, QueueFull
from metaeol.serve.errors import APIError
from metaeol.serve.inputs import InputPreparer
from metaeol.serve.metrics import Metrics
from metaeol.serve.schema import EmbeddingRequest, embeddings_body, parse_request

_PROBE_TEXT = "A health check probe."
_PROBE_TIMEOUT_S = 120.0


@dataclass
class ServeSettings:
    """Server behaviour (the ``metaeol serve`` options other than the encoder's)."""

    served_model_name: str
    api_key: str | None = None
    max_batch_tokens: int | None = None  # cap of one batch: 4096 input tokens on CPU, 16384 on a GPU
    target_batch_ms: float | None = 1000.0  # batches sized to take about this long (None: always the cap)
    max_wait_ms: float = 5.0
    max_queue: int = 512
    max_inputs_per_request: int = 2048
    truncate: bool = True
    max_request_bytes: int = 2 * 1024 * 1024
    normalize: bool = True
    batch_size: int = 32
    health_max_age_s: float = 10.0  # /health trusts a batch that succeeded this recently instead of probing


def create_app(encoder: Any, settings: ServeSettings) -> FastAPI:
    """An OpenAI-compatible embeddings app serving ``encoder`` (a :class:`metaeol.MetaEOL`)."""
    if not isinstance(encoder.layer, int):
        raise ValueError(f"serving needs one layer per embedding, got layers {encoder.layer}; pass a single --layer")
    name = settings.served_model_name
    dim = int(encoder.embedding_dim)
    preparer = InputPreparer(encoder, settings.truncate)
    metrics = Metrics(lambda: batcher.open_requests, lambda: batcher.queued_inputs)
    batcher = Batcher(
        lambda texts: encoder.encode(texts, batch_size=settings.batch_size, show_progress_bar=False,
                                     normalize_embeddings=settings.normalize),
        max_batch_tokens=settings.max_batch_tokens or (4096 if encoder.device.type == "cpu" else 16384),
        max_wait_s=settings.max_wait_ms / 1000, max_queue=settings.max_queue, on_batch=metrics.observe_batch,
        target_batch_s=settings.target_batch_ms / 1000 if settings.target_batch_ms else None,
    )
    # Tokenizing and JSON encoding run here, off the event loop and off the model's thread.
    cpu_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metaeol-io")
    created = int(time.time())

    async def in_pool(fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(cpu_pool, fn, *args)

    async def embed(texts: list[str], tokens: list[int], request: Request | None = None) -> np.ndarray:
        """The vectors of ``texts``; if ``request``'s client hangs up first, its inputs not yet
        computed are dropped from the queue, so abandoned work costs no model time."""
        try:
            future = batcher.submit(texts, tokens)
        except QueueFull as err:
            raise APIError(429, f"{err} (--max-queue {settings.max_queue} requests)", code="queue_full",
                           headers={"Retry-After": str(err.retry_after)}) from None
        except Closing:
            raise APIError(503, "the server is shutting down", code="shutting_down") from None
        result = asyncio.wrap_future(future)
        if request is not None:
            gone = asyncio.ensure_future(_client_gone(request))
            await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not result.done():
                result.cancel()  # cancels the batcher's future too
                raise APIError(499, "the client closed the connection before its embeddings were ready",
                               code="client_closed_request")
        try:
            return await result
        except Exception as err:  # noqa: BLE001 - the model failed on this request alone
            raise APIError(500, f"the model failed on this request: {type(err).__name__}: {err}",
                           code="encode_failed") from err

    async def probe() -> str | None:
        """None when the model answers a probe encode (or did so recently), else why not."""
        if not batcher.alive:
            return "the batching worker is not running"
        last = batcher.last_success
        if last is not None and time.monotonic() - last < settings.health_max_age_s:
            return None
        try:
            prepared = await in_pool(preparer, [_PROBE_TEXT])
            vectors = await asyncio.wait_for(embed(prepared.texts, prepared.tokens), _PROBE_TIMEOUT_S)
        except APIError as err:
            return err.message
        except asyncio.TimeoutError:
            return f"the probe encode took more than {_PROBE_TIMEOUT_S:.0f} s"
        if vectors.shape != (1, dim) or not np.isfinite(vectors).all():
            return f"the probe encode returned a bad vector (shape {vectors.shape})"
        return None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            problem = await probe()
            if problem is not None:
                raise RuntimeError(f"the model does not work: {problem}")
            yield
        finally:
            batcher.close()
            await asyncio.to_thread(batcher.join)
            cpu_pool.shutdown()

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="metaeol", summary="OpenAI-compatible sentence embeddings (MetaEOL)", lifespan=lifespan)
    app.add_middleware(_CountRequests, metrics=metrics)
    model_card = {"id": name, "object": "model", "created": created, "owned_by": "metaeol"}

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        metrics.errors.labels(err.type).inc()
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return await api_error(request, APIError(err.status_code, str(err.detail), headers=err.headers))

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> JSONResponse:
        return await api_error(request, APIError(500, f"internal error: {type(err).__name__}: {err}"))

    @app.post("/v1/embeddings", dependencies=[Depends(authorize)], openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": EmbeddingRequest.model_json_schema()}}}})
    async def create_embeddings(request: Request) -> Response:
        """Embed ``input`` (OpenAI ``POST /v1/embeddings``)."""
        started = time.perf_counter()
        try:
            body = await _read_json(request, settings.max_request_bytes)
            req, items = parse_request(body, settings.max_inputs_per_request)
            if req.model is not None and req.model != name:
                raise APIError(404, f"the model {req.model!r} does not exist; this server serves {name!r}",
                               param="model", code="model_not_found")
            if req.dimensions is not None and req.dimensions != dim:
                raise APIError(400, f"dimensions={req.dimensions} is not supported: {name!r} gives {dim}-dimensional "
                                    "vectors and was not trained for shortened (Matryoshka) vectors, so cutting them "
                                    f"would give poor results; omit dimensions or pass {dim}",
                               param="dimensions", code="unsupported_dimensions")
            prepared = await in_pool(preparer, items)
            vectors = await embed(prepared.texts, prepared.tokens, request)
            usage = sum(prepared.tokens)
            payload = await in_pool(lambda: json.dumps(embeddings_body(vectors, name, req.encoding_format, usage),
                                                           separators=(",", ":")))
            metrics.inputs.inc(len(prepared.texts))
            metrics.tokens.inc(usage)
            return Response(payload, media_type="application/json")
        finally:
            metrics.latency.observe(time.perf_counter() - started)

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model}", dependencies=[Depends(authorize)])
    async def get_model(model: str) -> dict[str, Any]:
        if model != name:
            raise APIError(404, f"the model {model!r} does not exist; this server serves {name!r}", param="model",
                           code="model_not_found")
        return model_card

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 when the model is loaded and a probe encode works (or a batch just did), else 503."""
        problem = await probe()
        if problem is not None:
            return JSONResponse({"status": "unavailable", "model": name, "reason": problem}, status_code=503)
        return JSONResponse({"status": "ok", "model": name})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app


async def _client_gone(request: Request, every_s: float = 0.25) -> None:
    """Return once the client of ``request`` has closed its connection."""
    while not await request.is_disconnected():
        await asyncio.sleep(every_s)


async def _read_json(request: Request, limit: int) -> Any:
    """The request body decoded as JSON, refusing bodies over ``limit`` bytes before reading them."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise APIError(400, f"invalid Content-Length header {declared!r}")
    if declared is not None and int(declared) > limit:
        raise APIError(413, f"the request body ({declared} bytes) is over this server's limit of {limit} bytes "
                            "(--max-request-bytes)", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"the request body is over this server's limit of {limit} bytes "
                                "(--max-request-bytes)", code="request_too_large")
    if not body:
        raise APIError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        return json.loads(bytes(body))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise APIError(400, f"the request body is not valid JSON: {err}", code="invalid_json") from None


_ENDPOINTS = ("/v1/embeddings", "/v1/models", "/health", "/metrics")


class _CountRequests:
    """ASGI middleware counting answered requests by endpoint and status code."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path: str = scope["path"]
            if path not in _ENDPOINTS:
                path = "/v1/models/{model}" if path.startswith("/v1/models/") else "other"
            self.metrics.requests.labels(path, str(status)).inc()
