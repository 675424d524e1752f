"""A model's fast tokenizer as transformers builds it, run without importing transformers.

What bertlayers calls of transformers' fast tokenizer is thin Python around a
`tokenizers.Tokenizer` that transformers builds from the model's files (since transformers 5
from the tokenizer class's own code, not only from tokenizer.json). `TokenizerState` keeps
that backend (its JSON) and the attributes bertlayers reads; `CachedTokenizer` runs it with
the `tokenizers` library alone, doing for the arguments bertlayers passes what transformers'
`__call__` does (one text or a batch, pairs, pre-split words, `longest_first` truncation,
special-tokens masks, offsets, segments, word and sequence ids). Any other argument or
attribute goes to transformers' own tokenizer, loaded then. `same_as` checks a state against
the tokenizer it came from on probe inputs before it is cached (see `modelcache.py`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

# arguments run here; any other goes to transformers' tokenizer
_HANDLED = {
    "add_special_tokens",
    "truncation",
    "max_length",
    "is_split_into_words",
    "return_token_type_ids",
    "return_attention_mask",
    "return_special_tokens_mask",
    "return_offsets_mapping",
    "verbose",
    "padding",
    "return_tensors",
}
# attributes a state keeps (besides the backends and the class name)
ATTRIBUTES = (
    "model_max_length", "model_input_names", "truncation_side", "split_special_tokens",
    "add_prefix_space", "pad_token", "pad_token_id", "pad_token_type_id", "unk_token",
    "unk_token_id", "cls_token", "cls_token_id", "sep_token", "sep_token_id", "mask_token",
    "mask_token_id", "bos_token_id", "eos_token_id", "vocab_files_names",
)  # fmt: skip
PROBE_TEXTS = [
    "Hello, world! It's a test.",
    "  Leading and   inner  spaces\tand a tab\n",
    "Naïve café — ümlaut, Ελληνικά, 日本語のテキスト, emoji 😀👍🏽, zero\u200bwidth",
    "[CLS] literal [SEP] <s> </s> <mask> [MASK] specials",
    "",
    "x",
    "Numbers 3.14159, 2024-01-01 and e-mail someone@example.com http://x.org/a?b=c",
]
PROBE_WORDS = [["Hello", "world", "!"], ["café", "", "😀", "two words"], ["x"]]


class Encoded(dict):
    """What a call returns: `input_ids` and the rest as transformers names them, with the
    per-text `word_ids(i)` and `sequence_ids(i)` of transformers' `BatchEncoding`."""

    def __init__(self, data: dict, encodings: list) -> None:
        super().__init__(data)
        self.encodings = encodings

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self.encodings[batch_index].word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        return self.encodings[batch_index].sequence_ids

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self.encodings[batch_index].tokens


class CachedTokenizer:
    """A fast tokenizer from a saved state (see the module docstring). `load_transformers`
    loads transformers' own tokenizer of the model, for what is not run here."""

    is_fast = True

    def __init__(
        self,
        state: dict,
        load_transformers: Callable[[], Any],
        words: bool = False,
    ) -> None:
        from tokenizers import Tokenizer

        self._state = state
        self._words = words
        self._load_transformers = load_transformers
        self._transformers = None
        self._lock = threading.Lock()
        backend = state["words_backend"] if words and state.get("words_backend") else None
        self.backend_tokenizer = Tokenizer.from_str(backend or state["backend"])
        self.backend_tokenizer.no_truncation()
        self.backend_tokenizer.no_padding()
        for name in ATTRIBUTES:
            if name in state:
                setattr(self, name, state[name])
        if words:
            self.add_prefix_space = True
        self.class_name = state["class"]  # transformers' class, as provenance records it

    def words_variant(self) -> CachedTokenizer:
        """The tokenizer for pre-split words (transformers' with `add_prefix_space=True`)."""
        if getattr(self, "add_prefix_space", True) or self._words:
            return self
        return CachedTokenizer(self._state, self._load_transformers, words=True)

    @property
    def transformers_tokenizer(self):
        """transformers' own tokenizer of the model (loaded on first use)."""
        if self._transformers is None:
            with self._lock:
                if self._transformers is None:
                    self._transformers = self._load_transformers(self._words)
        return self._transformers

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.transformers_tokenizer, name)

    def __len__(self) -> int:
        return len(self.transformers_tokenizer)

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if skip_special_tokens:
            return self.transformers_tokenizer.convert_ids_to_tokens(ids, True)
        if isinstance(ids, int):
            return self.backend_tokenizer.id_to_token(ids)
        return [self.backend_tokenizer.id_to_token(int(i)) for i in ids]

    def __call__(self, text=None, text_pair=None, **kwargs) -> Any:
        if not self._runs_here(text, text_pair, kwargs):
            return self.transformers_tokenizer(text, text_pair, **kwargs)
        split = bool(kwargs.get("is_split_into_words", False))
        if split:
            batched = isinstance(text, (list, tuple)) and bool(text)
            batched = batched and isinstance(text[0], (list, tuple))
        else:
            batched = isinstance(text, (list, tuple))
        if batched and text_pair is not None:
            inputs = list(zip(text, text_pair, strict=True))
        elif batched:
            inputs = list(text)
        else:  # one text: an empty pair counts as none, as transformers has it
            inputs = [(text, text_pair)] if text_pair else [text]
        backend = self.backend_tokenizer
        truncation = kwargs.get("truncation")
        if truncation in (None, False, "do_not_truncate"):
            if backend.truncation is not None:
                backend.no_truncation()
        else:
            target = {
                "max_length": kwargs["max_length"],
                "stride": 0,
                "strategy": "longest_first",
                "direction": self.truncation_side,
            }
            current = backend.truncation
            if current is None or {k: current.get(k) for k in target} != target:
                backend.enable_truncation(**target)
        if backend.padding is not None:
            backend.no_padding()
        if backend.encode_special_tokens != self.split_special_tokens:
            backend.encode_special_tokens = self.split_special_tokens
        encodings = backend.encode_batch(
            inputs,
            add_special_tokens=kwargs.get("add_special_tokens", True),
            is_pretokenized=split,
        )
        data = self._columns(encodings, kwargs)
        if not batched:
            data = {k: (v[0] if v and isinstance(v[0], list) else v) for k, v in data.items()}
        return Encoded(data, encodings)

    def _runs_here(self, text, text_pair, kwargs: dict) -> bool:
        """Whether a call is one this class runs as transformers would; else transformers'
        tokenizer runs it (and raises its own errors for what it refuses)."""
        if set(kwargs) - _HANDLED or not _valid(text, text_pair, kwargs.get("is_split_into_words")):
            return False
        if kwargs.get("padding") not in (None, False, "do_not_pad"):
            return False
        if kwargs.get("return_tensors") is not None:
            return False
        truncation = kwargs.get("truncation")
        if truncation in (None, False, "do_not_truncate"):
            return kwargs.get("max_length") is None
        if truncation not in (True, "longest_first"):
            return False
        if not isinstance(kwargs.get("max_length"), int):
            return False
        # pre-split words need the prefix space a byte-level tokenizer adds (transformers
        # refuses or warns otherwise)
        return not kwargs.get("is_split_into_words") or bool(getattr(self, "add_prefix_space", 1))

    def _columns(self, encodings: Sequence, kwargs: dict) -> dict[str, list]:
        """transformers' `_convert_encoding`, for every text, in its key order."""
        names = self.model_input_names
        types = kwargs.get("return_token_type_ids")
        types = "token_type_ids" in names if types is None else types
        mask = kwargs.get("return_attention_mask")
        mask = "attention_mask" in names if mask is None else mask
        data: dict[str, list] = {"input_ids": [e.ids for e in encodings]}
        if types:
            data["token_type_ids"] = [e.type_ids for e in encodings]
        if mask:
            data["attention_mask"] = [e.attention_mask for e in encodings]
        if kwargs.get("return_special_tokens_mask"):
            data["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if kwargs.get("return_offsets_mapping"):
            data["offset_mapping"] = [e.offsets for e in encodings]
        return data


def tokenizer_state(tokenizer, words_tokenizer) -> dict:
    """What a `CachedTokenizer` needs of transformers' fast tokenizer (and of its variant
    for pre-split words, when that is another tokenizer)."""
    backend = tokenizer.backend_tokenizer.to_str()
    words = None
    if words_tokenizer is not tokenizer:
        words = words_tokenizer.backend_tokenizer.to_str()
    state: dict = {"class": type(tokenizer).__name__, "backend": backend}
    state["words_backend"] = None if words == backend else words
    for name in ATTRIBUTES:
        value = getattr(tokenizer, name, None)
        if name == "model_input_names" or name == "vocab_files_names":
            value = list(value) if name == "model_input_names" else dict(value or {})
        if value is None or isinstance(value, (str, int, float, bool, list, dict)):
            state[name] = value
    return state


def same_as(cached: CachedTokenizer, tokenizer, words_tokenizer) -> bool:
    """Whether `cached` tokenizes the probe inputs exactly as transformers' tokenizers do,
    for every kind of call bertlayers makes."""
    texts, pairs = PROBE_TEXTS, list(reversed(PROBE_TEXTS))
    full = {"return_special_tokens_mask": True, "return_offsets_mapping": True, "verbose": False}
    calls = [
        ((texts[0],), {}),
        ((texts[0],), {"add_special_tokens": False}),
        ((texts,), full),
        ((texts, pairs), full),
        ((texts, pairs), {**full, "truncation": "longest_first", "max_length": 12}),
        ((texts,), {**full, "add_special_tokens": False, "return_token_type_ids": False}),
        ((texts,), {**full, "truncation": True, "max_length": 5, "return_attention_mask": False}),
    ]
    words = cached.words_variant()
    split = {**full, "is_split_into_words": True, "add_special_tokens": False}
    checks = [(cached, tokenizer, args, kwargs) for args, kwargs in calls]
    checks.append((words, words_tokenizer, (PROBE_WORDS,), split))
    checks.append((words, words_tokenizer, (PROBE_WORDS,), {**split, "add_special_tokens": True}))
    for ours, theirs, args, kwargs in checks:
        mine, expected = ours(*args, **kwargs), theirs(*args, **kwargs)
        if dict(mine) != dict(expected):
            return False
        for i in range(len(args[0]) if isinstance(args[0], list) else 1):
            if mine.word_ids(i) != expected.word_ids(i):
                return False
            if mine.sequence_ids(i) != expected.sequence_ids(i):
                return False
    ids = list(range(min(len(tokenizer), 300)))
    if cached.convert_ids_to_tokens(ids) != tokenizer.convert_ids_to_tokens(ids):
        return False
    attributes = {n: getattr(tokenizer, n, None) for n in ("pad_token_id", "unk_token")}
    return all(getattr(cached, n, None) == v for n, v in attributes.items())


def _valid(text, text_pair, split: bool | None) -> bool:
    """Texts (or word lists) as transformers takes them: one, or a non-empty batch with as
    many pairs."""

    def one(item) -> bool:
        if split:
            return isinstance(item, (list, tuple)) and all(isinstance(w, str) for w in item)
        return isinstance(item, str)

    if one(text):
        return text_pair is None or one(text_pair)
    if not isinstance(text, (list, tuple)) or not text or not all(one(t) for t in text):
        return False
    if text_pair is None:
        return True
    if not isinstance(text_pair, (list, tuple)) or len(text_pair) != len(text):
        return False
    return all(one(t) for t in text_pair)
