"""`verify`: does this model, runtime, device and dtype give the right vectors?

Every level and pooling runs batched through the engine (the streaming route the command line
and `Extractor` use, and the shared batches a server uses) on awkward texts (`awkward.py`:
empty, one token, zero-width and control characters, emoji, `\\u2028`, combining marks, RTL,
CJK; texts over the limit, split and truncated; pairs; pre-split words) and on the user's
own, and is compared with the reference (`reference.py`: transformers on one text at a time,
unpadded, float32, CPU). A float32 run must be within `FLOAT32_MAX_ABS` of it in every layer;
half precision and int8 are approximate by design and are held to a lowest cosine per layer
(`COSINE_BOUNDS`, measured on the bundled model and tiny models of eight architectures).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..chunks import RecordVectors
from ..errors import BertlayersError, OptionError
from ..io.readers import Record
from ..options import Combine, DType, LongMode, Runtime
from . import awkward
from .config import ExtractConfig, ModelOptions
from .engine import Engine
from .plan import Plan
from .reference import Reference

FLOAT32_MAX_ABS = 1e-4
# lowest cosine between a row and the reference's, per layer; what was measured is in
# docs/verify and tests/test_verify.py (the worst row of every check, every layer)
COSINE_BOUNDS = {"float16": 0.999, "bfloat16": 0.99, "int8": 0.97}


@dataclass(frozen=True)
class Bound:
    """What every layer of every check must meet: a largest absolute difference from the
    reference (`max_abs`), or a lowest cosine similarity to it (`min_cosine`)."""

    metric: str  # "max_abs" | "min_cosine"
    value: float
    why: str  # which compute made this the bound

    def ok(self, max_abs: float, min_cosine: float) -> bool:
        if self.metric == "max_abs":
            return bool(max_abs <= self.value)
        return bool(min_cosine >= self.value)

    def __str__(self) -> str:
        if self.metric == "max_abs":
            return f"max |difference| <= {self.value:g}"
        return f"lowest cosine >= {self.value:g}"


def bound_for(engine: Engine) -> Bound:
    """The bound of an engine's compute: float32 exact within 1e-4; float16, bfloat16 and
    int8 within a cosine."""
    encoder = engine.encoder
    if engine.runtime is Runtime.INT8:
        return Bound("min_cosine", COSINE_BOUNDS["int8"], "int8 runtime")
    if encoder.dtype is not DType.FLOAT32:
        name = encoder.dtype.value
        return Bound("min_cosine", COSINE_BOUNDS[name], f"{name} compute")
    return Bound("max_abs", FLOAT32_MAX_ABS, "float32 compute")


@dataclass(frozen=True)
class Check:
    """One configuration run on groups of inputs: `texts` (awkward and the user's), `long`
    (over the model's limit), `pairs`, `long-pairs`, `words` (pre-split)."""

    name: str
    inputs: tuple[str, ...]
    options: dict[str, Any]


_T, _TL, _P, _W = ("texts",), ("texts", "long"), ("pairs",), ("words",)
_SPECIAL = {"include_special": True}
_MAX_SPECIAL = {"pooling": "max", "include_special": True}
_SMALL = {"max_length": 16, "stride": 4}  # windows of 14 tokens: every longer text is split


def _checks() -> list[Check]:
    """Every level and pooling; texts over the model's limit only where their handling
    (truncation, windows) is what is checked: they cost more than all the others."""
    split, token, word = {"long": "split"}, {"level": "token"}, {"level": "word"}
    return [
        Check("sentence cls", _T, {"pooling": "cls"}),
        Check("sentence mean", _TL, {"pooling": "mean"}),
        *(Check(f"sentence {p}", _T, {"pooling": p}) for p in ("max", "first", "last")),
        *(Check(f"sentence {p} +special", _T, {"pooling": p, **_SPECIAL}) for p in _POOLINGS),
        Check("pairs mean", (*_P, "long-pairs"), {"pooling": "mean"}),
        Check("pairs cls", _P, {"pooling": "cls"}),
        Check("pairs max +special", _P, {"pooling": "max", **_SPECIAL}),
        Check("split mean", _TL, split),
        Check("split cls", _T, {**split, "pooling": "cls"}),
        Check("split last", _T, {**split, "pooling": "last"}),
        Check("split max +special, 16-token windows", _T, {**split, **_SMALL, **_MAX_SPECIAL}),
        Check("split mean, 16-token windows", _T, {**split, **_SMALL}),
        Check("split cls, 16-token windows", _T, {**split, "pooling": "cls", **_SMALL}),
        Check("token", _TL, token),
        Check("token +special", _T, {**token, **_SPECIAL}),
        Check("token truncate", _TL, {**token, "long": "truncate"}),
        Check("token +special, 16-token windows", _T, {**token, **_SMALL, **_SPECIAL}),
        Check("word first", _TL, word),
        *(Check(f"word {p}", _T, {**word, "word_pooling": p}) for p in _WORDS[1:]),
        Check("word truncate, 16 tokens", _T, {**word, "long": "truncate", "max_length": 16}),
        Check("word first, pre-split", _W, word),
        Check("word mean, pre-split", _W, {**word, "word_pooling": "mean"}),
        Check(
            "word max, pre-split, 16-token windows", _W, {**word, "word_pooling": "max", **_SMALL}
        ),
        Check("combine mean", _T, {"combine": "mean"}),
        Check("combine sum", _T, {"combine": "sum"}),
        Check("combine concat", _T, {"combine": "concat"}),
        Check("combine mean, max pooling", _T, {"combine": "mean", "pooling": "max"}),
        Check("token combine concat", _T, {**token, "combine": "concat"}),
        Check("word combine sum", _W, {**word, "combine": "sum"}),
        Check("layers 0:2 (stops early)", _T, {"layers": "0:2"}),
        Check("pairs layers -1", _P, {"layers": "-1", "pooling": "cls"}),
    ]


_POOLINGS = ["mean", "max", "last"]  # cls and first +special are the first row, as cls
_WORDS = ["first", "last", "mean", "max"]
# jobs a server would batch together (`Engine.embed_jobs`): each must equal its own run
_SHARED = ["sentence cls", "sentence max", "sentence mean +special", "combine mean, max pooling"]
_SHARED_WINDOWED = ["token", "token combine concat", "word first, pre-split"]


@dataclass
class VerifyRow:
    """One check's result: per output column (a layer, or the combined layers) the largest
    absolute difference from the reference, the lowest cosine, and the text where each was."""

    check: str
    level: str
    columns: list[str]
    max_abs: list[float]
    min_cosine: list[float]
    worst: list[str]
    texts: int
    problems: list[str] = field(default_factory=list)
    passed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "level": self.level,
            "passed": self.passed,
            "texts": self.texts,
            "columns": self.columns,
            "max_abs": _finite(self.max_abs),
            "min_cosine": _finite(self.min_cosine),
            "worst_text": self.worst,
            "problems": self.problems,
        }


def _finite(values: list[float]) -> list[float | None]:
    """JSON has no NaN or infinity: a value the engine gave none for (or not finite) is null."""
    return [x if np.isfinite(x) else None for x in values]


@dataclass
class VerifyReport:
    """Every check against the reference, and the verdict (`passed`)."""

    model: str
    runtime: str
    device: str
    dtype: str
    bound: Bound
    rows: list[VerifyRow]
    texts: int
    seconds: float
    reference: str = (
        "transformers AutoModel, one text at a time, unpadded, float32, CPU "
        "(output_hidden_states=True)"
    )

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    def failures(self) -> list[str]:
        """One line per failed check: which layers, by how much, on which text."""
        lines = []
        for row in self.rows:
            if row.passed:
                continue
            parts = list(row.problems)
            bad = [
                c
                for c in range(len(row.columns))
                if not self.bound.ok(row.max_abs[c], row.min_cosine[c])
            ]
            if bad:
                values = row.max_abs if self.bound.metric == "max_abs" else row.min_cosine
                sign = 1 if self.bound.metric == "max_abs" else -1
                worst = max(bad, key=lambda c: sign * np.nan_to_num(values[c], nan=np.inf))
                metric = self._metric(row, worst)
                parts.append(
                    f"layer {', '.join(row.columns[c] for c in bad)} over the bound "
                    f"(layer {row.columns[worst]}: {metric}, text {row.worst[worst]!r})"
                )
            lines.append(f"{row.check}: {'; '.join(parts)}")
        return lines

    def _metric(self, row: VerifyRow, c: int) -> str:
        if self.bound.metric == "max_abs":
            return f"max |difference| {row.max_abs[c]:.2e}"
        return f"lowest cosine {row.min_cosine[c]:.5f}"

    def verdict(self) -> str:
        failed = [row for row in self.rows if not row.passed]
        what = f"{self.model}, runtime {self.runtime}, {self.device}, {self.dtype}"
        if not failed:
            return (
                f"PASSED: {len(self.rows)} checks on {self.texts} texts, every layer within "
                f"{self.bound} of the reference ({what})"
            )
        return (
            f"FAILED: {len(failed)} of {len(self.rows)} checks over {self.bound} ({what}): "
            + " | ".join(self.failures())
        )

    def table(self) -> str:
        """Checks (rows) by layers (columns): the largest absolute difference, or the lowest
        cosine, as the bound measures; `*` marks a value over the bound, `!` a check that
        failed otherwise (row counts, flags: see the verdict)."""
        columns = list(dict.fromkeys(c for row in self.rows for c in row.columns))
        name_width = max(len(row.check) for row in self.rows) + 2
        labels = [f"L{c}" if c.lstrip("-").isdigit() else c for c in columns]
        widths = [max(9, len(label) + 2) for label in labels]
        header = "check".ljust(name_width) + "".join(
            label.rjust(width) for label, width in zip(labels, widths, strict=True)
        )
        lines = [header]
        for row in self.rows:
            cells = []
            for c, cell in zip(columns, widths, strict=True):
                if c not in row.columns:
                    cells.append("".rjust(cell))
                    continue
                i = row.columns.index(c)
                value = row.max_abs[i] if self.bound.metric == "max_abs" else row.min_cosine[i]
                text = f"{value:.1e}" if self.bound.metric == "max_abs" else f"{value:.5f}"
                mark = "" if self.bound.ok(row.max_abs[i], row.min_cosine[i]) else "*"
                cells.append((text + mark).rjust(cell))
            flag = " !" if row.problems else ""
            lines.append((row.check.ljust(name_width) + "".join(cells)).rstrip() + flag)
        what = "max |difference|" if self.bound.metric == "max_abs" else "lowest cosine"
        lines.append(f"({what} per layer against the reference: {self.reference})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "model": self.model,
            "runtime": self.runtime,
            "device": self.device,
            "dtype": self.dtype,
            "bound": {
                "metric": self.bound.metric,
                "value": self.bound.value,
                "why": self.bound.why,
            },
            "reference": self.reference,
            "texts": self.texts,
            "seconds": round(self.seconds, 2),
            "failures": self.failures(),
            "rows": [row.to_dict() for row in self.rows],
        }


# ---------------------------------------------------------------- inputs

_GROUPS = ("texts", "long", "pairs", "long-pairs", "words")


def built_in_inputs(reference: Reference, max_length: int) -> dict[str, list[Record]]:
    """The awkward texts, pairs and pre-split words; texts at the edges of a 16-token window
    (the checks with small windows); a text over this model's limit (three windows)."""

    def count(text: str) -> int:
        return len(reference.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    texts = [Record(name, text) for name, text in awkward.TEXTS]
    width = _SMALL["max_length"] - len(reference.prefix) - len(reference.suffix)
    for name, tokens in (("16-window-exact", width), ("16-window-plus-one", width + 1)):
        text = awkward.exact_text(count, tokens)
        if text is not None:
            texts.append(Record(name, text))
    model_width = max_length - len(reference.prefix) - len(reference.suffix)
    long = Record("long", awkward.long_text(count, int(model_width * 1.8)))  # three windows
    pairs = [Record(name, text, pair) for name, text, pair in awkward.PAIRS]
    long_pairs = [
        Record("pair-long-first", long.text, "a short answer"),
        Record("pair-long-second", "a short question?", long.text),
    ]
    words = [Record(r.id, " ".join(r.text.split()), None, tuple(r.text.split())) for r in texts]
    return {
        "texts": texts,
        "long": [long],
        "pairs": pairs,
        "long-pairs": long_pairs,
        "words": words,
    }


def _user_inputs(texts: Iterable[str] | Iterable[Record]) -> dict[str, list[Record]]:
    """The user's records, sorted into the groups they can go through."""
    groups: dict[str, list[Record]] = {name: [] for name in _GROUPS}
    for i, item in enumerate(texts):
        if isinstance(item, str):
            item = Record(str(i), item)
        if not isinstance(item, Record):
            raise OptionError(f"text {i} is {type(item).__name__}, not a string")
        record = Record(f"input:{item.id}", item.text, item.pair, item.words)
        key = "pairs" if record.pair is not None else "words" if record.words else "texts"
        groups[key].append(record)
    return groups


# ---------------------------------------------------------------- comparing


def _columns(plan: Plan) -> list[str]:
    combine = plan.config.combine
    if combine in (Combine.STACK, Combine.CONCAT):
        return [str(i) for i in plan.layers]
    return [f"{combine.value} of {len(plan.layers)}"]  # the selected layers, combined


def _by_column(vectors: np.ndarray, plan: Plan) -> np.ndarray:
    """`(..., K', H')` -> `(..., C, H)`: concatenated layers back side by side."""
    if plan.config.combine is Combine.CONCAT:
        return vectors.reshape(*vectors.shape[:-2], len(plan.layers), -1)
    return vectors


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row pair `(..., H)`; 1 where both rows are zero."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    dot = (a * b).sum(-1)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    both_zero = (np.abs(a).max(-1, initial=0) == 0) & (np.abs(b).max(-1, initial=0) == 0)
    return np.where(both_zero, 1.0, dot / np.maximum(norms, 1e-30))


def compare(
    name: str,
    records: Sequence[Record],
    got: Sequence[RecordVectors],
    plan: Plan,
    reference: Reference,
    bound: Bound,
) -> VerifyRow:
    """One check's row: the engine's output for `records` against the reference's."""
    columns = _columns(plan)
    n = len(columns)
    max_abs, min_cos = np.zeros(n), np.ones(n)
    worst = ["-"] * n
    problems: list[str] = []
    if len(got) != len(records):
        problems.append(f"{len(got)} outputs for {len(records)} texts")
    for record, out in zip(records, got, strict=False):
        expected, rows = reference.expected(record, plan)
        vectors = np.asarray(out.vectors, dtype=np.float32)
        if out.id != record.id:
            problems.append(f"output {out.id!r} in the place of text {record.id!r}")
        if vectors.shape != expected.shape:
            problems.append(
                f"text {record.id!r}: shape {vectors.shape}, the reference's {expected.shape}"
            )
            continue
        if bool(out.truncated) != rows.truncated:
            problems.append(f"text {record.id!r}: truncated is {bool(out.truncated)}")
        if plan.config.long is LongMode.SPLIT and int(out.windows) != rows.windows:
            problems.append(f"text {record.id!r}: {out.windows} windows, expected {rows.windows}")
        if not vectors.size:
            continue
        a, b = _by_column(vectors, plan), _by_column(expected, plan)
        axes = tuple(i for i in range(a.ndim) if i != a.ndim - 2)
        diff = np.abs(a - b).max(axis=axes) if a.ndim > 2 else np.abs(a - b).max(axis=-1)
        cos = _cosines(a, b)
        cos = cos.min(axis=0) if cos.ndim > 1 else cos
        for c in range(n):
            if not np.isfinite(diff[c]) or diff[c] > max_abs[c]:
                max_abs[c] = float(diff[c]) if np.isfinite(diff[c]) else float("inf")
                if bound.metric == "max_abs":
                    worst[c] = record.id
            if not np.isfinite(cos[c]) or cos[c] < min_cos[c]:
                min_cos[c] = float(cos[c]) if np.isfinite(cos[c]) else float("-inf")
                if bound.metric == "min_cosine":
                    worst[c] = record.id
    passed = not problems and all(bound.ok(max_abs[c], min_cos[c]) for c in range(n))
    return VerifyRow(
        check=name,
        level=plan.config.level.value,
        columns=columns,
        max_abs=[float(x) for x in max_abs],
        min_cosine=[float(x) for x in min_cos],
        worst=worst,
        texts=len(records),
        problems=problems[:3] + ([f"... {len(problems) - 3} more"] if len(problems) > 3 else []),
        passed=passed,
    )


# ---------------------------------------------------------------- the run


def _engine_of(engine_or_options: object) -> Engine:
    if engine_or_options is None:
        return Engine(device="cpu")
    if isinstance(engine_or_options, Engine):
        return engine_or_options
    if isinstance(engine_or_options, ModelOptions):
        return Engine.from_options(engine_or_options)
    inner = getattr(engine_or_options, "engine", None)  # an Extractor
    if isinstance(inner, Engine):
        return inner
    raise OptionError(
        f"verify takes an Engine, an Extractor or ModelOptions, not {type(engine_or_options)}"
    )


def _run(engine: Engine, records: list[Record], config: ExtractConfig) -> list[RecordVectors]:
    """The streaming route (`Engine.iter_chunks`), as `Extractor` and the command line run."""
    return [r for chunk in engine.iter_chunks(records, config) for r in chunk.records()]


def verify(
    engine_or_options: Engine | ModelOptions | object | None = None,
    texts: Iterable[str] | Iterable[Record] | None = None,
    progress: bool = False,
    built_in: bool = True,
) -> VerifyReport:
    """Check an engine (or the one `ModelOptions` load; None: the bundled model on the CPU)
    against the reference at every level and pooling, on the awkward built-in texts and on
    `texts` (strings, or records: pairs and pre-split words go through those checks).

    Returns a `VerifyReport`: `.passed`, `.rows`, `.table()`, `.verdict()`, `.to_dict()`."""
    started = time.perf_counter()
    engine = _engine_of(engine_or_options)
    info = engine.info
    reference = Reference(engine.encoder.model_id, info.revision)
    groups = (
        built_in_inputs(reference, info.max_length) if built_in else {name: [] for name in _GROUPS}
    )
    if texts is not None:
        for key, records in _user_inputs(texts).items():
            groups[key] += records
    if not any(groups.values()):
        raise OptionError("no texts to verify")
    bound = bound_for(engine)
    checks = [c for c in _checks() if any(groups[g] for g in c.inputs)]
    bar = _bar(progress, len(checks) + 1)
    rows: list[VerifyRow] = []
    plans: dict[str, tuple[Check, Plan]] = {}
    for check in checks:
        config = ExtractConfig.from_dict({"layers": "all", **check.options})
        plan = engine.plan(config)
        plans[check.name] = (check, plan)
        records = _inputs(groups, check)
        try:
            got = _run(engine, records, config)
        except BertlayersError as err:
            rows.append(_refused(check.name, plan, len(records), err))
        else:
            rows.append(compare(check.name, records, got, plan, reference, bound))
        _advance(bar)
    rows += _shared(engine, plans, groups, reference, bound)
    _advance(bar)
    if bar is not None:
        bar.close()
    return VerifyReport(
        model=info.name,
        runtime=engine.runtime.value,
        device=str(engine.encoder.device),
        dtype=engine.encoder.dtype.value,
        bound=bound,
        rows=rows,
        texts=len({r.id for records in groups.values() for r in records}),
        seconds=time.perf_counter() - started,
    )


def _inputs(groups: dict[str, list[Record]], check: Check, short: bool = False) -> list[Record]:
    """A check's records, in the order of its groups (without those over the limit)."""
    return [r for g in check.inputs if not (short and "long" in g) for r in groups[g]]


def _shared(
    engine: Engine,
    plans: dict[str, tuple[Check, Plan]],
    groups: dict[str, list[Record]],
    reference: Reference,
    bound: Bound,
) -> list[VerifyRow]:
    """Jobs a server batches together (`Engine.embed_jobs`): each compared on its own."""
    rows = []
    for names in (_SHARED, _SHARED_WINDOWED):
        chosen = [plans[n] for n in names if n in plans]
        if len(chosen) < 2:
            continue
        # the short inputs only: a text over the limit is checked on its own above
        jobs = [(_inputs(groups, check, short=True), plan) for check, plan in chosen]
        for (check, plan), out in zip(chosen, engine.embed_jobs(jobs), strict=True):
            records = _inputs(groups, check, short=True)
            name = f"shared batches: {check.name}"
            if isinstance(out, BertlayersError):
                rows.append(_refused(name, plan, len(records), out))
            else:
                rows.append(compare(name, records, out.records(), plan, reference, bound))
    return rows


def _refused(name: str, plan: Plan, texts: int, err: BertlayersError) -> VerifyRow:
    columns = _columns(plan)
    nan = [float("nan")] * len(columns)
    return VerifyRow(
        name,
        plan.config.level.value,
        columns,
        nan,
        nan,
        ["-"] * len(columns),
        texts,
        [f"the engine refused: {err}"],
        False,
    )


def _bar(enabled: bool, total: int):
    if not enabled:
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, unit="check", file=sys.stderr, dynamic_ncols=True, leave=False)


def _advance(bar) -> None:
    if bar is not None:
        bar.update(1)


__all__ = ["COSINE_BOUNDS", "FLOAT32_MAX_ABS", "Bound", "VerifyReport", "VerifyRow", "verify"]
