"""Parquet (via pyarrow): one row per output row, one column per layer — for pandas, Polars,
Spark, DuckDB and Ray Data.

Columns: `text_index`, `id`, then at token/word level `position`, `item`, `start`, `end`, at
sentence level `n_tokens`, `truncated`, `windows`, then `layer_6`... each a fixed-size list of
H floats. Columnar storage means reading one layer reads only its column. The provenance is
JSON in the schema metadata under `bertlayers`. A path ending in `.parquet` is one file; any
other path is a directory of `part-00000.parquet` shards of at most `shard_rows` rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import StoreData, block_ranges, layer_names

SHARD_ROWS = 1_000_000


def _schema(data: StoreData, names: list[str], ragged: bool):
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
    else:
        fields += [
            pa.field("n_tokens", pa.int64()),
            pa.field("truncated", pa.bool_()),
            pa.field("windows", pa.int64()),
        ]
    fields += [pa.field(name, pa.list_(value, data.row_shape[1])) for name in names]
    metadata = {b"bertlayers": json.dumps(data.provenance).encode()}
    return pa.schema(fields, metadata=metadata)


def write_parquet(data: StoreData, path: Path, shard_rows: int = SHARD_ROWS) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    k, hidden = data.row_shape
    names = layer_names(data.provenance, k)
    index = data.index()
    ragged = "offsets" in index
    schema = _schema(data, names, ragged)
    ids = np.asarray(index["ids"], dtype=object)
    single = path.suffix.lower() == ".parquet"
    tmp = path.with_name(path.name + ".tmp")
    if not single:
        tmp.mkdir()
    writer, shard, shard_start = None, 0, 0
    row_bytes = k * hidden * data.dtype.itemsize
    for start, stop in block_ranges(data.num_rows, row_bytes):
        block = data.rows(start, stop)
        rows = np.arange(start, stop)  # (block,): the text of each row, at sentence level
        if ragged:  # the text of each token/word row, and its position in the text
            texts = np.searchsorted(index["offsets"], rows, side="right") - 1
            position, rows = rows - index["offsets"][texts], texts
        columns = [pa.array(rows, pa.int64()), pa.array(ids[rows], pa.string())]
        if ragged:
            spans = np.asarray(index["spans"][start:stop])  # (block, 2)
            columns += [
                pa.array(position, pa.int32()),
                pa.array(index["items"][start:stop], pa.string()),
                pa.array(spans[:, 0], pa.int64()),
                pa.array(spans[:, 1], pa.int64()),
            ]
        else:
            columns += [
                pa.array(index["n_tokens"][rows], pa.int64()),
                pa.array(index["truncated"][rows], pa.bool_()),
                pa.array(index["windows"][rows], pa.int64()),
            ]
        for position_k in range(k):
            flat = pa.array(np.ascontiguousarray(block[:, position_k]).reshape(-1))
            columns.append(pa.FixedSizeListArray.from_arrays(flat, hidden))
        table = pa.Table.from_arrays(columns, schema=schema)
        if single:
            writer = writer or pq.ParquetWriter(tmp, schema)
            writer.write_table(table)
            continue
        offset = 0
        while offset < len(table):  # fill shards of shard_rows rows
            if writer is None:
                writer = pq.ParquetWriter(tmp / f"part-{shard:05d}.parquet", schema)
            take = min(len(table) - offset, shard_rows - shard_start)
            writer.write_table(table.slice(offset, take))
            offset += take
            shard_start += take
            if shard_start == shard_rows:
                writer.close()
                writer, shard, shard_start = None, shard + 1, 0
    if writer is not None:
        writer.close()
    if single and not tmp.exists():
        pq.write_table(schema.empty_table(), tmp)
    return [tmp]


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


def read_parquet(path: Path) -> tuple[ParquetSource, dict, dict]:
    import pyarrow.dataset as ds

    dataset = ds.dataset(path, format="parquet")
    provenance = json.loads(dataset.schema.metadata[b"bertlayers"])
    ragged = "item" in dataset.schema.names
    meta = dataset.to_table(columns=["text_index"] if ragged else ["text_index", "id"])
    text_index = meta.column("text_index").to_numpy()
    index = {}
    if not ragged:  # a row per text (token and word stores take the ids from the provenance)
        index["ids"] = [str(x) for x in meta.column("id").to_pylist()]
    names = [n for n in dataset.schema.names if n.startswith("layer_") or n == "combined"]
    hidden = dataset.schema.field(names[0]).type.list_size
    if ragged:
        extra = dataset.to_table(columns=["item", "start", "end"])
        index["ids"] = list(provenance["texts"]["ids"])
        counts = np.bincount(text_index, minlength=len(index["ids"]))  # texts may have no rows
        index["offsets"] = np.r_[0, np.cumsum(counts)].astype(np.int64)
        index["items"] = extra.column("item").to_pylist()
        index["spans"] = np.stack(
            [extra.column("start").to_numpy(), extra.column("end").to_numpy()], axis=1
        )
    source = ParquetSource(path, names, hidden, len(text_index))
    return source, index, provenance
