"""What `bertlayers serve` refuses and how it holds up: /v1/info, health, readiness, metrics
and the API key; limits and bad input as one-line 4xx answers naming the problem; the OpenAPI
document (committed, and fuzzed with schemathesis); a full queue (429, the client retrying),
deadlines and abandoned requests, a graceful drain on SIGTERM, bad `serve` options, and a
client with no server. Real servers on loopback: the session's `server` (conftest.py) and a
`tight` one with a small queue, to fill. What it computes: test_serve.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving import KEY, TOLERANCE, Server, api_error, embed, free_port, metric, sample_texts

pytestmark = pytest.mark.serve

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def texts(review_texts) -> list[str]:
    """Shipped reviews of mixed lengths, an empty text and one over the model's 512 tokens
    (788)."""
    return sample_texts(review_texts)


# ---------------------------------------------------------------- info, auth, limits


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
        api_error(response, 401, "API key")
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
    api_error(http.post("/v1/embed", json={"texts": ["a"] * 65}), 413, "65 texts", "64")
    api_error(http.post("/v1/embed", json={"texts": ["a" * 20001]}), 413, "20001 characters")
    api_error(http.post("/v1/embed", content=b"x" * 400001), 413, "400000 bytes")
    big = {"texts": [texts[-1]] * 4, "level": "token", "layers": "all"}  # 4x 788 tokens x 7
    api_error(http.post("/v1/embed", json=big), 413, "over the limit of 20000000")
    assert (
        api_error(http.post("/v1/embed", json={"texts": []}), 422, "no texts")["param"] == "texts"
    )
    error = api_error(http.post("/v1/embed", json={"texts": ["a"], "pooling": "avg"}), 422)
    assert error["param"] == "pooling" and "pooling" in error["message"]
    api_error(http.post("/v1/embed", json={"texts": ["a"], "layers": 9}), 422, "layer 9")
    api_error(http.post("/v1/embed", json={"texts": ["a"], "colour": 1}), 422, "colour")
    json_type = {"Content-Type": "application/json"}
    api_error(http.post("/v1/embed", content=b"{nope", headers=json_type), 422, "not valid JSON")
    api_error(http.post("/v1/embed", content=b"[1]", headers=json_type), 422, "JSON object")
    api_error(http.post("/v1/embed", json={"texts": [texts[-1]], "long": "error"}), 422, "tokens")
    api_error(http.post("/v1/embed", json={"texts": ["a", "b"], "pairs": ["c"]}), 422, "1 pairs")
    api_error(http.get("/nowhere"), 404)
    empty = embed(http, texts=[""], layers=-1)  # an empty text is embedded, as the library does
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
    api_error(too_big, 413, "over the queue's limit of 6000")


def test_expired_and_abandoned_requests_are_dropped_before_they_are_computed(tight, heavy):
    busy = {**heavy, "texts": heavy["texts"] * 6}  # a few seconds of work
    with httpx.Client(base_url=tight.url, timeout=120) as client, ThreadPoolExecutor(4) as pool:
        first = pool.submit(client.post, "/v1/embed", json=busy)
        time.sleep(0.2)
        asked = time.monotonic()
        late = client.post("/v1/embed", json={"texts": ["quick"], "timeout": 0.05})
        api_error(late, 408, "deadline")
        assert time.monotonic() - asked < 1.0  # answered at its deadline, not when computed
        with pytest.raises(httpx.ReadTimeout):  # the client gives up while the worker is busy
            httpx.post(f"{tight.url}/v1/embed", json=heavy, timeout=0.3)
        assert first.result().status_code == 200
        time.sleep(0.5)
        metrics = client.get("/metrics").text
        after = embed(client, texts=["the worker lives on"], layers=-1)  # and serves again
        assert after["shape"] == [1, 1, 384]
    assert metric(metrics, 'bertlayers_rejected_requests_total{reason="deadline"}') >= 1
    assert metric(metrics, 'bertlayers_rejected_requests_total{reason="disconnected"}') >= 1


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
        return metric(text, name)
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

    port = free_port()  # nothing listens on it
    started = time.perf_counter()
    with Client(f"http://127.0.0.1:{port}") as client, pytest.raises(ServerError) as err:
        client.info()
    assert "cannot reach" in str(err.value) and str(port) in str(err.value)
    assert time.perf_counter() - started < 5  # two quick retries, not eight with back-off
