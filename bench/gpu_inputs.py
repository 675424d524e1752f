"""The GPU check's inputs: seeded random-weight BERTs, random-vocabulary texts of set lengths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from gpu_common import MAX_LENGTH, ROOT

TOKENIZER_DIR = ROOT / "bench" / "gpu_assets" / "minilm-tokenizer"
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
SHAPES = {
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
               "intermediate_size": 1536},
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                  "intermediate_size": 3072},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 256},
}  # fmt: skip


def build_model(root: Path, label: str, seed: int) -> Path:
    """A BertModel of `label`'s shape with seeded random weights, saved (safetensors) with the
    bundled tokenizer files and a sentence-transformers layout (mean pooling, no normalizing)."""
    from transformers import BertConfig, BertModel

    shape = SHAPES[label]
    path = root / label
    torch.manual_seed(seed)
    config = BertConfig(**shape, vocab_size=30522, max_position_embeddings=MAX_LENGTH)
    BertModel(config).eval().save_pretrained(path)
    for name in TOKENIZER_FILES:
        (path / name).write_bytes((TOKENIZER_DIR / name).read_bytes())
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": MAX_LENGTH, "do_lower_case": False})
    )
    (path / "1_Pooling").mkdir()
    pooling = {
        "word_embedding_dimension": shape["hidden_size"],
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return path


def vocab_words() -> np.ndarray:
    """Whole lower-case words of the vocabulary: each is one token, so a text of n-2 of them
    is n tokens with [CLS] and [SEP]."""
    lines = (TOKENIZER_DIR / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return np.array([w for w in lines if re.fullmatch(r"[a-z]{2,12}", w)], dtype=object)


def fixed_texts(words: np.ndarray, count: int, tokens: int, seed: int) -> list[str]:
    rng = np.random.default_rng([seed, tokens])
    picks = words[rng.integers(0, len(words), size=(count, tokens - 2))]
    return [" ".join(row) for row in picks]


def check_texts(words: np.ndarray, count: int, longest: int, seed: int) -> list[str]:
    """Texts of varied length, 1 word up to `longest` tokens: batches that need padding."""
    rng = np.random.default_rng([seed, 1])
    sizes = [1, longest - 2, *rng.integers(1, longest - 1, size=max(0, count - 2))][:count]
    return [" ".join(words[rng.integers(0, len(words), size=n)]) for n in sizes]
