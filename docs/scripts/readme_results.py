"""The README's results block: a few headline figures, each with the command behind it."""

from __future__ import annotations

from md_format import GENERATED, num, percent, ratio, table
from result_files import Result, dig, latest, machine_words
from verdicts import cli_corpus

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def readme_block(cli_files, serve, memory_token, probes, startup: Result | None = None) -> str:
    """The README's results table: a few headline figures, each with the command that makes
    its file; a file due to be re-made is marked."""
    rows = []
    due = False

    def mark(result: Result) -> str:
        nonlocal due
        if result.needs_remake():
            due = True
            return " †"
        return ""

    short = cli_corpus(cli_files, "short")
    if short:
        r = short.data["corpora"]["short"]
        machine = machine_words(short.data) or "machine not recorded"
        rows.append(
            [
                "`bertlayers extract`, every layer, against sentence-transformers (last layer "
                f"only) and the per-text loop: short texts, whole processes ({machine})",
                f"{ratio(r['ratios']['st-encode / cli'])} and "
                f"{ratio(r['ratios']['tutorial / cli'])} faster" + mark(short),
                f"`{short.spec.remake}`",
            ]
        )
        diff = r.get("cli_vs_tutorial_max_abs_diff")
        if diff is not None:
            rows.append(
                [
                    "batched output against each text run alone, float32",
                    f"max abs diff {diff:.1e}" + mark(short),
                    f"`{short.spec.remake}`",
                ]
            )
    if startup is not None and startup.present:
        extract = startup.data["startup"]["extract"]
        rows.append(
            [
                "start-up: `bertlayers extract` on one line against a sentence-transformers "
                "script, whole processes, medians",
                f"{num(extract['median_s'])} s, {ratio(extract['vs_st_encode'])} of its time"
                + mark(startup),
                f"`{startup.spec.remake}`",
            ]
        )
    if any(m.present for m in memory_token):
        m = latest(memory_token)
        growths = [f"{f} {percent(x['rss_growth'])}" for f, x in m.data["formats"].items()]
        rows.append(
            [
                "peak memory for 10x the text (token level, every layer)",
                ", ".join(growths) + mark(m),
                f"`{m.spec.remake}`",
            ]
        )
    if serve.present:
        ours = serve.data["servers"]["bertlayers"]["rows"]["last@32"]
        theirs = dig(serve.data, "servers.infinity.rows.infinity@32")
        if theirs:
            rows.append(
                [
                    "`bertlayers serve` against infinity, 32 clients, last layer",
                    f"{num(ours['texts_per_s'], 0)} vs {num(theirs['texts_per_s'], 0)} texts/s"
                    + mark(serve),
                    f"`{serve.spec.remake}`",
                ]
            )
    for task in ("pos", "sentiment"):
        p = probes[task]
        if not p.present:
            continue
        metric = p.data["metric"]
        layers = [s for s in p.data["scores"] if s["kind"] == "layer"]
        best = max(layers, key=lambda s: s["mean"][metric])
        baseline = next(s for s in p.data["scores"] if s["name"] == "bag of words")
        rows.append(
            [
                f"which layer? {task} probe on the bundled model ({metric})",
                f"{best['name']} best, {best['mean'][metric]:.3f}; bag of words "
                f"{baseline['mean'][metric]:.3f}" + mark(p),
                f"`{p.spec.remake}`",
            ]
        )
    body = table(["what", "result", "command"], rows)
    note = (
        "\n† The file is due to be re-made: it lacks its commit, date or machine, or predates "
        "the code it measures.\n"
        if due
        else ""
    )
    return (
        f"{README_START}\n{GENERATED}\n{body}{note}\nEvery figure with its provenance, and the "
        "status of each results file: [benchmarks](docs/benchmarks/index.md).\n"
        f"{README_END}"
    )
