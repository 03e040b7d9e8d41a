"""Errors raised while talking to a generator; the CLI shows their message as is."""

from __future__ import annotations


class GenerationError(RuntimeError):
    """Template generation failed."""


class AuthenticationError(GenerationError):
    """The server rejected the API key (HTTP 401/403)."""


class ServerUnreachableError(GenerationError):
    """No connection to the server could be made, or it never answered in time."""


class MalformedReplyError(GenerationError):
    """The server answered, but not with a chat completion."""
