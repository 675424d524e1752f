"""Awkward texts that embedding code gets wrong: the built-in input of `bertlayers verify`.

Each is `(name, text)`; the name says what it tests and shows in a report. Texts over a
model's limit are made per model (`long_text`), since the limit is the model's.
"""

from __future__ import annotations

from collections.abc import Callable

TEXTS: list[tuple[str, str]] = [
    ("empty", ""),
    ("one-token", "a"),
    ("one-word", "Hello"),
    ("spaces-only", "   "),
    ("zero-width-only", "\u200b"),
    ("zero-width", "zero\u200bwidth\u200cnon\u200djoiner\ufeffBOM\u2060word-joiner"),
    ("emoji", "I love it 😀👍🏽 👨\u200d👩\u200d👧\u200d👦 family 🇫🇷 flag"),
    ("line-separators", "first line\u2028second line\u2029next paragraph"),
    ("newlines", "a text\nover\r\nthree lines"),
    ("combining", "cafe\u0301 nai\u0308ve Z\u0324\u0354\u0367\u0311a\u0308\u0356\u032d lgo"),
    ("precomposed", "café naïve Ångström"),
    ("rtl-arabic", "مرحبا بالعالم، هذا اختبار"),
    ("rtl-hebrew", "שלום עולם זה מבחן"),
    ("bidi-override", "abc \u202egnitset lanoitcerid\u202c def \u200fmark\u200e"),
    ("cjk-chinese", "你好，世界。这是一个测试。"),
    ("cjk-japanese", "日本語のテキストです。カタカナもある"),
    ("korean", "안녕하세요 세계"),
    ("control-whitespace", "tab\there\x0bvertical\x0cform feed\x85next\xa0nbsp\u3000wide"),
    ("control-chars", "bell\x07 null\x00 escape\x1b[31m red\x1b[0m"),
    ("punctuation", "!!!???...,,,;;; --- (( )) [[ ]]"),
    ("mixed", "don't stop-believing: U.S.A. e-mail user@example.com https://ex.com/a?b=c&d=1"),
    ("numbers", "3.14159 1,000,000 42nd -7e-3 ½ ² ٣"),
    ("special-strings", "[CLS] [SEP] [PAD] [MASK] <s> </s> <pad> [UNK]"),
    ("long-word", "supercalifragilisticexpialidocious" * 4),
    ("repeated", "ab" * 40),
    ("math", "∑∫∂√∞≈≠≤≥ x² + y² = z²"),
    ("sentence", "The quick brown fox jumps over the lazy dog."),
]

# (name, text, pair): sentence pairs, segment A and B (the empty sides included)
PAIRS: list[tuple[str, str, str]] = [
    ("pair", "What is the capital of France?", "Paris is the capital of France."),
    ("pair-empty-first", "", "a second segment"),
    ("pair-empty-second", "a first segment", ""),
    ("pair-unicode", "😀 emoji 👍🏽", "你好，世界。"),
]

_PARAGRAPH = (
    "Layers of an encoder carry different information: the lower ones surface form, the "
    "middle ones syntax, the upper ones meaning. A long document (a report, a chapter, a "
    "transcript) goes over the limit of the model, so it is cut into windows or truncated. "
    "Émile's café served crème brûlée — 42 times, at 3.14 € each; ünïcödé 你好 😀. "
)


def long_text(count: Callable[[str], int], tokens: int) -> str:
    """A text of at least `tokens` tokens as `count` (a text's content tokens) counts them."""
    text = _PARAGRAPH
    while count(text) < tokens:
        text += _PARAGRAPH
    return text.strip()


def exact_text(count: Callable[[str], int], tokens: int) -> str | None:
    """A text of exactly `tokens` content tokens (a window's edge), or None where no prefix
    of the paragraph has that many."""
    words = long_text(count, tokens + 8).split(" ")
    low, high = 0, len(words)
    while low < high:  # the fewest words with at least `tokens` tokens
        middle = (low + high) // 2
        if count(" ".join(words[:middle])) < tokens:
            low = middle + 1
        else:
            high = middle
    text = " ".join(words[:low])
    return text if count(text) == tokens else None
