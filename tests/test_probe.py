"""Probes, predictions, layer geometry, plots and the HTML report, on real data (the shared
sentiment and WSJ POS corpora: the tests that read them skip without them) and the real model:
scores are recomputed independently, saved probes are reloaded and used, the report is opened
in a real headless browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bertlayers.analysis.geometry import analyze, linear_cka
from bertlayers.analysis.metrics import entities, entity_f1, is_bio
from bertlayers.analysis.plots import CKA_FONT, cka_figure, probe_figure
from bertlayers.analysis.probe_data import sentence_data, word_data
from bertlayers.analysis.probing import (
    _folds,
    candidate_features,
    fit_probe,
    load_probe,
    run_probes,
    save_probe,
)
from bertlayers.core.encoder import bundled_model_path
from bertlayers.io.readers import read_records
from test_cli import assert_one_line_error, run_cli

# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def sentiment_file(tmp_path_factory, shared_data) -> Path:
    """240 sentiment rows, both labels (every 16th row of the sorted shared file)."""
    lines = (shared_data / "sentiment-polarity.tsv").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("probe") / "sentiment.tsv"
    path.write_text("\n".join([lines[0], *lines[1::16][:240]]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pos_file(tmp_path_factory, shared_data) -> Path:
    """The first 60 sentences of the shared WSJ POS file."""
    text = (shared_data / "pos-wsj.conll").read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("probe") / "pos.conll"
    path.write_text("\n\n".join(text.strip().split("\n\n")[:60]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sentiment(bundled, sentiment_file):
    records = list(read_records(str(sentiment_file), label_column="label"))
    return sentence_data(bundled.extract(records), records), records


@pytest.fixture(scope="module")
def pos(bundled, pos_file):
    records = list(read_records(str(pos_file), tag_column=-1))
    return word_data(bundled.extract_words(records), records), records


# ---------------------------------------------------------------- metrics


def test_entities_follow_conlleval():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "O", "B-MISC"]
    assert entities(tags) == {(0, 2, "PER"), (3, 5, "LOC"), (5, 6, "LOC"), (6, 7, "ORG"),
                              (8, 9, "MISC")}  # fmt: skip
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    # 2 of 3 predicted spans are right, 2 of 3 gold spans are found: F1 = 2/3
    assert entity_f1(gold, predicted) == pytest.approx(2 / 3)
    assert is_bio(["O", "B-PER", "I-PER"]) and not is_bio(["NN", "VB"]) and not is_bio(["O"])


# ---------------------------------------------------------------- probes in the library


def test_sentence_probe_scores_match_an_independent_computation(sentiment):
    data, _ = sentiment
    report = run_probes(data, folds=3, seed=7)
    # recompute layer 3 with plain scikit-learn on the same folds
    splitter = StratifiedKFold(n_splits=3, shuffle=True, random_state=7)
    labels = data.labels.astype(str)
    per_fold = []
    for train, test in splitter.split(np.zeros(len(labels)), labels):
        model = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-3, max_iter=2000))
        model.fit(data.vectors[train, 3], labels[train])
        per_fold.append(accuracy_score(labels[test], model.predict(data.vectors[test, 3])))
    layer3 = report.score("layer 3")
    assert layer3.mean["accuracy"] == pytest.approx(np.mean(per_fold), abs=1e-9)
    assert layer3.std["accuracy"] == pytest.approx(np.std(per_fold), abs=1e-9)
    assert len(layer3.folds) == 3
    majority = report.score("majority")
    _, counts = np.unique(labels, return_counts=True)
    assert majority.mean["accuracy"] == pytest.approx(counts.max() / counts.sum(), abs=0.01)
    layers = [s for s in report.scores if s.kind == "layer"]
    assert [s.layer for s in layers] == list(range(7))
    assert all(s.mean["macro_f1"] > majority.mean["macro_f1"] + 0.1 for s in layers)
    assert report.best in [s.name for s in report.scores if s.kind != "baseline"]
    mix = report.score("scalar mix")
    assert len(mix.weights) == 7 and sum(mix.weights) == pytest.approx(1, abs=1e-3)


def test_probes_are_deterministic_with_a_seed(sentiment):
    data, _ = sentiment
    first = run_probes(data, folds=3, seed=1).to_dict()
    again = run_probes(data, folds=3, seed=1).to_dict()
    other = run_probes(data, folds=3, seed=2).to_dict()
    assert first == again
    assert first["scores"] != other["scores"]


def test_word_probe_folds_split_by_sentence_and_beat_baselines(pos):
    data, records = pos
    assert len(data.labels) == sum(len(r.words) for r in records)
    for train, test in _folds(data, 4, seed=0):
        assert not set(data.groups[train]) & set(data.groups[test])
    report = run_probes(data, folds=4, seed=0, classifier="svm")
    assert report.metric == "accuracy"  # POS tags: accuracy picks the best layer
    majority = report.score("majority").mean["accuracy"]
    assert majority < 0.2
    assert report.score("layer 0").mean["accuracy"] > majority + 0.4
    assert report.score(report.best).mean["accuracy"] > 0.8


def test_bio_tags_get_entity_f1(pos):
    """Proper-noun chunks of the real WSJ sentences as BIO entities (B-NP/I-NP)."""
    data, _ = pos
    tags, previous = [], "O"
    for label in data.labels:
        if label in ("NNP", "NNPS"):
            tags.append("I-NP" if previous != "O" else "B-NP")
        else:
            tags.append("O")
        previous = tags[-1]
    data.labels = np.asarray(tags, dtype=object)
    report = run_probes(data, folds=3, seed=0)
    assert report.metric == "entity_f1"
    best = report.score(report.best)
    assert 0.5 < best.mean["entity_f1"] <= 1.0
    assert report.score("majority").mean["entity_f1"] == 0.0  # all O finds no entity


def test_saved_probe_predicts_like_the_fitted_one(sentiment, tmp_path):
    data, _ = sentiment
    feature = candidate_features(data.layers)[4]
    probe = fit_probe(data, feature, {"model": None, "level": "sentence"})
    save_probe(probe, tmp_path / "clf.joblib")
    loaded = load_probe(tmp_path / "clf.joblib")
    assert loaded.feature == "layer 4" and loaded.classes == ["negative", "positive"]
    assert (loaded.predict(data.vectors) == probe.predict(data.vectors)).all()
    accuracy = (loaded.predict(data.vectors) == data.labels.astype(str)).mean()
    assert accuracy > 0.8  # training accuracy of a linear probe on 384 dims


# ---------------------------------------------------------------- geometry


def test_linear_cka_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20))
    rotation, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert linear_cka(x, x @ rotation * 3.0) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(300, 20))) < 0.2


def test_analyze_word_store_measures_every_layer(bundled, pos):
    _, records = pos
    result = bundled.extract_words(records)
    report = analyze(result, seed=0)
    assert [row.layer for row in report.layers] == list(range(7))
    for row in report.layers:
        assert -1 <= row.anisotropy <= 1 and row.norm > 0
        assert row.self_similarity is not None and row.intra_sentence is not None
        assert row.self_similarity_adjusted == pytest.approx(row.self_similarity - row.anisotropy)
    # anisotropy by hand for layer 2, on the pairs the report drew
    vectors = result.layer(2)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    groups = np.repeat(np.arange(len(result)), np.diff(result.offsets))
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(groups), 10000), rng.integers(0, len(groups), 10000)
    keep = groups[a] != groups[b]
    a, b = a[keep][:5000], b[keep][:5000]
    expected = np.mean(np.sum(unit[a] * unit[b], axis=1))
    assert report.layers[2].anisotropy == pytest.approx(expected, abs=1e-5)
    cka = np.asarray(report.cka)
    assert np.allclose(np.diag(cka), 1) and np.allclose(cka, cka.T)
    assert report.sample["word_types"] > 10
    # the heatmap's numbers are legible: >= 9 pt (12 px where the report shows the SVG at
    # its size) and each inside its own cell
    figure = cka_figure(report)
    renderer = _drawn(figure)
    axes = figure.axes[0]
    numbers = axes.texts
    assert len(numbers) == 49 and CKA_FONT >= 9
    assert all(t.get_fontsize() >= 9 for t in numbers)
    cell = axes.transData.transform((1, 0))[0] - axes.transData.transform((0, 0))[0]
    assert all(t.get_window_extent(renderer).width < 0.9 * cell for t in numbers)


def _drawn(figure):
    """Lay the figure out and draw it (Agg, no screen); its renderer, for sizes in pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_probe_plot_fills_its_axis_and_its_legend_covers_nothing(sentiment):
    data, _ = sentiment
    report = run_probes(data, folds=3, seed=0)
    figure = probe_figure(report)
    renderer = _drawn(figure)
    axes = figure.axes[0]
    low, high = axes.get_ylim()
    metric = report.metric
    probes = [s for s in report.scores if s.kind != "baseline"]
    tops = [s.mean[metric] + s.std[metric] for s in probes]
    bottoms = [s.mean[metric] - s.std[metric] for s in probes]
    # the axis is chosen from the probes' scores: they fill most of it, every bar inside
    assert low <= min(bottoms) and max(tops) <= high
    assert (max(tops) - min(bottoms)) / (high - low) >= 0.5
    majority = report.score("majority").mean[metric]
    assert majority < low  # far below: named in the legend, not drawn
    legend = figure.legends[0]
    names = [t.get_text() for t in legend.get_texts()]
    assert f"majority baseline: {majority:.3f} (off the axis)" in names
    assert f"best: {report.best} ({report.score(report.best).mean[metric]:.3f})" in names
    # no "best" written over an error bar; the legend lies outside the axes
    assert not any("best" in t.get_text() for t in axes.texts)
    assert not _overlap(legend.get_window_extent(renderer), axes.get_window_extent(renderer))


# ---------------------------------------------------------------- the command line


def _probe_cli(*args: str, cwd: Path):
    return run_cli("probe", *args, cwd=cwd)


@pytest.fixture(scope="module")
def sentiment_run(sentiment_file, tmp_path_factory):
    """probe --store -o --save-model --tensorboard, then analyze and report on its directory."""
    root = tmp_path_factory.mktemp("run")
    result = _probe_cli(
        str(sentiment_file),
        "--store", "run/vectors.npy",
        "-o", "run",
        "--folds", "3",
        "--save-model", "run/clf.joblib",
        "--tensorboard", "tb",
        cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root, result


def test_cli_probe_writes_table_json_csv_plots_and_model(sentiment_run, sentiment_file):
    root, result = sentiment_run
    run = root / "run"
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["probe", "accuracy", "macro_f1"]
    names = [line[:16].strip() for line in lines[2:]]
    assert names == ["majority", "bag of words", *[f"layer {i}" for i in range(7)],
                     "mean of all", "concat last 4", "scalar mix"]  # fmt: skip
    assert sum("<- best" in line for line in lines) == 1
    assert "probing" in result.stderr and "saved the" in result.stderr
    report = json.loads((run / "probe.json").read_text())
    assert report["task"]["evaluation"] == "3-fold cross-validation"
    assert report["task"]["data"] == str(sentiment_file)  # what the report names
    assert report["provenance"]["model"]["num_layers"] == 6 and "texts" not in report["provenance"]
    csv_rows = (run / "probe.csv").read_text().splitlines()
    assert len(csv_rows) == 13 and csv_rows[0].startswith("name,kind,layer,accuracy_mean")
    for name in ("probe.png", "projection.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (run / "probe.svg").read_bytes()[:1000]
    # TensorBoard projector: one tensor per layer, labels as metadata
    config = (root / "tb" / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 7 and 'tensor_path: "layer_06/tensors.tsv"' in config
    tensor = np.loadtxt(root / "tb" / "layer_03" / "tensors.tsv", delimiter="\t")
    vectors = np.load(run / "vectors.npy")
    assert tensor.shape == (240, 384)
    assert np.allclose(tensor, vectors[:, 3], atol=1e-5)
    metadata = (root / "tb" / "layer_03" / "metadata.tsv").read_text().splitlines()
    assert metadata[0] == "label\titem" and len(metadata) == 241
    assert metadata[1].split("\t")[0] in ("positive", "negative")


def test_cli_probe_reuses_an_existing_store(sentiment_run, sentiment_file):
    root, _ = sentiment_run
    before = (root / "run" / "vectors.npy").stat().st_mtime_ns
    result = _probe_cli(
        str(sentiment_file), "--store", "run/vectors.npy", "--folds", "3", "--quiet", cwd=root
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (root / "run" / "vectors.npy").stat().st_mtime_ns == before
    changed = _probe_cli(
        str(sentiment_file), "--store", "run/vectors.npy", "--pooling", "cls", cwd=root
    )
    assert_one_line_error(changed, "was extracted with --pooling mean, not cls")


def test_cli_predict_labels_new_text_with_the_saved_probe(sentiment_run, bundled):
    root, _ = sentiment_run
    texts = ["a gorgeous , moving and funny film .", "a dull , tedious mess .", "it is a movie ."]
    (root / "new.txt").write_text("\n".join(texts) + "\n")
    result = run_cli("predict", "run/clf.joblib", "new.txt", "--proba", cwd=root)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    probe = load_probe(root / "run" / "clf.joblib")
    expected = probe.predict(bundled.embed(texts, layers=probe.layers))
    assert [r[1] for r in rows] == list(expected)
    assert all(0.5 <= float(r[2]) <= 1 for r in rows)
    assert rows[0][1] == "positive" and rows[1][1] == "negative"
    # the OpenVINO backend gives the same labels and probabilities
    fast = run_cli("predict", "run/clf.joblib", "new.txt", "--proba", "--runtime", "openvino",
                   cwd=root)  # fmt: skip
    assert fast.returncode == 0, fast.stderr
    fast_rows = [line.split("\t") for line in fast.stdout.splitlines()]
    assert [r[:2] for r in fast_rows] == [r[:2] for r in rows]
    assert all(abs(float(a[2]) - float(b[2])) <= 1e-4 for a, b in zip(fast_rows, rows, strict=True))


def test_cli_probe_with_the_openvino_backend(sentiment_run, sentiment_file):
    """probe --runtime openvino extracts the same vectors (within 1e-4) as the torch run."""
    root, _ = sentiment_run
    result = _probe_cli(
        str(sentiment_file), "--store", "ov/vectors.npy", "-o", "ov", "--folds", "3",
        "--runtime", "openvino", "--quiet", cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    fast, exact = np.load(root / "ov" / "vectors.npy"), np.load(root / "run" / "vectors.npy")
    assert fast.shape == exact.shape and np.abs(fast - exact).max() <= 1e-4
    assert json.loads((root / "ov" / "vectors.json").read_text())["backend"].startswith("openvino")


def test_cli_word_probe_and_predict_conll(pos_file, tmp_path):
    result = _probe_cli(
        str(pos_file), "--folds", "3", "--layers", "0,2,4", "--save-model", "pos.joblib",
        "-o", "out", "--projection", "none", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "layer 4" in result.stdout and "layer 6" not in result.stdout
    assert not (tmp_path / "out" / "projection.png").exists()
    (tmp_path / "new.txt").write_text("The company said profits rose .\nShe sells shares\n")
    predicted = run_cli("predict", "pos.joblib", "new.txt", "-o", "tags.conll", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    sentences = (tmp_path / "tags.conll").read_text().strip().split("\n\n")
    words = [[line.split("\t")[0] for line in s.splitlines()] for s in sentences]
    tags = [[line.split("\t")[1] for line in s.splitlines()] for s in sentences]
    assert words == [["The", "company", "said", "profits", "rose", "."], ["She", "sells", "shares"]]
    assert tags[0][0] == "DT" and tags[0][-1] == "."


def open_in_chromium(page: Path, profile: Path):
    """Load `page` in headless Chromium, offline, and return (browser, flags, the run that
    dumped its DOM); a message on the page's console (an error, an uncaught exception) fails."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ]  # fmt: skip
    dom = subprocess.run(
        [browser, *flags, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    return browser, flags, dom


@pytest.fixture(scope="module")
def reported_run(sentiment_run, pos_file, tmp_path_factory):
    """The probe run's folder with the geometry of the POS words, and its report."""
    root, _ = sentiment_run
    words = tmp_path_factory.mktemp("words") / "words.npz"
    assert run_cli("extract", str(pos_file), "--level", "word", "-o", str(words)).returncode == 0
    analyzed = run_cli("analyze", str(words), "-o", str(root / "run"))
    assert analyzed.returncode == 0, analyzed.stderr
    header = analyzed.stdout.splitlines()[0]
    assert "anisotropy" in header and "self-sim" in header and "intra-sent" in header
    assert len(analyzed.stdout.splitlines()) == 2 + 7
    for name in ("geometry.png", "geometry.svg", "cka.png", "cka.svg", "analysis.json"):
        assert (root / "run" / name).exists(), name
    reported = run_cli("report", "run", cwd=root)
    assert reported.returncode == 0, reported.stderr
    return root / "run" / "report.html"


def test_cli_analyze_and_report_open_in_a_real_browser(reported_run, tmp_path):
    page = reported_run
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    assert text.count('<img class="plot"') == 4 and "Provenance" in text

    browser, flags, dom = open_in_chromium(page, tmp_path / "profile1")
    assert 'data-plots-rendered="4"' in dom.stdout and 'data-plots-total="4"' in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, *flags, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,2400",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (2400, 1200)
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 100  # plots drawn, not a blank page


def test_report_reads_well(reported_run, sentiment_file):
    text = reported_run.read_text()
    notes = re.findall(r'<p class="note">(.*?)</p>', text, re.S)
    geometry = text.split("<h2>Layer geometry</h2>")[1].split("</p>")[0]
    assert "{" not in geometry and "&quot;" not in geometry  # a sentence, not a JSON record
    assert "random pairs of rows from different texts" in geometry
    # the data file is named, the model by its name (never this machine's path to it)
    assert f"Data: <b>{sentiment_file.name}</b>" in text
    assert str(bundled_model_path()) not in text and "site-packages" not in text
    assert "<h1>bertlayers report — sentence-transformers/all-MiniLM-L6-v2 (bundled)</h1>" in text
    # one precision in every table cell: 0.500 ± 0.000, never 0.5000 ± 0.000
    cells = re.findall(r"<td>([^<]*)</td>", text)
    decimals = {len(n.split(".")[1]) for c in cells for n in re.findall(r"\d+\.\d+", c)}
    assert decimals == {3}
    # what ± is, and what each measure is, said in a sentence
    assert any("± the standard deviation of the fold scores" in n for n in notes)
    assert any("<i>macro f1</i>: F1 of each class" in n for n in notes)
    assert any("<i>accuracy</i>: the share of examples" in n for n in notes)


# ---------------------------------------------------------------- bad input


def test_cli_probe_bad_input_is_one_line(tmp_path, sentiment_file, pos_file):
    lines = sentiment_file.read_text().splitlines()
    cases = {
        "nolabel.tsv": ("text\n" + "\n".join(lines[1:20]) + "\n", "no column 'label'"),
        "blank.tsv": ("label\ttext\npositive\tgood\n\tbad\n", "line 3: no label in column"),
        "one.tsv": ("label\ttext\n" + "".join(f"pos\ttext {i}\n" for i in range(12)),
                    "single label ('pos')"),
        "few.tsv": ("label\ttext\n" + "".join(f"{'a' if i < 9 else 'b'}\tt {i}\n"
                                              for i in range(11)), "label 'b' has 2 example(s)"),
        "plain.txt": ("one text\nanother\n", "a probe needs labels"),
    }  # fmt: skip
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content)
        assert_one_line_error(run_cli("probe", str(tmp_path / name), "-q"), message)
    # a store of other texts, and a store of the wrong level
    other = tmp_path / "other.tsv"
    other.write_text("\n".join(lines[:31]) + "\n")
    store = tmp_path / "other.npy"
    assert run_cli("extract", str(other), "-o", str(store), "-q").returncode == 0
    assert_one_line_error(
        run_cli("probe", str(sentiment_file), "--store", str(store), "-q"),
        "has 30 texts but",
    )
    assert_one_line_error(
        run_cli("probe", str(pos_file), "--store", str(store), "-q"),
        "a word-tag probe needs word-level vectors",
    )
    not_probe = tmp_path / "x.joblib"
    not_probe.write_bytes(b"not a pickle")
    assert_one_line_error(run_cli("predict", str(not_probe), str(other)), "is not a saved probe")
    assert_one_line_error(run_cli("report", str(tmp_path)), "holds no probe.json")
    assert_one_line_error(
        run_cli("probe", str(sentiment_file), "--projection", "tsne"), "unknown projection"
    )


def test_given_test_set_scores_one_split(sentiment):
    from bertlayers.analysis.probing import ProbeData

    data, _ = sentiment
    rows = np.random.default_rng(0).permutation(len(data.labels))
    train_rows, test_rows = np.sort(rows[:160]), np.sort(rows[160:])

    def part(index):
        return ProbeData(
            data.vectors[index], data.labels[index], np.arange(len(index)),
            [data.items[i] for i in index], data.layers, data.level, data.provenance,
        )  # fmt: skip

    train, test = part(train_rows), part(test_rows)
    report = run_probes(train, test=test, seed=0)
    assert report.task["evaluation"] == "test set" and report.task["test_rows"] == 80
    model = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-3, max_iter=2000))
    model.fit(train.vectors[:, 5], train.labels.astype(str))
    expected = accuracy_score(test.labels.astype(str), model.predict(test.vectors[:, 5]))
    layer5 = report.score("layer 5")
    assert layer5.mean["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert layer5.std["accuracy"] == 0 and len(layer5.folds) == 1
