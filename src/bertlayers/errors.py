"""User-facing errors: one clear line that names the problem, never a traceback.

A message names an option the way its reader spells it. The library writes
`{opt:NAME}` or `{opt:NAME=VALUE}` where an option belongs in the message; `str(err)` spells
it as the Python API does (`long='split'`, `overwrite=True`), and a front end spells it its
own way (`--long split`, `--overwrite` on the command line; a field name in the service) with
`err.spelled(spelling)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_OPTION = re.compile(r"\{opt:([a-z_]+)(?:=([^{}]*))?\}")

Spelling = Callable[[str, "str | None"], str]


def python_spelling(name: str, value: str | None) -> str:
    """How the Python API names an option: `layers`, `long='split'`, `overwrite=True`."""
    if value is None:
        return name
    if value in ("True", "False") or value.lstrip("-").isdigit():
        return f"{name}={value}"
    return f"{name}={value!r}"


def spell(template: str, spelling: Spelling = python_spelling) -> str:
    """A message template with each `{opt:...}` spelled by `spelling`."""
    return _OPTION.sub(lambda match: spelling(match[1], match[2]), template)


class Spelled:
    """A message whose option names are spelled for its reader (see the module docstring)."""

    @property
    def template(self) -> str:
        """The message as written, with its `{opt:...}` placeholders."""
        return str(self.args[0]) if self.args else ""  # type: ignore[attr-defined]

    def spelled(self, spelling: Spelling) -> str:
        return spell(self.template, spelling)

    def __str__(self) -> str:
        return self.spelled(python_spelling)


class BertlayersError(Spelled, Exception):
    """An error caused by the user's input or settings; its message is one line for the user."""


class InputError(BertlayersError):
    """Bad input data: missing file, invalid UTF-8, missing column, empty file."""


class ModelError(BertlayersError):
    """The model cannot be loaded or is not an encoder."""


class OptionError(BertlayersError, ValueError):
    """An option has an invalid value (layer out of range, unknown pooling, ...)."""


class OutputError(BertlayersError):
    """The output cannot be written (exists, unwritable directory, disk full)."""


class TruncationWarning(Spelled, UserWarning):
    """Some texts were longer than the model's limit and were truncated."""


class ReplacedWordsWarning(Spelled, UserWarning):
    """Some pre-split words gave no token and were embedded as the unknown token."""


def warn_deprecated(message: str) -> None:
    """A `DeprecationWarning` at the caller's line: the first frame outside bertlayers and
    the import machinery (so a deprecated module warns where it is imported)."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None:
        name = frame.f_code.co_filename
        if not (name.startswith("<frozen") or os.path.abspath(name).startswith(package + os.sep)):
            break
        frame, level = frame.f_back, level + ("importlib._bootstrap" not in name)  # as warn
    warnings.warn(message, DeprecationWarning, stacklevel=level + 1)


def first_line(err: BaseException) -> str:
    """The first non-blank line of an error's message, else its type's name: for errors of
    other libraries (transformers, Ray, the OS) that must reach the user as one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
