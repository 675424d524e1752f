"""bertlayers: embeddings from every encoder layer of BERT-family models.

    from bertlayers import Extractor
    extractor = Extractor()                      # bundled all-MiniLM-L6-v2, or any encoder
    vectors = extractor.embed(["a text", "another"], layers="all", pooling="mean")
    vectors.shape                                # (2, 7, 384): texts x layers 0..6 x hidden

Layer 0 is the embedding output, 1..L the encoder layers, negatives count from the end.
"""

__version__ = "0.1.0"

from .errors import BertlayersError, TruncationWarning
from .extract import ExtractConfig, Extractor, SentenceEmbeddings
from .layers import LayerSelection, resolve_layers
from .options import Combine, DType, Pooling

__all__ = [
    "BertlayersError",
    "Combine",
    "DType",
    "ExtractConfig",
    "Extractor",
    "LayerSelection",
    "Pooling",
    "SentenceEmbeddings",
    "TruncationWarning",
    "__version__",
    "resolve_layers",
]
