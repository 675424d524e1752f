"""What transformers makes of a model's files, kept in the user's cache: later start-ups read
it instead of importing transformers (most of what is left of the start-up).

An entry holds the config fields bertlayers reads (with transformers' defaults filled in) and
the fast tokenizer's state (`tokenizer.py`). It is keyed by the model's files (every file but
the weights, byte for byte; a hub snapshot by its commit) and the versions of transformers,
tokenizers and this format, so a changed file or an upgrade builds a new one. An entry is
written only after the cached tokenizer tokenized probe inputs exactly as transformers' did;
writes go through a temporary file and a rename, so concurrent processes never read half of
one. `BERTLAYERS_CACHE` names the cache directory (default `~/.cache/bertlayers`,
`XDG_CACHE_HOME` honoured); `BERTLAYERS_CACHE=off` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..info import ModelFiles

CACHE_ENV = "BERTLAYERS_CACHE"
FORMAT = 1
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".ot"}
LARGEST_HASHED = 256 << 20  # bytes: a file larger than this is no tokenizer or config file
# config fields bertlayers reads (the encoder, the native port, `ModelInfo`)
CONFIG_FIELDS = (
    "model_type", "architectures", "num_hidden_layers", "hidden_size", "num_attention_heads",
    "max_position_embeddings", "pad_token_id", "type_vocab_size", "hidden_act", "activation",
    "layer_norm_eps", "sinusoidal_pos_embds", "relative_attention_num_buckets",
    "embedding_size", "is_decoder", "add_cross_attention", "is_encoder_decoder",
    "pruned_heads", "num_hidden_groups",
)  # fmt: skip


class CachedConfig:
    """The config fields bertlayers reads, as transformers' config object gave them (a
    field the model's config lacks is missing here too)."""

    def __init__(self, fields: dict) -> None:
        self.__dict__.update(fields)


def config_fields(config) -> dict:
    """The fields of transformers' config object that a `CachedConfig` keeps."""
    fields: dict = {}
    for name in CONFIG_FIELDS:
        try:
            value = getattr(config, name)
        except AttributeError:
            continue
        if value is None or isinstance(value, (str, int, float, bool, list, dict)):
            fields[name] = value
    return fields


def cache_dir(kind: str = "models") -> Path | None:
    """Where entries of a kind (`models`, `fingerprints`) live; None when the cache is off."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen.lower() in ("off", "0", "false", "no"):
        return None
    if chosen:
        return Path(chosen) / kind
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bertlayers" / kind


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"transformers {version('transformers')}, tokenizers {version('tokenizers')}"
    except PackageNotFoundError:
        return "unknown"


def entry_key(files: ModelFiles) -> str | None:
    """The key of a model's entry: its files but the weights (a hub snapshot: its commit)
    and the library versions; None where the files cannot be told apart."""
    digest = hashlib.sha256(f"bertlayers model cache {FORMAT}; {_versions()}".encode())
    if files.local is None:
        if not files.revision:
            return None
        digest.update(f"hub {files.model_id}@{files.revision}".encode())
        return digest.hexdigest()
    try:
        paths = sorted(p for p in files.local.iterdir() if p.is_file())
        for path in paths:
            if path.suffix in WEIGHT_SUFFIXES or path.stat().st_size > LARGEST_HASHED:
                continue
            digest.update(f"\0{path.name}\0{path.stat().st_size}\0".encode())
            digest.update(path.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()


def read_entry(key: str | None) -> dict | None:
    """The entry under `key`, or None (none, unreadable, or of another format)."""
    directory = cache_dir()
    if key is None or directory is None:
        return None
    try:
        entry = json.loads((directory / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and entry.get("format") == FORMAT else None


def write_entry(key: str | None, fields: dict, tokenizer, words_tokenizer) -> bool:
    """Cache what transformers made of a model (`fields`: its config's, see `config_fields`),
    if the cached tokenizer tokenizes exactly as `tokenizer` (and `words_tokenizer`, for
    pre-split words) does. Returns whether it did; a cache that cannot be written is skipped
    without a word."""
    from .tokenizer import CachedTokenizer, same_as, tokenizer_state

    directory = cache_dir()
    if key is None or directory is None:
        return False
    state = tokenizer_state(tokenizer, words_tokenizer)
    cached = CachedTokenizer(state, lambda words: words_tokenizer if words else tokenizer)
    if not same_as(cached, tokenizer, words_tokenizer):
        return False
    entry = {"format": FORMAT, "config": fields, "tokenizer": state}
    return _write(directory / f"{key}.json", json.dumps(entry))


def _write(path: Path, text: str) -> bool:
    """Write through a temporary file and a rename: a reader sees all of it or nothing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    except OSError:
        return False
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(name, path)
    except OSError:
        Path(name).unlink(missing_ok=True)
        return False
    return True


WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth")
SETTLED_NS = 2_000_000_000  # a file changed this recently may change again within its mtime


def weights_fingerprint(directory: Path) -> str:
    """`sha256:` of a local model's weight files in name order (what identifies its weights).

    Reading the weights costs a tenth of a second per 100 MB at each start-up, so the digest is
    remembered under each file's path, size, inode and modification and change times (as git
    trusts its index): any write to a file changes its change time, which no tool sets back.
    """
    import time

    weights = sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_FILES and p.is_file())
    stats = [(str(p.resolve()), p.stat()) for p in weights]
    signature = [[n, s.st_size, s.st_ino, s.st_dev, s.st_mtime_ns, s.st_ctime_ns] for n, s in stats]
    key = hashlib.sha256(json.dumps(signature).encode()).hexdigest()
    remembered = cache_dir("fingerprints")
    if remembered is not None:
        try:
            known = (remembered / key).read_text(encoding="utf-8").strip()
            if known.startswith("sha256:"):
                return known
        except OSError:
            pass
    digest = hashlib.sha256()
    for file in weights:
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    fingerprint = "sha256:" + digest.hexdigest()
    newest = max((max(s.st_mtime_ns, s.st_ctime_ns) for _, s in stats), default=0)
    if remembered is not None and time.time_ns() - newest > SETTLED_NS:
        _write(remembered / key, fingerprint)
    return fingerprint
