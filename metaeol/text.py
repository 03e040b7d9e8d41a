"""Sentence clean-up exactly as the MetaEOL reference script does it."""

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
