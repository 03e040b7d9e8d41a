"""Prompt sets: named lists of templates, each with one sentence placeholder.

Built-in sets live as YAML files in ``metaeol/prompt_sets``; users can pass their own
YAML or JSON file of the same shape::

    name: my-set
    templates:
      - name: short
        task: PI            # meta-task tag, used to select subsets
        text: 'This sentence : "{s}" means in one word:"'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

PLACEHOLDER = "{s}"
META_TASKS = ("TC", "SA", "PI", "IE")


class PromptSetError(ValueError):
    """A prompt set could not be found, read or validated."""


@dataclass(frozen=True)
class Template:
    """One prompt template: ``text`` holds one ``{s}`` where the sentence goes, or two for an
    echo template (:mod:`metaeol.methods.echo`: the sentence twice, pooled over its second copy)."""

    name: str
    text: str
    task: str = ""

    @property
    def echo(self) -> bool:
        """Whether the sentence appears twice (an echo template)."""
        return self.text.count(PLACEHOLDER) == 2

    @property
    def prefix(self) -> str:
        """The text before the sentence placeholder."""
        return self.text.split(PLACEHOLDER, 1)[0]

    @property
    def suffix(self) -> str:
        """The text after the (first) sentence placeholder."""
        return self.text.split(PLACEHOLDER, 1)[1]

    @property
    def shared_prefix(self) -> str:
        """The text every filled prompt starts with (:meth:`fill` strips leading whitespace):
        the part whose key/value states the prefix engine computes once."""
        return self.prefix.lstrip()

    @property
    def sha256(self) -> str:
        """Hash of the template text: identifies the template in results and caches."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def fill(self, sentence: str) -> str:
        """The assembled prompt, stripped of outer whitespace as the reference does."""
        return self.text.replace(PLACEHOLDER, sentence).strip()


@dataclass(frozen=True)
class PromptSet:
    """An ordered, validated collection of templates."""

    name: str
    templates: tuple[Template, ...]
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.templates)

    def __iter__(self):
        return iter(self.templates)

    @property
    def echo(self) -> bool:
        """Whether any template is an echo template (pooled over a token span, see :mod:`metaeol.methods.echo`)."""
        return any(t.echo for t in self.templates)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The meta-task tags present, in first-seen order."""
        return tuple(dict.fromkeys(t.task for t in self.templates if t.task))

    def select(self, tasks: Iterable[str] | None = None, names: Iterable[str] | None = None) -> "PromptSet":
        """A subset keeping the original order: templates whose task is in ``tasks``
        and/or whose name is in ``names``."""
        chosen = list(self.templates)
        suffix = []
        if tasks is not None:
            wanted = [t.upper() for t in tasks]
            unknown = sorted(set(wanted) - set(self.tasks))
            if unknown:
                raise PromptSetError(
                    f"prompt set {self.name!r} has no templates for meta-task(s) {unknown}; "
                    f"it has {list(self.tasks)}"
                )
            chosen = [t for t in chosen if t.task in wanted]
            suffix.append("+".join(wanted))
        if names is not None:
            wanted_names = list(names)
            unknown = sorted(set(wanted_names) - {t.name for t in self.templates})
            if unknown:
                raise PromptSetError(f"prompt set {self.name!r} has no template(s) named {unknown}")
            chosen = [t for t in chosen if t.name in wanted_names]
            suffix.append(",".join(wanted_names))
        if not chosen:
            raise PromptSetError(f"selection from prompt set {self.name!r} is empty")
        name = self.name if not suffix else f"{self.name}[{';'.join(suffix)}]"
        return PromptSet(name, tuple(chosen), self.description, dict(self.metadata))

    def describe(self) -> dict[str, Any]:
        """Name and template hashes (and the demonstrations' name, when they are in the templates), for results files."""
        described: dict[str, Any] = {"name": self.name}
        if "demonstrations" in self.metadata:
            described["demonstrations"] = self.metadata["demonstrations"]
        described["templates"] = [{"name": t.name, "task": t.task, "sha256": t.sha256} for t in self.templates]
        return described

    def to_dict(self) -> dict[str, Any]:
        """The file form of this set (what :func:`load_prompt_set` reads)."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out.update({k: v for k, v in self.metadata.items() if k not in ("name", "description", "templates")})
        out["templates"] = [{"name": t.name, "task": t.task, "text": t.text} for t in self.templates]
        return out

    def save(self, path: str | Path) -> Path:
        """Write the set as YAML (``.yaml``/``.yml``) or JSON (any other suffix)."""
        path = Path(path)
        data = self.to_dict()
        if path.suffix.lower() in (".yaml", ".yml"):
            text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000)
        else:
            text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
        return path


def builtin_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped with the package."""
    folder = resources.files("metaeol") / "prompt_sets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def validate_template_text(text: str, echo: bool = False) -> str | None:
    """Why ``text`` is not a usable template, or None when it is (``echo``: two placeholders allowed)."""
    if not isinstance(text, str) or not text.strip():
        return "template text is empty"
    count = text.count(PLACEHOLDER)
    if count != 1 and not (echo and count == 2):
        extra = " (two for an echo template)" if echo else ""
        return f"template must contain exactly one {PLACEHOLDER} placeholder{extra}, found {count}"
    return None


def prompt_set_from_dict(data: Any, origin: str) -> PromptSet:
    """Build and validate a prompt set from parsed YAML/JSON; errors name ``origin``."""
    if isinstance(data, list):
        data = {"templates": data}
    if not isinstance(data, dict) or "templates" not in data:
        raise PromptSetError(f"{origin}: expected a mapping with a 'templates' list")
    raw = data["templates"]
    if not isinstance(raw, list) or not raw:
        raise PromptSetError(f"{origin}: 'templates' must be a non-empty list")
    templates: list[Template] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise PromptSetError(f"{origin}: template #{i + 1} must be a mapping or a string")
        name = str(item.get("name") or f"t{i + 1}")
        problem = validate_template_text(item.get("text"), echo=True)
        if problem:
            raise PromptSetError(f"{origin}: template #{i + 1} ({name!r}): {problem}")
        templates.append(Template(name=name, text=item["text"], task=str(item.get("task") or "").upper()))
    names = [t.name for t in templates]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PromptSetError(f"{origin}: duplicate template names {dupes}")
    metadata = {k: v for k, v in data.items() if k not in ("name", "description", "templates")}
    return PromptSet(
        name=str(data.get("name") or Path(origin).stem),
        templates=tuple(templates),
        description=str(data.get("description") or ""),
        metadata=metadata,
    )


def load_prompt_set(spec: "str | Path | PromptSet", tasks: Sequence[str] | None = None) -> PromptSet:
    """A built-in set by name (``metaeol``, ``prompteol``, ``pcoteol``, ``ke``, ``ck``, ``metaeol-ck``, ``echo``), or a
    YAML/JSON file path; optionally restricted to some meta-tasks."""
    if isinstance(spec, PromptSet):
        prompt_set = spec
    elif str(spec) in builtin_prompt_sets():
        resource = resources.files("metaeol") / "prompt_sets" / f"{spec}.yaml"
        prompt_set = prompt_set_from_dict(yaml.safe_load(resource.read_text(encoding="utf-8")), f"{spec}.yaml")
    else:
        path = Path(spec)
        if not path.exists():
            raise PromptSetError(
                f"unknown prompt set {str(spec)!r}: not a built-in set {builtin_prompt_sets()} and no such file"
            )
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
            raise PromptSetError(f"{path}: cannot read prompt set: {err}") from err
        prompt_set = prompt_set_from_dict(data, str(path))
    return prompt_set.select(tasks=tasks) if tasks else prompt_set
