"""Optional parts and the extra that installs each: a missing one is one line naming the
`pip install` to run, not an ImportError."""

from __future__ import annotations

import importlib.util

from .errors import BertlayersError


class MissingExtra(BertlayersError):
    """An optional package is not installed."""


_PACKAGES = {"sklearn": "scikit-learn"}  # what pip calls the modules whose names differ


def require(module: str, extra: str, what: str) -> None:
    """Raise `MissingExtra` unless `module` can be imported (checked without importing it)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or set to None
        found = False
    if not found:
        raise MissingExtra(
            f"{what} needs the {_PACKAGES.get(module, module)} package: "
            f"pip install 'bertlayers[{extra}]'"
        )
