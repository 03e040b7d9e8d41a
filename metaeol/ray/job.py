"""``metaeol embed --ray``: a file of texts into parquet shards on a Ray cluster, exactly once, resumable.

The input is cut into fixed row ranges (:mod:`metaeol.ray.shards`). Each pending shard is
one item of a Ray dataset; a pool of actors, each holding one encoder, reads its shard from
the input, embeds it and writes ``shard-NNNNNN.parquet`` under a temporary name, then renames
it: a shard file exists complete or not at all. Every shard file records the job key (a
hash of the input's content and the settings); ``_metaeol.json`` records the settings and,
once every shard is there, the encoder's configuration and the totals. Rerunning the same
command skips the shards already written, so no row is embedded or written twice; a retried
shard task (an actor lost mid-way) finds its file already there or replaces an unfinished
temporary one. One run at a time writes an output directory: the job holds ``OUTPUT_DIR.lock``
(:mod:`metaeol.output_lock`) from planning to the manifest. Each actor checks that the rows it
reads are the rows planned (the input was not edited since). INPUT and OUTPUT_DIR must be
visible at the same path from every node.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from metaeol.finite import NOT_FINITE
from metaeol.loading import DEFAULT_MODEL
from metaeol.output_lock import OutputError, output_lock
from metaeol.prompts import load_prompt_set
from metaeol.ray.embedder import METADATA_KEY, MetaEOLEmbedder, actor_resources, comparable_config
from metaeol.ray.shards import InputPlan, Shard, plan_input, read_shard
from metaeol.readers import InputError, check_count

MANIFEST = "_metaeol.json"
COLUMNS = ("row_id", "text_sha256", "embedding", "error")
RESULT = pa.schema([("shard", pa.int64()), ("rows", pa.int64()), ("computed", pa.bool_()), ("error", pa.string())])


@dataclass
class RayJobReport:
    rows: int = 0
    shards: int = 0
    shards_done: int = 0
    shards_resumed: int = 0
    bad_rows: int = 0  # not text
    nonfinite: int = 0  # embedded to a NaN or inf: an error for the row
    truncated: int = 0


def shard_path(output_dir: Path, shard: Shard) -> Path:
    return output_dir / f"shard-{shard.index:06d}.parquet"


def shard_metadata(path: Path, key: str, shard: Shard) -> dict[str, Any] | None:
    """The ``metaeol`` metadata of a finished shard file of this job, or None if it is not there."""
    if not path.is_file():
        return None
    try:
        parquet = pq.ParquetFile(path)
        meta = json.loads((parquet.schema_arrow.metadata or {})[METADATA_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException):  # not a shard of ours: compute it again
        return None
    if meta.get("job_key") != key or parquet.metadata.num_rows != shard.stop - shard.start:
        return None
    return meta


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique: a retried task may overlap
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ShardWriter:
    """Callable class for ``map_batches``: embeds and writes the shards of a batch of shard specs."""

    def __init__(self, plan: InputPlan, output_dir: str, key: str, embedder_options: dict[str, Any]):
        self.plan, self.output_dir, self.key = plan, Path(output_dir), key
        self.embedder = MetaEOLEmbedder(plan.column, **embedder_options)

    def write(self, shard: Shard) -> dict[str, Any]:
        """What became of ``shard``: computed, already there, or an ``error`` (its input rows changed)."""
        path = shard_path(self.output_dir, shard)
        result = {"shard": shard.index, "rows": shard.stop - shard.start, "computed": False, "error": None}
        if shard_metadata(path, self.key, shard) is not None:
            return result
        try:
            rows = read_shard(self.plan, shard)
        except InputError as err:  # reported by the driver, once every other shard is done
            return {**result, "error": str(err)}
        truncated_before = self.embedder.encoder.truncated_count
        hashes, embedding, errors = self.embedder.embed(rows)
        table = pa.table(dict(zip(COLUMNS, (pa.array(range(shard.start, shard.stop), type=pa.int64()),
                                            hashes, embedding, errors))))
        nonfinite = errors.to_pylist().count(NOT_FINITE)
        table = self.embedder.with_config(
            table, job_key=self.key, shard=[shard.start, shard.stop],
            bad_rows=len(errors) - errors.null_count - nonfinite, nonfinite=nonfinite,
            truncated=self.embedder.encoder.truncated_count - truncated_before,
        )
        _atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        return {**result, "computed": True}

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self.write(Shard(**spec)) for spec in batch.to_pylist()], schema=RESULT)


def _settings(plan: InputPlan, model: Any, prompts: Any, normalize: bool, options: dict[str, Any]) -> dict[str, Any]:
    """What the output depends on: the input's content and the encoder options, defaults filled in
    (so that a run from the library and one from the CLI with the same settings resume each other),
    read as the settings record reads them without loading the model: the weights' identity (a
    replaced local file is other weights), the boosters' keys (a placeholder vector by its hash)
    and the demonstrations' content (an edited demonstrations file is another setting)."""
    from metaeol.encoder import MetaEOL
    from metaeol.methods.demonstrations import load_demonstrations
    from metaeol.weights_identity import source_weights_id

    defaults = _defaults(MetaEOL)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InputError(f"unknown MetaEOL option(s): {unknown}")
    given = {**defaults, **options}
    given["dtype"] = given["dtype"] or "auto"
    kept = {k: v for k, v in given.items() if k not in ("device", "store", "tokenizer", "prompts", "tasks", "model")}
    for name in ("token_prepending", "contrastive"):
        if kept[name] is not None:
            kept[name] = kept[name].key
    if kept["demonstrations"] is not None:
        kept["demonstrations"] = load_demonstrations(kept["demonstrations"]).to_dict()
    return {
        "input": {k: v for k, v in plan.describe().items() if k != "path"},
        "shard_size": plan.shard_size, "normalize": normalize, "model": str(model),
        "weights": source_weights_id(str(model), given["revision"]),
        "prompts": prompts.describe(), "encoder_options": json.loads(json.dumps(kept, sort_keys=True, default=str)),
    }


def _defaults(cls: type) -> dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _write_manifest(output_dir: Path, manifest: dict[str, Any]) -> None:
    _atomic_write(output_dir / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True)))


def _remove_partial_shards(output_dir: Path) -> None:
    """Delete shard files a killed run left half-written: at the start, and again at the end,
    since a killed driver's actors can outlive it for a moment and die mid-write."""
    for partial in output_dir.glob(".shard-*.tmp"):
        partial.unlink(missing_ok=True)


def _prepare_output(output_dir: Path, key: str, settings: dict[str, Any], overwrite: bool) -> None:
    manifest = output_dir / MANIFEST
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"{output_dir} is a file; give a directory for the parquet shards")
    if manifest.is_file():
        if json.loads(manifest.read_text()).get("job_key") != key and not overwrite:
            raise InputError(f"{output_dir} holds embeddings of another input or other settings; "
                             "pass --overwrite to replace them, or choose another directory")
    elif output_dir.is_dir() and any(output_dir.iterdir()):
        raise InputError(f"{output_dir} is not empty and has no {MANIFEST}; choose a new or empty directory")
    output_dir.mkdir(parents=True, exist_ok=True)
    _remove_partial_shards(output_dir)
    if overwrite:
        for old in output_dir.glob("shard-*.parquet"):
            old.unlink()
    if overwrite or not manifest.is_file():
        _write_manifest(output_dir, {"status": "running", "job_key": key, "settings": settings})


def _finish(output_dir: Path, plan: InputPlan, key: str, settings: dict[str, Any], report: RayJobReport) -> None:
    """Check that the directory holds exactly the planned shards, of one configuration, and
    write the complete manifest."""
    _remove_partial_shards(output_dir)  # every shard of this run is written by now
    planned = {shard_path(output_dir, s).name for s in plan.shards()}
    foreign = sorted(p.name for p in output_dir.glob("shard-*.parquet") if p.name not in planned)
    if foreign:
        raise InputError(f"{output_dir} holds shard files this job did not plan ({', '.join(foreign[:3])}"
                         f"{' ...' if len(foreign) > 3 else ''}); remove them, or rerun with --overwrite")
    metas = []
    for shard in plan.shards():
        meta = shard_metadata(shard_path(output_dir, shard), key, shard)
        if meta is None:
            raise InputError(f"shard {shard.index} of {output_dir} is missing or not of this job; "
                             "rerun the same command to compute it")
        if metas and comparable_config(meta["encoder"]) != comparable_config(metas[0]["encoder"]):
            raise InputError(f"shards 0 and {shard.index} of {output_dir} were computed with different encoder "
                             "configurations (another dtype or model files?); rerun with --overwrite")
        metas.append(meta)
    report.bad_rows = sum(m["bad_rows"] for m in metas)
    report.nonfinite = sum(m.get("nonfinite", 0) for m in metas)  # shards of older versions lack it
    report.truncated = sum(m["truncated"] for m in metas)
    _write_manifest(output_dir, {
        "status": "complete", "job_key": key, "settings": settings, "encoder": metas[0]["encoder"],
        "embedding_shape": metas[0]["embedding_shape"], "columns": list(COLUMNS), "rows": plan.rows,
        "files": [shard_path(output_dir, s).name for s in plan.shards()],
        "bad_rows": report.bad_rows, "nonfinite_rows": report.nonfinite, "truncated": report.truncated,
    })


def _run_shards(pending: list[Shard], plan: InputPlan, output_dir: Path, key: str, report: RayJobReport,
                on_shard: Callable[[int], None] | None, *, address: str | None, num_actors: int,
                threads_per_actor: int, num_gpus: float | None, embedder_options: dict[str, Any]) -> list[str]:
    """Write the ``pending`` shards on a pool of actors, counting them in ``report``; the errors of
    shards whose input rows changed."""
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=address)
    results = ray.data.from_items([asdict(s) for s in pending], override_num_blocks=len(pending)).map_batches(
        ShardWriter,
        fn_constructor_kwargs={"plan": plan, "output_dir": str(output_dir), "key": key,
                               "embedder_options": embedder_options},
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=min(num_actors, len(pending))),
        **actor_resources(num_gpus, threads_per_actor, embedder_options.get("device")),
    )
    failed = []
    for result in results.iter_rows():
        if result["error"] is not None:
            failed.append(result["error"])
            continue
        report.shards_done += int(result["computed"])
        report.shards_resumed += int(not result["computed"])
        if on_shard is not None:
            on_shard(result["rows"])
    return failed


def _failure(err: BaseException) -> str:
    """One line saying what went wrong, for an error the job did not expect: the innermost cause
    (Ray wraps an actor's exception, its traceback in the text), without its module path."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    line = type(err).__name__
    while err is not None:
        lines = [text.strip() for text in str(err).splitlines() if text.strip()]
        if lines:
            line = lines[-1] if ": " in lines[-1] else f"{type(err).__name__}: {lines[-1]}"
        err = err.__cause__
    return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", line)


def run_ray_embed_job(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    column: str = "text",
    shard_size: int = 10_000,
    model: Any = DEFAULT_MODEL,
    prompts: Any = "metaeol",
    tasks: list[str] | None = None,
    num_actors: int = 1,
    threads_per_actor: int = 1,
    num_gpus: float | None = None,
    normalize: bool = False,
    encode_batch_size: int = 32,
    address: str | None = None,
    overwrite: bool = False,
    on_shard: Callable[[int], None] | None = None,
    **encoder_options: Any,
) -> RayJobReport:
    """Embed every row of ``input_path`` into parquet shards under ``output_dir`` (see the module doc).

    Connects to the Ray cluster at ``address`` (``"auto"``: the running one; None: the
    current or a new local one). ``on_shard(rows)`` is called as each shard is done. Raises
    :class:`InputError` for bad input (or input edited during the run),
    :class:`~metaeol.output_lock.OutputLocked` while another run writes ``output_dir`` and
    :class:`OutputError` when an actor or the final step fails; finished shards are always kept.
    """
    if encoder_options.get("store") is not None:
        raise InputError("a vector store cannot be shared by Ray actors; drop --store")
    encoder_options.pop("store", None)
    for name, value in (("num_actors", num_actors), ("threads_per_actor", threads_per_actor),
                        ("encode_batch_size", encode_batch_size)):
        check_count(value, name)
    output_dir = Path(output_dir).resolve()
    with output_lock(output_dir):
        plan = plan_input(input_path, column, shard_size)
        prompt_set = load_prompt_set(prompts, tasks=tasks)  # read here: workers need not see a prompts file
        settings = _settings(plan, model, prompt_set, normalize, encoder_options)
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        _prepare_output(output_dir, key, settings, overwrite)

        shards = plan.shards()
        pending = [s for s in shards if shard_metadata(shard_path(output_dir, s), key, s) is None]
        report = RayJobReport(rows=plan.rows, shards=len(shards), shards_resumed=len(shards) - len(pending))
        if pending:
            embedder_options = {"model": model, "prompts": prompt_set, "threads": threads_per_actor,
                                "normalize": normalize, "encode_batch_size": encode_batch_size, **encoder_options}
            try:
                failed = _run_shards(pending, plan, output_dir, key, report, on_shard, address=address,
                                     num_actors=num_actors, threads_per_actor=threads_per_actor, num_gpus=num_gpus,
                                     embedder_options=embedder_options)
            except Exception as err:  # noqa: BLE001 - an actor or Ray failed: one line, work kept
                raise OutputError(f"embedding on Ray failed ({_failure(err)}); the "
                                  f"{report.shards_done + report.shards_resumed} finished shards are kept: fix the "
                                  "cause and rerun the same command to resume") from err
            if failed:
                raise InputError(f"{failed[0]}; {len(failed)} shard(s) not written, the "
                                 f"{report.shards_done + report.shards_resumed} finished are kept: restore the "
                                 "input and rerun to resume, or rerun with --overwrite to embed its new content")
        try:
            _finish(output_dir, plan, key, settings, report)
        except InputError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure of the last step is reported on one line
            raise OutputError(f"the final step of {output_dir} failed ({_failure(err)}); its {len(shards)} "
                              "finished shards are kept: rerun the same command to finish") from err
    return report
