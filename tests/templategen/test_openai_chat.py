"""The OpenAI-compatible generator against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import pytest
from fake_openai import FakeOpenAI, Response, chat_reply

from metaeol.templategen.errors import (
    AuthenticationError,
    GenerationError,
    MalformedReplyError,
    ServerUnreachableError,
)
from metaeol.templategen.openai_chat import OpenAIChat

MESSAGES = [{"role": "user", "content": "hello"}]


def ask(chat: OpenAIChat) -> str:
    return chat.complete(MESSAGES, temperature=0.5, seed=7, max_tokens=64)


def client(server: FakeOpenAI, **kwargs) -> OpenAIChat:
    return OpenAIChat(server.base_url, "test-model", api_key=kwargs.pop("api_key", "sk-test"),
                      **{"timeout": 2.0, "retries": 2, "backoff": 0.01, **kwargs})


def test_good_reply_and_request_shape(fake_server):
    fake_server.reply("hi there")
    assert ask(client(fake_server)) == "hi there"
    (request,) = fake_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert request["json"] == {
        "model": "test-model", "messages": MESSAGES, "temperature": 0.5, "seed": 7, "max_tokens": 64,
    }


def test_no_key_sends_no_authorization(fake_server):
    fake_server.reply("ok")
    ask(client(fake_server, api_key=None))
    assert "Authorization" not in fake_server.requests[0]["headers"]


@pytest.mark.parametrize("status", [401, 403])
def test_bad_key_is_not_retried(fake_server, status):
    fake_server.push(Response(status, {"error": {"message": "Incorrect API key provided"}}))
    with pytest.raises(AuthenticationError, match=f"rejected the API key \\(HTTP {status}\\).*Incorrect API key"):
        ask(client(fake_server))
    assert len(fake_server.requests) == 1


def test_server_error_then_success_is_retried(fake_server):
    fake_server.push(Response(500, {"error": "boom"}), Response(503, "overloaded"))
    fake_server.reply("third time lucky")
    assert ask(client(fake_server)) == "third time lucky"
    assert len(fake_server.requests) == 3


def test_rate_limit_honours_retry_after(fake_server):
    fake_server.push(Response(429, {"error": "slow down"}, headers={"Retry-After": "0.3"}))
    fake_server.reply("ok")
    start = time.monotonic()
    assert ask(client(fake_server)) == "ok"
    assert time.monotonic() - start >= 0.3  # waited as told, not the 0.01 s backoff
    assert len(fake_server.requests) == 2


def test_backoff_doubles(fake_server):
    fake_server.push(*(Response(500, "x") for _ in range(3)))
    fake_server.reply("ok")
    start = time.monotonic()
    assert ask(client(fake_server, retries=3, backoff=0.1)) == "ok"
    assert time.monotonic() - start >= 0.1 + 0.2 + 0.4


def test_persistent_server_error_gives_up(fake_server):
    fake_server.push(*(Response(502, "bad gateway") for _ in range(3)))
    with pytest.raises(GenerationError, match="gave up after 3 attempt.*HTTP 502: bad gateway") as info:
        ask(client(fake_server))
    assert not isinstance(info.value, ServerUnreachableError)
    assert len(fake_server.requests) == 3


def test_other_client_error_is_not_retried_and_404_hints_at_base_url(fake_server):
    fake_server.push(Response(404, {"error": "not found"}))
    with pytest.raises(GenerationError, match="HTTP 404 \\(is the base URL right"):
        ask(client(fake_server))
    assert len(fake_server.requests) == 1


def test_slow_server_times_out_after_retries(fake_server):
    fake_server.push(*(Response(body=chat_reply("late"), delay=1.5) for _ in range(2)))
    start = time.monotonic()
    with pytest.raises(ServerUnreachableError, match="gave up after 2 attempt.*no reply within 0.2 s"):
        ask(client(fake_server, timeout=0.2, retries=1))
    assert time.monotonic() - start < 1.5
    assert len(fake_server.requests) == 2


def test_unreachable_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chat = OpenAIChat(f"http://127.0.0.1:{port}/v1", "m", timeout=1.0, retries=1, backoff=0.01)
    with pytest.raises(ServerUnreachableError, match="gave up after 2 attempt.*cannot connect"):
        ask(chat)


@pytest.mark.parametrize(
    "body, message",
    [
        ("<html>Bad Gateway</html>", "did not answer with JSON"),
        ({"object": "list", "data": []}, "without choices\\[0\\].message.content"),
        ({"choices": []}, "without choices"),
        (chat_reply(None, finish_reason="length"), "no text content \\(finish_reason='length'\\)"),
    ],
)
def test_malformed_reply(fake_server, body, message):
    fake_server.push(Response(200, body))
    with pytest.raises(MalformedReplyError, match=message):
        ask(client(fake_server))
    assert len(fake_server.requests) == 1
