"""Deprecated alias of `bertlayers.core.extract` (the extraction API moved to `core`)."""

from .core.config import ExtractConfig  # noqa: F401
from .core.extract import Extractor  # noqa: F401
