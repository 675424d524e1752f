"""`bertlayers serve` gives what the library gives: a real uvicorn server on loopback in a
subprocess (the session's `server` fixture, conftest.py), driven by httpx, the official
`openai` client and `bertlayers.Client`; its embeddings of every level, layer choice and
encoding, and its attention maps, against the library in this process, the reference, and
sentence-transformers. What it refuses, and how it holds up under load: test_serve_admission.py."""

from __future__ import annotations

import base64
import io
import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bertlayers.core.encoder import bundled_model_path
from serving import KEY, TOLERANCE, embed, metric, sample_texts

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def texts(review_texts) -> list[str]:
    """Shipped reviews of mixed lengths, an empty text and one over the model's 512 tokens
    (788)."""
    return sample_texts(review_texts)


# ---------------------------------------------------------------- results equal the library's


def test_sentence_vectors_equal_the_library_and_the_reference_in_every_encoding(
    http, bundled, bundled_reference, texts
):
    expected = bundled.extract(texts, layers="all")
    got = embed(http, texts=texts, layers="all")
    assert got["shape"] == [len(texts), 7, 384] and got["layers"] == list(range(7))
    vectors = np.asarray(got["embeddings"], dtype=np.float32)
    assert np.abs(vectors - expected.embeddings).max() <= TOLERANCE
    assert [t["n_tokens"] for t in got["texts"]] == expected.n_tokens.tolist()
    assert [t["truncated"] for t in got["texts"]] == [False] * 11 + [True]
    assert got["usage"]["prompt_tokens"] == int(expected.n_tokens.sum())
    for i in (0, 10):  # a plain text and the empty one, against the model run alone
        reference = bundled_reference.pooled(texts[i], "mean", max_length=512)
        assert np.abs(vectors[i] - reference).max() <= TOLERANCE

    b64 = embed(http, texts=texts, layers="all", encoding="base64", dtype="float16")
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
    got = embed(http, texts=texts[:4] + texts[-1:], level="token", layers="-2:")
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
    got = embed(http, words=words, level="word", layers=-1, word_pooling="mean")
    expected = bundled.extract_words(words, layers=-1, word_pooling="mean")
    for i in range(2):
        assert got["texts"][i]["words"] == words[i]
        assert np.abs(np.asarray(got["embeddings"][i]) - expected[i].vectors).max() <= TOLERANCE

    questions, answers = texts[:3], texts[3:6]
    got = embed(http, texts=questions, pairs=answers, layers=-1, pooling="cls")
    expected = bundled.extract(questions, answers, layers=-1, pooling="cls")
    assert np.abs(np.asarray(got["embeddings"]) - expected.embeddings).max() <= TOLERANCE

    got = embed(http, texts=texts[-1:], long="split", layers="all", combine="mean")
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
        return n, mine, embed(http, texts=mine, **options)

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
    before = metric(metrics_before, "bertlayers_batch_texts_count")
    calls = metric(http.get("/metrics").text, "bertlayers_batch_texts_count") - before
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
        return embed(http, **body, **common)

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


# ---------------------------------------------------------------- the attention endpoint


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
