"""The Ray runner against the local engine, as users run them: whole `bertlayers extract`
processes on the same corpus, start-up measured apart.

Contenders (all float32 on CPU, every layer, mean pooling, Parquet output):
- `local`: `bertlayers extract CORPUS -o OUT.parquet` (the local engine, torch's 2 threads);
- `ray-1`, `ray-2`: `--engine ray --actors N --cpus-per-actor 1` (each actor 1 thread, as
  Ray sets OMP_NUM_THREADS from the actor's CPUs; the shards record the threads they ran on);
- `ray-1x2`: one actor holding both CPUs (`--cpus-per-actor 2`).
Without `--address` each Ray run starts a local cluster, as a user on one machine does: that,
the actors' model loads and the driver's plan are its start-up, measured on a one-line file
and subtracted to give the net throughput. Rounds alternate the contenders; medians are kept.

    python bench/ray.py --out bench/results/ray.json
    python bench/ray.py --smoke                     # 40 texts, local and ray-2, one round: CI
    python bench/ray.py --rates --out bench/results/ray-rates.json   # the driver's plan and
                                                    # the tokenizer, in records/s and tokens/s
Each Ray store is also checked against the local one (max abs diff over every layer).
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
from meta import run_record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent

CONTENDERS = {
    "local": [],
    "ray-1": ["--engine", "ray", "--actors", "1", "--cpus-per-actor", "1"],
    "ray-2": ["--engine", "ray", "--actors", "2", "--cpus-per-actor", "1"],
    "ray-1x2": ["--engine", "ray", "--actors", "1", "--cpus-per-actor", "2"],
}


def write_corpus(root: Path, texts: int) -> tuple[Path, Path]:
    """Fortunes under 300 characters, one per line, and a one-line file for start-up."""
    lines = (DATA / "corpus-fortunes.txt").read_text(encoding="utf-8").splitlines()
    chosen = [" ".join(t.split()) for t in lines if t.strip() and len(t) < 300][:texts]
    corpus, one = root / "corpus.txt", root / "one.txt"
    corpus.write_text("".join(t + "\n" for t in chosen), encoding="utf-8")
    one.write_text(chosen[0] + "\n", encoding="utf-8")
    return corpus, one


def timed(command: list[str]) -> float:
    """Wall seconds of one whole process (which must succeed)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=err)
        wall = time.perf_counter() - start
        if process.returncode != 0:
            err.seek(0)
            raise SystemExit(f"failed: {' '.join(command)}\n{err.read().decode()[-2000:]}")
    return wall


def command(name: str, corpus: Path, out: Path, shard_size: int, address: str | None):
    options = CONTENDERS[name]
    target = out.with_suffix(".parquet") if name == "local" else out
    extra = ["--shard-size", str(shard_size)] if name != "local" else []
    if address and name != "local":
        extra += ["--address", address]
    return [str(BIN / "bertlayers"), "extract", str(corpus), "-o", str(target), "--layers",
            "all", "--quiet", "--overwrite", *options, *extra]  # fmt: skip


def threads_of(out: Path) -> list[int]:
    """The torch threads each shard of a Ray run was embedded with."""
    from bertlayers.distributed.runner import shard_summary

    return sorted({shard_summary(p)["threads"] for p in out.glob("part-*.parquet")})


def max_diff(ray_out: Path, local_out: Path) -> float:
    """The largest difference between a Ray store's vectors and the local store's."""
    import numpy as np

    from bertlayers import load

    a, b = load(ray_out), load(local_out)
    assert a.ids == b.ids, "the Ray store's ids differ from the local store's"
    return float(np.abs(a.embeddings - b.embeddings).max())


def rates(texts: int, rounds: int) -> dict:
    """What bounds a run besides the model: the driver's plan (records/s over BBC articles as
    JSON lines, 10 copies) and the fast tokenizer (tokens/s, batched, on the fortunes);
    medians of `rounds` runs."""
    from transformers import AutoTokenizer

    from bertlayers.core.encoder import bundled_model_path
    from bertlayers.distributed.plan import plan_shards
    from bertlayers.io.readers import ReaderOptions

    with tempfile.TemporaryDirectory() as tmp:
        articles = (DATA / "news-bbc.jsonl").read_text(encoding="utf-8")
        big = Path(tmp) / "bbc10.jsonl"
        big.write_text(articles * 10, encoding="utf-8")
        plan_times = []
        for _ in range(rounds):
            start = time.perf_counter()
            shards = plan_shards([str(big)], ReaderOptions(id_column="id"), 10_000)
            plan_times.append(time.perf_counter() - start)
        plan_s = statistics.median(plan_times)
        records = sum(s.stop - s.start for s in shards)
        size = big.stat().st_size
        corpus, _ = write_corpus(Path(tmp), texts)
        lines = corpus.read_text(encoding="utf-8").splitlines()
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()))
    tokenize_times = []
    for _ in range(rounds):
        start = time.perf_counter()
        ids = tokenizer(lines)["input_ids"]
        tokenize_times.append(time.perf_counter() - start)
    tokenize_s = statistics.median(tokenize_times)
    tokens = sum(len(x) for x in ids)
    plan = {"records": records, "mb": round(size / 1e6, 1), "seconds": round(plan_s, 3)}
    plan.update(records_per_s=round(records / plan_s), mb_per_s=round(size / 1e6 / plan_s, 1))
    per_text = round(tokens / len(lines), 1)
    tokenizer_rate = {"texts": len(lines), "tokens": tokens, "tokens_per_text": per_text}
    tokenizer_rate.update(seconds=round(tokenize_s, 3), tokens_per_s=round(tokens / tokenize_s))
    return {"plan": plan, "tokenizer": tokenizer_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=6000)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--address", default=None, help="a running cluster (default: local)")
    parser.add_argument("--smoke", action="store_true", help="40 texts, local and ray-2, once")
    parser.add_argument("--rates", action="store_true", help="the plan's and tokenizer's rates")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.rates:
        result = {**run_record(), **rates(args.texts, max(args.rounds, 3))}
        print(json.dumps(result, indent=1))
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
        return
    if args.smoke:
        args.texts, args.shard_size, args.rounds, args.contenders = 40, 10, 1, "local,ray-2"
    names = args.contenders.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus, one = write_corpus(root, args.texts)
        walls: dict[str, list[float]] = {n: [] for n in names}
        starts: dict[str, list[float]] = {n: [] for n in names}
        threads: dict[str, list[int]] = {}
        diffs: dict[str, float] = {}
        for round_ in range(args.rounds):
            for name in names:
                out = root / f"{name}-out"
                starts[name].append(
                    timed(command(name, one, root / f"{name}-one", args.shard_size, args.address))
                )
                walls[name].append(timed(command(name, corpus, out, args.shard_size, args.address)))
                if name != "local":
                    threads[name] = threads_of(out)
                    if "local" in names:
                        diffs[name] = max_diff(out, (root / "local-out").with_suffix(".parquet"))
                print(
                    f"round {round_ + 1} {name}: {walls[name][-1]:.1f} s, start-up "
                    f"{starts[name][-1]:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    rows = {}
    for name in names:
        wall, start = statistics.median(walls[name]), statistics.median(starts[name])
        net = max(wall - start, 1e-9)
        rows[name] = {
            "wall_s": round(wall, 2),
            "startup_s": round(start, 2),
            "net_s": round(net, 2),
            "texts_per_s_net": round(args.texts / net, 1),
            "texts_per_s_gross": round(args.texts / wall, 1),
            "walls": [round(w, 2) for w in walls[name]],
            "startups": [round(s, 2) for s in starts[name]],
            **({"threads_per_actor": threads[name]} if name in threads else {}),
            **({"max_abs_diff_vs_local": diffs[name]} if name in diffs else {}),
        }
    if "local" in rows:
        for row in rows.values():
            row["net_vs_local"] = round(
                row["texts_per_s_net"] / rows["local"]["texts_per_s_net"], 3
            )
    result = {
        **run_record(),
        "corpus": f"{args.texts} fortunes under 300 characters, shards of {args.shard_size}",
        "rounds": args.rounds,
        "results": rows,
    }
    print(f"{'contender':<10}{'net texts/s':>12}{'vs local':>10}{'start-up s':>12}{'wall s':>9}")
    for name, row in rows.items():
        print(
            f"{name:<10}{row['texts_per_s_net']:>12}{row.get('net_vs_local', ''):>10}"
            f"{row['startup_s']:>12}{row['wall_s']:>9}"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
