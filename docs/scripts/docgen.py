"""What the doc generators share: the repository root, and writing or checking their files.

Each generator (`gen_cli.py`, `render_openapi.py`, `render_benchmarks.py`) has a `render()`
returning `{path: text}`; `make docs` writes those files before `mkdocs build`, and
tests/test_docs.py fails when a committed one differs from what its source gives now.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cell(text: object) -> str:
    """A value as one Markdown table cell: no newline, no bare pipe."""
    return " ".join(str(text).split()).replace("|", "\\|")


def write_or_check(files: dict[Path, str], check: bool, remake: str) -> int:
    """Write the files that changed, or (check) name each stale one and return 1."""
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    if check:
        for path in stale:
            name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            print(f"{name} is stale: run {remake}", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
    return 0


def main(render: Callable[[], dict[Path, str]], doc: str, remake: str) -> int:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is stale"
    )
    args = parser.parse_args()
    return write_or_check(render(), args.check, remake)
