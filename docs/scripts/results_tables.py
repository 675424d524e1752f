"""The results pages' tables (probes, geometry, matching) and the status of every file."""

from __future__ import annotations

from md_format import table
from result_files import Result

PROBE_TASKS = [
    ("sentiment", "sentiment (macro-F1)"),
    ("hedge", "hedge (macro-F1)"),
    ("topic", "BBC topic (macro-F1)"),
    ("pos", "WSJ POS (accuracy)"),
]
COMBINED = {"mean of all": "mean", "concat last 4": "cat-4", "scalar mix": "mix"}


def probe_table(results: dict[str, Result]) -> str:
    columns: list[str] = []
    rows = []
    for task, label in PROBE_TASKS:
        r = results[task]
        if not r.present:
            continue
        d = r.data
        metric = d["metric"]
        scores = {s["name"]: s["mean"][metric] for s in d["scores"]}
        names = list(scores)
        if not columns:
            columns = names
        best = d.get("best")
        rows.append(
            [label]
            + [
                (f"**{scores[n]:.3f}**" if n == best else f"{scores[n]:.3f}") if n in scores else ""
                for n in columns
            ]
        )
    short = {"majority": "majority", "bag of words": "BoW"}
    header = ["task"] + [
        short.get(n) or COMBINED.get(n) or n.replace("layer ", "L") for n in columns
    ]
    out = table(header, rows)
    tasks = {
        (t["evaluation"], t["classifier"], t["seed"])
        for t in (results[name].data["task"] for name, _ in PROBE_TASKS if results[name].present)
    }
    how = "; ".join(f"{e}, {c}, seed {s}" for e, c, s in sorted(tasks))
    out += (
        f"\nEach cell: the mean of the task's metric ({how}). L0 = layer 0, the embedding "
        "output; BoW = the bag-of-words baseline; mean / cat-4 / mix = the mean of all layers, "
        "the last four concatenated, the learned scalar mix; bold = the best probe.\n\n"
    )
    for task, _ in PROBE_TASKS:
        out += results[task].source() + "\n"
    return out


def geometry_table(result: Result) -> str:
    if not result.present:
        return result.source()
    rows = [
        [
            str(x["layer"]),
            f"{x['anisotropy']:.3f}",
            f"{x['self_similarity']:.3f}",
            f"{x['self_similarity_adjusted']:.3f}",
            f"{x['intra_sentence']:.3f}",
            f"{x['intra_sentence_adjusted']:.3f}",
            f"{x['norm']:.2f}",
        ]
        for x in result.data["layers"]
    ]
    sample = result.data.get("sample", {})
    head = (
        f"{sample.get('rows', 0):,} words of {sample.get('sentences', 0):,} sentences "
        f"({sample.get('word_types', 0):,} word types seen 5+ times for self-similarity).\n\n"
    )
    return (
        head
        + table(
            [
                "layer",
                "anisotropy",
                "self-similarity",
                "(adjusted)",
                "intra-sentence",
                "(adjusted)",
                "mean norm",
            ],
            rows,
        )
        + "\n"
        + result.source()
    )


def matching_table(result: Result, metric: str, baselines: tuple[str, ...]) -> str:
    if not result.present:
        return result.source()
    d = result.data
    cols: list[str] = []
    grid: dict[str, dict[str, float]] = {}
    base = []
    for s in d["scores"]:
        if s["kind"] == "baseline":
            if s["name"] in baselines:
                base.append(f"{s['name']}: {s['values'][metric]:.3f}")
            continue
        name = s["name"].replace("layer ", "L").replace("mean of all", "mean")
        name = name.replace("concat last 4", "cat-4").replace("mean of 1,6", "first-last")
        if name not in cols:
            cols.append(name)
        grid.setdefault(s["post"], {})[name] = s["values"][metric]
    best = max(
        ((p, c) for p in grid for c in grid[p] if grid[p][c] == grid[p][c]),
        key=lambda pc: grid[pc[0]][pc[1]],
    )
    rows = []
    for post, values in grid.items():
        rows.append(
            [f"`{post}`"]
            + [
                "n/a"
                if values.get(c) is None or values[c] != values[c]
                else (
                    f"**{values[c]:.3f}**"
                    if values[c] == grid[best[0]][best[1]]
                    else f"{values[c]:.3f}"
                )
                for c in cols
            ]
        )
    out = table(["`--post`", *cols], rows)
    out += f"\n{metric} by layer and post-processing ({', '.join(base)}); bold = the best.\n\n"
    return out + result.source()


# ----------------------------------------------------------------------------- status


def status_table(results: list[Result]) -> str:
    rows = []
    for r in results:
        if not r.present:
            state = "not committed"
        elif r.needs_remake():
            state = "; ".join((["lacks " + ", ".join(r.missing)] if r.missing else []) + r.stale)
        else:
            state = "complete"
        rows.append([f"`{r.name}`", r.date or "", state])
    return table(["file", "date recorded", "status"], rows)


def remake_list(results: list[Result]) -> str:
    lines = []
    for r in results:
        if r.needs_remake():
            lines.append(f"- `{r.name}`: `{r.spec.remake}`")
    return "\n".join(lines) + "\n"
