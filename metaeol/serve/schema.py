"""The OpenAI wire format: request validation, response bodies and error bodies."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from metaeol.serve.errors import APIError
from metaeol.text import lone_surrogate

# One input after validation: a text, or the token ids of one text.
Item = str | list[int]

_INPUT_KINDS = "a string, a list of strings, a list of token ids or a list of token-id lists"


class EmbeddingRequest(BaseModel):
    """Body of ``POST /v1/embeddings`` (unknown fields are ignored, as vLLM and TEI do)."""

    model_config = ConfigDict(extra="ignore")

    input: Any = Field(description=f"What to embed: {_INPUT_KINDS}.")
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(default=None, ge=1)
    user: StrictStr | None = None


def parse_request(body: Any, max_inputs: int, accept_token_ids: bool = False) -> tuple[EmbeddingRequest, list[Item]]:
    """Validate a decoded JSON body; return the request and its inputs as a flat list.

    Token-id inputs are refused unless ``accept_token_ids``: ids made by another tokenizer
    (tiktoken, as LangChain sends by default) would decode to unrelated text here.
    """
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(body).__name__}", param=None)
    try:
        request = EmbeddingRequest.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise APIError(400, f"{param}: {first['msg']}", param=param) from None
    items = _parse_input(request.input)
    if len(items) > max_inputs:
        raise APIError(400, f"input has {len(items)} items; this server accepts at most {max_inputs} per request "
                            "(--max-inputs-per-request)", param="input", code="too_many_inputs")
    for i, item in enumerate(items):
        if isinstance(item, str):
            _check_unicode(i, item)
        elif not accept_token_ids:
            raise APIError(400, f"input[{i}] is a list of token ids, which this server does not accept: ids from "
                                "another tokenizer (such as tiktoken) would embed unrelated text. Send the text as a "
                                "string instead (LangChain's OpenAIEmbeddings: pass check_embedding_ctx_length=False), "
                                "or start the server with --accept-token-ids if the ids come from this model's "
                                "own tokenizer", param="input", code="token_ids_not_accepted")
    return request, items


def _check_unicode(index: int, text: str) -> None:
    """Refuse a lone surrogate (valid JSON, ``"\\ud800"``, but not a character any tokenizer takes)."""
    at = lone_surrogate(text)
    if at is not None:
        raise APIError(400, f"input[{index}] is not valid Unicode: a lone surrogate (U+{ord(text[at]):04X}) "
                            f"at character {at}", param="input", code="invalid_text")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_input(value: Any) -> list[Item]:
    if isinstance(value, str):
        if not value:
            raise APIError(400, "input is an empty string; there is nothing to embed", param="input")
        return [value]
    if not isinstance(value, list):
        raise APIError(400, f"input must be {_INPUT_KINDS}, got {_json_type(value)}", param="input")
    if not value:
        raise APIError(400, "input is an empty list; there is nothing to embed", param="input")
    if all(_is_token(v) for v in value):
        return [value]
    if not isinstance(value[0], (str, list)):
        raise APIError(400, f"input[0] is {_json_type(value[0])}; input must be {_INPUT_KINDS}", param="input")
    items: list[Item] = []
    kind = type(value[0])
    for i, v in enumerate(value):
        if not isinstance(v, kind):
            raise APIError(400, f"input[{i}] is {_json_type(v)} but input[0] is {_json_type(value[0])}; input must be "
                                f"{_INPUT_KINDS}", param="input")
        if not v:
            what = "an empty string" if kind is str else "an empty token list"
            raise APIError(400, f"input[{i}] is {what}; there is nothing to embed", param="input")
        if kind is list:
            bad = next((j for j, t in enumerate(v) if not _is_token(t)), None)
            if bad is not None:
                raise APIError(400, f"input[{i}][{bad}] is {_json_type(v[bad])}, not a token id (an integer)",
                               param="input")
        items.append(v)
    return items


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def embeddings_body(vectors: np.ndarray, model: str, encoding_format: str, prompt_tokens: int) -> dict[str, Any]:
    """The OpenAI response of ``POST /v1/embeddings``; base64 is little-endian float32."""
    if encoding_format == "base64":
        as_le = np.ascontiguousarray(vectors, dtype="<f4")
        embeddings: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in as_le]
    else:
        embeddings = vectors.astype(np.float32).tolist()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
