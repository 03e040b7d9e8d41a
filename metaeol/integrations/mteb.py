"""MetaEOL as an MTEB (>= 2) model, and STS-B from the local SentEval files as an MTEB task.

    import mteb
    from metaeol.integrations.mteb import get_model

    model = get_model("HuggingFaceTB/SmolLM2-135M-Instruct", prompts="ke", layer=20)
    results = mteb.evaluate(model, mteb.get_tasks(tasks=["STS12", "STSBenchmark"]))

The model's ``ModelMeta`` names the configuration: ``name`` is ``metaeol/<model>`` and
``revision`` is :attr:`~metaeol.settings.VectorSettings.label` of every setting that changes
the vectors (weights revision, prompt set and its hash, layer, pooling, dtype, sentence-token
limit, boosters), so mteb's result cache keeps each configuration in its own folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError('metaeol.integrations.mteb needs mteb >= 2: pip install "metaeol[mteb]"') from err

from metaeol.evaluation.data import STSB_SPLITS, DataError, load_task, resolve_data_root
from metaeol.finite import check_finite
from metaeol.settings import build_encoder
from metaeol.loading import DEFAULT_MODEL

if TYPE_CHECKING:
    import numpy as np
    from torch.utils.data import DataLoader

    from metaeol.encoder import MetaEOL

CITATION = r"""@inproceedings{lei-etal-2024-meta,
  title = {Meta-Task Prompting Elicits Embeddings from Large Language Models},
  author = {Lei, Yibin and Wu, Di and Zhou, Tianyi and Shen, Tao and Cao, Yu and Tao, Chongyang and Yates, Andrew},
  booktitle = {Proceedings of the 62nd Annual Meeting of the Association for Computational Linguistics (Volume 1: Long Papers)},
  year = {2024},
  pages = {10141--10157},
  url = {https://aclanthology.org/2024.acl-long.546},
}"""


def _model_label(model_name: str) -> str:
    """``org/name`` for a hub id; the file or folder stem for a local path."""
    path = Path(model_name).expanduser()
    if path.exists():
        return path.stem if path.is_file() else path.resolve().name
    return model_name


def _loader_kwargs(encoder: MetaEOL) -> dict[str, Any]:
    # mteb passes the meta revision as ``revision``: the weights revision travels as ``model_revision``
    config = encoder.settings.to_config()
    config["model_revision"] = config.pop("revision")
    return config


def model_meta(encoder: MetaEOL) -> ModelMeta:
    """The ``ModelMeta`` of ``encoder``; ``loader_kwargs`` rebuild it through ``ModelMeta.load_model``."""
    if not isinstance(encoder.layer, int):
        raise ValueError(f"MTEB models embed one layer, got layer={encoder.layer!r}")
    config = encoder.model.config.get_text_config()
    n_parameters = sum(p.numel() for p in encoder.model.parameters())
    n_bytes = sum(p.numel() * p.element_size() for p in encoder.model.parameters())
    max_tokens = encoder.max_sentence_tokens or getattr(config, "max_position_embeddings", None)
    is_gguf = str(encoder.model_name).lower().endswith(".gguf")
    return ModelMeta(
        loader=load_model,
        loader_kwargs=_loader_kwargs(encoder),
        name=f"metaeol/{_model_label(encoder.model_name)}",
        revision=encoder.settings.label,
        release_date=None,
        languages=["eng-Latn"],  # the built-in prompt sets are English
        n_parameters=n_parameters,
        memory_usage_mb=round(n_bytes / 2**20, 1),
        max_tokens=max_tokens,
        embed_dim=encoder.embedding_dim,
        license=None,  # the licence of the wrapped weights is not known here
        open_weights=True,  # MetaEOL runs on weights the user holds
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch", "Transformers", *(["GGUF"] if is_gguf else [])],
        reference="https://aclanthology.org/2024.acl-long.546",
        similarity_fn_name=ScoringFunction.COSINE,
        use_instructions=False,  # fixed MetaEOL templates; task instructions are not used
        training_datasets=None,  # training-free, but the base model's pretraining data is not known here
        adapted_from=str(encoder.model_name),
        citation=CITATION,
    )


class MetaEOLMTEB(AbsEncoder):
    """An MTEB encoder that embeds every input text with a :class:`~metaeol.MetaEOL` encoder."""

    def __init__(self, encoder: MetaEOL) -> None:
        self.model = encoder
        self.mteb_model_meta = model_meta(encoder)

    def encode(
        self,
        inputs: DataLoader,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed the ``text`` of every batch, in order (MTEB's task and prompt arguments do not
        change MetaEOL vectors). ``batch_size``, ``show_progress_bar`` and ``precision`` are
        passed to :meth:`MetaEOL.encode`; non-finite vectors raise
        :class:`~metaeol.finite.NonFiniteVectors`."""
        texts = [text for batch in inputs for text in batch["text"]]
        vectors = self.model.encode(
            texts,
            batch_size=kwargs.get("batch_size", 32),
            show_progress_bar=kwargs.get("show_progress_bar", False),
            precision=kwargs.get("precision", "float32"),
        )
        check_finite(vectors, texts, self.mteb_model_meta.revision)  # never a cached score from NaN vectors
        return vectors


def get_model(model: str | os.PathLike = DEFAULT_MODEL, prompts: Any = "metaeol", **metaeol_kwargs: Any) -> MetaEOLMTEB:
    """An MTEB model for MetaEOL on ``model`` (hub id, folder or ``.gguf``); ``prompts`` and
    ``metaeol_kwargs`` (``layer``, ``pooling``, ``dtype``, ``max_sentence_tokens``, ``device`` ...)
    are :class:`~metaeol.MetaEOL` arguments."""
    from metaeol import MetaEOL

    return MetaEOLMTEB(MetaEOL(model, prompts, **metaeol_kwargs))


def load_model(name: str, revision: str | None = None, **loader_kwargs: Any) -> MetaEOLMTEB:
    """``ModelMeta.loader``: rebuild the model from its ``loader_kwargs``; fails when these settings
    no longer give ``name`` and ``revision`` (for instance, local weights were replaced)."""
    device = loader_kwargs.pop("device", None)
    loader_kwargs["revision"] = loader_kwargs.pop("model_revision", None)
    wrapped = MetaEOLMTEB(build_encoder(loader_kwargs, device=device))
    meta = wrapped.mteb_model_meta
    if revision is not None and (meta.name, meta.revision) != (name, revision):
        raise ValueError(f"the saved settings now give {meta.name}@{meta.revision}, not {name}@{revision}")
    return wrapped


_STSB_METADATA = TaskMetadata(
    name="STSBenchmarkSentEval",
    dataset={"path": "senteval/STS/STSBenchmark", "revision": "local"},
    description="STS Benchmark from the local SentEval copy (whitespace-normalised as SentEval does).",
    reference="https://aclanthology.org/S17-2001",
    type="STS",
    category="t2t",
    modalities=["text"],
    eval_splits=["test"],
    eval_langs=["eng-Latn"],
    main_score="cosine_spearman",
    date=("2017-01-01", "2017-12-31"),
    domains=["News", "Written"],
    task_subtypes=[],
    license="cc-by-sa-4.0",
    annotations_creators="human-annotated",
    dialect=[],
    sample_creation="found",
    bibtex_citation="",
)


class LocalSTSBenchmark(AbsTaskSTS):
    """STS-B read from the SentEval files with metaeol's loader (same sentences as ``metaeol eval``).
    Make instances with :func:`local_stsb_task`, which fills in the data root, split and limit."""

    metadata = _STSB_METADATA
    min_score = 0
    max_score = 5
    data_root: Path
    split = "test"
    limit: int | None = None

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read the pairs with :func:`metaeol.evaluation.data.load_task`."""
        if self.data_loaded:
            return
        from datasets import Dataset, DatasetDict

        pairs = load_task("STS-B", self.data_root, split=self.split, limit=self.limit).splits[self.split]
        columns = {"sentence1": list(pairs.sent1), "sentence2": list(pairs.sent2), "score": pairs.targets.tolist()}
        self.dataset = DatasetDict({self.split: Dataset.from_dict(columns)})
        self.data_loaded = True


def local_stsb_task(
    data_root: str | os.PathLike | None = None, *, split: str = "test", limit: int | None = None
) -> LocalSTSBenchmark:
    """The local STS-B task (``STS/STSBenchmark/sts-<split>.csv`` under the SentEval data root).

    ``limit`` keeps the first N pairs; the task name then ends in ``-first<N>`` so partial runs
    are cached apart from full ones. The dataset revision is the sha256 of the csv file.
    """
    if split not in ("test", "dev"):
        raise ValueError(f"split must be 'test' or 'dev', not {split!r}")
    root = resolve_data_root(data_root)
    path = root / "STS" / "STSBenchmark" / STSB_SPLITS[split][0]
    if not path.is_file():
        raise DataError(f"STS-B {split} file missing: {path}")
    metadata = _STSB_METADATA.model_copy(update={
        "name": _STSB_METADATA.name + (f"-first{limit}" if limit else ""),
        "dataset": {"path": str(path), "revision": hashlib.sha256(path.read_bytes()).hexdigest()},
        "eval_splits": [split],
    })
    attrs = {"metadata": metadata, "data_root": root, "split": split, "limit": limit}
    return type(LocalSTSBenchmark.__name__, (LocalSTSBenchmark,), attrs)()
