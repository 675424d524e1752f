"""The GPU check's results: JSON saved after every step, the budget, targets, the summary."""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from pathlib import Path

import numpy as np
from gpu_common import START, log

TARGETS = (
    {
        "name": "minilm-all-layers-pooled-tokens-per-s-at-128",
        "what": "MiniLM-L6, all layers mean-pooled, 128-token texts: real tokens/s of the "
        "fastest half-precision bertlayers row",
        "model": "minilm",
        "length": 128,
        "target": 10e6,
    },
    {
        "name": "minilm-all-layers-pooled-vs-st-float16-at-128",
        "what": "MiniLM-L6, 128-token texts: bertlayers float16 all layers pooled over "
        "sentence-transformers float16 encode (last layer), tokens/s ratio, same run",
        "model": "minilm",
        "length": 128,
        "target": 2.0,
    },
)


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _finite(value: object) -> object:
    """The document with NaN and infinities as strings: strict JSON for any reader."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class Report:
    """The results as one JSON document, rewritten (atomically) after every step."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.data: dict = {}

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - START, 2)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        text = json.dumps(_finite(self.data), indent=1, default=_json_default, allow_nan=False)
        tmp.write_text(text + "\n", "utf-8")
        os.replace(tmp, self.path)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = START + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


@contextlib.contextmanager
def phase(report: Report, where: str, checks: list | None = None):
    """One step of the run: a failure is recorded (and, for checks, counted as a failed
    check) and the run goes on to the next step; the JSON is saved either way."""
    try:
        yield
    except Exception as err:  # a one-shot run on a lent machine: keep every other result
        report.data["errors"].append({"where": where, "error": traceback.format_exc()[-4000:]})
        if checks is not None:
            checks.append(
                {
                    "name": f"{where}: ran to the end",
                    "value": None,
                    "limit": None,
                    "kind": "ran",
                    "passed": False,
                }
            )
        log(f"{where}: FAILED {type(err).__name__}: {err}")
    finally:
        report.save()


def targets(report: Report, model: str) -> list[dict]:
    """Each target marked met or not from this run's rows (None where a row is missing).
    `model` is where they are read: minilm, or in the smoke run the tiny model (to exercise
    this code; a tiny model's figures say nothing about the target)."""
    out = []
    for spec in TARGETS:
        rows = report.data["throughput"].get(model, {}).get(str(spec["length"]), {})
        rows = rows.get("rows", {})
        entry = {**spec, "measured": None, "met": None}
        if model != spec["model"]:
            entry.update(model=model, note=f"read on {model}, not {spec['model']}: code check only")
        if spec["name"].endswith("tokens-per-s-at-128"):
            half = {
                n: r["tokens_per_s"]
                for n, r in rows.items()
                if n.startswith("bl-all-pooled-") and not n.endswith("float32")
            }
            if half:
                best = max(half, key=half.get)
                entry.update(measured=half[best], row=best, measured_mfu=rows[best].get("mfu"))
                # what the target asks of the device: FLOP/s, and MFU against the row's ceiling
                entry["needs_tflops"] = spec["target"] * rows[best]["tflops"] / half[best]
                if rows[best].get("mfu"):
                    entry["needs_mfu"] = (
                        entry["needs_tflops"] * rows[best]["mfu"] / (rows[best]["tflops"])
                    )
                    entry["mfu_ceiling"] = rows[best]["mfu_ceiling"]
        else:
            bl, st = rows.get("bl-all-pooled-float16"), rows.get("st-encode-float16")
            if bl and st:
                entry.update(
                    measured=bl["tokens_per_s"] / st["tokens_per_s"],
                    row="bl-all-pooled-float16 / st-encode-float16",
                )
                bf = rows.get("bl-all-pooled-bfloat16")
                if bf:
                    entry["bfloat16_ratio"] = bf["tokens_per_s"] / st["tokens_per_s"]
        if entry["measured"] is not None:
            entry["met"] = bool(entry["measured"] >= spec["target"])
        out.append(entry)
    return out


def print_summary(report: Report) -> None:
    data = report.data
    print(
        f"\nbertlayers GPU check ({data.get('mode')}): {data.get('status')}, "
        f"{data.get('elapsed_s')} s, device {data['device']}"
    )
    ceilings = data["ceilings"]
    for label, slot in ceilings["linear"].items():
        parts = [f"{k} {v['tflops']:.4g}" for k, v in slot.items() if isinstance(v, dict)]
        print(f"{label}: linear at its shapes, TFLOP/s: {', '.join(parts)}")
    if ceilings.get("square_bf16"):
        print(f"square matmul: {ceilings['square_bf16']}; data sheet: {ceilings['datasheet_bf16']}")
    print(f"device to host: {data['d2h']}")
    for label, by_length in data["throughput"].items():
        for length, slot in by_length.items():
            print(f"\n{label} @ {length} tokens: {slot.get('texts')} texts")
            print(f"{'row':<32}{'tokens/s':>14}{'texts/s':>12}{'MFU':>7}{'tok share':>11}")
            for name, row in slot.get("rows", {}).items():
                mfu = f"{row['mfu']:.3f}" if "mfu" in row else "-"
                share = f"{row['tokenizer_share']:.2f}" if "tokenizer_share" in row else "-"
                print(
                    f"{name:<32}{row['tokens_per_s']:>14,.0f}{row['texts_per_s']:>12,.1f}"
                    f"{mfu:>7}{share:>11}"
                )
    for label, result in data["compile"].items():
        for key, row in result.get("rows", {}).items():
            extra = (
                f", x{row['speedup_vs_torch']:.2f} vs torch" if "speedup_vs_torch" in row else ""
            )
            print(f"compile/{label} {key}: {row['tokens_per_s']:,.0f} tokens/s{extra}")
        if "outcome" in result:
            print(f"compile/{label}: {result['outcome']}, first calls {result.get('first_call_s')}")
    failed = [c for c in data["checks"] if not c["passed"]]
    print(f"\nchecks: {len(data['checks']) - len(failed)}/{len(data['checks'])} passed")
    for check in failed:
        print(f"  FAILED {check['name']}: {check['value']:.3g} (limit {check['limit']})")
    for target in data["targets"]:
        print(
            f"target {target['name']}: measured {target['measured']}, target "
            f"{target['target']}, met {target['met']}"
        )
    if data["errors"]:
        print(f"errors: {len(data['errors'])} (see the JSON)")
