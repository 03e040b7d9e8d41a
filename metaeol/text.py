"""Sentence clean-up exactly as the MetaEOL reference script does it, and the Unicode check
that every input path (files, Ray, the server) makes."""

from __future__ import annotations

_TERMINALS = ('.', '?', '"', "'")


def clean_sentence(sentence: str) -> str:
    """Append '.' unless the sentence ends in . ? " or '; turn '"' into "'";
    turn a final '?' into '.'."""
    if len(sentence) > 0 and sentence[-1] not in _TERMINALS:
        sentence += "."
    sentence = sentence.replace('"', "'")
    if sentence[-1:] == "?":
        sentence = sentence[:-1] + "."
    return sentence


def lone_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate in ``text`` (valid in JSON as ``"\\ud800"``, but not a
    character: no tokenizer or UTF-8 file takes it), or None when ``text`` is valid Unicode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None
