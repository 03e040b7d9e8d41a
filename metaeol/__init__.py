"""metaeol: training-free sentence embeddings from decoder-only LLMs (MetaEOL)."""

from metaeol.prompts import PromptSet, Template, builtin_prompt_sets, load_prompt_set

__version__ = "0.2.0"

__all__ = ["MetaEOL", "PromptSet", "Template", "builtin_prompt_sets", "load_prompt_set", "__version__"]


def __getattr__(name: str):
    # The encoder pulls in torch and transformers: import it only when asked for.
    if name == "MetaEOL":
        from metaeol.encoder import MetaEOL

        return MetaEOL
    raise AttributeError(f"module 'metaeol' has no attribute {name!r}")
