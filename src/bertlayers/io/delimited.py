"""CSV and TSV records, read strictly: RFC 4180 quotes (a quoted field may hold delimiters
and newlines), or quotes as plain characters (`Quoting.NONE`, one record per line, as GLUE's
TSV readers do). Errors name the line where a record starts or a quote opened."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import InputError
from ..options import StrEnum


class Quoting(StrEnum):
    """How csv/tsv quotes are read: `csv` is RFC 4180, strictly (a field that starts with `"`
    is quoted, `""` inside it is a quote); `none` reads quotes as plain characters, one record
    per line (as GLUE's TSV readers and `cut` do)."""

    CSV = "csv"
    NONE = "none"


_QUOTE = '"'


QUOTING_HINT = " (if the file's quotes are plain characters, read it with {opt:quoting=none})"


def _carriage_return(name: str, number: int) -> InputError:
    return InputError(
        f"{name}: line {number}: a carriage return (\\r) inside an unquoted field; "
        "lines must end with \\n or \\r\\n"
    )


def _quoted_record(
    number: int, line: str, lines: Iterator[tuple[int, str]], name: str, delimiter: str
) -> list[str]:
    """The fields of the record starting at `line` (which holds a quote), RFC 4180 strictly.

    A quoted field may hold the delimiter and newlines (then the next lines are read from
    `lines`); a quote inside an unquoted field is a plain character. An unclosed quote and
    text after a closing quote are errors; the line end (\\n or \\r\\n) is not part of a field.
    """
    fields: list[str] = []
    text, pos = line, 0
    end = len(text.rstrip("\r\n"))
    while True:
        if text.startswith(_QUOTE, pos):
            opened = number
            parts: list[str] = []
            pos += 1
            while True:
                close = text.find(_QUOTE, pos)
                if close < 0:  # the field goes on on the next line
                    parts.append(text[pos:])
                    try:
                        number, text = next(lines)
                    except StopIteration:
                        raise InputError(
                            f"{name}: line {opened}: a quote opened here is never closed"
                            + QUOTING_HINT
                        ) from None
                    pos = 0
                    continue
                parts.append(text[pos:close])
                pos = close + 1
                if not text.startswith(_QUOTE, pos):
                    break
                parts.append(_QUOTE)  # "" is a literal quote
                pos += 1
            fields.append("".join(parts))
            end = len(text.rstrip("\r\n"))
            if pos >= end:
                return fields
            if text[pos] != delimiter:
                since = f" (in a quoted field opened on line {opened})" if opened != number else ""
                raise InputError(
                    f"{name}: line {number}: text after a closing quote{since}" + QUOTING_HINT
                )
            pos += 1
        else:
            stop = text.find(delimiter, pos, end)
            field = text[pos : end if stop < 0 else stop]
            if "\r" in field:
                raise _carriage_return(name, number)
            fields.append(field)
            if stop < 0:
                return fields
            pos = stop + 1


def delimited_rows(
    lines: Iterator[tuple[int, str]], name: str, delimiter: str, quoting: Quoting
) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each record of a csv/tsv file, the header first; blank lines
    between records are skipped. Lines without a quote (or every line, with `Quoting.NONE`)
    are split on the delimiter directly; the others go through the strict RFC 4180 parser."""
    quoted = quoting is Quoting.CSV
    for number, line in lines:
        if quoted and _QUOTE in line:
            yield number, _quoted_record(number, line, lines, name, delimiter)
            continue
        body = line.rstrip("\r\n")
        if not body:
            continue
        if "\r" in body:
            raise _carriage_return(name, number)
        yield number, body.split(delimiter)
