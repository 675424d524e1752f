"""Peak memory does not grow with the corpus: the same extraction on 1x and 10x the text.

Runs `bertlayers extract` (token level, every layer, float16, streamed to disk) as a child
process on the first N texts of ../shared/data/corpus-fortunes.txt and on those N texts
repeated 10 times (the same length distribution, so only the amount of text differs), writing
each store format in turn, and reads each child's peak RSS from the kernel (wait4). Prints a
table and writes JSON.

    python bench/memory.py --texts 1000 --out bench/results/memory.json
    python bench/memory.py --level sentence --layers 0 --texts 10000 --formats npy,parquet \
        --out bench/results/memory-sentence.json   # 100,000 texts: what grows per text
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus-fortunes.txt"


def peak_rss_mib(command: list[str]) -> tuple[float, float]:
    """Run a command; return (peak RSS in MiB, wall seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(command)}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


FORMATS = ("npy", "npz", "h5", "parquet", "safetensors")


def measure(corpora: dict[int, Path], fmt: str, level: str, layers: str, tmp: str) -> dict:
    """Peak RSS of one extraction per corpus size, written as `fmt`; the growth between them."""
    from bertlayers.stores import disk_size

    runs = []
    for size, corpus in corpora.items():
        output = Path(tmp) / f"out-{size}.{fmt}"
        command = [
            sys.executable,
            "-m",
            "bertlayers",
            "extract",
            str(corpus),
            "-o",
            str(output),
            "--level",
            level,
            "--layers",
            layers,
            "--output-dtype",
            "float16",
            "-q",
        ]
        rss, seconds = peak_rss_mib(command)
        runs.append(
            {
                "texts": size,
                "peak_rss_mib": round(rss, 1),
                "seconds": round(seconds, 1),
                "output_mib": round(disk_size(output) / 2**20, 1),
            }
        )
        print(
            f"{fmt:>12} {size:>7} texts  peak RSS {rss:8.1f} MiB  {seconds:6.1f} s  "
            f"output {runs[-1]['output_mib']:8.1f} MiB",
            flush=True,
        )
        for part in Path(tmp).glob(f"out-{size}.*"):  # the store and its sidecars: free the disk
            part.unlink()
    growth = runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"] - 1
    return {"runs": runs, "rss_growth": round(growth, 4), "within_10_percent": abs(growth) <= 0.10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000, help="texts in the 1x corpus")
    parser.add_argument("--factor", type=int, default=10, help="the larger corpus is this many x")
    parser.add_argument("--level", default="token")
    parser.add_argument(
        "--layers",
        default="all",
        help="layers to extract (`0` runs only the embeddings: many texts quickly, to see "
        "what grows per text)",
    )
    parser.add_argument(
        "--formats", default=",".join(FORMATS), help="store formats, comma-separated"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    lines = CORPUS.read_text(encoding="utf-8").splitlines()[: args.texts]
    formats = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {}
        for size in (args.texts, args.texts * args.factor):
            corpora[size] = Path(tmp) / f"corpus-{size}.txt"
            text = "\n".join(lines * (size // len(lines))) + "\n"
            corpora[size].write_text(text, encoding="utf-8")
        for fmt in args.formats.split(","):
            formats[fmt] = measure(corpora, fmt, args.level, args.layers, tmp)
    print(f"peak RSS growth for {args.factor}x the text (target: within 10%):")
    for fmt, result in formats.items():
        print(f"{fmt:>12} {result['rss_growth']:+.1%}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from meta import run_record

    report = {
        **run_record(),
        "level": args.level,
        "layers": args.layers,
        "formats": formats,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
