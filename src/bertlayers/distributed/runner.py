"""Ray Data runners: `embed_dataset` (a lazy Dataset of output rows) and `extract_to_store`
(files in, a resumable directory of Parquet shards out, as `bertlayers extract --engine ray`).

Both map a callable class over an actor pool (`ray.data.ActorPoolStrategy`), one `Engine`
per actor, so each actor batches by the library's length-sorted token budget inside what it
is given. Ray restarts actors that die and retries their work.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from .. import errors
from ..core.config import ExtractConfig, ModelOptions
from ..errors import BertlayersError, InputError, OutputError
from ..outputs import Kind, Target, check_outputs
from ..stores.parquet import EMPTY_TEXTS_FILE, PROVENANCE_FILE
from .plan import (
    MANIFEST,
    ReaderOptions,
    Shard,
    expand_inputs,
    plan_differences,
    plan_shards,
    read_manifest,
    write_manifest,
)
from .worker import SHARD_METADATA, EmbedBatches, ShardWriter

if TYPE_CHECKING:
    from ray.data import Dataset

DEFAULT_SHARD_SIZE = 10_000  # texts per shard: its output file, and the unit of resume


def _pool(actors: int, gpus: float, cpus: float) -> dict:
    import ray.data

    if actors < 1:
        raise BertlayersError(f"actors must be at least 1, got {actors}")
    remote = {"num_cpus": cpus}
    if gpus:
        remote["num_gpus"] = gpus
    return {"compute": ray.data.ActorPoolStrategy(size=actors), **remote}


def embed_dataset(
    ds: Dataset,
    text_column: str = "text",
    id_column: str | None = None,
    model: str | None = None,
    *,
    pair_column: str | None = None,
    words_column: str | None = None,
    index_column: str | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0,
    cpus_per_actor: float = 1,
    batch_size: int = 1024,
    device: str | None = "auto",
    dtype: str = "float32",
    revision: str | None = None,
    runtime: str | None = None,
    **options: object,
) -> Dataset:
    """Embed a Ray Dataset's texts: one output row per text (sentence level) or per
    token/word, with the local Parquet store's columns and types. The embedding is lazy (it
    runs when the result is consumed); numbering the rows, without `index_column`, is not.

    `options` are `ExtractConfig`'s (`layers`, `level`, `pooling`, `long`, ...). `text_index`
    is the row's position in `ds`: taken from `index_column` when given, else `ds` is first
    numbered (its rows are read once and held in Ray's object store, which spills to disk).
    Ids come from `id_column`, else they are the positions. Ray keeps rows in order only with
    `DataContext.execution_options.preserve_order`; `text_index` orders them in any case.
    """
    config = ExtractConfig.from_options(**options)
    names = ds.columns() or []
    for column in (
        text_column if words_column is None else None,
        id_column,
        pair_column,
        words_column,
        index_column,
    ):
        if column is not None and column not in names:
            raise InputError(
                f"the dataset has no column '{column}'; columns are: {', '.join(names)}"
            )
    if index_column is None:
        index_column = "text_index" if "text_index" not in names else "_bertlayers_index"
        ds = _numbered(ds, index_column)
    engine_options = ModelOptions(model, device, dtype, revision, runtime or "torch").to_dict()
    return ds.map_batches(
        EmbedBatches,
        fn_constructor_kwargs={
            "engine_options": engine_options,
            "config_options": config.to_dict(),
            "text_column": text_column,
            "id_column": id_column,
            "pair_column": pair_column,
            "words_column": words_column,
            "index_column": index_column,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        **_pool(actors, gpus_per_actor, cpus_per_actor),
    )


def _numbered(ds, column: str):
    """`ds` with each row's position in a new column. Its blocks are computed once (public
    API: `to_arrow_refs`), their rows counted, then numbered by small tasks."""
    import ray
    import ray.data

    @ray.remote
    def count(table) -> int:
        return table.num_rows

    @ray.remote
    def number(table, offset: int):
        import pyarrow as pa

        positions = pa.array(range(offset, offset + table.num_rows), pa.int64())
        return table.append_column(column, positions)

    blocks = ds.to_arrow_refs()
    counts = ray.get([count.remote(block) for block in blocks])
    offsets = [0, *itertools.accumulate(counts)]
    return ray.data.from_arrow_refs(
        [number.remote(block, offset) for block, offset in zip(blocks, offsets, strict=False)]
    )


# ---------------------------------------------------------------- extract --engine ray


def extract_to_store(
    inputs: list[str],
    output: str | Path,
    config: ExtractConfig,
    model: ModelOptions | dict,
    reader: ReaderOptions,
    *,
    actors: int = 1,
    gpus_per_actor: float = 0,
    cpus_per_actor: float = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Embed input files on the connected Ray cluster into a directory of Parquet shards
    that `bertlayers.load` reads as a local Parquet store; returns its provenance.

    Shards are planned before any work (see `plan.py`) and written into `OUTPUT.partial/`;
    the directory is renamed to `OUTPUT` once every shard is there. `resume` continues an
    interrupted run, skipping finished shards; a changed input, model or setting is refused.
    """
    import ray.data

    # absolute: actors run in their own working directories, on other machines too
    output = Path(output).absolute()
    partial = staging_dir(output)
    files = [f if "://" in f else os.path.abspath(f) for f in expand_inputs(inputs)]
    local = [f for f in files if "://" not in f]
    earlier = _earlier_run(partial)
    # a resumed --overwrite run may replace the store its first run was to replace
    replace = overwrite or (resume and earlier is not None and earlier[0].get("overwrite"))
    check_outputs([Target(output, Kind.PARQUET)], local, bool(replace))
    if partial.exists() and not (resume or overwrite):
        raise OutputError(
            f"an interrupted run left {partial}: use {{opt:resume=True}} to continue it, "
            "or {opt:overwrite=True} to start again"
        )
    if shard_size < 1:
        raise BertlayersError(f"shard size must be at least 1, got {shard_size}")
    shards = plan_shards(files, reader, shard_size)
    options = config.to_dict()
    model = model if isinstance(model, ModelOptions) else ModelOptions.from_dict(model)
    engine_options = model.to_dict()
    request = {
        "inputs": files,
        "reader": asdict(reader),
        "config": options,
        "engine": engine_options,
        "shard_size": shard_size,
    }
    identity = None
    if earlier is not None and resume and not overwrite:
        old_request, old_shards = earlier
        differences = plan_differences(
            {k: v for k, v in old_request.items() if k != "overwrite"}, old_shards, request, shards
        )
        if differences:
            raise InputError(
                "cannot resume: " + "; ".join(differences) + " (use {opt:overwrite=True})"
            )
        identity = _finished_identity(partial, shards)
    else:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        write_manifest(partial, {**request, "overwrite": overwrite}, shards)
    _remove_temporaries(partial)
    todo = [s for s in shards if not (partial / s.name).exists()]
    if progress and len(todo) < len(shards):
        print(
            f"bertlayers: resuming: {len(shards) - len(todo)} of {len(shards)} shards are done",
            file=sys.stderr,
        )
    bar = _bar(progress, sum(s.stop - s.start for s in shards), todo)
    try:
        if todo:
            plan = ray.data.from_items([{"shard": json.dumps(asdict(s))} for s in todo])
            results = plan.map_batches(
                ShardWriter,
                fn_constructor_kwargs={
                    "directory": str(partial),
                    "engine_options": engine_options,
                    "config_options": options,
                    "reader_options": asdict(reader),
                    "identity": identity,
                },
                batch_size=1,
                **_pool(min(actors, len(todo)), gpus_per_actor, cpus_per_actor),
            )
            for row in results.iter_rows():
                summary = json.loads(row["summary"])
                if "error" in summary:
                    kind = getattr(errors, summary["kind"], BertlayersError)
                    raise (kind if issubclass(kind, BertlayersError) else BertlayersError)(
                        summary["error"]
                    )
                if bar is not None:
                    bar.update(summary["texts"])
    except BaseException as err:
        if bar is not None:
            bar.leave = False
            bar.close()
        done = sum((partial / s.name).exists() for s in shards)
        if isinstance(err, BertlayersError) and done:
            kept = (
                f" (the {done} finished shards are kept in {partial}; "
                "{opt:resume=True} continues)"
            )
            raise type(err)(err.template + kept) from None
        raise
    if bar is not None:
        bar.close()
    return finish_store(partial, output, shards, bool(replace))


def _warn_truncated(summaries: list[dict]) -> None:
    """The local run's `TruncationWarning` (and unknown-word warning), over every shard."""
    from ..core.stream import warn_truncated
    from ..provenance import PerTextLog

    log = PerTextLog()
    for summary in summaries:
        log.texts += summary["texts"]
        log.truncated += summary["truncated"]
        log.first_truncated += summary["first_truncated"][: log.FIRST - len(log.first_truncated)]
        log.replaced += [tuple(r) for r in summary["replaced"]]
    if summaries:
        warn_truncated(log, summaries[0]["provenance"]["max_length"])


def staging_dir(output: str | Path) -> Path:
    """Where a Ray run into `output` keeps its shards until every one is there."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def _earlier_run(partial: Path) -> tuple[dict, list[Shard]] | None:
    """The request and plan of the interrupted run in `partial`, if there is one; a
    `.partial` directory that is not a Ray run's is refused (and never removed)."""
    if not partial.exists():
        return None
    if not (partial / MANIFEST).is_file():
        raise OutputError(
            f"{partial} exists and is not a Ray run's staging directory (no {MANIFEST}): "
            "move it away or choose another output"
        )
    try:
        return read_manifest(partial)
    except InputError:
        raise OutputError(
            f"{partial}/{MANIFEST} is not a bertlayers manifest: move {partial} away or "
            "choose another output"
        ) from None


def _remove_temporaries(directory: Path) -> None:
    """Shard files left half-written by killed actors (`.part-*.tmp`)."""
    for stale in directory.glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)


def _bar(enabled: bool, total: int, todo: list[Shard]):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="text", file=sys.stderr, dynamic_ncols=True)
    bar.update(total - sum(s.stop - s.start for s in todo))
    return bar


def shard_summary(path: Path) -> dict:
    metadata = pq.ParquetFile(path).metadata.metadata or {}
    return json.loads(metadata[SHARD_METADATA.encode()])


def _finished_identity(partial: Path, shards: list[Shard]) -> dict | None:
    for shard in shards:
        if (partial / shard.name).exists():
            return shard_summary(partial / shard.name)["identity"]
    return None


def finish_store(partial: Path, output: Path, shards: list[Shard], overwrite: bool) -> dict:
    """Check every shard is there, made by one model and settings; write the store's
    provenance beside them and rename the directory into place."""
    summaries = []
    for shard in shards:
        path = partial / shard.name
        if not path.exists():
            raise OutputError(f"shard {shard.number} ({path}) is missing after the run")
        summaries.append(shard_summary(path))
    identities = {json.dumps(s["identity"], sort_keys=True) for s in summaries}
    if len(identities) > 1:
        raise OutputError(f"the shards in {partial} were made by different models or settings")
    provenance = dict(summaries[0]["provenance"])
    first_truncated = [t for s in summaries for t in s["first_truncated"]][:5]
    rows = sum(s["rows"] for s in summaries)
    provenance.update(
        num_texts=sum(s["texts"] for s in summaries),
        num_truncated=sum(s["truncated"] for s in summaries),
        num_windowed=sum(s["windowed"] for s in summaries),
        shape=[rows, *provenance["shape"][1:]],
        format="parquet",
        engine="ray",
        shards=len(shards),
    )
    provenance.pop("replaced_words", None)
    replaced = [r for s in summaries for r in s["replaced"]]
    if replaced:
        provenance["replaced_words"] = replaced
    if first_truncated:
        provenance["first_truncated"] = first_truncated
    _write_json(partial / PROVENANCE_FILE, provenance)
    _remove_temporaries(partial)  # an actor killed mid-shard leaves one
    if provenance.get("level") != "sentence":
        empty: dict = {}
        for s in summaries:
            for key, values in s["empty"].items():
                empty.setdefault(key, []).extend(values)
        _write_json(partial / EMPTY_TEXTS_FILE, empty)
    # checked again: the output may have appeared during the run
    check_outputs([Target(output, Kind.PARQUET)], [], overwrite)
    old = None
    if output.exists():  # --overwrite: the old store goes only once the new one is in place
        old = output.with_name(f".{output.name}.{uuid.uuid4().hex}.old")
        os.replace(output, old)
    os.replace(partial, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    _warn_truncated(summaries)
    return provenance


def _write_json(path: Path, body: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(body, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


__all__ = ["MANIFEST", "embed_dataset", "extract_to_store"]
