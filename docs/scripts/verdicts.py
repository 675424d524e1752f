"""The issues' targets against what the latest results file holding each one measured."""

from __future__ import annotations

from dataclasses import dataclass

from md_format import num, percent, ratio, table
from result_files import Result, dig, latest


@dataclass
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: no threshold, or nothing measured
    source: str  # the file it comes from
    note: str = ""


def cli_corpus(results: list[Result], corpus: str) -> Result | None:
    having = [r for r in results if r.present and dig(r.data, f"corpora.{corpus}")]
    return latest(having) if having else None


def speed_verdicts(cli_files: list[Result]) -> list[Verdict]:
    """Issue #17's targets, each from the latest whole-process run (bench/cli.py) holding it."""
    out = []

    def ratio_target(label: str, corpus: str, key: str, threshold: float, note: str = ""):
        source = cli_corpus(cli_files, corpus)
        value = dig(source.data, f"corpora.{corpus}.ratios").get(key) if source else None
        if value is None:
            out.append(Verdict(label, "not measured", None, "", note))
            return
        out.append(Verdict(label, ratio(value), value >= threshold, source.name, note))

    ratio_target("sentence-transformers / cli ≥ 1.6x on short", "short", "st-encode / cli", 1.6)
    ratio_target("tutorial loop / cli ≥ 3.5x on short", "short", "tutorial / cli", 3.5)
    ratio_target("sentence-transformers / cli ≥ 2x on mixed", "mixed", "st-encode / cli", 2.0)
    ratio_target(
        "sentence-transformers / cli ≥ 2x on long",
        "long",
        "st-encode / cli",
        2.0,
        "bertlayers embeds every token in windows; the others stop at 512 tokens",
    )
    ratio_target(
        "sentence-transformers / cli-openvino ≥ 1.8x on short",
        "short",
        "st-encode / cli-openvino",
        1.8,
    )
    every = [
        r
        for r in cli_files
        if r.present and all(dig(r.data, f"corpora.{c}") for c in ("short", "mixed", "long"))
    ]
    if every:
        source = latest(every)
        corpora = source.data["corpora"]
        mfus = [corpora[c]["contenders"]["cli"]["mfu"] for c in ("short", "mixed", "long")]
        starts = [corpora[c]["contenders"]["cli"]["startup_s"] for c in ("short", "mixed", "long")]
        out.append(
            Verdict(
                "cli MFU ≥ 0.80 of the fp32 matmul ceiling, every corpus",
                f"{min(mfus):.2f}-{max(mfus):.2f}",
                min(mfus) >= 0.80,
                source.name,
            )
        )
        out.append(
            Verdict(
                "cli start-up < 3 s",
                f"{min(starts):.1f}-{max(starts):.1f} s",
                max(starts) < 3.0,
                source.name,
            )
        )
    out.append(
        Verdict(
            "`bertlayers --help` < 0.5 s",
            "not in any results file",
            None,
            "",
            "no committed bench records it",
        )
    )
    return out


def serve_verdicts(serve: Result, soak: Result) -> list[Verdict]:
    """Issue #18's targets, from bench/serve.py's run (and its soak)."""
    if not serve.present:
        return []
    d = serve.data
    ours, peer = (
        d["servers"]["bertlayers"]["rows"],
        d["servers"].get("infinity", {}).get("rows", {}),
    )
    last, every = ours["last@32"]["texts_per_s"], ours["all-base64@32"]["texts_per_s"]
    off_last, off_all = d["offline"]["last"]["texts_per_s"], d["offline"]["all"]["texts_per_s"]
    out = [
        Verdict(
            "32 clients: ≥ 0.85x the library offline",
            f"{ratio(last / off_last)} (last layer), {ratio(every / off_all)} (all layers)",
            min(last / off_last, every / off_all) >= 0.85,
            serve.name,
        )
    ]
    if "infinity@32" in peer:
        theirs = peer["infinity@32"]
        out.append(
            Verdict(
                "32 clients: ≥ 2.5x infinity on last-layer work",
                f"{ratio(last / theirs['texts_per_s'])} ({num(last, 1)} vs "
                f"{num(theirs['texts_per_s'], 1)} texts/s)",
                last / theirs["texts_per_s"] >= 2.5,
                serve.name,
            )
        )
        p99 = ours["last@32"]["p99_s"] / theirs["p99_s"]
        out.append(
            Verdict(
                "32 clients: p99 latency ≤ half of infinity's",
                f"{ratio(p99)} of infinity's ({num(ours['last@32']['p99_s'])} vs "
                f"{num(theirs['p99_s'])} s)",
                p99 <= 0.5,
                serve.name,
            )
        )
    gain = last / ours["last@1"]["texts_per_s"]
    out.append(
        Verdict(
            "batching: 32 clients ≥ 3x one client",
            f"{ratio(gain)} (1-16 texts per request)",
            gain >= 3.0,
            serve.name,
        )
    )
    failed = sum(r["failed"] for s in d["servers"].values() for r in s["rows"].values())
    where = serve.name
    if soak.present:
        failed += soak.data["row"]["failed"]
        where += f", {soak.name}"
    out.append(Verdict("no failed request below capacity", f"{failed} failed", failed == 0, where))
    if soak.present:
        trend = soak_trend(soak.data)
        out.append(
            Verdict(
                "memory bounded under load",
                f"RSS {percent(trend)} over the soak after its first minute (linear fit)",
                None,
                soak.name,
                "the issue sets no number for it",
            )
        )
    return out


def memory_verdicts(token: list[Result], sentence: list[Result]) -> list[Verdict]:
    out = []
    for label, files in (("token level", token), ("sentence level", sentence)):
        present = [r for r in files if r.present]
        if not present:
            continue
        source = latest(present)
        growths = {f: v["rss_growth"] for f, v in source.data["formats"].items()}
        worst = max(growths.values())
        out.append(
            Verdict(
                f"peak RSS for 10x the text within +10% ({label})",
                ", ".join(f"{f} {percent(g)}" for f, g in growths.items()),
                worst <= 0.10,
                source.name,
            )
        )
    return out


def verdict_table(verdicts: list[Verdict]) -> str:
    rows = []
    for v in verdicts:
        word = {True: "**met**", False: "not met", None: "no verdict"}[v.met]
        source = f"`{v.source}`" if v.source else ""
        rows.append([v.target, v.measured, word, source + (f" ({v.note})" if v.note else "")])
    return table(["target", "measured", "verdict", "from"], rows)


def soak_trend(data: dict) -> float:
    """RSS growth over a soak from a least-squares line through the samples after the first
    minute (two samples would say more about noise than about a trend)."""
    points = [(t, rss) for t, rss in data["rss_mb_samples"] if t >= 60] or data["rss_mb_samples"]
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    slope = sum((t - mean_t) * (r - mean_r) for t, r in points) / sum(
        (t - mean_t) ** 2 for t, _ in points
    )
    first, last = points[0][0], points[-1][0]
    start = mean_r + slope * (first - mean_t)
    return slope * (last - first) / start
