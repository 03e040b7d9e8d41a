"""guard.py without a server: which Host names a bind answers, and the Host/Origin/media checks."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from metaeol.serve.guard import Guard, allowed_hosts, host_name  # noqa: E402


def test_allowed_hosts_by_bind_and_option():
    assert allowed_hosts("127.0.0.1", []) == ["localhost", "127.0.0.1", "::1"]
    assert allowed_hosts("10.1.2.3", ["emb.internal"]) == ["localhost", "127.0.0.1", "::1", "10.1.2.3",
                                                            "emb.internal"]
    assert allowed_hosts("0.0.0.0", []) == ["*"]  # all interfaces: the names it is reached by are unknown
    assert allowed_hosts("0.0.0.0", ["emb.internal"]) == ["localhost", "127.0.0.1", "::1", "emb.internal"]
    assert allowed_hosts("[::1]", []) == ["localhost", "127.0.0.1", "::1"]


@pytest.mark.parametrize("host, name", [("Example.COM:8000", "example.com"), ("[::1]:8000", "::1"),
                                        ("localhost", "localhost"), ("", "")])
def test_host_name(host, name):
    assert host_name(host) == name


def scope(method="GET", **headers):
    return {"type": "http", "method": method,
            "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


def test_checks():
    guard = Guard(None, allowed_hosts=allowed_hosts("127.0.0.1", []), allowed_origins=["https://app.example"],
                  answer=None)
    assert guard.check(scope(host="127.0.0.1:8000")) is None
    assert guard.check(scope(host="evil.example")).code == "host_not_allowed"
    assert guard.check(scope(host="127.0.0.1:8000", origin="http://127.0.0.1:8000")) is None  # same origin
    assert guard.check(scope(host="127.0.0.1:8000", origin="http://localhost:3000")).code == "origin_not_allowed"
    assert guard.check(scope(host="127.0.0.1:8000", origin="https://app.example")) is None
    assert guard.check(scope("POST", host="localhost", content_type="text/plain")).status == 415
    assert guard.check(scope("POST", host="localhost", content_type="application/json; charset=utf-8")) is None
