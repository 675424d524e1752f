"""One self-contained HTML report from what `probe` (and its `--tradeoff`), `analyze` and
`attention --stats` wrote in a directory.

Plots are embedded as data URIs and the styles inline, so the file opens anywhere without a
network. The page marks itself `data-plots-rendered="N"` once its N plots have decoded, which
is what the browser test reads.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .. import __version__
from ..errors import InputError
from ..outputs import write_text_atomically
from ..provenance import summary

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.best td { font-weight: bold; background: #eef6ff; }
img { max-width: 100%; display: block; margin: 0.8em 0; }
code { background: #f6f6f6; padding: 0 3px; font-size: 0.85em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.8em; }
.note { color: #555; }
"""

_SCRIPT = """
function markRendered() {
  const plots = Array.from(document.querySelectorAll('img.plot'));
  const done = plots.filter(p => p.complete && p.naturalWidth > 0).length;
  document.documentElement.dataset.plotsRendered = String(done);
  document.documentElement.dataset.plotsTotal = String(plots.length);
}
window.addEventListener('load', markRendered);
"""

_PLOTS = [
    ("probe.svg", "Probe score by layer"),
    ("projection.png", "Projection of each layer"),
    ("geometry.svg", "Geometry by layer"),
    ("cka.svg", "Similarity between layers (linear CKA)"),
    ("tradeoff.svg", "Score and speed of the model cut to K layers"),
]
DIGITS = 3  # every score, spread and bound in the report's tables

# what each measure is, in a sentence (the report explains every column it shows)
MEASURES = {
    "accuracy": "the share of examples given the right label",
    "macro_f1": "F1 of each class, averaged with every class weighted alike (a majority-class "
    "guess scores low on it)",
    "entity_f1": "F1 over whole BIO entity spans (type and boundaries both right), as conlleval",
    "spearman": "rank correlation of the cosine similarities with the gold scores",
    "pearson": "linear correlation of the cosine similarities with the gold scores",
    "auc": "the chance that a random positive pair scores above a random negative one",
    "mrr@10": "mean over queries of 1/rank of the first relevant document (0 past rank 10)",
    "ndcg@10": "discounted gain of the top 10 against the best possible ranking",
    "recall@1": "share of each query's relevant documents found at rank 1",
    "recall@10": "share of each query's relevant documents found in the top 10",
    "recall@100": "share of each query's relevant documents found in the top 100",
}


def _image(path: Path, caption: str) -> str:
    kind = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="plot" alt="{html.escape(caption)}" src="data:{kind};base64,{data}">'


def _table(header: list[str], rows: list[list[str]], best: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="best"' if i == best else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _number(value: float | None, digits: int = DIGITS) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _measures(names: list[str]) -> str:
    """One sentence naming what each measure shown is."""
    known = [f"<i>{html.escape(n.replace('_', ' '))}</i>: {MEASURES[n]}" for n in names
             if n in MEASURES]  # fmt: skip
    return "; ".join(known) + "." if known else ""


def is_local_path(model_id: str) -> bool:
    """Whether a model id is a directory on this machine (not a hub id `org/name`)."""
    return (
        model_id.startswith(("/", ".", "~", "\\"))
        or model_id.count("/") > 1
        or (len(model_id) > 2 and model_id[1:3] in (":\\", ":/"))
    )


def model_label(model: dict) -> str:
    """How the report names a model: the bundled one by its name, a hub id as it is, a local
    directory by its last folder (its path is this machine's business, not the reader's)."""
    name = str(model.get("name") or model.get("id") or "model")
    if is_local_path(name):
        return f"{Path(name).name} (local directory)"
    return name


def _shown_provenance(provenance: dict) -> dict:
    """The provenance as the report prints it: a local model path named as `model_label`."""
    shown = summary(provenance)
    model = dict(shown.get("model") or {})
    if model and is_local_path(str(model.get("id", ""))):
        model["id"] = model_label(model)
        shown["model"] = model
    return shown


def _data_name(path: object) -> str:
    return html.escape(Path(str(path)).name) if path else "the data"


def _matching_section(probe: dict, directory: Path) -> list[str]:
    """Similarity or retrieval: each row's metrics with their 95% bootstrap intervals."""
    task, scores = probe["task"], probe["scores"]
    metrics = list(scores[0]["values"])
    rows, best = [], None
    for i, s in enumerate(scores):
        if s["label"] == probe["best"]:
            best = i
        cells = [
            f"{_number(s['values'][m])} [{_number(s['ci'][m][0])}, {_number(s['ci'][m][1])}]"
            for m in metrics
        ]
        rows.append([s["label"], *cells])
    if task["kind"] == "similarity":
        what = (
            f"{task['pairs']} scored pairs of {task['texts']} distinct texts; cosine similarity "
            f"against the gold score{' (binary: AUC too)' if task.get('binary_gold') else ''}"
        )
    else:
        what = (
            f"{task['queries']} queries over {task['documents']} documents; exact cosine "
            f"search (queries: --long {task.get('query_long')}, documents: --long "
            f"{task.get('doc_long')})"
        )
    unit = "pairs" if task["kind"] == "similarity" else "queries"
    parts = [
        f"<h2>{task['kind'].capitalize()} by layer</h2>",
        f'<p class="note">Data: <b>{_data_name(task.get("data"))}</b>. {html.escape(what)}. '
        f"Best by {probe['metric']}: <b>{html.escape(probe['best'])}</b>.</p>",
        f'<p class="note">Each cell is the score on all the {unit} followed by its 95% '
        f"confidence interval [low, high]: the 2.5th and 97.5th percentiles of the score over "
        f"{task['bootstrap']} bootstrap resamples of the {unit} (seed {task['seed']}). "
        f"{_measures(metrics)}</p>",
        _table(["probe", *metrics], rows, best),
    ]
    if (directory / "probe.svg").exists():
        caption = f"{task['kind'].capitalize()} by layer"
        parts += [f"<h3>{caption}</h3>", _image(directory / "probe.svg", caption)]
    return parts


def _probe_section(probe: dict, directory: Path) -> list[str]:
    if probe["task"].get("kind") in ("similarity", "retrieval"):
        return _matching_section(probe, directory)
    task, metric = probe["task"], probe["metric"]
    metrics = list(probe["scores"][0]["mean"])
    test_split = task["evaluation"] == "test set"
    rows, best = [], None
    for i, s in enumerate(probe["scores"]):
        if s["name"] == probe["best"]:
            best = i
        rows.append(
            [s["name"]]
            + [
                _number(s["mean"][m]) if test_split
                else f"{_number(s['mean'][m])} ± {_number(s['std'][m])}"
                for m in metrics
            ]
        )  # fmt: skip
    classes = task["classes"]
    shown = ", ".join(classes[:12]) + (f" … ({len(classes)} in all)" if len(classes) > 12 else "")
    data = f"<b>{_data_name(task.get('data'))}</b>"
    if task.get("test"):
        data += f", tested on <b>{_data_name(task['test'])}</b>"
    if test_split:
        spread = "Each cell is the score on the test set (one split: no spread to show). "
    else:
        folds = task["evaluation"].split("-fold")[0]
        spread = (
            f"Each cell is the mean over the {folds} cross-validation folds ± the standard "
            "deviation of the fold scores: how much the score moved from one held-out fold "
            "to another (not a confidence interval). "
        )
    parts = [
        "<h2>Probes</h2>",
        f'<p class="note">Data: {data}: {task["level"]}-level labels, {task["rows"]} examples '
        f"from {task['texts']} texts; classes: {html.escape(shown)}. {task['classifier']} "
        f"probes, {html.escape(task['evaluation'])}, seed {task['seed']}. Best by "
        f"{metric.replace('_', ' ')}: <b>{html.escape(probe['best'])}</b>.</p>",
        f'<p class="note">{spread}{_measures(metrics)}</p>',
        _table(["probe", *[m.replace("_", " ") for m in metrics]], rows, best),
    ]
    mix = next((s for s in probe["scores"] if s.get("weights")), None)
    if mix:
        weights = ", ".join(
            f"{layer}: {_number(w)}"
            for layer, w in zip(task["layers"], mix["weights"], strict=False)
        )
        parts.append(f'<p class="note">Scalar mix weights by layer — {weights}.</p>')
    for name, caption in _PLOTS[:2]:
        if (directory / name).exists():
            parts += [f"<h3>{caption}</h3>", _image(directory / name, caption)]
    return parts


def _analysis_section(analysis: dict, directory: Path) -> list[str]:
    layers = analysis["layers"]
    columns = [c for c in layers[0] if c != "layer" and layers[0][c] is not None]
    rows = [[str(r["layer"])] + [_number(r[c]) for c in columns] for r in layers]
    parts = [
        "<h2>Layer geometry</h2>",
        f'<p class="note">{html.escape(_sample_sentence(analysis))}</p>',
        _table(["layer", *[c.replace("_", " ") for c in columns]], rows),
    ]
    for name, caption in _PLOTS[2:4]:
        if (directory / name).exists():
            parts += [f"<h3>{caption}</h3>", _image(directory / name, caption)]
    return parts


def _sample_sentence(analysis: dict) -> str:
    """What the geometry was measured on, as a sentence (not the raw sample record)."""
    sample, level = analysis.get("sample") or {}, analysis["level"]
    said = [f"{level.capitalize()}-level vectors: {sample.get('rows')} rows"]
    if sample.get("anisotropy_pairs"):
        said.append(
            f"anisotropy is the mean cosine of {sample['anisotropy_pairs']} random pairs of rows "
            "from different texts"
        )
    if sample.get("cka_rows"):
        said.append(f"linear CKA and the mean norm use {sample['cka_rows']} of the rows")
    if sample.get("word_types"):
        said.append(
            f"self-similarity is the mean cosine between a word's occurrences in different "
            f"contexts, over {sample['word_types']} word types"
        )
    if sample.get("sentences"):
        said.append(
            f"intra-sentence similarity is the mean cosine of a sentence's words to its mean "
            f"vector, over {sample['sentences']} sentences"
        )
    said.append("'adjusted' subtracts the layer's anisotropy")
    return "; ".join(said) + f" (random seed {sample.get('seed')})."


def _tradeoff_section(tradeoff: dict, directory: Path) -> list[str]:
    """`probe --tradeoff`: score, measured speed and size per K, the K chosen, and where and
    how it was measured."""
    task, measure, where = tradeoff["task"], tradeoff["measure"], tradeoff["machine"]
    metric = task["metric"].replace("_", " ")
    rows, chosen = [], None
    for i, r in enumerate(tradeoff["rows"]):
        if r["k"] == tradeoff["chosen"]:
            chosen = i
        score = (
            f"{_number(r['score'])} ± {_number((r['high'] - r['low']) / 2)}"
            if task.get("symmetric")
            else f"{_number(r['score'])} [{_number(r['low'])}, {_number(r['high'])}]"
        )
        rows.append([str(r["k"]), score, f"{r['texts_per_s']:.1f}", f"{r['size_bytes'] / 1e6:.1f}"])
    best = tradeoff["best"]
    if tradeoff["chosen"] is None:
        verdict = (
            f"No K measured is within {task['tolerance']:g} of the best layer, "
            f"{best['layer']} ({_number(best['score'])})."
        )
    else:
        verdict = (
            f"The smallest K within {task['tolerance']:g} {metric} of the best layer, "
            f"{best['layer']} ({_number(best['score'])}), is <b>K = {tradeoff['chosen']}</b>."
        )
    series = f", {html.escape(task['series'])} rows" if task.get("series") else ""
    gpu = f", {html.escape(str(where.get('gpu')))}" if where.get("gpu") else ""
    device = html.escape(str(measure.get("settings", {}).get("device")))
    load = where.get("load_average") or {}
    loads = ""
    if load.get("before") and load.get("after"):
        loads = (
            f"; 1-minute load average {load['before'][0]:.1f} before, {load['after'][0]:.1f} "
            "after (other work on the machine slows every figure)"
        )
    parts = [
        "<h2>Depth trade-off</h2>",
        f'<p class="note">For each K: the {metric} of layer K{series} (in the cell, '
        f"{html.escape(task['interval'])}), which is exactly the last layer of the model cut "
        "to its first K layers (<code>bertlayers truncate --keep-layers K</code>); that cut "
        f"model's texts per second, measured here on {measure['texts']} of the probe's "
        f"{measure['of']} texts (median of {measure['rounds']} rounds after a warm-up; "
        f"{html.escape(measure.get('schedule', ''))}); and its size on disk. {verdict}</p>",
        _table(["K", metric, "texts/s", "size MB"], rows, chosen),
        f'<p class="note">Measured on {html.escape(str(where.get("cpu")))} '
        f"({where.get('usable_cores')} of {where.get('cores')} cores usable, "
        f"{where.get('torch_threads')} torch threads{gpu}), device {device}, torch "
        f"{html.escape(str(where.get('torch')))}, {html.escape(str(where.get('date')))}, "
        f"commit {html.escape(str(where.get('git_commit')))}{loads}. Command: "
        f"<code>{html.escape(str(where.get('command')))}</code>.</p>",
    ]
    if (directory / "tradeoff.svg").exists():
        caption = _PLOTS[4][1]
        parts += [f"<h3>{caption}</h3>", _image(directory / "tradeoff.svg", caption)]
    return parts


def _attention_section(stats: dict, directory: Path) -> list[str]:
    """Per-head statistics of `bertlayers attention --stats`: what each measure is, its
    layers x heads heatmap, and the table."""
    measures: dict = stats["measures"]
    parts = [
        "<h2>Attention heads</h2>",
        f'<p class="note">Per-head statistics over {stats.get("texts")} texts of '
        f"{html.escape(str(stats.get('data')))} ({stats.get('query_rows')} query rows, "
        f"{html.escape(str(stats.get('pooled')))}); {stats.get('level')} level; layer k is the "
        "self-attention inside encoder layer k.</p>",
        "<ul>"
        + "".join(
            f"<li><b>{html.escape(name)}</b>: {html.escape(text)}</li>"
            for name, text in measures.items()
        )
        + "</ul>",
    ]
    for name in measures:
        for suffix in (".svg", ".png"):
            figure = directory / f"attention-{name}{suffix}"
            if figure.exists():
                parts.append(_image(figure, f"{name} by layer and head"))
                break
    rows = [
        [str(r["layer"]), str(r["head"]), *(_number(r[m]) for m in measures)] for r in stats["rows"]
    ]
    parts.append(_table(["layer", "head", *measures], rows))
    return parts


def write_results(directory: str | Path, stem: str, data: dict, csv_text: str) -> list[Path]:
    """`STEM.json` and `STEM.csv` in `directory` (made if needed): what `build_report` reads."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.json", out / f"{stem}.csv"]
    write_text_atomically(paths[0], json.dumps(data, indent=1, default=str) + "\n")
    write_text_atomically(paths[1], csv_text)
    return paths


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err.msg})") from None


def report_inputs(directory: str | Path) -> list[Path]:
    """The files `build_report` reads in `directory` (its results and plots), and nothing
    else: an earlier report there is an output, not an input."""
    folder = Path(directory)
    names = ["probe.json", "tradeoff.json", "analysis.json", "attention-stats.json",
             *(n for n, _ in _PLOTS)]  # fmt: skip
    found = [folder / n for n in names if (folder / n).is_file()]
    return found + sorted(p for p in folder.glob("attention-*.*") if p.suffix in (".svg", ".png"))


def build_report(directory: str | Path, output: str | Path | None = None) -> Path:
    """Write `report.html` (or `output`) from the probe and analysis results in `directory`."""
    folder = Path(directory)
    if not folder.is_dir():
        raise InputError(f"not a directory: {directory}")
    probe = _read_json(folder / "probe.json")
    tradeoff = _read_json(folder / "tradeoff.json")
    analysis = _read_json(folder / "analysis.json")
    attention = _read_json(folder / "attention-stats.json")
    if probe is None and analysis is None and attention is None:
        raise InputError(
            f"{directory} holds no probe.json, analysis.json or attention-stats.json: run "
            f"'bertlayers probe ... -o {directory}', 'bertlayers analyze STORE -o {directory}' "
            f"or 'bertlayers attention ... --stats -o {directory}' first"
        )
    provenance = (probe or analysis or {}).get("provenance") or {
        "model": {"name": attention.get("model"), "fingerprint": attention.get("fingerprint")},
        "layers": attention.get("layers"),
    }
    model = provenance.get("model", {})
    title = f"bertlayers report — {model_label(model)}"
    body = [f"<h1>{html.escape(title)}</h1>"]
    body.append(
        f'<p class="note">Model {html.escape(model_label(model))} '
        f"({html.escape(str(model.get('architecture')))}, {model.get('num_layers')} layers, "
        f"hidden {model.get('hidden_size')}); layers {provenance.get('layers')} "
        "(0 = embedding output); "
        f"pooling {html.escape(str(provenance.get('pooling', provenance.get('word_pooling'))))}; "
        f"bertlayers {__version__}.</p>"
    )
    if probe:
        body += _probe_section(probe, folder)
    if tradeoff:
        body += _tradeoff_section(tradeoff, folder)
    if analysis:
        body += _analysis_section(analysis, folder)
    if attention:
        body += _attention_section(attention, folder)
    body += [
        "<h2>Provenance</h2>",
        "<details><summary>how these vectors were made</summary><pre>",
        html.escape(json.dumps(_shown_provenance(provenance), indent=1)),
        "</pre></details>",
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f"<script>{_SCRIPT}</script></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    target = Path(output) if output else folder / "report.html"
    write_text_atomically(target, page)
    return target
