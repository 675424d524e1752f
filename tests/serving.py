"""The harness the `bertlayers serve` tests share: a real server started in a subprocess on a
free loopback port (`Server`), its API key, and helpers that check an answer (`embed`,
`api_error`) or read a value off `/metrics`. Not a test module: the `server` and `http`
fixtures built on it live in conftest.py."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

KEY = "test-key-1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
TOLERANCE = 1e-4


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m bertlayers serve` on a free loopback port, stopped (and reaped) at the end."""

    def __init__(self, *options: str) -> None:
        self.port = free_port()
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


SERVER_OPTIONS = (
    "--api-key", KEY, "--max-texts", "64", "--max-chars", "20000",
    "--max-body-bytes", "400000", "--max-output-bytes", "20000000",
)  # fmt: skip
"""The options of the shared `server` fixture (conftest.py): a key and small limits."""


def sample_texts(review_texts: list[str]) -> list[str]:
    """Shipped reviews of mixed lengths, an empty text and one over the model's 512 tokens
    (788)."""
    long_text = " ".join(review_texts[:40])
    return [*review_texts[:10], "", long_text]


def embed(http, **body) -> dict:
    """The JSON answer of a `/v1/embed` request that must succeed."""
    response = http.post("/v1/embed", json=body)
    assert response.status_code == 200, response.text[:500]
    return response.json()


def api_error(response, status: int, *words: str) -> dict:
    """The error of an answer that must be refused with `status`: the OpenAI error shape, one
    line, no traceback, naming each of `words`."""
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "\n" not in error["message"] and "Traceback" not in error["message"]
    for word in words:
        assert word in error["message"], error["message"]
    return error


def metric(text: str, name: str) -> float:
    """The value of `name` (with its labels, if any) in a `/metrics` page."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")
