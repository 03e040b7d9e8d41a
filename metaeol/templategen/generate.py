"""Ask a generator for templates per meta-task, screen them, and build a traceable prompt set."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol
from collections.abc import Callable, Sequence

from metaeol import __version__
from metaeol.prompts import PromptSet, Template, load_prompt_set
from metaeol.templategen.instructions import PROMPT_FILE, Message, MetaTask, build_messages, prompt_sha256
from metaeol.templategen.parsing import parse_candidates
from metaeol.templategen.validation import Limits, Rejection, Screen

NO_CANDIDATES = "no template candidates found in the reply"


class ChatGenerator(Protocol):
    """Anything that answers chat messages: :class:`OpenAIChat`, :class:`LocalChat`."""

    def describe(self) -> dict[str, Any]: ...

    def complete(
        self, messages: list[Message], *, temperature: float, seed: int | None, max_tokens: int | None
    ) -> str: ...


@dataclass(frozen=True)
class Settings:
    """How to generate. Request ``k`` (counted from 0 over the whole run) uses ``seed + k``;
    each meta-task gets up to ``max_requests`` requests to reach ``n`` accepted templates."""

    n: int = 4
    temperature: float = 0.7
    seed: int | None = 0
    max_tokens: int | None = 1024
    max_requests: int = 3
    limits: Limits = field(default_factory=Limits)


@dataclass
class GenerationResult:
    """The generated set (possibly without templates) and what was rejected."""

    prompt_set: PromptSet
    rejected: list[Rejection]
    tasks: list[dict[str, Any]]  # per meta-task: tag, name, accepted count, seeds used


def generate_templates(
    generator: ChatGenerator,
    tasks: Sequence[MetaTask],
    settings: Settings,
    name: str = "generated",
    progress: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Generate up to ``settings.n`` templates for each of ``tasks``.

    Candidates are rejected when invalid, or when they repeat each other, the examples in
    the generation prompt, or a built-in MetaEOL template. Generator errors propagate.
    ``progress`` receives a one-line summary after each request.
    """
    screen = Screen(settings.limits)
    for task in tasks:
        screen.add_known(task.example, f"the example given for {task.tag}")
    for builtin in load_prompt_set("metaeol"):
        screen.add_known(builtin.text, f"built-in template {builtin.name!r}")

    templates: list[Template] = []
    rejected: list[Rejection] = []
    task_records: list[dict[str, Any]] = []
    request_index = 0
    for task in tasks:
        accepted = 0
        seeds: list[int | None] = []
        while accepted < settings.n and len(seeds) < settings.max_requests:
            seed = None if settings.seed is None else settings.seed + request_index
            request_index += 1
            seeds.append(seed)
            reply = generator.complete(
                build_messages(task, settings.n - accepted),
                temperature=settings.temperature,
                seed=seed,
                max_tokens=settings.max_tokens,
            )
            candidates = parse_candidates(reply)
            before = accepted
            if not candidates:
                rejected.append(Rejection(task.tag, reply.strip(), NO_CANDIDATES))
            for text in candidates:
                reason = screen.reason(text)
                if reason is None and accepted >= settings.n:
                    reason = f"more than the {settings.n} requested"
                if reason is not None:
                    rejected.append(Rejection(task.tag, text, reason))
                    continue
                template = Template(_next_name(task.tag, templates), text, task.tag)
                screen.accept(text, template.name)
                templates.append(template)
                accepted += 1
            if progress:
                progress(
                    f"{task.tag} request {len(seeds)}/{settings.max_requests}: {len(candidates)} candidate(s), "
                    f"{accepted - before} accepted, {accepted}/{settings.n} so far"
                )
        record: dict[str, Any] = {"task": task.tag, "name": task.name, "accepted": accepted, "seeds": seeds}
        if task.custom:
            record["description"] = task.description
        task_records.append(record)

    generation = {
        **generator.describe(),
        "seed": settings.seed,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "n_per_task": settings.n,
        "max_requests_per_task": settings.max_requests,
        "min_chars": settings.limits.min_chars,
        "max_chars": settings.limits.max_chars,
        "prompt_file": PROMPT_FILE,
        "prompt_sha256": prompt_sha256(),
        "metaeol_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tasks": task_records,
        "rejected": [r.to_dict() for r in rejected],
    }
    description = (
        f"Templates generated by {generator.describe()['model']} for meta-task(s) "
        f"{', '.join(t.tag for t in tasks)} with `metaeol templates generate`."
    )
    prompt_set = PromptSet(name, tuple(templates), description, {"generation": generation})
    return GenerationResult(prompt_set, rejected, task_records)


def _next_name(tag: str, templates: list[Template]) -> str:
    return f"{tag.lower()}-{sum(t.task == tag for t in templates) + 1}"
