"""The text the tests run on when their point is a mechanism: files written for the tests and
shipped in `tests/data/` (see its README), and longer lists made from them deterministically.

Tests whose point is a particular data set (probe scores on real sentiment data, retrieval on
BBC articles) read the shared corpora instead, through the `shared_data` fixture (conftest).
"""

from __future__ import annotations

import csv
import functools
import json
import re
from pathlib import Path

DIR = Path(__file__).resolve().parent / "data"
REVIEWS = DIR / "reviews.tsv"  # label<TAB>text, a header row, RFC 4180 quotes
ARTICLES = DIR / "articles.jsonl"  # {"id", "label", "title", "text"} per line
TAGGED = DIR / "tagged.conll"  # word<TAB>Penn tag, a blank line between sentences


@functools.cache
def review_rows() -> tuple[dict[str, str], ...]:
    """The 320 reviews, in file order: `{"label": "positive" | "negative", "text": ...}`."""
    with REVIEWS.open(encoding="utf-8", newline="") as handle:
        return tuple(csv.DictReader(handle, delimiter="\t"))


def review_texts() -> list[str]:
    """The reviews' texts, 5 to 77 wordpieces long (median 19), both labels mixed."""
    return [row["text"] for row in review_rows()]


@functools.cache
def _articles() -> tuple[dict[str, str], ...]:
    with ARTICLES.open(encoding="utf-8") as handle:
        return tuple(json.loads(line) for line in handle)


def articles() -> list[dict[str, str]]:
    """17 news articles on five topics, ids `topic/NNN`; three are long (see `long_articles`),
    business/001 first (over 512 wordpieces), business/002 second (about 300)."""
    return [dict(a) for a in _articles()]


def long_articles(count: int = 3) -> list[str]:
    """The articles over 700 words (830 to 931 wordpieces of the bundled model): business/001,
    tech/001, sport/001."""
    texts = [a["text"] for a in _articles() if len(a["text"].split()) > 700]
    assert len(texts) >= count, f"tests/data holds {len(texts)} long articles, not {count}"
    return texts[:count]


@functools.cache
def article_sentences() -> tuple[str, ...]:
    """Every sentence of the articles, in order (split after . ! ? before a capital)."""
    sentences = []
    for article in _articles():
        sentences.extend(re.split(r"(?<=[.!?])\s+(?=[A-Z\"“])", article["text"]))
    return tuple(s for s in sentences if s)


def distinct_texts() -> list[str]:
    """Every distinct shipped sentence: the reviews, then the articles' sentences (478)."""
    return list(dict.fromkeys([*review_texts(), *article_sentences()]))


def many_texts(count: int) -> list[str]:
    """`count` distinct texts, the same on every run: the distinct sentences, then pairs of
    them (sentence i, then sentence i + r in round r), so that lengths keep varying."""
    base = distinct_texts()
    out = base[:count]
    k = len(out)
    while len(out) < count:
        i, r = k % len(base), k // len(base)
        out.append(f"{base[i]} {base[(i + r) % len(base)]}")
        k += 1
    return out


def tagged_sentences() -> list[list[tuple[str, str]]]:
    """The tagged file's sentences as (word, tag) lists."""
    blocks = TAGGED.read_text(encoding="utf-8").strip().split("\n\n")
    return [[tuple(line.split("\t")) for line in block.splitlines()] for block in blocks]


def training_lines() -> list[str]:
    """What the tiny BPE and Unigram tokenizers learn from: every shipped text, in one order."""
    titles = [a["title"] for a in _articles()]
    words = [" ".join(w for w, _ in sentence) for sentence in tagged_sentences()]
    return [*review_texts(), *titles, *article_sentences(), *words]
