"""The shard plan of a Ray run: input files x record ranges, each with a content digest.

The driver reads every input once before the cluster does any work: that counts the records,
fails early on a bad one (naming the file and line, as the local CLI does) and fixes the
shards. A shard is `(file, start, stop)` in records, numbered in input order, so its output
name (`part-000042.parquet`) and its rows' `text_index` depend on the input only, never on
Ray's block numbering. The plan and the run's request are kept in `_manifest.json`; a resumed
run plans again and must find the same shards, digests and request.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError
from ..io.readers import (
    InputFormat,
    ReaderOptions,
    Record,
    guess_format,
    is_url,
    open_url,
)
from ..stores.staging import input_digest

MANIFEST = "_manifest.json"
PROVENANCE = "_bertlayers.json"  # the store's provenance (Parquet readers skip `_` files)
MAX_SHARDS = 999_999  # shard names have six digits, so that they sort in input order
READABLE = {".txt", ".text", ".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".parquet"}


@dataclass(frozen=True)
class Shard:
    """Records `start:stop` of one input file; `first` is the text index of its first record."""

    number: int
    path: str
    start: int
    stop: int
    first: int
    digest: str
    id_prefix: str = ""  # several input files and no id column: ids are FILE:LINE
    line: int = 1  # where its first record starts in the file (a Parquet file: its row)

    @property
    def name(self) -> str:
        return shard_name(self.number)


def shard_name(number: int) -> str:
    """The deterministic file name of a shard's output (sorts in shard order)."""
    return f"part-{number:06d}.parquet"


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files named by the inputs: a file, a directory (its readable files, sorted), or a glob;
    local paths or URLs. An input that names nothing is an error."""
    files: list[str] = []
    for item in inputs:
        found = _url_files(item) if is_url(item) else _local_files(item)
        if not found:
            raise InputError(f"no input files found at {item}")
        files.extend(found)
    return files


def _local_files(item: str) -> list[str]:
    if any(ch in item for ch in "*?["):
        return sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
    path = Path(item)
    if path.is_dir():
        return sorted(
            str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in READABLE
        )
    if not path.exists():
        raise InputError(f"input file not found: {item}")
    return [item]


def _url_files(item: str) -> list[str]:
    from pyarrow import fs

    filesystem, inner = open_url(item)
    # what comes before the filesystem's path: s3://, or hdfs://host:port
    base = item[: len(item) - len(inner)] if item.endswith(inner) else item.split("://")[0] + "://"
    info = filesystem.get_file_info(inner)
    if info.type == fs.FileType.File:
        return [item]
    if info.type != fs.FileType.Directory:
        raise InputError(f"input not found: {item}")
    selector = fs.FileSelector(inner, recursive=True)
    names = sorted(
        f.path
        for f in filesystem.get_file_info(selector)
        if f.type == fs.FileType.File and Path(f.path).suffix.lower() in READABLE
    )
    return [base + name for name in names]


def id_prefixes(files: list[str], reader: ReaderOptions) -> list[str]:
    """What each file's record ids start with: nothing for one file or an id column, else
    the file's path below the inputs' common folder and a colon (`part-1.txt:17`), so that
    line numbers from several files stay apart."""
    if len(files) < 2 or reader.id_column is not None:
        return [""] * len(files)
    common = os.path.commonpath([f.split("://", 1)[-1] for f in files])
    return [os.path.relpath(f.split("://", 1)[-1], common) + ":" for f in files]


def prefixed(records: Iterator[Record], prefix: str) -> Iterator[Record]:
    """The records with `prefix` before each id (see `id_prefixes`); as they are without one."""
    for record in records:
        yield dataclasses.replace(record, id=prefix + record.id) if prefix else record


def plan_shards(files: list[str], reader: ReaderOptions, shard_size: int) -> list[Shard]:
    """Read every file once: count its records and digest each run of `shard_size` of them."""
    shards: list[Shard] = []
    first = 0
    for path, prefix in zip(files, id_prefixes(files, reader), strict=True):
        if reader.input_format is None and guess_format(path) is InputFormat.CONLL:
            raise InputError(f"{path}: CoNLL input runs locally only (not on Ray)")
        digest, start, count, line = "", 0, 0, 1
        for record in prefixed(reader.records(path), prefix):
            if count == start:
                line = record.line or 1
            digest = record_digest(digest, record)
            count += 1
            if count - start == shard_size:
                shards.append(
                    Shard(len(shards), path, start, count, first + start, digest, prefix, line)
                )
                digest, start = "", count
        if count > start:
            shards.append(
                Shard(len(shards), path, start, count, first + start, digest, prefix, line)
            )
        first += count
    if len(shards) > MAX_SHARDS:
        raise InputError(
            f"the input makes {len(shards):,} shards, over {MAX_SHARDS:,}: use a larger "
            "{opt:shard_size}"
        )
    return shards


def record_digest(previous: str, record: Record) -> str:
    """Chain one record into a shard's digest (id, text, pair and words)."""
    text = record.text if record.pair is None else f"{record.text}\x01{record.pair}"
    if record.words is not None:
        text += "\x02" + "\x1f".join(record.words)
    return input_digest(previous, text, record.id)


def write_manifest(directory: Path, request: dict, shards: list[Shard]) -> None:
    """Write the plan and the request durably (temporary file, fsync, rename)."""
    body = {"request": request, "shards": [asdict(s) for s in shards]}
    tmp = directory / (MANIFEST + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(body, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / MANIFEST)


def read_manifest(directory: Path) -> tuple[dict, list[Shard]]:
    """The request and shards `write_manifest` wrote in `directory`, for a resumed run; one
    unreadable is an `InputError`."""
    path = directory / MANIFEST
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return body["request"], [Shard(**s) for s in body["shards"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"cannot resume: {path} is unreadable ({err})") from None


def plan_differences(
    old_request: dict, old: list[Shard], request: dict, new: list[Shard]
) -> list[str]:
    """What differs between an interrupted run and this one, in words (`config.layers was
    'all', now [0]`)."""
    out = []
    for key in sorted(set(old_request) | set(request)):
        was, now = old_request.get(key), request.get(key)
        if was == now:
            continue
        if isinstance(was, dict) and isinstance(now, dict):
            out += [
                f"{key}.{k} was {was.get(k)!r}, now {now.get(k)!r}"
                for k in sorted(set(was) | set(now))
                if was.get(k) != now.get(k)
            ]
        else:
            out.append(f"{key} was {was!r}, now {now!r}")
    if out:
        return out
    if len(old) != len(new):
        return [f"the input now plans {len(new)} shards, the interrupted run had {len(old)}"]
    for a, b in zip(old, new, strict=True):
        if (a.path, a.start, a.stop) != (b.path, b.start, b.stop):
            return [
                f"shard {a.number} was {a.path} records {a.start}:{a.stop}, now "
                f"{b.path} records {b.start}:{b.stop}"
            ]
        if a.digest != b.digest:
            return [f"the input differs in shard {a.number} ({a.path} records {a.start}:{a.stop})"]
    return []
