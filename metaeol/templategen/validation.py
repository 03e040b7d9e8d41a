"""Judge candidate templates: accept them or reject them with a stated reason."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from metaeol.prompts import PLACEHOLDER, validate_template_text

ANSWER_SLOT = 'in one word:"'
QUOTED_PLACEHOLDER = f'"{PLACEHOLDER}"'


@dataclass(frozen=True)
class Limits:
    """Length bounds on a template, in characters."""

    min_chars: int = 30
    max_chars: int = 800


@dataclass(frozen=True)
class Rejection:
    """A candidate that was not kept, and why."""

    task: str
    text: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"task": self.task, "text": self.text, "reason": self.reason}


def normalise(text: str) -> str:
    """Comparison key for duplicates: case, punctuation and spacing ignored."""
    return " ".join(re.sub(r"[^\w{}]+", " ", text.casefold()).split())


def problem(text: str, limits: Limits) -> str | None:
    """Why ``text`` is not an acceptable generated template, or None (duplicates aside)."""
    basic = validate_template_text(text)
    if basic:
        return basic
    if len(text) < limits.min_chars:
        return f"too short: {len(text)} characters, minimum {limits.min_chars}"
    if len(text) > limits.max_chars:
        return f"too long: {len(text)} characters, maximum {limits.max_chars}"
    if QUOTED_PLACEHOLDER not in text:
        return f"the placeholder must sit inside double quotes, as {QUOTED_PLACEHOLDER}"
    if not text.endswith(ANSWER_SLOT):
        return f"does not end in the one-word answer slot {ANSWER_SLOT!r}"
    return None


@dataclass
class Screen:
    """Screens candidates one by one: invalid ones and duplicates of anything accepted
    or of the ``known`` texts (e.g. the examples shown to the model) are rejected."""

    limits: Limits = field(default_factory=Limits)
    known: dict[str, str] = field(default_factory=dict)  # normalised text -> what it is

    def add_known(self, text: str, label: str) -> None:
        """Register a text that candidates must not repeat."""
        self.known.setdefault(normalise(text), label)

    def reason(self, text: str) -> str | None:
        """Why ``text`` is rejected, or None if it is acceptable."""
        reason = problem(text, self.limits)
        if reason is None and normalise(text) in self.known:
            reason = f"duplicate of {self.known[normalise(text)]}"
        return reason

    def accept(self, text: str, name: str) -> None:
        """Remember ``text`` as the accepted template ``name``."""
        self.known[normalise(text)] = f"accepted template {name!r}"
