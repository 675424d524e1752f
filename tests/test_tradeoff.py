"""`probe --tradeoff`: per K, layer K's score beside the measured speed and size of the real
model cut to K layers, and the smallest K within the tolerance of the best layer; on real
sentiment rows and BBC articles with the bundled model, refusals on tiny random models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from bertlayers.analysis.tradeoff import choose_depth, depth_scores
from bertlayers.core.encoder import bundled_model_path
from conftest import build_tiny_model
from test_cli import assert_one_line_error, run_cli
from test_probe import open_in_chromium

TOLERANCE = 0.05


@pytest.fixture(scope="module")
def sentiment_file(tmp_path_factory, shared_data) -> Path:
    """240 rows of the shared sentiment file, both labels (every 16th row)."""
    lines = (shared_data / "sentiment-polarity.tsv").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("tradeoff") / "sentiment.tsv"
    path.write_text("\n".join([lines[0], *lines[1::16][:240]]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sentiment_run(sentiment_file):
    root = sentiment_file.parent
    result = run_cli(
        "probe", str(sentiment_file), "-o", "run", "--folds", "3", "--projection", "none",
        "--tradeoff", "--tradeoff-layers", "1,3,6", "--tradeoff-texts", "96",
        "--tradeoff-rounds", "2", "--tolerance", str(TOLERANCE), cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root / "run", result


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_choose_depth_is_the_smallest_k_within_the_tolerance():
    scores = {1: 0.60, 2: 0.70, 3: 0.71, 4: 0.72, 5: 0.715, 6: 0.69}
    assert choose_depth(scores, [1, 2, 3, 4, 5, 6], 0.01) == (4, 3)
    assert choose_depth(scores, [1, 2, 3, 4, 5, 6], 0.02) == (4, 2)  # 0.70 = 0.72 - 0.02
    assert choose_depth(scores, [1, 2, 3, 4, 5, 6], 0.0) == (4, 4)
    assert choose_depth(scores, [1, 6], 0.01) == (4, None)  # the best layer is not measured
    assert choose_depth({1: 0.5, 2: 0.7, 3: 0.7}, [2, 3], 0.0) == (2, 2)  # ties: shallower


def test_tradeoff_scores_are_the_probe_rows_and_k_is_hand_checked(sentiment_run):
    run, result = sentiment_run
    probe, tradeoff = _json(run / "probe.json"), _json(run / "tradeoff.json")
    rows = {s["layer"]: s for s in probe["scores"] if s["kind"] == "layer"}
    metric = probe["metric"]
    assert metric == tradeoff["task"]["metric"] == "macro_f1"
    # by hand: the best encoder layer of the probe's own rows, then the smallest K measured
    # whose mean is at least that best minus the tolerance
    best = max((layer for layer in rows if layer >= 1), key=lambda k: rows[k]["mean"][metric])
    floor = rows[best]["mean"][metric] - TOLERANCE
    within = [k for k in (1, 3, 6) if rows[k]["mean"][metric] >= floor]
    assert tradeoff["best"] == {"layer": best, "score": rows[best]["mean"][metric]}
    assert tradeoff["chosen"] == (within[0] if within else None)
    assert [r["k"] for r in tradeoff["rows"]] == [1, 3, 6]
    for r in tradeoff["rows"]:
        mean, std = rows[r["k"]]["mean"][metric], rows[r["k"]]["std"][metric]
        assert (r["score"], r["low"], r["high"]) == pytest.approx((mean, mean - std, mean + std))
    chosen_line = next(line for line in result.stdout.splitlines() if "<- chosen" in line)
    assert chosen_line.split()[0] == str(tradeoff["chosen"])
    assert f"within {TOLERANCE:g} of it is K = {tradeoff['chosen']}" in result.stdout


def test_tradeoff_times_and_weighs_real_cut_models(sentiment_run):
    run, _ = sentiment_run
    probe, tradeoff = _json(run / "probe.json"), _json(run / "tradeoff.json")
    source = probe["provenance"]["model"]["fingerprint"]
    rows = {r["k"]: r for r in tradeoff["rows"]}
    for k, r in rows.items():
        model = r["model"]
        assert model["num_layers"] == k  # it loaded as a K-layer model
        assert model["fingerprint"] == "sha256:" + model["weights_sha256"]
        assert model["source_fingerprint"] == source  # cut from the probed model
        assert model["check_max_abs_diff"] <= 1e-5
        assert len(r["rounds_texts_per_s"]) == 2 and min(r["rounds_texts_per_s"]) > 0
        assert r["texts_per_s"] == pytest.approx(sum(r["rounds_texts_per_s"]) / 2)  # median
        assert [96 / s for s in model["seconds"]] == pytest.approx(r["rounds_texts_per_s"], 1e-3)
    # K = 6 of 6 is the bundled model itself: its weights hash as the source's
    assert rows[6]["model"]["fingerprint"] == source
    assert rows[1]["model"]["fingerprint"] != rows[3]["model"]["fingerprint"] != source
    # size shrinks with K by exactly the dropped layers' float32 weights (+ their names)
    assert rows[1]["size_bytes"] < rows[3]["size_bytes"] < rows[6]["size_bytes"]
    weights = load_file(bundled_model_path() / "model.safetensors")
    layer_bytes = [
        sum(t.numel() * t.element_size() for n, t in weights.items() if f"layer.{i}." in n)
        for i in range(6)
    ]
    dropped = rows[6]["model"]["weights_bytes"] - rows[3]["model"]["weights_bytes"]
    assert 0 <= dropped - sum(layer_bytes[3:]) < 16_000  # the safetensors header's names
    assert tradeoff["measure"]["texts"] == 96 and tradeoff["measure"]["rounds"] == 2
    machine = tradeoff["machine"]
    assert machine["cores"] >= 1 and machine["torch"] and machine["date"].startswith("20")
    assert machine["command"].startswith("bertlayers probe ") and "--tradeoff" in machine["command"]
    assert tradeoff["task"]["data"] == probe["task"]["data"]


def test_tradeoff_files_plot_and_report_section(sentiment_run, tmp_path):
    run, _ = sentiment_run
    assert (run / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (run / "tradeoff.svg").read_bytes()[:1000]
    csv_lines = (run / "tradeoff.csv").read_text().splitlines()
    comments = [line for line in csv_lines if line.startswith("#")]
    assert any(line.startswith("# cpu: ") for line in comments)
    assert any("--tradeoff" in line for line in comments if line.startswith("# command: "))
    table = [line for line in csv_lines if not line.startswith("#")]
    assert table[0].startswith("k,macro_f1,macro_f1_low,macro_f1_high,texts_per_s,size_bytes")
    assert [line.split(",")[0] for line in table[1:]] == ["1", "3", "6"]
    page = run_cli("report", str(run))
    assert page.returncode == 0, page.stderr
    text = (run / "report.html").read_text()
    assert "<h2>Depth trade-off</h2>" in text and "Score and speed of the model cut" in text
    assert text.count('<img class="plot"') == 2  # probe.svg and tradeoff.svg
    chosen = _json(run / "tradeoff.json")["chosen"]
    assert f'<tr class="best"><td>{chosen}</td>' in text
    assert "--tradeoff-layers 1,3,6" in text  # the command that made it
    _, _, dom = open_in_chromium(run / "report.html", tmp_path / "profile")
    assert 'data-plots-rendered="2"' in dom.stdout and 'data-plots-total="2"' in dom.stdout


# ---------------------------------------------------------------- similarity and retrieval


@pytest.fixture(scope="module")
def bbc(tmp_path_factory, shared_data) -> Path:
    """Every 140th BBC article (16), and 60 pairs of their titles scored 1 (same topic) or 0."""
    lines = (shared_data / "news-bbc.jsonl").read_text(encoding="utf-8").splitlines()
    articles = [json.loads(line) for line in lines[::140]]
    root = tmp_path_factory.mktemp("tradeoff-bbc")
    with open(root / "bbc.jsonl", "w", encoding="utf-8") as out:
        for a in articles:
            out.write(json.dumps({k: a[k] for k in ("id", "label", "title", "text")}) + "\n")
    rng = random.Random(0)
    rows = ["id\ttext\tpair\tscore"]
    for i in range(60):
        a, b = rng.sample(articles, 2)
        rows.append(f"{i}\t{a['title']}\t{b['title']}\t{int(a['label'] == b['label'])}")
    (root / "pairs.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("task", ["similarity", "retrieval"])
def test_matching_tradeoff_reads_the_best_series_with_its_bootstrap(bbc, task):
    if task == "similarity":
        data = ["pairs.tsv", "--pair-column", "pair", "--id-column", "id"]
    else:
        data = ["bbc.jsonl", "--id-column", "id", "--text-column", "title", "--doc-column", "text",
                "--max-length", "128"]  # fmt: skip
    result = run_cli(
        "probe", *data, "--task", task, "--pooling", "mean,cls", "--bootstrap", "200",
        "-o", task, "--tradeoff", "--tradeoff-layers", "2,6", "--tradeoff-texts", "24",
        "--tradeoff-rounds", "1", "--quiet", cwd=bbc,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    probe, tradeoff = _json(bbc / task / "probe.json"), _json(bbc / task / "tradeoff.json")
    best = next(s for s in probe["scores"] if s["label"] == probe["best"])
    metric = probe["metric"]
    assert tradeoff["task"]["kind"] == task and tradeoff["task"]["metric"] == metric
    assert tradeoff["task"]["series"] == best["pooling"]  # no post-processing asked
    assert "bootstrap" in tradeoff["task"]["interval"]
    for r in tradeoff["rows"]:
        row = next(
            s for s in probe["scores"]
            if s["kind"] == "layer" and s["layer"] == r["k"] and s["pooling"] == best["pooling"]
        )  # fmt: skip
        assert [r["score"], r["low"], r["high"]] == pytest.approx(
            [row["values"][metric], *row["ci"][metric]]
        )
        assert r["texts_per_s"] > 0 and r["model"]["num_layers"] == r["k"]
    scores = depth_scores(probe).scores
    floor = max(v[0] for v in scores.values()) - 0.01
    assert tradeoff["chosen"] == next((k for k in (2, 6) if scores[k][0] >= floor), None)
    # similarity: its distinct titles (fewer than 24); retrieval: 12 queries, 12 documents
    assert tradeoff["measure"]["texts"] == min(24, tradeoff["measure"]["of"])
    assert "<- best" in result.stdout and "texts/s" in result.stdout


# ---------------------------------------------------------------- refusals, in one line


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, sentiment_file) -> dict:
    """A tiny random BERT and 60 sentiment rows (both labels), cut to 12 words."""
    root = tmp_path_factory.mktemp("tradeoff-tiny")
    model = build_tiny_model("bert", root / "models")
    lines = sentiment_file.read_text(encoding="utf-8").splitlines()
    short = (
        [lines[0]]
        + [
            "\t".join([label, " ".join(text.replace('"', "").split()[:12])])  # under 40 tokens
            for label, text in (line.split("\t", 1) for line in lines[1::4][:60])
        ]
    )
    data = root / "small.tsv"
    data.write_text("\n".join(short) + "\n", encoding="utf-8")
    return {"root": root, "model": model, "data": data}


def test_tradeoff_options_are_refused_in_one_line(tiny):
    root, data, model = tiny["root"], str(tiny["data"]), str(tiny["model"])
    lone = run_cli("probe", data, "--model", model, "--tradeoff-layers", "1", cwd=root)
    assert_one_line_error(lone, "--tradeoff-layers is a setting of the depth trade-off")
    lone = run_cli("probe", data, "--model", model, "--tolerance", "0.02", cwd=root)
    assert_one_line_error(lone, "--tolerance is a setting of the depth trade-off")
    zero = run_cli("probe", data, "--tradeoff", "--tradeoff-layers", "0,2", cwd=root)
    assert zero.returncode == 2 and "layer 0 is no model" in zero.stderr
    deep = run_cli("probe", data, "--model", model, "--tradeoff", "--tradeoff-layers", "2,5",
                   "-q", cwd=root)  # fmt: skip
    assert_one_line_error(deep, "--tradeoff-layers 5: no such encoder layer")
    shallow = run_cli("probe", data, "--model", model, "--layers", "0", "--tradeoff", "-q",
                      cwd=root)  # fmt: skip
    assert_one_line_error(shallow, "holds layers [0] only")


def test_tradeoff_refuses_a_store_with_no_model_to_cut(tiny, tmp_path):
    data = str(tiny["data"])
    gone = tmp_path / "gone-model"
    gone.mkdir()
    for file in tiny["model"].iterdir():
        (gone / file.name).write_bytes(file.read_bytes())
    store = tmp_path / "vectors.npy"
    made = run_cli("extract", data, "--model", str(gone), "-o", str(store), "-q")
    assert made.returncode == 0, made.stderr
    # the weights behind the store changed: their speed is not the probed vectors'
    weights = load_file(gone / "model.safetensors")
    name = next(n for n in weights if "layer.0." in n)
    weights[name] = weights[name] + 1
    save_file(weights, gone / "model.safetensors", metadata={"format": "pt"})
    other = run_cli("probe", data, "--store", str(store), "--tradeoff", "--folds", "3",
                    "-o", str(tmp_path / "run"), "-q")  # fmt: skip
    assert_one_line_error(other, "but the model cut here has sha256:")
    assert (tmp_path / "run" / "probe.json").exists()  # what was written is kept
    assert not (tmp_path / "run" / "tradeoff.json").exists()
    # the model is gone: nothing to cut, said before the probes run
    for file in gone.iterdir():
        file.unlink()
    gone.rmdir()
    missing = run_cli("probe", data, "--store", str(store), "--tradeoff", "-q")
    assert_one_line_error(missing, "which is not here any more")
