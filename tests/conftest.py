"""Shared fixtures: real models (the bundled BERT, tiny random encoders built offline) and a
reference that runs each text alone, unpadded, in float32, straight through transformers."""

from __future__ import annotations

import functools
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import numpy as np
import pytest
import torch

from bertlayers import Extractor
from bertlayers.core.encoder import bundled_model_path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TINY_ARCHS = [
    "bert",
    "roberta",
    "distilbert",
    "electra",
    "deberta-v2",
    "mpnet",
    "xlm-roberta",
    "modernbert",
]


def data_file(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


def read_tsv_texts(name: str, limit: int) -> list[str]:
    import csv

    with data_file(name).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [row["text"] for row in rows[:limit]]


@pytest.fixture(scope="session")
def sentiment_texts() -> list[str]:
    return read_tsv_texts("sentiment-polarity.tsv", 4000)


@pytest.fixture(scope="session")
def bundled() -> Extractor:
    return Extractor(device="cpu")


# ---------------------------------------------------------------- tiny models, built offline


def _training_lines(limit: int = 3000) -> list[str]:
    path = DATA / "corpus-fortunes.txt"
    if path.exists():
        return path.read_text(encoding="utf-8").splitlines()[:limit]
    return ["the quick brown fox jumps over the lazy dog"] * 10


def _bert_vocab() -> dict[str, int]:
    lines = (bundled_model_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {token: i for i, token in enumerate(lines)}


def _bpe_tokenizer():
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _training_lines(),
        vocab_size=800,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    model = bpe._tokenizer.model
    import json

    state = json.loads(bpe._tokenizer.to_str())["model"]
    del model
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    from transformers import RobertaTokenizer

    return RobertaTokenizer(vocab=state["vocab"], merges=merges)


@functools.lru_cache(maxsize=1)
def _unigram_vocab() -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = [
        "<pad>",
        "<unk>",
        "<s>",
        "</s>",
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "<mask>",
    ]
    trainer = trainers.UnigramTrainer(
        vocab_size=800, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(_training_lines(), trainer)
    import json

    return [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]


def build_tiny_model(arch: str, root: Path) -> Path:
    """A tiny random encoder of `arch` with a real fast tokenizer, saved to a directory."""
    from transformers import (
        AutoModel,
        BertConfig,
        BertTokenizer,
        DebertaV2Config,
        DebertaV2Tokenizer,
        DistilBertConfig,
        DistilBertTokenizer,
        ElectraConfig,
        ModernBertConfig,
        MPNetConfig,
        MPNetTokenizer,
        RobertaConfig,
        XLMRobertaConfig,
        XLMRobertaTokenizer,
    )

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
    bert_vocab = _bert_vocab()
    if arch == "bert":
        tokenizer = BertTokenizer(vocab=bert_vocab)
        config = BertConfig(vocab_size=len(bert_vocab), max_position_embeddings=40, **small)
    elif arch == "electra":
        tokenizer = BertTokenizer(vocab=bert_vocab)
        config = ElectraConfig(
            vocab_size=len(bert_vocab), embedding_size=16, max_position_embeddings=40, **small
        )
    elif arch == "distilbert":
        tokenizer = DistilBertTokenizer(vocab=bert_vocab)
        config = DistilBertConfig(
            vocab_size=len(bert_vocab),
            dim=32,
            n_layers=3,
            n_heads=4,
            hidden_dim=64,
            max_position_embeddings=40,
        )
    elif arch == "roberta":
        tokenizer = _bpe_tokenizer()
        config = RobertaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=42,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            type_vocab_size=1,
            **small,
        )
    elif arch == "xlm-roberta":
        tokenizer = XLMRobertaTokenizer(vocab=_unigram_vocab())
        config = XLMRobertaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=42,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            type_vocab_size=1,
            **small,
        )
    elif arch == "mpnet":
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for token in bert_vocab:
            vocab.setdefault(token, len(vocab))
        vocab["<mask>"] = len(vocab)
        tokenizer = MPNetTokenizer(vocab=vocab)
        config = MPNetConfig(
            vocab_size=len(vocab), max_position_embeddings=42, pad_token_id=1, **small
        )
    elif arch == "deberta-v2":
        tokenizer = DebertaV2Tokenizer(vocab=_unigram_vocab(), unk_token="<unk>")
        config = DebertaV2Config(
            vocab_size=len(tokenizer),
            max_position_embeddings=40,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
            type_vocab_size=0,
            pad_token_id=tokenizer.pad_token_id,
            **small,
        )
    elif arch == "modernbert":
        tokenizer = BertTokenizer(vocab=bert_vocab)
        config = ModernBertConfig(
            vocab_size=len(bert_vocab),
            max_position_embeddings=40,
            global_attn_every_n_layers=2,
            local_attention=8,
            pad_token_id=0,
            cls_token_id=101,
            sep_token_id=102,
            bos_token_id=101,
            eos_token_id=102,
            **small,
        )
    else:
        raise ValueError(arch)
    model = AutoModel.from_config(config)
    path = root / arch
    model.save_pretrained(path)
    tokenizer.model_max_length = 40 if arch in ("deberta-v2", "modernbert") else int(1e30)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_tiny_model(arch, root) for arch in TINY_ARCHS}


# ---------------------------------------------------------------- the reference


class Reference:
    """Each text alone, unpadded, float32, `output_hidden_states=True`, straight through HF."""

    def __init__(self, model_dir: str | Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval().float()
        import inspect

        self.accepts = set(inspect.signature(self.model.forward).parameters)

    @torch.inference_mode()
    def hidden(self, text: str, pair: str | None = None, max_length: int | None = None):
        """(L+1, T, H) hidden states and the special-token mask (T,) of one text."""
        enc = self.tokenizer(
            text,
            pair,
            return_tensors="pt",
            return_special_tokens_mask=True,
            truncation="longest_first" if max_length else False,
            max_length=max_length,
        )
        special = enc.pop("special_tokens_mask")[0].numpy().astype(bool)
        inputs = {k: v for k, v in enc.items() if k in self.accepts}
        out = self.model(**inputs, output_hidden_states=True)
        states = torch.stack(out.hidden_states)[:, 0].numpy()
        return states, special

    def pooled(self, text: str, pooling: str, pair: str | None = None, max_length=None):
        """(L+1, H) pooled with plain numpy, the way the docs say pooling works."""
        states, special = self.hidden(text, pair, max_length)
        content = ~special
        if not content.any():
            content = np.ones_like(special)
        idx = np.flatnonzero(content)
        if pooling == "cls":
            return states[:, 0]
        if pooling == "mean":
            return states[:, idx].mean(axis=1)
        if pooling == "max":
            return states[:, idx].max(axis=1)
        if pooling == "first":
            return states[:, idx[0]]
        if pooling == "last":
            return states[:, idx[-1]]
        raise ValueError(pooling)


@pytest.fixture(scope="session")
def bundled_reference() -> Reference:
    return Reference(bundled_model_path())
