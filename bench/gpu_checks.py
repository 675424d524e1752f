"""The GPU check's exactness checks against the per-text float32 reference, passed or failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gpu_common import MAX_LENGTH, free_memory

EXACT_LIMIT = 1e-4  # float32 against the reference, every layer
COSINE_LIMIT = 0.99  # bfloat16 / float16 against the reference, lowest per layer


def reference_states(model_dir: Path, texts: list[str], device: torch.device) -> list[np.ndarray]:
    """Every layer's hidden states `(K, T, H)` of each text alone: unpadded, float32, eager
    attention, straight through transformers."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager")
    model = model.eval().to(device=device, dtype=torch.float32)
    out = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt").to(device)
            states = model(**enc, output_hidden_states=True).hidden_states
            out.append(torch.stack(states)[:, 0].float().cpu().numpy())
    del model
    return out


def record_check(checks: list, name: str, value: float, limit: float, kind: str) -> None:
    passed = bool(np.isfinite(value)) and (value <= limit if kind == "max" else value >= limit)
    checks.append(
        {"name": name, "value": float(value), "limit": limit, "kind": kind, "passed": passed}
    )


def exactness(label, model_dir: Path, texts: list[str], device, args, checks: list, out: dict):
    """float32 against the reference (max |diff| per layer), half precision by the lowest
    cosine per layer, sentence-transformers float32 against the reference; into `out` as it
    goes (a failure part-way keeps what was measured)."""
    from bertlayers import Extractor

    ref = reference_states(model_dir, texts, device)
    ref_pooled = np.stack([s[:, 1:-1].mean(1) for s in ref])  # (N, K, H), specials left out
    ref_tokens = np.concatenate([s[:, 1:-1].transpose(1, 0, 2) for s in ref])  # (sum T, K, H)
    out.update(texts=len(texts), tokens=[int(s.shape[1]) for s in ref])

    def per_layer_max(a: np.ndarray, b: np.ndarray) -> list[float]:
        return [float(v) for v in np.abs(a - b).max(axis=tuple(i for i in range(a.ndim) if i != 1))]

    extractor = Extractor(str(model_dir), device=str(device), dtype="float32")
    runs = {
        "pooled-all": lambda **o: extractor.embed(texts, layers="all", pooling="mean", **o),
        "pooled-last": lambda **o: extractor.embed(texts, layers=-1, pooling="mean", **o),
    }
    batchings = {"default": {}, "padded": {"max_padding": 1.0, "batch_tokens": 2048}}
    for run_name, run in runs.items():
        expected = ref_pooled if run_name == "pooled-all" else ref_pooled[:, -1:]
        for batching, options in batchings.items():
            diff = per_layer_max(run(**options), expected)
            out[f"float32-{run_name}-{batching}-max_abs_diff_per_layer"] = diff
            record_check(
                checks,
                f"{label}/float32/{run_name}/{batching}: max |diff|",
                max(diff),
                EXACT_LIMIT,
                "max",
            )
    for batching, options in batchings.items():
        tokens = extractor.extract_tokens(texts, layers="all", **options)
        got = np.concatenate([np.asarray(tokens[i].vectors) for i in range(len(texts))])
        diff = per_layer_max(got, ref_tokens)
        out[f"float32-tokens-all-{batching}-max_abs_diff_per_layer"] = diff
        record_check(
            checks,
            f"{label}/float32/tokens-all/{batching}: max |diff|",
            max(diff),
            EXACT_LIMIT,
            "max",
        )
    extractor = None  # freed before the half-precision models load
    for dtype in args.dtype_list:
        if dtype == "float32":
            continue
        half = Extractor(str(model_dir), device=str(device), dtype=dtype)
        pooled = half.embed(texts, layers="all", pooling="mean")
        tokens = half.extract_tokens(texts, layers="all")
        rows = np.concatenate([np.asarray(tokens[i].vectors) for i in range(len(texts))])
        for what, got, expected in (
            ("pooled-all", pooled, ref_pooled),
            ("tokens-all", rows, ref_tokens),
        ):
            cosines = lowest_cosine_per_layer(got, expected)
            out[f"{dtype}-{what}-min_cosine_per_layer"] = cosines
            record_check(
                checks, f"{label}/{dtype}/{what}: lowest cosine", min(cosines), COSINE_LIMIT, "min"
            )
        del half
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device=str(device))
    st.max_seq_length = MAX_LENGTH
    got = st.encode(texts, batch_size=16, show_progress_bar=False, convert_to_numpy=True)
    expected = np.stack([s[-1].mean(0) for s in ref])  # its mean pooling keeps the specials
    diff = float(np.abs(got - expected).max())
    out["st-float32-last-max_abs_diff"] = diff
    record_check(
        checks, f"{label}/sentence-transformers float32: max |diff|", diff, EXACT_LIMIT, "max"
    )
    del st
    if device.type != "cpu" and args.cpu_check_texts:
        subset = texts[: args.cpu_check_texts]
        on_cpu = reference_states(model_dir, subset, torch.device("cpu"))
        diff = max(float(np.abs(a - b).max()) for a, b in zip(on_cpu, ref, strict=False))
        out["reference-device-vs-cpu-max_abs_diff"] = diff
        record_check(
            checks,
            f"{label}/reference on the device vs the CPU: max |diff|",
            diff,
            EXACT_LIMIT,
            "max",
        )
    free_memory(device)


def lowest_cosine_per_layer(approx: np.ndarray, exact: np.ndarray) -> list[float]:
    """Per layer (axis 1), the lowest cosine between approximate and exact rows (unrounded:
    a rounded 0.98996 would pass a 0.99 limit)."""
    approx, exact = approx.astype(np.float64), exact.astype(np.float64)
    dot = (approx * exact).sum(-1)
    norms = np.linalg.norm(approx, axis=-1) * np.linalg.norm(exact, axis=-1)
    return [float(v) for v in (dot / np.maximum(norms, 1e-30)).min(axis=0)]
