"""What a hostile or careless client can send: nothing wrong ever comes back with a 200, no
traceback, no internal detail, and every bad input gets a 4xx that says what was wrong."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from _live_server import AUTH, KEY, MAX_TOKENS, LiveServer, cosines, reference  # noqa: E402
from _rows import row_texts  # noqa: E402

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def plain(encoder):
    """The server with every default (no key, token ids off, localhost only)."""
    with LiveServer(encoder) as live:
        yield live


def raw_post(live: LiveServer, body: bytes, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{live.url}/v1/embeddings", content=body, headers={**JSON, **(headers or {})}, timeout=30)


def error_of(response: httpx.Response) -> dict:
    return json.loads(response.content)["error"]  # strict: NaN or a lone surrogate would not parse


@pytest.mark.parametrize("body", [{"input": [1, 2, 3]}, {"input": [[1, 2], [3]]}])
def test_token_ids_are_refused_by_default_with_a_way_out(plain, body):
    response = plain.post(body, headers={})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "token_ids_not_accepted" and error["param"] == "input"
    assert "check_embedding_ctx_length=False" in error["message"] and "--accept-token-ids" in error["message"]


def test_a_non_finite_vector_fails_its_request_only(plain, encoder, monkeypatch):
    real = encoder.run_rows

    def broken_rows(parts, **kwargs):
        states = real(parts, **kwargs)
        for i, text in enumerate(row_texts(parts)):
            if text.startswith("nan"):
                states[i, :, 0] = np.nan
            if text.startswith("inf"):
                states[i, :, -1] = np.inf
        return states

    monkeypatch.setattr(encoder, "run_rows", broken_rows)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda texts: plain.post({"input": texts}, headers={}),
                                [["fine", "nan here"], ["inf there"], ["fine too"]]))
    assert [a.status_code for a in answers] == [500, 500, 200]
    for answer, index in zip(answers[:2], (1, 0)):
        error = error_of(answer)
        assert error["code"] == "non_finite_embedding" and f"input[{index}]" in error["message"]
    assert np.isfinite(json.loads(answers[2].content)["data"][0]["embedding"]).all()


def test_a_lone_surrogate_is_a_400_naming_the_input(plain):
    response = raw_post(plain, b'{"input": ["fine", "bad \\ud800 text"]}')
    assert response.status_code == 400
    error = error_of(response)
    assert "input[1]" in error["message"] and error["param"] == "input"
    other = raw_post(plain, b'{"input": "a", "model": "\\udfff"}')  # echoed in the message: still valid JSON
    assert other.status_code == 404 and error_of(other)["code"] == "model_not_found"


@pytest.mark.parametrize("depth", [100_000, 5_000])
def test_deeply_nested_json_is_a_400(plain, depth):
    response = raw_post(plain, b'{"input": ' + b"[" * depth + b"]" * depth + b"}")
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_json"
    assert "nested" in error_of(response)["message"]


def test_an_internal_error_body_says_nothing_internal(plain, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("secret detail /home/me/models")

    monkeypatch.setattr("metaeol.serve.app.embeddings_body", explode)
    response = plain.post({"input": "a"}, headers={})
    assert response.status_code == 500
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert "server log" in error_of(response)["message"]


def test_post_bodies_must_be_json(plain):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {} if content_type is None else {"Content-Type": content_type}
        response = httpx.post(f"{plain.url}/v1/embeddings", content=b'{"input": "a"}', headers=headers)
        assert response.status_code == 415 and "application/json" in error_of(response)["message"]
    ok = raw_post(plain, b'{"input": "a"}', {"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_foreign_hosts_and_cross_origin_requests_are_refused(plain):
    port = plain.port
    evil = plain.post({"input": "a"}, headers={"Host": "evil.example"})
    assert evil.status_code == 400 and error_of(evil)["code"] == "host_not_allowed"
    assert httpx.get(f"{plain.url}/health", headers={"Host": f"rebind.example:{port}"}).status_code == 400
    assert plain.post({"input": "a"}, headers={"Host": f"localhost:{port}"}).status_code == 200
    cross = plain.post({"input": "a"}, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403 and "--allowed-origins" in error_of(cross)["message"]
    same = plain.post({"input": "a"}, headers={"Origin": f"http://127.0.0.1:{port}"})
    assert same.status_code == 200


def test_widened_hosts_origins_and_model_ids_with_a_slash(encoder):
    with LiveServer(encoder, served_model_name="org/stories", allowed_hosts=["*"],
                    allowed_origins=["http://app.example"]) as live:
        assert live.post({"input": "a"}, headers={"Host": "anything.example"}).status_code == 200
        from_app = live.post({"input": "a"}, headers={"Origin": "http://app.example"})
        assert from_app.status_code == 200
        assert from_app.headers["access-control-allow-origin"] == "http://app.example"
        assert live.post({"input": "a"}, headers={"Origin": "http://evil.example"}).status_code == 403
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        assert client.models.retrieve("org/stories").id == "org/stories"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("org/other")


def test_docs_are_off_when_a_key_is_set(plain, encoder):
    assert httpx.get(f"{plain.url}/openapi.json").status_code == 200
    with LiveServer(encoder, api_key=KEY) as live:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert httpx.get(f"{live.url}{path}", headers=AUTH).status_code == 404


@pytest.mark.parametrize("key", ["", "clé", "two words", "tab\t"])
def test_an_empty_or_unusable_api_key_is_refused(encoder, key):
    from metaeol.serve.app import ServeSettings, create_app

    with pytest.raises(ValueError, match="API key"):
        create_app(encoder, ServeSettings(served_model_name="x", api_key=key))


def read_status(sock: socket.socket) -> str:
    sock.settimeout(20)
    return sock.recv(4096).decode("latin-1").split("\r\n", 1)[0]


def partial_post(live: LiveServer) -> socket.socket:
    """A POST that announces 100 body bytes and sends 10."""
    sock = socket.create_connection(("127.0.0.1", live.port))
    sock.sendall(f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nContent-Type: application/json\r\n"
                 "Content-Length: 100\r\n\r\n{\"input\": ".encode())
    return sock


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_stalled_requests_are_cut_and_a_hang_up_is_a_499_without_traceback(encoder):
    log = logging.getLogger("uvicorn.error")
    records = Records()
    with LiveServer(encoder, body_timeout_s=1) as live:
        level = log.level
        log.addHandler(records)
        log.setLevel(logging.INFO)
        try:
            with partial_post(live) as stalled:
                assert read_status(stalled) == "HTTP/1.1 408 Request Timeout"
            with socket.create_connection(("127.0.0.1", live.port)) as silent, \
                    socket.create_connection(("127.0.0.1", live.port)) as slow_headers:
                slow_headers.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                assert read_status(slow_headers) == read_status(silent) == ""  # closed, not held for ever
            before = live.metrics()
            partial_post(live).close()
            key = ("metaeol_requests_total", (("endpoint", "/v1/embeddings"), ("status", "499")))
            deadline = time.monotonic() + 10
            while live.metrics().get(key, 0) == before.get(key, 0):
                assert time.monotonic() < deadline, "the hang-up was not counted as a 499"
                time.sleep(0.05)
        finally:
            log.removeHandler(records)
            log.setLevel(level)
    assert not [r for r in records.records if r.exc_info or r.levelno >= logging.ERROR]
    assert len([r for r in records.records if "closed the connection" in r.getMessage()]) == 1


def test_health_is_liveness_and_never_waits_behind_the_queue(encoder, monkeypatch):
    from metaeol.serve.app import _PROBE_TEXT

    real = encoder.run_rows
    gate = threading.Event()
    probes = []
    probe, _ = encoder.prompt_tokens.prepare([_PROBE_TEXT])

    def gated(parts, **kwargs):
        probes.extend(id(rows) for rows, _ in parts if rows.sentences == probe)
        gate.wait(30)
        return real(parts, **kwargs)

    with LiveServer(encoder, max_queue=1, max_wait_ms=0, health_max_age_s=0, health_stall_s=1.5) as live:
        monkeypatch.setattr(encoder, "run_rows", gated)
        with ThreadPoolExecutor(8) as pool:  # several /health at once on an idle server: one shared probe
            threading.Timer(1, gate.set).start()
            answers = list(pool.map(lambda _: httpx.get(f"{live.url}/health", timeout=20), range(8)))
        assert [a.status_code for a in answers] == [200] * 8 and len(set(probes)) == 1
        gate.clear()
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(live.post, {"input": "a long batch"}, headers={})
            while live.metrics()[("metaeol_queue_requests", ())] < 1:
                time.sleep(0.02)
            assert live.post({"input": "b"}, headers={}).status_code == 429  # the queue is full
            health = httpx.get(f"{live.url}/health", timeout=5)  # a batch runs: alive, no probe queued
            assert health.status_code == 200 and health.json()["status"] == "ok"
            time.sleep(2)  # the batch now runs longer than health_stall_s
            stalled = httpx.get(f"{live.url}/health", timeout=5)
            assert stalled.status_code == 503 and "no batch has finished" in stalled.json()["reason"]
            gate.set()
            assert busy.result().status_code == 200
        assert httpx.get(f"{live.url}/health", timeout=5).status_code == 200


def test_request_preparation_does_not_block_other_requests(plain, monkeypatch):
    import metaeol.serve.app as app_module

    real = app_module.parse_request
    release = threading.Event()

    def slow_for_one(body, *args):
        if body.get("input") == "blocked":
            release.wait(30)
        return real(body, *args)

    monkeypatch.setattr(app_module, "parse_request", slow_for_one)
    with ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(plain.post, {"input": "blocked"}, headers={})
        time.sleep(0.3)
        try:
            assert plain.post({"input": "free"}, headers={}, timeout=10).status_code == 200
        finally:
            release.set()
        assert blocked.result().status_code == 200


def test_the_character_cut_before_tokenizing_changes_no_vector(encoder):
    from metaeol.serve.inputs import InputPreparer

    tokenizer = encoder.tokenizer
    longest = max(tokenizer.get_vocab(), key=len)
    at_limit = tokenizer.convert_tokens_to_string([longest] * MAX_TOKENS)
    texts = ["abcdefghij" * 20_000, "word " * 30_000, "é" * 50_000, 'He said "hello" ' * 5000 + "?", at_limit,
             "short one?"]
    prepared = InputPreparer(encoder, truncate=True)(texts)
    assert all(len(t) < 2_000 for t in prepared.texts)  # the work per input is bounded
    assert prepared.texts[-2:] == texts[-2:]  # text within the token limit is never cut
    np.testing.assert_allclose(reference(encoder, prepared.texts), reference(encoder, texts), atol=1e-6)
    assert prepared.tokens == [MAX_TOKENS] * 4 + prepared.tokens[-2:]


def test_a_2mb_word_is_served_like_encode_serves_it(plain, encoder):
    word = "x" * (2 * 1024 * 1024 - 100)
    response = plain.post({"input": [word, "small"]}, headers={})
    assert response.status_code == 200
    got = [d["embedding"] for d in response.json()["data"]]
    assert cosines(got, reference(encoder, [word[:20_000], "small"])).min() >= 0.99999


def test_a_number_too_long_to_convert_is_a_400(plain):
    response = raw_post(plain, b'{"input": [' + b"1" * 5000 + b"]}")
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_json"
    assert "digits" in error_of(response)["message"]


def test_an_unknown_model_name_is_not_echoed_whole(plain):
    response = plain.post({"input": "a", "model": "m" * 100_000}, headers={})
    assert response.status_code == 404 and len(response.content) < 1000
    assert "'mmmm" in error_of(response)["message"] and "100000 characters" in error_of(response)["message"]


def test_a_request_outliving_the_shutdown_timeout_gets_a_503(encoder, monkeypatch):
    real = encoder.run_rows
    gate = threading.Event()

    def stuck(parts, **kwargs):
        gate.wait(30)
        return real(parts, **kwargs)

    try:
        with LiveServer(encoder, shutdown_timeout_s=0.5) as live:
            monkeypatch.setattr(encoder, "run_rows", stuck)
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(live.post, {"input": "a"}, headers={})
                while live.metrics()[("metaeol_queue_requests", ())] < 1:
                    time.sleep(0.02)
                live.server.should_exit = True
                answer = pending.result()
            live.thread.join(20)
            assert not live.thread.is_alive(), "the shutdown waited for the stuck batch"
    finally:
        gate.set()
    assert answer.status_code == 503 and error_of(answer)["code"] == "shutting_down"
    assert "--shutdown-timeout" in error_of(answer)["message"]
