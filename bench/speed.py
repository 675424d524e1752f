"""Speed: bertlayers against the tools users would pick instead, on the same corpus.

In one process and interleaved (round-robin, so drift hits every contender alike), on
../shared/data/corpus-fortunes.txt texts plus news-bbc.jsonl articles, extracting every layer
mean-pooled in float32 (sentence-transformers: its last layer, as it only offers that):
- `tutorial`: `model(**tok(text), output_hidden_states=True)` one text at a time;
- `hf-batched`: Hugging Face in corpus order, batches of 32 padded to the longest;
- `st-encode`: `SentenceTransformer(model).encode`, max_seq_length 512, batch 32;
- `bertlayers`: `Extractor.embed(texts, layers="all", pooling="mean")`;
- `bl-tokens`: bertlayers' token-level output of every layer, streamed to an `.npy` store;
- `bl-openvino`: bertlayers with `runtime="openvino"` (float32, exact like `bertlayers`);
- `bl-int8`: bertlayers with `runtime="int8"` (approximate), with its lowest cosine to float32 for
  each layer;
- `bl-bf16`: bertlayers computing in bfloat16 (approximate; fast where the CPU has AVX512-BF16
  or AMX), with its lowest cosine to float32 for each layer.
It reports real (non-padding) tokens/s, texts/s, padding efficiency, ratios, and MFU: the
achieved FLOP/s (from the model's FLOPs per real token, attention included) over the fp32
matmul FLOP/s measured in the same run at the model's shapes. Results go to JSON.

    python bench/speed.py --out bench/results/speed.json            # both models
    python bench/speed.py --smoke                                   # a few texts, CI
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MAX_LENGTH = 512


def load_corpus(fortunes: int, news: int) -> list[str]:
    """Fortunes (natural length variation) followed by news articles (long), in file order."""
    texts = (DATA / "corpus-fortunes.txt").read_text(encoding="utf-8").splitlines()[:fortunes]
    with (DATA / "news-bbc.jsonl").open(encoding="utf-8") as handle:
        articles = [json.loads(line)["text"] for _, line in zip(range(news), handle, strict=False)]
    # interleave articles through the corpus, as a real mixed corpus would have them
    step = max(1, len(texts) // max(1, len(articles)))
    for i, article in enumerate(articles):
        texts.insert(min(len(texts), (i + 1) * step + i), article)
    return texts


def bert_base_dir(root: Path) -> Path:
    """A bert-base-sized model (12 layers, hidden 768) with random weights and the bundled
    tokenizer: speed depends on shapes, not on the values of the weights."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bertlayers.core.encoder import bundled_model_path

    torch.manual_seed(0)
    path = root / "bert-base-random"
    BertModel(BertConfig()).save_pretrained(path)
    AutoTokenizer.from_pretrained(bundled_model_path()).save_pretrained(path)
    return path


# ---------------------------------------------------------------- contenders


def _masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(-2) / weights.sum(-2).clamp(min=1)


class Tutorial:
    """The 20-line tutorial: one text at a time, all hidden states, mean over tokens."""

    name = "tutorial"

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval()

    @torch.inference_mode()
    def run(self, texts: list[str]) -> np.ndarray:
        out = []
        for text in texts:
            enc = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=MAX_LENGTH)
            states = torch.stack(self.model(**enc, output_hidden_states=True).hidden_states)
            out.append(_masked_mean(states[:, 0, 1:-1], enc["attention_mask"][0, 1:-1]))
        return torch.stack(out).numpy()


class HFBatched(Tutorial):
    """Hugging Face batched in corpus order: batches of 32 padded to their longest text."""

    name = "hf-batched"
    batch_size = 32

    @torch.inference_mode()
    def run(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
                return_special_tokens_mask=True,
            )
            special = enc.pop("special_tokens_mask").bool()
            states = torch.stack(self.model(**enc, output_hidden_states=True).hidden_states)
            mask = enc["attention_mask"].bool() & ~special
            out.append(_masked_mean(states, mask).transpose(0, 1))
        return torch.cat(out).numpy()


class STEncode:
    """sentence-transformers `encode` (last layer, its own length-sorted batching)."""

    name = "st-encode"

    def __init__(self, model_dir: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir), device="cpu")
        self.model.max_seq_length = MAX_LENGTH

    def run(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=32, show_progress_bar=False)


class Bertlayers:
    name = "bertlayers"

    def __init__(self, model_dir: Path, runtime: str = "torch", dtype: str = "float32") -> None:
        from bertlayers import Extractor

        self.extractor = Extractor(str(model_dir), device="cpu", dtype=dtype, runtime=runtime)

    def run(self, texts: list[str]) -> np.ndarray:
        return self.extractor.embed(texts, layers="all", pooling="mean")


class BertlayersOpenVINO(Bertlayers):
    """bertlayers with the OpenVINO backend: float32, held to the reference like the default."""

    name = "bl-openvino"

    def __init__(self, model_dir: Path) -> None:
        super().__init__(model_dir, runtime="openvino")


class BertlayersInt8(Bertlayers):
    """bertlayers with `runtime="int8"` (approximate: see `bertlayers.backends.int8`)."""

    name = "bl-int8"

    def __init__(self, model_dir: Path) -> None:
        super().__init__(model_dir, runtime="int8")


class BertlayersBfloat16(Bertlayers):
    """bertlayers computing in bfloat16 (`dtype="bfloat16"`; outputs float32), approximate."""

    name = "bl-bf16"

    def __init__(self, model_dir: Path) -> None:
        super().__init__(model_dir, dtype="bfloat16")


def min_cosine_per_layer(approx: np.ndarray, exact: np.ndarray) -> list[float]:
    """Per layer, the lowest cosine between a text's approximate and exact vectors."""
    dot = (approx * exact).sum(-1)
    norms = np.linalg.norm(approx, axis=-1) * np.linalg.norm(exact, axis=-1)
    return [round(float(v), 4) for v in (dot / np.maximum(norms, 1e-12)).min(axis=0)]


class BertlayersTokens(Bertlayers):
    """Every token's vectors at every layer, float32, streamed to an `.npy` store on disk
    (truncated at 512 like the others, so the model does the same work)."""

    name = "bl-tokens"

    def run(self, texts: list[str]) -> np.ndarray:
        from bertlayers import ExtractConfig
        from bertlayers.io.readers import records_from_texts
        from bertlayers.stores import StoreSink

        config = ExtractConfig(level="token", layers="all", long="truncate")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tokens.npy"
            sink = StoreSink(path, self.extractor.identity(config))
            self.extractor.run(sink.skip_done(records_from_texts(texts)), sink, config)
            return np.load(path, mmap_mode="r")[:1].copy()


# ---------------------------------------------------------------- measuring


def token_lengths(tokenizer, texts: list[str]) -> np.ndarray:
    """Real tokens per text as the model sees them (special tokens in, truncated to 512)."""
    enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
    return np.fromiter((len(ids) for ids in enc["input_ids"]), dtype=np.int64)


def padded_tokens(lengths: np.ndarray, name: str, extractor=None) -> int:
    """Tokens the model actually ran, padding included, for each contender's batching."""
    if name == "tutorial":
        return int(lengths.sum())
    if name == "hf-batched":
        return sum(
            int(c.max()) * len(c) for c in np.array_split(lengths, range(32, len(lengths), 32))
        )
    if name == "st-encode":  # sorted by text length (characters, longest first), batches of 32
        return -1  # filled in by the caller, who has the texts
    from bertlayers.core.batching import plan_batches

    config = extractor.options_config
    total = 0
    for start in range(0, len(lengths), config.chunk_size):
        chunk = lengths[start : start + config.chunk_size]
        for rows in plan_batches(
            chunk,
            extractor.extractor.batch_tokens(config),
            config.max_batch_size,
            config.max_padding,
        ):
            total += int(chunk[rows].max()) * len(rows)
    return total


def st_padded(texts: list[str], lengths: np.ndarray) -> int:
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return sum(
        int(lengths[c].max()) * len(c) for c in np.array_split(order, range(32, len(order), 32))
    )


def model_flops(config, lengths: np.ndarray, layers: int | None = None) -> float:
    """Forward FLOPs over real tokens: per layer 8H^2 + 4HI per token for the projections and
    feed-forward, plus 4 T H per token for attention scores and values (T = the text's length)."""
    hidden, inter = config.hidden_size, config.intermediate_size
    layers = layers or config.num_hidden_layers
    n = lengths.astype(np.float64)
    per_layer = n.sum() * (8 * hidden * hidden + 4 * hidden * inter) + (4 * hidden * n * n).sum()
    return layers * per_layer


def matmul_ceiling(config) -> float:
    """FLOP/s of the one fp32 matmul ceiling (`bench/ceiling.py`) at the model's shapes."""
    from ceiling import matmul_ceiling as measure

    return measure(config.hidden_size, config.intermediate_size)["gflops"] * 1e9


def bench_model(label: str, model_dir: Path, texts: list[str], rounds: int) -> dict:
    from transformers import AutoConfig, AutoTokenizer

    from bertlayers import ExtractConfig

    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lengths = token_lengths(tokenizer, texts)
    contenders = [
        Tutorial(model_dir),
        HFBatched(model_dir),
        STEncode(model_dir),
        Bertlayers(model_dir),
        BertlayersTokens(model_dir),
        BertlayersOpenVINO(model_dir),
        BertlayersInt8(model_dir),
        BertlayersBfloat16(model_dir),
    ]
    for bl in contenders[3:]:
        bl.options_config = ExtractConfig()
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    outputs: dict[str, np.ndarray] = {}
    for c in contenders:  # warm-up: first calls allocate and pick kernels
        c.run(texts[:8])
    for _ in range(rounds):
        for c in contenders:
            start = time.perf_counter()
            outputs[c.name] = c.run(texts)
            times[c.name].append(time.perf_counter() - start)
    ceiling = matmul_ceiling(config)
    real = int(lengths.sum())
    flops_all = model_flops(config, lengths)
    results = {}
    for c in contenders:
        seconds = statistics.median(times[c.name])
        padded = (
            st_padded(texts, lengths)
            if c.name == "st-encode"
            else padded_tokens(lengths, c.name, c)
        )
        results[c.name] = {
            "seconds": round(seconds, 3),
            "texts_per_s": round(len(texts) / seconds, 1),
            "real_tokens_per_s": round(real / seconds, 1),
            "padding_efficiency": round(real / padded, 3),
            "mfu": round(flops_all / seconds / ceiling, 3),
        }
    base = results["bertlayers"]["seconds"]
    for name in results:
        results[name]["bertlayers_speedup"] = round(results[name]["seconds"] / base, 2)
    results["bl-tokens"]["padding_efficiency"] = results["bertlayers"]["padding_efficiency"]
    for name in ("bl-int8", "bl-bf16"):
        results[name]["min_cosine_per_layer"] = min_cosine_per_layer(
            outputs[name], outputs["bertlayers"]
        )
    # correctness: bertlayers against the per-text loop (the reference), every layer
    diff = float(np.abs(outputs["bertlayers"] - outputs["tutorial"]).max())
    diff_openvino = float(np.abs(outputs["bl-openvino"] - outputs["tutorial"]).max())
    return {
        "model": label,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "texts": len(texts),
        "real_tokens": real,
        "matmul_ceiling_gflops": round(ceiling / 1e9, 1),
        "bertlayers_vs_tutorial_max_abs_diff": diff,
        "openvino_vs_tutorial_max_abs_diff": diff_openvino,
        "contenders": results,
    }


def print_table(model: dict) -> None:
    print(
        f"\n{model['model']}: {model['texts']} texts, {model['real_tokens']:,} real tokens, "
        f"fp32 matmul ceiling {model['matmul_ceiling_gflops']} GFLOP/s, "
        f"max |bertlayers - tutorial| = {model['bertlayers_vs_tutorial_max_abs_diff']:.2e}, "
        f"max |bl-openvino - tutorial| = {model['openvino_vs_tutorial_max_abs_diff']:.2e}"
    )
    header = ("contender", "s", "texts/s", "tokens/s", "padding", "MFU", "bertlayers x")
    widths = (12, 9, 10, 11, 9, 7, 14)
    print(
        "".join(
            f"{h:<{w}}" if i == 0 else f"{h:>{w}}"
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for name, row in model["contenders"].items():
        print(
            f"{name:<12}{row['seconds']:>9.2f}{row['texts_per_s']:>10.1f}"
            f"{row['real_tokens_per_s']:>11.0f}{row['padding_efficiency']:>9.2f}"
            f"{row['mfu']:>7.2f}{row['bertlayers_speedup']:>14.2f}"
        )
    for name in ("bl-int8", "bl-bf16"):
        cosines = model["contenders"][name]["min_cosine_per_layer"]
        print(f"{name} vs float32, lowest cosine per layer 0..{len(cosines) - 1}: {cosines}")


def _quiet_libraries() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def bench_arguments(doc: str, fortunes: int, news: int, rounds: int) -> argparse.ArgumentParser:
    """The options every bench shares: corpus size, rounds, models, --smoke, --out."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--fortunes", type=int, default=fortunes)
    parser.add_argument("--news", type=int, default=news)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--models", default="minilm,bert-base", help="minilm, bert-base")
    parser.add_argument("--smoke", action="store_true", help="a few texts, one round, MiniLM (CI)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    return parser


def run_models(
    args: argparse.Namespace,
    header: dict,
    measure: Callable[[str, Path, list[str], Path], dict],
    show: Callable[[dict], None],
) -> dict:
    """Run `measure(label, model_dir, texts, tmp)` for each of `args.models` on the bench
    corpus, show each result, and write the report (command, `header`, models) to `args.out`."""
    from bertlayers.core.encoder import bundled_model_path

    if args.smoke:
        args.fortunes, args.news, args.rounds, args.models = 24, 2, 1, "minilm"
    texts = load_corpus(args.fortunes, args.news)
    from meta import run_record

    report = {**run_record(), **header, "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = {"minilm": bundled_model_path()}
        if "bert-base" in args.models:
            dirs["bert-base"] = bert_base_dir(root)
        for label in args.models.split(","):
            report["models"].append(measure(label, dirs[label], texts, root))
            show(report["models"][-1])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def main() -> None:
    _quiet_libraries()
    args = bench_arguments(__doc__, fortunes=1500, news=40, rounds=2).parse_args()
    run_models(
        args,
        {"machine": machine()},
        lambda label, model_dir, texts, _: bench_model(label, model_dir, texts, args.rounds),
        print_table,
    )


if __name__ == "__main__":
    main()
