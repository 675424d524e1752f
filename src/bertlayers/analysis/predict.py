"""`LabelSink`: labels embedded chunks with a saved probe as they arrive, one line each."""

from __future__ import annotations

from typing import TextIO

import numpy as np

from ..sinks import ArrayRows


class LabelSink:
    """A sink that labels each embedded chunk with the probe and writes the lines at once:
    `id<TAB>label[<TAB>probability]` per text, or `word<TAB>tag` per word (CoNLL)."""

    def __init__(self, probe, out: TextIO, proba: bool) -> None:
        self.probe, self.out, self.proba = probe, out, proba

    def reserve(self, n_rows: int, row_shape: tuple[int, ...], dtype: np.dtype) -> ArrayRows:
        return ArrayRows(n_rows, row_shape, dtype)

    def write(self, chunk) -> None:
        labels = self.probe.predict(chunk.vectors)
        lines = []
        if getattr(chunk, "items", None) is not None:  # words: one tag each, CoNLL
            start = 0
            for length in chunk.lengths.tolist():
                for j in range(start, start + length):
                    lines.append(f"{chunk.items[j]}\t{labels[j]}\n")
                lines.append("\n")
                start += length
        else:
            proba = self.probe.predict_proba(chunk.vectors) if self.proba else None
            for i, record_id in enumerate(chunk.ids):
                tail = f"\t{proba[i].max():.4f}" if proba is not None else ""
                lines.append(f"{record_id}\t{labels[i]}{tail}\n")
        self.out.write("".join(lines))
        self.out.flush()

    def close(self, provenance: dict) -> None:
        pass

    def abort(self, provenance: dict) -> None:
        pass
