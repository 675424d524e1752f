"""A model's own sentence-transformers pipeline: its pooling, length limit and normalization.

A sentence-transformers model directory says how its authors pool (`modules.json`, the
pooling module's `config.json`), how long a text may be (`sentence_bert_config.json`) and
whether vectors are L2-normalized (a `Normalize` module). Reading them lets a service's
OpenAI-compatible endpoint give what `SentenceTransformer(model).encode(texts)` gives.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..options import Pooling

_MODES = {  # the pooling config's flags, in the order sentence-transformers checks them
    "pooling_mode_cls_token": Pooling.CLS,
    "pooling_mode_mean_tokens": Pooling.MEAN,
    "pooling_mode_max_tokens": Pooling.MAX,
    "pooling_mode_lasttoken": Pooling.LAST,
}


@dataclass(frozen=True)
class SentencePipeline:
    """How the model's sentence-transformers pipeline embeds a sentence, as extract options.

    sentence-transformers pools over every real token, [CLS] and [SEP] included, so
    `include_special` is True; without a pipeline, the defaults are the library's own."""

    pooling: Pooling = Pooling.MEAN
    include_special: bool = False
    max_length: int | None = None
    normalize: bool = False
    source: str = "bertlayers defaults (no sentence-transformers config)"
    unsupported: tuple[str, ...] = ()  # parts of the pipeline not reproduced, if any

    @property
    def exact(self) -> bool:
        """Whether these options give what `SentenceTransformer(model).encode` gives."""
        return not self.unsupported


def _read_json(folder: Path, name: str) -> dict | list | None:
    path = folder / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_sentence_pipeline(model_dir: str | Path | None) -> SentencePipeline:
    """The pipeline in `model_dir`, or the library's defaults when it has none (or is a hub
    id that is not in a local directory)."""
    if model_dir is None or not Path(model_dir).is_dir():
        return SentencePipeline()
    folder = Path(model_dir)
    modules = _read_json(folder, "modules.json")
    if not isinstance(modules, list):
        return SentencePipeline()
    pooling, normalize = Pooling.MEAN, False
    unsupported: list[str] = []
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            config = _read_json(folder / str(module.get("path", "")), "config.json") or {}
            flags = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
            chosen = [_MODES[f] for f in flags if f in _MODES]
            if chosen:
                pooling = chosen[0]
            if len(flags) != 1 or not chosen:
                unsupported.append(f"pooling {'+'.join(flags) or 'none'}")
        elif kind.endswith("Normalize"):
            normalize = True
        elif not kind.endswith("Transformer"):
            unsupported.append(kind.rsplit(".", 1)[-1] or "an unknown module")
    bert_config = _read_json(folder, "sentence_bert_config.json") or {}
    bert_config = bert_config if isinstance(bert_config, dict) else {}
    max_length = bert_config.get("max_seq_length")
    if bert_config.get("do_lower_case"):
        unsupported.append("do_lower_case")
    return SentencePipeline(
        pooling=pooling,
        include_special=True,
        max_length=int(max_length) if isinstance(max_length, int) else None,
        normalize=normalize,
        source=f"sentence-transformers config in {folder.name or folder}",
        unsupported=tuple(unsupported),
    )


def sentence_pipeline_of(model_id: str, local_dir: Path | None, revision: str | None = None):
    """The pipeline of a loaded model: from its directory, or fetched from the hub (the few
    small JSON files only; offline, whatever the cache holds)."""
    if local_dir is not None:
        return read_sentence_pipeline(local_dir)
    try:
        from huggingface_hub import hf_hub_download

        modules_path = Path(hf_hub_download(model_id, "modules.json", revision=revision))
        folder = modules_path.parent
        modules = _read_json(folder, "modules.json") or []
        names = ["sentence_bert_config.json"] + [
            f"{m['path']}/config.json" for m in modules if isinstance(m, dict) and m.get("path")
        ]
        for name in names:
            with contextlib.suppress(Exception):  # optional files
                hf_hub_download(model_id, name, revision=revision)
        return read_sentence_pipeline(folder)
    except Exception:  # no hub, no such file, not a sentence-transformers model
        return SentencePipeline()
