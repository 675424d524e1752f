"""Sinks receive embedded chunks in input order and keep or write them with bounded memory.

The in-memory result is just another sink. `NpySink` streams rows into a `.npy` file whose
header is fixed up at the end, writes a `.json` provenance sidecar (and, for token and word
level, an `.index.npz` with offsets, ids, tokens/words and spans), and only then renames the
file into place, so an interrupted run never leaves a file that looks complete. `NpzSink`
packs the same content into one `.npz` at the end, streaming the vectors from disk.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Protocol

import numpy as np

from .chunks import RaggedChunk, SentenceChunk
from .errors import OutputError

_NPY_HEADER_BYTES = 128  # fixed, so the final shape can be written over the first one


class Sink(Protocol):
    """Where embedded chunks go: `write` in input order, then `close` (or `abort`)."""

    def write(self, chunk: SentenceChunk) -> None: ...

    def close(self, provenance: dict) -> None: ...

    def abort(self, provenance: dict) -> None: ...


class RaggedIndex:
    """Offsets, ids, item strings and spans of ragged output, gathered as chunks arrive."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lengths: list[np.ndarray] = []
        self.items: list[str] = []
        self.spans: list[np.ndarray] = []

    def add(self, chunk: SentenceChunk) -> None:
        self.ids.extend(chunk.ids)
        if isinstance(chunk, RaggedChunk):
            self.lengths.append(np.asarray(chunk.lengths, dtype=np.int64))
            self.items.extend(chunk.items)
            self.spans.append(np.asarray(chunk.spans, dtype=np.int64).reshape(-1, 2))

    def arrays(self) -> dict[str, np.ndarray]:
        """`ids`, and for ragged output `offsets` `(N+1,)`, `items` and `spans` too."""
        out = {"ids": np.asarray(self.ids, dtype=str)}
        if self.lengths:
            lengths = np.concatenate(self.lengths)
            out["offsets"] = np.r_[0, np.cumsum(lengths)].astype(np.int64)
            out["items"] = np.asarray(self.items, dtype=str)
            out["spans"] = np.concatenate(self.spans)
        return out


class MemorySink:
    """Keeps every chunk in memory; `vectors()` joins them."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.index = RaggedIndex()
        self.provenance: dict = {}

    def write(self, chunk: SentenceChunk) -> None:
        self.chunks.append(chunk.vectors)
        self.index.add(chunk)

    def close(self, provenance: dict) -> None:
        self.provenance = provenance

    def abort(self, provenance: dict) -> None:
        self.provenance = provenance

    def vectors(self) -> np.ndarray:
        return np.concatenate(self.chunks)


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version 1.0 `.npy` header padded to a fixed size, so it can be rewritten in place."""
    fields = f"{{'descr': '{np.dtype(dtype).str}', 'fortran_order': False, 'shape': {shape}, }}"
    body_len = _NPY_HEADER_BYTES - 10
    body = fields.ljust(body_len - 1) + "\n"
    if len(body) != body_len:
        raise OutputError(f"shape {shape} too large for the npy header")
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + body.encode("latin1")


def sidecar_path(path: Path) -> Path:
    """`emb.npy` -> `emb.json`: where the provenance of an `.npy` output lives."""
    return path.with_suffix(".json")


def index_path(path: Path) -> Path:
    """`emb.npy` -> `emb.index.npz`: offsets, ids, tokens/words and spans of ragged output."""
    return path.with_suffix(".index.npz")


def check_writable(path: Path, overwrite: bool) -> None:
    """Refuse to clobber existing output, and fail early on a missing or read-only directory."""
    if path.exists() and not overwrite:
        raise OutputError(f"output exists: {path} (use --overwrite to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory is not writable: {parent}")


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


class NpySink:
    """Streams rows into `PATH.partial`; renames it to PATH when complete."""

    def __init__(self, path: str | Path, overwrite: bool = False, ragged: bool = False) -> None:
        self.path = Path(path)
        for target in self._targets(ragged):
            check_writable(target, overwrite)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.index = RaggedIndex()
        self._file = None
        self._row_shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self.rows = 0  # rows of vectors written
        self.records = 0  # records written

    def _targets(self, ragged: bool) -> list[Path]:
        targets = [self.path, sidecar_path(self.path)]
        return [*targets, index_path(self.path)] if ragged else targets

    def write(self, chunk: SentenceChunk) -> None:
        data = np.ascontiguousarray(chunk.vectors)
        try:
            if self._file is None:
                self._row_shape = tuple(data.shape[1:])
                self._dtype = data.dtype
                self._file = self.partial.open("wb")
                self._file.write(npy_header((0, *self._row_shape), self._dtype))
            self._file.write(data.tobytes())
        except OSError as err:
            raise OutputError(f"cannot write {self.partial}: {err.strerror}") from None
        self.rows += len(data)
        self.records += len(chunk.ids)
        self.index.add(chunk)

    def _finish(self) -> None:
        if self._file is None:
            return
        self._file.seek(0)
        self._file.write(npy_header((self.rows, *self._row_shape), self._dtype))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    def close(self, provenance: dict) -> None:
        try:
            self._finish()
            arrays = self.index.arrays()
            if "offsets" in arrays:
                _write_npz_atomic(index_path(self.path), arrays)
            _write_json_atomic(sidecar_path(self.path), provenance)
            os.replace(self.partial, self.path)
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror}") from None

    def abort(self, provenance: dict) -> None:
        """Keep what was written as `PATH.partial` (+ `.partial.json`), clearly incomplete."""
        try:
            self._finish()
            if self.records:
                _write_json_atomic(self.partial.with_name(self.partial.name + ".json"), provenance)
        except OSError:
            pass


class NpzSink(NpySink):
    """One `.npz` holding `vectors`, `ids`, (`offsets`, `items`, `spans`) and `provenance`.

    Vectors stream to `PATH.vectors.partial` as they come; at the end they are copied into the
    zip from disk (never through memory) and the zip is renamed into place.
    """

    def __init__(self, path: str | Path, overwrite: bool = False, ragged: bool = False) -> None:
        super().__init__(path, overwrite, ragged)
        self.partial = self.path.with_name(self.path.name + ".vectors.partial")

    def _targets(self, ragged: bool) -> list[Path]:
        return [self.path]

    def close(self, provenance: dict) -> None:
        tmp = self.path.with_name(self.path.name + ".partial")
        try:
            self._finish()
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                zf.write(self.partial, "vectors.npy")
                for name, array in self.index.arrays().items():
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array)
                with zf.open("provenance.npy", "w") as member:
                    np.lib.format.write_array(member, np.asarray(json.dumps(provenance)))
            os.replace(tmp, self.path)
            self.partial.unlink()
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror}") from None


def open_sink(path: str | Path, overwrite: bool = False, ragged: bool = False) -> NpySink:
    """The sink for an output path, chosen by its suffix (`.npy` or `.npz`)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        return NpySink(path, overwrite, ragged)
    if suffix == ".npz":
        return NpzSink(path, overwrite, ragged)
    raise OutputError(
        f"unsupported output format '{suffix or path}': use a path ending in .npy or .npz"
    )
