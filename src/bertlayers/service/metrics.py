"""Prometheus metrics of one service, in a registry of its own (never the process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """What an operator watches: traffic, queue, batches, latency, throughput, rejections."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "bertlayers_requests",
            "Requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.rejected = Counter(
            "bertlayers_rejected_requests", "Requests rejected, by reason", ["reason"], registry=r
        )
        self.queue_texts = Gauge(
            "bertlayers_queue_texts", "Texts waiting for the model", registry=r
        )
        self.queue_tokens = Gauge(
            "bertlayers_queue_tokens", "Tokens waiting for the model", registry=r
        )
        self.batch_texts = Histogram(
            "bertlayers_batch_texts",
            "Texts per embed call of the worker",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=r,
        )
        self.batch_tokens = Histogram(
            "bertlayers_batch_tokens",
            "Tokens per embed call of the worker",
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536),
            registry=r,
        )
        self.queue_seconds = Histogram(
            "bertlayers_queue_seconds",
            "Time a request waited before its computation",
            buckets=LATENCY,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "bertlayers_inference_seconds",
            "Time of one embed call of the worker",
            buckets=LATENCY,
            registry=r,
        )
        self.request_seconds = Histogram(
            "bertlayers_request_seconds",
            "Time from a request's arrival to its answer",
            ["endpoint"],
            buckets=LATENCY,
            registry=r,
        )
        self.tokens = Counter("bertlayers_tokens", "Tokens embedded", registry=r)
        self.tokens_per_second = Gauge(
            "bertlayers_tokens_per_second", "Tokens/s of the last embed call", registry=r
        )
