"""Deprecated alias of `bertlayers.core.extract` (the extraction API moved to `core`)."""

from .core.config import ExtractConfig  # noqa: F401
from .core.extract import Extractor  # noqa: F401
from .errors import warn_deprecated

warn_deprecated(
    "bertlayers.extract is deprecated: use `from bertlayers import Extractor, ExtractConfig`"
)
