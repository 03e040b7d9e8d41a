"""Prometheus metrics of the server, in a registry of their own (one per app)."""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from metaeol.engine import EngineStats
from metaeol.serve.batcher import BatchReport

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    """Requests, errors, queue depth, batch sizes, tokens, latency and the engine's passes."""

    def __init__(self, open_requests: Callable[[], float], queued_inputs: Callable[[], float],
                 engine_stats: Callable[[], EngineStats]):
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(_EngineCollector(engine_stats))
        self.requests = Counter("metaeol_requests", "HTTP requests answered, by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("metaeol_request_errors", "Requests answered with an error, by error type.",
                              ["type"], registry=r)
        self.latency = Histogram("metaeol_request_latency_seconds", "Time to answer POST /v1/embeddings.",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.inputs = Counter("metaeol_inputs", "Inputs (texts) embedded and answered.", registry=r)
        self.tokens = Counter("metaeol_input_tokens", "Model tokens of the answered inputs (as in usage).", registry=r)
        self.batch_inputs = Histogram("metaeol_batch_inputs", "Inputs' worth of work per batch (a prompt row counts "
                                      "as its share of its input).", buckets=_SIZE_BUCKETS, registry=r)
        self.batch_rows = Histogram("metaeol_batch_rows", "Prompt rows per batch (one forward pass).",
                                    buckets=_SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram("metaeol_batch_requests", "Requests whose rows share one batch (forward pass).",
                                        buckets=_SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram("metaeol_batch_seconds", "Duration of one batch (one forward pass).",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_failures = Counter("metaeol_batch_failed_requests",
                                      "Requests the model failed on (after retrying them alone).", registry=r)
        Gauge("metaeol_queue_requests", "Requests accepted and not yet answered.",
              registry=r).set_function(open_requests)
        Gauge("metaeol_queue_inputs", "Inputs waiting for a batch.", registry=r).set_function(queued_inputs)

    def observe_batch(self, report: BatchReport) -> None:
        self.batch_inputs.observe(report.inputs)
        self.batch_rows.observe(report.units)
        self.batch_requests.observe(report.requests)
        self.batch_seconds.observe(report.seconds)
        self.batch_failures.inc(report.failed_requests)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _EngineCollector(Collector):
    """The engine's own counts (:class:`metaeol.engine.EngineStats`), read when scraped: how
    the batches' time splits into passes and padded tokens."""

    def __init__(self, engine_stats: Callable[[], EngineStats]):
        self.engine_stats = engine_stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self.engine_stats()
        yield CounterMetricFamily("metaeol_engine_passes", "Forward passes run.", value=stats.passes)
        yield CounterMetricFamily("metaeol_engine_tokens", "Prompt tokens computed (the prefix engine "
                                  "leaves out the shared prefixes).", value=stats.tokens)
        yield CounterMetricFamily("metaeol_engine_padded_tokens", "Token slots computed, padding included "
                                  "(rows x longest row, summed over passes).", value=stats.padded_tokens)
        yield CounterMetricFamily("metaeol_engine_seconds", "Wall seconds of the forward passes.",
                                  value=stats.seconds)
