"""Provenance: what made an output, so that every stored vector can be traced and reproduced."""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING

import numpy as np

from . import __version__

if TYPE_CHECKING:
    from .encoder import Encoder
    from .extract import ExtractConfig
    from .layers import LayerSelection
    from .sinks import SentenceChunk


class PerTextLog:
    """Per-text ids, token counts and truncation flags, kept compactly for the provenance."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._n_tokens: list[np.ndarray] = []
        self._truncated: list[np.ndarray] = []

    def add(self, chunk: SentenceChunk) -> None:
        self.ids.extend(chunk.ids)
        self._n_tokens.append(chunk.n_tokens.astype(np.int32))
        self._truncated.append(chunk.truncated.astype(bool))

    @property
    def n_tokens(self) -> np.ndarray:
        return np.concatenate(self._n_tokens) if self._n_tokens else np.zeros(0, np.int32)

    @property
    def truncated(self) -> np.ndarray:
        return np.concatenate(self._truncated) if self._truncated else np.zeros(0, bool)


LAYER_CONVENTION = (
    "0 = embedding output, 1..L = encoder layers, as Hugging Face hidden_states "
    "(Google's extract_features.py / bert-as-service index = ours - 1)"
)


def build_provenance(
    encoder: Encoder,
    config: ExtractConfig,
    selection: LayerSelection,
    max_length: int,
    shape: tuple[int, ...],
    log: PerTextLog,
    complete: bool,
    error: str | None = None,
) -> dict:
    """The provenance record written beside every output (and kept on in-memory results)."""
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
        "level": "sentence",
        "layers": list(selection.indices),
        "layer_convention": LAYER_CONVENTION,
        "pooling": config.pooling.value,
        "include_special": config.include_special,
        "combine": config.combine.value,
        "max_length": max_length,
        "long": "truncate",
        "compute_dtype": encoder.dtype.value,
        "output_dtype": config.output_dtype.value,
        "device": str(encoder.device),
        "shape": list(shape),
        "num_texts": len(log.ids),
        "num_truncated": int(truncated.sum()),
        "texts": {
            "ids": log.ids,
            "n_tokens": log.n_tokens.tolist(),
            "truncated": truncated.tolist(),
        },
    }
    if error:
        record["error"] = error
    return record
