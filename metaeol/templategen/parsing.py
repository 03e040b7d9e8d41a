"""Turn a free-text LLM reply into candidate template strings.

Handles JSON arrays (of strings, or of objects with a ``text``/``template`` field, or an
object with a ``templates`` list), numbered or bulleted lists, templates wrapped in quotes
or backticks, and any of these inside Markdown code fences. Candidates are returned as
found; judging them is :mod:`metaeol.templategen.validation`'s job.
"""

from __future__ import annotations

import json
import re

from metaeol.prompts import PLACEHOLDER

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_LIST_MARKER = re.compile(
    r"^\s*(?:(?:template|prompt)\s*#?\d+\s*[:.)-]|\(?\d{1,3}[.):]|\(?[a-zA-Z][.)]|[-*\u2022+])\s+",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^(?:\*\*)?(?:template|prompt)\s*#?\d*\s*(?:\*\*)?\s*[:.)-]\s*(?:\*\*)?\s*", re.IGNORECASE)
_WRAPPERS = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
_TYPOGRAPHIC_DOUBLE = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"'})


def parse_candidates(reply: str) -> list[str]:
    """Candidate templates in ``reply``, in order, cleaned of list markers and wrapping."""
    blocks = _FENCE.findall(reply)
    text = "\n".join(blocks) if blocks else reply
    found = _from_json(text)
    if found is None:
        found = _from_lines(text)
    return [c for c in (_clean(item) for item in found) if c]


def _from_json(text: str) -> list[str] | None:
    """Strings of the outermost JSON array/object in ``text``, or None when there is none."""
    for opener, closer in (("[", "]"), ("{", "}")):
        start, end = text.find(opener), text.rfind(closer)
        if start == -1 or end <= start:
            continue
        try:
            data = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            data = data.get("templates")
        if isinstance(data, list):
            return [_json_item(item) for item in data]
    return None


def _json_item(item: object) -> str:
    if isinstance(item, dict):
        item = item.get("text", item.get("template", ""))
    return item if isinstance(item, str) else ""


def _from_lines(text: str) -> list[str]:
    """List items (joined with their continuation lines) and any other line holding the
    placeholder (a second placeholder line starts a new item); other prose is not a candidate."""
    items: list[str] = []
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line in ("[", "]", "{", "}"):
            current = None
            continue
        marker = _LIST_MARKER.match(line)
        if marker:
            current = [line[marker.end() :]]
            items.append("")
        elif PLACEHOLDER in line and (current is None or PLACEHOLDER in items[-1]):
            current = [line]
            items.append("")
        elif current is not None:
            current.append(line)
        else:
            continue
        items[-1] = " ".join(current)
    return items


def _clean(candidate: str) -> str:
    """Strip whitespace, a "Template 2:" label, a trailing list comma, wrapping quotes,
    backticks and bold markers; turn typographic double quotes into ASCII ones."""
    text = _LABEL.sub("", candidate.strip()).removesuffix(",").strip()
    if text.startswith("**") and text.endswith("**") and len(text) > 4:
        text = text[2:-2].strip()
    if text[:1] in _WRAPPERS:
        closer = _WRAPPERS[text[0]]
        body = text[1:]
        # A template itself ends in '"', so a double-quote wrapper shows as a doubled '""'.
        if body.endswith(closer) and (closer != '"' or body[:-1].endswith('"')):
            body = body[:-1]
        text = body.strip()
    return text.translate(_TYPOGRAPHIC_DOUBLE)
