"""The one check every path a command writes goes through: never replace what is not ours.

A path that exists is refused unless `overwrite` is given; with it, only a file of the kind
being written (recognised by its content: a `.npy` by its magic, a provenance by its keys) or a
store bertlayers wrote is replaced. A path that is one of the command's inputs (through
symlinks, hard links or `..`) is refused always, and first: `-o` onto the input says so, not
something about formats. Missing parent directories of every output are created, for every
command alike (`-o runs/today/emb.npy` makes `runs/today/`, as `probe -o DIR` always did):
the check only makes sure they can be (the nearest existing one is a writable directory, not
a file), and they are made when the output is written (`make_parents`), so a command that
fails first leaves none behind. Files are written to `NAME.tmp` and renamed into place
(`write_atomically`), so a failure never leaves half a file under the real name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .errors import OutputError

_JSON_LIMIT = 64 << 20  # larger JSON is not a sidecar or a result of ours


def _head(path: Path, size: int) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def _is_text(path: Path) -> bool:
    head = _head(path, 1 << 16)
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:  # a character cut at the end of the sample is fine
        return err.start >= len(head) - 3
    return True


def _json_object(path: Path) -> dict | None:
    try:
        if path.stat().st_size > _JSON_LIMIT:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _ours(data: dict | None) -> bool:
    """A JSON object that bertlayers wrote: it names the version that wrote it."""
    if data is None:
        return False
    if "bertlayers_version" in data:
        return True
    nested = [v for v in data.values() if isinstance(v, dict)]  # a safetensors index's metadata
    return any("bertlayers_version" in v or "bertlayers" in v for v in nested)


def _is_safetensors(path: Path) -> bool:
    head = _head(path, 9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") < path.stat().st_size


def _parquet_of_ours(path: Path) -> bool:
    """A Parquet file whose metadata holds a bertlayers provenance (a shard of a Ray run:
    its summary)."""
    if _head(path, 4) != b"PAR1":
        return False
    try:
        import pyarrow.parquet as pq

        metadata = pq.ParquetFile(path).metadata.metadata or {}
        return b"bertlayers" in metadata or b"bertlayers.shard" in metadata
    except Exception:  # not readable as Parquet (or no pyarrow): not ours to replace
        return False


# what a Ray run keeps beside its shards (see bertlayers.distributed)
RAY_SIDECARS = {"_bertlayers.json", "_manifest.json", "_texts_without_rows.json"}


def _is_parquet_shards(path: Path) -> bool:
    """A directory of Parquet shards written by bertlayers, and nothing else."""
    entries = [e for e in path.iterdir() if not (e.name in RAY_SIDECARS and e.is_file())]
    return all(e.is_file() and e.name.endswith(".parquet") and _parquet_of_ours(e) for e in entries)


class Kind(Enum):
    """What a written path holds, and how an existing one is recognised as that."""

    NPY = "a .npy array"
    NPZ = "an .npz archive"
    HDF5 = "an HDF5 file"
    PARQUET = "a Parquet file or directory of Parquet shards"
    SAFETENSORS = "a safetensors file"
    PROVENANCE = "a bertlayers JSON file"
    STAGING = "a bertlayers staging area"
    TEXT = "a text file"
    PNG = "a PNG image"
    SVG = "an SVG image"
    HTML = "an HTML page"
    JOBLIB = "a saved probe (joblib)"

    @property
    def directory(self) -> bool:
        """Whether this kind may be a directory (Parquet shards, a staging area)."""
        return self in (Kind.PARQUET, Kind.STAGING)


_RECOGNISE: dict[Kind, Callable[[Path], bool]] = {
    Kind.NPY: lambda p: _head(p, 6) == b"\x93NUMPY",
    Kind.NPZ: lambda p: _head(p, 4) in (b"PK\x03\x04", b"PK\x05\x06"),
    Kind.HDF5: lambda p: _head(p, 8) == b"\x89HDF\r\n\x1a\n",
    Kind.PARQUET: lambda p: _is_parquet_shards(p) if p.is_dir() else _parquet_of_ours(p),
    Kind.SAFETENSORS: _is_safetensors,
    Kind.PROVENANCE: lambda p: _ours(_json_object(p)),
    Kind.STAGING: lambda p: p.is_dir() and "identity" in (_json_object(p / "journal.json") or {}),
    Kind.TEXT: _is_text,
    Kind.PNG: lambda p: _head(p, 8) == b"\x89PNG\r\n\x1a\n",
    Kind.SVG: lambda p: b"<svg" in _head(p, 4096),
    Kind.HTML: lambda p: _head(p, 64).lstrip().lower().startswith((b"<!doctype html", b"<html")),
    Kind.JOBLIB: lambda p: _head(p, 1) == b"\x80",  # a pickle (protocol 2 or later)
}


@dataclass(frozen=True)
class Target:
    """A path a command is about to write, and what it will hold there.

    `make_parents`: missing parent directories are created (every command's outputs: the
    default); False refuses a missing parent, naming it."""

    path: Path
    kind: Kind
    make_parents: bool = True


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _check_parent(target: Target) -> None:
    """The parent exists and is writable, or (`make_parents`) the nearest existing ancestor
    is a directory it can be made in."""
    parent = target.path.parent
    if target.make_parents:
        while not os.path.lexists(parent) and parent != parent.parent:
            parent = parent.parent
    if os.path.lexists(parent) and not parent.is_dir():
        raise OutputError(f"cannot write {target.path}: {parent} is a file, not a directory")
    if not parent.is_dir():
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory is not writable: {parent}")


def make_parents(path: str | Path) -> None:
    """Create the missing parent directories of an output `path` (see the module docstring)."""
    parent = Path(path).parent
    if not parent.is_dir():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(
                f"cannot create the output directory {parent}: {err.strerror or err}"
            ) from None


def check_not_input(path: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is one of the inputs (the same file, through links or `..`)."""
    ident = _identity(Path(path))
    if ident is None:
        return
    for source in inputs:
        if source is not None and str(source) != "-" and _identity(Path(source)) == ident:
            raise OutputError(f"{path} is the input {source}: write the output to another path")


def check_outputs(
    targets: Iterable[Target], inputs: Iterable[str | Path] = (), overwrite: bool = False
) -> None:
    """Refuse, with one line naming the path, any target that would replace an input, any
    existing target without `overwrite`, and with it any that is not of the kind written."""
    sources = {}
    for source in inputs:
        if source is None or str(source) == "-":
            continue
        source = Path(source)
        ident = _identity(source)
        if ident is not None:
            sources[ident] = source
    resolved_sources = {Path(os.path.realpath(s)): s for s in sources.values()}
    for target in targets:
        path = target.path
        ident = _identity(path)
        if ident in sources:
            raise OutputError(
                f"{path} is the input {sources[ident]}: write the output to another path"
            )
        if path.is_dir():
            real = Path(os.path.realpath(path))
            for resolved, source in resolved_sources.items():
                if resolved.is_relative_to(real):
                    raise OutputError(
                        f"{path} holds the input {source}: write the output to another path"
                    )
        _check_parent(target)
        _check_temporary(target, sources)
        if not os.path.lexists(path):
            continue
        if not overwrite:
            raise OutputError(f"output exists: {path} (use {{opt:overwrite=True}} to replace it)")
        if path.is_dir() and not target.kind.directory:
            raise OutputError(
                f"{path} is a directory, not {target.kind.value}: it is never replaced"
            )
        if not _RECOGNISE[target.kind](path):
            what = "a directory" if path.is_dir() else "a file"
            raise OutputError(
                f"{path} is {what} that is not {target.kind.value} written by bertlayers: "
                "{opt:overwrite=True} never replaces it (choose another output)"
            )


def _check_temporary(target: Target, sources: dict) -> None:
    """`NAME.tmp`, where the writer puts the file first: only a leftover of ours (of the kind
    written, not a link, not an input) may be in the way; the writer replaces it."""
    tmp = target.path.with_name(target.path.name + ".tmp")
    if not os.path.lexists(tmp):
        return
    if tmp.is_symlink() or _identity(tmp) in sources or not _RECOGNISE[target.kind](tmp):
        raise OutputError(
            f"{tmp} is in the way: bertlayers writes {target.path.name} there first and "
            "renames it; move it elsewhere"
        )


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on `PATH.tmp`, then rename it over `path`; on failure remove it."""
    path = Path(path)
    make_parents(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """`Path.write_text`, atomically (see `write_atomically`)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
