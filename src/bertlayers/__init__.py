"""bertlayers: embeddings from every encoder layer of BERT-family models.

    from bertlayers import Extractor
    extractor = Extractor()                      # bundled all-MiniLM-L6-v2, or any encoder
    vectors = extractor.embed(["a text", "another"], layers="all", pooling="mean")
    vectors.shape                                # (2, 7, 384): texts x layers 0..6 x hidden
    words = extractor.extract_words([["EU", "rejects", "German", "call"]], layers="-4:")
    words[0].vectors.shape                       # (4, 4, 384): words x layers x hidden

Layer 0 is the embedding output, 1..L the encoder layers, negatives count from the end.

The package is the data flow: `io` (files -> records), `core` (tokenize, batch, forward,
select layers, pool: the `Engine`), `backends` (what runs the forward pass), `stores`
(streamed, resumable files), `analysis` (probes, geometry, plots, report: arrays and stores
only, no model code), `search` (`Index`: FAISS search over one layer of a store), the
front ends `cli` (the command line) and `service` (`bertlayers
serve`), and `client` (`Client`, a server from Python). Names are exported lazily, so that
`import bertlayers` (and the analysis, the stores, `bertlayers --help`) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "BertlayersError": "errors",
    "Client": "client",
    "TruncationWarning": "errors",
    "Engine": "core.engine",
    "ExtractConfig": "core.config",
    "Extractor": "core.extract",
    "Index": "search",
    "LayerSelection": "layers",
    "resolve_layers": "layers",
    "Combine": "options",
    "DType": "options",
    "Level": "options",
    "LongMode": "options",
    "Pooling": "options",
    "Runtime": "options",
    "WordPooling": "options",
    "RaggedEmbeddings": "results",
    "SentenceEmbeddings": "results",
    "TextVectors": "results",
    "load": "stores",
    "load_attention": "stores",
    "AttentionConfig": "core.config",
    "AttentionMaps": "maps",
    "ModelOptions": "core.config",
}

__all__ = [
    "AttentionConfig",
    "AttentionMaps",
    "BertlayersError",
    "Client",
    "Combine",
    "DType",
    "Engine",
    "ExtractConfig",
    "Extractor",
    "Index",
    "LayerSelection",
    "Level",
    "LongMode",
    "ModelOptions",
    "Pooling",
    "RaggedEmbeddings",
    "Runtime",
    "SentenceEmbeddings",
    "TextVectors",
    "TruncationWarning",
    "WordPooling",
    "__version__",
    "load",
    "load_attention",
    "resolve_layers",
]


def __getattr__(name: str) -> object:
    """Import a public name's module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bertlayers' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .core.config import AttentionConfig, ExtractConfig, ModelOptions
    from .core.engine import Engine
    from .core.extract import Extractor
    from .errors import BertlayersError, TruncationWarning
    from .layers import LayerSelection, resolve_layers
    from .maps import AttentionMaps
    from .options import Combine, DType, Level, LongMode, Pooling, Runtime, WordPooling
    from .results import RaggedEmbeddings, SentenceEmbeddings, TextVectors
    from .stores import load, load_attention
