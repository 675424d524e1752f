"""Readers turn files and lists into records, lazily; errors name the file and line.

Formats: `.txt` (one text per line), `.csv`, `.tsv`, `.jsonl` (with a text column and an
optional pair column, or a column holding a list of words), `.conll` (one `word<TAB>tag...` per
line, a blank line between sequences), and `-` for standard input (txt unless a format is given).
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, OptionError
from ..options import StrEnum
from .delimited import QUOTING_HINT, Quoting, delimited_rows


@dataclass(frozen=True)
class Record:
    """One input: its id (line number or id column), its text, an optional second text, and
    its words when the input comes pre-split (CoNLL, a JSON list); then `text` is the words
    joined by single spaces. Labelled inputs carry a `label` (per text) or `tags` (per word)."""

    id: str
    text: str
    pair: str | None = None
    words: tuple[str, ...] | None = None
    label: str | None = None  # a sentence label (--label-column), for probes
    tags: tuple[str, ...] | None = None  # one tag per word (CoNLL), for probes
    line: int | None = field(default=None, compare=False)  # where it starts (csv/tsv/jsonl)


class InputFormat(StrEnum):
    TXT = "txt"
    CSV = "csv"
    TSV = "tsv"
    JSONL = "jsonl"
    CONLL = "conll"
    PARQUET = "parquet"


_SUFFIXES = {
    ".txt": InputFormat.TXT,
    ".text": InputFormat.TXT,
    ".csv": InputFormat.CSV,
    ".tsv": InputFormat.TSV,
    ".tab": InputFormat.TSV,
    ".jsonl": InputFormat.JSONL,
    ".ndjson": InputFormat.JSONL,
    ".conll": InputFormat.CONLL,
    ".parquet": InputFormat.PARQUET,
}


def guess_format(path: str) -> InputFormat:
    """The input format named by the file's suffix (txt for stdin and unknown suffixes); a
    URL's query (`?region=...`) is not part of it."""
    if is_url(path):
        from urllib.parse import urlsplit

        path = urlsplit(path).path
    return _SUFFIXES.get(Path(path).suffix.lower(), InputFormat.TXT)


def records_from_words(words: Iterable[Sequence[str]]) -> Iterator[Record]:
    """Records from pre-split words (one list of words per record); ids are positions."""
    for index, items in enumerate(words):
        if isinstance(items, str) or not all(isinstance(w, str) for w in items):
            raise InputError(f"record {index}: words must be a list of strings")
        yield Record(str(index), " ".join(items), None, tuple(items))


def records_from_texts(
    texts: Iterable[str], pairs: Iterable[str] | None = None
) -> Iterator[Record]:
    """Records from Python strings; ids are positions (0, 1, ...)."""
    pair_iter = iter(pairs) if pairs is not None else None
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text {index} is {type(text).__name__}, not a string")
        pair = None
        if pair_iter is not None:
            try:
                pair = next(pair_iter)
            except StopIteration:
                raise InputError(f"fewer pairs than texts: no pair for text {index}") from None
            if not isinstance(pair, str):
                raise InputError(f"pair {index} is {type(pair).__name__}, not a string")
        yield Record(str(index), text, pair)
    if pair_iter is not None and next(pair_iter, None) is not None:
        raise InputError("more pairs than texts")


def as_records(texts: object, pairs: Sequence[str] | None = None) -> list[Record]:
    """Texts as `Extractor` and `Client` methods take them, as records: a list of `Record`s as
    given, else `records_from_texts(texts, pairs)`; one string is refused (its characters would
    be embedded one by one)."""
    if isinstance(texts, str):
        raise OptionError("texts must be a list of strings, not one string")
    items = list(texts)  # type: ignore[call-overload]
    if items and all(isinstance(r, Record) for r in items):
        return items
    return list(records_from_texts(items, pairs))


def decoded_lines(
    stream: io.BufferedIOBase, name: str, keep_newline: bool = False, start: int = 1
) -> Iterator[tuple[int, str]]:
    """(line number, line), failing on invalid UTF-8 with the line number.

    Newlines are kept for csv/tsv (quoted fields may span lines), stripped otherwise. Lines
    before `start` are skipped undecoded (but the first, a csv/tsv header, when kept), for a
    reader that resumes at a record whose line it knows.
    """
    for number, raw in enumerate(stream, start=1):
        if number < start and not (number == 1 and keep_newline):
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(
                f"{name}: line {number} is not valid UTF-8 (byte {err.start + 1}: {err.reason})"
            ) from None
        if "\0" in line:  # no text holds NUL: a binary file, or UTF-16 read as UTF-8
            raise InputError(
                f"{name}: line {number} holds a NUL byte (byte {raw.index(0) + 1}): "
                "a binary file, or text that is not UTF-8 (UTF-16?)"
            )
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not keep_newline and line.endswith("\n"):
            line = line[:-2] if line.endswith("\r\n") else line[:-1]
        yield number, line


def is_url(path: str) -> bool:
    """Whether an input names a file through a URL (s3://, gs://, hdfs://, file://)."""
    return "://" in path


class _NativeRaw(io.RawIOBase):
    """A pyarrow input stream as a raw stream, so that it can be buffered and read by lines."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


def open_url(path: str):
    """A URL's filesystem and path in it, through pyarrow (local, S3, GCS, HDFS, ...)."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError and others
        raise InputError(f"cannot open {path}: {err}") from None


def open_input(path: str) -> tuple[io.BufferedIOBase, str]:
    """The input as a binary stream, and the name errors give it: `-` is standard input, a URL
    is opened through pyarrow's filesystems, a missing file or a directory is an `InputError`."""
    if path == "-":
        return sys.stdin.buffer, "<stdin>"
    if is_url(path):
        filesystem, inner = open_url(path)
        try:
            return io.BufferedReader(_NativeRaw(filesystem.open_input_stream(inner))), path
        except (OSError, FileNotFoundError) as err:
            raise InputError(f"cannot read {path}: {err}") from None
    file = Path(path)
    if not file.exists():
        raise InputError(f"input file not found: {path}")
    if file.is_dir():
        raise InputError(f"input is a directory, not a file: {path}")
    try:
        return file.open("rb"), path
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from None


def _read_txt(lines: Iterator[tuple[int, str]]) -> Iterator[Record]:
    for number, line in lines:
        yield Record(str(number), line, line=number)


def _column(row: dict, column: str | None, name: str, where: str) -> str | None:
    if column is None:
        return None
    value = row.get(column)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{name}: {where}: column '{column}' is {type(value).__name__}, not text")
    return value


def _check_columns(available: list[str], wanted: list[str | None], name: str) -> None:
    for column in wanted:
        if column is not None and column not in available:
            raise InputError(
                f"{name}: no column '{column}'; columns are: {', '.join(available) or '(none)'}"
            )


def _read_delimited(
    lines: Iterator[tuple[int, str]],
    name: str,
    delimiter: str,
    text_column: str,
    pair_column: str | None,
    id_column: str | None,
    label_column: str | None = None,
    quoting: Quoting | str = Quoting.CSV,
) -> Iterator[Record]:
    quoting = Quoting.parse(quoting, "quoting")
    hint = QUOTING_HINT if quoting is Quoting.CSV else ""
    rows = delimited_rows(lines, name, delimiter, quoting)
    first = next(rows, None)
    if first is None:
        raise InputError(f"{name} is empty: no header row")
    header_line, header = first
    seen: set[str] = set()
    for column in header:
        if column in seen:
            raise InputError(
                f"{name}: line {header_line}: column '{column}' appears twice in the header"
            )
        seen.add(column)
    _check_columns(header, [text_column, pair_column, id_column, label_column], name)
    width = len(header)
    for start, fields in rows:  # a record's line is the one where it starts
        if len(fields) != width:
            raise InputError(
                f"{name}: line {start}: expected {width} field{'s' if width != 1 else ''}"
                f" (the header's), saw {len(fields)}{hint}"
            )
        row = dict(zip(header, fields, strict=True))
        where = f"line {start}"
        text = row.get(text_column)
        if text is None:
            raise InputError(f"{name}: {where}: missing value for column '{text_column}'")
        pair = row.get(pair_column) if pair_column else None
        if pair_column and pair is None:
            raise InputError(f"{name}: {where}: missing value for column '{pair_column}'")
        record_id = row.get(id_column) if id_column else None
        label = _label(row.get(label_column), label_column, name, where)
        record_id = record_id if record_id is not None else str(start)
        yield Record(record_id, text, pair, label=label, line=start)


def _label(value: object, column: str | None, name: str, where: str) -> str | None:
    """A label as text; a labelled input with a record lacking its label is an error."""
    if column is None:
        return None
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{name}: {where}: no label in column '{column}'")
    if isinstance(value, dict | list):
        raise InputError(f"{name}: {where}: the label in column '{column}' is not a single value")
    return str(value).strip()


def _read_conll(
    lines: Iterator[tuple[int, str]], name: str, word_column: int, tag_column: int | None = None
) -> Iterator[Record]:
    """Sequences of words: column `word_column` of each line, a blank line after each sequence.

    Columns are tab-separated (whitespace-separated when a line has no tab); `-DOCSTART-` lines
    of CoNLL-2003 are document markers, not words, and are skipped. With `tag_column` (-1 for
    the last column) each word's tag is read too.
    """
    words: list[str] = []
    tags: list[str] = []
    first_line = 0

    def record() -> Record:
        return Record(
            str(first_line),
            " ".join(words),
            None,
            tuple(words),
            tags=tuple(tags) if tag_column is not None else None,
        )

    for number, line in lines:
        if not line.strip():
            if words:
                yield record()
                words, tags = [], []
            continue
        columns = line.split("\t") if "\t" in line else line.split()
        if columns[0].startswith("-DOCSTART-"):
            continue
        if len(columns) <= word_column:
            raise InputError(
                f"{name}: line {number} has {len(columns)} column(s), no word column {word_column}"
            )
        if tag_column is not None:
            tag_at = tag_column if tag_column >= 0 else len(columns) + tag_column
            if tag_at == word_column or not 0 <= tag_at < len(columns):
                raise InputError(
                    f"{name}: line {number} has {len(columns)} column(s), no tag beside the word"
                )
            tags.append(columns[tag_at])
        if not words:
            first_line = number
        words.append(columns[word_column])
    if words:
        yield record()


def _read_jsonl(
    lines: Iterator[tuple[int, str]],
    name: str,
    text_column: str,
    pair_column: str | None,
    id_column: str | None,
    words_column: str | None = None,
    label_column: str | None = None,
) -> Iterator[Record]:
    for number, line in lines:
        if not line.strip():
            continue  # blank lines separate nothing in JSON lines; skipping them loses no record
        where = f"line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{name}: {where} is not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{name}: {where} is a JSON {type(row).__name__}, not an object")
        record_id = row.get(id_column) if id_column else None
        record_id = str(record_id) if record_id is not None else str(number)
        label = _label(row.get(label_column), label_column, name, where) if label_column else None
        if words_column is not None:
            _check_columns(list(row), [words_column, id_column], f"{name}: {where}")
            words = row[words_column]
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise InputError(
                    f"{name}: {where}: column '{words_column}' must be a list of strings"
                )
            yield Record(record_id, " ".join(words), None, tuple(words), label=label)
            continue
        _check_columns(list(row), [text_column, pair_column, id_column], f"{name}: {where}")
        text = _column(row, text_column, name, where)
        pair = _column(row, pair_column, name, where)
        yield Record(record_id, text, pair, label=label, line=number)


def read_records(
    path: str,
    input_format: InputFormat | str | None = None,
    text_column: str = "text",
    pair_column: str | None = None,
    id_column: str | None = None,
    words_column: str | None = None,
    word_column: int = 0,
    label_column: str | None = None,
    tag_column: int | None = None,
    quoting: str = "csv",
    start_line: int = 1,
) -> Iterator[Record]:
    """Records from a file (or `-` for stdin), lazily; an empty input is an error.

    `start_line` begins at the record that starts on that line (a Parquet file: that row),
    skipping what comes before without parsing it (a Ray shard reads its own records).

    `words_column` (jsonl) names a column holding a list of words; `word_column` is the column
    index of the word in a CoNLL file. `label_column` (csv/tsv/jsonl) reads a label per text and
    `tag_column` (conll; -1 = last) a tag per word; a record without one is an error.
    `quoting` (csv/tsv; ignored otherwise) is `csv` (RFC 4180, strictly: a malformed quote or
    a row whose field count differs from the header's is an error naming the line) or `none`
    (quotes are plain characters; each line is one record).
    """
    fmt = InputFormat.parse(input_format, "input format") if input_format else guess_format(path)
    quoting_mode = Quoting.parse(quoting, "quoting")
    if fmt is InputFormat.PARQUET:
        yield from _read_parquet(
            path, text_column, pair_column, id_column, label_column, start_line
        )
        return
    stream, name = open_input(path)
    try:
        delimited = fmt in (InputFormat.CSV, InputFormat.TSV)
        lines = decoded_lines(stream, name, keep_newline=delimited, start=start_line)
        if fmt is InputFormat.TXT:
            records = _read_txt(lines)
        elif fmt is InputFormat.JSONL:
            records = _read_jsonl(
                lines, name, text_column, pair_column, id_column, words_column, label_column
            )
        elif fmt is InputFormat.CONLL:
            records = _read_conll(lines, name, word_column, tag_column)
        else:
            delimiter = "\t" if fmt is InputFormat.TSV else ","
            records = _read_delimited(
                lines,
                name,
                delimiter,
                text_column,
                pair_column,
                id_column,
                label_column,
                quoting_mode,
            )
        empty = True
        for record in records:
            empty = False
            yield record
        if empty and start_line == 1:
            raise InputError(f"{name} is empty: no texts to embed")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _read_parquet(
    path: str,
    text_column: str,
    pair_column: str | None,
    id_column: str | None,
    label_column: str | None,
    start_row: int = 1,
) -> Iterator[Record]:
    """Records from a Parquet file, a row group at a time; ids default to row numbers from 1.
    Reading starts in the row group that holds `start_row`."""
    from ..extras import require

    require("pyarrow", "parquet", "Parquet input")
    import pyarrow.parquet as pq

    try:
        if is_url(path):
            filesystem, inner = open_url(path)
            handle = pq.ParquetFile(filesystem.open_input_file(inner))
        else:
            if not Path(path).is_file():
                raise InputError(f"input file not found: {path}")
            handle = pq.ParquetFile(path)
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"cannot read {path} as Parquet: {err}") from None
    wanted = [text_column, pair_column, id_column, label_column]
    _check_columns(handle.schema_arrow.names, wanted, path)
    columns = list(dict.fromkeys(c for c in wanted if c))
    groups, number = list(range(handle.num_row_groups)), 0
    while groups and number + handle.metadata.row_group(groups[0]).num_rows < start_row:
        number += handle.metadata.row_group(groups.pop(0)).num_rows
    for batch in handle.iter_batches(columns=columns, row_groups=groups):
        values = {c: batch.column(c).to_pylist() for c in columns}
        for i in range(batch.num_rows):
            number += 1
            if number < start_row:
                continue
            where = f"row {number}"
            text = values[text_column][i]
            if not isinstance(text, str):
                kind = "missing" if text is None else type(text).__name__
                raise InputError(f"{path}: {where}: column '{text_column}' is {kind}, not text")
            pair = values[pair_column][i] if pair_column else None
            if pair_column and not isinstance(pair, str):
                raise InputError(f"{path}: {where}: column '{pair_column}' is not text")
            record_id = values[id_column][i] if id_column else None
            label = (
                _label(values[label_column][i], label_column, path, where) if label_column else None
            )
            record_id = str(record_id) if record_id is not None else str(number)
            yield Record(record_id, text, pair, label=label, line=number)
    if number == 0 and start_row == 1:
        raise InputError(f"{path} is empty: no texts to embed")


@dataclass(frozen=True)
class ReaderOptions:
    """How every input file is read (the `read_records` options)."""

    input_format: str | None = None
    text_column: str = "text"
    pair_column: str | None = None
    id_column: str | None = None
    words_column: str | None = None
    word_column: int = 0  # CoNLL (local runs only)
    quoting: str = "csv"

    def records(self, path: str, start_line: int = 1) -> Iterator[Record]:
        return read_records(path, **dataclasses.asdict(self), start_line=start_line)
