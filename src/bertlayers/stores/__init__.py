"""Embedding stores: `.npy`, `.npz`, HDF5, Parquet and safetensors, chosen by the path.

Every run streams into a staging area (`OUT.partial/`, see `staging.py`) that is durable after
each chunk and resumable after a crash; when the run completes the store is written in the
asked format and renamed into place. `load` reads any store back (lazily where the format
allows), `describe` tells what a store holds, `convert` turns one format into another.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..chunks import SentenceChunk
from ..errors import InputError, OptionError, OutputError, first_line
from ..extras import require
from ..io.readers import Record
from ..memory import trim_heap
from ..options import StrEnum
from ..outputs import Kind, Target, check_outputs, make_parents
from ..results import RaggedEmbeddings, SentenceEmbeddings, make_result
from .base import ArraySource, LayerSource, StoreContent, StoreData
from .hdf5 import read_hdf5, write_hdf5
from .npyfmt import index_path, read_npy, read_npz, sidecar_path, write_npy, write_npz
from .parquet import read_parquet, write_parquet
from .safetensors import read_safetensors, sharded_index, write_safetensors
from .staging import FileRows, Staging, input_digest


class StoreFormat(StrEnum):
    """The file formats a store is written in, chosen by the output path's suffix."""

    NPY = "npy"
    NPZ = "npz"
    HDF5 = "hdf5"
    PARQUET = "parquet"
    SAFETENSORS = "safetensors"


_SUFFIXES = {
    ".npy": StoreFormat.NPY,
    ".npz": StoreFormat.NPZ,
    ".h5": StoreFormat.HDF5,
    ".hdf5": StoreFormat.HDF5,
    ".parquet": StoreFormat.PARQUET,
    ".safetensors": StoreFormat.SAFETENSORS,
}

_WRITERS: dict[StoreFormat, Callable[[StoreData, Path], list[Path]]] = {
    StoreFormat.NPY: write_npy,
    StoreFormat.NPZ: write_npz,
    StoreFormat.HDF5: write_hdf5,
    StoreFormat.PARQUET: write_parquet,
    StoreFormat.SAFETENSORS: write_safetensors,
}


_EXTRAS = {  # the package each format needs, and the extra that installs it
    StoreFormat.HDF5: ("h5py", "hdf5"),
    StoreFormat.PARQUET: ("pyarrow", "parquet"),
    StoreFormat.SAFETENSORS: ("safetensors", "safetensors"),
}


def store_format(path: str | Path, fmt: str | None = None, reading: bool = False) -> StoreFormat:
    """The format named by `fmt`, else by the path's suffix (a directory: Parquet shards),
    once its package is known to be installed.

    `reading` words the error for a store to be read rather than an output to be written.
    """
    chosen = _format_of(Path(path), fmt, reading)
    if chosen in _EXTRAS:
        require(*_EXTRAS[chosen], f"the {chosen.value} format")
    return chosen


def _format_of(path: Path, fmt: str | None, reading: bool) -> StoreFormat:
    path = Path(path)
    suffix = path.suffix.lower()
    if fmt:
        chosen = StoreFormat.parse(fmt, "format")
        if suffix in _SUFFIXES and _SUFFIXES[suffix] is not chosen:
            raise OptionError(
                f"'{path}' ends in {suffix}, which is {_SUFFIXES[suffix].value}, but the format "
                f"asked for is {chosen.value}: change the suffix or drop {{opt:format}}"
            )
        return chosen
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if path.is_dir() and any(path.glob("*.parquet")):
        return StoreFormat.PARQUET
    valid = ", ".join(sorted(_SUFFIXES))
    if reading:
        raise InputError(
            f"'{path}' is not a store: a store is a file ending in {valid}, "
            "or a directory of Parquet shards"
        )
    raise OptionError(
        f"cannot tell the output format of '{path}': use a path ending in {valid}, "
        "or {opt:format} (a directory with {opt:format=parquet} holds Parquet shards)"
    )


def _outputs(path: Path, fmt: StoreFormat) -> list[Path]:
    """Every file a store of this format at `path` consists of."""
    if fmt is StoreFormat.NPY:
        return [path, sidecar_path(path), index_path(path)]
    if fmt is StoreFormat.SAFETENSORS:
        return [path, sharded_index(path)]
    return [path]


_KINDS = {
    StoreFormat.NPY: Kind.NPY,
    StoreFormat.NPZ: Kind.NPZ,
    StoreFormat.HDF5: Kind.HDF5,
    StoreFormat.PARQUET: Kind.PARQUET,
    StoreFormat.SAFETENSORS: Kind.SAFETENSORS,
}


def _shards(path: Path, fmt: StoreFormat) -> list[Path]:
    """The shard files of a sharded safetensors store (NAME-00001-of-00003.safetensors)."""
    if fmt is not StoreFormat.SAFETENSORS:
        return []
    stem = path.name.removesuffix(".safetensors")
    return sorted(path.parent.glob(f"{stem}-*-of-*.safetensors"))


def store_targets(path: str | Path, fmt: str | StoreFormat | None = None) -> list[Target]:
    """Every path a store at `path` is written to, for `check_outputs`."""
    path = Path(path)
    fmt = store_format(path, fmt.value if isinstance(fmt, StoreFormat) else fmt)
    targets = [Target(path, _KINDS[fmt])]
    if fmt is StoreFormat.NPY:
        targets += [Target(sidecar_path(path), Kind.PROVENANCE), Target(index_path(path), Kind.NPZ)]
    if fmt is StoreFormat.SAFETENSORS:
        targets.append(Target(sharded_index(path), Kind.PROVENANCE))
        targets += [Target(shard, Kind.SAFETENSORS) for shard in _shards(path, fmt)]
    return targets


def store_files(path: str | Path) -> list[Path]:
    """The files of an existing store (the inputs of convert, analyze, probe --store)."""
    path = Path(path)
    try:
        fmt = store_format(path, reading=True)
    except InputError:
        return [path]
    return [p for p in _outputs(path, fmt) + _shards(path, fmt) if p.exists()]


def _temporaries(path: Path, fmt: StoreFormat) -> list[Path]:
    """The `*.tmp` files a writer of this format makes before renaming them into place."""
    parts = [p.with_name(p.name + ".tmp") for p in _outputs(path, fmt)]
    if fmt is StoreFormat.SAFETENSORS:  # shards: NAME-00001-of-00003.safetensors.tmp
        stem = path.name.removesuffix(".safetensors")
        parts += path.parent.glob(f"{stem}-*-of-*.safetensors.tmp")
    return parts


def _partial_dir(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _remove(path: Path) -> None:
    """Remove a path that `check_outputs` let through (a store of ours) or our own `.tmp`."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _final_provenance(provenance: dict, counts: dict, replaced: list, shape: tuple) -> dict:
    """The provenance of the whole store, resumed or not: its counts of texts, truncated
    and windowed texts and its shape (the per-text columns are in the store's index)."""
    out = {k: v for k, v in provenance.items() if k != "texts"}
    out["num_texts"] = counts["texts"]
    out["num_truncated"] = counts["truncated"]
    out["num_windowed"] = counts["windowed"]
    out["shape"] = list(shape)
    out.pop("replaced_words", None)
    if replaced:
        out["replaced_words"] = replaced
    return out


class StoreSink:
    """A sink that streams into a resumable staging area and writes the store at the end.

    `identity` is what must match to resume (model, fingerprint, settings, batching);
    the input is checked with a running digest of the records already embedded. Existing
    outputs and `inputs` (the files read) go through `check_outputs` before anything is written.
    `trim_heap` gives freed heap pages back to the OS after each chunk (glibc's `malloc_trim`,
    process-wide: the command line asks for it, the library does not). `model_name` (a
    readable name: the hub id, or what the bundled model is) and when the run started are
    kept beside the staging area (`run.json`), for `describe` of an interrupted run.
    """

    def __init__(
        self,
        path: str | Path,
        identity: dict,
        fmt: str | None = None,
        overwrite: bool = False,
        resume: bool = False,
        inputs: Iterable[str | Path] = (),
        trim_heap: bool = False,
        model_name: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.trim_heap = trim_heap  # a front end's choice: it acts on the whole process
        self.format = store_format(self.path, fmt)
        self.partial = _partial_dir(self.path)
        check_outputs(store_targets(self.path, self.format), inputs, overwrite)
        if os.path.lexists(self.partial):
            if not (resume or overwrite):
                raise OutputError(
                    f"an interrupted run left {self.partial}: "
                    "use {opt:resume=True} to continue it, or {opt:overwrite=True} to start again"
                )
            check_outputs([Target(self.partial, Kind.STAGING)], inputs, overwrite=True)
        self.staging = Staging(self.partial, identity, resume=resume and not overwrite)
        _note_run(self.partial, model_name or identity.get("model"))
        self.resumed_from = self.staging.records
        self.earlier_texts = self._earlier_texts() if self.resumed_from else None
        self._digests: dict[int, str] = {self.staging.records: self.staging.input_digest}
        self._consumed = 0
        self._pending = 0

    def _earlier_texts(self) -> tuple[int, int, list[str]]:
        """What the interrupted run embedded: texts, truncated texts and the first truncated
        ids, so that the truncation warning counts the whole input, not only this run's."""
        truncated, first = 0, []
        with self.staging.texts_path.open(encoding="utf-8") as handle:
            for line in handle:
                if '"truncated": true' in line and json.loads(line)["truncated"]:
                    truncated += 1
                    if len(first) < 5:
                        first.append(str(json.loads(line)["id"]))
        return self.resumed_from, truncated, first

    @property
    def records(self) -> int:
        """Records made durable so far (including those of an earlier, resumed run)."""
        return self.staging.records

    def skip_done(self, records: Iterable[Record]) -> Iterator[Record]:
        """Skip the records an interrupted run already embedded (checking they are the same),
        then pass the rest on while keeping the running digest of the input."""
        digest = ""
        count = 0
        iterator = iter(records)
        for record in iterator:
            digest = input_digest(digest, _record_text(record), record.id)
            count += 1
            if count <= self.resumed_from:
                if count == self.resumed_from and digest != self.staging.input_digest:
                    raise InputError(
                        f"cannot resume: the input differs from the interrupted run's within "
                        f"its first {count} records (use {{opt:overwrite=True}} to start again)"
                    )
                continue
            self._consumed = count
            self._digests[count] = digest
            yield record
        if count < self.resumed_from:
            raise InputError(
                f"cannot resume: the input has {count} records, fewer than the "
                f"{self.resumed_from} already embedded (use {{opt:overwrite=True}} to start again)"
            )

    def reserve(self, n_rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> FileRows:
        """Room in the staging file for the next chunk's token rows (see `Staging.reserve`)."""
        return self.staging.reserve(n_rows, row_shape, dtype)

    def write(self, chunk: SentenceChunk) -> None:
        self.staging.append(chunk)
        self._pending += len(chunk.ids)
        if chunk.chunk_end:
            done = self.staging.records + self._pending
            digest = self._digests.get(done)
            if digest is None:  # records given without skip_done: no digest to keep
                digest = ""
            self.staging.commit(digest)
            self._pending = 0
            if self.trim_heap:
                trim_heap()
            self._digests = {k: v for k, v in self._digests.items() if k >= done}

    def close(self, provenance: dict) -> None:
        """Write the store in its format from the staging area, then rename it into place.

        Should that fail (a full disk, Ctrl-C), nothing of the store is left and the staging
        area is whole (the `.npy` vectors, moved out of it, are moved back) for `--resume`."""
        written: list[Path] = []
        renamed: list[Path] = []
        staged_vectors = self.staging.vectors_path
        try:
            staged = self.staging.finish()
            index = staged.index()  # files in the staging area, written a block at a time
            final = _final_provenance(
                provenance, staged.counts, staged.replaced, staged.vectors.shape
            )
            final["format"] = self.format.value
            data = StoreContent(staged.vectors, index, final)
            if self.format is StoreFormat.NPY:
                written = write_npy(data, self.path, staged_vectors=staged_vectors)
            else:
                written = _WRITERS[self.format](data, self.path)
            _rename_into_place(written, self.path, renamed, self.format)
        except BaseException as err:
            if self.format is StoreFormat.NPY and not staged_vectors.exists():
                moved = self.path.with_name(self.path.name + ".tmp")  # or renamed already
                if moved.exists() or written:
                    os.replace(moved if moved.exists() else self.path, staged_vectors)
            for part in [*written, *_temporaries(self.path, self.format), *renamed]:
                _remove(part)
            if not isinstance(err, OSError):
                raise
            raise OutputError(
                f"{_reason(err)} while writing {self.path}; the embedded texts are kept in "
                f"{self.partial} (rerun with {{opt:resume=True}} once fixed)"
            ) from None
        self.staging.remove()
        self.provenance = final

    def abort(self, provenance: dict) -> None:
        """Leave the staging area at its last durable point, for `--resume`; one that holds
        nothing durable (a run that failed before its first chunk) is removed."""
        self.staging.close_files()
        if not self.records:
            self.staging.remove()


RUN_NOTE = "run.json"  # beside the staging area: the model's name, when the run started


def _note_run(partial: Path, model_name: str | None) -> None:
    """Write `run.json` in a new staging area; a resumed one keeps its start."""
    import datetime as _dt

    note = partial / RUN_NOTE
    if note.exists():
        return
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with contextlib.suppress(OSError):  # a note for people: never worth failing the run
        note.write_text(json.dumps({"model": model_name, "started": started}) + "\n")


def _run_note(partial: Path) -> dict:
    try:
        data = json.loads((partial / RUN_NOTE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record_text(record: Record) -> str:
    return record.text if record.pair is None else f"{record.text}\x01{record.pair}"


# ---------------------------------------------------------------- reading


_READERS = {
    StoreFormat.NPY: read_npy,
    StoreFormat.NPZ: read_npz,
    StoreFormat.HDF5: read_hdf5,
    StoreFormat.PARQUET: read_parquet,
    StoreFormat.SAFETENSORS: read_safetensors,
}


def open_store(path: str | Path) -> tuple[LayerSource, dict, dict, StoreFormat]:
    """Open a complete store: its vectors source, index arrays and provenance."""
    path = Path(path)
    exists = path.exists() or (path.suffix == ".safetensors" and sharded_index(path).exists())
    if not exists:
        partial = _partial_dir(path)
        if partial.exists():
            raise InputError(
                f"{path} is incomplete: an interrupted run left {partial.name} "
                "(finish it with {opt:resume=True})"
            )
        raise InputError(f"no such store: {path}")
    fmt = store_format(path, reading=True)
    try:
        source, index, provenance = _READERS[fmt](path)
    except InputError:
        raise
    except Exception as err:  # corrupt or truncated files raise all kinds of errors
        raise InputError(f"{path} is not a readable {fmt.value} store: {first_line(err)}") from None
    if not provenance.get("complete", False):
        raise InputError(f"{path} is marked incomplete")
    texts = provenance.get("texts", {})
    for key in ("ids", "n_tokens", "truncated", "windows"):
        if key not in index and key in texts:
            index[key] = np.asarray(texts[key])
    expected_rows = provenance.get("shape", [None])[0]
    if expected_rows is not None and source.shape[0] != expected_rows:
        raise InputError(
            f"{path} is truncated or corrupt: {source.shape[0]} rows, "
            f"its provenance says {expected_rows}"
        )
    return source, index, provenance, fmt


def convert(
    source_path: str | Path,
    target_path: str | Path,
    fmt: str | None = None,
    overwrite: bool = False,
) -> StoreFormat:
    """Rewrite a store in another format (block by block: memory stays bounded)."""
    source, index, provenance, _ = open_store(source_path)
    target = Path(target_path)
    target_format = store_format(target, fmt)
    check_outputs(store_targets(target, target_format), store_files(source_path), overwrite)
    provenance = dict(provenance, format=target_format.value)
    provenance.pop("texts", None)  # an older store's per-text columns: now in the index
    keep = {
        k: v
        for k, v in index.items()
        if k in ("ids", "n_tokens", "truncated", "windows", "offsets", "items", "spans")
    }
    keep["ids"] = [str(x) for x in keep["ids"]]
    written: list[Path] = []
    renamed: list[Path] = []
    make_parents(target)
    try:
        written = _WRITERS[target_format](StoreContent(source, keep, provenance), target)
        _rename_into_place(written, target, renamed, target_format)
    except BaseException as err:  # a full disk, Ctrl-C: nothing of the new store is left
        for part in [*written, *_temporaries(target, target_format), *renamed]:
            _remove(part)
        if not isinstance(err, OSError):
            raise
        raise OutputError(f"{_reason(err)} while writing {target}") from None
    return target_format


def _rename_into_place(
    written: list[Path], path: Path, renamed: list[Path], fmt: StoreFormat
) -> None:
    """Rename a writer's `*.tmp` files into place (each appended to `renamed`), the store's
    own file (or a sharded safetensors store's index) last: until it is there, no store is.
    Parts of the store replaced that the new one does not have (an unsharded safetensors
    file replaced by shards, or shards by one file) are removed: they would be read."""
    last = {path.name, sharded_index(path).name}
    stale = [t.path for t in store_targets(path, fmt) if os.path.lexists(t.path)]
    for tmp in sorted(written, key=lambda tmp: tmp.name.removesuffix(".tmp") in last):
        target = tmp.with_name(tmp.name.removesuffix(".tmp"))
        _remove(target)
        os.replace(tmp, target)
        renamed.append(target)
    for part in stale:
        if part not in renamed:
            _remove(part)


def _reason(err: OSError) -> str:
    return "disk full" if err.errno == errno.ENOSPC else (err.strerror or str(err))


def load(path: str | Path) -> SentenceEmbeddings | RaggedEmbeddings:
    """Read any bertlayers store (`.npy`, `.npz`, `.h5`, `.parquet`, `.safetensors`).

    Sentence level gives `SentenceEmbeddings`, token and word level `RaggedEmbeddings`; an
    incomplete or corrupt store is an error that says so.
    """
    source, index, provenance, _ = open_store(path)
    return make_result(source, index, provenance)


def load_attention(path: str | Path) -> list:
    """The attention maps a store of `bertlayers attention -o STORE` holds: one
    `AttentionMaps` per text, in input order (each text's rows read as it is built)."""
    from ..maps import maps_from_rows

    result = load(path)
    if result.provenance.get("level") != "attention":
        raise InputError(f"{path} holds embeddings, not attention maps")
    offsets = result.offsets
    return [
        maps_from_rows(
            result.ids[i],
            result.source.block(int(offsets[i]), int(offsets[i + 1])),
            result.items[int(offsets[i]) : int(offsets[i + 1])],
            result.spans[int(offsets[i]) : int(offsets[i + 1])],
            result.provenance,
            int(result.n_tokens[i]),
            bool(result.truncated[i]),
        )
        for i in range(len(result))
    ]


def disk_size(path: str | Path) -> int:
    """Bytes a store takes on disk, all its files counted."""
    path = Path(path)
    fmt = store_format(path)
    total = 0
    for part in _outputs(path, fmt) + _shards(path, fmt):
        if part.is_dir():
            total += sum(f.stat().st_size for f in part.rglob("*") if f.is_file())
        elif part.exists():
            total += part.stat().st_size
    return total


def describe(path: str | Path) -> dict:
    """What a store holds, for `bertlayers inspect`; an interrupted run's staging too."""
    path = Path(path)
    partial = path if path.name.endswith(".partial") else _partial_dir(path)
    complete_exists = path.exists() and not path.name.endswith(".partial")
    if not complete_exists and partial.is_dir():
        journal = json.loads((partial / "journal.json").read_text(encoding="utf-8"))
        identity = journal["identity"]
        note = _run_note(partial)
        size = sum(f.stat().st_size for f in partial.rglob("*") if f.is_file())
        return {
            "path": str(path),
            "format": "staging",
            "complete": False,
            "status": f"an interrupted run: {journal['records']} texts durable "
            "({opt:resume=True} finishes it)",
            "model": note.get("model") or identity.get("model"),
            "fingerprint": identity.get("fingerprint"),
            "started": note.get("started"),
            "level": identity.get("level"),
            "layers": identity.get("layers"),
            "pooling": identity.get("pooling"),
            "combine": identity.get("combine"),
            "shape": [journal["rows"], *(journal["row_shape"] or [])],
            "dtype": str(np.dtype(journal["dtype"])) if journal["dtype"] else None,
            "texts": journal["records"],
            "bytes": size,
        }
    source, _, provenance, fmt = open_store(path)
    report = {
        "path": str(path),
        "format": fmt.value,
        "complete": True,
        "status": "complete",
        "model": provenance["model"].get("name", provenance["model"]["id"]),
        "fingerprint": provenance["model"].get("fingerprint"),
        "level": provenance.get("level", "sentence"),
        "layers": provenance.get("layers"),
        "pooling": provenance.get("pooling", provenance.get("word_pooling", "-")),
        "combine": provenance.get("combine"),
        "shape": list(source.shape),
        "dtype": str(np.dtype(source.dtype)),
        "texts": provenance.get("num_texts"),
        "truncated": provenance.get("num_truncated"),
        "windowed": provenance.get("num_windowed"),
        "bytes": disk_size(path),
        "created": provenance.get("created"),
        "bertlayers_version": provenance.get("bertlayers_version"),
    }
    return report


__all__ = [
    "ArraySource",
    "StoreFormat",
    "StoreSink",
    "convert",
    "describe",
    "disk_size",
    "load",
    "open_store",
    "store_files",
    "store_format",
    "store_targets",
]
