"""The progress bar of a long run on stderr: by tokens where the input's size is known, with the
texts done beside them.

Work runs longest texts first (each chunk is sorted by length), so a bar counting texts crawls
at the start and its ETA was 5-30x too high. Tokens take about the same time each, so where the
command line knows the input's characters up front, the bar counts tokens: its total is the
characters times the tokens per character of the chunks done so far (a prior of
`CHARS_PER_TOKEN` before the first chunk ends), and the texts done show beside it.
"""

from __future__ import annotations

import sys
import time

CHARS_PER_TOKEN = 4.0  # English WordPiece/BPE, before the first chunk tells the input's own


class Progress:
    """A tqdm bar on stderr; does nothing when disabled.

    `total` is the texts to do; `total_chars` their characters (texts and pairs), which makes
    the bar count tokens (see the module docstring). Without it the bar counts texts."""

    def __init__(self, enabled: bool, total: int | None, total_chars: int | None = None) -> None:
        self.bar = None
        self.tokens = 0
        self.texts = 0
        self.total = total
        self.total_chars = total_chars
        # tokens the whole run will take, as estimated now (None: the bar counts texts)
        self.estimate = None if total_chars is None else round(total_chars / CHARS_PER_TOKEN)
        self.start = time.perf_counter()
        if enabled:
            from tqdm.auto import tqdm

            by_tokens = total_chars is not None
            self.bar = tqdm(
                total=self.estimate if by_tokens else total,
                unit="tok" if by_tokens else "text",
                unit_scale=by_tokens,
                file=sys.stderr,
                dynamic_ncols=True,
                smoothing=0.1,
            )

    @property
    def by_tokens(self) -> bool:
        return self.total_chars is not None

    def update(self, texts: int, tokens: int) -> None:
        self.tokens += tokens
        self.texts += texts
        if self.bar is None:
            return
        if self.by_tokens:
            done = f"{self.texts:,}/{self.total:,}" if self.total is not None else f"{self.texts:,}"
            self.bar.set_postfix_str(f"{done} texts", refresh=False)
            self.bar.update(tokens)
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tok/s", refresh=False)
        self.bar.update(texts)

    def calibrate(self, chars_done: int) -> None:
        """The texts done so far had `chars_done` characters: re-estimate the total tokens
        from their tokens per character (called where a chunk ends)."""
        if not self.by_tokens or chars_done <= 0 or self.tokens <= 0:
            return
        left = max(self.total_chars - chars_done, 0)
        self.estimate = self.tokens + round(left * self.tokens / chars_done)
        if self.bar is not None:
            self.bar.total = self.estimate  # shown at the next update

    def close(self, failed: bool = False) -> None:
        """Close the bar; after a failure, erase it so the error stands alone."""
        if self.bar is not None:
            if not failed and self.by_tokens:
                self.bar.total = self.bar.n  # the estimate met: the bar ends full
            self.bar.leave = not failed
            self.bar.close()


SILENT = None  # routes take `Progress | None`; None reports nothing


def text_chars(text: str, pair: str | None = None) -> int:
    """The characters a record weighs in the bar's estimate."""
    return len(text) + (len(pair) if pair else 0)
