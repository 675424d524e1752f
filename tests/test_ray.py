"""The Ray runner on a real local Ray cluster (2 CPUs, shared by the module): the same store
as the local engine at every level, `embed_dataset`, an actor killed mid-job, bad records.

The driver killed and resumed, and a two-node cluster losing a node, are in
`test_ray_cluster.py` (they need clusters of their own)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import ray
import ray.data

import corpus as shipped
from bertlayers import load
from bertlayers.core.config import ExtractConfig
from bertlayers.distributed import ReaderOptions, embed_dataset, extract_to_store
from bertlayers.errors import InputError, OutputError, TruncationWarning
from test_cli import assert_one_line_error, run_cli

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ENGINE = {"model": None, "device": "cpu"}


@pytest.fixture(scope="module")
def cluster():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=300 << 20,
        logging_level="ERROR",
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def write_corpus(path: Path, texts: int = 30) -> Path:
    """Shipped reviews, two whole articles (business/001, 931 wordpieces: truncated at 512;
    business/002, 307) and an empty text, as jsonl with ids."""
    rows = [{"id": f"s{i}", "text": t} for i, t in enumerate(shipped.review_texts()[:texts])]
    for article in shipped.articles()[:2]:
        rows.insert(len(rows) // 2, {"id": article["id"], "text": article["text"]})
    rows.insert(5, {"id": "empty", "text": ""})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("ray") / "corpus.jsonl")


def local_store(corpus: Path, out: Path, *options: str) -> Path:
    result = run_cli(
        "extract", str(corpus), "--id-column", "id", "-o", str(out), "--quiet", *options
    )
    assert result.returncode == 0, result.stderr
    return out


def ray_extract(corpus: Path, out: str, *options: str):
    """`bertlayers extract CORPUS -o OUT --engine ray` in-process, ids from the id column."""
    return run_cli(
        "extract", str(corpus), "--id-column", "id", "-o", out, "--engine", "ray", *options
    )


def vectors_of(result) -> np.ndarray:
    return np.asarray(result.vectors if hasattr(result, "offsets") else result.embeddings)


def assert_same_store(ray_dir: Path, local: Path, atol: float = 1e-4) -> None:
    """Same ids, order, per-text columns, tokens or words and spans; vectors within atol."""
    a, b = load(ray_dir), load(local)
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.n_tokens, b.n_tokens)
    np.testing.assert_array_equal(a.truncated, b.truncated)
    if hasattr(b, "offsets"):
        np.testing.assert_array_equal(a.offsets, b.offsets)
        assert a.items == b.items
        np.testing.assert_array_equal(a.spans, b.spans)
    va, vb = vectors_of(a), vectors_of(b)
    assert va.shape == vb.shape and va.dtype == vb.dtype
    assert np.abs(va - vb).max() <= atol
    # the columns and their types are the local store's
    local_schema = pq.read_schema(
        next(iter(sorted(local.glob("*.parquet")))) if local.is_dir() else local
    )
    shard_schema = pq.read_schema(ray_dir / "part-000000.parquet")
    assert shard_schema.remove_metadata().equals(local_schema.remove_metadata())


@pytest.mark.parametrize(
    "level, options",
    [
        ("sentence", ["--layers", "all"]),
        ("token", ["--layers", "0,-1"]),
        ("word", ["--layers", "-2:", "--word-pooling", "mean"]),
    ],
)
def test_cli_ray_store_equals_the_local_store(cluster, corpus, tmp_path, level, options):
    local = local_store(corpus, tmp_path / "local.parquet", "--level", level, *options)
    result = ray_extract(
        corpus,
        str(tmp_path / "ray"),
        "--actors",
        "2",
        "--shard-size",
        "7",
        "--level",
        level,
        *options,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "Parquet shards" in result.stderr
    shards = sorted((tmp_path / "ray").glob("part-*.parquet"))
    assert len(shards) == 5  # 33 texts in shards of 7
    assert_same_store(tmp_path / "ray", local)
    provenance = load(tmp_path / "ray").provenance
    assert provenance["engine"] == "ray" and provenance["shards"] == 5
    assert provenance["num_texts"] == 33
    assert not (tmp_path / "ray.partial").exists()
    # inspect and convert work on it as on a local store
    inspected = run_cli("inspect", str(tmp_path / "ray"), "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["texts"] == 33
    converted = run_cli("convert", str(tmp_path / "ray"), str(tmp_path / "copy.npz"))
    assert converted.returncode == 0, converted.stderr
    np.testing.assert_array_equal(
        vectors_of(load(tmp_path / "copy.npz")), vectors_of(load(tmp_path / "ray"))
    )


def test_sentence_level_matches_the_one_text_reference(
    cluster, corpus, tmp_path, bundled_reference
):
    """Ray's batched vectors against each text run alone, unpadded, in float32."""
    config = ExtractConfig(layers="all", pooling="mean")
    reader = ReaderOptions(id_column="id")
    with pytest.warns(
        TruncationWarning,
        match=r"1 of 33 texts were longer than 512 tokens and were truncated \(ids: business/001\)",
    ):
        extract_to_store(
            [str(corpus)], tmp_path / "ray", config, ENGINE, reader, actors=2, shard_size=10
        )
    result = load(tmp_path / "ray")
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    assert result.truncated.tolist() == [len(t.split()) > 700 for t in texts]
    assert "" in texts  # the empty text: [CLS] [SEP], pooled over those two
    worst = 0.0
    for i, text in enumerate(texts):
        expected = bundled_reference.pooled(text, "mean", max_length=512)
        worst = max(worst, float(np.abs(result.embeddings[i] - expected).max()))
    assert worst <= 1e-4


def test_embed_dataset_rows_equal_the_local_engine(cluster, corpus, tmp_path):
    """With an index column the embedding is lazy: no actor exists until the rows are read."""
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    ds = ray.data.from_items([{**row, "pos": i} for i, row in enumerate(rows)])
    out = embed_dataset(
        ds,
        text_column="text",
        id_column="id",
        index_column="pos",
        level="token",
        layers=[0, -1],
        actors=2,
        batch_size=8,
    )
    assert isinstance(out, ray.data.Dataset)
    assert _actor_pids("EmbedBatches") == []  # nothing ran yet
    table = out.to_arrow_refs()
    rows = ray.get(table)
    import pyarrow as pa

    got = pa.concat_tables(rows).sort_by([("text_index", "ascending"), ("position", "ascending")])
    local = local_store(corpus, tmp_path / "local.parquet", "--level", "token", "--layers", "0,-1")
    expected = pq.read_table(local)
    assert got.schema.remove_metadata().equals(expected.schema.remove_metadata())
    for column in (
        "text_index",
        "id",
        "position",
        "item",
        "start",
        "end",
        "n_tokens",
        "truncated",
        "windows",
    ):
        assert got.column(column).to_pylist() == expected.column(column).to_pylist(), column
    for layer in ("layer_0", "layer_6"):
        a = np.stack(got.column(layer).to_numpy(zero_copy_only=False))
        b = np.stack(expected.column(layer).to_numpy(zero_copy_only=False))
        assert np.abs(a - b).max() <= 1e-4


def test_embed_dataset_numbers_rows_without_an_index(cluster):
    texts = shipped.review_texts()[:12]
    ds = ray.data.from_items([{"text": t} for t in texts], override_num_blocks=3)
    rows = embed_dataset(ds, layers=-1, actors=1, batch_size=5).take_all()
    rows.sort(key=lambda r: r["text_index"])
    assert [r["text_index"] for r in rows] == list(range(12))
    assert [r["id"] for r in rows] == [str(i) for i in range(12)]
    from bertlayers import Extractor

    local = Extractor(device="cpu").extract(texts, layers=-1)
    got = np.stack([np.asarray(r["layer_6"]) for r in rows])
    assert np.abs(got - local.embeddings[:, 0]).max() <= 1e-4


def _actor_pids(kind: str = "ShardWriter") -> list[int]:
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(kind in part for part in proc.info["cmdline"] or []):
            pids.append(proc.info["pid"])
    return pids


def test_an_actor_killed_mid_job_is_replaced_and_every_text_written_once(cluster, corpus, tmp_path):
    config = ExtractConfig(layers=[0, -1])
    reader = ReaderOptions(id_column="id")
    partial = tmp_path / "ray.partial"
    killed: list[int] = []

    def kill_one_actor_after_the_first_shard() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            if list(partial.glob("part-*.parquet")) and _actor_pids():
                pid = _actor_pids()[0]
                psutil.Process(pid).kill()  # SIGKILL
                killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor_after_the_first_shard)
    killer.start()
    extract_to_store(
        [str(corpus)], tmp_path / "ray", config, ENGINE, reader, actors=2, shard_size=2
    )
    killer.join()
    assert killed, "no actor was killed: the job ended before the first shard"
    result = load(tmp_path / "ray")
    expected = [json.loads(line)["id"] for line in corpus.read_text().splitlines()]
    assert result.ids == expected  # every text once, in input order
    local = local_store(corpus, tmp_path / "local.parquet", "--layers", "0,-1")
    assert_same_store(tmp_path / "ray", local)


def test_bad_records_get_the_local_one_line_errors(cluster, corpus, tmp_path):
    broken = tmp_path / "broken.jsonl"
    lines = corpus.read_text().splitlines()
    lines.insert(9, '{"id": "x", "text": ')
    broken.write_text("\n".join(lines) + "\n")
    result = run_cli(
        "extract", str(broken), "--id-column", "id", "-o", str(tmp_path / "a"), "--engine", "ray"
    )
    assert_one_line_error(result, f"{broken}: line 10 is not valid JSON")
    assert not (tmp_path / "a.partial").exists()
    # found by an actor: a text over the limit with --long error names the file and record
    with pytest.raises(InputError, match=r"corpus\.jsonl: .*record business/00\d has \d+ tokens"):
        extract_to_store(
            [str(corpus)],
            tmp_path / "b",
            ExtractConfig(long="error"),
            ENGINE,
            ReaderOptions(id_column="id"),
            shard_size=40,
        )
    assert not (tmp_path / "b").exists()
    # a model the actors cannot load: its one-line error, not Ray's retries and traceback
    missing = tmp_path / "no-model"
    result = ray_extract(
        corpus,
        str(tmp_path / "c"),
        "--model",
        str(missing),
        "--quiet",
    )
    assert_one_line_error(result, f"unknown model '{missing}'")


def test_ray_option_errors(tmp_path, corpus):
    cases = [
        (["-o", str(tmp_path / "x.npy")], "--engine ray writes a directory of Parquet shards"),
        (["-o", str(tmp_path / "x"), "--server", "http://127.0.0.1:9"], "choose one"),
    ]
    for extra, message in cases:
        result = run_cli("extract", str(corpus), "--engine", "ray", *extra)
        assert_one_line_error(result, message)
    result = run_cli("extract", "-", "--engine", "ray", "-o", str(tmp_path / "y"), stdin="a\n")
    assert_one_line_error(result, "not stdin")


def test_ray_serve_replicas_answer_as_the_local_service(cluster, bundled):
    """`serve --engine ray`'s deployment: 2 replicas behind Ray's HTTP proxy on loopback,
    the same endpoints and results as `bertlayers serve` (the library's Client, the real
    openai client, a 4xx with its JSON body)."""
    import httpx
    import openai
    from ray import serve

    from bertlayers import Client
    from bertlayers.distributed.serve import running_replicas, start
    from bertlayers.service.settings import ServeSettings

    port = _free_port()
    try:
        url = start(
            {"model": None, "device": "cpu"},
            ServeSettings(),
            port=port,
            replicas=2,
            cpus_per_replica=0.5,
        )
        assert url == f"http://127.0.0.1:{port}"
        assert running_replicas() == 2
        texts = shipped.review_texts()[:6]
        got = Client(url).extract(texts, layers=[0, -1], pooling="mean")
        expected = bundled.extract(texts, layers=[0, -1], pooling="mean")
        assert got.ids == expected.ids
        assert np.abs(got.embeddings - expected.embeddings).max() <= 1e-4
        tokens = Client(url).extract_tokens(texts[:2], layers=-1)
        local_tokens = bundled.extract_tokens(texts[:2], layers=-1)
        assert tokens.items == local_tokens.items
        assert np.abs(np.asarray(tokens.vectors) - np.asarray(local_tokens.vectors)).max() <= 1e-4
        answer = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        data = answer.embeddings.create(
            model="sentence-transformers/all-MiniLM-L6-v2", input=texts[:2]
        ).data
        assert len(data) == 2 and len(data[0].embedding) == 384
        bad = httpx.post(f"{url}/v1/embed", json={"texts": ["a"], "layers": [99]}, timeout=30)
        assert bad.status_code == 422 and "layer" in bad.text
        info = httpx.get(f"{url}/v1/info", timeout=30).json()
        assert info["num_layers"] == 6
    finally:
        serve.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_directories_globs_parquet_and_urls_as_inputs(cluster, tmp_path):
    """Several files (txt and Parquet) in a directory, a glob and a file:// URL: text_index
    runs through them in path order and ids are FILE:LINE; `--overwrite` replaces a Ray
    store, and a `.partial` directory that is not a Ray run's is never touched."""
    import pyarrow as pa

    texts = shipped.review_texts()[:9]
    folder = tmp_path / "in"
    (folder / "b").mkdir(parents=True)
    (folder / "a.txt").write_text("".join(t + "\n" for t in texts[:4]), encoding="utf-8")
    pq.write_table(pa.table({"text": texts[4:]}), folder / "b" / "c.parquet")
    (folder / "notes.md").write_text("not an input\n")
    config = ExtractConfig(layers=[-1])
    from bertlayers import Extractor

    expected = Extractor(device="cpu").extract(texts, layers=[-1]).embeddings
    ids = [f"a.txt:{i}" for i in range(1, 5)] + [f"b/c.parquet:{i}" for i in range(1, 6)]
    for source in (str(folder), str(folder / "**" / "*.*t*"), f"file://{folder}"):
        out = tmp_path / "out"
        extract_to_store(
            [source], out, config, ENGINE, ReaderOptions(), shard_size=3, overwrite=True
        )
        result = load(out)
        assert result.ids == ids, source
        assert np.abs(result.embeddings - expected).max() <= 1e-4
        text_index = pq.read_table(out, columns=["text_index"]).column(0).to_pylist()
        assert text_index == list(range(9))
    foreign = tmp_path / "x.partial"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match="is not a Ray run's staging directory"):
        extract_to_store(
            [str(folder)], tmp_path / "x", config, ENGINE, ReaderOptions(), overwrite=True
        )
    assert (foreign / "mine.txt").read_text() == "keep me"


def test_resume_refuses_a_changed_input_and_finishes_an_overwrite(cluster, tmp_path):
    """An interrupted `--overwrite` run over a store resumes into its place; a half-written
    shard left by a killed actor does not reach the store; a changed input is refused."""
    texts = shipped.review_texts()[:8]
    source = tmp_path / "in.txt"
    source.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    config, out = ExtractConfig(layers=[-1]), tmp_path / "out"
    extract_to_store([str(source)], out, config, ENGINE, ReaderOptions(), shard_size=3)
    first = load(out).embeddings
    # the state an interrupted `--overwrite` run leaves: its manifest, one shard, a temporary
    extract_to_store([str(source)], tmp_path / "run", config, ENGINE, ReaderOptions(), shard_size=3)
    partial = tmp_path / "out.partial"
    (tmp_path / "run").rename(partial)
    for name in ("_bertlayers.json", "part-000001.parquet", "part-000002.parquet"):
        (partial / name).unlink()
    manifest = json.loads((partial / "_manifest.json").read_text())
    manifest["request"]["overwrite"] = True
    (partial / "_manifest.json").write_text(json.dumps(manifest))
    (partial / ".part-000001.parquet.dead.tmp").write_bytes(b"half a shard")
    source.write_text("".join(t + "\n" for t in [*texts[:7], "changed"]), encoding="utf-8")
    with pytest.raises(InputError, match=r"cannot resume: the input differs in shard 2 "):
        extract_to_store(
            [str(source)], out, config, ENGINE, ReaderOptions(), shard_size=3, resume=True
        )
    source.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    extract_to_store([str(source)], out, config, ENGINE, ReaderOptions(), shard_size=3, resume=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "_bertlayers.json", "_manifest.json",
        "part-000000.parquet", "part-000001.parquet", "part-000002.parquet",
    ]  # fmt: skip
    assert not partial.exists() and not list(tmp_path.glob(".out.*.old"))
    np.testing.assert_array_equal(load(out).embeddings, first)
