"""`metaeol serve` over real HTTP: a uvicorn server on a free local port, stories260K."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from _live_server import AUTH, KEY, MAX_TOKENS, NAME, LiveServer, cosines, reference  # noqa: E402
from _rows import row_texts  # noqa: E402

from metaeol.text import clean_sentence  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["A man is playing a guitar.", "Someone plays music", 'He said "hello" to her?', "Is it raining?", "x",
         "The quick brown fox jumps over the lazy dog near the riverbank at dawn, twice, and then once more."]


@pytest.fixture(scope="module")
def server(encoder):
    with LiveServer(encoder, api_key=KEY, max_wait_ms=100, max_inputs_per_request=8, max_request_bytes=4096,
                    accept_token_ids=True) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def test_openai_client_float_and_base64_equal_encode(client, encoder):
    expected = reference(encoder, TEXTS)
    floats = client.embeddings.create(input=TEXTS, model=NAME, encoding_format="float")
    default = client.embeddings.create(input=TEXTS, model=NAME)  # the client asks for base64 and decodes it
    raw = client.embeddings.create(input=TEXTS, model=NAME, encoding_format="base64")
    decoded = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in raw.data])
    for got in (floats, default):
        assert [d.index for d in got.data] == list(range(len(TEXTS))) and got.model == NAME
        vectors = np.array([d.embedding for d in got.data])
        assert vectors.shape == (len(TEXTS), encoder.embedding_dim)
        assert cosines(vectors, expected).min() >= 0.99999
    # two requests may be split into different short batches: equal up to float rounding (~1e-6)
    np.testing.assert_allclose(decoded, np.array([d.embedding for d in floats.data], dtype=np.float32), rtol=0, atol=1e-5)
    tokenizer = encoder.tokenizer
    counts = [min(len(tokenizer(clean_sentence(t), add_special_tokens=False)["input_ids"]), MAX_TOKENS) for t in TEXTS]
    assert counts[-1] == MAX_TOKENS  # the long text was cut, as encode cuts it
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == sum(counts)


def test_single_string_and_token_ids(server, client, encoder):
    one = client.embeddings.create(input=TEXTS[0], model=NAME)
    assert len(one.data) == 1 and cosines(one.data[0].embedding, reference(encoder, TEXTS[:1])[0]) >= 0.99999
    ids = [encoder.tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS[:2]]
    decoded = [encoder.tokenizer.decode(i, skip_special_tokens=True) for i in ids]
    expected = reference(encoder, decoded)
    many = client.embeddings.create(input=ids, model=NAME)
    single = server.post({"input": [encoder.tokenizer.bos_token_id] + ids[0], "model": NAME}).json()
    assert cosines([d.embedding for d in many.data], expected).min() >= 0.99999
    assert cosines(single["data"][0]["embedding"], expected[0]) >= 0.99999  # BOS is dropped


def test_concurrent_requests_match_requests_alone(server, encoder):
    requests = [[TEXTS[(i + j) % len(TEXTS)] + f" ({i})" for j in range(1 + i % 4)] for i in range(16)]
    before = server.metrics()
    with ThreadPoolExecutor(16) as pool:
        crowd = list(pool.map(lambda texts: server.post({"input": texts, "model": NAME}).json(), requests))
    after = server.metrics()
    alone = server.post({"input": requests[5], "model": NAME}).json()
    distinct = sorted({t for texts in requests for t in texts})
    expected = dict(zip(distinct, reference(encoder, distinct)))
    for texts, answer in zip(requests, crowd):
        vectors = [d["embedding"] for d in answer["data"]]
        assert cosines(vectors, [expected[t] for t in texts]).min() >= 0.99999
    np.testing.assert_allclose([d["embedding"] for d in crowd[5]["data"]], [d["embedding"] for d in alone["data"]],
                               atol=1e-6)
    batches = after[("metaeol_batch_requests_count", ())] - before[("metaeol_batch_requests_count", ())]
    requests_in_batches = after[("metaeol_batch_requests_sum", ())] - before[("metaeol_batch_requests_sum", ())]
    assert batches >= 1 and requests_in_batches > 1.5 * batches  # the requests' rows shared forward passes


BAD_REQUESTS = [
    ({"input": ""}, 400, "input", "empty string"),
    ({"input": []}, 400, "input", "empty list"),
    ({"input": ["a", ""]}, 400, "input", "input[1] is an empty string"),
    ({"input": [[1, 2], []]}, 400, "input", "empty token list"),
    ({"input": 5}, 400, "input", "got a number"),
    ({"input": None}, 400, "input", "got null"),
    ({"input": ["a", 3]}, 400, "input", "input[1] is a number"),
    ({"input": [[1], "a"]}, 400, "input", "input[1] is a string"),
    ({"input": [[1, "a"]]}, 400, "input", "input[0][1] is a string"),
    ({"input": [True]}, 400, "input", "input[0] is a boolean"),
    ({"input": [1, 100000]}, 400, "input", "token id 100000"),
    ({"model": NAME}, 400, "input", "Field required"),
    ({"input": ["a"] * 9}, 400, "input", "at most 8"),
    ({"input": "a", "model": "gpt-4"}, 404, "model", "'gpt-4' does not exist"),
    ({"input": "a", "encoding_format": "int8"}, 400, "encoding_format", "'float' or 'base64'"),
    ({"input": "a", "dimensions": 32}, 400, "dimensions", "Matryoshka"),
    ({"input": "a", "dimensions": 0}, 400, "dimensions", "greater than or equal to 1"),
    ({"input": "a", "model": 3}, 400, "model", "valid string"),
    ([1, 2], 400, None, "must be a JSON object"),
]


@pytest.mark.parametrize("body, status, param, words", BAD_REQUESTS)
def test_bad_input_gets_an_openai_error(server, body, status, param, words):
    response = server.post(body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert words in error["message"] and error["type"] == ("not_found_error" if status == 404 else
                                                           "invalid_request_error")


def test_malformed_json_oversized_body_and_unknown_routes(server):
    bad_json = httpx.post(f"{server.url}/v1/embeddings", content=b'{"input": ',
                          headers={**AUTH, "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    huge = server.post({"input": "word " * 1000})
    assert huge.status_code == 413 and "--max-request-bytes" in huge.json()["error"]["message"]
    assert httpx.get(f"{server.url}/v1/nothing").json()["error"]["type"] == "not_found_error"
    assert httpx.get(f"{server.url}/v1/embeddings", headers=AUTH).status_code == 405


def test_dimensions_equal_to_the_model_size_is_accepted(server, encoder):
    response = server.post({"input": "a", "dimensions": encoder.embedding_dim})
    assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == encoder.embedding_dim


def test_api_key(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = server.post({"input": "a"}, headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).embeddings.create(
            input="a", model=NAME)
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/health").status_code == 200  # probes and scrapers need no key


def test_models_health_and_metrics(server, client, encoder):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other")
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "model": NAME}
    before = server.metrics()
    usage = client.embeddings.create(input=TEXTS[:3], model=NAME).usage.prompt_tokens
    server.post({"input": ""})
    after = server.metrics()

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("metaeol_requests_total", endpoint="/v1/embeddings", status="200") == 1
    assert moved("metaeol_requests_total", endpoint="/v1/embeddings", status="400") == 1
    assert moved("metaeol_request_errors_total", type="invalid_request_error") == 1
    assert moved("metaeol_inputs_total") == 3 and moved("metaeol_input_tokens_total") == usage
    assert moved("metaeol_request_latency_seconds_count") == 2
    assert moved("metaeol_batch_inputs_sum") == pytest.approx(3)  # a prompt row counts as its share of its input
    assert moved("metaeol_batch_rows_sum") == 3 * len(encoder.prompt_set)
    # the engine's own counts: the rows' tokens past the shared prefixes, computed in passes that took time
    assert moved("metaeol_engine_tokens_total") == sum(encoder.prompt_rows(TEXTS[:3]).costs)
    assert moved("metaeol_engine_padded_tokens_total") == moved("metaeol_engine_tokens_total")  # packed passes
    assert moved("metaeol_engine_passes_total") >= 1 and moved("metaeol_engine_seconds_total") > 0
    assert after[("metaeol_queue_requests", ())] == 0 and after[("metaeol_queue_inputs", ())] == 0


def test_strict_server_queue_truncation_health_and_failures(encoder, monkeypatch):
    long_text = TEXTS[-1]
    with LiveServer(encoder, truncate=False, max_queue=1, max_wait_ms=800, health_max_age_s=0) as live:
        too_long = live.post({"input": ["a", long_text]})
        assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
        assert "input[1] has" in too_long.json()["error"]["message"]
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(live.post, {"input": "waits in the queue"})
            while live.metrics()[("metaeol_queue_requests", ())] < 1:
                time.sleep(0.02)
            refused = live.post({"input": "one too many"})
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["code"] == "queue_full"
            assert first.result().status_code == 200

        assert httpx.get(f"{live.url}/health").status_code == 200

        def broken(parts, **kwargs):
            raise RuntimeError("model on fire")

        monkeypatch.setattr(encoder, "run_rows", broken)
        sick = httpx.get(f"{live.url}/health", timeout=30)
        assert sick.status_code == 503 and "model on fire" not in sick.text  # the log has it, not the open route
        assert "the probe encode failed" in sick.json()["reason"]
        failed = live.post({"input": "a"})
        assert failed.status_code == 500 and failed.json()["error"]["code"] == "encode_failed"
        monkeypatch.undo()
        assert httpx.get(f"{live.url}/health", timeout=30).status_code == 200


def test_one_failing_request_does_not_fail_its_batch(server, encoder, monkeypatch):
    real = encoder.run_rows

    def fails_on_poison(parts, **kwargs):
        if any("poison" in t for t in row_texts(parts)):
            raise RuntimeError("poisoned")
        return real(parts, **kwargs)

    monkeypatch.setattr(encoder, "run_rows", fails_on_poison)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda text: server.post({"input": [text, "fine"]}), ["a", "poison", "b"]))
    assert [a.status_code for a in answers] == [200, 500, 200]
    assert "poisoned" not in answers[1].text and "server log" in answers[1].json()["error"]["message"]


def test_a_client_that_hangs_up_costs_no_further_model_time(encoder, monkeypatch):
    real = encoder.run_rows

    def slow(parts, **kwargs):
        time.sleep(0.2)
        return real(parts, **kwargs)

    with LiveServer(encoder, max_batch_tokens=1, max_wait_ms=0) as live:  # one prompt row per batch
        monkeypatch.setattr(encoder, "run_rows", slow)
        before = live.metrics()
        with pytest.raises(httpx.TimeoutException):
            live.post({"input": [f"sentence {i}" for i in range(40)]}, timeout=0.6)
        deadline = time.monotonic() + 5  # all 40 x 8 rows would take 64 s
        while live.metrics()[("metaeol_queue_requests", ())] > 0:
            assert time.monotonic() < deadline, "the abandoned request is still being computed"
            time.sleep(0.05)
        after = live.metrics()
        computed = after[("metaeol_batch_inputs_sum", ())] - before[("metaeol_batch_inputs_sum", ())]
        assert computed < 2  # inputs' worth: about 3 of the 320 rows
        gone = ("metaeol_request_errors_total", (("type", "invalid_request_error"),))
        assert after.get(gone, 0) - before.get(gone, 0) == 1
        monkeypatch.undo()
        assert live.post({"input": "still serving"}).status_code == 200


def test_a_broken_model_never_starts_serving(encoder, monkeypatch):
    monkeypatch.setattr(encoder, "run_rows", lambda parts, **kwargs: torch.full(
        (len(row_texts(parts)), 1, encoder.hidden_size), torch.nan))
    with pytest.raises(RuntimeError, match="did not start"):
        with LiveServer(encoder):
            pass


def test_cli_serve_drains_on_sigterm_in_bounded_time(stories_gguf):
    """The real command in a subprocess: on SIGTERM an accepted request is still answered, a
    client stalled in the middle of its body does not hold the exit, and the exit status is 0."""
    env = dict(os.environ, PYTHONPATH=str(REPO), METAEOL_API_KEY=KEY)
    process = subprocess.Popen(
        [sys.executable, "-m", "metaeol.cli", "serve", "-m", str(stories_gguf), "--port", "0",
         "--served-model-name", NAME, "--max-wait-ms", "2000", "--shutdown-timeout", "3"],
        cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = None
        for line in process.stderr:
            match = re.search(r"running on (http://\S+)", line)
            if match:
                url = match.group(1)
                break
        assert url is not None, "the server never said where it listens"
        host, port = url.removeprefix("http://").split(":")
        stalled = socket.create_connection((host, int(port)))
        stalled.sendall(f"POST /v1/embeddings HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                        f"Authorization: Bearer {KEY}\r\nContent-Length: 100\r\n\r\n{{".encode())
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{url}/v1/embeddings", json={"input": ["a", "b"], "model": NAME},
                                  headers=AUTH, timeout=60)
            deadline = time.monotonic() + 20
            while "metaeol_queue_requests 1.0" not in httpx.get(f"{url}/metrics").text:  # queued: the batch
                assert time.monotonic() < deadline  # waits up to 2 s for company
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.ConnectError):
                httpx.post(f"{url}/v1/embeddings", json={"input": "late"}, headers=AUTH, timeout=5)
            answer = pending.result()
        assert answer.status_code == 200 and len(answer.json()["data"]) == 2
        assert process.wait(30) == 0  # the stalled body would otherwise hold the shutdown for ever
        stalled.close()
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


STUCK_SERVER = """
import sys
import torch
from metaeol import MetaEOL
from metaeol.serve.app import ServeSettings
from metaeol.serve.server import run

torch.set_num_threads(1)  # the stuck batch leaves the other core to the server and the test
encoder = MetaEOL(sys.argv[1])
real = encoder.run_rows
work = encoder.prompt_rows(["a longer sentence, so that the model has some real work to do"] * 8)

def run_rows(parts, **kwargs):
    while any(rows.sentences[0].startswith("stuck") for rows, _ in parts):  # a batch that never ends, computing
        real([(work, range(len(work)))], **kwargs)
    return real(parts, **kwargs)

encoder.run_rows = run_rows
run(encoder, ServeSettings(served_model_name="m", shutdown_timeout_s=1), port=0)
"""


def test_sigterm_during_a_batch_longer_than_the_shutdown_timeout_exits_0(stories_gguf):
    """The model's thread cannot be stopped: the process exits without it, cleanly, on time."""
    process = subprocess.Popen([sys.executable, "-c", STUCK_SERVER, str(stories_gguf)], cwd=REPO,
                               env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=subprocess.PIPE, text=True)
    try:
        url = next(m.group(1) for line in process.stderr if (m := re.search(r"running on (http://\S+)", line)))
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{url}/v1/embeddings", json={"input": "stuck"}, timeout=60)
            deadline = time.monotonic() + 20
            while "metaeol_queue_requests 1.0" not in httpx.get(f"{url}/metrics").text:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            answer = pending.result()
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "shutting_down"
        assert process.wait(30) == 0  # not an abort from finalizing under the running thread
        assert "still running a batch" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


def test_cli_imports_no_server_library_and_needs_one_layer():
    code = ("import sys, metaeol.cli; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'prometheus_client', 'starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from click.testing import CliRunner

    from metaeol.cli import main

    result = CliRunner().invoke(main, ["serve", "--layer", "-1,3"])
    assert result.exit_code == 2 and "give a single layer" in result.output


def test_the_thread_that_starts_the_server_lets_its_openmp_workers_go(encoder, monkeypatch):
    # The model runs on the batcher's thread; a second OpenMP pool (the loading thread's) would
    # make libgomp cut its spin-wait and slow every op there (metaeol/openmp.py).
    calls = []
    monkeypatch.setattr("metaeol.serve.app.release_thread_pool", lambda: calls.append(threading.current_thread()))
    with LiveServer(encoder) as live:
        assert calls == [live.thread]
        assert live.post({"input": ["hello"]}, headers={}).status_code == 200
