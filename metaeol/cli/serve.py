"""``metaeol serve``: an OpenAI-compatible embeddings server."""

from __future__ import annotations

import os

import click

from metaeol.cli.errors import user_errors
from metaeol.cli.options import encoder_options, make_encoder, parse_layers


def _names(text: str | None) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


@click.command("serve")
@encoder_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 = any free port, printed at startup).")
@click.option("--api-key", envvar="METAEOL_API_KEY", show_envvar=True, default=None,
              help="Require 'Authorization: Bearer KEY' on /v1/* (401 otherwise); printable ASCII, not empty.")
@click.option("--served-model-name", default=None,
              help="Model id clients send and see  [default: the --model file's stem or folder name, or its hub id]")
@click.option("--max-batch-tokens", default=None, type=click.IntRange(min=1),
              help="Most prompt tokens computed in one batch (rows x the longest), merged from the rows of "
                   "concurrent requests; the engine cuts a batch into forward passes of rows of similar length  "
                   "[default: 4 engine passes, 2048 on CPU, 65536 on a GPU]")
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
@click.option("--body-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a client has to send its request headers (else the connection is closed), "
                   "then as long for its body (else 408).")
@click.option("--shutdown-timeout", default=25.0, show_default=True, type=click.FloatRange(min=0),
              help="On SIGTERM, seconds accepted requests have to finish before they are cancelled.")
@click.option("--normalize/--no-normalize", default=True, show_default=True,
              help="Return unit-length vectors, as OpenAI, vLLM and TEI do.")
@click.option("--accept-token-ids", is_flag=True,
              help="Accept token-id inputs (ids of THIS model's tokenizer); by default they get a 400, since "
                   "clients such as LangChain send tiktoken ids.")
@click.option("--allowed-hosts", default=None, metavar="NAMES",
              help="Host header names answered besides the bound address and localhost, comma-separated; "
                   "'*' = any. Bound to 0.0.0.0 or ::, any name is answered unless this is given.")
@click.option("--allowed-origins", default=None, metavar="ORIGINS",
              help="Web origins (https://app.example) whose browser pages may call the server (CORS), "
                   "comma-separated; '*' = any. Default: none.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--access-log", is_flag=True, help="Log every request.")
def serve(host: str, port: int, api_key: str | None, served_model_name: str | None, max_batch_tokens: int | None,
          target_batch_ms: float, max_wait_ms: float, max_queue: int, max_inputs_per_request: int, truncate: bool,
          max_request_bytes: int, body_timeout: float, shutdown_timeout: float, normalize: bool, accept_token_ids: bool,
          allowed_hosts: str | None, allowed_origins: str | None, log_level: str, access_log: bool,
          **options) -> None:
    """Serve embeddings over HTTP: OpenAI-compatible POST /v1/embeddings, GET /v1/models,
    GET /health and Prometheus GET /metrics (needs: pip install "metaeol[serve]").

    Concurrent requests are merged into shared model passes; see docs/serving.md.
    """
    try:
        from metaeol.serve.app import ServeSettings, default_served_model_name
        from metaeol.serve.server import run
    except ImportError as err:
        raise click.ClickException(f'{err}; install the server with: pip install "metaeol[serve]"') from err
    if not isinstance(parse_layers(options["layer"]), int):
        raise click.BadParameter(f"serve returns one vector per input: give a single layer, not {options['layer']!r}",
                                 param_hint="--layer")
    if api_key is None and os.environ.get("METAEOL_API_KEY") == "":  # click reads an empty variable as unset
        api_key = ""
    try:  # the settings check the API key
        settings = ServeSettings(
            served_model_name=served_model_name or default_served_model_name(options["model"]), api_key=api_key,
            max_batch_tokens=max_batch_tokens, target_batch_ms=target_batch_ms or None, max_wait_ms=max_wait_ms,
            max_queue=max_queue,
            max_inputs_per_request=max_inputs_per_request, truncate=truncate, max_request_bytes=max_request_bytes,
            normalize=normalize, batch_size=options["batch_size"], accept_token_ids=accept_token_ids,
            allowed_hosts=_names(allowed_hosts), allowed_origins=_names(allowed_origins), body_timeout_s=body_timeout,
            shutdown_timeout_s=shutdown_timeout,
        )
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--api-key (or METAEOL_API_KEY)") from None
    with user_errors():
        encoder = make_encoder(options)
    if not run(encoder, settings, host=host, port=port, log_level=log_level, access_log=access_log):
        raise click.ClickException("the server did not start (see the log above)")
