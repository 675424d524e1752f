"""`bertlayers probe ... --tradeoff`: for each K, the probe's score of layer K beside the
throughput and size of the model cut to its first K layers, and the smallest K within a
tolerance of the best score (the bookkeeping is `analysis.tradeoff`'s).

What is timed is what a user would ship: each K is cut with `core.truncate.truncate_model`
into a temporary directory (checked against the source's layer K), loaded as the probe loads
a model (same device, dtype and runtime), and run over one fixed sample of the probe's own
texts with the probe's pooling: one warm-up pass, then the median of a few timed rounds, one
model at a time, in this process. Its size is the cut directory's size on disk.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ..errors import ModelError, OptionError
from ..outputs import Target
from .options import positive_int, result_targets

TRADEOFF_EXAMPLES = """\
depth trade-off (score, texts/s and size of the model cut to K layers, per K):
  # which K to ship: the smallest within one point of macro-F1 of the best layer
  bertlayers probe sentiment.tsv --label-column label -o runs/sentiment --tradeoff
  bertlayers probe sentiment.tsv -o runs/sentiment --tradeoff --tradeoff-layers 2,4,6 \\
      --tolerance 0.02 --tradeoff-texts 1000
  bertlayers truncate --keep-layers 4 -o minilm-4     # then cut the K it names
"""

DEFAULT_TEXTS = 512
DEFAULT_ROUNDS = 3


def depth_list(text: str) -> list[int] | None:
    """`--tradeoff-layers`: `all` (None: every layer the probe scored) or K values `1,3,6`."""
    if text.strip() == "all":
        return None
    try:
        values = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a list of layer counts: give all or K values such as 1,3,6"
        ) from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(
            f"'{text}': K counts the encoder layers kept, from 1 (layer 0 is no model)"
        )
    return values


depth_list.__name__ = "layer counts"


def tolerance_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def add_tradeoff_options(parser: argparse.ArgumentParser) -> None:
    """`--tradeoff` and its settings, in their own group of `probe`."""
    group = parser.add_argument_group("depth trade-off (--tradeoff)")
    group.add_argument(
        "--tradeoff",
        action="store_true",
        help="also cut the model to each K layers and measure its texts/s and size on disk "
        "beside layer K's score; name the smallest K within --tolerance of the best layer "
        "(tradeoff.json/.csv/.png with -o)",
    )
    group.add_argument(
        "--tradeoff-layers",
        type=depth_list,
        default=None,
        metavar="K,K,...",
        help="the K values to cut and time (default: every encoder layer the probe scored)",
    )
    group.add_argument(
        "--tradeoff-texts",
        type=positive_int,
        default=DEFAULT_TEXTS,
        metavar="N",
        help="time on a fixed sample of N of the probe's texts (all when fewer)",
    )
    group.add_argument(
        "--tradeoff-rounds",
        type=positive_int,
        default=DEFAULT_ROUNDS,
        help="timed rounds per K after a warm-up; the median is reported",
    )
    group.add_argument(
        "--tolerance",
        type=tolerance_value,
        default=None,
        help="how far below the best layer's score a K may be and still be chosen (default "
        "0.01: one point of macro-F1)",
    )


def check_tradeoff_options(args: argparse.Namespace) -> None:
    """The trade-off's settings need `--tradeoff`; said before any work."""
    if args.tradeoff:
        return
    given = {
        "--tradeoff-layers": args.tradeoff_layers is not None,
        "--tradeoff-texts": args.tradeoff_texts != DEFAULT_TEXTS,
        "--tradeoff-rounds": args.tradeoff_rounds != DEFAULT_ROUNDS,
        "--tolerance": args.tolerance is not None,
    }
    for flag, present in given.items():
        if present:
            raise OptionError(f"{flag} is a setting of the depth trade-off: add --tradeoff")


def tradeoff_targets(args: argparse.Namespace) -> list[Target]:
    """What the trade-off writes in the run folder (checked with the probe's outputs)."""
    if not (args.tradeoff and args.output_dir):
        return []
    return result_targets(args.output_dir, "tradeoff", "tradeoff")


def check_tradeoff(args: argparse.Namespace, provenance: dict, layers, where: str) -> str:
    """The model to cut (the one whose vectors are probed), once the vectors' `layers` are
    known and before the probes run: refused in one line where there is no model to cut, or
    a K asked for is no encoder layer among the vectors'."""
    scored = [layer for layer in layers if layer >= 1]
    if not scored:
        raise OptionError(
            f"--tradeoff reads the score of each encoder layer K, but {where} holds layers "
            f"{list(layers)} only: probe layers 1..L (e.g. --layers all)"
        )
    missing = [k for k in args.tradeoff_layers or [] if k not in scored]
    if missing:
        raise OptionError(
            f"--tradeoff-layers {','.join(map(str, missing))}: no such encoder layer among the "
            f"vectors' ({', '.join(map(str, scored))}); K is a layer the probe scores"
        )
    return model_to_cut(args, provenance, where)


def model_to_cut(args: argparse.Namespace, provenance: dict, where: str) -> str:
    """The model whose vectors were probed, as `truncate_model` takes it; refused in one
    line where there is none to cut."""
    from ..core.encoder import bundled_model_path

    if args.model:
        return args.model
    model = provenance.get("model", {})
    if str(model.get("name", "")).endswith("(bundled)"):
        return str(bundled_model_path())
    model_id = model.get("id")
    if not model_id:
        raise OptionError(
            f"--tradeoff cuts the model that made the vectors, but {where} does not name it"
        )
    path = Path(model_id)
    local = path.is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1
    if local and not path.is_dir():
        raise OptionError(
            f"--tradeoff cuts the model that made the vectors in {where}, {model_id}, which is "
            "not here any more: give it with --model, or probe without --tradeoff"
        )
    return model_id


def _sample(records: list, count: int, seed: int) -> list:
    """`count` of `records`, drawn once with `seed` (input order kept): every K times these."""
    import numpy as np

    if count >= len(records):
        return list(records)
    chosen = np.sort(np.random.default_rng(seed).choice(len(records), count, replace=False))
    return [records[i] for i in chosen]


def split_sample(workloads: list[tuple[list, object]], count: int, seed: int):
    """`count` texts across workloads (queries and documents) in proportion to their sizes."""
    total = sum(len(records) for records, _ in workloads)
    out = []
    for records, config in workloads:
        share = max(1, round(count * len(records) / total)) if total > count else len(records)
        out.append((_sample(records, share, seed), config))
    return out


INTERLEAVE_BYTES = 2 << 30  # weights of every cut model held at once; above it, one at a time


def _extract_once(extractor, workloads, k: int) -> float:
    """Seconds to extract layer `k` (the cut model's last) from every workload."""
    from ..sinks import MemorySink

    start = time.perf_counter()
    for records, config in workloads:
        extractor.run(records, MemorySink(), replace(config, layers=(k,)))
    return time.perf_counter() - start


def cut_model(args, source: str | None, k: int, folder: Path, vectors: dict) -> tuple[Path, dict]:
    """`source` cut to `k` layers in `folder` (checked exact by `truncate_model`), and what
    identifies it. `vectors` names the probed vectors' model (`where`, `fingerprint`): a cut
    of other weights is refused before anything is timed."""
    import json
    import warnings

    from ..core.truncate import PROVENANCE, WEIGHTS, truncate_model

    target = folder / f"k{k}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="keeping .* the output is a copy")
        truncate_model(source, k, target, revision=args.revision)
    record = json.loads((target / PROVENANCE).read_text(encoding="utf-8"))
    cut_from, wanted = record["source"]["fingerprint"], vectors.get("fingerprint")
    if wanted not in (None, "unknown") and cut_from != wanted:
        raise OptionError(
            f"--tradeoff: the vectors in {vectors.get('where')} come from weights {wanted}, "
            f"but the model cut here has {cut_from}: its speed would not be theirs"
        )
    weights = record["files"][WEIGHTS]
    return target, {
        "directory": target.name,
        "weights_sha256": weights["sha256"],
        "weights_bytes": weights["bytes"],
        "source_fingerprint": cut_from,
        "tensors_kept": record["truncate"]["weights"]["tensors_kept"],
        "check_max_abs_diff": record["truncate"]["check"]["max_abs_diff"],
        "size_bytes": sum(p.stat().st_size for p in target.rglob("*") if p.is_file()),
    }


def time_cuts(args, cuts: dict[int, Path], workloads, step) -> tuple[dict, dict, str]:
    """Seconds per timed round of each cut model, what each loaded as, and the schedule.

    Each model is loaded as the probe loads one and warmed up with one untimed round. When
    all fit in `INTERLEAVE_BYTES` they are held together and timed in turns, the order
    rotating each round, so that a load that comes and goes on a shared machine falls on
    every K alike; otherwise one model at a time."""
    from .options import make_extractor

    def load(k: int):
        extractor = make_extractor(args, model=str(cuts[k]), revision=None)
        if extractor.info.num_layers != k:
            raise ModelError(f"the model cut to {k} layers loads with {extractor.info.num_layers}")
        _extract_once(extractor, workloads, k)  # warm-up
        loaded[k] = {
            "fingerprint": extractor.encoder.fingerprint,
            "num_layers": extractor.info.num_layers,
            "identity": extractor.identity(replace(workloads[0][1], layers=(k,))),
        }
        return extractor

    ks, rounds = list(cuts), args.tradeoff_rounds
    seconds: dict[int, list[float]] = {k: [] for k in ks}
    loaded: dict[int, dict] = {}
    weights = sum(p.stat().st_size for k in ks for p in cuts[k].glob("*.safetensors"))
    if weights <= INTERLEAVE_BYTES:
        held = {k: load(k) for k in ks}
        for r in range(rounds):
            for k in ks[r % len(ks) :] + ks[: r % len(ks)]:
                seconds[k].append(_extract_once(held[k], workloads, k))
                step()
        schedule = "all cut models held at once, timed in turns (the order rotating each round)"
    else:
        for k in ks:
            extractor = load(k)
            for _ in range(rounds):
                seconds[k].append(_extract_once(extractor, workloads, k))
                step()
            del extractor
            gc.collect()
        schedule = "one cut model at a time"
    return seconds, loaded, schedule


def machine(args: argparse.Namespace) -> dict:
    """Where the figures were measured: CPU, cores, versions, date, commit, command."""
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    argv = getattr(args, "argv", None)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": "bertlayers " + shlex.join(argv) if argv is not None else None,
    }


def git_commit() -> str | None:
    """The commit of the bertlayers source tree that ran (`-dirty` with local changes to
    tracked files); None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]

    def git(*words: str) -> str:
        return subprocess.run(
            ["git", *words], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_tradeoff(args: argparse.Namespace, probe: dict, provenance: dict, where: str, workloads):
    """Cut, load and time the model at each K; write tradeoff.json/.csv and the plot with -o.
    `workloads` are `(records, ExtractConfig)`: what the probe embedded."""
    from ..analysis.plots import plot_tradeoff
    from ..analysis.report import write_results
    from ..analysis.tradeoff import DEFAULT_TOLERANCE, depth_scores, tradeoff_report

    scored = list(depth_scores(probe).scores)
    source = check_tradeoff(args, provenance, scored, where)
    depths = args.tradeoff_layers or scored
    sample = split_sample(workloads, args.tradeoff_texts, args.seed)
    texts = sum(len(records) for records, _ in sample)
    vectors = {"where": where, "fingerprint": provenance.get("model", {}).get("fingerprint")}
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        total = len(depths) * (1 + args.tradeoff_rounds)
        bar = tqdm(total=total, desc="trade-off", unit="step", file=sys.stderr,
                   dynamic_ncols=True)  # fmt: skip

    def step(what: str | None = None) -> None:
        if bar is not None:
            if what:
                bar.set_postfix_str(what, refresh=False)
            bar.update(1)

    load = os.getloadavg if hasattr(os, "getloadavg") else lambda: None
    before = load()
    try:
        with tempfile.TemporaryDirectory(prefix="bertlayers-tradeoff-") as folder:
            cuts, models = {}, {}
            for k in depths:
                cuts[k], models[k] = cut_model(args, source, k, Path(folder), vectors)
                step(f"cut K={k}")
            if bar is not None:
                bar.set_postfix_str("timing", refresh=False)
            seconds, loaded, schedule = time_cuts(args, cuts, sample, step)
    finally:
        if bar is not None:
            bar.close()
    found: dict[int, dict] = {}
    for k in depths:
        identity = loaded[k].pop("identity")
        models[k].update(loaded[k])
        models[k]["seconds"] = [round(t, 4) for t in seconds[k]]
        found[k] = {
            "rounds_texts_per_s": [texts / t for t in seconds[k]],
            "size_bytes": models[k].pop("size_bytes"),
            "model": models[k],
        }
    measure = {
        "what": "the probe's extraction (its pooling, level, long mode) of layer K from the "
        "model cut to K layers (bertlayers truncate), in this process",
        "texts": texts,
        "of": sum(len(records) for records, _ in workloads),
        "sample_seed": args.seed,
        "warmup_rounds": 1,
        "rounds": args.tradeoff_rounds,
        "schedule": schedule,
        "statistic": "median of the rounds' texts/s",
        "settings": {
            k: v for k, v in identity.items() if k not in ("model", "fingerprint", "layers")
        },
    }
    model = provenance.get("model", {})
    source_record = {key: model.get(key) for key in ("name", "id", "fingerprint", "num_layers")}
    where_run = machine(args)
    if "cuda" not in str(measure["settings"].get("device")):
        where_run["gpu"] = None  # present or not, it ran nothing here
    where_run["load_average"] = {"before": before, "after": load()}  # others' work too
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    report = tradeoff_report(probe, found, tolerance, source_record, measure, where_run)
    if args.output_dir:
        out = Path(args.output_dir)
        write_results(out, "tradeoff", report.to_dict(), report.to_csv())
        plot_tradeoff(report, out)
        if not args.quiet:
            print(f"bertlayers: wrote tradeoff.json, tradeoff.csv and plots to {out}",
                  file=sys.stderr)  # fmt: skip
    return report
