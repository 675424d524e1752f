"""Where bertlayers' time goes: a torch.profiler breakdown of one extraction run.

python bench/breakdown.py --texts 600 --out bench/results/breakdown.txt
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from speed import _quiet_libraries, load_corpus

GROUPS = {
    "linear (aten::addmm/mm/linear)": ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul"),
    "attention (sdpa)": ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product"),
    "layer norm": ("aten::layer_norm", "aten::native_layer_norm"),
    "gelu": ("aten::gelu",),
}


def main() -> None:
    _quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--news", type=int, default=15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from bertlayers import Extractor

    texts = load_corpus(args.texts, args.news)
    extractor = Extractor(device="cpu")
    extractor.embed(texts[:16], layers="all")
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        extractor.embed(texts, layers="all", pooling="mean")
    wall = time.perf_counter() - start
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    lines = [f"{len(texts)} texts, wall {wall:.2f} s (profiler on), self CPU by group:"]
    grouped = 0.0
    for label, names in GROUPS.items():
        share = sum(e.self_cpu_time_total for e in events if e.key.startswith(names))
        grouped += share
        lines.append(f"  {label:<34}{share / total:6.1%}")
    lines.append(f"  {'everything else':<34}{1 - grouped / total:6.1%}")
    lines.append("")
    lines.append(events.table(sort_by="self_cpu_time_total", row_limit=15))
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
