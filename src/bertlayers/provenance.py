"""Provenance: what made an output, so that every stored vector can be traced and reproduced."""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .chunks import RaggedChunk, SentenceChunk

if TYPE_CHECKING:
    from .encoder import Encoder

LAYER_CONVENTION = (
    "0 = embedding output, 1..L = encoder layers, as Hugging Face hidden_states "
    "(Google's extract_features.py / bert-as-service index = ours - 1)"
)


class PerTextLog:
    """Per-text ids, token counts, truncation flags and windows, kept compactly."""

    def __init__(self) -> None:
        # Ids are kept as one joined string per chunk: thousands of small long-lived strings
        # would pin the allocator's pools and make memory creep up with the corpus.
        self._id_chunks: list[str] = []
        self._columns: dict[str, list[np.ndarray]] = {
            "n_tokens": [],
            "truncated": [],
            "windows": [],
        }
        self.rows = 0
        self.replaced: list[tuple[str, int]] = []

    @property
    def ids(self) -> list[str]:
        return (
            [i for chunk in self._id_chunks for i in chunk.split("\x00")] if self._id_chunks else []
        )

    def add(self, chunk: SentenceChunk) -> None:
        if chunk.ids:
            self._id_chunks.append("\x00".join(chunk.ids))
        self._columns["n_tokens"].append(np.asarray(chunk.n_tokens, dtype=np.int64))
        self._columns["truncated"].append(np.asarray(chunk.truncated, dtype=bool))
        self._columns["windows"].append(np.asarray(chunk.windows, dtype=np.int64))
        self.rows += len(chunk.vectors)
        if isinstance(chunk, RaggedChunk) and chunk.replaced:
            self.replaced.extend(chunk.replaced)

    def column(self, name: str) -> np.ndarray:
        parts = self._columns[name]
        return np.concatenate(parts) if parts else np.zeros(0)

    @property
    def truncated(self) -> np.ndarray:
        return self.column("truncated").astype(bool)


def build_provenance(
    encoder: Encoder,
    settings: dict,
    row_shape: tuple[int, ...],
    log: PerTextLog,
    complete: bool,
    error: str | None = None,
) -> dict:
    """The provenance record written beside every output (and kept on in-memory results).

    `settings` are the resolved extraction settings (level, layers, pooling, ...).
    """
    info = encoder.info
    truncated = log.truncated
    record = {
        "bertlayers_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": complete,
        "model": {
            "id": info.model_id,
            "name": info.name,
            "fingerprint": encoder.fingerprint,
            "type": info.model_type,
            "architecture": info.architecture,
            "num_layers": info.num_layers,
            "hidden_size": info.hidden_size,
        },
        "tokenizer": info.tokenizer,
        **settings,
        "layer_convention": LAYER_CONVENTION,
        "compute_dtype": encoder.compute,
        **({"quantization": encoder.quantization} if encoder.quantization else {}),
        **({"compiled": True} if encoder.compiled else {}),
        **({"backend": encoder.backend_record} if encoder.backend_record else {}),
        "device": str(encoder.device),
        "shape": [log.rows, *row_shape],
        "num_texts": len(log.ids),
        "num_truncated": int(truncated.sum()),
        "num_windowed": int((log.column("windows") > 1).sum()),
        "texts": {
            "ids": log.ids,
            "n_tokens": log.column("n_tokens").astype(int).tolist(),
            "truncated": truncated.tolist(),
            "windows": log.column("windows").astype(int).tolist(),
        },
    }
    if log.replaced:
        record["replaced_words"] = [[rid, int(w)] for rid, w in log.replaced]
    if error:
        record["error"] = error
    return record


def summary(provenance: dict) -> dict:
    """The provenance without its per-text lists (ids, token counts), which grow with the
    corpus: what reports and probe results carry."""
    short = {k: v for k, v in provenance.items() if k not in ("texts", "replaced_words")}
    if "replaced_words" in provenance:
        short["num_replaced_words"] = len(provenance["replaced_words"])
    return short
