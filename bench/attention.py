"""Attention maps as a bertviz user gets them, against bertlayers, on the same texts in one run.

Contenders, on the bundled model, float32 on the CPU, every layer and head:
- `loop`: what bertviz users run — one text at a time through transformers with eager
  attention and `output_attentions=True` (the maps copied out as numpy, as bertviz does);
- `bertlayers`: `Extractor.attentions(texts)` — length-sorted batches under a map budget.
Texts: fortunes joined and cut to 32, 128 and 512 tokens (specials included). Maps per second
are texts per second (one text's maps are every layer x head x T x T); both contenders' maps are
compared (max abs diff). Then the peak RSS of `bertlayers attention CORPUS --stats -o DIR` as a
whole process on 1x and 10x a corpus: the statistics are streamed, so memory stays flat.

    python bench/attention.py --out bench/results/attention.json
    python bench/attention.py --smoke       # a few texts (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from meta import run_record, run_with_peak_rss

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent


def texts_of_length(tokenizer, lines: list[str], length: int, count: int) -> list[str]:
    """`count` texts of exactly `length` tokens with specials: fortunes joined, then cut."""
    words = " ".join(lines).split()
    out, start = [], 0
    for _ in range(count):
        ids = tokenizer(" ".join(words[start : start + 2 * length]), add_special_tokens=False)
        piece = tokenizer.decode(ids["input_ids"][: length - 2])
        while len(tokenizer(piece)["input_ids"]) > length:  # decoding can merge pieces
            piece = piece.rsplit(" ", 1)[0]
        out.append(piece)
        start = (start + 2 * length) % max(1, len(words) - 2 * length)
    return out


class Loop:
    """One text at a time, eager attention, `output_attentions=True` (bertviz's way)."""

    name = "loop"

    def __init__(self, path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()

    @torch.inference_mode()
    def run(self, texts: list[str]) -> list[np.ndarray]:
        out = []
        for text in texts:
            inputs = self.tokenizer(text, return_tensors="pt")
            attentions = self.model(**inputs, output_attentions=True).attentions
            out.append(torch.stack(attentions)[:, 0].numpy())  # (L, A, T, T)
        return out


class Bertlayers:
    name = "bertlayers"

    def __init__(self, path) -> None:
        from bertlayers import Extractor

        self.extractor = Extractor(str(path), device="cpu")

    def run(self, texts: list[str]) -> list[np.ndarray]:
        return [m.maps for m in self.extractor.attentions(texts)]


def speed(lengths: list[int], count: int, rounds: int) -> dict:
    from bertlayers.core.encoder import bundled_model_path

    path = bundled_model_path()
    contenders = [Loop(path), Bertlayers(path)]
    lines = (DATA / "corpus-fortunes.txt").read_text(encoding="utf-8").splitlines()
    results = {}
    for length in lengths:
        texts = texts_of_length(contenders[0].tokenizer, lines, length, count)
        for c in contenders:  # warm-up
            c.run(texts[:2])
        times: dict[str, list[float]] = {c.name: [] for c in contenders}
        maps = {}
        for _ in range(rounds):
            for c in contenders:
                start = time.perf_counter()
                maps[c.name] = c.run(texts)
                times[c.name].append(time.perf_counter() - start)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(*maps.values(), strict=True))
        rows = {
            name: {
                "seconds": round(statistics.median(t), 4),
                "texts_per_s": round(len(texts) / statistics.median(t), 2),
            }
            for name, t in times.items()
        }
        results[str(length)] = {
            "texts": len(texts),
            "tokens_per_text": length,
            "contenders": rows,
            "speedup": round(rows["bertlayers"]["texts_per_s"] / rows["loop"]["texts_per_s"], 2),
            "max_abs_diff": diff,
        }
        print(f"{length} tokens: {json.dumps(results[str(length)])}", file=sys.stderr)
    return results


def memory(lines: int, factor: int, tmp: Path) -> dict:
    """Peak RSS of `bertlayers attention --stats` as a whole process on 1x and `factor`x."""
    corpus = (DATA / "corpus-fortunes.txt").read_text(encoding="utf-8").splitlines()
    texts = [t for t in corpus if t.strip()][:lines]
    out = {}
    for times in (1, factor):
        path = tmp / f"corpus-{times}x.txt"
        path.write_text("\n".join(texts * times) + "\n", encoding="utf-8")
        command = [
            str(BIN / "bertlayers"), "attention", str(path), "--stats", "-o",
            str(tmp / f"stats-{times}x"), "--long", "truncate", "-q", "--overwrite",
        ]  # fmt: skip
        errors = tmp / f"stats-{times}x.stderr"
        with errors.open("wb") as stderr:
            status, wall, peak = run_with_peak_rss(
                command, stdout=subprocess.DEVNULL, stderr=stderr
            )
        if status != 0:
            raise SystemExit(f"{' '.join(command)} failed: {errors.read_text()[-2000:]}")
        out[f"{times}x"] = {
            "texts": len(texts) * times,
            "wall_s": round(wall, 2),
            "peak_rss_mib": round(peak, 1),
            "peak_rss_from": "VmHWM in /proc, polled every 20 ms",
            "command": " ".join(["bertlayers", *command[1:]]),
        }
        print(f"stats {times}x: {out[f'{times}x']}", file=sys.stderr)
    first, last = out["1x"]["peak_rss_mib"], out[f"{factor}x"]["peak_rss_mib"]
    out["growth"] = round(last / first - 1, 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="32,128,512")
    parser.add_argument("--texts", type=int, default=64, help="texts per length")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stats-texts", type=int, default=500)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.smoke:
        args.lengths, args.texts, args.rounds, args.stats_texts, args.factor = "32", 4, 1, 20, 2
    lengths = [int(n) for n in args.lengths.split(",")]
    result = run_record(
        peers={"loop": "transformers AutoModel, attn_implementation='eager', one text a time"},
        threads=torch.get_num_threads(),
    )
    result["speed"] = speed(lengths, args.texts, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        result["stats_memory"] = memory(args.stats_texts, args.factor, Path(tmp))
    text = json.dumps(result, indent=1) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
