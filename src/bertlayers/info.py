"""`ModelInfo`: what a user needs to know of a model, without torch (the client, the provenance
and the command line use it too)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """What a user needs to know about a loaded model."""

    model_id: str  # as given: hub id or directory
    name: str  # a readable name: the hub id, or what the bundled model is
    model_type: str
    architecture: str
    num_layers: int  # L encoder layers: hidden states 0..L
    hidden_size: int
    max_length: int  # tokens per sequence, special tokens included
    has_segments: bool  # token_type_ids carry segment A/B
    tokenizer: str
    revision: str | None  # hub commit hash, when loaded from the hub
    num_heads: int = 0  # attention heads per layer
