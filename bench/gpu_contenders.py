"""The GPU check's contenders, one per throughput row, and the timing of their rounds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gpu_common import MAX_LENGTH, sync


@dataclass
class Work:
    """What one timed call runs on: the texts, and for the model-only rows their batches."""

    texts: list[str]
    length: int
    batches: list[dict] | None = None


def attention_of(model) -> str | None:
    """The attention implementation a loaded transformers model runs (None if unreadable)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


def bl_attention(extractor) -> str | None:
    # Extractor.encoder is public; its `model` attribute may move in a refactor: then None
    return attention_of(getattr(getattr(extractor, "encoder", None), "model", None))


class BLPooled:
    kind = "bertlayers"

    def __init__(self, extractor, dtype: str, layers: str | int) -> None:
        self.extractor, self.layers = extractor, layers
        which = "all" if layers == "all" else "last"
        self.name = f"bl-{which}-pooled-{dtype}"
        self.meta = {
            "dtype": dtype,
            "output": f"{which} layer(s) mean-pooled, float32",
            "tokenizer": "bl-sentence",
            "attention": bl_attention(extractor),
        }

    def run(self, work: Work) -> object:
        return self.extractor.embed(work.texts, layers=self.layers, pooling="mean")


class BLTokens:
    """Every token's vectors at every layer, float16 output, chunk by chunk (each chunk's
    rows in memory, then dropped: what a store would write)."""

    kind = "bertlayers"

    def __init__(self, extractor, dtype: str, chunk_size: int) -> None:
        self.extractor, self.chunk_size = extractor, chunk_size
        self.name = f"bl-all-tokens-f16out-{dtype}"
        self.meta = {
            "dtype": dtype,
            "output": "all layers, every token, float16",
            "tokenizer": "bl-token",
            "chunk_size": chunk_size,
            "attention": bl_attention(extractor),
        }
        self.bytes = 0

    def run(self, work: Work) -> object:
        from bertlayers import ExtractConfig
        from bertlayers.io.readers import records_from_texts

        config = ExtractConfig(
            level="token", layers="all", output_dtype="float16", chunk_size=self.chunk_size
        )
        total = 0
        for chunk in self.extractor.iter_chunks(records_from_texts(work.texts), config):
            total += np.asarray(chunk.vectors).nbytes
        self.bytes = total
        return total


class STEncode:
    kind = "sentence-transformers"

    def __init__(self, model_dir: Path, device, dtype: str, batch_tokens: int) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir), device=str(device))
        self.model.max_seq_length = MAX_LENGTH
        if dtype != "float32":
            self.model.to(getattr(torch, dtype))
        self.batch_tokens = batch_tokens
        self.name = f"st-encode-{dtype}"
        self.meta = {
            "dtype": dtype,
            "output": "last layer mean-pooled (specials in)",
            "tokenizer": "st",
            "attention": next(filter(None, map(attention_of, self.model.modules())), None),
        }

    def run(self, work: Work) -> object:
        batch = max(1, self.batch_tokens // work.length)
        self.meta["batch_size"] = batch
        return self.model.encode(work.texts, batch_size=batch, show_progress_bar=False)


class HFForward:
    """The model alone through transformers: pre-tokenized batches already on the device,
    every layer's hidden states left there (no tokenizing, pooling or copy back)."""

    kind = "transformers"

    def __init__(self, model_dir: Path, device, dtype: str, attention: str) -> None:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(model_dir, attn_implementation=attention)
        self.model = model.eval().to(device=device, dtype=getattr(torch, dtype))
        self.name = f"hf-forward-{attention}-{dtype}"
        self.meta = {
            "dtype": dtype,
            "attention": attention,
            "output": "all hidden states, left on the device",
        }

    @torch.inference_mode()
    def run(self, work: Work) -> object:
        last = None
        for batch in work.batches:
            last = self.model(**batch, output_hidden_states=True).hidden_states[-1]
        return last


class Tokenize:
    """The tokenizer alone on the texts, as bertlayers (pooled: special tokens mask; token
    level: offsets, no specials; mirrored here, not imported) or sentence-transformers
    (batches, padded tensors) call it."""

    kind = "tokenizer"

    def __init__(self, tokenizer, how: str, batch_tokens: int) -> None:
        self.tokenizer, self.how, self.batch_tokens = tokenizer, how, batch_tokens
        self.name = f"tokenize-{how}"
        self.meta = {"how": how}

    def run(self, work: Work) -> object:
        if self.how == "bl-sentence":
            return self.tokenizer(
                work.texts,
                truncation=False,
                add_special_tokens=True,
                return_special_tokens_mask=True,
                return_token_type_ids=True,
                return_attention_mask=False,
                verbose=False,
            )
        if self.how == "bl-token":
            return self.tokenizer(
                work.texts,
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        batch = max(1, self.batch_tokens // work.length)
        for start in range(0, len(work.texts), batch):
            self.tokenizer(
                work.texts[start : start + batch],
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            )
        return None


def device_batches(tokenizer, texts: list[str], length: int, batch_tokens: int, device):
    size = max(1, batch_tokens // length)
    out = []
    for start in range(0, len(texts), size):
        enc = tokenizer(
            texts[start : start + size],
            padding=True,
            truncation=True,
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        out.append({k: v.to(device) for k, v in enc.items()})
    return out


def time_rounds(contender, warm: Work, work: Work, rounds: int, device) -> tuple[list, int]:
    """Warm-up on `warm`, then `rounds` timed calls on `work` (synchronized around each);
    returns the seconds of each and the peak device memory (MiB, 0 on the CPU)."""
    contender.run(warm)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        contender.run(work)
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) >> 20 if device.type == "cuda" else 0
    return times, peak
