"""Deprecated alias of `bertlayers.io.readers` (the readers moved there)."""

from .errors import warn_deprecated
from .io.readers import *  # noqa: F403
from .io.readers import Record, read_records, records_from_texts, records_from_words  # noqa: F401

warn_deprecated("bertlayers.readers is deprecated: use bertlayers.io.readers")
