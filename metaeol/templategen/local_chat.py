"""Generator: a local transformers instruction model, prompted through its chat template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metaeol.templategen.errors import GenerationError
from metaeol.templategen.instructions import Message


@dataclass
class LocalChat:
    """Chat completions from an in-process model; sampling is seeded with ``seed``."""

    model: Any
    tokenizer: Any
    source: str

    @classmethod
    def load(cls, source: str) -> LocalChat:
        """Load ``source`` (hub id, folder or ``.gguf`` file)."""
        from metaeol.loading import ModelLoadError, load_model

        try:
            model, tokenizer, _ = load_model(source, dtype="float32", with_lm_head=True)
        except (ModelLoadError, OSError, ValueError) as err:
            raise GenerationError(f"cannot load local model {source!r}: {err}") from err
        return cls(model, tokenizer, source)

    def describe(self) -> dict[str, Any]:
        """What to record about this generator in a generated set."""
        return {"generator": "local", "model": self.source}

    def complete(
        self, messages: list[Message], *, temperature: float, seed: int | None, max_tokens: int | None
    ) -> str:
        """The model's reply to ``messages``; ``temperature`` 0 means greedy decoding."""
        import torch

        if not getattr(self.tokenizer, "chat_template", None):
            raise GenerationError(f"{self.source} has no chat template; use an instruction-tuned model")
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        ).to(self.model.device)
        if seed is not None:
            torch.manual_seed(seed)
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
        pad_id = self.tokenizer.pad_token_id
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens or 1024,
                pad_token_id=self.tokenizer.eos_token_id if pad_id is None else pad_id,
                **sampling,
            )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)
