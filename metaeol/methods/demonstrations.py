"""In-context demonstrations: PromptEOL + ICL (Jiang et al., arXiv 2307.16645; official code:
kongds/scaling_sentemb).

A demonstration is a sentence and its one-word answer written in the template's own wording and
placed before the template: for PromptEOL, ``This sentence : "A jockey riding a horse." means in one
word:"Equestrian".This sentence : "{s}" means in one word:"`` -- the string the official
``evaluation.py`` builds from an ``icl_examples.txt`` line (``_`` -> space, no separator after the
demonstration's closing ``".``). The demonstration becomes part of the template text, so it is in
the template hash (results, vector store) and in the prefix the prefix engine computes once.

Files (YAML or JSON):

* a **pool** of candidates (``candidates: [{sentence, answer}]``, an ``answers: {template: answer}``
  mapping instead of ``answer`` for sets whose templates answer differently; optional
  ``selected: {label: index}``); the official pool ships as ``scaling_sentemb``;
* **demonstrations**: one per template name (``demonstrations: {name: {sentence, answer}}``, ``'*'``
  for every template), what :func:`metaeol.methods.selection.select_demonstrations` writes.

A spec ``POOL:PICK`` takes one pool candidate (``PICK`` an index or a ``selected`` label, e.g.
``scaling_sentemb:opt-2.7b``) for every template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from metaeol.prompts import PLACEHOLDER, PromptSet, PromptSetError, Template

ALL_TEMPLATES = "*"


class DemonstrationError(PromptSetError):
    """A demonstration pool or file could not be found, read or applied."""


@dataclass(frozen=True)
class Demonstration:
    """A sentence and its one-word answer (``answers`` per template name, else ``answer``)."""

    sentence: str
    answer: str = ""
    answers: Mapping[str, str] = field(default_factory=dict)

    def answer_for(self, template: Template) -> str:
        answer = self.answers.get(template.name, self.answer)
        if not answer:
            raise DemonstrationError(f"demonstration {self.sentence!r} has no answer for template {template.name!r}")
        return answer

    def text(self, template: Template) -> str:
        """The demonstration in ``template``'s wording: the template filled with the sentence,
        then the answer and the closing ``".``."""
        if template.echo:
            raise DemonstrationError(f"template {template.name!r} is an echo template; demonstrations need a "
                                     "one-word answer slot")
        return template.text.replace(PLACEHOLDER, self.sentence) + self.answer_for(template) + '".'

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sentence": self.sentence}
        if self.answer:
            out["answer"] = self.answer
        if self.answers:
            out["answers"] = dict(self.answers)
        return out


def demonstration_from_dict(item: Any, origin: str) -> Demonstration:
    """A validated :class:`Demonstration` from parsed YAML/JSON; errors name ``origin``."""
    if not isinstance(item, dict) or not isinstance(item.get("sentence"), str) or not item["sentence"].strip():
        raise DemonstrationError(f"{origin}: a demonstration needs a non-empty 'sentence'")
    answer, answers = item.get("answer", ""), item.get("answers", {})
    if not isinstance(answer, str) or not isinstance(answers, dict) or not all(
            isinstance(v, str) and v for v in answers.values()):
        raise DemonstrationError(f"{origin}: 'answer' must be a string and 'answers' a mapping of template names "
                                 "to strings")
    if not answer and not answers:
        raise DemonstrationError(f"{origin}: demonstration {item['sentence']!r} has no 'answer' or 'answers'")
    if any(PLACEHOLDER in text for text in (item["sentence"], answer, *answers.values())):
        raise DemonstrationError(f"{origin}: a demonstration may not contain {PLACEHOLDER}")
    return Demonstration(item["sentence"], answer, {str(k): v for k, v in answers.items()})


@dataclass(frozen=True)
class Demonstrations:
    """One demonstration per template name (``'*'``: every template without its own)."""

    name: str
    by_template: Mapping[str, Demonstration]

    def for_template(self, template: Template) -> Demonstration:
        found = self.by_template.get(template.name, self.by_template.get(ALL_TEMPLATES))
        if found is None:
            raise DemonstrationError(f"demonstrations {self.name!r} have none for template {template.name!r} "
                                     f"(they name {sorted(self.by_template)})")
        return found

    def apply(self, prompt_set: PromptSet) -> PromptSet:
        """``prompt_set`` with each template's demonstration before it."""
        templates = tuple(Template(t.name, self.for_template(t).text(t) + t.text, t.task) for t in prompt_set)
        metadata = {**prompt_set.metadata, "demonstrations": self.name}
        return PromptSet(f"{prompt_set.name}+{self.name}", templates, prompt_set.description, metadata)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "demonstrations": {k: d.to_dict() for k, d in self.by_template.items()}}

    def save(self, path: str | Path) -> Path:
        """Write as JSON (``.json``) or YAML (any other name, as the CLI's ``--output`` says)."""
        path = Path(path)
        data = self.to_dict()
        text = (json.dumps(data, indent=2, ensure_ascii=False) + "\n" if path.suffix.lower() == ".json"
                else yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000))
        path.write_text(text, encoding="utf-8")
        return path


@dataclass(frozen=True)
class DemonstrationPool:
    """Candidate demonstrations, with the labelled picks of the source (``selected``)."""

    name: str
    candidates: tuple[Demonstration, ...]
    selected: Mapping[str, int] = field(default_factory=dict)

    def pick(self, key: str | int) -> Demonstration:
        """A candidate by 0-based index or ``selected`` label."""
        text = str(key)
        index = self.selected.get(text, int(text) if text.lstrip("-").isdigit() else None)
        if index is None or not 0 <= index < len(self.candidates):
            raise DemonstrationError(f"pool {self.name!r} has no candidate {text!r}: give an index "
                                     f"0..{len(self.candidates) - 1} or one of {sorted(self.selected)}")
        return self.candidates[index]


def builtin_pools() -> list[str]:
    """Names of the demonstration pools shipped with the package."""
    folder = resources.files("metaeol") / "prompt_sets" / "demonstrations"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read(spec: str | Path) -> tuple[Any, str]:
    """Parsed YAML/JSON of a built-in pool name or a file, and its origin for messages."""
    if str(spec) in builtin_pools():
        resource = resources.files("metaeol") / "prompt_sets" / "demonstrations" / f"{spec}.yaml"
        return yaml.safe_load(resource.read_text(encoding="utf-8")), f"{spec}.yaml"
    path = Path(spec)
    if not path.is_file():
        raise DemonstrationError(f"unknown demonstrations {str(spec)!r}: not a built-in pool {builtin_pools()} "
                                 "and no such file")
    try:
        text = path.read_text(encoding="utf-8")
        return (json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)), str(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise DemonstrationError(f"{path}: cannot read demonstrations: {' '.join(str(err).split())}") from err


def load_pool(spec: str | Path | DemonstrationPool) -> DemonstrationPool:
    """A pool by built-in name (``scaling_sentemb``) or YAML/JSON file."""
    if isinstance(spec, DemonstrationPool):
        return spec
    data, origin = _read(spec)
    if not isinstance(data, dict) or not isinstance(data.get("candidates"), list) or not data["candidates"]:
        raise DemonstrationError(f"{origin}: a pool needs a non-empty 'candidates' list")
    candidates = tuple(demonstration_from_dict(item, f"{origin} candidate #{i}")
                       for i, item in enumerate(data["candidates"]))
    selected = data.get("selected") or {}
    if not isinstance(selected, dict) or not all(isinstance(v, int) and 0 <= v < len(candidates)
                                                 for v in selected.values()):
        raise DemonstrationError(f"{origin}: 'selected' must map labels to candidate indices")
    return DemonstrationPool(str(data.get("name") or Path(origin).stem), candidates,
                             {str(k): v for k, v in selected.items()})


def load_demonstrations(spec: str | Path | Demonstrations) -> Demonstrations:
    """Demonstrations from a file of them, or ``POOL:PICK`` (one pool candidate for every template)."""
    if isinstance(spec, Demonstrations):
        return spec
    text = str(spec)
    if ":" in text and not Path(text).is_file():
        pool_spec, pick = text.rsplit(":", 1)
        pool = load_pool(pool_spec)
        return Demonstrations(f"{pool.name}:{pick}", {ALL_TEMPLATES: pool.pick(pick)})
    data, origin = _read(spec)
    if isinstance(data, dict) and "candidates" in data:
        raise DemonstrationError(f"{origin} is a pool of candidates: pick one ({text}:INDEX or {text}:LABEL) "
                                 "or select them on STS-B dev (`metaeol demonstrations select`)")
    if not isinstance(data, dict) or not isinstance(data.get("demonstrations"), dict) or not data["demonstrations"]:
        raise DemonstrationError(f"{origin}: expected a non-empty 'demonstrations' mapping of template names")
    by_template = {str(name): demonstration_from_dict(item, f"{origin} {name!r}")
                   for name, item in data["demonstrations"].items()}
    return Demonstrations(str(data.get("name") or Path(origin).stem), by_template)
