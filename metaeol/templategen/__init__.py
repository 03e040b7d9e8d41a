"""Template generation: ask an instruction LLM for MetaEOL-style templates per meta-task.

:func:`generate_templates` drives a generator (:class:`OpenAIChat` for any OpenAI-compatible
endpoint, :class:`LocalChat` for a local transformers model) over meta-tasks, screens the
candidates and returns a prompt set that records how it was made.
"""

from metaeol.templategen.errors import (
    AuthenticationError,
    GenerationError,
    MalformedReplyError,
    ServerUnreachableError,
)
from metaeol.templategen.generate import ChatGenerator, GenerationResult, Settings, generate_templates
from metaeol.templategen.instructions import MetaTask, build_messages, meta_task, prompt_sha256
from metaeol.templategen.openai_chat import OpenAIChat
from metaeol.templategen.parsing import parse_candidates
from metaeol.templategen.validation import Limits, Rejection, Screen

__all__ = [
    "AuthenticationError",
    "ChatGenerator",
    "GenerationError",
    "GenerationResult",
    "Limits",
    "MalformedReplyError",
    "MetaTask",
    "OpenAIChat",
    "Rejection",
    "Screen",
    "ServerUnreachableError",
    "Settings",
    "build_messages",
    "generate_templates",
    "meta_task",
    "parse_candidates",
    "prompt_sha256",
]
