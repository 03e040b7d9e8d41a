"""``metaeol templates``: list, show and generate prompt sets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import yaml

from metaeol.cli.errors import user_errors
from metaeol.prompts import META_TASKS, PromptSet, PromptSetError, builtin_prompt_sets, load_prompt_set
from metaeol.templategen.errors import AuthenticationError, GenerationError
from metaeol.templategen.generate import ChatGenerator, Settings, generate_templates
from metaeol.templategen.instructions import meta_task
from metaeol.templategen.validation import Limits


def _load(spec: str, allow_empty_generated: bool = False) -> PromptSet:
    """A prompt set; with ``allow_empty_generated``, also a generated file in which no
    template was accepted (it still holds the generation record)."""
    try:
        return load_prompt_set(spec)
    except PromptSetError as err:
        data = _read_mapping(spec) if allow_empty_generated else {}
        if data.get("templates") == [] and isinstance(data.get("generation"), dict):
            name, description = str(data.get("name", Path(spec).stem)), str(data.get("description", ""))
            return PromptSet(name, (), description, {"generation": data["generation"]})
        raise click.ClickException(str(err)) from None


def _read_mapping(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))  # YAML also reads JSON
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


@click.group("templates")
def templates_group() -> None:
    """Prompt sets: list and show them, or generate new ones with an instruction LLM."""


@templates_group.command("list")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
def list_command(files: tuple[str, ...]) -> None:
    """List the built-in prompt sets, and any prompt-set FILES given."""
    for spec in [*builtin_prompt_sets(), *files]:
        prompt_set = _load(spec)
        summary = prompt_set.description.split(". ")[0][:70]
        click.echo(f"{spec:<12} {len(prompt_set):>3} templates  [{','.join(prompt_set.tasks)}]  {summary}")


@templates_group.command("show")
@click.argument("name")
def show_command(name: str) -> None:
    """Show the templates of a built-in set or a prompt-set file, and any generation record."""
    prompt_set = _load(name, allow_empty_generated=True)
    click.echo(f"{prompt_set.name}: {len(prompt_set)} templates")
    if prompt_set.description:
        click.echo(prompt_set.description)
    for template in prompt_set:
        click.echo(f"\n[{template.task or '-'}] {template.name}\n  {template.text}")
    generation = prompt_set.metadata.get("generation")
    if isinstance(generation, dict):
        settings = ", ".join(f"{k}={generation.get(k)}" for k in ("generator", "model", "seed", "temperature"))
        click.echo(f"\ngenerated: {settings}, at {generation.get('created')}")
        for rejection in generation.get("rejected", []):
            click.echo(f"  rejected [{rejection['task']}] {rejection['reason']}: {rejection['text'][:100]!r}")


@templates_group.command("generate")
@click.option("-t", "--task", "tasks", multiple=True, metavar="TASK",
              help=f"Meta-task: one of {', '.join(META_TASKS)}, or a description in your own words. "
                   "Repeatable; default: all four built-in meta-tasks.")
@click.option("--tag", default="CUSTOM", show_default=True, help="Task tag for templates of a described meta-task.")
@click.option("-n", "n", type=click.IntRange(min=1), default=4, show_default=True, help="Templates per meta-task.")
@click.option("--generator", type=click.Choice(["openai", "local"]), default="openai", show_default=True,
              help="openai: any OpenAI-compatible chat endpoint; local: a transformers instruction model.")
@click.option("--model", required=True,
              help="Model name for the endpoint, or for local a hub id, folder or .gguf file.")
@click.option("--base-url", default="https://api.openai.com/v1", show_default=True,
              help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1 (vLLM), "
                   "http://localhost:8080/v1 (llama.cpp), http://localhost:11434/v1 (Ollama).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the API key (none is sent if it is unset).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed; request k uses seed + k.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Reply length limit per request.")
@click.option("--max-requests", type=click.IntRange(min=1), default=3, show_default=True,
              help="Requests per meta-task to reach N accepted templates.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds to wait on the server (per connect/read).")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Retries on connection errors, timeouts, 429 and 5xx, with exponential backoff.")
@click.option("--min-chars", type=click.IntRange(min=1), default=Limits.min_chars, show_default=True)
@click.option("--max-chars", type=click.IntRange(min=1), default=Limits.max_chars, show_default=True)
@click.option("--name", default=None, help="Name of the generated set (default: the output file's stem).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the set (.yaml/.yml, else JSON).")
def generate_command(
    tasks: tuple[str, ...], tag: str, n: int, generator: str, model: str, base_url: str, api_key_env: str,
    seed: int, temperature: float, max_tokens: int, max_requests: int, timeout: float, retries: int,
    min_chars: int, max_chars: int, name: str | None, output: Path,
) -> None:
    """Generate N templates per meta-task with an instruction LLM and write them as a prompt set.

    Every candidate is checked (one {s} inside double quotes, ends in `in one word:"`, length
    bounds, no duplicates); rejected ones are listed with their reason and recorded in the
    file, along with the generator, model, seed, temperature and generation-prompt hash.
    Exits with status 1 (after writing the file) when no template was accepted.
    """
    if min_chars > max_chars:
        raise click.BadParameter("--min-chars exceeds --max-chars")
    try:
        meta_tasks = [meta_task(spec, tag) for spec in (tasks or META_TASKS)]
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--task") from None
    settings = Settings(n, temperature, seed, max_tokens, max_requests, Limits(min_chars, max_chars))
    try:
        chat = _generator(generator, model, base_url, api_key_env, timeout, retries)
        result = generate_templates(
            chat, meta_tasks, settings, name=name or output.stem, progress=lambda line: click.echo(line, err=True)
        )
    except AuthenticationError as err:
        state = "is set" if os.environ.get(api_key_env) else "is not set"
        raise click.ClickException(f"{err}\nThe key is read from ${api_key_env}, which {state}.") from None
    except GenerationError as err:
        raise click.ClickException(str(err)) from None
    with user_errors():
        output.parent.mkdir(parents=True, exist_ok=True)
        result.prompt_set.save(output)

    for template in result.prompt_set:
        click.echo(f"accepted [{template.task}] {template.name}: {template.text}")
    for rejection in result.rejected:
        click.echo(f"rejected [{rejection.task}] {rejection.reason}: {rejection.text[:160]!r}")
    counts = ", ".join(f"{r['task']} {r['accepted']}/{n}" for r in result.tasks)
    click.echo(f"wrote {output}: {len(result.prompt_set)} accepted ({counts}), {len(result.rejected)} rejected")
    if not len(result.prompt_set):
        raise click.ClickException(f"no template was accepted; see the rejected candidates in {output}")


def _generator(kind: str, model: str, base_url: str, api_key_env: str, timeout: float, retries: int) -> ChatGenerator:
    if kind == "local":
        from metaeol.templategen.local_chat import LocalChat

        return LocalChat.load(model)
    from metaeol.templategen.openai_chat import OpenAIChat

    return OpenAIChat(base_url, model, os.environ.get(api_key_env) or None, timeout=timeout, retries=retries)
