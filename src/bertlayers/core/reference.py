"""The reference `bertlayers verify` compares an engine against: transformers' own model, run on
one text at a time, unpadded, in float32 on the CPU (`output_hidden_states=True`).

It shares no code with the engine's routes: the tokenizer's own call builds each sequence
(pairs and truncation included), long texts are cut into windows and stitched here from the
documented rules (windows of the model's limit sharing `stride` tokens, the last aligned to
the end; each token from the window where it has the most context on both sides, ties to the
earlier; `cls` of a split text is the mean of its windows' first rows), and pooling is plain
numpy over each text's own rows. What the engine returns for a config is what this module
says the docs promise, so a difference is a bug of the engine's route, runtime or device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ModelError
from ..io.readers import Record
from ..options import Combine, Level, LongMode
from .plan import Plan


@dataclass
class Stitched:
    """One record as the model saw it: its rows in every layer and what each row is."""

    hidden: np.ndarray  # (L+1, T, H): prefix specials, content tokens, suffix specials
    special: np.ndarray  # (T,) bool: rows that are special tokens
    cls: np.ndarray  # (W, L+1, H): each window's first row (W = 1 unless split)
    word_ids: np.ndarray  # (n,) dense word number of each content row
    truncated: bool
    windows: int


class Reference:
    """transformers' AutoModel and fast tokenizer for one model, float32 on the CPU, each
    sequence run alone (hidden states cached per sequence: checks share them)."""

    def __init__(self, model_id: str, revision: str | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        from .encoder import hub_unreachable, quiet_transformers

        hub = {"revision": revision, "local_files_only": hub_unreachable(model_id)}
        with quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(model_id, **hub)
            self.model = AutoModel.from_pretrained(model_id, **hub).eval().float().to("cpu")
            # pre-split words: byte-level BPE needs the space a word has in running text
            self.words_tokenizer = self.tokenizer
            if not getattr(self.tokenizer, "add_prefix_space", True):
                self.words_tokenizer = AutoTokenizer.from_pretrained(
                    model_id, add_prefix_space=True, **hub
                )
        import inspect

        self._accepts = set(inspect.signature(self.model.forward).parameters)
        self._cache: dict[tuple, np.ndarray] = {}
        self.forward_passes = 0
        self.prefix, self.suffix = self._template()

    def _template(self) -> tuple[list[int], list[int]]:
        """[CLS]/[SEP] (or <s>/</s>) around one text, checked against the tokenizer's call."""
        tok = self.tokenizer
        bare = tok("hello world", add_special_tokens=False)["input_ids"]
        full = tok("hello world")["input_ids"]
        prefix = [tok.cls_token_id] if tok.cls_token_id is not None else []
        suffix = [tok.sep_token_id] if tok.sep_token_id is not None else []
        if full != [*prefix, *bare, *suffix]:
            raise ModelError(
                f"the reference cannot build windows for {type(tok).__name__}: "
                "its special tokens are not [CLS] text [SEP]"
            )
        return prefix, suffix

    # ---------------------------------------------------------------- forward passes

    @torch.inference_mode()
    def hidden(self, ids: list[int], types: list[int] | None = None) -> np.ndarray:
        """`(L+1, T, H)` float32 hidden states of one sequence run alone."""
        key = (tuple(ids), None if types is None else tuple(types))
        if key not in self._cache:
            inputs = {
                "input_ids": torch.tensor([ids]),
                "attention_mask": torch.ones((1, len(ids)), dtype=torch.long),
            }
            if types is not None and "token_type_ids" in self._accepts:
                inputs["token_type_ids"] = torch.tensor([types])
            out = self.model(**inputs, output_hidden_states=True)
            self._cache[key] = torch.stack(out.hidden_states)[:, 0].float().numpy()
            self.forward_passes += 1
        return self._cache[key]

    # ---------------------------------------------------------------- tokenization

    def _words(self, words: tuple[str, ...]) -> list[str]:
        """Pre-split words, those that give no token replaced by the unknown token (they
        still get a vector, as the docs say)."""
        enc = self.words_tokenizer(
            [list(words)], is_split_into_words=True, add_special_tokens=False, verbose=False
        )
        have = {w for w in enc.word_ids(0) if w is not None}
        return [w if i in have else self.tokenizer.unk_token for i, w in enumerate(words)]

    def _call(self, record: Record, **kwargs) -> dict:
        """The tokenizer's own call on one record, as a batch of one: a single call drops an
        empty pair (`if text_pair`), a batch keeps it as an empty segment B, as bertlayers
        does. Returns ids, token types, the special-token mask and word ids."""
        kwargs = {"verbose": False, "return_special_tokens_mask": True, **kwargs}
        if record.words is not None:
            words = [self._words(record.words)]
            enc = self.words_tokenizer(words, is_split_into_words=True, **kwargs)
        elif record.pair is not None:
            enc = self.tokenizer([record.text], [record.pair], **kwargs)
        else:
            enc = self.tokenizer([record.text], **kwargs)
        types = enc.get("token_type_ids")
        return {
            "ids": enc["input_ids"][0],
            "types": None if types is None else types[0],
            "special": np.asarray(enc["special_tokens_mask"][0], dtype=bool),
            "word_ids": enc.word_ids(0),
        }

    def stitched(self, record: Record, plan: Plan) -> Stitched:
        """The rows of `record` for `plan`: one sequence (truncated to the limit if needed),
        or, with `long='split'` and more content than a window holds, stitched windows."""
        full = self._call(record)
        n_full = len(full["ids"])
        if plan.config.long is LongMode.SPLIT and n_full > plan.max_length:
            content = self._call(record, add_special_tokens=False)
            return self._windows(content["ids"], content["word_ids"], plan)
        enc = full
        if n_full > plan.max_length:
            enc = self._call(record, truncation="longest_first", max_length=plan.max_length)
        hidden = self.hidden(enc["ids"], enc["types"])
        special = enc["special"]
        word_ids = [w for w, s in zip(enc["word_ids"], special, strict=True) if not s]
        truncated = n_full > len(enc["ids"])
        return Stitched(hidden, special, hidden[None, :, 0], _dense(word_ids), truncated, 1)

    def _windows(self, ids: list[int], word_ids: list, plan: Plan) -> Stitched:
        p, q = len(self.prefix), len(self.suffix)
        width = plan.max_length - p - q
        stride = plan.stride if plan.stride is not None else width // 4
        n = len(ids)
        starts = [*range(0, n - width, width - stride), n - width]
        spans = [(s, s + width) for s in starts]
        states = []
        for start, end in spans:
            window = [*self.prefix, *ids[start:end], *self.suffix]
            types = (
                [0] * len(window) if "token_type_ids" in self.tokenizer.model_input_names else None
            )
            states.append(self.hidden(window, types))
        rows = [states[0][:, :p]]
        for i in range(n):
            # the window where token i has the most context on both sides; ties: the earlier
            best = max(
                (w for w, (s, e) in enumerate(spans) if s <= i < e),
                key=lambda w: (min(i - spans[w][0], spans[w][1] - 1 - i), -w),
            )
            rows.append(states[best][:, p + i - spans[best][0]][:, None])
        rows.append(states[-1][:, p + width :])
        special = np.r_[np.ones(p, bool), np.zeros(n, bool), np.ones(q, bool)]
        cls = np.stack([s[:, 0] for s in states])
        return Stitched(
            np.concatenate(rows, axis=1), special, cls, _dense(word_ids), False, len(spans)
        )

    # ---------------------------------------------------------------- what a config returns

    def expected(self, record: Record, plan: Plan) -> tuple[np.ndarray, Stitched]:
        """What the engine must return for `record` under `plan`, float32: `(K', H')` at
        sentence level, `(T, K', H')` per token or word; and the rows it came from."""
        config = plan.config
        rows = self.stitched(record, plan)
        hidden = _combine(rows.hidden[list(plan.layers)], config.combine)  # (K', T, H')
        content = hidden[:, ~rows.special]
        if config.level is Level.TOKEN:
            kept = hidden if config.include_special else content
            return kept.transpose(1, 0, 2), rows
        if config.level is Level.WORD:
            return _pool_words(content, rows.word_ids, config.word_pooling.value), rows
        pooling = config.pooling.value
        if pooling == "cls":
            cls = _combine(rows.cls.transpose(1, 0, 2)[list(plan.layers)], config.combine)
            return cls.mean(axis=1), rows
        over = hidden if config.include_special or not content.shape[1] else content
        if pooling == "mean":
            return over.mean(axis=1), rows
        if pooling == "max":
            return over.max(axis=1), rows
        return over[:, 0 if pooling == "first" else -1], rows


def _dense(word_ids: list) -> np.ndarray:
    """Word numbers renumbered 0, 1, ... in order of appearance (a pre-token that gave no
    token leaves no gap)."""
    out, last, current = [], object(), -1
    for w in word_ids:
        if w != last:
            current += 1
            last = w
        out.append(current)
    return np.asarray(out, dtype=np.int64)


def _combine(hidden: np.ndarray, mode: Combine) -> np.ndarray:
    """`(K, T, H)` -> `(K', T, H')` as `combine` says."""
    if mode is Combine.STACK:
        return hidden
    if mode is Combine.MEAN:
        return hidden.mean(axis=0, keepdims=True)
    if mode is Combine.SUM:
        return hidden.sum(axis=0, keepdims=True)
    return np.concatenate(list(hidden), axis=-1)[None]


def _pool_words(content: np.ndarray, word_ids: np.ndarray, mode: str) -> np.ndarray:
    """`(K', n, H')` content rows -> `(W, K', H')` word rows, one word at a time."""
    words = []
    for w in range(int(word_ids.max()) + 1 if len(word_ids) else 0):
        part = content[:, word_ids == w]
        if mode == "first":
            words.append(part[:, 0])
        elif mode == "last":
            words.append(part[:, -1])
        elif mode == "mean":
            words.append(part.mean(axis=1))
        else:
            words.append(part.max(axis=1))
    if not words:
        return np.zeros((0, content.shape[0], content.shape[2]), np.float32)
    return np.stack(words)
