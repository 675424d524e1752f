"""`bertlayers serve` as users run it: a real uvicorn server on loopback in a subprocess,
driven by httpx, the official `openai` client and `bertlayers.Client`; results against the
library in this process, the reference, and sentence-transformers."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from bertlayers.core.encoder import bundled_model_path

pytestmark = pytest.mark.serve

KEY = "test-key-1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
TOLERANCE = 1e-4
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m bertlayers serve` on a free loopback port, stopped (and reaped) at the end."""

    def __init__(self, *options: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        self.log = io.BytesIO()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bertlayers", "serve", "--port", str(self.port), *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                ready = httpx.get(f"{self.url}/ready", headers=AUTH, timeout=2)
                if ready.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become ready in 120 s")

    def _drain(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.log.write(line)

    def output(self) -> str:
        return self.log.getvalue().decode(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def server():
    s = Server(
        "--api-key",
        KEY,
        "--max-texts",
        "64",
        "--max-chars",
        "20000",
        "--max-body-bytes",
        "400000",
        "--max-output-bytes",
        "20000000",
    )
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def texts(review_texts) -> list[str]:
    """Shipped reviews of mixed lengths, an empty text and one over the model's 512 tokens
    (788)."""
    long_text = " ".join(review_texts[:40])
    return [*review_texts[:10], "", long_text]


def _embed(http, **body) -> dict:
    response = http.post("/v1/embed", json=body)
    assert response.status_code == 200, response.text[:500]
    return response.json()


def _error(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "\n" not in error["message"] and "Traceback" not in error["message"]
    for word in words:
        assert word in error["message"], error["message"]
    return error


# ---------------------------------------------------------------- results equal the library's


def test_sentence_vectors_equal_the_library_and_the_reference_in_every_encoding(
    http, bundled, bundled_reference, texts
):
    expected = bundled.extract(texts, layers="all")
    got = _embed(http, texts=texts, layers="all")
    assert got["shape"] == [len(texts), 7, 384] and got["layers"] == list(range(7))
    vectors = np.asarray(got["embeddings"], dtype=np.float32)
    assert np.abs(vectors - expected.embeddings).max() <= TOLERANCE
    assert [t["n_tokens"] for t in got["texts"]] == expected.n_tokens.tolist()
    assert [t["truncated"] for t in got["texts"]] == [False] * 11 + [True]
    assert got["usage"]["prompt_tokens"] == int(expected.n_tokens.sum())
    for i in (0, 10):  # a plain text and the empty one, against the model run alone
        reference = bundled_reference.pooled(texts[i], "mean", max_length=512)
        assert np.abs(vectors[i] - reference).max() <= TOLERANCE

    b64 = _embed(http, texts=texts, layers="all", encoding="base64", dtype="float16")
    raw = np.frombuffer(base64.b64decode(b64["embeddings"]), dtype="<f2").reshape(b64["shape"])
    assert np.abs(raw.astype(np.float32) - expected.embeddings).max() <= 2e-3

    binary = {"Accept": "application/x-npy"}
    npy = http.post("/v1/embed", json={"texts": texts, "layers": "0,-1"}, headers=binary)
    assert npy.headers["content-type"] == "application/x-npy"
    array = np.load(io.BytesIO(npy.content))
    assert np.abs(array - expected.embeddings[:, [0, 6]]).max() <= TOLERANCE
    assert npy.headers["x-bertlayers-layers"] == "0,6"


def test_token_word_pair_and_split_requests_equal_the_library(http, bundled, texts):
    tokens = bundled.extract_tokens(texts[:4] + texts[-1:], layers="-2:")
    got = _embed(http, texts=texts[:4] + texts[-1:], level="token", layers="-2:")
    assert got["offsets"] == tokens.offsets.tolist()
    for i, text_vectors in enumerate(got["embeddings"]):
        assert np.abs(np.asarray(text_vectors) - tokens[i].vectors).max() <= TOLERANCE
        assert got["texts"][i]["tokens"] == tokens[i].items
        assert got["texts"][i]["spans"] == tokens[i].spans.tolist()
    assert got["texts"][-1]["windows"] > 1 and not got["texts"][-1]["truncated"]

    npz = http.post(
        "/v1/embed",
        json={"texts": texts[:4], "level": "token", "layers": 3},
        headers={"Accept": "application/x-npz"},
    )
    with np.load(io.BytesIO(npz.content)) as archive:
        expected = bundled.extract_tokens(texts[:4], layers=3)
        assert np.abs(archive["embeddings"] - expected.vectors).max() <= TOLERANCE
        assert archive["offsets"].tolist() == expected.offsets.tolist()
        assert archive["items"].tolist() == expected.items

    words = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
    got = _embed(http, words=words, level="word", layers=-1, word_pooling="mean")
    expected = bundled.extract_words(words, layers=-1, word_pooling="mean")
    for i in range(2):
        assert got["texts"][i]["words"] == words[i]
        assert np.abs(np.asarray(got["embeddings"][i]) - expected[i].vectors).max() <= TOLERANCE

    questions, answers = texts[:3], texts[3:6]
    got = _embed(http, texts=questions, pairs=answers, layers=-1, pooling="cls")
    expected = bundled.extract(questions, answers, layers=-1, pooling="cls")
    assert np.abs(np.asarray(got["embeddings"]) - expected.embeddings).max() <= TOLERANCE

    got = _embed(http, texts=texts[-1:], long="split", layers="all", combine="mean")
    expected = bundled.extract(texts[-1:], long="split", layers="all", combine="mean")
    assert np.abs(np.asarray(got["embeddings"]) - expected.embeddings).max() <= TOLERANCE


def test_concurrent_requests_with_different_options_each_get_what_they_get_alone(
    server, http, bundled, texts
):
    """Requests of every kind at once: batched together, each still equals the library."""
    asks = [
        dict(layers="all"),
        dict(layers=2, pooling="cls"),
        dict(layers="-3:", combine="mean", pooling="max"),
        dict(layers="1,4", combine="concat", include_special=True),
        dict(layers=-1, normalize=True),
        dict(level="token", layers="0,-1"),
        dict(level="word", layers=3),
    ] * 3

    def one(n: int):
        options = asks[n]
        mine = texts[n % 5 : n % 5 + 6]
        return n, mine, _embed(http, texts=mine, **options)

    metrics_before = http.get("/metrics").text
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(len(asks))))
    for n, mine, got in answers:
        options = dict(asks[n])
        level = options.pop("level", "sentence")
        normalize = options.pop("normalize", False)
        if level == "sentence":
            expected = bundled.extract(mine, **options).embeddings
            if normalize:
                expected = expected / np.linalg.norm(expected, axis=-1, keepdims=True)
            assert np.abs(np.asarray(got["embeddings"]) - expected).max() <= TOLERANCE
        else:
            method = bundled.extract_tokens if level == "token" else bundled.extract_words
            expected = method(mine, **options)
            for i, vectors in enumerate(got["embeddings"]):
                assert np.abs(np.asarray(vectors) - expected[i].vectors).max() <= TOLERANCE
    before = _metric(metrics_before, "bertlayers_batch_texts_count")
    calls = _metric(http.get("/metrics").text, "bertlayers_batch_texts_count") - before
    assert calls < len(asks)  # embed calls held several requests each


def _vectors(answer: dict) -> list[np.ndarray]:
    """Each text's vectors from a base64 float32 answer: (K, H) per text at sentence level,
    (T_i, K, H) per text at token and word level."""
    flat = np.frombuffer(base64.b64decode(answer["embeddings"]), "<f4").reshape(answer["shape"])
    if answer["offsets"] is None:
        return list(flat)
    return [flat[a:b] for a, b in itertools.pairwise(answer["offsets"])]


def test_a_burst_of_every_kind_of_request_equals_the_reference(
    http, bundled_reference, review_texts
):
    """139 texts in 33 requests of every kind, sent at once from 10 threads: plain, empty and
    blank, truncated, in windows, pairs, pre-split words, token level. Each text's vectors
    equal the reference (the text alone, unpadded, float32), however the server batched it."""
    import corpus

    reviews, ref = review_texts, bundled_reference
    long_text = " ".join(reviews[:40])  # 788 wordpieces
    sentences = [[w for w, _ in s] for s in corpus.tagged_sentences()]
    common = {"encoding": "base64", "dtype": "float32"}

    def plain(i):
        mine = reviews[40 + 5 * i : 45 + 5 * i]
        return {"texts": mine, "layers": "all"}, [ref.pooled(t, "mean") for t in mine]

    def empty(i):
        mine = ["", "   ", reviews[80 + i], "\t", ""]
        return {"texts": mine, "layers": "all", "pooling": "max"}, [
            ref.pooled(t, "max") for t in mine
        ]

    def truncated(i):
        mine = [long_text, reviews[90 + i], " ".join(reviews[100 + 10 * i : 130 + 10 * i])]
        expected = [ref.pooled(t, "cls", max_length=512) for t in mine]
        return {"texts": mine, "layers": "all", "pooling": "cls"}, expected

    def windowed(i):
        pooling = ["mean", "max", "first", "last", "cls"][i]
        mine = [long_text, reviews[150 + i], ""]
        expected = [ref.windowed(t, 512)[0][pooling] for t in mine]
        return {"texts": mine, "layers": "all", "long": "split", "pooling": pooling}, expected

    def pairs(i):
        first, second = reviews[160 + 4 * i : 164 + 4 * i], reviews[200 + 4 * i : 204 + 4 * i]
        expected = [ref.pooled(a, "mean", pair=b) for a, b in zip(first, second, strict=True)]
        return {"texts": first, "pairs": second, "layers": "all"}, expected

    def words(i):
        mine = sentences[5 * i : 5 * i + 5]
        mode = ["first", "mean", "last", "max", "mean"][i]
        expected = [ref.words(words=w)[mode][:, [0, 6]] for w in mine]
        body = {"words": mine, "level": "word", "word_pooling": mode, "layers": "0,-1"}
        return body, expected

    def tokens(i):
        mine = ["", *reviews[240 + 3 * i : 243 + 3 * i]]
        expected = []
        for text in mine:
            states, special = ref.hidden(text)
            expected.append(states[[0, 6]][:, ~special].transpose(1, 0, 2))  # (T, K, H)
        return {"texts": mine, "level": "token", "layers": "0,-1"}, expected

    kinds = [plain, empty, truncated, windowed, pairs, words, tokens]
    asks = [kind(i) for kind in kinds for i in range(5 if kind is not truncated else 3)]
    assert len(asks) == 33 and sum(len(e) for _, e in asks) == 139

    def send(body: dict) -> dict:
        return _embed(http, **body, **common)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(send, [body for body, _ in asks]))
    for (body, expected), answer in zip(asks, answers, strict=True):
        got = _vectors(answer)
        assert len(got) == len(expected)
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert g.shape == e.shape, (body, i)
            assert np.abs(g - e).max(initial=0) <= TOLERANCE, (body.get("long"), i)
        if body.get("long") == "split":
            assert answer["texts"][0]["windows"] == 2 and not answer["texts"][0]["truncated"]
        if "pooling" in body and body["pooling"] == "cls" and "long" not in body:
            assert answer["texts"][0]["truncated"]


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


# ---------------------------------------------------------------- the OpenAI endpoint


def test_the_openai_client_gets_sentence_transformers_vectors_and_other_layers(
    server, bundled, texts
):
    import openai
    from sentence_transformers import SentenceTransformer

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    model = "sentence-transformers/all-MiniLM-L6-v2"
    answer = client.embeddings.create(model=model, input=texts)  # base64 on the wire
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    st = SentenceTransformer(str(bundled_model_path()), device="cpu")
    expected = st.encode(texts, convert_to_numpy=True, batch_size=4)
    cosine = (got * expected).sum(1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() >= 0.99999
    assert answer.usage.prompt_tokens > 0 and len(answer.data) == len(texts)

    floats = client.embeddings.create(model=model, input=texts[0], encoding_format="float")
    assert np.abs(np.asarray(floats.data[0].embedding) - got[0]).max() <= TOLERANCE

    layer4 = client.embeddings.create(model=model, input=texts[:3], extra_body={"layers": 4})
    lib = bundled.extract(texts[:3], layers=4, include_special=True, max_length=256)
    lib = lib.embeddings[:, 0] / np.linalg.norm(lib.embeddings[:, 0], axis=-1, keepdims=True)
    assert np.abs(np.array([d.embedding for d in layer4.data]) - lib).max() <= TOLERANCE

    short = client.embeddings.create(model=model, input=texts[:2], dimensions=64)
    assert len(short.data[0].embedding) == 64

    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.UnprocessableEntityError, match="choose one layer"):
        client.embeddings.create(model=model, input="x", extra_body={"layers": "all"})
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong").embeddings.create(
            model=model, input="x"
        )


# ---------------------------------------------------------------- info, auth, limits


def test_attention_maps_equal_the_library_in_every_encoding(http, bundled, texts):
    """`/v1/attention` answers what `Extractor.attentions` gives (float JSON, base64, .npz),
    refuses layer 0 and a text over the limit with 422, and maps over the output limit
    (T² per head and layer) with 413 naming it."""
    body = {"texts": texts[:4], "layers": "-2:", "heads": "0,5", "level": "word"}
    expected = bundled.attentions(texts[:4], layers="-2:", heads="0,5", level="word")
    got = http.post("/v1/attention", json=body)
    assert got.status_code == 200, got.text
    data = got.json()
    assert data["layers"] == [5, 6] and data["heads"] == [0, 5] and data["kind"] == "attention"
    for text, maps in zip(data["texts"], expected, strict=True):
        assert text["tokens"] == maps.items and text["shape"] == list(maps.maps.shape)
        assert np.abs(np.asarray(text["maps"], np.float32) - maps.maps).max() <= 1e-6
    packed = http.post("/v1/attention", json={**body, "encoding": "base64", "dtype": "float16"})
    first = packed.json()["texts"][0]
    raw = np.frombuffer(base64.b64decode(first["maps"]), "<f2").reshape(first["shape"])
    assert np.abs(raw.astype(np.float32) - expected[0].maps).max() <= 1e-3
    binary = http.post("/v1/attention", json=body, headers={"Accept": "application/x-npz"})
    with np.load(io.BytesIO(binary.content)) as archive:
        offsets, lengths = archive["offsets"], archive["lengths"]
        for i, maps in enumerate(expected):
            flat = archive["maps"][offsets[i] : offsets[i + 1]]
            assert lengths[i] == maps.maps.shape[-1]
            np.testing.assert_allclose(flat.reshape(maps.maps.shape), maps.maps, atol=1e-6)
    zero = http.post("/v1/attention", json={"texts": ["x"], "layers": 0})
    assert zero.status_code == 422 and "layer 0" in zero.json()["error"]["message"]
    assert zero.json()["error"]["param"] == "layers"
    long = http.post("/v1/attention", json={"texts": [texts[-1]]})
    assert long.status_code == 422 and "'long': 'truncate'" in long.json()["error"]["message"]
    huge = http.post("/v1/attention", json={"texts": [texts[-1]], "long": "truncate"})
    assert huge.status_code == 413 and "--max-output-bytes" in huge.json()["error"]["message"]


def test_info_health_ready_metrics_and_auth(server, http):
    info = http.get("/v1/info").json()
    assert info["num_layers"] == 6 and info["hidden_size"] == 384 and info["max_length"] == 512
    assert info["fingerprint"].startswith("sha256:")
    assert info["sentence_pipeline"]["normalize"] is True
    assert info["limits"]["max_texts"] == 64
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}  # open, as /ready
    assert httpx.get(f"{server.url}/ready").json() == {"ready": True, "status": "ready"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
        response = httpx.post(f"{server.url}/v1/embed", json={"texts": ["a"]}, headers=headers)
        _error(response, 401, "API key")
        assert response.headers["www-authenticate"] == "Bearer"
    metrics = http.get("/metrics").text
    for name in (
        "bertlayers_requests_total",
        "bertlayers_queue_tokens",
        "bertlayers_batch_tokens_bucket",
        "bertlayers_inference_seconds_bucket",
        "bertlayers_queue_seconds_bucket",
        "bertlayers_request_seconds_bucket",
        "bertlayers_tokens_per_second",
        'bertlayers_rejected_requests_total{reason="auth"}',
    ):
        assert name in metrics


def test_limits_and_bad_input_are_one_line_4xx_naming_the_problem(http, texts):
    _error(http.post("/v1/embed", json={"texts": ["a"] * 65}), 413, "65 texts", "64")
    _error(http.post("/v1/embed", json={"texts": ["a" * 20001]}), 413, "20001 characters")
    _error(http.post("/v1/embed", content=b"x" * 400001), 413, "400000 bytes")
    big = {"texts": [texts[-1]] * 4, "level": "token", "layers": "all"}  # 4x 788 tokens x 7
    _error(http.post("/v1/embed", json=big), 413, "over the limit of 20000000")
    assert _error(http.post("/v1/embed", json={"texts": []}), 422, "no texts")["param"] == "texts"
    error = _error(http.post("/v1/embed", json={"texts": ["a"], "pooling": "avg"}), 422)
    assert error["param"] == "pooling" and "pooling" in error["message"]
    _error(http.post("/v1/embed", json={"texts": ["a"], "layers": 9}), 422, "layer 9")
    _error(http.post("/v1/embed", json={"texts": ["a"], "colour": 1}), 422, "colour")
    json_type = {"Content-Type": "application/json"}
    _error(http.post("/v1/embed", content=b"{nope", headers=json_type), 422, "not valid JSON")
    _error(http.post("/v1/embed", content=b"[1]", headers=json_type), 422, "JSON object")
    _error(http.post("/v1/embed", json={"texts": [texts[-1]], "long": "error"}), 422, "tokens")
    _error(http.post("/v1/embed", json={"texts": ["a", "b"], "pairs": ["c"]}), 422, "1 pairs")
    _error(http.get("/nowhere"), 404)
    empty = _embed(http, texts=[""], layers=-1)  # an empty text is embedded, as the library does
    assert empty["shape"] == [1, 1, 384] and empty["texts"][0]["n_tokens"] == 2


def test_the_committed_openapi_document_is_the_apps(bundled):
    from bertlayers.service import create_app
    from bertlayers.service.cli import openapi_text

    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed.strip() == openapi_text(create_app(bundled.engine)), (
        "docs/openapi.json is stale: bertlayers serve --openapi > docs/openapi.json"
    )


def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(server, tmp_path):
    """A bounded schemathesis run against /openapi.json (negative and positive data)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {KEY}",
            "--max-examples",
            "6",
            "--max-time",
            "45",
            "--generation-deterministic",
            "--request-timeout",
            "30",
            "--exclude-checks",
            "positive_data_acceptance",  # layers out of range are 422: the schema cannot know L
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,  # its example database goes there, not into the repository
    )
    assert result.returncode == 0, result.stdout[-4000:]


# ---------------------------------------------------------------- the Python client, --server


def test_the_client_returns_the_librarys_results(server, bundled, texts):
    from bertlayers import Client

    with Client(server.url, api_key=KEY, batch_size=5, concurrency=3) as client:
        got = client.extract(texts, layers="all")
        expected = bundled.extract(texts, layers="all")
        assert np.abs(got.embeddings - expected.embeddings).max() <= TOLERANCE
        assert got.ids == expected.ids and got.truncated.tolist() == expected.truncated.tolist()
        assert np.abs(got.layer(-1) - expected.layer(-1)).max() <= TOLERANCE
        tokens = client.extract_tokens(texts[:6], layers=2)
        expected_tokens = bundled.extract_tokens(texts[:6], layers=2)
        assert tokens.items == expected_tokens.items
        assert tokens.offsets.tolist() == expected_tokens.offsets.tolist()
        assert np.abs(tokens.vectors - expected_tokens.vectors).max() <= TOLERANCE
        array = client.embed(texts[:3], layers=-1, pooling="cls")
        assert array.shape == (3, 1, 384)
    from bertlayers.client import ServerError

    with Client(server.url, api_key="wrong", retries=0) as bad, pytest.raises(ServerError):
        bad.embed(["x"])


def test_extract_with_server_writes_the_store_the_local_run_writes(server, tmp_path, texts):
    import bertlayers
    from test_cli import run_cli

    source = tmp_path / "in.txt"
    source.write_text("\n".join(t.replace("\n", " ") or "x" for t in texts) + "\n")
    remote, local = tmp_path / "remote.npy", tmp_path / "local.npy"
    args = ["extract", str(source), "--layers", "0,-1", "--quiet"]
    run = run_cli(*args, "-o", str(remote), "--server", server.url, "--api-key", KEY)
    assert run.returncode == 0, run.stderr
    assert run_cli(*args, "-o", str(local)).returncode == 0
    a, b = bertlayers.load(remote), bertlayers.load(local)
    assert np.abs(a.embeddings - b.embeddings).max() <= TOLERANCE and a.ids == b.ids
    provenance = json.loads(remote.with_suffix(".json").read_text())
    assert provenance["layers"] == [0, 6] and provenance["backend"]["server"] == server.url
    tokens = tmp_path / "tokens.npz"
    run = run_cli(
        "extract", str(source), "-o", str(tokens), "--level", "token", "--layers", "-1",
        "--quiet", "--server", server.url, "--api-key", KEY,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (
        bertlayers.load(tokens).items
        == bertlayers.Extractor()
        .extract_tokens([line for line in source.read_text().splitlines()], layers=-1)
        .items
    )
    bad = run_cli(*args, "-o", str(tmp_path / "x.npy"), "--server", server.url)  # no key
    assert bad.returncode == 1 and "API key" in bad.stderr and "Traceback" not in bad.stderr


def test_the_client_and_extract_with_server_in_use_load_no_torch(server, tmp_path):
    """`Client`, `RemoteEngine` and `bertlayers extract --server` hold a few numbers of the
    model and the server's vectors: a process using them never imports torch."""
    source = tmp_path / "in.txt"
    source.write_text("one text\nanother one\n", encoding="utf-8")
    code = (
        "import sys\n"
        "from bertlayers import Client\n"
        "from bertlayers.client import RemoteEngine\n"
        "from bertlayers.cli import main\n"
        f"client = Client({server.url!r}, api_key={KEY!r})\n"
        "assert client.extract(['a text'], layers='0,-1').embeddings.shape == (1, 2, 384)\n"
        "assert client.extract_tokens(['a text'], layers=-1).vectors.shape[1:] == (1, 384)\n"
        "assert RemoteEngine(client).plan(__import__('bertlayers').ExtractConfig()).layers\n"
        f"code = main(['extract', {str(source)!r}, '-o', {str(tmp_path / 'o.npy')!r}, '-q', "
        f"'--server', {server.url!r}, '--api-key', {KEY!r}])\n"
        "print(code, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.stdout.split() == ["0", "False", "False"], out.stdout + out.stderr
    assert (tmp_path / "o.npy").exists()


# ---------------------------------------------------------------- back-pressure, deadlines


@pytest.fixture(scope="module")
def tight():
    """A server with a small queue, to fill."""
    s = Server("--max-queue-tokens", "6000", "--batch-tokens", "512")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def heavy(review_texts) -> dict:
    """A request of ~950 tokens at token level, all layers (two texts of 469 tokens: one
    window each): a second or so of work."""
    return {"texts": [" ".join(review_texts[:23])] * 2, "level": "token", "layers": "all"}


def test_a_full_queue_answers_429_with_retry_after_and_nothing_else_fails(tight, heavy):
    body = heavy
    with httpx.Client(base_url=tight.url, timeout=120) as client, ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/embed", json=body), range(12)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2, statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1 and "queue is full" in refused.text
    too_big = httpx.post(f"{tight.url}/v1/embed", json={**body, "texts": body["texts"] * 7})
    _error(too_big, 413, "over the queue's limit of 6000")


def test_expired_and_abandoned_requests_are_dropped_before_they_are_computed(tight, heavy):
    busy = {**heavy, "texts": heavy["texts"] * 6}  # a few seconds of work
    with httpx.Client(base_url=tight.url, timeout=120) as client, ThreadPoolExecutor(4) as pool:
        first = pool.submit(client.post, "/v1/embed", json=busy)
        time.sleep(0.2)
        asked = time.monotonic()
        late = client.post("/v1/embed", json={"texts": ["quick"], "timeout": 0.05})
        _error(late, 408, "deadline")
        assert time.monotonic() - asked < 1.0  # answered at its deadline, not when computed
        with pytest.raises(httpx.ReadTimeout):  # the client gives up while the worker is busy
            httpx.post(f"{tight.url}/v1/embed", json=heavy, timeout=0.3)
        assert first.result().status_code == 200
        time.sleep(0.5)
        metrics = client.get("/metrics").text
        after = _embed(client, texts=["the worker lives on"], layers=-1)  # and serves again
        assert after["shape"] == [1, 1, 384]
    assert _metric(metrics, 'bertlayers_rejected_requests_total{reason="deadline"}') >= 1
    assert _metric(metrics, 'bertlayers_rejected_requests_total{reason="disconnected"}') >= 1


def test_the_client_retries_a_full_queue_until_it_is_served(tight, heavy, bundled, texts):
    from bertlayers import Client

    busy = {**heavy, "texts": heavy["texts"] * 6}  # the worker is busy for a few seconds
    long_texts = [texts[-1]] * 16  # 512 tokens each once truncated: 2,048 per request
    with httpx.Client(base_url=tight.url, timeout=120) as http, ThreadPoolExecutor(1) as pool:
        refused = _counter(http.get("/metrics").text, QUEUE_FULL)
        first = pool.submit(http.post, "/v1/embed", json=busy)
        time.sleep(0.3)
        with Client(tight.url, batch_size=4, concurrency=4) as client:
            got = client.extract(long_texts, layers=-1)
        assert first.result().status_code == 200
        after = _counter(http.get("/metrics").text, QUEUE_FULL)
    assert after > refused  # the client was refused at least once, and retried
    expected = bundled.extract(long_texts[:1], layers=-1).embeddings
    assert np.abs(got.embeddings - expected).max() <= TOLERANCE


QUEUE_FULL = 'bertlayers_rejected_requests_total{reason="queue_full"}'


def _counter(text: str, name: str) -> float:
    """A counter's value; 0 before its first use (labelled counters appear when used)."""
    try:
        return _metric(text, name)
    except AssertionError:
        return 0.0


def test_sigterm_lets_requests_in_flight_finish_then_exits_0(heavy):
    s = Server()
    body = heavy  # six of them: several seconds of work in flight when the signal comes
    try:
        with httpx.Client(base_url=s.url, timeout=120) as client, ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(client.post, "/v1/embed", json=body) for _ in range(6)]
            time.sleep(0.3)
            s.process.send_signal(signal.SIGTERM)
            statuses = [f.result().status_code for f in futures]
        assert statuses == [200] * 6
        assert s.process.wait(60) == 0
    finally:
        s.stop()
    assert "Shutting down" in s.output()


def test_bad_serve_options_and_a_bad_model_are_one_line_errors(tmp_path, capsys, monkeypatch):
    from bertlayers.service.cli import main

    for argv, word in ((["--port", "99999"], "0..65535"), (["--bogus"], "--bogus")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and word in err and "serve --help" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--model", str(tmp_path / "no-such-model")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bertlayers serve: error:") and err.count("\n") == 1


def test_client_fails_fast_where_no_server_listens():
    from bertlayers import Client
    from bertlayers.client import ServerError

    port = _free_port()  # nothing listens on it
    started = time.perf_counter()
    with Client(f"http://127.0.0.1:{port}") as client, pytest.raises(ServerError) as err:
        client.info()
    assert "cannot reach" in str(err.value) and str(port) in str(err.value)
    assert time.perf_counter() - started < 5  # two quick retries, not eight with back-off
