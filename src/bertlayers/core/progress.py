"""The progress bar of a long run: texts done on stderr, with tokens/s beside them."""

from __future__ import annotations

import sys
import time


class Progress:
    """A tqdm bar on stderr showing texts/s and tokens/s; does nothing when disabled."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.bar = None
        self.tokens = 0
        self.start = time.perf_counter()
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, unit="text", file=sys.stderr, dynamic_ncols=True, smoothing=0.1
            )

    def update(self, texts: int, tokens: int) -> None:
        if self.bar is None:
            return
        self.tokens += tokens
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tok/s", refresh=False)
        self.bar.update(texts)

    def close(self, failed: bool = False) -> None:
        """Close the bar; after a failure, erase it so the error stands alone."""
        if self.bar is not None:
            self.bar.leave = not failed
            self.bar.close()


SILENT = None  # routes take `Progress | None`; None reports nothing
