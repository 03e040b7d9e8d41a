"""``metaeol serve``: an OpenAI-compatible embeddings server."""

from __future__ import annotations

import click

from metaeol.cli.errors import user_errors
from metaeol.cli.options import encoder_options, make_encoder


@click.command("serve")
@encoder_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 = any free port, printed at startup).")
@click.option("--api-key", envvar="METAEOL_API_KEY", show_envvar=True, default=None,
              help="Require 'Authorization: Bearer KEY' on /v1/* (401 otherwise).")
@click.option("--served-model-name", default=None, help="Model id clients send and see  [default: --model]")
@click.option("--max-batch-tokens", default=None, type=click.IntRange(min=1),
              help="Most input tokens merged from concurrent requests into one encode call  [default: 4096 on CPU, "
                   "16384 on a GPU]")
@click.option("--target-batch-ms", default=1000.0, show_default=True, type=click.FloatRange(min=0),
              help="Size each batch to take about this long at the measured rate, so new requests join the next "
                   "batch quickly (0: every batch takes --max-batch-tokens).")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="How long a batch waits for more requests before it runs.")
@click.option("--max-queue", default=512, show_default=True, type=click.IntRange(min=1),
              help="Requests queued or running at once; more are answered 429 with Retry-After.")
@click.option("--max-inputs-per-request", default=2048, show_default=True, type=click.IntRange(min=1),
              help="Inputs one request may hold (400 above).")
@click.option("--truncate/--no-truncate", default=True, show_default=True,
              help="Cut inputs longer than --max-sentence-tokens (as embed does), or answer 400.")
@click.option("--max-request-bytes", default=2 * 1024 * 1024, show_default=True, type=click.IntRange(min=1),
              help="Largest request body accepted (413 above).")
@click.option("--normalize/--no-normalize", default=True, show_default=True,
              help="Return unit-length vectors, as OpenAI, vLLM and TEI do.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--access-log", is_flag=True, help="Log every request.")
def serve(host: str, port: int, api_key: str | None, served_model_name: str | None, max_batch_tokens: int | None,
          target_batch_ms: float, max_wait_ms: float, max_queue: int, max_inputs_per_request: int, truncate: bool, max_request_bytes: int,
          normalize: bool, log_level: str, access_log: bool, **options) -> None:
    """Serve embeddings over HTTP: OpenAI-compatible POST /v1/embeddings, GET /v1/models,
    GET /health and Prometheus GET /metrics (needs: pip install "metaeol[serve]").

    Concurrent requests are merged into shared model passes; see docs/serving.md.
    """
    try:
        from metaeol.serve.app import ServeSettings
        from metaeol.serve.server import run
    except ImportError as err:
        raise click.ClickException(f'{err}; install the server with: pip install "metaeol[serve]"') from err
    if "," in options["layer"]:
        raise click.BadParameter("serve returns one vector per input: give a single layer", param_hint="--layer")
    settings = ServeSettings(
        served_model_name=served_model_name or options["model"], api_key=api_key or None,
        max_batch_tokens=max_batch_tokens, target_batch_ms=target_batch_ms or None, max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_inputs_per_request=max_inputs_per_request, truncate=truncate, max_request_bytes=max_request_bytes,
        normalize=normalize, batch_size=options["batch_size"],
    )
    with user_errors():
        encoder = make_encoder(options)
    if not run(encoder, settings, host=host, port=port, log_level=log_level, access_log=access_log):
        raise click.ClickException("the server did not start (see the log above)")
