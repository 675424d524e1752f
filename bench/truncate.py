"""A cut model against the full one, as users run them: whole processes, start-up apart.

For each K, `bertlayers truncate --keep-layers K` cuts the model (timed, in this process), then
each contender runs as its own process on the same corpus file, timed from outside (wall
clock, peak RSS from the kernel) with its start-up measured the same way on a one-line file
and subtracted (as bench/cli.py does, whose `timed` this reuses):
- `st-encode`: a script that loads sentence-transformers and `encode(texts, batch_size=32)`,
  saving the array: on the full model (its last layer: one run for all K) and on each cut
  model (layer K, pooled as the model's modules say);
- `cli`: `bertlayers extract CORPUS -o OUT.npy --layers K --quiet` on the full model (it runs
  only the first K layers already: the early exit) and `--layers -1` on the cut one; the two
  outputs' largest difference is recorded.
Rounds go round-robin over every run; figures are medians. Also recorded: the size on disk of
each model directory and its weights, and the seconds the cut took.

    python bench/truncate.py --out bench/results/truncate.json
    python bench/truncate.py --texts 50 --rounds 1 --keep 2,6     # a quick check
    python bench/truncate.py --worker st --model DIR --corpus F --output O   # (internal)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "bench"))

from cli import timed  # noqa: E402  (bench/cli.py: a process's wall time and peak RSS)
from meta import cpu_model, git_commit  # noqa: E402  (the code's commit; results files aside)

ST_BATCH = 32


# ---------------------------------------------------------------- the worker (own process)


def worker_st(model: str, corpus: Path, out: Path) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device="cpu")
    texts = corpus.read_text(encoding="utf-8").splitlines()
    np.save(out, st.encode(texts, batch_size=ST_BATCH, show_progress_bar=False))


# ---------------------------------------------------------------- the parent


def st_command(model: Path, corpus: Path, out: Path) -> list[str]:
    return [sys.executable, __file__, "--worker", "st", "--model", str(model), "--corpus",
            str(corpus), "--output", str(out)]  # fmt: skip


def cli_command(model: Path, layer: int, corpus: Path, out: Path) -> list[str]:
    return [str(BIN / "bertlayers"), "extract", str(corpus), "-o", str(out), "--model",
            str(model), f"--layers={layer}", "--quiet", "--overwrite"]  # fmt: skip


def write_corpus(source: Path, count: int, root: Path) -> tuple[Path, Path, int]:
    """The first `count` lines of `source` (whitespace made single spaces) and a one-line file."""
    lines = source.read_text(encoding="utf-8").splitlines()[:count]
    texts = [" ".join(line.split()) for line in lines]
    corpus, one = root / "corpus.txt", root / "one.txt"
    corpus.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    one.write_text(texts[0] + "\n", encoding="utf-8")
    return corpus, one, len(texts)


def size_mb(path: Path, pattern: str = "*") -> float:
    return round(sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file()) / 1e6, 1)


def machine() -> dict:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("bertlayers", "torch", "transformers", "sentence-transformers", "tokenizers"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def measure(runs: dict[str, tuple[list[str], list[str]]], rounds: int) -> dict:
    """Each run (name -> (command on the corpus, command on one line)), `rounds` times
    round-robin: medians of wall, start-up and net seconds, and the peak RSS."""
    seen = {name: {"walls": [], "startups": [], "rss": []} for name in runs}
    for _ in range(rounds):
        for name, (full, one) in runs.items():
            startup, run = timed(one), timed(full)
            seen[name]["startups"].append(startup["wall"])
            seen[name]["walls"].append(run["wall"])
            seen[name]["rss"].append(run["rss_mib"])
            print(f"{name:14} wall {run['wall']:7.2f} s  start-up {startup['wall']:5.2f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    table = {}
    for name, got in seen.items():
        wall, startup = statistics.median(got["walls"]), statistics.median(got["startups"])
        table[name] = {
            "wall_s": round(wall, 3),
            "startup_s": round(startup, 3),
            "net_s": round(wall - startup, 3),
            "peak_rss_mib": round(max(got["rss"]), 1),
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the bundled all-MiniLM-L6-v2")
    parser.add_argument("--keep", default=None, help="K values, e.g. 1,2,3 (default: 1..L)")
    parser.add_argument("--texts", type=int, default=2000, help="first N lines of the corpus")
    parser.add_argument("--corpus", default=str(DATA / "corpus-fortunes.txt"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contenders", default="st-encode,cli", help="st-encode, cli")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_st(args.model, Path(args.corpus), Path(args.output))
        return

    import numpy as np
    from transformers import AutoConfig

    from bertlayers.core.encoder import default_model
    from bertlayers.core.truncate import WEIGHTS, truncate_model

    full = Path(args.model or default_model())
    layers = int(AutoConfig.from_pretrained(full).num_hidden_layers)
    keeps = [int(k) for k in args.keep.split(",")] if args.keep else list(range(1, layers + 1))
    contenders = args.contenders.split(",")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus, one, count = write_corpus(Path(args.corpus), args.texts, tmp)
        cuts, cut_seconds, runs = {}, {}, {}
        if "st-encode" in contenders:
            runs["st-encode full"] = (st_command(full, corpus, tmp / "st-full.npy"),
                                      st_command(full, one, tmp / "one.npy"))  # fmt: skip
        for keep in keeps:
            start = time.perf_counter()
            cuts[keep] = truncate_model(str(full), keep, tmp / f"cut-{keep}")
            cut_seconds[keep] = round(time.perf_counter() - start, 2)
            if "st-encode" in contenders:
                runs[f"st-encode cut-{keep}"] = (
                    st_command(cuts[keep], corpus, tmp / f"st-cut-{keep}.npy"),
                    st_command(cuts[keep], one, tmp / "one.npy"),
                )
            if "cli" in contenders:
                runs[f"cli full-{keep}"] = (
                    cli_command(full, keep, corpus, tmp / f"cli-full-{keep}.npy"),
                    cli_command(full, keep, one, tmp / "one.npy"),
                )
                runs[f"cli cut-{keep}"] = (
                    cli_command(cuts[keep], -1, corpus, tmp / f"cli-cut-{keep}.npy"),
                    cli_command(cuts[keep], -1, one, tmp / "one.npy"),
                )
        table = measure(runs, args.rounds)
        for row in table.values():  # None: start-up noise outweighs the run (too few texts)
            row["texts_per_s"] = round(count / row["net_s"], 1) if row["net_s"] > 0 else None
        per_k = {}
        for keep in keeps:
            entry = {
                "cut_s": cut_seconds[keep],
                "size_mb": size_mb(cuts[keep]),
                "weights_mb": size_mb(cuts[keep], WEIGHTS),
            }
            for name in (f"st-encode cut-{keep}", f"cli full-{keep}", f"cli cut-{keep}"):
                if name in table:
                    entry[name.replace(f"-{keep}", "")] = table[name]
            if "cli" in contenders:
                a = np.load(tmp / f"cli-full-{keep}.npy")
                b = np.load(tmp / f"cli-cut-{keep}.npy")
                entry["cli_cut_vs_full_max_abs_diff"] = float(np.abs(a - b).max())
            per_k[str(keep)] = entry
    report = {
        "command": "python " + " ".join(sys.argv),
        "git_commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "flags": {
            "model": str(full),
            "layers": layers,
            "keep": keeps,
            "texts": count,
            "corpus": args.corpus,
            "rounds": args.rounds,
            "contenders": contenders,
            "st_batch_size": ST_BATCH,
            "device": "cpu",
            "dtype": "float32",
        },
        "full": {
            "size_mb": size_mb(full),
            "weights_mb": size_mb(full, WEIGHTS),
            **({"st-encode": table["st-encode full"]} if "st-encode full" in table else {}),
        },
        "keep": per_k,
    }
    print_table(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


def print_table(report: dict) -> None:
    full = report["full"]
    st_full = full.get("st-encode", {}).get("texts_per_s")
    print(f"\n{report['flags']['texts']} texts; full model {full['size_mb']} MB on disk"
          + (f"; st-encode full {st_full} texts/s" if st_full else ""))  # fmt: skip
    print("\n| K | size MB | st-encode cut texts/s | cli full --layers K | cli cut --layers -1 |")
    print("|---|---|---|---|---|")
    for keep, row in report["keep"].items():
        rates = [row.get(n, {}).get("texts_per_s", "-") for n in ("st-encode cut", "cli full",
                 "cli cut")]  # fmt: skip
        print(f"| {keep} | {row['size_mb']} | " + " | ".join(str(r) for r in rates) + " |")


if __name__ == "__main__":
    main()
