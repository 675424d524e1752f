"""Provenance: what made an output, so that every stored vector can be traced and reproduced."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

from . import __version__
from .chunks import RaggedChunk, SentenceChunk
from .info import ModelInfo

LAYER_CONVENTION = (
    "0 = embedding output, 1..L = encoder layers, as Hugging Face hidden_states "
    "(Google's extract_features.py / bert-as-service index = ours - 1)"
)


@dataclass(frozen=True)
class RunInfo:
    """What ran the model, as a provenance records it: a local engine's encoder, or a
    server's `/v1/info`."""

    info: ModelInfo
    fingerprint: str
    compute: str  # the compute dtype, or int8
    device: str
    quantization: dict | None = None
    compiled: bool = False
    backend: str | dict | None = None  # `openvino 2026.4.1`, a server; None for PyTorch
    forward: str | None = None  # PyTorch's forward pass: `native` (bertlayers') or `transformers`


class PerTextLog:
    """Counts over the texts of a run (texts, rows, truncated, windowed) and the first few
    truncated ids, for the provenance and the warnings.

    Per-text columns are not kept here: sinks keep them (the store in its staging files, the
    in-memory result with its vectors), so a long run's memory does not grow with the corpus.
    """

    FIRST = 5  # truncated ids named in the warning

    def __init__(self) -> None:
        self.texts = 0
        self.rows = 0
        self.truncated = 0
        self.windowed = 0
        self.first_truncated: list[str] = []
        self.replaced: list[tuple[str, int]] = []

    def add_earlier(self, texts: int, truncated: int, first_truncated: list[str]) -> None:
        """Count the texts a resumed run embedded before it was interrupted."""
        self.texts += texts
        self.truncated += truncated
        self.first_truncated = [*first_truncated, *self.first_truncated][: self.FIRST]

    def add(self, chunk: SentenceChunk) -> None:
        truncated = np.asarray(chunk.truncated, dtype=bool)
        self.texts += len(chunk.ids)
        self.rows += len(chunk.vectors)
        self.truncated += int(truncated.sum())
        self.windowed += int((np.asarray(chunk.windows) > 1).sum())
        if len(self.first_truncated) < self.FIRST:
            for i in np.flatnonzero(truncated)[: self.FIRST - len(self.first_truncated)]:
                self.first_truncated.append(str(chunk.ids[i]))
        if isinstance(chunk, RaggedChunk) and chunk.replaced:
            self.replaced.extend(chunk.replaced)


def build_provenance(
    run: RunInfo,
    settings: dict,
    row_shape: tuple[int, ...],
    log: PerTextLog,
    complete: bool,
    error: str | None = None,
) -> dict:
    """The provenance record written beside every output (and kept on in-memory results).

    `settings` are the resolved extraction settings (level, layers, pooling, ...). The
    per-text ids, token counts and flags are not in it: they grow with the corpus, so they
    are columns of the result's or the store's index (older stores kept them here, under
    `texts`, and are still read).
    """
    info = run.info
    record = {
        "bertlayers_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": complete,
        "model": {
            "id": info.model_id,
            "name": info.name,
            "fingerprint": run.fingerprint,
            "type": info.model_type,
            "architecture": info.architecture,
            "num_layers": info.num_layers,
            "hidden_size": info.hidden_size,
        },
        "tokenizer": info.tokenizer,
        **settings,
        "layer_convention": LAYER_CONVENTION,
        "compute_dtype": run.compute,
        **({"quantization": run.quantization} if run.quantization else {}),
        **({"compiled": True} if run.compiled else {}),
        **({"backend": run.backend} if run.backend else {}),
        **({"forward": run.forward} if run.forward else {}),
        "device": run.device,
        "shape": [log.rows, *row_shape],
        "num_texts": log.texts,
        "num_truncated": log.truncated,
        "num_windowed": log.windowed,
    }
    if log.replaced:
        record["replaced_words"] = [[rid, int(w)] for rid, w in log.replaced]
    if error:
        record["error"] = error
    return record


def summary(provenance: dict) -> dict:
    """The provenance without per-text lists (older stores carried ids and token counts in
    it, and still may, like `replaced_words`): what reports and probe results carry."""
    short = {k: v for k, v in provenance.items() if k not in ("texts", "replaced_words")}
    if "replaced_words" in provenance:
        short["num_replaced_words"] = len(provenance["replaced_words"])
    return short


def same_model(a: dict, b: dict) -> bool:
    """Whether two provenance `model` records name one model: by the weights' fingerprint
    where both have one, else by id, layers and hidden size."""
    known = {None, "unknown"}
    if a.get("fingerprint") not in known and b.get("fingerprint") not in known:
        return a["fingerprint"] == b["fingerprint"]
    keys = ("id", "num_layers", "hidden_size")
    return all(a.get(k) == b.get(k) for k in keys)
