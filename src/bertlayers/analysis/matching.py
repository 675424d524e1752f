"""Which layer matches best: similarity and retrieval scored per layer, with confidence intervals.

Similarity: the cosine of two texts' vectors against a gold score (Spearman, Pearson, and ROC AUC
when the gold is binary), as STS is scored (Reimers & Gurevych 2019). Retrieval: exact cosine
search of queries over a corpus, scored by MRR@10, nDCG@10 and recall@1/10/100, as BEIR and
sentence-transformers' `InformationRetrievalEvaluator` do. Every layer is scored, and the
combined layers the literature uses (the mean of all, the mean of the first and last layer, the
last four concatenated), optionally after mean-centring, whitening (Su et al. 2021) or
all-but-the-top (Mu & Viswanath 2018), beside TF-IDF / word-overlap / BM25 baselines.
Confidence intervals are percentile bootstraps over pairs (or queries), the same resamples for
every row, so rows compare fairly. This module reads arrays; it never loads the model.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import __version__
from ..errors import InputError, OptionError
from .postprocess import Post, PostSpec, TooFewTexts, fit_post, unit_rows

TOP_K = 100  # ranks kept per query: recall@100 is the deepest metric


# ------------------------------------------------------------------ views of the layers


@dataclass(frozen=True)
class View:
    """One way to read a text's vector from its stacked layers `(K, H)`."""

    name: str
    kind: str  # "layer" | "combined"
    positions: tuple[int, ...]
    mode: str  # "single" | "mean" | "concat"
    layer: int | None = None


def matching_views(layers: Sequence[int]) -> list[View]:
    """Each layer, then the mean of all, the mean of the first encoder layer and the last
    (Su et al. 2021's first-last average; layer 0 is the embedding output, so "first" is
    layer 1), and the last four concatenated."""
    views = [
        View(f"layer {layer}", "layer", (p,), "single", layer) for p, layer in enumerate(layers)
    ]
    if len(layers) < 2:
        return views
    everything = tuple(range(len(layers)))
    views.append(View("mean of all", "combined", everything, "mean"))
    first = layers.index(1) if 1 in layers else 0
    if first != len(layers) - 1:
        name = f"mean of {layers[first]},{layers[-1]}"
        views.append(View(name, "combined", (first, len(layers) - 1), "mean"))
    last4 = everything[-4:]
    views.append(View(f"concat last {len(last4)}", "combined", last4, "concat"))
    return views


def view_vectors(stacked: np.ndarray, view: View) -> np.ndarray:
    """`(N, K, H)` -> `(N, D)` for one view, in float32 (float64 means for `mean`)."""
    picked = np.asarray(stacked[:, list(view.positions)], dtype=np.float32)
    if view.mode == "single":
        return picked[:, 0]
    if view.mode == "mean":
        return picked.mean(axis=1, dtype=np.float64).astype(np.float32)
    return picked.reshape(len(picked), -1)


# ------------------------------------------------------------------ scores


@dataclass
class MatchScore:
    """One row: a view (or baseline) under one pooling and post-processing, with each metric's
    value on all the data and its bootstrap confidence interval."""

    name: str
    kind: str  # "layer" | "combined" | "baseline"
    layer: int | None
    pooling: str | None
    post: str | None
    values: dict[str, float]
    ci: dict[str, list[float]]

    @property
    def label(self) -> str:
        parts = [self.name]
        if self.pooling:
            parts.append(self.pooling)
        if self.post and self.post != Post.NONE.value:
            parts.append(f"+{self.post}")
        return " ".join(parts)


@dataclass
class MatchReport:
    """Everything a similarity or retrieval probe found: a table, JSON, CSV or a plot."""

    task: dict
    scores: list[MatchScore]
    metric: str  # what "best" is chosen by
    provenance: dict = field(repr=False)

    @property
    def best(self) -> str:
        rows = [s for s in self.scores if s.kind != "baseline"]
        return max(rows, key=lambda s: _ordered(s.values[self.metric])).label

    def metrics(self) -> list[str]:
        return list(self.scores[0].values)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "metric": self.metric,
            "best": self.best,
            "scores": [_json_safe(asdict(s) | {"label": s.label}) for s in self.scores],
            "provenance": self.provenance,
            "bertlayers_version": __version__,
        }

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        names = self.metrics()
        columns = [f"{m}{suffix}" for m in names for suffix in ("", "_low", "_high")]
        writer.writerow(["name", "kind", "layer", "pooling", "post", *columns])
        for s in self.scores:
            values = [f"{v:.4f}" for m in names for v in (s.values[m], *s.ci[m])]
            layer = "" if s.layer is None else s.layer
            writer.writerow([s.name, s.kind, layer, s.pooling or "", s.post or "", *values])
        return out.getvalue()

    def table(self) -> str:
        names = self.metrics()
        width = max(16, *(len(s.label) + 2 for s in self.scores))
        header = f"{'probe':<{width}}" + "".join(f"{m:>24}" for m in names)
        lines = [header, "-" * len(header)]
        best = self.best
        for s in self.scores:
            mark = "  <- best" if s.label == best else ""
            cells = "".join(_cell(s.values[m], s.ci[m]) for m in names)
            lines.append(f"{s.label:<{width}}{cells}{mark}")
        return "\n".join(lines)


def _ordered(value: float) -> float:
    """NaN (undefined: a constant similarity, such as layer 0's [CLS], the same vector for
    every text; or a post-processing its texts cannot fit) ranks last."""
    return -np.inf if np.isnan(value) else value


def _cell(value: float, interval: list[float]) -> str:
    if np.isnan(value):
        return f"{'n/a':>24}"
    return f"{value:>9.4f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _json_safe(row: dict) -> dict:
    """NaN is not JSON: a metric undefined on constant similarities is written as null."""

    def clean(value):
        if isinstance(value, float) and np.isnan(value):
            return None
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return clean(row)


def bootstrap_samples(n: int, rounds: int, seed: int) -> np.ndarray:
    """`(rounds, n)` indices drawn with replacement: shared by every row of a report."""
    if rounds < 1:
        raise OptionError(f"bootstrap rounds must be at least 1, got {rounds}")
    return np.random.default_rng(seed).integers(0, n, size=(rounds, n))


def _interval(samples: np.ndarray) -> list[float]:
    """The 95% percentile interval of bootstrap estimates (NaNs, from constant resamples, out)."""
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return [float("nan"), float("nan")]
    low, high = np.percentile(finite, [2.5, 97.5])
    return [float(low), float(high)]


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of each row of `x` with the same row of `y` `(B, n)`."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=1) / denominator


def is_binary(gold: np.ndarray) -> bool:
    """A gold of exactly two values (same/different topic, duplicate or not): AUC applies."""
    return len(np.unique(gold)) == 2


def similarity_metrics(
    similarity: np.ndarray, gold: np.ndarray, samples: np.ndarray
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Spearman and Pearson of `similarity` against `gold` (and ROC AUC when the gold is
    binary), on all pairs and on each bootstrap resample `samples` `(B, n)`."""
    from scipy.stats import rankdata

    sim = np.asarray(similarity, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    all_pairs = np.arange(len(sim))[None]
    values, ci = {}, {}
    for rows, store in ((all_pairs, values), (samples, ci)):
        s, g = sim[rows], gold[rows]
        rank_s, rank_g = rankdata(s, axis=1), rankdata(g, axis=1)
        found = {"spearman": _pearson_rows(rank_s, rank_g), "pearson": _pearson_rows(s, g)}
        if is_binary(gold):  # Mann-Whitney: AUC from the ranks of the positives
            positive = g == gold.max()
            n_pos = positive.sum(axis=1)
            n_neg = positive.shape[1] - n_pos
            with np.errstate(invalid="ignore", divide="ignore"):
                auc = ((rank_s * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
            found["auc"] = auc
        for name, estimates in found.items():
            store[name] = float(estimates[0]) if store is values else _interval(estimates)
    return values, ci


def pair_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of row i of `a` with row i of `b`."""
    return np.einsum("nd,nd->n", unit_rows(a), unit_rows(b)).astype(np.float64)


_WORD = re.compile(r"\w+", re.UNICODE)


def word_overlap(texts: Sequence[str], pairs: Sequence[str]) -> np.ndarray:
    """Jaccard overlap of the lowercased word sets of each text and its pair."""
    scores = np.zeros(len(texts))
    for i, (a, b) in enumerate(zip(texts, pairs, strict=True)):
        left, right = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
        union = left | right
        scores[i] = len(left & right) / len(union) if union else 0.0
    return scores


def tfidf_cosines(texts: Sequence[str], pairs: Sequence[str]) -> np.ndarray:
    """Cosine of TF-IDF vectors (fitted on every text of both sides, each text once)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vocabulary = list(dict.fromkeys([*texts, *pairs]))
    vectorizer = TfidfVectorizer(sublinear_tf=True).fit(vocabulary)
    a, b = vectorizer.transform(texts), vectorizer.transform(pairs)  # rows are unit length
    return np.asarray(a.multiply(b).sum(axis=1)).ravel()


# ------------------------------------------------------------------ retrieval


def search_exact(
    queries: np.ndarray, documents: np.ndarray, k: int = TOP_K, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The top `k` documents of each query by cosine, exactly: `(Q, k)` indices and scores,
    best first (ties go to the lower document index). Queries go in blocks, so memory is
    `block x N`, never `Q x N`."""
    q, d = unit_rows(queries), unit_rows(documents)
    k = min(k, len(d))
    top = np.zeros((len(q), k), dtype=np.int64)
    scores = np.zeros((len(q), k), dtype=np.float32)
    for start in range(0, len(q), block):
        sims = q[start : start + block] @ d.T  # (b, N)
        # every document scoring at least the k-th best is a candidate (ties included), then
        # candidates are ordered by score down and index up, and cut to k
        kth = np.partition(sims, len(d) - k, axis=1)[:, len(d) - k]
        for row in range(len(sims)):
            candidates = np.flatnonzero(sims[row] >= kth[row])
            order = np.lexsort((candidates, -sims[row, candidates]))[:k]
            top[start + row] = candidates[order]
            scores[start + row] = sims[row, candidates[order]]
    return top, scores


RETRIEVAL_METRICS = ("mrr@10", "ndcg@10", "recall@1", "recall@10", "recall@100")


def per_query_metrics(
    top: np.ndarray,
    relevant: Sequence[dict[int, float]],
    groups: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Each query's MRR@10, nDCG@10 (gain = the graded relevance, as trec_eval) and recall@k,
    from its ranked document indices `top` `(Q, k)` and its relevant documents.

    `groups[d]` names the document that d is a copy of (identical texts): recall counts each
    group once, so a query with two identical relevant documents has recall@1 of 1 when it
    finds either."""
    n = len(relevant)
    found = {name: np.zeros(n) for name in RETRIEVAL_METRICS}
    discounts = 1 / np.log2(np.arange(2, 12))
    for i, wanted in enumerate(relevant):
        ranked = top[i]
        gains = np.array([wanted.get(int(doc), 0.0) if doc >= 0 else 0.0 for doc in ranked[:TOP_K]])
        hits = gains > 0
        first = np.flatnonzero(hits[:10])
        found["mrr@10"][i] = 1 / (first[0] + 1) if len(first) else 0.0
        ideal = np.sort(np.array([g for g in wanted.values() if g > 0]))[::-1][:10]
        idcg = (ideal * discounts[: len(ideal)]).sum()
        dcg = (gains[:10] * discounts[: len(gains[:10])]).sum()
        found["ndcg@10"][i] = dcg / idcg if idcg > 0 else 0.0
        group = (lambda d: d) if groups is None else (lambda d: groups[d])
        wanted_groups = {group(d) for d, g in wanted.items() if g > 0}
        for k in (1, 10, 100):
            hit_groups = {group(int(d)) for d, h in zip(ranked[:k], hits[:k], strict=False) if h}
            found[f"recall@{k}"][i] = len(hit_groups) / len(wanted_groups)
    return found


def mean_metrics(
    per_query: dict[str, np.ndarray], samples: np.ndarray
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Means over queries, and their bootstrap intervals over the query resamples."""
    values = {name: float(v.mean()) for name, v in per_query.items()}
    ci = {name: _interval(v[samples].mean(axis=1)) for name, v in per_query.items()}
    return values, ci


def bm25_top(queries: Sequence[str], documents: Sequence[str], k: int = TOP_K) -> np.ndarray:
    """BM25 (bm25s, Lucene's variant, English stop words) top-`k` document indices per query;
    -1 where fewer than `k` documents share a term with the query."""
    import bm25s

    k = min(k, len(documents))
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(list(documents), stopwords="en", show_progress=False), show_progress=False
    )
    tokens = bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
    top, scores = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
    top = np.asarray(top, dtype=np.int64)
    top[np.asarray(scores) <= 0] = -1  # no shared term: not retrieved (bm25s orders these at will)
    return top


# ------------------------------------------------------------------ whole reports


Progress = Callable[[str], None]


def _fitted(post: PostSpec, view: View, own: np.ndarray, fit_on: np.ndarray | None):
    """The post-processing of one view, fitted on `fit_on` (`--fit-on`) or the data's own texts."""
    return fit_post(post.post, view_vectors(fit_on if fit_on is not None else own, view), post.dims)


def _undefined(metrics: Sequence[str]) -> tuple[dict, dict]:
    nan = float("nan")
    return {m: nan for m in metrics}, {m: [nan, nan] for m in metrics}


def _score_views(
    layers: list[int],
    posts: Sequence[PostSpec],
    own: dict[str, np.ndarray],
    fit_on: dict[str, np.ndarray] | None,
    score: Callable[[str, View, Callable], tuple[dict, dict]],
    done: Progress | None,
    metric_names: Sequence[str],
) -> list[MatchScore]:
    """One row per pooling, view and post-processing: the post fitted (on `own[pooling]`, the
    data's own texts, or `fit_on[pooling]`), then `score(pooling, view, fitted)`."""
    scores: list[MatchScore] = []
    metrics = list(metric_names)
    for pooling, stacked in own.items():
        for view in matching_views(layers):
            for post in posts:
                try:
                    fitted = _fitted(post, view, stacked, fit_on[pooling] if fit_on else None)
                except TooFewTexts as err:  # this row is undefined; the others still stand
                    warnings.warn(f"{view.name}, {pooling}: {err}; its row is n/a", stacklevel=2)
                    values, ci = _undefined(metrics)
                else:
                    values, ci = score(pooling, view, fitted)
                row = MatchScore(view.name, view.kind, view.layer, pooling, post.label, values, ci)
                scores.append(row)
                if done:
                    done(row.label)
    return scores


def similarity_report(
    vectors: dict[str, np.ndarray],
    layers: list[int],
    left: np.ndarray,
    right: np.ndarray,
    gold: np.ndarray,
    texts: Sequence[str],
    posts: Sequence[PostSpec] = (PostSpec(Post.NONE),),
    fit_on: dict[str, np.ndarray] | None = None,
    rounds: int = 1000,
    seed: int = 0,
    done: Progress | None = None,
    task: dict | None = None,
    provenance: dict | None = None,
) -> MatchReport:
    """Score cosine similarity against `gold` for every view, pooling and post-processing.

    `vectors[pooling]` is `(U, K, H)`: one row per distinct text; pair i is texts
    `left[i]` and `right[i]` (indices into `texts`) with gold score `gold[i]`.
    """
    if len(gold) < 3:
        raise InputError(f"a similarity probe needs at least 3 scored pairs, got {len(gold)}")
    if len(np.unique(gold)) < 2:
        raise InputError("every pair has the same gold score: there is nothing to correlate")
    samples = bootstrap_samples(len(gold), rounds, seed)

    def score(pooling: str, view: View, fitted) -> tuple[dict, dict]:
        unique = fitted(view_vectors(vectors[pooling], view))
        return similarity_metrics(pair_cosines(unique[left], unique[right]), gold, samples)

    metric_names = ["spearman", "pearson", *(["auc"] if is_binary(gold) else [])]
    scores = _score_views(layers, posts, vectors, fit_on, score, done, metric_names)
    a = [texts[i] for i in left]
    b = [texts[i] for i in right]
    for name, baseline in (("tf-idf cosine", tfidf_cosines), ("word overlap", word_overlap)):
        try:
            values, ci = similarity_metrics(baseline(a, b), gold, samples)
        except ValueError as err:  # e.g. no word at all for TF-IDF's vocabulary
            warnings.warn(f"the {name} baseline is undefined here ({err})", stacklevel=2)
            values, ci = _undefined(metric_names)
        scores.append(MatchScore(name, "baseline", None, None, None, values, ci))
    metric = "auc" if is_binary(gold) else "spearman"
    base = {
        "kind": "similarity",
        "pairs": len(gold),
        "texts": len(texts),
        "layers": layers,
        "bootstrap": rounds,
        "seed": seed,
        "posts": [p.label for p in posts],
        "binary_gold": is_binary(gold),
    }
    return MatchReport(base | (task or {}), scores, metric, provenance or {})


def retrieval_report(
    queries: dict[str, np.ndarray],
    documents: dict[str, np.ndarray],
    layers: list[int],
    relevant: Sequence[dict[int, float]],
    query_texts: Sequence[str],
    doc_texts: Sequence[str],
    posts: Sequence[PostSpec] = (PostSpec(Post.NONE),),
    fit_on: dict[str, np.ndarray] | None = None,
    rounds: int = 1000,
    seed: int = 0,
    done: Progress | None = None,
    task: dict | None = None,
    provenance: dict | None = None,
    groups: Sequence[int] | None = None,
) -> MatchReport:
    """Score exact cosine retrieval for every view, pooling and post-processing.

    `queries[p]` `(Q, K, H)` and `documents[p]` `(N, K, H)` are keyed alike by pooling (a
    label such as `mean`, or `cls/mean` for query/document poolings); `relevant[i]` maps the
    document indices relevant to query i to their graded relevance (> 0).
    """
    if len(doc_texts) == 0:
        raise InputError("the corpus is empty: there is nothing to retrieve")
    if len(relevant) == 0:
        raise InputError("no query has a relevant document: there is nothing to score")
    for i, wanted in enumerate(relevant):
        if not wanted or min(wanted.values()) <= 0:
            raise InputError(f"query {i} has no relevant document (relevance > 0) to score")
    samples = bootstrap_samples(len(relevant), rounds, seed)
    own = {p: np.concatenate([queries[p], documents[p]]) for p in queries}

    def score(pooling: str, view: View, fitted) -> tuple[dict, dict]:
        q = fitted(view_vectors(queries[pooling], view))
        top, _ = search_exact(q, fitted(view_vectors(documents[pooling], view)))
        return mean_metrics(per_query_metrics(top, relevant, groups), samples)

    scores = _score_views(layers, posts, own, fit_on, score, done, RETRIEVAL_METRICS)
    try:
        bm25 = bm25_top(query_texts, doc_texts)
    except ValueError as err:  # e.g. documents of stop words only: no term to index
        warnings.warn(f"the BM25 baseline is undefined here ({err})", stacklevel=2)
        values, ci = _undefined(RETRIEVAL_METRICS)
    else:
        values, ci = mean_metrics(per_query_metrics(bm25, relevant, groups), samples)
    scores.append(MatchScore("bm25", "baseline", None, None, None, values, ci))
    base = {
        "kind": "retrieval",
        "queries": len(relevant),
        "documents": len(doc_texts),
        "layers": layers,
        "bootstrap": rounds,
        "seed": seed,
        "posts": [p.label for p in posts],
        "search": "exact cosine",
    }
    return MatchReport(base | (task or {}), scores, "mrr@10", provenance or {})
