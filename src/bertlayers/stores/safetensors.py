"""safetensors, for the Hugging Face ecosystem: one tensor per layer, sharded when large.

Tensors: `layer_6` `(rows, H)` for each stored layer, `offsets` `(N+1,)` at token/word level,
`spans` `(rows, 2)`, and the ids and token/word strings as UTF-8 bytes plus offsets
(`ids.utf8`, `ids.offsets`, `items.utf8`, `items.offsets`). The provenance is JSON in the
header metadata under `bertlayers`. Files are written in a streaming way (the format is a
JSON header followed by raw little-endian bytes). When the store is larger than
`max_shard_bytes`, layers are spread over `NAME-00001-of-0000N.safetensors` files with a
`NAME.safetensors.index.json` `weight_map`, as Hugging Face shards checkpoints.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .base import (
    FileArray,
    StoreData,
    array_blocks,
    block_ranges,
    ensure_room,
    layer_names,
    pack_index,
    unpack_index,
)

MAX_SHARD_BYTES = 5 * 2**30
_DTYPES = {"float32": "F32", "float16": "F16", "int64": "I64", "uint8": "U8", "bool": "BOOL"}
_NUMPY_DTYPES = {code: name for name, code in _DTYPES.items()}


def _write_file(
    path: Path,
    data: StoreData,
    layers: dict[str, int],
    extra: dict[str, np.ndarray | FileArray],
    meta: dict,
) -> None:
    """One safetensors file holding the given layers (by position) and extra tensors."""
    hidden = data.row_shape[1]
    header: dict = {"__metadata__": meta}
    offset = 0
    layer_bytes = data.num_rows * hidden * data.dtype.itemsize
    for name in layers:
        header[name] = {
            "dtype": _DTYPES[data.dtype.name],
            "shape": [data.num_rows, hidden],
            "data_offsets": [offset, offset + layer_bytes],
        }
        offset += layer_bytes
    for name, array in extra.items():
        header[name] = {
            "dtype": _DTYPES[array.dtype.name],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    base = 8 + len(encoded)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        handle.truncate(base + offset)
        row_bytes = int(np.prod(data.row_shape)) * data.dtype.itemsize
        for start, stop in block_ranges(data.num_rows, row_bytes):
            block = data.rows(start, stop)
            for name, position in layers.items():
                handle.seek(
                    base + header[name]["data_offsets"][0] + start * hidden * data.dtype.itemsize
                )
                _write_array(handle, block[:, position])
        for name, array in extra.items():
            handle.seek(base + header[name]["data_offsets"][0])
            for block in array_blocks(array):
                _write_array(handle, block)


def _write_array(handle, array: np.ndarray) -> None:
    """Write an array's bytes, little-endian, copying it only where it is strided or
    big-endian (not into a bytes object too)."""
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    handle.write(memoryview(array.reshape(-1).view(np.uint8)))


def write_safetensors(
    data: StoreData, path: Path, max_shard_bytes: int = MAX_SHARD_BYTES
) -> list[Path]:
    names = layer_names(data.provenance, data.row_shape[0])
    extra = pack_index(data.index())  # spans and strings may be FileArrays: written in blocks
    meta = {"bertlayers": json.dumps(data.provenance), "format": "np"}
    layer_bytes = data.num_rows * data.row_shape[1] * data.dtype.itemsize
    shards: list[list[str]] = [[]]
    size = sum(a.nbytes for a in extra.values())
    for name in names:
        if shards[-1] and size + layer_bytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += layer_bytes
    position = {name: i for i, name in enumerate(names)}
    extra_bytes = sum(a.nbytes for a in extra.values())
    ensure_room(path.with_name(path.name + ".tmp"), extra_bytes + layer_bytes * len(names))
    if len(shards) == 1:
        tmp = path.with_name(path.name + ".tmp")
        _write_file(tmp, data, {n: position[n] for n in names}, extra, meta)
        return [tmp]
    written = []
    weight_map = {}
    stem = path.name.removesuffix(".safetensors")
    for number, shard in enumerate(shards, start=1):
        file_name = f"{stem}-{number:05d}-of-{len(shards):05d}.safetensors"
        tmp = path.with_name(file_name + ".tmp")
        _write_file(tmp, data, {n: position[n] for n in shard}, extra if number == 1 else {}, meta)
        written.append(tmp)
        weight_map.update({n: file_name for n in shard})
    weight_map.update({n: f"{stem}-00001-of-{len(shards):05d}.safetensors" for n in extra})
    index_file = path.with_name(path.name + ".index.json.tmp")
    index_file.write_text(
        json.dumps({"metadata": meta, "weight_map": weight_map}, indent=1), encoding="utf-8"
    )
    written.append(index_file)
    return written


class SafetensorsSource:
    """Reads one layer tensor, or a block of rows of each, at a time (through safetensors'
    slices, which read only those rows)."""

    def __init__(self, files: dict[str, Path], names: list[str]) -> None:
        from safetensors import safe_open

        self.files = files
        self.names = names
        with safe_open(str(files[names[0]]), framework="np") as handle:
            first = handle.get_slice(names[0])
            rows, hidden = first.get_shape()
            self.dtype = np.dtype(_NUMPY_DTYPES[first.get_dtype()])
        self.shape = (rows, len(names), hidden)

    def _rows(self, name: str, start: int, stop: int) -> np.ndarray:
        from safetensors import safe_open

        with safe_open(str(self.files[name]), framework="np") as handle:
            return handle.get_slice(name)[start:stop]

    def layer(self, position: int) -> np.ndarray:
        return self._rows(self.names[position], 0, self.shape[0])

    def block(self, start: int, stop: int) -> np.ndarray:
        return np.stack([self._rows(name, start, stop) for name in self.names], axis=1)

    def all(self) -> np.ndarray:
        return self.block(0, self.shape[0])


def sharded_index(path: Path) -> Path:
    return path.with_name(path.name + ".index.json")


def read_safetensors(path: Path) -> tuple[SafetensorsSource, dict, dict]:
    from safetensors import safe_open

    if sharded_index(path).exists() and not path.exists():
        meta = json.loads(sharded_index(path).read_text(encoding="utf-8"))
        files = {name: path.with_name(f) for name, f in meta["weight_map"].items()}
        provenance = json.loads(meta["metadata"]["bertlayers"])
    else:
        with safe_open(str(path), framework="np") as handle:
            provenance = json.loads(handle.metadata()["bertlayers"])
            files = {name: path for name in handle.keys()}  # noqa: SIM118
    arrays = {}
    for name, file in files.items():
        if name.startswith("layer_") or name == "combined":
            continue
        with safe_open(str(file), framework="np") as handle:
            arrays[name] = handle.get_tensor(name)
    index = unpack_index(arrays)
    names = [n for n in layer_names(provenance, len(provenance["layers"])) if n in files]
    if provenance.get("combine", "stack") != "stack":
        names = ["combined"]
    return SafetensorsSource(files, names), index, provenance
