"""Layer-wise linear probes: which layer, or mix of layers, best predicts a label.

A probe is a scikit-learn pipeline on the vectors an extraction produced — one layer, the mean
of all layers, the last four concatenated, or a learned scalar mix (ELMo's softmax-weighted sum)
— followed by standardization and a linear classifier. Scores come from k-fold
cross-validation (folds split by text, so the words of one sentence never straddle train and
test) or from a given test set, beside a majority-class and a bag-of-words baseline.
This module reads vectors and labels; it never loads the model.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning

from .. import __version__
from ..errors import InputError, OptionError
from ..options import StrEnum
from ..outputs import write_atomically
from .metrics import is_bio, score
from .probe_data import ProbeData, check_labels

PROBE_FORMAT = "bertlayers-probe/1"


class Classifier(StrEnum):
    """The linear model a probe fits: logistic regression, or a linear SVM (SGD, hinge loss)."""

    LOGREG = "logreg"
    SVM = "svm"


class Metric(StrEnum):
    """How a probe is scored: accuracy, macro-averaged F1, or entity F1 over BIO spans
    (`default_metric` picks one from the data)."""

    ACCURACY = "accuracy"
    MACRO_F1 = "macro_f1"
    ENTITY_F1 = "entity_f1"


# ------------------------------------------------------------------ features


class LayerFeatures(TransformerMixin, BaseEstimator):
    """Turns flat `(N, K*H)` rows into the features of one probe.

    `mode`: `single` (one layer), `concat` (layers side by side), `mean` (the mean of the
    standardized layers) or `mix` (a scalar mix: softmax weights over the standardized layers,
    learned with the labels during `fit`, as ELMo's with layer norm).
    """

    def __init__(
        self, n_layers: int, positions: Sequence[int], mode: str = "single", seed: int = 0
    ) -> None:
        self.n_layers = n_layers
        self.positions = positions
        self.mode = mode
        self.seed = seed

    def _layers(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        return X.reshape(len(X), self.n_layers, -1)[:, list(self.positions)]

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> LayerFeatures:
        layers = self._layers(X)
        if self.mode in ("mean", "mix"):
            self.mean_ = layers.mean(axis=0)
            self.scale_ = layers.std(axis=0) + 1e-6
            weights = np.full(len(self.positions), 1 / len(self.positions), dtype=np.float32)
            if self.mode == "mix":
                weights = _learn_mix((layers - self.mean_) / self.scale_, y, self.seed)
            self.weights_ = weights
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        layers = self._layers(X)
        if self.mode == "single":
            return layers[:, 0]
        if self.mode == "concat":
            return layers.reshape(len(layers), -1)
        standardized = (layers - self.mean_) / self.scale_
        return np.einsum("nkh,k->nh", standardized, self.weights_)


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _learn_mix(layers: np.ndarray, y: np.ndarray | None, seed: int) -> np.ndarray:
    """Softmax layer weights learned jointly with a linear classifier (full-batch Adam, 150
    steps, lr 0.02, L2 1e-4), in numpy: analysis needs no model code.

    Every parameter starts at zero, so the result is the same for any `seed`."""
    if y is None:
        raise OptionError("a scalar mix learns its weights from the labels: fit it with y")
    classes, targets = np.unique(np.asarray(y, dtype=str), return_inverse=True)
    x = np.ascontiguousarray(layers, dtype=np.float32)  # (N, K, H)
    n, k, h = x.shape
    onehot = np.eye(len(classes), dtype=np.float32)[targets]  # (N, C)
    params = [np.zeros(k, np.float32), np.zeros((len(classes), h), np.float32)]
    params.append(np.zeros(len(classes), np.float32))  # layer logits, weight, bias
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    lr, beta1, beta2, eps, decay = 0.02, 0.9, 0.999, 1e-8, 1e-4
    for step in range(1, 151):
        logits_w, weight, bias = params
        mix = _softmax(logits_w)  # (K,)
        mixed = np.einsum("nkh,k->nh", x, mix)  # (N, H)
        d_logits = (_softmax(mixed @ weight.T + bias, axis=1) - onehot) / n  # (N, C)
        d_mix = np.einsum("nh,nkh->k", d_logits @ weight, x)  # (K,)
        grads = [mix * (d_mix - mix @ d_mix), d_logits.T @ mixed, d_logits.sum(axis=0)]
        for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
            grad = grad + decay * param  # Adam's L2 weight decay, as torch.optim.Adam's
            first, second = moments[i]
            first[...] = beta1 * first + (1 - beta1) * grad
            second[...] = beta2 * second + (1 - beta2) * grad * grad
            corrected = first / (1 - beta1**step)
            param -= lr * corrected / (np.sqrt(second / (1 - beta2**step)) + eps)
    return _softmax(params[0]).astype(np.float32)


@dataclass(frozen=True)
class Feature:
    """One candidate probe input: a layer, or a combination of layers."""

    name: str
    kind: str  # "layer" | "combined"
    positions: tuple[int, ...]
    mode: str
    layer: int | None = None  # our layer index, for single layers


def candidate_features(layers: list[int]) -> list[Feature]:
    """Every selected layer, then the mean of all, the last four concatenated, a scalar mix."""
    features = [
        Feature(f"layer {index}", "layer", (p,), "single", index) for p, index in enumerate(layers)
    ]
    everything = tuple(range(len(layers)))
    if len(layers) > 1:
        features.append(Feature("mean of all", "combined", everything, "mean"))
        last4 = everything[-4:]
        features.append(Feature(f"concat last {len(last4)}", "combined", last4, "concat"))
        features.append(Feature("scalar mix", "combined", everything, "mix"))
    return features


def parse_feature(spec: str, features: list[Feature]) -> Feature | None:
    """`best`, a layer index (`6`, `-1`), `mean`, `concat` or `mix` -> a feature (None: best)."""
    text = spec.strip().lower()
    if text == "best":
        return None
    by_mode = {"mean": "mean", "concat": "concat", "mix": "mix", "scalar-mix": "mix"}
    for feature in features:
        if feature.kind == "combined" and by_mode.get(text) == feature.mode:
            return feature
    layers = [f for f in features if f.kind == "layer"]
    try:
        index = int(text)
    except ValueError:
        index = None
    if index is not None:
        n_layers = max(f.layer for f in layers) if layers else 0
        wanted = index if index >= 0 else n_layers + 1 + index
        for feature in layers:
            if feature.layer == wanted:
                return feature
        raise OptionError(
            f"layer {spec} is not among the probed layers {[f.layer for f in layers]}"
        )
    raise OptionError(f"unknown feature '{spec}': use best, a layer index, mean, concat or mix")


def _classifier(kind: Classifier, seed: int, c: float):
    if kind is Classifier.SVM:
        # a linear SVM (hinge loss) by averaged SGD, 20 epochs: liblinear's LinearSVC took
        # 65-93 s per fit on 6,000 POS words (44 classes), and was no more accurate
        from sklearn.linear_model import SGDClassifier

        return SGDClassifier(
            loss="hinge", alpha=1e-4 / c, average=True, max_iter=20, tol=1e-3, random_state=seed
        )
    from sklearn.linear_model import LogisticRegression

    # tol 1e-3: as accurate as the default 1e-4 on these probes (checked on POS), 3x faster
    return LogisticRegression(C=c, tol=1e-3, max_iter=2000, random_state=seed)


def probe_pipeline(
    feature: Feature,
    n_layers: int,
    classifier: Classifier | str = "logreg",
    seed: int = 0,
    c: float = 1.0,
):
    """The scikit-learn pipeline of one probe: layer features, standardization, classifier."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [
            ("layers", LayerFeatures(n_layers, feature.positions, feature.mode, seed)),
            ("scale", StandardScaler()),
            ("classifier", _classifier(Classifier.parse(classifier, "classifier"), seed, c)),
        ]
    )


def _bag_of_words(level: str, kind: Classifier, seed: int, c: float):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline

    if level == "word":  # the word itself, lowercased: the most-frequent-tag-per-word baseline
        vectorizer = TfidfVectorizer(analyzer=lambda word: [word.lower()], use_idf=False, norm=None)
    else:
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    return Pipeline([("bow", vectorizer), ("classifier", _classifier(kind, seed, c))])


# ------------------------------------------------------------------ evaluation


@dataclass
class ProbeScore:
    """Scores of one probe (or baseline): mean and spread over folds of each metric."""

    name: str
    kind: str  # "layer" | "combined" | "baseline"
    layer: int | None
    mean: dict[str, float]
    std: dict[str, float]
    folds: list[dict[str, float]]
    weights: list[float] | None = None  # a scalar mix's layer weights (mean over folds)


@dataclass
class ProbeReport:
    """Everything a probe run found, ready for a table, JSON, CSV or a plot."""

    task: dict
    scores: list[ProbeScore]
    best: str
    metric: str
    provenance: dict = field(repr=False)

    def score(self, name: str) -> ProbeScore:
        return next(s for s in self.scores if s.name == name)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "metric": self.metric,
            "best": self.best,
            "scores": [asdict(s) for s in self.scores],
            "provenance": self.provenance,
            "bertlayers_version": __version__,
        }

    def metrics(self) -> list[str]:
        return list(self.scores[0].mean)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        names = self.metrics()
        writer.writerow(
            ["name", "kind", "layer", *[f"{m}_{s}" for m in names for s in ("mean", "std")]]
        )
        for s in self.scores:
            values = [f"{v:.4f}" for m in names for v in (s.mean[m], s.std[m])]
            writer.writerow([s.name, s.kind, "" if s.layer is None else s.layer, *values])
        return out.getvalue()

    def table(self) -> str:
        names = self.metrics()
        header = f"{'probe':<16}" + "".join(f"{m:>20}" for m in names)
        lines = [header, "-" * len(header)]
        for s in self.scores:
            mark = "  <- best" if s.name == self.best else ""
            cells = "".join(f"{s.mean[m]:>12.4f} ± {s.std[m]:<5.3f}" for m in names)
            lines.append(f"{s.name:<16}{cells}{mark}")
        return "\n".join(lines)


def _folds(data: ProbeData, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test row indices. Sentence level: stratified by label. Word level: by sentence."""
    check_labels(data.labels, data.groups, data.level, n_folds, "the training data")
    if data.level == "sentence":
        from sklearn.model_selection import StratifiedKFold

        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        labels = data.labels.astype(str)
        return list(splitter.split(np.zeros(len(labels)), labels))
    n_texts = int(data.groups.max()) + 1
    order = np.random.default_rng(seed).permutation(n_texts)
    splits = []
    for part in np.array_split(order, n_folds):
        in_test = np.isin(data.groups, part)
        splits.append((np.flatnonzero(~in_test), np.flatnonzero(in_test)))
    return splits


def default_metric(data: ProbeData) -> Metric:
    """Entity F1 for BIO tags, accuracy for other word tags (POS), macro-F1 for texts."""
    if data.level == "word":
        return Metric.ENTITY_F1 if is_bio(data.classes) else Metric.ACCURACY
    return Metric.MACRO_F1


def run_probes(
    data: ProbeData,
    test: ProbeData | None = None,
    classifier: Classifier | str = "logreg",
    folds: int = 5,
    seed: int = 0,
    c: float = 1.0,
    metric: Metric | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ProbeReport:
    """Score every layer, the combined layers and the baselines; the best one by `metric`.

    With `test`, each probe is fit on `data` and scored on `test`; otherwise by k-fold
    cross-validation on `data`. Deterministic for a given `seed`.
    """
    kind = Classifier.parse(classifier, "classifier")
    check_labels(data.labels, data.groups, data.level, None, "the training data")
    bio = is_bio(data.classes + (test.classes if test else []))
    chosen = Metric.parse(metric, "metric") if metric else default_metric(data)
    if chosen is Metric.ENTITY_F1 and not bio:
        raise OptionError("{opt:metric=entity_f1} needs BIO tags (O, B-TYPE, I-TYPE)")
    if test is not None:
        if test.layers != data.layers or test.level != data.level:
            raise InputError("the test vectors must have the same level and layers as training")
        if test.vectors.shape[2] != data.vectors.shape[2]:
            raise InputError("the test vectors come from a model of another hidden size")
        splits = None
    else:
        splits = _folds(data, folds, seed)
    n_layers = len(data.layers)
    flat = data.vectors.reshape(len(data.vectors), -1)
    test_flat = test.vectors.reshape(len(test.vectors), -1) if test else None
    items = np.asarray(data.items, dtype=object)

    def evaluate(make: Callable[[], object], inputs: np.ndarray, test_inputs) -> list[dict]:
        with warnings.catch_warnings():
            # averaged SGD runs a fixed number of epochs by design
            warnings.simplefilter("ignore", ConvergenceWarning)
            return _evaluate(make, inputs, test_inputs)

    def _evaluate(make: Callable[[], object], inputs: np.ndarray, test_inputs) -> list[dict]:
        results = []
        if splits is None:
            model = make().fit(inputs, data.labels.astype(str))
            predicted = model.predict(test_inputs)
            results.append(score(test.labels.astype(str), predicted, test.groups, bio))
            results[-1]["_model"] = model
            return results
        for train, held_out in splits:
            model = make().fit(inputs[train], data.labels[train].astype(str))
            predicted = model.predict(inputs[held_out])
            result = score(data.labels[held_out].astype(str), predicted, data.groups[held_out], bio)
            result["_model"] = model
            results.append(result)
        return results

    def summarize(name, kind_, layer, results) -> ProbeScore:
        models = [r.pop("_model") for r in results]
        keys = list(results[0])
        weights = None
        if models and hasattr(models[0], "named_steps"):
            step = models[0].named_steps.get("layers")
            if step is not None and step.mode == "mix":
                stacked = np.stack([m.named_steps["layers"].weights_ for m in models])
                weights = [round(float(w), 4) for w in stacked.mean(axis=0)]
        return ProbeScore(
            name,
            kind_,
            layer,
            {k: float(np.mean([r[k] for r in results])) for k in keys},
            {k: float(np.std([r[k] for r in results])) for k in keys},
            results,
            weights,
        )

    from sklearn.dummy import DummyClassifier

    scores: list[ProbeScore] = []
    test_items = np.asarray(test.items, dtype=object) if test else None
    baselines = [
        ("majority", lambda: DummyClassifier(strategy="most_frequent")),
        ("bag of words", lambda: _bag_of_words(data.level, kind, seed, c)),
    ]
    for name, make in baselines:
        scores.append(summarize(name, "baseline", None, evaluate(make, items, test_items)))
        if progress:
            progress(name)
    for feature in candidate_features(data.layers):
        results = evaluate(
            lambda f=feature: probe_pipeline(f, n_layers, kind, seed, c), flat, test_flat
        )
        scores.append(summarize(feature.name, feature.kind, feature.layer, results))
        if progress:
            progress(feature.name)
    probes = [s for s in scores if s.kind != "baseline"]
    best = max(probes, key=lambda s: s.mean[chosen.value])
    task = {
        "level": data.level,
        "rows": len(data.labels),
        "texts": int(data.groups.max()) + 1,
        "classes": data.classes,
        "bio": bio,
        "classifier": kind.value,
        "C": c,
        "evaluation": "test set" if test else f"{folds}-fold cross-validation",
        "test_rows": len(test.labels) if test else None,
        "seed": seed,
        "layers": data.layers,
    }
    return ProbeReport(task, scores, best.name, chosen.value, data.provenance)


def feature_for(report: ProbeReport, spec: str, layers: list[int]) -> Feature:
    """The feature a saved model uses: `best` (the report's best) or an explicit one."""
    features = candidate_features(layers)
    chosen = parse_feature(spec, features)
    if chosen is None:
        chosen = next(f for f in features if f.name == report.best)
    return chosen


# ------------------------------------------------------------------ saved probes


@dataclass
class SavedProbe:
    """A fitted probe with what it takes to embed new text the same way."""

    pipeline: object
    feature: str
    layers: list[int]  # the layers extracted for it, in our convention
    level: str
    extraction: dict  # model, revision, pooling, word pooling, long, max length, ...
    classes: list[str]
    metric: str
    cv_score: float | None

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """Labels for `(rows, K, H)` vectors extracted with `layers`."""
        return self.pipeline.predict(vectors.reshape(len(vectors), -1))

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray | None:
        classifier = self.pipeline.named_steps["classifier"]
        if not hasattr(classifier, "predict_proba"):
            return None
        return self.pipeline.predict_proba(vectors.reshape(len(vectors), -1))


def fit_probe(
    data: ProbeData,
    feature: Feature,
    extraction: dict,
    classifier: Classifier | str = "logreg",
    seed: int = 0,
    c: float = 1.0,
    report: ProbeReport | None = None,
) -> SavedProbe:
    """Fit the probe for `feature` on all of `data`, ready to save and to label new text."""
    check_labels(data.labels, data.groups, data.level, None, "the training data")
    pipeline = probe_pipeline(feature, len(data.layers), classifier, seed, c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(data.vectors.reshape(len(data.vectors), -1), data.labels.astype(str))
    metric = report.metric if report else default_metric(data).value
    cv = report.score(feature.name).mean[metric] if report else None
    return SavedProbe(
        pipeline, feature.name, data.layers, data.level, extraction, data.classes, metric, cv
    )


def save_probe(probe: SavedProbe, path: str | Path) -> None:
    """Write a fitted probe with joblib (a pickle: load only files you trust)."""
    import joblib

    fields = {name: getattr(probe, name) for name in probe.__dataclass_fields__}
    payload = {"format": PROBE_FORMAT, "bertlayers_version": __version__, **fields}
    target = Path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True)

    def dump(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            joblib.dump(payload, handle)

    write_atomically(target, dump)


def load_probe(path: str | Path) -> SavedProbe:
    """Read a probe written by `save_probe` / `bertlayers probe --save-model`."""
    import joblib

    file = Path(path)
    if not file.is_file():
        raise InputError(f"probe file not found: {path}")
    try:
        payload = joblib.load(file)
    except Exception as err:
        raise InputError(f"{path} is not a saved probe ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != PROBE_FORMAT:
        raise InputError(f"{path} is not a probe saved by bertlayers (probe {{opt:save_model}})")
    fields = SavedProbe.__dataclass_fields__
    return SavedProbe(**{name: payload[name] for name in fields})
