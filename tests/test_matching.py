"""Similarity and retrieval probes per layer, and semantic search (FAISS), on real BBC articles
(the shared corpora: these tests skip without them) and the real model: every score is
recomputed with scipy / scikit-learn / numpy on the same stored vectors, FAISS results equal a
brute-force numpy search, bad input is one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import ndcg_score, roc_auc_score

import corpus
from bertlayers.analysis.matching import (
    Post,
    bootstrap_samples,
    fit_post,
    matching_views,
    per_query_metrics,
    search_exact,
    similarity_metrics,
    unit_rows,
    view_vectors,
)
from bertlayers.search import Index
from bertlayers.stores import load
from test_cli import assert_one_line_error, run_cli

# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def articles(shared_data) -> list[dict]:
    """Every 37th BBC article (61 of 2,225, all five topics)."""
    lines = (shared_data / "news-bbc.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[::37]]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, articles) -> Path:
    """The articles as JSON lines, and pairs of their titles scored 1 (same topic) or 0."""
    root = tmp_path_factory.mktemp("matching")
    with open(root / "bbc.jsonl", "w", encoding="utf-8") as out:
        for a in articles:
            out.write(json.dumps({k: a[k] for k in ("id", "label", "title", "text")}) + "\n")
    rng = random.Random(0)
    rows = ["id\ttext\tpair\tscore"]
    for i in range(160):
        a, b = rng.sample(articles, 2)
        rows.append(f"{i}\t{a['title']}\t{b['title']}\t{int(a['label'] == b['label'])}")
    (root / "pairs.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def _probe_json(directory: Path) -> dict:
    return json.loads((directory / "probe.json").read_text())


def _row(report: dict, label: str) -> dict:
    return next(s for s in report["scores"] if s["label"] == label)


# ---------------------------------------------------------------- metrics, against scipy/sklearn


def test_similarity_metrics_equal_scipy_and_sklearn(bundled, articles):
    titles = [a["title"] for a in articles]
    vectors = bundled.embed(titles, layers=[3])[:, 0]
    rng = np.random.default_rng(1)
    left, right = rng.integers(0, len(titles), 300), rng.integers(0, len(titles), 300)
    gold = np.array(
        [articles[i]["label"] == articles[j]["label"] for i, j in zip(left, right, strict=True)]
    )
    sims = np.einsum("nd,nd->n", unit_rows(vectors[left]), unit_rows(vectors[right]))
    samples = bootstrap_samples(len(gold), 200, seed=0)
    values, ci = similarity_metrics(sims, gold.astype(float), samples)
    assert values["spearman"] == pytest.approx(spearmanr(sims, gold).statistic, abs=1e-9)
    assert values["pearson"] == pytest.approx(pearsonr(sims, gold.astype(float))[0], abs=1e-9)
    assert values["auc"] == pytest.approx(roc_auc_score(gold, sims), abs=1e-9)
    resampled = samples[17]  # one bootstrap round, recomputed alone
    again, _ = similarity_metrics(sims[resampled], gold[resampled].astype(float), samples[:1])
    assert again["auc"] == pytest.approx(roc_auc_score(gold[resampled], sims[resampled]))
    for name in values:  # the 95% interval brackets the estimate on all pairs
        assert ci[name][0] < values[name] < ci[name][1]


def test_exact_search_and_retrieval_metrics_equal_brute_force(bundled, articles):
    titles = [a["title"] for a in articles]
    docs = [a["text"][:300] for a in articles]
    q, d = bundled.embed(titles, layers=[-1])[:, 0], bundled.embed(docs, layers=[-1])[:, 0]
    top, scores = search_exact(q, d, k=20, block=7)  # blocks smaller than the queries
    sims = unit_rows(q) @ unit_rows(d).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :20]
    assert np.array_equal(top, order)
    assert np.allclose(scores, np.take_along_axis(sims, order, axis=1), atol=1e-6)
    copies = np.repeat(np.eye(5, 8), 20, axis=0)  # 5 vectors x 20 copies: ties at the k-th
    assert search_exact(copies[60:61], copies, k=7)[0].tolist() == [list(range(60, 67))]
    # two identical relevant documents are one: finding either is recall 1, not 1/2
    twins = per_query_metrics(np.array([[60, 61, 0]]), [{60: 1.0, 61: 1.0}], groups=[0] * 100)
    assert twins["recall@1"][0] == 1.0 and twins["mrr@10"][0] == 1.0
    apart = per_query_metrics(np.array([[60, 61, 0]]), [{60: 1.0, 61: 1.0}])
    assert apart["recall@1"][0] == 0.5
    # graded judgements: the article itself 2, another of its topic 1
    relevant = []
    for i, a in enumerate(articles):
        same = [j for j, b in enumerate(articles) if b["label"] == a["label"] and j != i][:3]
        relevant.append({i: 2.0, **{j: 1.0 for j in same}})
    top, _ = search_exact(q, d, k=len(d))
    found = per_query_metrics(top, relevant)
    truth = np.zeros_like(sims)
    for i, wanted in enumerate(relevant):
        for j, gain in wanted.items():
            truth[i, j] = gain
    expected_ndcg = [ndcg_score(truth[i : i + 1], sims[i : i + 1], k=10) for i in range(len(q))]
    assert np.allclose(found["ndcg@10"], expected_ndcg, atol=1e-9)
    ranks = (np.argsort(-sims, axis=1, kind="stable") == np.arange(len(q))[:, None]).argmax(1)
    first_hit = [
        min(r for r, doc in enumerate(np.argsort(-sims[i], kind="stable")) if doc in relevant[i])
        for i in range(len(q))
    ]
    assert np.allclose(found["mrr@10"], [1 / (r + 1) if r < 10 else 0 for r in first_hit])
    top10 = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    recall10 = [len(set(top10[i]) & set(relevant[i])) / len(relevant[i]) for i in range(len(q))]
    assert np.allclose(found["recall@10"], recall10)
    assert ranks.mean() < len(q) / 4  # titles find their own article well above chance


def test_post_processing_whitens_centres_and_removes_the_top(bundled):
    texts = [t for t in corpus.many_texts(2000) if 20 < len(t) < 200][:600]
    assert len(texts) == 600  # more texts than 384 dimensions
    x = bundled.embed(texts, layers=[-1])[:, 0].astype(np.float64)
    whitened = fit_post(Post.WHITEN, x)(x).astype(np.float64)
    assert np.allclose(whitened.mean(axis=0), 0, atol=1e-4)
    spectrum = np.linalg.svd(np.cov(x.T, bias=True), compute_uv=False)
    kept = int((spectrum > spectrum.max() * 1e-6).sum())  # directions above the floor
    assert kept > 300
    covariance = np.cov(whitened.T, bias=True)[:kept, :kept]
    assert np.allclose(covariance, np.eye(kept), atol=2e-3)
    assert np.allclose(fit_post(Post.CENTER, x)(x).mean(axis=0), 0, atol=1e-5)
    abtt = fit_post(Post.ABTT, x)(x).astype(np.float64)
    centred = x - x.mean(axis=0)
    top = np.linalg.svd(centred, full_matrices=False)[2][:4]  # d/100 = 4 directions for 384
    assert np.abs(abtt @ top.T).max() < 1e-3 < np.abs(centred @ top.T).max()


def test_views_are_each_layer_and_the_literature_combinations():
    views = matching_views([0, 1, 2, 3, 4, 5, 6])
    names = [v.name for v in views]
    assert names[:7] == [f"layer {i}" for i in range(7)]
    assert names[7:] == ["mean of all", "mean of 1,6", "concat last 4"]
    stacked = np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3)
    assert np.allclose(view_vectors(stacked, views[8]), (stacked[:, 1] + stacked[:, 6]) / 2)
    assert view_vectors(stacked, views[9]).shape == (2, 12)


# ---------------------------------------------------------------- the command line


def test_probe_similarity_scores_every_layer_as_scipy_does(data_dir):
    result = run_cli(
        "probe", "pairs.tsv", "--task", "similarity", "--pair-column", "pair",
        "--id-column", "id", "--store", "pairs.npy", "--post", "none,whiten-16,whiten",
        "--bootstrap", "300", "-o", "sim", "--quiet", cwd=data_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = _probe_json(data_dir / "sim")
    assert report["task"]["kind"] == "similarity" and report["task"]["binary_gold"]
    assert report["metric"] == "auc"
    labels = [s["label"] for s in report["scores"]]
    for layer in range(7):
        assert f"layer {layer} mean" in labels and f"layer {layer} mean +whiten-16" in labels
    assert {"tf-idf cosine", "word overlap", "mean of 1,6 mean +whiten-16"} <= set(labels)
    # recomputed from the stored vectors of the distinct texts, in order of first appearance
    rows = [line.split("\t") for line in (data_dir / "pairs.tsv").read_text().splitlines()[1:]]
    distinct = list(dict.fromkeys(t for row in rows for t in row[1:3]))
    at = {t: i for i, t in enumerate(distinct)}
    store = load(data_dir / "pairs.npy")
    assert len(store.ids) == len(distinct)
    # so few distinct titles cannot define a whitening of 384 dimensions: n/a, said on stderr
    assert _row(report, "layer 3 mean +whiten")["values"]["auc"] is None
    assert f"whiten fitted on {len(distinct)} texts of 384 dimensions is undefined" in result.stderr
    gold = np.array([float(r[3]) for r in rows])
    left, right = [at[r[1]] for r in rows], [at[r[2]] for r in rows]
    for layer in (2, 6):
        x = store.layer(layer)
        sims = np.einsum("nd,nd->n", unit_rows(x[left]), unit_rows(x[right]))
        row = _row(report, f"layer {layer} mean")
        assert row["values"]["spearman"] == pytest.approx(spearmanr(sims, gold).statistic)
        assert row["values"]["auc"] == pytest.approx(roc_auc_score(gold, sims))
        # whitening-16 as Su et al.'s code: mu, and W = U[:, :16] / sqrt(S[:16]) of the SVD
        # of the covariance
        centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
        u, s, _ = np.linalg.svd(centred.T @ centred / len(x))
        w = centred @ (u[:, :16] / np.sqrt(s[:16]))
        white = np.einsum("nd,nd->n", unit_rows(w[left]), unit_rows(w[right]))
        assert _row(report, f"layer {layer} mean +whiten-16")["values"]["auc"] == pytest.approx(
            roc_auc_score(gold, white), abs=1e-6
        )
    assert result.stdout.splitlines()[0].split()[:4] == ["probe", "spearman", "pearson", "auc"]
    assert "<- best" in result.stdout
    assert (data_dir / "sim" / "probe.svg").exists() and (data_dir / "sim" / "probe.csv").exists()
    page = run_cli("report", "sim", cwd=data_dir)
    assert page.returncode == 0, page.stderr
    # the kept store holds those texts only: other pairs with it are refused, not misread
    other = data_dir / "other-pairs.tsv"
    other.write_text("id\ttext\tpair\tscore\n1\tOil prices fall\tMarkets rally\t1\n"
                     "2\tA\tB\t0\n3\tC\tD\t1\n")  # fmt: skip
    stale = run_cli("probe", "other-pairs.tsv", "--task", "similarity", "--pair-column", "pair",
                    "--store", "pairs.npy", "--quiet", cwd=data_dir)  # fmt: skip
    assert_one_line_error(stale, "pairs.npy has")
    html = (data_dir / "sim" / "report.html").read_text()
    assert "Similarity by layer" in html and "layer 6 mean +whiten-16" in html
    assert "Data: <b>pairs.tsv</b>" in html  # the data is named; the interval and measures said
    assert "95% confidence interval [low, high]" in html and "300 bootstrap resamples" in html
    assert "<i>auc</i>: the chance that a random positive pair" in html


@pytest.fixture(scope="module")
def retrieval_run(data_dir):
    """Titles -> articles (split into windows), keeping both stores: read by the index tests."""
    return run_cli(
        "probe", "bbc.jsonl", "--task", "retrieval", "--id-column", "id",
        "--text-column", "title", "--doc-column", "text", "--doc-long", "split",
        "--store", "titles.npy", "--corpus-store", "docs.npy", "--bootstrap", "200",
        "-o", "ret", "--quiet", cwd=data_dir,
    )  # fmt: skip


def test_probe_retrieval_finds_each_article_from_its_title(data_dir, articles, retrieval_run):
    result = retrieval_run
    assert result.returncode == 0, result.stderr
    report = _probe_json(data_dir / "ret")
    assert report["task"]["queries"] == report["task"]["documents"] == len(articles)
    assert report["task"]["doc_long"] == "split"
    docs = load(data_dir / "docs.npy")
    assert docs.provenance["long"] == "split" and docs.windows.max() > 1  # long articles
    queries = load(data_dir / "titles.npy")
    for layer in (1, 6):
        sims = unit_rows(queries.layer(layer)) @ unit_rows(docs.layer(layer)).T
        order = np.argsort(-sims, axis=1, kind="stable")
        rank = (order == np.arange(len(order))[:, None]).argmax(axis=1)
        row = _row(report, f"layer {layer} mean")
        assert row["values"]["mrr@10"] == pytest.approx(
            np.mean(np.where(rank < 10, 1 / (rank + 1), 0))
        )
        assert row["values"]["recall@1"] == pytest.approx(np.mean(rank == 0))
    bm25 = _row(report, "bm25")
    assert bm25["kind"] == "baseline" and bm25["values"]["mrr@10"] > 0.5  # title words recur
    assert _row(report, "layer 6 mean")["values"]["mrr@10"] > 0.8  # the trained layer
    page = run_cli("report", "ret", cwd=data_dir)
    assert (
        page.returncode == 0 and "Retrieval by layer" in (data_dir / "ret/report.html").read_text()
    )


def test_probe_retrieval_with_a_corpus_and_qrels(data_dir, articles):
    queries = data_dir / "queries.tsv"
    queries.write_text(
        "qid\ttext\n" + "".join(f"q{i}\t{a['title']}\n" for i, a in enumerate(articles[:20]))
    )
    corpus = data_dir / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": a["id"], "text": a["text"][:400]}) + "\n"
                              for a in articles))  # fmt: skip
    # BEIR: a header, graded relevance; q0..q14 judged, q15..q19 not
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"q{i}\t{a['id']}\t2" for i, a in enumerate(articles[:15])]
    lines += [f"q{i}\t{articles[i + 1]['id']}\t0" for i in range(15)]  # judged not relevant
    (data_dir / "qrels.tsv").write_text("\n".join(lines) + "\n")
    result = run_cli(
        "probe", "queries.tsv", "--task", "retrieval", "--corpus", "corpus.jsonl",
        "--qrels", "qrels.tsv", "--id-column", "qid", "--doc-id-column", "_id",
        "--layers", "-1", "--pooling", "mean,cls", "--bootstrap", "100", cwd=data_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "15 of 20 queries have a relevant document" in result.stderr
    labels = [line.split("  ")[0] for line in result.stdout.splitlines()[2:]]
    assert labels == ["layer 6 mean", "layer 6 cls", "bm25"]
    # TREC qrels give the same judgements, so the same scores
    trec = [f"q{i} 0 {a['id']} 2" for i, a in enumerate(articles[:15])]
    (data_dir / "qrels.trec").write_text("\n".join(trec) + "\n")
    again = run_cli(
        "probe", "queries.tsv", "--task", "retrieval", "--corpus", "corpus.jsonl",
        "--qrels", "qrels.trec", "--id-column", "qid", "--doc-id-column", "_id",
        "--layers", "-1", "--pooling", "mean,cls", "--bootstrap", "100", "--quiet", cwd=data_dir,
    )  # fmt: skip
    assert again.returncode == 0 and again.stdout == result.stdout
    # whitening fitted on other texts (--fit-on) gives other scores than on the data's own
    (data_dir / "fit.txt").write_text("".join(a["text"][:300] + "\n" for a in articles[20:]))
    common = ["probe", "queries.tsv", "--task", "retrieval", "--corpus", "corpus.jsonl",
              "--qrels", "qrels.trec", "--id-column", "qid", "--doc-id-column", "_id",
              "--layers", "0", "--post", "whiten-8", "--bootstrap", "50", "--quiet"]  # fmt: skip
    own = run_cli(*common, cwd=data_dir)
    fitted = run_cli(*common, "--fit-on", "fit.txt", cwd=data_dir)
    assert own.returncode == fitted.returncode == 0, own.stderr + fitted.stderr
    assert "layer 0 mean +whiten-8" in own.stdout
    assert own.stdout.splitlines()[2] != fitted.stdout.splitlines()[2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id\ttext\tpair\tscore\n1\ta\tb\t0.5\n2\tc\td\thigh\n", "line 3: score 'high'"),
        ("id\ttext\tpair\tscore\n1\ta\tb\t0.5\n2\tc\td\t\n", "line 3: no label in column 'score'"),
        ("id\ttext\tpair\n1\ta\tb\n", "no column 'score'"),
        ("id\ttext\tpair\tscore\n1\ta\tb\t1\n2\tc\td\t1\n3\te\tf\t1\n", "the same gold score"),
    ],
)
def test_similarity_bad_input_is_one_line(tmp_path, content, message):
    (tmp_path / "bad.tsv").write_text(content)
    (tmp_path / "plain.txt").write_text("a\nb\n")
    for args, refusal in (
        (("plain.txt", "--pair-column", "pair"), "reads columns"),
        (("bad.tsv", "--pair-column", "pair", "--doc-pooling", "cls"), "is for --task retrieval"),
        (("bad.tsv", "--pair-column", "pair", "--post", "whiten-"), "unknown post-processing"),
    ):
        assert_one_line_error(
            run_cli("probe", *args, "--task", "similarity", cwd=tmp_path), refusal
        )
    result = run_cli(
        "probe", "bad.tsv", "--task", "similarity", "--pair-column", "pair", "--id-column",
        "id", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert_one_line_error(result, message)


def test_retrieval_bad_input_is_one_line(data_dir, tiny_model_dirs):
    cases = [
        ("q9\tbusiness/001\t1\n", "line 1: no query 'q9'"),
        ("q0 0 nowhere/1 1\n", "line 1: no document 'nowhere/1'"),
        ("q0\tbusiness/001\tsome\n", "relevance 'some' is not a finite number"),
        ("q0 0 business/001 inf\n", "relevance 'inf' is not a finite number"),
        ("q0 0 business/001 1\nq0 0 business/001 2\n", "were judged already at line 1"),
    ]
    (data_dir / "q.tsv").write_text("qid\ttext\nq0\toil prices\n")
    (data_dir / "c.jsonl").write_text(json.dumps({"_id": "business/001", "text": "oil"}) + "\n")
    for qrels, message in cases:
        (data_dir / "bad.qrels").write_text(qrels)
        result = run_cli(
            "probe", "q.tsv", "--task", "retrieval", "--corpus", "c.jsonl", "--qrels",
            "bad.qrels", "--id-column", "qid", "--doc-id-column", "_id", cwd=data_dir,
        )  # fmt: skip
        assert_one_line_error(result, message)
    (data_dir / "empty.jsonl").write_text("")
    (data_dir / "ok.qrels").write_text("q0 0 business/001 1\n")
    result = run_cli(
        "probe", "q.tsv", "--task", "retrieval", "--corpus", "empty.jsonl", "--qrels",
        "ok.qrels", "--id-column", "qid", cwd=data_dir,
    )  # fmt: skip
    assert_one_line_error(result, "empty.jsonl is empty")
    # the queries' vectors from the bundled model, the documents' from another: refused
    tiny = str(tiny_model_dirs["bert"])
    made = run_cli(
        "extract", "c.jsonl", "--id-column", "_id", "--model", tiny, "-o", "tiny-docs.npy",
        "--layers", "all", "--quiet", cwd=data_dir,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    result = run_cli(
        "probe", "q.tsv", "--task", "retrieval", "--corpus", "c.jsonl", "--qrels", "ok.qrels",
        "--id-column", "qid", "--doc-id-column", "_id", "--corpus-store", "tiny-docs.npy",
        "--quiet", cwd=data_dir,
    )  # fmt: skip
    assert_one_line_error(result, "come from different models")
    options = run_cli("probe", "q.tsv", "--task", "retrieval", cwd=data_dir)
    assert_one_line_error(options, "--task retrieval needs the documents")


# ---------------------------------------------------------------- index and search


def test_faiss_index_equals_brute_force_numpy(data_dir, tmp_path, retrieval_run):
    assert retrieval_run.returncode == 0, retrieval_run.stderr
    store = load(data_dir / "docs.npy")
    x = unit_rows(store.layer(4))
    flat = Index.build(store, layer=4)
    assert flat.meta["kind"] == "flat" and flat.recall_at_10 == 1.0
    queries = load(data_dir / "titles.npy")
    hits = flat.search(queries, k=5)
    sims = unit_rows(queries.layer(4)) @ x.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    for i, found in enumerate(hits):
        assert [h.id for h in found] == [store.ids[j] for j in order[i]]
        assert np.allclose([h.score for h in found], sims[i, order[i]], atol=1e-5)
    for kind in ("hnsw", "ivf"):
        approximate = Index.build(store, layer=4, kind=kind)
        assert approximate.meta["kind"] == kind and 0.5 <= approximate.recall_at_10 <= 1.0
    mean = Index.build(store, layer="mean")
    got = mean.search(queries, k=1)
    averaged = (
        unit_rows(queries.embeddings.mean(axis=1)) @ unit_rows(store.embeddings.mean(axis=1)).T
    )
    assert [h[0].id for h in got] == [store.ids[j] for j in averaged.argmax(axis=1)]
    saved = flat.save(tmp_path / "docs.index")
    again = Index.load(saved)
    assert [h.id for h in again.search(queries, k=5)[0]] == [h.id for h in hits[0]]


def test_index_and_search_from_the_command_line(data_dir, articles, bundled, retrieval_run):
    result = run_cli(
        "index", "docs.npy", "-o", "docs.index", "--layer", "-1", "--texts", "bbc.jsonl",
        "--id-column", "id", "--text-column", "text", cwd=data_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "recall@10 against exact search: 1.0000" in result.stderr
    assert result.stdout == ""
    found = run_cli("search", "docs.index", articles[5]["title"], "-k", "3", cwd=data_dir)
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert lines[0] == "query\trank\tid\tscore\ttext" and len(lines) == 4
    first = lines[1].split("\t")
    assert first[:3] == ["1", "1", articles[5]["id"]]
    assert first[4].startswith(" ".join(articles[5]["text"].split())[:50])
    # the library, on the same index: the query embedded with the store's settings (split)
    index = Index.load(data_dir / "docs.index")
    assert index.search(articles[5]["title"], k=3, extractor=bundled)[0][0].id == articles[5]["id"]
    (data_dir / "questions.txt").write_text(f"{articles[0]['title']}\n{articles[9]['title']}\n")
    many = run_cli("search", "docs.index", "--queries", "questions.txt", "--json", "-k", "2",
                   cwd=data_dir)  # fmt: skip
    rows = [json.loads(line) for line in many.stdout.splitlines()]
    assert [r["query_id"] for r in rows] == ["1", "2"] and all(len(r["hits"]) == 2 for r in rows)
    # query vectors made with other settings are refused; so is an existing index
    other = bundled.extract([articles[0]["title"]], layers="all", pooling="cls")
    with pytest.raises(Exception, match="pooling 'cls'"):
        index.search(other)
    assert_one_line_error(run_cli("index", "docs.npy", "-o", "docs.index", cwd=data_dir), "exists")
    (data_dir / "not-an-index").mkdir(exist_ok=True)
    assert_one_line_error(
        run_cli("index", "docs.npy", "-o", "not-an-index", "--overwrite", cwd=data_dir),
        "is not a bertlayers index",
    )
    assert_one_line_error(
        run_cli("search", "bbc.jsonl", "x", cwd=data_dir), "not a bertlayers index"
    )
