"""bertlayers: embeddings from every encoder layer of BERT-family models.

    from bertlayers import Extractor
    extractor = Extractor()                      # bundled all-MiniLM-L6-v2, or any encoder
    vectors = extractor.embed(["a text", "another"], layers="all", pooling="mean")
    vectors.shape                                # (2, 7, 384): texts x layers 0..6 x hidden
    words = extractor.extract_words([["EU", "rejects", "German", "call"]], layers="-4:")
    words[0].vectors.shape                       # (4, 4, 384): words x layers x hidden

Layer 0 is the embedding output, 1..L the encoder layers, negatives count from the end.
"""

__version__ = "0.1.0"

from .errors import BertlayersError, TruncationWarning
from .extract import ExtractConfig, Extractor
from .layers import LayerSelection, resolve_layers
from .options import Combine, DType, Level, LongMode, Pooling, WordPooling
from .results import RaggedEmbeddings, SentenceEmbeddings, TextVectors, load

__all__ = [
    "BertlayersError",
    "Combine",
    "DType",
    "ExtractConfig",
    "Extractor",
    "LayerSelection",
    "Level",
    "LongMode",
    "Pooling",
    "RaggedEmbeddings",
    "SentenceEmbeddings",
    "TextVectors",
    "TruncationWarning",
    "WordPooling",
    "__version__",
    "load",
    "resolve_layers",
]
