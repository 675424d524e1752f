"""Relevance judgements (qrels) for retrieval probes: TREC's whitespace lines or BEIR's TSV
with a header. Errors name the line."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError
from .readers import decoded_lines, open_input


@dataclass(frozen=True)
class Judgement:
    """One line of a qrels file: a document's graded relevance to a query (> 0 = relevant)."""

    query_id: str
    doc_id: str
    relevance: float
    line: int


def read_qrels(path: str) -> list[Judgement]:
    """Relevance judgements: TREC (`qid 0 docid rel` or `qid docid rel`, whitespace) or BEIR's
    TSV with a header (`query-id<TAB>corpus-id<TAB>score`). Errors name the line."""
    stream, name = open_input(path)
    judgements: list[Judgement] = []
    try:
        lines = decoded_lines(stream, name, keep_newline=False)
        columns: tuple[int, int, int] | None = None
        for number, line in lines:
            fields = line.split("\t") if "\t" in line else line.split()
            if not fields or not line.strip():
                continue
            if columns is None and not judgements and not _is_number(fields[-1]):
                columns = _qrels_header(fields, name, number)
                if columns is not None:
                    continue
            if columns is None:
                if len(fields) not in (3, 4):
                    raise InputError(
                        f"{name}: line {number}: expected 'query doc relevance' or TREC's "
                        f"'query 0 doc relevance', saw {len(fields)} fields"
                    )
                picked = (fields[0], fields[-2], fields[-1])
            else:
                if len(fields) <= max(columns):
                    raise InputError(
                        f"{name}: line {number}: expected {max(columns) + 1} fields, saw "
                        f"{len(fields)}"
                    )
                picked = tuple(fields[c] for c in columns)
            query_id, doc_id, relevance = (f.strip() for f in picked)
            if not _is_number(relevance) or not math.isfinite(float(relevance)):
                raise InputError(
                    f"{name}: line {number}: relevance '{relevance}' is not a finite number"
                )
            judgements.append(Judgement(query_id, doc_id, float(relevance), number))
    finally:
        stream.close()
    if not judgements:
        raise InputError(f"{name} holds no relevance judgements")
    return judgements


_QRELS_COLUMNS = (
    ("query-id", "query_id", "qid"),
    ("corpus-id", "corpus_id", "doc-id", "doc_id", "docid"),
    ("score", "relevance", "rel", "label"),
)


def _qrels_header(fields: list[str], name: str, number: int) -> tuple[int, int, int] | None:
    """The (query, document, relevance) columns of a qrels header; None when `fields` is not
    a header (no known column name: a data line, checked as such)."""
    header = [f.strip().lower() for f in fields]
    found = [
        next((header.index(n) for n in names if n in header), None) for names in _QRELS_COLUMNS
    ]
    if all(c is None for c in found):
        return None
    if any(c is None for c in found):
        raise InputError(
            f"{name}: line {number}: a qrels header needs query-id, corpus-id and score "
            f"columns, saw: {', '.join(fields)}"
        )
    return found[0], found[1], found[2]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
