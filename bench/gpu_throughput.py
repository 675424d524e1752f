"""The GPU check's throughput rows: every contender for one model at one length, same texts."""

from __future__ import annotations

import statistics
import time
import traceback

import numpy as np
from gpu_common import batch_tokens_for, log, sync
from gpu_contenders import (
    BLPooled,
    BLTokens,
    HFForward,
    STEncode,
    Tokenize,
    Work,
    device_batches,
    time_rounds,
)
from speed import model_flops


def pick_texts(args, probes: dict, pool: list[str], length: int, device) -> tuple[int, dict]:
    """How many texts each row runs on: fixed (--texts), or sized from a probe so that the
    fastest half-precision row takes about --seconds-per-case a round and float32 at most
    3x that."""
    if args.texts:
        return min(args.texts, len(pool)), {"fixed": args.texts}
    size = min(len(pool), max(64, 65536 // length))
    probe = Work(pool[:size], length)
    info: dict = {"probe_texts": size}
    rates = {}
    for dtype, contender in probes.items():
        contender.run(Work(pool[: max(8, size // 4)], length))  # warm-up
        sync(device)
        start = time.perf_counter()
        contender.run(probe)
        sync(device)
        rates[dtype] = size / (time.perf_counter() - start)
    info["probe_texts_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    fast = max(rates.values())
    slow = min(rates.values())
    want = min(fast * args.seconds_per_case, slow * 3 * args.seconds_per_case)
    floor = 4 * max(1, batch_tokens_for(device) // length)  # at least 4 full batches
    return int(min(len(pool), max(floor, want))), info


def throughput(label, model_dir, config, length, pool, cache, args, device, budget, report):
    """Every row for one model at one length, on the same texts."""
    from transformers import AutoTokenizer

    from bertlayers import Extractor

    batch_tokens = batch_tokens_for(device)
    slot = report.data["throughput"].setdefault(label, {}).setdefault(str(length), {})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def extractor(dtype: str):
        key = ("bl", dtype)
        if key not in cache:
            cache[key] = Extractor(str(model_dir), device=str(device), dtype=dtype)
        return cache[key]

    half = [d for d in args.dtype_list if d != "float32"]
    probe_dtypes = {d for d in [*half[:1], "float32"] if d in args.dtype_list}
    probes = {d: BLPooled(extractor(d), d, "all") for d in sorted(probe_dtypes)}
    count, sizing = pick_texts(args, probes, pool, length, device)
    work = Work(pool[:count], length)
    warm = Work(pool[: min(count, 2 * max(1, batch_tokens // length))], length)
    lengths = np.fromiter((len(ids) for ids in tokenizer(work.texts)["input_ids"]), np.int64)
    real = int(lengths.sum())
    flops = model_flops(config, lengths)
    slot.update(
        {
            "texts": count,
            "sizing": sizing,
            "real_tokens": real,
            "tokens_per_text": {"min": int(lengths.min()), "max": int(lengths.max())},
            "flops_per_token": flops / real,
            "rows": {},
        }
    )
    report.save()
    log(f"{label} @ {length}: {count} texts, {real:,} tokens")

    rows_plan = [
        lambda how=how: Tokenize(tokenizer, how, batch_tokens)
        for how in ("bl-sentence", "bl-token", "st")
    ]
    for dtype in args.dtype_list:
        rows_plan.append(lambda d=dtype: BLPooled(extractor(d), d, "all"))
        rows_plan.append(lambda d=dtype: BLPooled(extractor(d), d, -1))
        if dtype != "float32":
            chunk = max(
                1, (2 << 30) // (length * (config.num_hidden_layers + 1) * config.hidden_size * 2)
            )
            rows_plan.append(lambda d=dtype, c=chunk: BLTokens(extractor(d), d, min(c, 1024)))
    for dtype in args.dtype_list:
        rows_plan.append(
            lambda d=dtype: cached(
                cache, ("st", d), lambda: STEncode(model_dir, device, d, batch_tokens)
            )
        )
    for attention in ("sdpa", "eager"):
        for dtype in args.dtype_list:
            rows_plan.append(
                lambda a=attention, d=dtype: cached(
                    cache, ("hf", a, d), lambda: HFForward(model_dir, device, d, a)
                )
            )

    tokenizer_seconds: dict[str, float] = {}
    for make in rows_plan:
        if budget.left() <= 0:
            report.data["skipped"].append(f"{label}@{length}: rows after the budget ran out")
            log(f"{label} @ {length}: budget spent, rows left out")
            break
        name = "?"
        try:
            contender = make()
            name = contender.name
            if isinstance(contender, HFForward) and work.batches is None:
                work.batches = device_batches(tokenizer, work.texts, length, batch_tokens, device)
                warm.batches = work.batches[:2]
            times, peak = time_rounds(contender, warm, work, args.rounds, device)
        except Exception as err:  # one failed row must not lose the others
            report.data["errors"].append(
                {"where": f"{label}@{length}/{name}", "error": traceback.format_exc()[-3000:]}
            )
            log(f"{label} @ {length} {name}: FAILED {type(err).__name__}: {err}")
            report.save()
            continue
        seconds = statistics.median(times)
        row = {
            "kind": contender.kind,
            **contender.meta,
            "seconds": seconds,
            "rounds_s": times,
            "texts_per_s": count / seconds,
            "tokens_per_s": real / seconds,
        }
        if device.type == "cuda":
            row["peak_device_mib"] = peak
        if contender.kind == "tokenizer":
            tokenizer_seconds[contender.how] = seconds
        else:
            dtype = contender.meta["dtype"]
            ceiling = report.data["ceilings"]["linear"].get(label, {}).get(dtype, {})
            row["tflops"] = flops / seconds / 1e12
            if ceiling.get("tflops"):
                row["mfu"] = row["tflops"] / ceiling["tflops"]
                row["mfu_ceiling"] = f"{dtype} linear at the model's shapes, " + (
                    f"{ceiling['tflops']:.4g} TFLOP/s (ceilings.linear.{label}.{dtype})"
                )
            how = contender.meta.get("tokenizer")
            if how in tokenizer_seconds:
                row["tokenizer_share"] = tokenizer_seconds[how] / seconds
        if isinstance(contender, BLTokens):
            row["output_bytes"] = contender.bytes
            row["output_bytes_per_s"] = contender.bytes / seconds
        slot["rows"][name] = row
        report.save()
        log(
            f"{label} @ {length} {name}: {row['tokens_per_s']:,.0f} tokens/s, "
            f"{row['texts_per_s']:,.1f} texts/s"
        )


def cached(cache: dict, key: tuple, make):
    if key not in cache:
        cache[key] = make()
    return cache[key]
