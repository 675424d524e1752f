"""What runs inside a Ray actor: one `Engine` per actor, embedding shards or batches of rows.

`ShardWriter` (the `extract --engine ray` runner) reads a planned shard's records itself,
checks them against the plan's digest, embeds them chunk by chunk in the library's
length-sorted token batches and writes `part-NNNNNN.parquet` (a unique temporary file, then a
rename to the deterministic name: a retried or duplicated task rewrites the same file with the
same rows). `EmbedBatches` (`embed_dataset`) turns a batch of a Ray Dataset into output rows.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from ..core.config import ExtractConfig, ModelOptions
from ..core.engine import Engine
from ..errors import BertlayersError, InputError
from ..io.readers import Record
from ..provenance import PerTextLog, build_provenance
from ..stores.parquet import chunk_empty_texts, chunk_table
from .plan import ReaderOptions, Shard, prefixed, record_digest

SHARD_METADATA = "bertlayers.shard"  # a shard file's key-value metadata: its summary


def _engine(engine_options: dict) -> Engine:
    return Engine.from_options(ModelOptions.from_dict(engine_options))


class ShardWriter:
    """A Ray Data callable class: each call embeds the shards of its batch into files."""

    def __init__(
        self,
        directory: str,
        engine_options: dict,
        config_options: dict,
        reader_options: dict,
        identity: dict | None,
    ) -> None:
        self.directory = Path(directory)
        self.reader = ReaderOptions(**reader_options)
        # A model that does not load, or one unlike the finished shards', fails every shard
        # with its one-line error: raised here, Ray would retry the actor and then report
        # its own error instead.
        self.failure: BertlayersError | None = None
        try:
            self.engine = _engine(engine_options)
            self.plan = self.engine.plan(ExtractConfig.from_dict(config_options))
            self.identity = self.engine.identity(self.plan)
            if identity is not None and identity != self.identity:
                self.failure = InputError(_identity_differences(identity, self.identity))
        except BertlayersError as err:
            self.failure = err

    def __call__(self, batch: dict) -> dict:
        """Write each shard of the batch. A bad input comes back as a row naming the error
        (Ray keeps only the text of an exception), for the driver to raise as the library's."""
        summaries = []
        for spec in batch["shard"]:
            try:
                if self.failure is not None:
                    raise self.failure
                summaries.append(self.write(Shard(**json.loads(spec))))
            except BertlayersError as err:
                summaries.append({"error": err.template, "kind": type(err).__name__})
        return {"summary": np.asarray([json.dumps(s) for s in summaries], dtype=object)}

    def _records(self, shard: Shard) -> list[Record]:
        # from the shard's first line: the lines before it are skipped unparsed
        records = list(
            islice(
                prefixed(self.reader.records(shard.path, shard.line), shard.id_prefix),
                shard.stop - shard.start,
            )
        )
        digest = ""
        for record in records:
            digest = record_digest(digest, record)
        if len(records) != shard.stop - shard.start or digest != shard.digest:
            raise InputError(
                f"{shard.path}: records {shard.start + 1}-{shard.stop} changed after the run "
                "was planned (rerun with {opt:overwrite=True})"
            )
        return records

    def write(self, shard: Shard) -> dict:
        """Embed one shard into its file; returns its summary (also kept in the file)."""
        import pyarrow.parquet as pq

        records = self._records(shard)
        settings, row_shape = self.plan.settings(), self.plan.row_shape
        final = self.directory / shard.name
        tmp = self.directory / f".{shard.name}.{uuid.uuid4().hex}.tmp"
        log, writer, done = PerTextLog(), None, 0
        empty: dict = {"text_index": [], "id": [], "n_tokens": [], "truncated": [], "windows": []}
        try:
            try:
                for chunk in self.engine.iter_chunks(records, self.plan):
                    table = chunk_table(chunk, settings, shard.first + done)
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
                    if hasattr(chunk, "lengths"):
                        for key, values in chunk_empty_texts(chunk, shard.first + done).items():
                            empty[key].extend(values)
                    log.add(chunk)
                    done += len(chunk.ids)
            except BertlayersError as err:
                message = err.template
                raise type(err)(
                    message if shard.path in message else f"{shard.path}: {message}"
                ) from None
            summary = {
                "number": shard.number,
                "texts": log.texts,
                "rows": log.rows,
                "truncated": log.truncated,
                "windowed": log.windowed,
                "first_truncated": log.first_truncated,
                "replaced": [[rid, int(w)] for rid, w in log.replaced],
                "empty": empty,
                "identity": self.identity,
                "provenance": build_provenance(
                    self.engine.run_info, settings, row_shape, log, True
                ),
                "worker": os.getpid(),
                "threads": torch.get_num_threads(),  # Ray sets them from the actor's CPUs
            }
            writer.add_key_value_metadata({SHARD_METADATA: json.dumps(summary)})
            writer.close()
            writer = None
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        finally:
            if writer is not None:
                writer.close()
            tmp.unlink(missing_ok=True)
        return summary


def _identity_differences(finished: dict, now: dict) -> str:
    differing = sorted(k for k in finished.keys() | now.keys() if finished.get(k) != now.get(k))
    return (
        "cannot resume: the finished shards were made with another "
        + ", ".join(f"{k} ({finished.get(k)!r}, now {now.get(k)!r})" for k in differing)
        + " (use {opt:overwrite=True} to start again)"
    )


class EmbedBatches:
    """A Ray Data callable class for `embed_dataset`: a batch of rows in, output rows out."""

    def __init__(
        self,
        engine_options: dict,
        config_options: dict,
        text_column: str,
        id_column: str | None,
        pair_column: str | None,
        words_column: str | None,
        index_column: str,
    ) -> None:
        self.engine = _engine(engine_options)
        self.config = ExtractConfig.from_dict(config_options)
        self.columns = (text_column, id_column, pair_column, words_column)
        self.index_column = index_column

    def _records(self, table, positions: np.ndarray) -> list[Record]:
        text_column, _, pair_column, words_column = self.columns
        texts, ids, pairs, words = (
            table.column(c).to_pylist() if c else None for c in self.columns
        )
        records = []
        for i, position in enumerate(positions.tolist()):
            where = f"row {position}"
            record_id = str(ids[i]) if ids is not None and ids[i] is not None else str(position)
            if words is not None:
                items = words[i]
                if not isinstance(items, list) or not all(isinstance(w, str) for w in items):
                    raise InputError(f"{where}: column '{words_column}' must be a list of strings")
                records.append(Record(record_id, " ".join(items), None, tuple(items)))
                continue
            text = texts[i]
            if not isinstance(text, str):
                kind = "missing" if text is None else type(text).__name__
                raise InputError(f"{where}: column '{text_column}' is {kind}, not text")
            pair = pairs[i] if pairs is not None else None
            if pair_column and not isinstance(pair, str):
                raise InputError(f"{where}: column '{pair_column}' is not text")
            records.append(Record(record_id, text, pair))
        return records

    def __call__(self, table):
        import pyarrow as pa

        positions = np.asarray(table.column(self.index_column).to_numpy(), dtype=np.int64)
        records = self._records(table, positions)
        whole = self.engine.plan(replace(self.config, chunk_size=max(len(records), 1)))
        settings = whole.settings()
        parts, done = [], 0
        for chunk in self.engine.iter_chunks(records, whole):
            part = chunk_table(chunk, settings, 0)
            local = part.column("text_index").to_numpy()
            part = part.set_column(
                0, part.schema.field("text_index"), pa.array(positions[done + local], pa.int64())
            )
            parts.append(part)
            done += len(chunk.ids)
        if not parts:
            return table.slice(0, 0).select([])
        return pa.concat_tables(parts)
