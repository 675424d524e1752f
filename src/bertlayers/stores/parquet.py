"""Parquet (via pyarrow): one row per output row, one column per layer — for pandas, Polars,
Spark, DuckDB and Ray Data.

Columns: `text_index`, `id`, then at token/word level `position`, `item`, `start`, `end`,
then the text's `n_tokens`, `truncated`, `windows`, then `layer_6`... each a fixed-size list
of H floats. Columnar storage means reading one layer reads only its column. The provenance is
JSON in the schema metadata under `bertlayers`; at token/word level the ids and columns of
texts with no rows (an empty text) are there too, under `bertlayers.texts_without_rows`.
A path ending in `.parquet` is one file; any other path is a directory of
`part-00000.parquet` shards of at most `shard_rows` rows.
"""

from __future__ import annotations

import bisect
import contextlib
import json
from pathlib import Path

import numpy as np

from .base import StoreData, block_ranges, layer_names

SHARD_ROWS = 1_000_000
# Vectors per row group, and per block read from the source. The writer holds several times
# a row group's values while encoding it (float16 most: each value becomes a 2-byte
# fixed-size binary with an 8-byte pointer), so blocks are smaller than other formats' 64 MiB.
ROW_GROUP_BYTES = 8 << 20


TEXT_COLUMNS = ("n_tokens", "truncated", "windows")  # per text, repeated on its rows
EMPTY_TEXTS = b"bertlayers.texts_without_rows"  # schema metadata: texts with no token rows
# A directory of shards written in parallel (a Ray run) keeps the store's provenance and its
# texts without rows beside the shards; readers of Parquet datasets skip `_` files.
PROVENANCE_FILE = "_bertlayers.json"
EMPTY_TEXTS_FILE = "_texts_without_rows.json"


def _schema(data: StoreData, names: list[str], ragged: bool, empty: dict | None):
    import pyarrow as pa

    value = pa.float16() if data.dtype == np.float16 else pa.float32()
    fields = [pa.field("text_index", pa.int64()), pa.field("id", pa.string())]
    if ragged:
        fields += [
            pa.field("position", pa.int32()),
            pa.field("item", pa.string()),
            pa.field("start", pa.int64()),
            pa.field("end", pa.int64()),
        ]
    fields += [
        pa.field("n_tokens", pa.int64()),
        pa.field("truncated", pa.bool_()),
        pa.field("windows", pa.int64()),
    ]
    fields += [pa.field(name, pa.list_(value, data.row_shape[1])) for name in names]
    metadata = {b"bertlayers": json.dumps(data.provenance).encode()}
    if empty is not None:
        metadata[EMPTY_TEXTS] = json.dumps(empty).encode()
    return pa.schema(fields, metadata=metadata)


def _texts_without_rows(index: dict) -> dict:
    """Ids and per-text columns of the texts that have no rows (an empty text at token
    level): a row per token cannot carry them. Read through the offsets a block at a time."""
    offsets = index["offsets"]
    empty: list[int] = []
    texts = len(offsets) - 1
    for start, stop in block_ranges(texts, 8):
        bounds = np.asarray(offsets[start : stop + 1])
        empty.extend((start + np.flatnonzero(np.diff(bounds) == 0)).tolist())
    return {
        "text_index": empty,
        "id": [str(index["ids"][i]) for i in empty],
        **{name: [index[name][i].item() for i in empty] for name in TEXT_COLUMNS},
    }


def _text_of_rows(offsets, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """For output rows `start:stop`: the text of each row and its position in that text,
    and the range of texts they span, reading only those texts' offsets."""
    first = bisect.bisect_right(offsets, start) - 1
    last = bisect.bisect_right(offsets, stop - 1)  # one past the text of the last row
    bounds = np.asarray(offsets[first : last + 1])
    rows = np.arange(start, stop)
    local = np.searchsorted(bounds, rows, side="right") - 1
    return first + local, rows - bounds[local], first, last


def _options(schema) -> dict:
    """Writer options: dictionary encoding for the index columns only. Float vectors barely
    repeat, and float16 ones never outgrow a dictionary page, so a dictionary would be built
    (and held) over every value of a row group for nothing."""
    import pyarrow as pa

    return {"use_dictionary": [f.name for f in schema if not pa.types.is_fixed_size_list(f.type)]}


def _block_table(data: StoreData, index: dict, schema, start: int, stop: int):
    """Output rows `start:stop` as a table of the store's schema (index columns read for
    those rows only)."""
    import pyarrow as pa

    k, hidden = data.row_shape
    ragged = "offsets" in index
    block = data.rows(start, stop)
    if ragged:  # the text of each token/word row, and its position in the text
        texts, position, first, last = _text_of_rows(index["offsets"], start, stop)
    else:  # a row per text
        texts, first, last = np.arange(start, stop), start, stop
    local = texts - first
    ids = np.asarray(index["ids"][first:last], dtype=object)
    columns = [pa.array(texts, pa.int64()), pa.array(ids[local], pa.string())]
    if ragged:
        spans = np.asarray(index["spans"][start:stop])  # (block, 2)
        columns += [
            pa.array(position, pa.int32()),
            pa.array(index["items"][start:stop], pa.string()),
            pa.array(spans[:, 0], pa.int64()),
            pa.array(spans[:, 1], pa.int64()),
        ]
    for name, kind in zip(TEXT_COLUMNS, (pa.int64(), pa.bool_(), pa.int64()), strict=True):
        columns.append(pa.array(np.asarray(index[name][first:last])[local], kind))
    for position_k in range(k):
        flat = pa.array(np.ascontiguousarray(block[:, position_k]).reshape(-1))
        columns.append(pa.FixedSizeListArray.from_arrays(flat, hidden))
    return pa.Table.from_arrays(columns, schema=schema)


class _ChunkData:
    """StoreData over one embedded chunk (a Ray shard is written chunk by chunk)."""

    def __init__(self, chunk, provenance: dict) -> None:
        self.chunk = chunk
        self.provenance = provenance
        self.dtype = np.dtype(chunk.vectors.dtype)
        self.row_shape = tuple(chunk.vectors.shape[1:])
        self.num_rows = len(chunk.vectors)

    def rows(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.chunk.vectors[start:stop])

    def index(self) -> dict:
        chunk = self.chunk
        index = {
            "ids": list(chunk.ids),
            "n_tokens": np.asarray(chunk.n_tokens, dtype=np.int64),
            "truncated": np.asarray(chunk.truncated, dtype=bool),
            "windows": np.asarray(chunk.windows, dtype=np.int64),
        }
        if hasattr(chunk, "lengths"):
            index["offsets"] = np.r_[0, np.cumsum(chunk.lengths)].astype(np.int64)
            index["items"] = list(chunk.items)
            index["spans"] = np.asarray(chunk.spans, dtype=np.int64)
        return index


def chunk_table(chunk, settings: dict, first: int):
    """One embedded chunk as a table of the Parquet store's columns, with no metadata;
    `first` is the `text_index` of the chunk's first text in the whole input."""
    import pyarrow as pa
    import pyarrow.compute as pc

    data = _ChunkData(chunk, settings)
    index = data.index()
    ragged = "offsets" in index
    names = layer_names(settings, data.row_shape[0])
    schema = _schema(data, names, ragged, None).remove_metadata()
    if data.num_rows == 0:
        return schema.empty_table()
    table = _block_table(data, index, schema, 0, data.num_rows)
    shifted = pc.add(table.column("text_index"), pa.scalar(first, pa.int64()))
    return table.set_column(0, schema.field("text_index"), shifted)


def chunk_empty_texts(chunk, first: int) -> dict:
    """The texts of a token/word-level chunk that have no rows (see `_texts_without_rows`),
    with their `text_index` in the whole input."""
    empty = _texts_without_rows(_ChunkData(chunk, {}).index())
    empty["text_index"] = [first + i for i in empty["text_index"]]
    return empty


def write_parquet(data: StoreData, path: Path, shard_rows: int = SHARD_ROWS) -> list[Path]:
    """Write the store a block of rows at a time; the index (ids, per-text columns, offsets,
    strings, spans) is read per block too, whether it is in memory or in files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    k, hidden = data.row_shape
    names = layer_names(data.provenance, k)
    index = data.index()
    ragged = "offsets" in index
    schema = _schema(data, names, ragged, _texts_without_rows(index) if ragged else None)
    single = path.suffix.lower() == ".parquet"
    tmp = path.with_name(path.name + ".tmp")
    if not single:
        tmp.mkdir()
    writer, shard, shard_start = None, 0, 0
    try:
        row_bytes = k * hidden * data.dtype.itemsize
        group_rows = max(1, ROW_GROUP_BYTES // row_bytes)
        for start, stop in block_ranges(data.num_rows, row_bytes, most=ROW_GROUP_BYTES):
            table = _block_table(data, index, schema, start, stop)
            if single:
                writer = writer or pq.ParquetWriter(tmp, schema, **_options(schema))
                writer.write_table(table, row_group_size=group_rows)
            offset = 0
            while not single and offset < len(table):  # fill shards of shard_rows rows
                if writer is None:
                    part = tmp / f"part-{shard:05d}.parquet"
                    writer = pq.ParquetWriter(part, schema, **_options(schema))
                take = min(len(table) - offset, shard_rows - shard_start)
                writer.write_table(table.slice(offset, take), row_group_size=group_rows)
                offset += take
                shard_start += take
                if shard_start == shard_rows:
                    writer.close()
                    writer, shard, shard_start = None, shard + 1, 0
            del table  # and give its buffers back to the OS: Arrow's pool would keep them
            pa.default_memory_pool().release_unused()
        if writer is not None:
            writer.close()
        if single and not tmp.exists():
            pq.write_table(schema.empty_table(), tmp)
    except BaseException:  # a full disk: no writer left open for its __del__ to close again
        _abandon(writer, tmp)
        raise
    return [tmp]


def _abandon(writer, tmp: Path) -> None:
    """Close the writer of a store whose writing failed, and remove what was written. A
    writer left open would write its footer when freed, and on a full disk print that it
    could not."""
    import shutil

    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()
        writer.is_open = False  # closed or not: not to be closed again when freed
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


class ParquetSource:
    """Reads layer columns of a Parquet file or shard directory; blocks of rows read only the
    row groups that hold them."""

    def __init__(self, path: Path, names: list[str], hidden: int, rows: int) -> None:
        import pyarrow.dataset as ds

        self.dataset = ds.dataset(path, format="parquet")
        self.names = names
        self.hidden = hidden
        self.shape = (rows, len(names), hidden)
        value_type = self.dataset.schema.field(names[0]).type.value_type
        self.dtype = np.dtype(value_type.to_pandas_dtype())
        self.groups: list[tuple[str, int]] = []  # (file, row group) in row order
        sizes = []
        for fragment in self.dataset.get_fragments():
            for number in range(fragment.metadata.num_row_groups):
                self.groups.append((fragment.path, number))
                sizes.append(fragment.metadata.row_group(number).num_rows)
        self.group_starts = np.r_[0, np.cumsum(sizes, dtype=np.int64)]  # (groups + 1,)

    def _column(self, table, name: str) -> np.ndarray:
        column = table.column(name).combine_chunks()
        return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, self.hidden)

    def layer(self, position: int) -> np.ndarray:
        return self._column(
            self.dataset.to_table(columns=[self.names[position]]), self.names[position]
        )

    def block(self, start: int, stop: int) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if stop <= start:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        first = int(np.searchsorted(self.group_starts, start, side="right")) - 1
        last = int(np.searchsorted(self.group_starts, stop, side="left"))
        tables = [
            pq.ParquetFile(self.groups[g][0]).read_row_group(self.groups[g][1], columns=self.names)
            for g in range(first, last)
        ]
        table = pa.concat_tables(tables).slice(start - int(self.group_starts[first]), stop - start)
        return np.stack([self._column(table, name) for name in self.names], axis=1)

    def all(self) -> np.ndarray:
        return self.block(0, self.shape[0])


def _store_metadata(path: Path, dataset) -> dict:
    """The store's metadata: the schema's, or, for shards written in parallel, the files
    beside them."""
    sidecar = Path(path) / PROVENANCE_FILE
    if not sidecar.is_file():
        return dataset.schema.metadata or {}
    metadata = {b"bertlayers": sidecar.read_bytes()}
    empty = Path(path) / EMPTY_TEXTS_FILE
    if empty.is_file():
        metadata[EMPTY_TEXTS] = empty.read_bytes()
    return metadata


def read_parquet(path: Path) -> tuple[ParquetSource, dict, dict]:
    import pyarrow.dataset as ds

    dataset = ds.dataset(path, format="parquet")
    metadata = _store_metadata(path, dataset)
    provenance = json.loads(metadata[b"bertlayers"])
    ragged = "item" in dataset.schema.names
    texts = provenance.get("texts")  # older stores: per-text columns in the provenance
    per_text = [c for c in ("id", *TEXT_COLUMNS) if c in dataset.schema.names]
    meta = dataset.to_table(columns=["text_index", *per_text])
    text_index = meta.column("text_index").to_numpy()
    names = [n for n in dataset.schema.names if n.startswith("layer_") or n == "combined"]
    hidden = dataset.schema.field(names[0]).type.list_size
    index: dict = {}
    if ragged:
        num_texts = len(texts["ids"]) if texts else int(provenance["num_texts"])
        counts = np.bincount(text_index, minlength=num_texts)  # texts may have no rows
        index["offsets"] = np.r_[0, np.cumsum(counts)].astype(np.int64)
        if not texts:  # each text's columns from its first row, or from the metadata
            firsts = meta.take(index["offsets"][:-1][counts > 0])
            empty = json.loads(metadata.get(EMPTY_TEXTS, b'{"text_index": []}'))
            where = np.flatnonzero(counts > 0)
            for column in per_text:
                values = np.empty(num_texts, dtype=object)
                values[where] = firsts.column(column).to_pylist()
                values[empty["text_index"]] = empty.get(column, [])
                index["ids" if column == "id" else column] = values.tolist()
        else:
            index["ids"] = list(texts["ids"])
        extra = dataset.to_table(columns=["item", "start", "end"])
        index["items"] = extra.column("item").to_pylist()
        index["spans"] = np.stack(
            [extra.column("start").to_numpy(), extra.column("end").to_numpy()], axis=1
        )
    else:
        for column in per_text:
            index["ids" if column == "id" else column] = meta.column(column).to_pylist()
    index["ids"] = [str(x) for x in index["ids"]]
    for name in TEXT_COLUMNS:
        if name in index:
            index[name] = np.asarray(index[name], dtype=bool if name == "truncated" else np.int64)
    source = ParquetSource(path, names, hidden, len(text_index))
    return source, index, provenance
