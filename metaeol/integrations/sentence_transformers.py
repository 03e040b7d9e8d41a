"""MetaEOL as a sentence-transformers (5.x and 6.x) input module.

    from sentence_transformers import SentenceTransformer
    from metaeol.integrations.sentence_transformers import MetaEOLModule

    model = SentenceTransformer(modules=[MetaEOLModule("HuggingFaceTB/SmolLM2-135M-Instruct", prompts="ke")])
    model.save_pretrained("smollm2-metaeol")
    same = SentenceTransformer("smollm2-metaeol", trust_remote_code=True)

The saved folder holds ``metaeol_config.json`` (every setting that changes a vector, as
:meth:`metaeol.settings.VectorSettings.to_config` gives it: the model reference, its revision, the
full prompt set, layer, pooling, dtype, sentence-token limit, boosters) and no weights: the weights are read
from the referenced hub id or local path when the folder is loaded (see docs/integrations.md).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import torch

try:
    from sentence_transformers.base.modules import InputModule  # 5.7 and 6.x
except ImportError:  # pragma: no cover - sentence-transformers 5.0-5.6
    try:
        from sentence_transformers.models import InputModule
    except ImportError as err:
        raise ImportError(
            'metaeol.integrations.sentence_transformers needs sentence-transformers >= 5: '
            'pip install "metaeol[sentence-transformers]"'
        ) from err

from metaeol.encoder import MetaEOL
from metaeol.settings import CONFIG_KEYS, build_encoder
from metaeol.loading import DEFAULT_MODEL


class MetaEOLModule(InputModule):
    """The whole MetaEOL encoder as the first (and only needed) module of a ``SentenceTransformer``.

    Args:
        model: hub id, local folder, ``.gguf`` file, or a ready :class:`~metaeol.MetaEOL` encoder
            (then the other arguments must be left out).
        prompts: built-in prompt set name, YAML/JSON path, :class:`~metaeol.PromptSet` or its dict.
        **metaeol_kwargs: further :class:`~metaeol.MetaEOL` arguments (``layer``, ``pooling``,
            ``dtype``, ``max_sentence_tokens``, ``revision``, ``engine``, ``clean``, ``device``,
            ``token_prepending``, ``contrastive``).
    """

    config_file_name = "metaeol_config.json"
    config_keys = list(CONFIG_KEYS)

    def __init__(self, model: str | os.PathLike | MetaEOL = DEFAULT_MODEL, prompts: Any = "metaeol", **metaeol_kwargs: Any):
        super().__init__()
        if isinstance(model, MetaEOL):
            if metaeol_kwargs or prompts != "metaeol":
                raise ValueError("pass either a MetaEOL encoder or the arguments to build one, not both")
            encoder = model
        else:
            settings = {k: v for k, v in metaeol_kwargs.items() if k in CONFIG_KEYS}
            runtime = {k: v for k, v in metaeol_kwargs.items() if k not in CONFIG_KEYS}
            encoder = build_encoder({"model": os.fspath(model), "prompts": prompts, **settings}, **runtime)
        if not isinstance(encoder.layer, int):
            raise ValueError(f"MetaEOLModule embeds one layer, got layer={encoder.layer!r}")
        # what save() writes and load() reads back: every setting that changes a vector, boosters included
        self._config = {**encoder.settings.to_config(), "engine": encoder.engine_kind}
        self._fingerprint = encoder.settings.fingerprint()  # saved too, to detect changed weights on load
        self.auto_model = encoder.model  # a submodule, so SentenceTransformer.to() and pools move it
        self.tokenizer = encoder.tokenizer
        self._encoder: MetaEOL | None = encoder
        self._placement = self._current_placement()

    # -- the MetaEOL encoder, rebuilt (cheaply, same weights) when the model moved -------------
    def _current_placement(self) -> tuple[torch.device, torch.dtype]:
        parameter = next(self.auto_model.parameters())
        return parameter.device, parameter.dtype

    def _metaeol(self) -> MetaEOL:
        placement = self._current_placement()
        if self._encoder is None or placement != self._placement:
            settings = {k: v for k, v in self._config.items() if k not in ("model", "dtype")}
            self._encoder = build_encoder({"model": self.auto_model, **settings}, tokenizer=self.tokenizer)
            # the same weights, under the name and id they were loaded by
            self._encoder.model_name, self._encoder.weights_id = self._config["model"], self._fingerprint["weights"]
            self._placement = placement
        return self._encoder

    def __getstate__(self) -> dict[str, Any]:
        # multi-process pools pickle the module: send the weights and settings, not the engines
        state = self.__dict__.copy()
        state["_encoder"] = None
        return state

    # -- sentence-transformers interface ---------------------------------------------------
    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """The texts themselves (MetaEOL tokenizes inside its templates); ``prompt`` is prepended to
        each text as sentence-transformers does. ``task`` and ``processing_kwargs`` have no effect."""
        bad = [type(item).__name__ for item in inputs if not isinstance(item, str)]
        if bad:
            raise TypeError(f"MetaEOLModule embeds text only; got inputs of type {sorted(set(bad))}")
        texts = [prompt + text for text in inputs] if prompt else list(inputs)
        return {"text": texts}

    def tokenize(self, texts: Sequence[str], **kwargs: Any) -> dict[str, Any]:
        """sentence-transformers 5.0-5.6 name of :meth:`preprocess`."""
        return self.preprocess(texts, **kwargs)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Add ``sentence_embedding`` [B, D] (float32, on the model's device) for ``features["text"]``."""
        texts = features["text"]
        embeddings = self._metaeol().encode(texts, batch_size=max(len(texts), 1), convert_to_tensor=True)
        features["sentence_embedding"] = embeddings.reshape(len(texts), -1)
        return features

    def get_embedding_dimension(self) -> int:
        return self._metaeol().embedding_dim

    get_sentence_embedding_dimension = get_embedding_dimension  # sentence-transformers 5.x name

    @property
    def max_seq_length(self) -> int | None:
        """MetaEOL's ``max_sentence_tokens``: longer sentences are cut (the templates never are)."""
        return self._config["max_sentence_tokens"]

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        self._config["max_sentence_tokens"] = self._fingerprint["max_sentence_tokens"] = value
        self._encoder = None

    def get_config_dict(self) -> dict[str, Any]:
        return dict(self._config)

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Write ``metaeol_config.json``: the settings plus, for checking on load, the fingerprint
        of the vectors' settings (weights id, prompt hash ...). No weights are written."""
        import json

        dtype = self._metaeol().dtype_name  # after any .half() / .to(); int8 for int8 layers
        config = {**self.get_config_dict(), "dtype": dtype, "fingerprint": {**self._fingerprint, "dtype": dtype}}
        with open(os.path.join(output_path, self.config_file_name), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             **kwargs: Any) -> MetaEOLModule:
        """Rebuild from ``metaeol_config.json``; warns when the vectors' settings differ from the
        saved fingerprint (for instance, the referenced local weights were replaced)."""
        config = cls.load_config(
            model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
            revision=revision, local_files_only=local_files_only,
        )
        if not config:
            raise FileNotFoundError(f"no {cls.config_file_name} in {model_name_or_path!r}")
        saved = config.pop("fingerprint", None)
        module = cls(**config)
        if saved is not None:
            now = module._metaeol().settings.fingerprint()
            changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            if changed:
                warnings.warn(
                    f"MetaEOL settings differ from the saved ones in {changed}: "
                    + ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed),
                    stacklevel=2,
                )
        return module

    def __repr__(self) -> str:
        c = self._config
        return (f"MetaEOLModule(model={c['model']!r}, prompts={c['prompts']['name']!r}, layer={c['layer']}, "
                f"pooling={c['pooling']!r}, dtype={c['dtype']!r}, max_sentence_tokens={c['max_sentence_tokens']})")
