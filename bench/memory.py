"""Peak memory does not grow with the corpus: the same extraction on 1x and 10x the text.

Runs `bertlayers extract` (token level, every layer, float16, streamed to disk) as a child
process on the first N texts of ../shared/data/corpus-fortunes.txt and on those N texts
repeated 10 times (the same length distribution, so only the amount of text differs), and
reads each child's peak RSS from the kernel (wait4). Prints a table and writes JSON.

    python bench/memory.py --texts 1000 --out bench/results/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000, help="texts in the 1x corpus")
    parser.add_argument("--factor", type=int, default=10, help="the larger corpus is this many x")
    parser.add_argument("--level", default="token")
    parser.add_argument("--format", default="npy", help="store format (npy, h5, parquet, ...)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    lines = CORPUS.read_text(encoding="utf-8").splitlines()[: args.texts]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (args.texts, args.texts * args.factor):
            corpus = Path(tmp) / f"corpus-{size}.txt"
            corpus.write_text("\n".join(lines * (size // len(lines))) + "\n", encoding="utf-8")
            output = Path(tmp) / f"out-{size}.{args.format}"
            command = [
                sys.executable,
                "-m",
                "bertlayers",
                "extract",
                str(corpus),
                "-o",
                str(output),
                "--level",
                args.level,
                "--layers",
                "all",
                "--output-dtype",
                "float16",
                "-q",
            ]
            rss, seconds = peak_rss_mib(command)
            from bertlayers.stores import disk_size

            results.append(
                {
                    "texts": size,
                    "peak_rss_mib": round(rss, 1),
                    "seconds": round(seconds, 1),
                    "output_mib": round(disk_size(output) / 2**20, 1),
                }
            )
            print(
                f"{size:>7} texts  peak RSS {rss:8.1f} MiB  {seconds:6.1f} s  "
                f"output {results[-1]['output_mib']:8.1f} MiB",
                flush=True,
            )
    growth = results[1]["peak_rss_mib"] / results[0]["peak_rss_mib"] - 1
    print(f"peak RSS growth for {args.factor}x the text: {growth:+.1%} (target: within 10%)")
    report = {
        "command": " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "level": args.level,
        "format": args.format,
        "runs": results,
        "rss_growth": round(growth, 4),
        "within_10_percent": abs(growth) <= 0.10,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
