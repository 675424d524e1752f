"""The GPU page: bench/gpu.py's results file (schema `bertlayers-gpu-check/1`) as tables.

The device and its versions, the exactness checks against their bounds, the ceilings that MFU
is measured against, the throughput rows per model and text length, torch.compile against
eager, and the targets, measured against what each asks. Every figure is read from the file.
"""

from __future__ import annotations

import re

from docgen import ROOT
from md_format import num, percent, ratio, table
from result_files import Result, dig

DTYPES = ("float32", "bfloat16", "float16")


def _sci(value: float) -> str:
    """A bound as people write it: 1e-4, not 1e-04."""
    return re.sub(r"e([+-])0(\d)", r"e\1\2", f"{value:.0e}")


def _bound(check: dict) -> str:
    """A check's bound as the check reads it: at most a difference, at least a cosine."""
    limit = check["limit"]
    return f"≤ {_sci(limit)}" if check["kind"] == "max" else f"≥ {limit:g}"


def _check_value(check: dict) -> str:
    value = check["value"]
    return f"{value:.1e}" if check["kind"] == "max" else f"{value:.6f}"


def device_table(d: dict) -> str:
    """The GPU, its driver, and the versions of what ran on it."""
    gpu = dig(d, "machine.gpu") or {}
    smi = dig(d, "machine.nvidia_smi_start") or {}
    versions = d.get("versions") or {}
    machine = d.get("machine") or {}
    about = [
        f"compute capability {gpu['capability']}" if gpu.get("capability") else "",
        f"{num(gpu['memory_gib'], 1)} GiB" if gpu.get("memory_gib") else "",
        f"{gpu['multiprocessors']} SMs" if gpu.get("multiprocessors") else "",
        f"{gpu['count']} device(s)" if gpu.get("count", 1) != 1 else "",
    ]
    rows = [
        [
            "GPU",
            (gpu.get("name") or smi.get("name") or "not recorded")
            + (f" ({', '.join(a for a in about if a)})" if any(about) else ""),
        ],
        ["driver", smi.get("driver_version") or "not recorded"],
    ]
    for key, label in (
        ("torch", "torch"),
        ("cuda", "CUDA"),
        ("transformers", "transformers"),
        ("sentence_transformers", "sentence-transformers"),
    ):
        value = versions.get(key) or versions.get(key.replace("_", "-"))
        rows.append([label, value or "not recorded"])
    cpu = machine.get("cpu_model")
    cores = machine.get("logical_cores") or machine.get("cores")
    if cpu:
        rows.append(["host CPU", f"{cpu}" + (f", {cores} cores" if cores else "")])
    return table(["", "recorded"], rows)


def models_table(d: dict) -> str:
    rows = [
        [
            name,
            str(m.get("num_hidden_layers", "")),
            str(m.get("hidden_size", "")),
            str(m.get("num_attention_heads", "")),
            str(m.get("intermediate_size", "")),
            m.get("weights", ""),
        ]
        for name, m in (d.get("models") or {}).items()
    ]
    return table(["model", "layers", "hidden", "heads", "intermediate", "weights"], rows)


def checks_section(d: dict) -> str:
    """How many exactness checks passed, their bounds, and every check in a fold."""
    checks = d.get("checks") or []
    passed = sum(1 for c in checks if c["passed"])
    limits = d.get("limits") or {}
    bounds = []
    if "float32_max_abs_diff" in limits:
        bounds.append(
            f"float32 against the reference (each text alone, unpadded, float32): max abs diff "
            f"≤ {_sci(limits['float32_max_abs_diff'])} on every layer"
        )
    if "half_min_cosine" in limits:
        bounds.append(
            f"bfloat16 and float16 (and torch.compile against eager): lowest cosine per layer "
            f"≥ {limits['half_min_cosine']:g}"
        )
    out = f"**Exactness: {passed} of {len(checks)} checks passed.**"
    if bounds:
        out += " Bounds: " + "; ".join(bounds) + "."
    failed = [c for c in checks if not c["passed"]]
    if failed:
        out += (
            "\n\nFailed: "
            + "; ".join(f"{c['name']} {_check_value(c)} (bound {_bound(c)})" for c in failed)
            + "."
        )
    rows = [
        [c["name"], _check_value(c), _bound(c), "passed" if c["passed"] else "**failed**"]
        for c in checks
    ]
    if rows:
        out += (
            '\n\n<details markdown="1"><summary>Every check</summary>\n\n'
            + table(["check", "measured", "bound", "result"], rows)
            + "\n</details>"
        )
    return out + "\n\n"


def ceilings_section(d: dict) -> str:
    """The `linear` ceilings at each model's shapes (MFU's denominators), the square matmul,
    and device-to-host copies."""
    ceilings = d.get("ceilings") or {}
    linear = ceilings.get("linear") or {}
    rows = [
        [name, f"{slot['rows']:,}" if "rows" in slot else ""]
        + [num(dig(slot, f"{dt}.tflops"), 1) for dt in DTYPES]
        for name, slot in linear.items()
    ]
    out = (
        "**Ceilings**, TFLOP/s: `linear` at each model's own shapes (hidden to hidden, to "
        "intermediate and back; each MFU below is a row's TFLOP/s over the ceiling of its "
        "dtype)\n\n" + table(["model", "rows", *DTYPES], rows) + "\n"
    )
    square, sheet = ceilings.get("square_bf16"), ceilings.get("datasheet_bf16")
    if square:
        out += f"Square matmul, {square['shape']}: {num(square['tflops'], 1)} TFLOP/s"
        if sheet:
            out += f" (the {sheet['key']} data sheet's bf16 figure: {num(sheet['tflops'], 1)})"
        out += ".\n"
    d2h = d.get("d2h") or {}
    if "pinned_gb_per_s" in d2h:
        out += (
            f"Device to host, {d2h['bytes'] / 2**20:,.0f} MiB: "
            f"{num(d2h['pinned_gb_per_s'])} GB/s into pinned memory, "
            f"{num(d2h.get('pageable_gb_per_s'))} GB/s into pageable memory, "
            f"{num(d2h.get('cpu_call_gb_per_s'))} GB/s by `tensor.cpu()`.\n"
        )
    elif d2h.get("skipped"):
        out += f"Device to host: not measured ({d2h['skipped']}).\n"
    return out + "\n"


def _what(row: dict) -> str:
    if row.get("kind") == "tokenizer":
        return f"the tokenizer alone ({row.get('how', '')})"
    words = [row.get("kind", ""), row.get("output", "")]
    if row.get("kind") == "transformers" and row.get("attention"):
        words.append(f"{row['attention']} attention")
    return ", ".join(w for w in words if w)


def throughput_section(d: dict) -> str:
    """One table per model and text length: every row the run timed."""
    parts = []
    for model, by_length in (d.get("throughput") or {}).items():
        for length, slot in by_length.items():
            head = f"**{model}, {length}-token texts**"
            if "texts" in slot:
                head += f": {slot['texts']:,} texts"
            if "real_tokens" in slot:
                head += f", {slot['real_tokens']:,} tokens"
            rows = [
                [
                    f"`{name}`",
                    row.get("dtype") or "",
                    _what(row),
                    num(row.get("tokens_per_s"), 0),
                    num(row.get("texts_per_s"), 1),
                    num(row.get("mfu"), 3),
                    percent(row.get("tokenizer_share"), signed=False),
                ]
                for name, row in (slot.get("rows") or {}).items()
            ]
            parts.append(
                head
                + "\n\n"
                + table(
                    ["row", "dtype", "what", "tokens/s", "texts/s", "MFU", "tokenizer share"],
                    rows,
                )
                + "\n"
            )
    if parts:
        parts.append(
            "*Tokenizer share*: the share of a row's time its tokenizer alone takes on the same "
            "texts; `bl-` rows are bertlayers, `st-` sentence-transformers, `hf-forward-` the "
            "model alone through transformers.\n\n"
        )
    return "".join(parts)


def compile_section(d: dict) -> str:
    """`runtime="compile"` against `runtime="torch"`, same texts, same child process."""
    parts = []
    for model, result in (d.get("compile") or {}).items():
        rows_in = result.get("rows") or {}
        rows = []
        for key, row in rows_in.items():
            if row.get("runtime") != "compile":
                continue
            torch_row = rows_in.get(key.replace("compile-", "torch-", 1), {})
            agree = dig(result, f"agreement.{row['dtype']}-{row['length']}") or {}
            cosines = agree.get("min_cosine_per_layer") or []
            rows.append(
                [
                    str(row.get("length", "")),
                    row.get("dtype") or "",
                    num(torch_row.get("tokens_per_s"), 0),
                    num(row.get("tokens_per_s"), 0),
                    ratio(row.get("speedup_vs_torch")),
                    num(dig(result, f"first_call_s.{key}"), 1),
                    f"{min(cosines):.6f}" if cosines else "",
                ]
            )
        head = f"**torch.compile, {model}**"
        if "outcome" in result:
            head += f": {result['outcome']}"
        if "wall_s" in result:
            head += f" in {num(result['wall_s'], 0)} s"
        if result.get("skipped"):
            head += f": skipped ({result['skipped']})"
        parts.append(head + "\n\n")
        if rows:
            parts.append(
                table(
                    [
                        "length",
                        "dtype",
                        "torch tokens/s",
                        "compile tokens/s",
                        "compile / torch",
                        "compile's first call s",
                        "lowest cosine to torch",
                    ],
                    rows,
                )
                + "\n"
            )
    return "".join(parts)


TARGET_EXTRAS = {  # a target's other figures, each in its sentence
    "measured_mfu": lambda v: f"measured at MFU {num(v, 3)}",
    "needs_tflops": lambda v: f"the target needs {num(v, 1)} TFLOP/s",
    "needs_mfu": lambda v: f"MFU {num(v, 3)}",
    "bfloat16_ratio": lambda v: f"{ratio(v)} with bertlayers in bfloat16",
}


def _target_value(target: dict, value: float | None) -> str:
    if value is None:
        return "not measured"
    if "tokens-per-s" in target["name"]:
        return f"{num(value, 0)} tokens/s"
    return ratio(value)


def targets_table(d: dict) -> str:
    rows = []
    for t in d.get("targets") or []:
        extras = [show(t[key]) for key, show in TARGET_EXTRAS.items() if t.get(key) is not None]
        if t.get("note"):
            extras.append(t["note"])
        rows.append(
            [
                t.get("what") or t["name"],
                _target_value(t, t.get("measured")),
                _target_value(t, t.get("target")),
                {True: "**met**", False: "not met", None: "no verdict"}[t.get("met")],
                (f"`{t['row']}`" if t.get("row") else "")
                + (f" ({'; '.join(extras)})" if extras else ""),
            ]
        )
    if not rows:
        return ""
    return "**Targets**\n\n" + table(["target", "measured", "target", "verdict", "from"], rows)


def gpu_tables(result: Result) -> str:
    """The GPU page's body, or the line saying no run is committed."""
    if not result.present:
        return result.source()
    d = result.data
    status = f"Status: {d.get('status', 'not recorded')}"
    if d.get("elapsed_s") is not None:
        status += f", {num(d['elapsed_s'], 0)} s"
    if d.get("skipped"):
        status += "; skipped: " + "; ".join(d["skipped"])
    if d.get("errors"):
        status += "; errors in " + ", ".join(e.get("where", "?") for e in d["errors"])
    parts = [
        device_table(d) + "\n",
        status + ".\n\n",
        models_table(d) + "\n",
        checks_section(d),
        ceilings_section(d),
        throughput_section(d),
        compile_section(d),
        targets_table(d) + "\n",
    ]
    note = dig(d, "git.note")
    if note:
        parts.append(f"*Note recorded in the file:* {note}\n\n")
    log = result.name.rsplit(".", 1)[0] + ".log"
    if (ROOT / log).exists():
        parts.append(f"The run's log, as it printed it: `{log}`.\n\n")
    parts.append(result.source())
    return "".join(parts)
