"""Speed as a user gets it: whole processes on three corpora, start-up measured apart.

Every contender runs as its own process, as a user runs it, on the same corpus file; each is
timed from outside (wall clock, peak RSS from the kernel), and its start-up is measured the
same way on a one-line file of the same kind and subtracted. Contenders, all float32 on CPU:
- `cli`: `bertlayers extract CORPUS -o OUT.npy --layers all --quiet` (mean pooling; the long
  corpus adds `--long split`);
- `cli-parquet`: the same, written as Parquet;
- `cli-tokens`: token level, every layer, float16 output, to `.npy`;
- `cli-openvino`: `--runtime openvino` (float32, exact);
- `cli-bf16`: `--dtype bfloat16` (approximate; its lowest cosine to `cli` per layer);
- `library`, `library-parquet`, `library-tokens`: the same runs in-process with `Extractor`
  (the model loaded first; what is timed is the run to the store, as the CLI does it), and
  `library-embed`: `Extractor.embed(texts, layers="all")` in memory;
- `st-encode`: a script that loads sentence-transformers, `encode(texts, batch_size=32)` and
  saves the array (its last layer only, as it offers no more);
- `tutorial`: a script with the 20-line loop: one text at a time, every hidden state,
  mean over tokens, truncated at 512.
Before the rounds each contender runs once on the one-line file, untimed (as any earlier run
would: the page cache warm for all, bertlayers' model cache built).
Corpora: `short` (the first 4,000 lines of corpus-fortunes.txt under 300 characters),
`mixed` (600 fortunes with 15 BBC articles spread through them, as bench/speed.py), and `long`
(BBC articles as JSON lines; bertlayers splits them into windows, the others truncate).

`--startup` measures start-up alone (#30): whole processes on a one-line file, round-robin,
medians of `--rounds` (5 unless given): `bertlayers extract` (the model cache warm), the same
without the cache (`BERTLAYERS_CACHE=off`: a model's first run), the same through
transformers' model (`BERTLAYERS_FORWARD=transformers`, no cache: the start-up before #30),
`bertlayers info`, `--layers 99` (refused from config.json), and the sentence-transformers
script, each as a ratio to the script.

    python bench/cli.py --out bench/results/cli.json
    python bench/cli.py --startup --out bench/results/startup.json
    python bench/cli.py --smoke          # a few texts, CI
    python bench/cli.py --worker ...     # (internal) one contender, in its own process
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent
MAX_LENGTH = 512

CLI_RUNS = {  # contender -> extra `bertlayers extract` options and output suffix
    "cli": ([], ".npy"),
    "cli-parquet": ([], ".parquet"),
    "cli-tokens": (["--level", "token", "--output-dtype", "float16"], ".npy"),
    "cli-openvino": (["--runtime", "openvino"], ".npy"),
    "cli-bf16": (["--dtype", "bfloat16"], ".npy"),
}
LIBRARY_RUNS = {  # contender -> (the CLI run it mirrors)
    "library": "cli",
    "library-parquet": "cli-parquet",
    "library-tokens": "cli-tokens",
}


# ---------------------------------------------------------------- corpora


def write_corpora(root: Path, short: int, fortunes: int, news: int, long: int) -> dict:
    """The three corpora as files (and a one-line file of each kind, for start-up)."""
    lines = (DATA / "corpus-fortunes.txt").read_text(encoding="utf-8").splitlines()
    short_texts = [t for t in lines if t.strip() and len(t) < 300][:short]
    sys.path.insert(0, str(ROOT / "bench"))
    from speed import load_corpus

    mixed_texts = load_corpus(fortunes, news)
    with (DATA / "news-bbc.jsonl").open(encoding="utf-8") as handle:
        articles = [json.loads(line) for _, line in zip(range(long), handle, strict=False)]
    corpora = {}
    for name, texts in (("short", short_texts), ("mixed", mixed_texts)):
        path = root / f"{name}.txt"
        path.write_text("".join(" ".join(t.split()) + "\n" for t in texts), encoding="utf-8")
        one = root / f"{name}-one.txt"
        one.write_text(" ".join(texts[0].split()) + "\n", encoding="utf-8")
        corpora[name] = {"path": path, "one": one, "options": [], "texts": len(texts)}
    path, one = root / "long.jsonl", root / "long-one.jsonl"
    rows = [json.dumps({"id": a["id"], "text": a["text"]}) + "\n" for a in articles]
    path.write_text("".join(rows), encoding="utf-8")
    one.write_text(rows[0], encoding="utf-8")
    corpora["long"] = {
        "path": path,
        "one": one,
        "options": ["--id-column", "id", "--long", "split"],
        "texts": len(rows),
    }
    return corpora


def read_texts(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    return path.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------- workers (own processes)


def worker_library(corpus: Path, out: Path, mirrors: str, options: list[str]) -> dict:
    """The CLI's run, in-process with `Extractor`: the same reader, config and store."""
    from bertlayers import Extractor
    from bertlayers.io.readers import read_records
    from bertlayers.stores import StoreSink

    long = "split" if "--long" in options else None
    level = "token" if mirrors == "cli-tokens" else "sentence"
    extractor = Extractor(device="cpu")
    options_of = {"layers": "all", "level": level, "long": long}
    if level == "token":
        options_of["output_dtype"] = "float16"
    from bertlayers.core.config import ExtractConfig

    config = ExtractConfig(**{k: v for k, v in options_of.items() if v is not None})
    id_column = "id" if corpus.suffix == ".jsonl" else None
    start = time.perf_counter()
    records = read_records(str(corpus), id_column=id_column)
    sink = StoreSink(str(out), extractor.identity(config), overwrite=True)
    extractor.run(records, sink, config)
    return {"seconds": time.perf_counter() - start}


def worker_embed(corpus: Path, options: list[str]) -> dict:
    from bertlayers import Extractor

    texts = read_texts(corpus)
    extractor = Extractor(device="cpu")
    long = "split" if "--long" in options else "truncate"
    start = time.perf_counter()
    extractor.embed(texts, layers="all", long=long)
    return {"seconds": time.perf_counter() - start}


def worker_st(corpus: Path, out: Path) -> dict:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from bertlayers.core.encoder import bundled_model_path

    model = SentenceTransformer(str(bundled_model_path()), device="cpu")
    model.max_seq_length = MAX_LENGTH
    texts = read_texts(corpus)
    start = time.perf_counter()
    np.save(out, model.encode(texts, batch_size=32, show_progress_bar=False))
    return {"seconds": time.perf_counter() - start}


def worker_tutorial(corpus: Path, out: Path) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bertlayers.core.encoder import bundled_model_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path())
    model = AutoModel.from_pretrained(bundled_model_path()).eval()
    texts = read_texts(corpus)
    start = time.perf_counter()
    rows = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=MAX_LENGTH)
            states = torch.stack(model(**enc, output_hidden_states=True).hidden_states)
            real = states[:, 0, 1:-1]
            rows.append(real.mean(dim=1) if real.shape[1] else torch.zeros_like(states[:, 0, 0]))
    np.save(out, torch.stack(rows).numpy())
    return {"seconds": time.perf_counter() - start}


def run_worker(args: argparse.Namespace) -> None:
    corpus, out = Path(args.corpus), Path(args.output)
    options = json.loads(args.options)
    if args.worker in LIBRARY_RUNS:
        result = worker_library(corpus, out, LIBRARY_RUNS[args.worker], options)
    elif args.worker == "library-embed":
        result = worker_embed(corpus, options)
    elif args.worker == "st-encode":
        result = worker_st(corpus, out)
    else:
        result = worker_tutorial(corpus, out)
    print(json.dumps(result))


# ---------------------------------------------------------------- the parent


def timed(command: list[str]) -> dict:
    """Run a command; its wall seconds, peak RSS (MiB, VmHWM while it runs: see
    `meta.run_with_peak_rss`) and stdout."""
    from meta import run_with_peak_rss

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        status, wall, peak = run_with_peak_rss(command, stdout=out, stderr=err)
        out.seek(0)
        err.seek(0)
        if status != 0:
            tail = err.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"failed: {' '.join(command)}\n{tail}")
        return {"wall": wall, "rss_mib": peak, "stdout": out.read().decode()}


def command_for(name: str, corpus: Path, out: Path, options: list[str]) -> list[str]:
    if name in CLI_RUNS:
        extra, _ = CLI_RUNS[name]
        return [str(BIN / "bertlayers"), "extract", str(corpus), "-o", str(out), "--layers",
                "all", "--quiet", "--overwrite", *options, *extra]  # fmt: skip
    return [sys.executable, __file__, "--worker", name, "--corpus", str(corpus), "--output",
            str(out), "--options", json.dumps(options)]  # fmt: skip


def suffix_of(name: str) -> str:
    if name in CLI_RUNS:
        return CLI_RUNS[name][1]
    if name in LIBRARY_RUNS:
        return CLI_RUNS[LIBRARY_RUNS[name]][1]
    return ".npy"


def real_tokens(texts: list[str], split: bool):
    """Tokens per text the model runs (special tokens in; truncated at 512 unless split)."""
    import numpy as np
    from transformers import AutoTokenizer

    from bertlayers.core.encoder import bundled_model_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path())
    enc = tokenizer(texts, truncation=not split, max_length=None if split else MAX_LENGTH)
    return np.fromiter((len(ids) for ids in enc["input_ids"]), dtype=np.int64)


def measure(corpora: dict, contenders: list[str], rounds: int, tmp: Path) -> dict:
    """Each contender on each corpus: start-up (one-line file), then the corpus, `rounds` times
    round-robin; the median of the net seconds (wall minus start-up)."""
    import statistics

    results = {}
    for corpus_name, corpus in corpora.items():
        for name in contenders:  # untimed: page cache and model cache warm, as after any run
            timed(command_for(name, corpus["one"], tmp / f"one{suffix_of(name)}",
                              corpus["options"]))  # fmt: skip
        runs = {name: {"walls": [], "startups": [], "rss": []} for name in contenders}
        for _ in range(rounds):
            for name in contenders:
                if name in ("cli-tokens", "library-tokens") and corpus_name == "long":
                    continue  # 150k tokens x 7 layers: gigabytes of output, no new information
                out = tmp / f"{corpus_name}-{name}{suffix_of(name)}"
                one = timed(command_for(name, corpus["one"], tmp / f"one{suffix_of(name)}",
                                       corpus["options"]))  # fmt: skip
                full = timed(command_for(name, corpus["path"], out, corpus["options"]))
                run = runs[name]
                run["startups"].append(one["wall"])
                run["walls"].append(full["wall"])
                run["rss"].append(full["rss_mib"])
                if full["stdout"].strip():  # a worker's own in-process timing
                    run.setdefault("inner", []).append(json.loads(full["stdout"])["seconds"])
                print(f"{corpus_name:6} {name:16} wall {full['wall']:7.2f} s  start-up "
                      f"{one['wall']:5.2f} s", file=sys.stderr, flush=True)  # fmt: skip
        table = {}
        for name, run in runs.items():
            if not run["walls"]:
                continue
            wall, startup = statistics.median(run["walls"]), statistics.median(run["startups"])
            net = statistics.median(run["inner"]) if "inner" in run else wall - startup
            table[name] = {
                "wall_s": round(wall, 3),
                "startup_s": round(startup, 3),
                "net_s": round(net, 3),
                "net_from": "in-process timer" if "inner" in run else "wall - start-up",
                "peak_rss_mib": round(max(run["rss"]), 1),
            }
        results[corpus_name] = {"texts": corpus["texts"], "contenders": table}
        add_quality(results[corpus_name], corpus_name, corpus, tmp)
    return results


def add_quality(result: dict, corpus_name: str, corpus: dict, tmp: Path) -> None:
    """Exactness against the tutorial loop, bf16's lowest cosine, ratios and MFU."""
    import numpy as np
    from transformers import AutoConfig

    sys.path.insert(0, str(ROOT / "bench"))
    from ceiling import matmul_ceiling
    from speed import model_flops

    from bertlayers.core.encoder import bundled_model_path

    table = result["contenders"]
    texts = read_texts(corpus["path"])
    whole, cut = real_tokens(texts, split=True), real_tokens(texts, split=False)
    cli = np.load(tmp / f"{corpus_name}-cli.npy") if "cli" in table else None
    if cli is not None and "tutorial" in table:
        tutorial = np.load(tmp / f"{corpus_name}-tutorial.npy")
        fits = whole <= MAX_LENGTH  # not cut by the loop
        fits &= cut > 2  # the loop's mean over no token is not defined
        result["cli_vs_tutorial_max_abs_diff"] = float(np.abs(cli[fits] - tutorial[fits]).max())
    if cli is not None and "cli-bf16" in table:
        bf16 = np.load(tmp / f"{corpus_name}-cli-bf16.npy").astype(np.float32)
        cos = (cli * bf16).sum(-1) / (np.linalg.norm(cli, axis=-1) * np.linalg.norm(bf16, axis=-1))
        table["cli-bf16"]["min_cosine_per_layer"] = [round(float(c), 5) for c in cos.min(axis=0)]
    net = {name: row["net_s"] for name, row in table.items()}
    ratios = {}
    for base in ("cli", "cli-openvino"):
        for other in ("st-encode", "tutorial"):
            if base in net and other in net:
                ratios[f"{other} / {base}"] = round(net[other] / net[base], 3)
    for lib, cli_name in (*LIBRARY_RUNS.items(), ("library-embed", "cli")):
        if lib in net and cli_name in net:
            ratios[f"{cli_name} / {lib}"] = round(net[cli_name] / net[lib], 3)
    result["ratios"] = ratios
    config = AutoConfig.from_pretrained(bundled_model_path())
    computed = whole if "--long" in corpus["options"] else cut  # windows cover every token
    flops, truncated = model_flops(config, computed), model_flops(config, cut)
    measured = matmul_ceiling(config.hidden_size, config.intermediate_size)
    ceiling = measured["gflops"] * 1e9
    result["real_tokens"] = int(computed.sum())
    result["fp32_matmul_ceiling_gflops"] = measured["gflops"]
    result["fp32_matmul_ceiling"] = measured
    for name, row in table.items():  # the whole model over the tokens each one computes:
        done = truncated if name in ("st-encode", "tutorial") else flops  # they cut at 512
        row["mfu"] = round(done / row["net_s"] / ceiling, 3)


STARTUP_RUNS = {  # name -> (bertlayers arguments after the one-line file, environment)
    "extract": (["extract", "{one}", "-o", "{out}", "-q", "--overwrite"], {}),
    "extract-no-cache": (
        ["extract", "{one}", "-o", "{out}", "-q", "--overwrite"],
        {"BERTLAYERS_CACHE": "off"},
    ),
    "extract-transformers": (
        ["extract", "{one}", "-o", "{out}", "-q", "--overwrite"],
        {"BERTLAYERS_CACHE": "off", "BERTLAYERS_FORWARD": "transformers"},
    ),
    "info": (["info"], {}),
    "layers-99": (["extract", "{one}", "-o", "{out}", "--layers", "99"], {}),
}


def measure_startup(one: Path, rounds: int, tmp: Path) -> dict:
    """Start-up alone: each command on one line, round-robin, medians (see the docstring)."""
    import statistics

    def command(name: str) -> tuple[list[str], dict]:
        if name == "st-encode":
            return command_for(name, one, tmp / "st.npy", []), {}
        arguments, env = STARTUP_RUNS[name]
        filled = [a.format(one=one, out=tmp / f"{name}.npy") for a in arguments]
        return [str(BIN / "bertlayers"), *filled], env

    names = [*STARTUP_RUNS, "st-encode"]
    walls: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds + 1):  # round 0 is untimed: page cache and model cache warm
        for name in names:
            argv, env = command(name)
            start = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, env={**os.environ, **env})
            wall = time.perf_counter() - start
            if done.returncode != (1 if name == "layers-99" else 0):
                raise SystemExit(f"failed: {' '.join(argv)}\n{done.stderr.decode()[-2000:]}")
            if round_:
                walls[name].append(wall)
                print(f"start-up {name:22} {wall:5.2f} s", file=sys.stderr, flush=True)
    medians = {name: statistics.median(w) for name, w in walls.items()}
    return {
        name: {
            "median_s": round(medians[name], 3),
            "runs_s": [round(w, 3) for w in walls[name]],
            "vs_st_encode": round(medians[name] / medians["st-encode"], 3),
        }
        for name in names
    }


def print_table(results: dict) -> None:
    for corpus_name, result in results.items():
        ceiling = result["fp32_matmul_ceiling_gflops"]
        print(f"\n**{corpus_name}** ({result['texts']} texts, {result['real_tokens']:,} real "
              f"tokens; fp32 matmul ceiling {ceiling} GFLOP/s)")  # fmt: skip
        print("\n| contender | whole process s | start-up s | net s | MFU | peak RSS MiB |")
        print("|---|---|---|---|---|---|")
        for name, row in result["contenders"].items():
            print(f"| {name} | {row['wall_s']:.2f} | {row['startup_s']:.2f} | {row['net_s']:.2f}"
                  f" | {row['mfu']:.2f} | {row['peak_rss_mib']:.0f} |")  # fmt: skip
        print("\n" + ", ".join(f"{k}: {v:.2f}x" for k, v in result["ratios"].items()))
        if "cli_vs_tutorial_max_abs_diff" in result:
            print(f"cli vs tutorial max abs diff: {result['cli_vs_tutorial_max_abs_diff']:.2e}")
        bf16 = result["contenders"].get("cli-bf16", {}).get("min_cosine_per_layer")
        if bf16:
            print(f"bf16 lowest cosine per layer: {bf16}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=4000, help="short texts")
    parser.add_argument("--fortunes", type=int, default=600, help="mixed: fortunes")
    parser.add_argument("--news", type=int, default=15, help="mixed: articles")
    parser.add_argument("--long", type=int, default=300, help="long: BBC articles")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--corpora", default="short,mixed,long", help="which corpora to run")
    parser.add_argument("--contenders", default=",".join([*CLI_RUNS, *LIBRARY_RUNS,
                        "library-embed", "st-encode", "tutorial"]))  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="a few texts, one round (CI)")
    parser.add_argument("--startup", action="store_true", help="start-up alone (see above)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="[]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    if args.smoke:  # whole processes each load the model: keep CI to a few of them
        args.short, args.rounds, args.corpora = 40, 1, "short"
        args.contenders = "cli,library,tutorial"
    if args.startup:
        with tempfile.TemporaryDirectory() as tmp:
            one = write_corpora(Path(tmp), 1, 1, 0, 1)["short"]["one"]
            table = measure_startup(one, args.rounds if args.rounds > 1 else 5, Path(tmp))
        print("\n| command | median s | / st-encode |\n|---|---|---|")
        for name, row in table.items():
            print(f"| {name} | {row['median_s']:.2f} | {row['vs_st_encode']:.2f} |")
        if args.out:
            from meta import run_record

            report = {**run_record(), "startup": table}
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        return
    contenders = args.contenders.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        corpora = write_corpora(Path(tmp), args.short, args.fortunes, args.news, args.long)
        corpora = {name: corpora[name] for name in args.corpora.split(",")}
        results = measure(corpora, contenders, args.rounds, Path(tmp))
    from meta import run_record

    report = {**run_record(), "corpora": results}
    print_table(results)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
