"""Scores for probes: accuracy, macro-F1, and entity-level F1 for BIO tags (as conlleval)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_BIO = re.compile(r"^[BI]-.+$")


def is_bio(labels: Sequence[str]) -> bool:
    """Whether the tags are BIO (IOB1/IOB2) entity tags: `O`, `B-TYPE`, `I-TYPE` only."""
    values = set(labels)
    return any(_BIO.match(v) for v in values) and all(v == "O" or _BIO.match(v) for v in values)


def entities(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """The entity spans `(start, end, type)` of one sentence's BIO tags.

    As conlleval: an `I-` after `O` or after another type starts an entity (IOB1), and an
    entity ends at `O`, at `B-` and where the type changes.
    """
    spans: set[tuple[int, int, str]] = set()
    start, kind = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, tag_type = tag.partition("-")
        begins = prefix == "B" or (prefix == "I" and tag_type != kind)
        if start >= 0 and (prefix == "O" or begins):
            spans.add((start, i, kind))
            start, kind = -1, ""
        if begins:
            start, kind = i, tag_type
    return spans


def entity_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Micro F1 over exact entity spans, summed over sentences (conlleval's FB1)."""
    true_positive = n_gold = n_predicted = 0
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_spans, predicted_spans = entities(gold_tags), entities(predicted_tags)
        true_positive += len(gold_spans & predicted_spans)
        n_gold += len(gold_spans)
        n_predicted += len(predicted_spans)
    if true_positive == 0:
        return 0.0
    precision, recall = true_positive / n_predicted, true_positive / n_gold
    return 2 * precision * recall / (precision + recall)


def score(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray | None = None, bio: bool = False
) -> dict[str, float]:
    """Accuracy and macro-F1 (over the classes in gold or prediction); entity F1 with `bio`,
    where `groups` (sorted, one per row) says which rows form a sentence."""
    from sklearn.metrics import accuracy_score, f1_score

    result = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }
    if bio:
        assert groups is not None, "entity F1 needs the sentence of each row"
        cuts = np.flatnonzero(np.diff(groups)) + 1
        gold = [list(part) for part in np.split(np.asarray(y_true), cuts)]
        predicted = [list(part) for part in np.split(np.asarray(y_pred), cuts)]
        result["entity_f1"] = entity_f1(gold, predicted)
    return result
