"""Sinks receive embedded chunks in input order and keep or write them with bounded memory.

The in-memory result is just another sink. `NpySink` streams rows into a `.npy` file whose
header is fixed up at the end, writes a `.json` provenance sidecar, and only then renames the
file into place, so an interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import OutputError

_NPY_HEADER_BYTES = 128  # fixed, so the final shape can be written over the first one


@dataclass
class SentenceChunk:
    """Pooled embeddings of consecutive records, in input order."""

    ids: list[str]
    embeddings: np.ndarray  # (n, K, H) — or (n, 1, K*H) for concat
    n_tokens: np.ndarray  # (n,) tokens before truncation, special tokens included
    truncated: np.ndarray  # (n,) bool


class Sink(Protocol):
    """Where embedded chunks go: `write` in input order, then `close` (or `abort`)."""

    def write(self, chunk: SentenceChunk) -> None: ...

    def close(self, provenance: dict) -> None: ...

    def abort(self, provenance: dict) -> None: ...


class MemorySink:
    """Keeps every chunk; `array()` joins them into one `(N, K, H)` array."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.provenance: dict = {}

    def write(self, chunk: SentenceChunk) -> None:
        self.chunks.append(chunk.embeddings)

    def close(self, provenance: dict) -> None:
        self.provenance = provenance

    def abort(self, provenance: dict) -> None:
        self.provenance = provenance

    def array(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, 0, 0), np.float32)


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    fields = f"{{'descr': '{np.dtype(dtype).str}', 'fortran_order': False, 'shape': {shape}, }}"
    body_len = _NPY_HEADER_BYTES - 10
    body = fields.ljust(body_len - 1) + "\n"
    if len(body) != body_len:
        raise OutputError(f"shape {shape} too large for the npy header")
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + body.encode("latin1")


def sidecar_path(path: Path) -> Path:
    """`emb.npy` -> `emb.json`: where the provenance of an `.npy` output lives."""
    return path.with_suffix(".json")


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


class NpySink:
    """Streams `(N, K, H)` rows into `PATH.partial`; renames it to PATH when complete."""

    def __init__(self, path: str | Path, overwrite: bool = False) -> None:
        self.path = Path(path)
        check_writable(self.path, overwrite)
        check_writable(sidecar_path(self.path), overwrite)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._file = None
        self._row_shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self.rows = 0

    def write(self, chunk: SentenceChunk) -> None:
        data = np.ascontiguousarray(chunk.embeddings)
        try:
            if self._file is None:
                self._row_shape = tuple(data.shape[1:])
                self._dtype = data.dtype
                self._file = self.partial.open("wb")
                self._file.write(_npy_header((0, *self._row_shape), self._dtype))
            self._file.write(data.tobytes())
        except OSError as err:
            raise OutputError(f"cannot write {self.partial}: {err.strerror}") from None
        self.rows += len(data)

    def _finish(self) -> None:
        if self._file is None:
            return
        self._file.seek(0)
        self._file.write(_npy_header((self.rows, *self._row_shape), self._dtype))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def close(self, provenance: dict) -> None:
        try:
            self._finish()
            _write_json_atomic(sidecar_path(self.path), provenance)
            os.replace(self.partial, self.path)
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror}") from None

    def abort(self, provenance: dict) -> None:
        """Keep what was written as `PATH.partial` (+ `.partial.json`), clearly incomplete."""
        try:
            self._finish()
            if self.rows:
                _write_json_atomic(self.partial.with_name(self.partial.name + ".json"), provenance)
        except OSError:
            pass
