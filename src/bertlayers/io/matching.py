"""Inputs of the similarity and retrieval probes: scored pairs, and queries with their
documents (one file with a document column, or a corpus with qrels). Errors name the file and
line."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, OptionError
from .qrels import Judgement, read_qrels
from .readers import InputFormat, Record, guess_format, read_records


def require_columns(path: str, input_format: str | None, what: str) -> None:
    """Matching reads named columns: plain text and CoNLL have none."""
    fmt = InputFormat.parse(input_format, "input format") if input_format else guess_format(path)
    if fmt in (InputFormat.TXT, InputFormat.CONLL):
        raise InputError(
            f"{path}: {what} reads columns: give a .csv/.tsv/.jsonl file (or {{opt:input_format}})"
        )


@dataclass(frozen=True)
class ScoredPairs:
    """Distinct texts (in order of first appearance), each pair's two indices into them, and
    the gold scores."""

    texts: list[str]
    left: np.ndarray  # (P,)
    right: np.ndarray  # (P,)
    gold: np.ndarray  # (P,)


def read_scored_pairs(
    path: str,
    pair_column: str | None,
    score_column: str = "score",
    text_column: str = "text",
    id_column: str | None = None,
    input_format: str | None = None,
    quoting: str = "csv",
) -> ScoredPairs:
    """Pairs of texts with a gold score each (STS-style), from a csv/tsv/jsonl file."""
    if not pair_column:
        raise OptionError(
            "{opt:task=similarity} needs {opt:pair_column}: the column with each pair's second text"
        )
    require_columns(path, input_format, "the similarity task")
    records = read_records(
        path,
        input_format=input_format,
        text_column=text_column,
        pair_column=pair_column,
        id_column=id_column,
        label_column=score_column,
        quoting=quoting,
    )
    index: dict[str, int] = {}
    left, right, gold = [], [], []
    for record in records:
        if record.pair is None:
            raise InputError(f"{path}: line {record.line}: no text in column '{pair_column}'")
        try:
            score = float(record.label)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise InputError(
                f"{path}: line {record.line}: score '{record.label}' in column "
                f"'{score_column}' is not a finite number"
            )
        left.append(index.setdefault(record.text, len(index)))
        right.append(index.setdefault(record.pair, len(index)))
        gold.append(score)
    return ScoredPairs(list(index), np.asarray(left), np.asarray(right), np.asarray(gold))


def text_records(texts: list[str]) -> list[Record]:
    """One record per distinct text, its id a digest of the text: a store kept for them then
    matches only the texts it was made from."""
    return [Record(hashlib.sha1(t.encode("utf-8")).hexdigest()[:16], t) for t in texts]


@dataclass(frozen=True)
class RetrievalData:
    """Queries (those with a relevant document), documents, each query's relevant documents
    (index -> grade), the number of queries read (None: one file), and per document the first
    of its identical copies (one file) or None."""

    queries: list[Record]
    documents: list[Record]
    relevant: list[dict[int, float]]
    n_queries: int | None
    groups: list[int] | None


def read_retrieval(
    path: str,
    text_column: str = "text",
    id_column: str | None = None,
    input_format: str | None = None,
    quoting: str = "csv",
    *,
    corpus: str | None = None,
    qrels: str | None = None,
    doc_column: str | None = None,
    doc_text_column: str = "text",
    doc_id_column: str | None = None,
) -> RetrievalData:
    """Queries from `path` with their documents: the column `doc_column` of the same file,
    or the documents of `corpus` judged relevant by `qrels`."""
    if corpus and doc_column:
        raise OptionError("give {opt:corpus} (with {opt:qrels}) or {opt:doc_column}, not both")
    if not corpus and not doc_column:
        raise OptionError(
            "{opt:task=retrieval} needs the documents: {opt:corpus} DOCS {opt:qrels} QRELS, "
            "or {opt:doc_column} naming each query's document in DATA"
        )
    if corpus and not qrels:
        raise OptionError(
            "{opt:corpus} needs {opt:qrels}: which documents are relevant to which query"
        )
    require_columns(path, input_format, "the retrieval task")
    read = {"input_format": input_format, "quoting": quoting}
    if doc_column:
        rows = list(
            read_records(
                path, text_column=text_column, pair_column=doc_column, id_column=id_column, **read
            )
        )
        for r in rows:
            if r.pair is None:
                raise InputError(f"{path}: line {r.line}: no text in column '{doc_column}'")
        queries = [Record(r.id, r.text) for r in rows]
        documents = [Record(r.id, r.pair) for r in rows]  # type: ignore[arg-type]
        # documents of identical text are one document: each query finds any of them
        twins: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            twins.setdefault(r.pair, []).append(i)  # type: ignore[arg-type]
        relevant = [dict.fromkeys(twins[r.pair], 1.0) for r in rows]  # type: ignore[index]
        groups = [twins[r.pair][0] for r in rows]  # type: ignore[index]
        return RetrievalData(queries, documents, relevant, None, groups)
    assert corpus is not None and qrels is not None
    queries = list(read_records(path, text_column=text_column, id_column=id_column, **read))
    require_columns(corpus, None, "the corpus")
    documents = list(
        read_records(
            corpus,
            text_column=doc_text_column,
            id_column=doc_id_column or id_column,
            quoting=quoting,
        )
    )
    relevant, evaluated = judged(queries, documents, read_qrels(qrels), (path, corpus, qrels))
    return RetrievalData([queries[i] for i in evaluated], documents, relevant, len(queries), None)


def judged(
    queries: list[Record],
    documents: list[Record],
    judgements: list[Judgement],
    names: tuple[str, str, str],
) -> tuple[list[dict[int, float]], list[int]]:
    """Each judged query's relevant documents (by index) and the judged queries' positions;
    unknown ids and a pair judged twice are errors. `names`: the queries', the corpus' and
    the qrels' files."""
    data, corpus, qrels = names
    query_at = _positions(queries, data, "query")
    doc_at = _positions(documents, corpus, "document")
    relevant: dict[int, dict[int, float]] = {}
    seen: dict[tuple[str, str], int] = {}
    for j in judgements:
        if (j.query_id, j.doc_id) in seen:
            raise InputError(
                f"{qrels}: line {j.line}: query '{j.query_id}' and document '{j.doc_id}' "
                f"were judged already at line {seen[j.query_id, j.doc_id]}"
            )
        seen[j.query_id, j.doc_id] = j.line
        if j.query_id not in query_at:
            raise InputError(f"{qrels}: line {j.line}: no query '{j.query_id}' in {data}")
        if j.doc_id not in doc_at:
            raise InputError(f"{qrels}: line {j.line}: no document '{j.doc_id}' in {corpus}")
        if j.relevance > 0:
            relevant.setdefault(query_at[j.query_id], {})[doc_at[j.doc_id]] = j.relevance
    evaluated = sorted(relevant)
    if not evaluated:
        raise InputError(f"{qrels} marks no document relevant (relevance > 0) to any query")
    return [relevant[i] for i in evaluated], evaluated


def _positions(records: list[Record], name: str, what: str) -> dict[str, int]:
    at: dict[str, int] = {}
    for i, record in enumerate(records):
        if record.id in at:
            raise InputError(
                f"{name}: {what} id '{record.id}' appears twice: qrels need unique ids "
                "(name the id column with {opt:id_column} / {opt:doc_id_column})"
            )
        at[record.id] = i
    return at
