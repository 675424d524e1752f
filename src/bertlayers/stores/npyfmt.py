"""`.npy` (+ `.json` provenance, + `.index.npz` at token/word level) and single-file `.npz`.

`.npy` is row-major `(N, K, H)` as numpy users expect and is memory-mapped on read; reading
one layer touches the pages of all layers. `.npz` holds every array in one zip (stored, not
compressed) and is read member by member.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..sinks import npy_header
from .base import ArraySource, StoreData, block_ranges, pack_index, unpack_index


def index_path(path: Path) -> Path:
    return path.with_suffix(".index.npz")


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def write_npy(data: StoreData, path: Path, staged_vectors: Path | None = None) -> list[Path]:
    """Write `.npy` and its sidecars as `*.tmp` files; returns them for the caller to rename."""
    tmp = path.with_name(path.name + ".tmp")
    if staged_vectors is not None:
        os.replace(staged_vectors, tmp)  # the staging file is already a complete .npy
    else:
        with tmp.open("wb") as handle:
            handle.write(npy_header((data.num_rows, *data.row_shape), data.dtype))
            row_bytes = int(np.prod(data.row_shape)) * data.dtype.itemsize
            for start, stop in block_ranges(data.num_rows, row_bytes):
                handle.write(np.ascontiguousarray(data.rows(start, stop)).tobytes())
    index = data.index()
    written = [tmp]
    if "offsets" in index:
        index_tmp = index_path(path).with_name(index_path(path).name + ".tmp")
        with index_tmp.open("wb") as handle:
            np.savez(handle, **pack_index(index))
        written.append(index_tmp)
    json_tmp = sidecar_path(path).with_name(sidecar_path(path).name + ".tmp")
    # the provenance carries the per-text ids, token counts and flags (see stores._with_texts)
    json_tmp.write_text(json.dumps(data.provenance, indent=1) + "\n", encoding="utf-8")
    written.append(json_tmp)
    return written


def read_npy(path: Path) -> tuple[ArraySource, dict, dict]:
    provenance = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    index = {}
    if index_path(path).exists():
        with np.load(index_path(path), allow_pickle=False) as npz:
            index = unpack_index({k: npz[k] for k in npz.files})
    else:
        texts = provenance.get("texts", {})
        index = {key: np.asarray(value) for key, value in texts.items()}
    return ArraySource(vectors), index, provenance


def write_npz(data: StoreData, path: Path) -> list[Path]:
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("vectors.npy", "w", force_zip64=True) as member:
            member.write(npy_header((data.num_rows, *data.row_shape), data.dtype))
            row_bytes = int(np.prod(data.row_shape)) * data.dtype.itemsize
            for start, stop in block_ranges(data.num_rows, row_bytes):
                member.write(np.ascontiguousarray(data.rows(start, stop)).tobytes())
        for name, array in pack_index(data.index()).items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array)
        with zf.open("provenance.npy", "w") as member:
            np.lib.format.write_array(member, np.asarray(json.dumps(data.provenance)))
    return [tmp]


def read_npz(path: Path) -> tuple[ArraySource, dict, dict]:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    provenance = json.loads(str(arrays.pop("provenance")))
    return ArraySource(arrays.pop("vectors")), unpack_index(arrays), provenance
