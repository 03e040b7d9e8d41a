"""The generation prompt: what is asked of the instruction LLM for each meta-task.

The wording lives in ``generation_prompt.yaml`` next to this module so it can be read,
reviewed and versioned as data; its SHA-256 is recorded in every generated set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from string import Template as _Fields
from typing import Any

import yaml

from metaeol.prompts import META_TASKS

PROMPT_FILE = "generation_prompt.yaml"

Message = dict[str, str]


@dataclass(frozen=True)
class MetaTask:
    """A meta-task to write templates for: ``tag`` labels the templates (TC, SA, ...)."""

    tag: str
    name: str
    description: str
    example: str
    custom: bool = False


@lru_cache(maxsize=1)
def _prompt_text() -> str:
    return (resources.files("metaeol") / "templategen" / PROMPT_FILE).read_text(encoding="utf-8")


def _prompt_data() -> dict[str, Any]:
    return yaml.safe_load(_prompt_text())


def prompt_sha256() -> str:
    """Hash of the generation prompt file: identifies the prompt a set was made with."""
    return hashlib.sha256(_prompt_text().encode("utf-8")).hexdigest()


def meta_task(spec: str, tag: str = "CUSTOM") -> MetaTask:
    """A built-in meta-task by tag (TC, SA, PI, IE; any case), or else a user-described
    one whose description is ``spec`` and whose templates are tagged ``tag``."""
    data = _prompt_data()
    key = spec.strip().upper()
    if key in META_TASKS:
        entry = data["tasks"][key]
        return MetaTask(key, entry["name"], entry["description"].strip(), entry["example"].strip())
    if not spec.strip():
        raise ValueError("a meta-task is a tag (TC, SA, PI, IE) or a non-empty description")
    custom = data["custom"]
    return MetaTask(tag.strip().upper(), custom["name"], spec.strip(), custom["example"].strip(), custom=True)


def build_messages(task: MetaTask, n: int) -> list[Message]:
    """The chat messages asking for ``n`` templates for ``task``."""
    data = _prompt_data()
    user = _Fields(data["user"]).substitute(
        n=n, task_name=task.name, task_description=task.description, example=task.example
    )
    return [{"role": "system", "content": data["system"].strip()}, {"role": "user", "content": user}]
