"""`.npy` (+ `.json` provenance, + `.index.npz` index) and single-file `.npz`.

`.npy` is row-major `(N, K, H)` as numpy users expect and is memory-mapped on read; reading
one layer touches the pages of all layers. `.index.npz` holds the ids and per-text columns,
and at token/word level offsets, strings and spans (`np.load` reads it). `.npz` holds every
array in one zip (stored, not compressed): its index is read whole, its vectors
memory-mapped like `.npy`.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError, first_line
from .base import (
    ArraySource,
    FileArray,
    NpySource,
    StoreData,
    block_ranges,
    ensure_room,
    index_bytes,
    npy_header,
    pack_index,
    unpack_index,
    vector_bytes,
    write_npy_stream,
)


def index_path(path: Path) -> Path:
    """Where a `.npy` store's index lives: `NAME.index.npz` beside it."""
    return path.with_suffix(".index.npz")


def sidecar_path(path: Path) -> Path:
    """Where a `.npy` store's provenance lives: `NAME.json` beside it."""
    return path.with_suffix(".json")


def write_npy(data: StoreData, path: Path, staged_vectors: Path | None = None) -> list[Path]:
    """Write `.npy` and its sidecars as `*.tmp` files; returns them for the caller to rename.

    The staged vectors are moved in last: should writing the sidecars fail (disk full), the
    staging area is still whole, for `--resume`."""
    written = []
    index = data.index()
    index_tmp = index_path(path).with_name(index_path(path).name + ".tmp")
    vectors = 0 if staged_vectors is not None else vector_bytes(data)  # staged: only renamed
    ensure_room(index_tmp, vectors + index_bytes(index))
    written.append(index_tmp)
    with zipfile.ZipFile(index_tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        _write_members(zf, pack_index(index))
    json_tmp = sidecar_path(path).with_name(sidecar_path(path).name + ".tmp")
    written.append(json_tmp)
    json_tmp.write_text(json.dumps(data.provenance, indent=1) + "\n", encoding="utf-8")
    tmp = path.with_name(path.name + ".tmp")
    written.insert(0, tmp)
    if staged_vectors is not None:
        os.replace(staged_vectors, tmp)  # the staging file is already a complete .npy
    else:
        with tmp.open("wb") as handle:
            _write_vectors(handle, data)
    return written


def _write_vectors(handle, data: StoreData) -> None:
    """The store's rows as `.npy` bytes (a file or a zip member), a block at a time."""
    handle.write(npy_header((data.num_rows, *data.row_shape), data.dtype))
    row_bytes = int(np.prod(data.row_shape)) * data.dtype.itemsize
    for start, stop in block_ranges(data.num_rows, row_bytes):
        block = np.ascontiguousarray(data.rows(start, stop))
        handle.write(memoryview(block.reshape(-1).view(np.uint8)))


def _write_members(zf: zipfile.ZipFile, arrays: dict[str, np.ndarray | FileArray]) -> None:
    """Arrays as `NAME.npy` members of a zip, as `np.savez` writes them, a block at a time."""
    for name, array in arrays.items():
        with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
            write_npy_stream(member, array)


def _sidecar_error(sidecar: Path, role: str, path: Path, err: Exception) -> InputError:
    first = first_line(err)
    return InputError(f"{sidecar} ({role} of {path.name}) is not readable: {first}")


def read_npy(path: Path) -> tuple[ArraySource, dict, dict]:
    """A `.npy` store's vectors (memory-mapped), index and provenance; a missing or unreadable
    sidecar is an `InputError` naming it."""
    sidecar = sidecar_path(path)
    if not sidecar.exists():
        raise InputError(f"{path} is incomplete: {sidecar.name} (its provenance) is missing")
    try:
        provenance = json.loads(sidecar.read_text(encoding="utf-8"))
        if not isinstance(provenance, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise _sidecar_error(sidecar, "the provenance", path, err) from None
    index = {}
    if index_path(path).exists():
        try:
            with np.load(index_path(path), allow_pickle=False) as npz:
                index = unpack_index({k: npz[k] for k in npz.files})
        except Exception as err:  # a truncated or foreign zip raises all kinds of errors
            raise _sidecar_error(index_path(path), "the index", path, err) from None
    elif "texts" in provenance:  # an older sentence-level store: its columns are in the JSON
        index = {key: np.asarray(value) for key, value in provenance["texts"].items()}
    else:
        raise InputError(f"{path} is incomplete: {index_path(path).name} (its index) is missing")
    return NpySource(FileArray.from_npy(path)), index, provenance


def write_npz(data: StoreData, path: Path) -> list[Path]:
    """Write the store as one `.npz` (members stored, not compressed) to a `*.tmp` file;
    returns it for the caller to rename."""
    tmp = path.with_name(path.name + ".tmp")
    index = data.index()
    ensure_room(tmp, vector_bytes(data) + index_bytes(index))
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("vectors.npy", "w", force_zip64=True) as member:
            _write_vectors(member, data)
        _write_members(zf, pack_index(index))
        with zf.open("provenance.npy", "w") as member:
            np.lib.format.write_array(member, np.asarray(json.dumps(data.provenance)))
    return [tmp]


def _stored_member_start(path: Path, name: str) -> int | None:
    """Where the bytes of an uncompressed zip member begin in the file (None: compressed)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)  # the member's local header: signature ... name and extra sizes
    if local[:4] != b"PK\x03\x04":
        raise ValueError(f"bad zip member header for {name}")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_length + extra_length


def read_npz(path: Path) -> tuple[ArraySource, dict, dict]:
    """A `.npz` store's vectors, index and provenance. The index and provenance are read
    whole; the vectors are memory-mapped (members are stored uncompressed), unless someone has
    compressed the zip since."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "vectors"}
        start = _stored_member_start(path, "vectors.npy")
        source = (
            NpySource(FileArray.from_npy(path, start))
            if start is not None
            else ArraySource(npz["vectors"])
        )
    provenance = json.loads(str(arrays.pop("provenance")))
    return source, unpack_index(arrays), provenance
