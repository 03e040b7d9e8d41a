"""Options shared by the commands: one spelling, meaning and default everywhere."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click

from metaeol.loading import DEFAULT_MODEL

if TYPE_CHECKING:
    from metaeol.boosters import ContrastivePrompting, TokenPrepending


def parse_layers(value: str) -> int | list[int] | str:
    """``-1`` -> -1; ``-1,12,20`` -> [-1, 12, 20]; ``all`` -> ``"all"`` (see :mod:`metaeol.layers`)."""
    from metaeol.layers import parse_layers as parse

    try:
        return parse(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--layer") from err


def encoder_options(command: Callable | None = None, *, layer_default: str = "-1") -> Callable:
    """Add the options that choose and configure the encoder (use as ``@encoder_options`` or
    ``@encoder_options(layer_default="all")``)."""
    options = [
        click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
                     help="Hub id, local folder or .gguf file."),
        click.option("--prompts", "-p", default="metaeol", show_default=True,
                     help="Built-in prompt set (metaeol, prompteol, pcoteol, ke, ck, metaeol-ck, echo) or a YAML/JSON "
                          "file."),
        click.option("--meta-tasks", default=None, help="Keep only templates of these meta-tasks, e.g. SA,PI."),
        click.option("--layer", "-l", default=layer_default, show_default=True,
                     help="Hidden-state index (-1 = final output), several separated by commas, or 'all'."),
        click.option("--dtype", default="auto", show_default=True,
                     type=click.Choice(["auto", "float32", "bfloat16", "float16", "int8"]),
                     help="auto = float32 on CPU, bfloat16 on GPU; int8 = int8 linear layers (CPU)."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
        click.option("--engine", default="prefix", show_default=True, type=click.Choice(["prefix", "plain"]),
                     help="prefix reuses each template's instruction states; plain runs full prompts."),
        click.option("--pooling", default="last", show_default=True, type=click.Choice(["last", "mean"]),
                     help="last = the method; mean = mean pooling baseline."),
        click.option("--batch-size", "-b", default=32, show_default=True, type=click.IntRange(min=1),
                     help="Sentences per forward pass (each brings one row per template)."),
        click.option("--pass-tokens", default=None, type=click.IntRange(min=1),
                     help="Tokens per engine pass (default 512 on CPU, 16384 on GPU); vectors do not depend on "
                          "it. `metaeol bench --pass-tokens 512,1024,2048` finds this machine's fastest."),
        click.option("--max-sentence-tokens", default=512, show_default=True, type=click.IntRange(min=1),
                     help="Cut longer sentences to this many tokens (templates are never cut)."),
        click.option("--no-clean", is_flag=True,
                     help="Place sentences as they are, without the reference clean-up (echo's official code has none)."),
        click.option("--attn-implementation", default=None, help="sdpa (default) or eager."),
        click.option("--store", default=None, type=click.Path(dir_okay=False),
                     help="SQLite vector store used as a cache: repeated inputs cost no model time."),
        *booster_options(),
        *method_options(),
    ]

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate if command is None else decorate(command)


def booster_options() -> list[Callable]:
    """The training-free boosters' options (docs/boosters.md)."""
    return [
        click.option("--token-prepending", default=None, metavar="START:END",
                     help="Token Prepending: the placeholder takes the last-token state entering blocks "
                          "START..END-1 (0-based), e.g. 1:7; off (the default) disables it. `sweep` takes "
                          "several, separated by commas (off,1:4,1:7), and tries each."),
        click.option("--tp-placeholder", default=None,
                     help="Token Prepending placeholder input vector: random (seeded; the default), mean (mean input "
                          "embedding), or a .npy file holding one vector."),
        click.option("--tp-seed", default=None, type=int, help="Seed of the random placeholder (default 0)."),
        click.option("--tp-placement", default=None, metavar="PLACEMENT",
                     help="Token Prepending placement: official (<PST> before the opening quote, as the official "
                          "code; the default) or sentence (before the sentence's first token, for templates that do "
                          "not quote it). `sweep` takes both (official,sentence) and tries each with every "
                          "--token-prepending setting."),
        click.option("--contrastive", default=None, metavar="LAYER:SCALE",
                     help="Contrastive Prompting: at block LAYER (0-based) the last token's attention output A "
                          "becomes SCALE*(A-B), B the auxiliary prompt's, e.g. 4:0.5; off (the default) disables "
                          "it. `sweep` takes several, separated by commas (off,4:0.5,6:0.5), and tries each."),
        click.option("--cp-auxiliary", default=None,
                     help="Contrastive Prompting auxiliary template with one {s} (default: the official one)."),
    ]


def method_options() -> list[Callable]:
    """Options of the methods in metaeol.methods (docs/methods.md)."""
    return [
        click.option("--demonstrations", default=None, metavar="SPEC",
                     help="In-context demonstrations before each template (PromptEOL + ICL): a demonstrations file, "
                          "or POOL:PICK, one pool candidate for every template (e.g. scaling_sentemb:opt-2.7b). "
                          "`sweep` takes several, separated by commas (off,scaling_sentemb:opt-125m), and tries each."),
        click.option("--embed-filter", default=None, metavar="RATIO",
                     help="EmbedFilter: project the vectors onto the middle hidden_size/RATIO singular directions "
                          "of the unembedding matrix (official --filter_ratio; off by default). `sweep` takes "
                          "several, separated by commas (off,2,4), and tries each."),
    ]


S = TypeVar("S")

# the options `metaeol sweep` takes several settings of (with the detail options of those settings)
GRID_OPTIONS = ("token_prepending", "tp_placeholder", "tp_seed", "tp_placement", "contrastive", "cp_auxiliary",
                "demonstrations", "embed_filter")


def _settings(options: dict[str, Any], name: str, parse: Callable[[str], S]) -> list[S | None]:
    """The comma-separated settings of booster option ``name``; ``off`` (and no option) is None."""
    flag = "--" + name.replace("_", "-")
    text = options.get(name)
    if text is None:
        return [None]
    items = [part.strip() for part in text.split(",")]
    if not all(items):
        raise ValueError(f"{flag}: empty setting in {text!r}")
    try:
        settings = [None if item.lower() == "off" else parse(item) for item in items]
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None
    repeated = [item for item, setting in zip(items, settings) if settings.count(setting) > 1]
    if repeated:
        raise ValueError(f"{flag}: {text!r} lists one setting twice ({', '.join(repeated)})")
    return settings


def token_prepending_grid(options: dict[str, Any]) -> list[TokenPrepending | None]:
    """The :class:`~metaeol.boosters.TokenPrepending` settings the options list (None = off)."""
    from metaeol.boosters import TokenPrepending

    settings_given = any(setting is not None for setting in _settings(options, "token_prepending", str))
    _needs_booster(options, ("tp_placeholder", "tp_seed", "tp_placement"), settings_given, "--token-prepending")
    placeholder = options.get("tp_placeholder") or "random"
    seed = options.get("tp_seed") or 0
    if settings_given and placeholder.endswith(".npy"):
        import numpy as np

        try:
            placeholder = np.load(placeholder)
        except (OSError, ValueError) as err:
            raise ValueError(f"--tp-placeholder: cannot read {placeholder}: {err}") from err
    placements = [p for p in _settings({"tp_placement": options.get("tp_placement") or "official"}, "tp_placement",
                                       _placement) if p is not None]
    if not placements:
        raise ValueError("--tp-placement: give sentence, official or both")
    ranges = _settings(options, "token_prepending",
                       lambda text: TokenPrepending.parse(text, placeholder=placeholder, seed=seed, placement=placements[0]))
    return [None if tp is None else replace(tp, placement=placement)
            for tp in ranges for placement in ([None] if tp is None else placements)]


def _placement(text: str) -> str:
    from metaeol.boosters.token_prepending import PLACEMENTS

    if text not in PLACEMENTS:
        raise ValueError(f"{text!r} is not a placement; use {' or '.join(PLACEMENTS)}")
    return text


def demonstrations_grid(options: dict[str, Any]) -> list[str | None]:
    """The demonstration specs ``--demonstrations`` lists (None = off)."""
    return _settings(options, "demonstrations", str)


def embed_filter_grid(options: dict[str, Any]) -> list[int | None]:
    """The EmbedFilter ratios ``--embed-filter`` lists (None = off)."""
    def ratio(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{text!r} is not a ratio (an integer >= 1)")
        return int(text)

    return _settings(options, "embed_filter", ratio)


def contrastive_grid(options: dict[str, Any]) -> list[ContrastivePrompting | None]:
    """The :class:`~metaeol.boosters.ContrastivePrompting` settings the options list (None = off)."""
    from metaeol.boosters import ContrastivePrompting

    settings_given = any(setting is not None for setting in _settings(options, "contrastive", str))
    _needs_booster(options, ("cp_auxiliary",), settings_given, "--contrastive")
    return _settings(options, "contrastive", lambda text: ContrastivePrompting.parse(text, auxiliary=options.get("cp_auxiliary")))


def _needs_booster(options: dict[str, Any], names: tuple[str, ...], booster_on: bool, booster_flag: str) -> None:
    """A ValueError when a booster's detail options are given while the booster is off."""
    given = ["--" + name.replace("_", "-") for name in names if options.get(name) is not None]
    if given and not booster_on:
        raise ValueError(f"{', '.join(given)} configures {booster_flag}, which is off; give a {booster_flag} setting "
                         "or leave it out")


def _one(settings: list[S | None], flag: str) -> S | None:
    if len(settings) > 1:
        raise ValueError(f"{flag} takes one setting here; `metaeol sweep` tries several")
    return settings[0]


def data_options(command: Callable) -> Callable:
    """``--data``, ``--split`` and ``--no-count-check``, for the commands that read evaluation data."""
    options = [
        click.option("--data", "data_root", type=click.Path(file_okay=False), default=None,
                     help="SentEval data root (default: $METAEOL_DATA, where `metaeol download-data` writes, "
                          "then ../shared/data/senteval)."),
        click.option("--split", type=click.Choice(["test", "dev"]), default="test", show_default=True,
                     help="Split scored for STS-B and SICK-R unless a task names one (STS-B:dev)."),
        click.option("--no-count-check", is_flag=True, help="Accept data files whose sizes differ from the standard ones."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def encoder_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """``MetaEOL`` keyword arguments (``model`` included) from the values of :func:`encoder_options`."""
    return dict(
        model=options["model"],
        prompts=options["prompts"],
        tasks=[t.strip() for t in options["meta_tasks"].split(",")] if options["meta_tasks"] else None,
        layer=parse_layers(options["layer"]),
        dtype=options["dtype"],
        device=options["device"],
        engine=options["engine"],
        pooling=options["pooling"],
        max_sentence_tokens=options["max_sentence_tokens"],
        max_batch_tokens=options.get("pass_tokens"),
        clean=not options.get("no_clean", False),
        demonstrations=_one(demonstrations_grid(options), "--demonstrations"),
        embed_filter=_one(embed_filter_grid(options), "--embed-filter"),
        attn_implementation=options["attn_implementation"],
        store=options.get("store"),
        token_prepending=_one(token_prepending_grid(options),
                              "--tp-placement" if "," in (options.get("tp_placement") or "") else "--token-prepending"),
        contrastive=_one(contrastive_grid(options), "--contrastive"),
    )


def make_encoder(options: dict[str, Any], **overrides: Any):
    """A MetaEOL encoder from the values of :func:`encoder_options`; ``overrides`` replace
    constructor arguments (e.g. a combined prompt set)."""
    from metaeol import MetaEOL

    return MetaEOL(**{**encoder_kwargs(options), **overrides})
