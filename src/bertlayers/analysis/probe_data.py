"""What a classification probe learns from: vectors with one label per row, checked.

`sentence_data` (one pooled vector per labelled text) and `word_data` (one vector per tagged
word) join a store's vectors to the labelled records they were made from, refusing a store
of other texts, another level or combined layers; `check_labels` refuses, before any vector
is made, labels no probe can learn from. Numpy only: no scikit-learn, no model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, OptionError
from ..io.readers import Record
from ..results import RaggedEmbeddings, SentenceEmbeddings


@dataclass(eq=False)
class ProbeData:
    """Vectors `(rows, K, H)` with one label per row.

    A row is a text (sentence level) or a word (word level); `groups` names the text each row
    belongs to, and `items` is the text or word itself (for the bag-of-words baseline).
    """

    vectors: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    items: list[str]
    layers: list[int]
    level: str
    provenance: dict = field(repr=False)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.tolist()))


def _check_stacked(result: SentenceEmbeddings | RaggedEmbeddings, name: str) -> None:
    combine = result.provenance.get("combine", "stack")
    if combine != "stack":
        raise InputError(
            f"{name} holds layers combined by {combine}: a probe needs each layer "
            "(extract with {opt:combine=stack})"
        )


def check_ids(ids: list[str], records: list[Record], name: str, data_name: str) -> None:
    """A store must hold the labelled records' texts, in their order (by id)."""
    if len(ids) != len(records):
        raise InputError(
            f"{name} has {len(ids)} texts but {data_name} has {len(records)} labelled records: "
            "they must be the same texts in the same order"
        )
    for position, (stored, record) in enumerate(zip(ids, records, strict=True)):
        if stored != record.id:
            raise InputError(
                f"{name} and {data_name} disagree at text {position + 1}: id '{stored}' in the "
                f"store, '{record.id}' in the labels — they must be the same texts in order"
            )


def sentence_data(
    result: SentenceEmbeddings | RaggedEmbeddings,
    records: list[Record],
    name: str = "the vectors",
    data_name: str = "the data",
) -> ProbeData:
    """Probe data for text labels: one pooled vector per labelled record."""
    if not isinstance(result, SentenceEmbeddings):
        raise InputError(
            f"{name} is a {result.level}-level store; a text-label probe needs sentence-level "
            "vectors (extract with {opt:level=sentence})"
        )
    _check_stacked(result, name)
    check_ids(result.ids, records, name, data_name)
    labels = [r.label for r in records]
    if any(label is None for label in labels):
        raise InputError(f"{data_name} has no labels: name the column with {{opt:label_column}}")
    return ProbeData(
        vectors=np.asarray(result.embeddings, dtype=np.float32),
        labels=np.asarray(labels, dtype=object),
        groups=np.arange(len(records)),
        items=[r.text for r in records],
        layers=list(result.layers),
        level="sentence",
        provenance=result.provenance,
    )


def word_data(
    result: SentenceEmbeddings | RaggedEmbeddings,
    records: list[Record],
    name: str = "the vectors",
    data_name: str = "the data",
) -> ProbeData:
    """Probe data for word tags (POS, NER): one word vector per tagged word."""
    if not isinstance(result, RaggedEmbeddings) or result.level != "word":
        level = result.level
        raise InputError(
            f"{name} is a {level}-level store; a word-tag probe needs word-level vectors "
            "(extract with {opt:level=word})"
        )
    _check_stacked(result, name)
    check_ids(result.ids, records, name, data_name)
    lengths = np.diff(result.offsets)
    for record, n_words in zip(records, lengths, strict=True):
        if record.tags is None:
            raise InputError(f"{data_name} has no tags: a word-tag probe needs a CoNLL file")
        if len(record.tags) != n_words:
            raise InputError(
                f"{data_name}: the sequence at line {record.id} has {len(record.tags)} tags but "
                f"{name} has {n_words} words for it"
            )
    return ProbeData(
        vectors=np.asarray(result.vectors, dtype=np.float32),
        labels=np.asarray([t for r in records for t in r.tags], dtype=object),
        groups=np.repeat(np.arange(len(records)), lengths),
        items=list(result.items),
        layers=list(result.layers),
        level="word",
        provenance=result.provenance,
    )


def check_labels(
    labels: Sequence[str], groups: np.ndarray, level: str, folds: int | None, name: str
) -> None:
    """Fail early, before any vector is made, on labels no probe can learn from: none, a
    single class, or (with k-fold CV) too few examples per fold."""
    labels = np.asarray(labels, dtype=str)
    if len(labels) == 0:
        raise InputError(f"{name} has no labelled examples")
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        raise InputError(
            f"{name} has a single label ('{values[0]}'): a probe needs at least two classes"
        )
    if folds is None:
        return
    if folds < 2:
        raise OptionError(f"{{opt:folds}} must be at least 2, got {folds}")
    if level == "sentence" and counts.min() < folds:
        raise InputError(
            f"{name}: label '{values[counts.argmin()]}' has {counts.min()} example(s); "
            f"{folds}-fold cross-validation needs at least {folds} of each "
            "(fewer {opt:folds}, or more data)"
        )
    n_texts = len(np.unique(groups))
    if level == "word" and n_texts < folds:
        raise InputError(
            f"{name} has {n_texts} sentence(s): {folds}-fold cross-validation needs at least "
            f"{folds}, one per fold"
        )
