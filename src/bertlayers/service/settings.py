"""`ServeSettings`: what a `bertlayers serve` process is allowed to do, and its limits."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServeSettings:
    """Limits and behaviour of the service; every one is a `bertlayers serve` option.

    Sizes are in texts, characters, bytes and tokens. `max_output_bytes` bounds the raw
    vectors of one request (values x 4 bytes in float32): all layers of a 512-token text at
    token level are ~20 MB. `max_queue_tokens` bounds the tokens waiting for the model; past
    it requests get 429 with `Retry-After`.
    """

    api_key: str | None = None
    served_model_name: str | None = None  # the `model` clients send; default: the model's name
    max_wait_ms: float = 0.0  # wait this long for more requests before a batch; 0 = never
    max_queue_tokens: int = 262_144
    round_tokens: int = 4096  # tokens the worker takes per embed call (bench/serve.py: even p99)
    max_round_tokens: int | None = None  # a round grows with the queue up to this (None: fixed)
    max_texts: int = 2048  # texts per request
    max_chars: int = 100_000  # characters per text
    max_body_bytes: int = 32 * 2**20
    max_output_bytes: int = 256 * 2**20
    request_timeout: float = 60.0  # seconds a request may wait before it is computed
    grace_seconds: float = 30.0  # in-flight requests finish within this after SIGTERM
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    batch_tokens: int | None = None  # padded tokens per forward batch; None: the library's
    trim_heap: bool = True  # give freed heap back to the OS when idle (bench/serve.py --soak)

    def limits(self) -> dict:
        """The limits clients may need to know, as `/v1/info` states them."""
        return {
            "max_texts": self.max_texts,
            "max_chars": self.max_chars,
            "max_body_bytes": self.max_body_bytes,
            "max_output_bytes": self.max_output_bytes,
            "max_queue_tokens": self.max_queue_tokens,
            "request_timeout": self.request_timeout,
        }
