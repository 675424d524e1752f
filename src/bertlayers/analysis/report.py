"""One self-contained HTML report from what `probe`, `analyze` and `attention --stats` wrote in
a directory.

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
]


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


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _matching_section(probe: dict, directory: Path) -> list[str]:
    """Similarity or retrieval: each row's metrics with their 95% bootstrap intervals."""
    task, scores = probe["task"], probe["scores"]
    metrics = list(scores[0]["values"])
    rows, best = [], None
    for i, s in enumerate(scores):
        if s["label"] == probe["best"]:
            best = i
        cells = [
            f"{_number(s['values'][m])} [{_number(s['ci'][m][0], 3)}, {_number(s['ci'][m][1], 3)}]"
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
    parts = [
        f"<h2>{task['kind'].capitalize()} by layer</h2>",
        f'<p class="note">{html.escape(what)}. 95% percentile bootstrap intervals over '
        f"{task['bootstrap']} resamples (seed {task['seed']}). Best by {probe['metric']}: "
        f"<b>{html.escape(probe['best'])}</b>.</p>",
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
    rows, best = [], None
    for i, s in enumerate(probe["scores"]):
        if s["name"] == probe["best"]:
            best = i
        rows.append([s["name"]] + [f"{s['mean'][m]:.4f} ± {s['std'][m]:.3f}" for m in metrics])
    classes = task["classes"]
    shown = ", ".join(classes[:12]) + (f" … ({len(classes)} in all)" if len(classes) > 12 else "")
    parts = [
        "<h2>Probes</h2>",
        f'<p class="note">{task["level"]}-level labels, {task["rows"]} examples from '
        f"{task['texts']} texts; classes: {html.escape(shown)}. {task['classifier']} probes, "
        f"{html.escape(task['evaluation'])}, seed {task['seed']}. Best by "
        f"{metric.replace('_', ' ')}: <b>{html.escape(probe['best'])}</b>.</p>",
        _table(["probe", *[m.replace("_", " ") for m in metrics]], rows, best),
    ]
    mix = next((s for s in probe["scores"] if s.get("weights")), None)
    if mix:
        weights = ", ".join(
            f"{layer}: {w:.2f}" for layer, w in zip(task["layers"], mix["weights"], strict=False)
        )
        parts.append(f'<p class="note">Scalar mix weights by layer — {weights}.</p>')
    for name, caption in _PLOTS[:2]:
        if (directory / name).exists():
            parts += [f"<h3>{caption}</h3>", _image(directory / name, caption)]
    return parts


def _analysis_section(analysis: dict, directory: Path) -> list[str]:
    layers = analysis["layers"]
    columns = [c for c in layers[0] if c != "layer" and layers[0][c] is not None]
    rows = [[str(r["layer"])] + [f"{r[c]:.4f}" for c in columns] for r in layers]
    parts = [
        "<h2>Layer geometry</h2>",
        f'<p class="note">{analysis["level"]}-level vectors; sample: '
        f"{html.escape(json.dumps(analysis['sample']))}.</p>",
        _table(["layer", *[c.replace("_", " ") for c in columns]], rows),
    ]
    for name, caption in _PLOTS[2:]:
        if (directory / name).exists():
            parts += [f"<h3>{caption}</h3>", _image(directory / name, caption)]
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
        [str(r["layer"]), str(r["head"]), *(_number(r[m], 3) for m in measures)]
        for r in stats["rows"]
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
    names = ["probe.json", "analysis.json", "attention-stats.json", *(n for n, _ in _PLOTS)]
    found = [folder / n for n in names if (folder / n).is_file()]
    return found + sorted(p for p in folder.glob("attention-*.*") if p.suffix in (".svg", ".png"))


def build_report(directory: str | Path, output: str | Path | None = None) -> Path:
    """Write `report.html` (or `output`) from the probe and analysis results in `directory`."""
    folder = Path(directory)
    if not folder.is_dir():
        raise InputError(f"not a directory: {directory}")
    probe = _read_json(folder / "probe.json")
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
    title = f"bertlayers report — {model.get('name', 'model')}"
    body = [f"<h1>{html.escape(title)}</h1>"]
    body.append(
        f'<p class="note">Model {html.escape(str(model.get("name")))} '
        f"({html.escape(str(model.get('architecture')))}, {model.get('num_layers')} layers, "
        f"hidden {model.get('hidden_size')}); layers {provenance.get('layers')} "
        "(0 = embedding output); "
        f"pooling {html.escape(str(provenance.get('pooling', provenance.get('word_pooling'))))}; "
        f"bertlayers {__version__}.</p>"
    )
    if probe:
        body += _probe_section(probe, folder)
    if analysis:
        body += _analysis_section(analysis, folder)
    if attention:
        body += _attention_section(attention, folder)
    body += [
        "<h2>Provenance</h2>",
        "<details><summary>how these vectors were made</summary><pre>",
        html.escape(json.dumps(summary(provenance), indent=1)),
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
