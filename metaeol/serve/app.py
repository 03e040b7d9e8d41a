"""The ASGI app: routes, authentication, errors and the model's lifecycle."""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from metaeol.finite import nonfinite_rows
from metaeol.openmp import release_thread_pool
from metaeol.serve.batcher import Batcher, Closing, QueueFull
from metaeol.serve.body import decode_json, log, read_body
from metaeol.serve.errors import APIError, shown
from metaeol.serve.guard import Guard, allowed_hosts
from metaeol.serve.health import Health
from metaeol.serve.inputs import InputPreparer, PreparedInputs
from metaeol.serve.metrics import Metrics
from metaeol.serve.rows import prompt_row_work, run_prompt_rows
from metaeol.serve.schema import EmbeddingRequest, embeddings_body, parse_request

_PROBE_TEXT = "A health check probe."
_PREP_THREADS = 4  # requests validated and tokenized at once, off the event loop


# A batch may hold a few forward passes' worth of rows: the engine sorts them by length and cuts
# them into passes of similar rows, so rows of short and long inputs carry little padding.
PASSES_PER_BATCH = 4


@dataclass
class ServeSettings:
    """Server behaviour (the ``metaeol serve`` options other than the encoder's)."""

    served_model_name: str
    api_key: str | None = None
    max_batch_tokens: int | None = None  # cap of one batch (padded prompt tokens): PASSES_PER_BATCH encoder passes
    target_batch_ms: float | None = 1000.0  # batches sized to take about this long (None: always the cap)
    max_wait_ms: float = 5.0
    max_queue: int = 512
    max_inputs_per_request: int = 2048
    truncate: bool = True
    max_request_bytes: int = 2 * 1024 * 1024
    normalize: bool = True
    batch_size: int = 32
    accept_token_ids: bool = False
    allowed_hosts: list[str] = field(default_factory=list)  # Host names answered besides the bound address and
    # localhost ("*": any)
    allowed_origins: list[str] = field(default_factory=list)  # web origins allowed to call from a browser; "*": any
    body_timeout_s: float = 30.0  # a request body must arrive within this time (408)
    shutdown_timeout_s: float = 25.0  # on SIGTERM, requests still running after this are cancelled
    health_max_age_s: float = 10.0  # /health trusts the outcome of a batch that ended this recently
    health_stall_s: float = 300.0  # /health fails while one batch has run longer than this

    def __post_init__(self) -> None:
        if self.api_key is not None:
            check_api_key(self.api_key)


def check_api_key(key: str) -> None:
    """Refuse a key that would silently turn authentication off, or that no client can send."""
    if not key:
        raise ValueError("the API key is empty, which would turn authentication off; give a key, or leave both "
                         "--api-key and METAEOL_API_KEY unset to serve without one")
    bad = next((i for i, c in enumerate(key) if not c.isascii()), None)
    if bad is not None:
        raise ValueError(f"the API key must be ASCII (HTTP headers carry no other characters reliably); character "
                         f"{bad} is not")
    if any(c.isspace() or not c.isprintable() for c in key):
        raise ValueError("the API key must not contain spaces or control characters")


def default_served_model_name(model: str) -> str:
    """The model id clients see: a local file's stem or folder's name (never its path), else the hub id."""
    path = Path(model)
    if path.exists() or path.is_absolute() or model.startswith((".", "~")) or path.suffix == ".gguf":
        return path.stem if path.suffix == ".gguf" or path.is_file() else path.name
    return model


def create_app(encoder: Any, settings: ServeSettings, *, bound_host: str = "127.0.0.1") -> FastAPI:
    """An OpenAI-compatible embeddings app serving ``encoder`` (a :class:`metaeol.MetaEOL`) on
    ``bound_host`` (a Host header naming it, or localhost, is accepted; see :func:`allowed_hosts`)."""
    if not isinstance(encoder.layer, int):
        raise ValueError(f"serving needs one layer per embedding, got layers {encoder.layer}; pass a single --layer")
    name = settings.served_model_name
    dim = int(encoder.embedding_dim)
    metrics = Metrics(lambda: batcher.open_requests, lambda: batcher.queued_inputs, encoder.engine_stats)
    batcher = Batcher(
        lambda units: run_prompt_rows(encoder, units, settings.batch_size),
        expand=lambda texts: prompt_row_work(encoder, texts, settings.normalize),
        max_batch_tokens=settings.max_batch_tokens or PASSES_PER_BATCH * encoder.max_batch_tokens,
        pass_tokens=encoder.max_batch_tokens,
        max_wait_s=settings.max_wait_ms / 1000, max_queue=settings.max_queue, on_batch=metrics.observe_batch,
        target_batch_s=settings.target_batch_ms / 1000 if settings.target_batch_ms else None,
    )
    # Validation, tokenizing and JSON encoding run here, off the event loop and off the model's
    # thread; each helper thread has its own preparer (fast tokenizers reject concurrent use).
    cpu_pool = ThreadPoolExecutor(max_workers=_PREP_THREADS, thread_name_prefix="metaeol-io")
    preparers = threading.local()
    created = int(time.time())
    shutdown_by: float | None = None  # when a shutdown must be over (set as it starts)

    def prepare(items: list[Any]) -> PreparedInputs:
        if not hasattr(preparers, "own"):
            preparers.own = InputPreparer(encoder, settings.truncate)
        return preparers.own(items)

    def parse(body: bytes) -> tuple[EmbeddingRequest, PreparedInputs]:
        req, items = parse_request(decode_json(body), settings.max_inputs_per_request, settings.accept_token_ids)
        if req.model is not None and req.model != name:
            raise APIError(404, f"the model {shown(req.model)} does not exist; this server serves {name!r}",
                           param="model", code="model_not_found")
        if req.dimensions is not None and req.dimensions != dim:
            raise APIError(400, f"dimensions={req.dimensions} is not supported: {name!r} gives {dim}-dimensional "
                                "vectors and was not trained for shortened (Matryoshka) vectors, so cutting them "
                                f"would give poor results; omit dimensions or pass {dim}",
                           param="dimensions", code="unsupported_dimensions")
        return req, prepare(items)

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
        try:
            if request is not None:
                gone = asyncio.ensure_future(_client_gone(request))
                await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
                gone.cancel()
                if not result.done():
                    result.cancel()  # cancels the batcher's future too
                    raise APIError(499, "the client closed the connection before its embeddings were ready",
                                   code="client_closed_request")
            vectors = await result
        except asyncio.CancelledError:
            if shutdown_by is None:
                raise
            result.cancel()  # uvicorn cancels the requests still running at the end of the graceful shutdown
            raise APIError(503, "the server shut down before this request's embeddings were ready "
                                f"(--shutdown-timeout {settings.shutdown_timeout_s:g} s)",
                           code="shutting_down") from None
        except APIError:
            raise
        except Exception as err:  # noqa: BLE001 - the model failed on this request alone
            log.error("the model failed on a request of %d input(s)", len(texts), exc_info=err)
            raise APIError(500, "the model failed on this request; the server log has the error",
                           code="encode_failed") from None
        bad = nonfinite_rows(vectors)
        if bad:
            log.error("the model returned non-finite vectors for inputs %s of a request: %r", bad,
                      [texts[i][:80] for i in bad[:3]])
            raise APIError(500, f"the model returned a non-finite vector (NaN or infinity) for input[{bad[0]}]",
                           param="input", code="non_finite_embedding")
        return vectors

    async def probe() -> str | None:
        """None when a probe sentence encodes to a good vector, else why not (details in the log)."""
        try:
            prepared = await in_pool(prepare, [_PROBE_TEXT])
            vectors = await asyncio.wait_for(embed(prepared.texts, prepared.tokens), settings.health_stall_s)
        except APIError as err:
            if err.code == "queue_full":
                return None  # work in progress, not a failure
            if err.code == "shutting_down":
                return err.message
            return "the probe encode failed (the server log has the error)"
        except asyncio.TimeoutError:
            return f"the probe encode took more than {settings.health_stall_s:g} s"
        if vectors.shape != (1, dim):
            return f"the probe encode returned a vector of shape {vectors.shape}, not (1, {dim})"
        return None

    health_check = Health(batcher, probe, max_age_s=settings.health_max_age_s, stall_s=settings.health_stall_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The model runs on the batcher's thread from now on: if this thread ran it before (an app
        # built after an encode), its OpenMP workers go, or they would slow every op there.
        release_thread_pool()
        batcher.start()
        try:
            problem = await probe()
            if problem is not None:
                raise RuntimeError(f"the model does not work: {problem}")
            batcher.packed = encoder.padding_free  # known once the probe has run the engine
            yield
        finally:
            batcher.close()
            left = settings.shutdown_timeout_s if shutdown_by is None else shutdown_by - time.monotonic()
            await asyncio.to_thread(batcher.join, max(left, 0.1))
            if batcher.alive:
                log.warning("the model's worker is still running a batch after --shutdown-timeout %g s; exiting "
                            "without it", settings.shutdown_timeout_s)
            cpu_pool.shutdown(wait=False, cancel_futures=True)

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    docs = settings.api_key is None  # with a key, the API's shape is not published to anyone who asks
    app = FastAPI(title="metaeol", summary="OpenAI-compatible sentence embeddings (MetaEOL)", lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)

    def begin_shutdown() -> None:
        """Called by server.py as a shutdown starts (requests cancelled from then on are answered 503)."""
        nonlocal shutdown_by
        shutdown_by = time.monotonic() + settings.shutdown_timeout_s

    app.state.begin_shutdown = begin_shutdown
    app.state.worker_running = lambda: batcher.alive

    def answer(err: APIError) -> Response:
        metrics.errors.labels(err.type).inc()
        return err.response()

    if settings.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, allowed_hosts=allowed_hosts(bound_host, settings.allowed_hosts),
                       allowed_origins=settings.allowed_origins, answer=answer)
    app.add_middleware(_CountRequests, metrics=metrics)
    model_card = {"id": name, "object": "model", "created": created, "owned_by": "metaeol"}

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> Response:
        return answer(err)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        return answer(APIError(err.status_code, str(err.detail), headers=err.headers))

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> Response:
        # The traceback goes to the server log (uvicorn logs the exception); the client learns nothing internal.
        return answer(APIError(500, "internal server error; the server log has the details"))

    @app.post("/v1/embeddings", dependencies=[Depends(authorize)], openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": EmbeddingRequest.model_json_schema()}}}})
    async def create_embeddings(request: Request) -> Response:
        """Embed ``input`` (OpenAI ``POST /v1/embeddings``)."""
        started = time.perf_counter()
        try:
            body = await read_body(request, settings.max_request_bytes, settings.body_timeout_s)
            req, prepared = await in_pool(parse, body)
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

    @app.get("/v1/models/{model:path}", dependencies=[Depends(authorize)])
    async def get_model(model: str) -> dict[str, Any]:
        if model != name:
            raise APIError(404, f"the model {shown(model)} does not exist; this server serves {name!r}",
                           param="model", code="model_not_found")
        return model_card

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while the model's worker is alive and making progress, else 503 with the reason."""
        problem = await health_check.problem()
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
