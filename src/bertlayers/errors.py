"""User-facing errors: one clear line that names the problem, never a traceback."""

from __future__ import annotations


class BertlayersError(Exception):
    """An error caused by the user's input or settings; its message is one line for the user."""


class InputError(BertlayersError):
    """Bad input data: missing file, invalid UTF-8, missing column, empty file."""


class ModelError(BertlayersError):
    """The model cannot be loaded or is not an encoder."""


class OptionError(BertlayersError, ValueError):
    """An option has an invalid value (layer out of range, unknown pooling, ...)."""


class OutputError(BertlayersError):
    """The output cannot be written (exists, unwritable directory, disk full)."""


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's limit and were truncated."""
