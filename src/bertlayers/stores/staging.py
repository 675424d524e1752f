"""The staging area every store streams into: durable, resumable, format-neutral.

`OUT.partial/` holds `vectors.npy` (rows appended as they come, header fixed at the end),
`texts.jsonl` (one line per record: id, token count, truncation, windows, and for token/word
level the strings and spans of its rows) and `journal.json`, rewritten atomically after the
data files are synced at each durable point. A killed run leaves a consistent prefix: on
`--resume` the files are cut back to the journal's sizes and the run continues from there.
Only when the run completes is the final store written (in the asked format) and renamed
into place, so nothing incomplete ever looks complete. For that, the index (ids, per-text
columns, and for token and word runs offsets, spans and strings) is gathered from
`texts.jsonl` into `index-*.bin` files, which the format writers copy a block at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..chunks import RaggedChunk, SentenceChunk
from ..errors import InputError, OutputError
from .base import NPY_HEADER_BYTES, FileArray, Utf8Strings, close_all, npy_header, utf8_lengths

_HEADER = NPY_HEADER_BYTES  # bytes reserved for the vectors' .npy header
INDEX_TEXTS, INDEX_ITEMS = 4096, 65536  # texts, token strings read at a time to gather the index


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary file, sync it, and rename it over `path` (the temporary
    file removed should that fail: a full disk)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _disk_error(err: OSError, where: Path, records: int) -> OutputError:
    reason = "disk full" if err.errno == 28 else (err.strerror or str(err))
    if not records:  # the staging area is removed with nothing in it: nothing to resume
        return OutputError(f"{reason} while writing {where}; no text was made durable yet")
    return OutputError(
        f"{reason} while writing {where}; the {records} texts made durable so far are kept in "
        f"{where.parent if where.parent.name.endswith('.partial') else where} "
        "(rerun with {opt:resume=True} once fixed)"
    )


class FileRows:
    """A chunk's rows, written in place in the staging vectors file as they come."""

    def __init__(
        self,
        start: int,
        n_rows: int,
        row_shape: tuple[int, ...],
        dtype: np.dtype,
        staging: Staging,
    ) -> None:
        self.fd = os.open(staging.vectors_path, os.O_WRONLY)
        self.start = start
        self.shape = (n_rows, *row_shape)
        self.dtype = dtype
        self.row_bytes = int(np.prod(row_shape)) * dtype.itemsize
        self._staging = staging

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def vectors(self) -> FileRows:
        return self

    def put(self, row: int, rows: np.ndarray) -> None:
        view = memoryview(np.ascontiguousarray(rows, dtype=self.dtype).reshape(-1).view(np.uint8))
        offset = self.start + row * self.row_bytes
        try:
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as err:
            self.close()
            raise _disk_error(err, self._staging.dir, self._staging.records) from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Staging:
    """Append embedded chunks durably; resume after a crash; read back when complete."""

    def __init__(self, directory: Path, identity: dict, resume: bool) -> None:
        self.dir = directory
        self.identity = identity
        self.vectors_path = directory / "vectors.npy"
        self.texts_path = directory / "texts.jsonl"
        self.journal_path = directory / "journal.json"
        self.records = 0  # durable records
        self.rows = 0  # durable rows
        self.input_digest = ""  # sha256 state of the durable input records
        self.row_shape: list[int] | None = None
        self.dtype: str | None = None
        self.ragged = bool(identity.get("level", "sentence") != "sentence")
        if resume and self.journal_path.exists():
            self._reopen()
        else:
            if directory.exists():
                shutil.rmtree(directory)
            try:
                directory.mkdir(parents=True)
                self.texts_path.write_bytes(b"")
                self._commit_journal(texts_bytes=0)
            except OSError as err:  # no journal yet: not a staging area to resume, removed
                shutil.rmtree(directory, ignore_errors=True)
                raise _disk_error(err, self.dir, 0) from None
        self._vectors = None
        self._placed: FileRows | None = None
        self._texts = self.texts_path.open("ab")
        self._pending_records = 0
        self._pending_rows = 0

    # ---------------------------------------------------------------- journal

    def _journal(self, texts_bytes: int) -> dict:
        return {
            "identity": self.identity,
            "records": self.records,
            "rows": self.rows,
            "texts_bytes": texts_bytes,
            "row_shape": self.row_shape,
            "dtype": self.dtype,
            "input_digest": self.input_digest,
        }

    def _commit_journal(self, texts_bytes: int) -> None:
        write_json_atomic(self.journal_path, self._journal(texts_bytes))

    def _reopen(self) -> None:
        try:
            journal = json.loads(self.journal_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"cannot resume: {self.journal_path} is unreadable ({err})") from None
        differences = _differences(journal["identity"], self.identity)
        if differences:
            raise InputError(
                "cannot resume: " + "; ".join(differences) + " (use {opt:overwrite=True})"
            )
        self.records = int(journal["records"])
        self.rows = int(journal["rows"])
        self.row_shape = journal["row_shape"]
        self.dtype = journal["dtype"]
        self.input_digest = journal["input_digest"]
        with self.texts_path.open("r+b") as handle:
            handle.truncate(int(journal["texts_bytes"]))
        if self.row_shape is not None and self.vectors_path.exists():
            row_bytes = int(np.prod(self.row_shape)) * np.dtype(self.dtype).itemsize
            with self.vectors_path.open("r+b") as handle:
                handle.truncate(_HEADER + self.rows * row_bytes)

    # ---------------------------------------------------------------- writing

    def _open_vectors(self, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        if self._vectors is None:
            if self.row_shape is None:
                self.row_shape = list(row_shape)
                self.dtype = np.dtype(dtype).str
                with self.vectors_path.open("wb") as handle:
                    handle.write(npy_header((0, *self.row_shape), np.dtype(dtype)))
            self._vectors = self.vectors_path.open("ab")

    def reserve(self, n_rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> FileRows:
        """Room for the next chunk's rows in the vectors file, written in place in any order
        (token level): the rows go to disk as batches finish, not held in memory."""
        try:
            self._open_vectors(row_shape, dtype)
            self._vectors.flush()
        except OSError as err:
            raise _disk_error(err, self.dir, self.records) from None
        row_bytes = int(np.prod(row_shape)) * np.dtype(dtype).itemsize
        start = _HEADER + (self.rows + self._pending_rows) * row_bytes
        # pwrite on an O_APPEND descriptor would append: the rows get a descriptor of their own
        if self._placed is not None:
            self._placed.close()
        self._placed = FileRows(start, n_rows, row_shape, np.dtype(dtype), self)
        return self._placed

    def append(self, chunk: SentenceChunk) -> None:
        """Write a chunk (not yet durable: `commit` makes everything so far durable)."""
        placed = isinstance(chunk.vectors, FileRows)
        data = chunk.vectors if placed else np.ascontiguousarray(chunk.vectors)
        try:
            self._open_vectors(data.shape[1:], data.dtype)
            if placed:
                data.close()  # its rows are in the file already
            else:
                self._vectors.write(memoryview(data.reshape(-1).view(np.uint8)))  # no copy
            self._texts.write(_text_lines(chunk))
        except OSError as err:
            raise _disk_error(err, self.dir, self.records) from None
        self._pending_records += len(chunk.ids)
        self._pending_rows += len(data)

    def commit(self, input_digest: str) -> None:
        """Sync the data files, then record the new durable point in the journal."""
        try:
            for handle in (self._vectors, self._texts):
                if handle is not None:
                    handle.flush()
                    os.fsync(handle.fileno())
            self.records += self._pending_records
            self.rows += self._pending_rows
            self._pending_records = self._pending_rows = 0
            self.input_digest = input_digest
            self._commit_journal(texts_bytes=self._texts.tell())
        except OSError as err:
            raise _disk_error(err, self.dir, self.records) from None

    def close_files(self) -> None:
        """Close the data files. What they could not write (a full disk) was not made durable
        (the journal does not count it, `--resume` cuts it off), so it is let go: every file
        is closed, none left for the garbage collector to flush again."""
        if self._placed is not None:
            self._placed.close()
        with contextlib.suppress(OSError):
            close_all(h for h in (self._vectors, self._texts) if h is not None)
        self._vectors = None

    def finish(self) -> StagedStore:
        """Fix the vectors' header and hand the complete staging to a format writer."""
        self.close_files()  # every chunk was committed: nothing is left to write
        if self.row_shape is None:
            raise OutputError("nothing was embedded")
        with self.vectors_path.open("r+b") as handle:
            handle.write(npy_header((self.rows, *self.row_shape), np.dtype(self.dtype)))
        return StagedStore(self.dir)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key} was {old.get(key)!r} in the interrupted run, now {new.get(key)!r}")
    return out


def _text_lines(chunk: SentenceChunk) -> bytes:
    lines = []
    offset = 0
    for i, record_id in enumerate(chunk.ids):
        entry = {
            "id": record_id,
            "n_tokens": int(chunk.n_tokens[i]),
            "truncated": bool(chunk.truncated[i]),
            "windows": int(chunk.windows[i]),
        }
        if isinstance(chunk, RaggedChunk):
            length = int(chunk.lengths[i])
            entry["items"] = chunk.items[offset : offset + length]
            entry["spans"] = chunk.spans[offset : offset + length].tolist()
            offset += length
            replaced = [w for rid, w in (chunk.replaced or []) if rid == record_id]
            if replaced:
                entry["replaced"] = replaced
        lines.append(json.dumps(entry, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


class StagedStore:
    """A complete staging area, read by the format writers (vectors in blocks of rows)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.vectors = FileArray.from_npy(directory / "vectors.npy")

    def texts(self) -> Iterator[dict]:
        with (self.dir / "texts.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)

    def index(self) -> dict:
        """ids, per-text columns, and for ragged output offsets, items and spans.

        Everything is gathered from `texts.jsonl` into files in the staging area as it is
        read and comes back as `FileArray`s (strings as `Utf8Strings` over two of them), so
        neither the per-text nor the per-token index is ever all in memory. `counts` holds
        the number of texts, truncated texts and windowed texts."""
        names = ("ids.utf8", "ids.offsets", "n_tokens", "truncated", "windows", "offsets")
        names += ("spans", "items.utf8", "items.offsets")
        files = {name: (self.dir / f"index-{name}.bin").open("wb") for name in names}
        try:
            ids, items = _StringFile(files["ids.utf8"]), _StringFile(files["items.utf8"])
            for offsets in ("ids.offsets", "offsets", "items.offsets"):
                files[offsets].write(np.zeros(1, dtype=np.int64).tobytes())
            replaced: list[list] = []
            texts = truncated = windowed = rows = 0
            ragged = False
            for lines in _batched(self.texts(), texts=INDEX_TEXTS, items=INDEX_ITEMS):
                columns = {
                    name: np.array([entry[name] for entry in lines], dtype=dtype)
                    for name, dtype in (
                        ("n_tokens", np.int64),
                        ("truncated", bool),
                        ("windows", np.int64),
                    )
                }
                for name, column in columns.items():
                    files[name].write(column.tobytes())
                files["ids.offsets"].write(ids.add([entry["id"] for entry in lines]).tobytes())
                texts += len(lines)
                truncated += int(columns["truncated"].sum())
                windowed += int((columns["windows"] > 1).sum())
                if "items" not in lines[0]:
                    continue
                ragged = True
                lengths = np.array([len(entry["items"]) for entry in lines], dtype=np.int64)
                files["offsets"].write((rows + np.cumsum(lengths)).tobytes())
                rows += int(lengths.sum())
                for entry in lines:
                    files["spans"].write(np.asarray(entry["spans"], dtype=np.int64).tobytes())
                    files["items.offsets"].write(items.add(entry["items"]).tobytes())
                    replaced.extend([entry["id"], w] for w in entry.get("replaced", []))
        finally:
            close_all(files.values())

        def array(name: str, dtype: type, shape: tuple[int, ...]) -> FileArray:
            return FileArray(self.dir / f"index-{name}.bin", dtype, shape)

        out: dict = {
            "ids": Utf8Strings(
                array("ids.utf8", np.uint8, (ids.size,)),
                array("ids.offsets", np.int64, (texts + 1,)),
            ),
            "n_tokens": array("n_tokens", np.int64, (texts,)),
            "truncated": array("truncated", bool, (texts,)),
            "windows": array("windows", np.int64, (texts,)),
        }
        if ragged:
            out["offsets"] = array("offsets", np.int64, (texts + 1,))
            out["items"] = Utf8Strings(
                array("items.utf8", np.uint8, (items.size,)),
                array("items.offsets", np.int64, (rows + 1,)),
            )
            out["spans"] = array("spans", np.int64, (rows, 2))
        self.replaced = replaced
        self.counts = {"texts": texts, "truncated": truncated, "windowed": windowed}
        return out


class _StringFile:
    """Strings appended to a UTF-8 file; `add` gives the end offset of each string."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.size = 0  # bytes written so far

    def add(self, strings: list[str]) -> np.ndarray:
        data = "".join(strings).encode("utf-8")
        ends = self.size + np.cumsum(utf8_lengths(strings, data), dtype=np.int64)
        self.handle.write(data)
        self.size += len(data)
        return ends


def _batched(entries: Iterator[dict], texts: int, items: int) -> Iterator[list[dict]]:
    """Lines of `texts.jsonl` in lists of at most `texts` texts or about `items` token or word
    strings (one long article holds thousands), so that a list stays small."""
    batch: list[dict] = []
    held = 0
    for entry in entries:
        batch.append(entry)
        held += len(entry.get("items", ()))
        if len(batch) == texts or held >= items:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def input_digest(previous: str, text: str, record_id: str) -> str:
    """Chain a record into the running digest of the input (to refuse a changed input)."""
    return hashlib.sha256(f"{previous}\x00{record_id}\x00{text}".encode()).hexdigest()
