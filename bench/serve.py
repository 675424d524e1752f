"""Serve: `bertlayers serve` under concurrent load on loopback, against infinity on the same
texts and the library's own offline throughput.

What a user runs: real server processes on 127.0.0.1, driven by an asyncio httpx load client
in this process (it shares the 2 cores with the server, as it would on a small box). Texts are
the first N lines of ../shared/data/corpus-fortunes.txt under 300 characters. Each request
carries 1 to 16 texts (seeded). For each server:
- closed loop, 1, 8, 32 and 128 concurrent clients, each sending its next request when the
  last is answered, until the texts run out or a level's time cap passes;
- open loop: requests at a constant arrival rate (70% of the slower server's 32-client
  throughput) for a fixed time, whatever the server does;
- work: last layer, the model's own pipeline (mean, normalized) through the OpenAI endpoint,
  which is what infinity computes; and all 7 layers through /v1/embed (base64), plus JSON
  floats and .npy at 32 clients, to price the encodings.
Reported: texts/s, tokens/s (the model's tokenizer on the texts answered, special tokens in,
the same count for every server), p50/p95/p99 latency, failed requests, the server's RSS.
The library's offline throughput (`Extractor.embed`, same texts) is measured first, in this
process, before any server starts. Every run is bounded in count and time and stops itself.

    python bench/serve.py --out bench/results/serve.json        # ~10 minutes
    python bench/serve.py --smoke                               # seconds, CI
    python bench/serve.py --soak 600 --out bench/results/soak.json  # 10 min at ~70% capacity
    python bench/serve.py --single 800 --out bench/results/serve-single.json  # 1-text requests
Infinity needs its own venv: bench/setup_infinity.sh (skipped, and said so, if absent).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta import run_record

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
INFINITY = Path(os.environ.get("INFINITY_VENV", "/work/bench-venvs/infinity"))
OUR_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SERVER_ARGS: list[str] = []  # more `bertlayers serve` options (--server-arg)


def load_texts(n: int) -> list[str]:
    lines = (DATA / "corpus-fortunes.txt").read_text(encoding="utf-8").splitlines()
    texts = [line.strip() for line in lines if 0 < len(line.strip()) < 300]
    return texts[:n]


def request_sizes(n_texts: int, seed: int = 0, fixed: int | None = None) -> list[int]:
    """1..16 texts per request, seeded (or `fixed` each), covering the corpus."""
    rng = random.Random(seed)
    sizes, total = [], 0
    while total < n_texts:
        size = min(fixed or rng.randint(1, 16), n_texts - total)
        sizes.append(size)
        total += size
    return sizes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- servers


class Process:
    """A server process on loopback, polled until ready, stopped with SIGTERM."""

    def __init__(self, name: str, command: list[str], ready_path: str, port: int, env=None):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(f"/tmp/bench-serve-{name}.log", "wb")  # noqa: SIM115
        start = time.perf_counter()
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited; see /tmp/bench-serve-{name}.log")
            try:
                if httpx.get(self.url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        else:
            self.stop()
            raise RuntimeError(f"{name} not ready in 180 s")
        self.startup_s = time.perf_counter() - start

    def rss_mb(self) -> float:
        proc = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def start_ours() -> Process:
    port = free_port()
    command = [sys.executable, "-m", "bertlayers", "serve", "--port", str(port)]
    command += ["--log-level", "warning", "--max-queue-tokens", "4000000", "--max-texts", "4096"]
    command += SERVER_ARGS
    return Process("bertlayers", command, "/ready", port)


INFINITY_FLAGS = ["--served-model-name", "all-MiniLM-L6-v2", "--engine", "torch",
                  "--device", "cpu", "--no-bettertransformer", "--no-compile",
                  "--no-vector-disk-cache"]  # fmt: skip


def infinity_record() -> dict:
    """infinity's version (from its own venv) and the flags it is started with."""
    done = subprocess.run(
        [str(INFINITY / "bin" / "python"), "-c",
         "import importlib.metadata as m; print(m.version('infinity_emb'))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    version = done.stdout.strip() if done.returncode == 0 else None
    return {"version": version, "flags": " ".join(INFINITY_FLAGS)}


def start_infinity(model_dir: str) -> Process | None:
    binary = INFINITY / "bin" / "infinity_emb"
    if not binary.exists():
        return None
    port = free_port()
    command = [str(binary), "v2", "--model-id", model_dir, *INFINITY_FLAGS,
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "INFINITY_HOME": str(INFINITY / "home"),
    }
    return Process("infinity", command, "/health", port, env)


# ---------------------------------------------------------------- load


def make_request(work: str, texts: list[str]) -> tuple[str, dict, dict]:
    """(path, JSON body, headers) of one request of `texts` for a kind of work."""
    if work == "infinity":
        return "/embeddings", {"model": "all-MiniLM-L6-v2", "input": texts}, {}
    if work == "last":
        return "/v1/embeddings", {"model": OUR_MODEL, "input": texts}, {}
    body = {"texts": texts, "layers": "all"}
    if work == "all-base64":
        return "/v1/embed", {**body, "encoding": "base64"}, {}
    if work == "all-float":
        return "/v1/embed", body, {}
    if work == "all-npy":
        return "/v1/embed", body, {"Accept": "application/x-npy"}
    raise ValueError(work)


TOKENS: dict[str, int] = {}  # each text's tokens (the model's tokenizer, special tokens in)


def check(work: str, response: httpx.Response, n: int) -> None:
    """Decode the answer as a client would, and check its shape."""
    if work == "all-npy":
        assert response.headers["content-type"] == "application/x-npy"
        assert np.load(io.BytesIO(response.content)).shape == (n, 7, 384)
        return
    body = orjson.loads(response.content)
    if work in ("infinity", "last"):
        assert len(body["data"]) == n and len(body["data"][0]["embedding"]) == 384
    else:
        assert body["shape"] == [n, 7, 384]


def summary(latencies: list[float], texts: int, tokens: int, failed: int, elapsed: float, rss):
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {
        "texts": texts,
        "seconds": round(elapsed, 3),
        "texts_per_s": round(texts / elapsed, 1),
        "tokens_per_s": round(tokens / elapsed, 1),
        "requests": len(latencies),
        "failed": failed,
        "p50_s": round(float(np.percentile(lat, 50)), 4),
        "p95_s": round(float(np.percentile(lat, 95)), 4),
        "p99_s": round(float(np.percentile(lat, 99)), 4),
        "server_rss_mb": round(rss, 1),
    }


async def send(client, work: str, batch: list[str], latencies: list, done: dict) -> None:
    """One request: its latency, and its texts and tokens once decoded (or a failure)."""
    path, body, headers = make_request(work, batch)
    sent = time.perf_counter()
    try:
        response = await client.post(path, json=body, headers=headers)
        ok = response.status_code == 200
    except httpx.HTTPError:
        ok = False
    latencies.append(time.perf_counter() - sent)
    if not ok:
        done["failed"] += 1
        return
    check(work, response, len(batch))
    done["tokens"] += sum(TOKENS.get(t, 0) for t in batch)  # the same count for every server
    done["texts"] += len(batch)


async def closed_loop(server: Process, work: str, texts, sizes, clients: int, cap_s: float):
    """`clients` workers, each sending its next request when answered; bounded by the texts
    and by `cap_s` seconds."""
    batches, start_of = [], 0
    for size in sizes:
        batches.append(texts[start_of : start_of + size])
        start_of += size
    queue = iter(batches)
    latencies: list[float] = []
    done = {"texts": 0, "tokens": 0, "failed": 0}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        start = time.perf_counter()

        async def worker() -> None:
            for batch in queue:
                if time.perf_counter() - start > cap_s:
                    return
                await send(client, work, batch, latencies, done)

        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    rss = server.rss_mb()
    return summary(latencies, done["texts"], done["tokens"], done["failed"], elapsed, rss)


async def open_loop(server: Process, work: str, texts, sizes, rate_texts: float, seconds: float):
    """Requests at a constant arrival rate (texts/s), for `seconds`, whatever the answers."""
    mean_size = float(np.mean(sizes))
    interval = mean_size / rate_texts
    latencies: list[float] = []
    done = {"texts": 0, "tokens": 0, "failed": 0}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
        start = time.perf_counter()
        tasks, cursor, i = [], 0, 0
        while time.perf_counter() - start < seconds:
            size = sizes[i % len(sizes)]
            batch = [texts[(cursor + j) % len(texts)] for j in range(size)]
            cursor += size
            i += 1
            tasks.append(asyncio.create_task(send(client, work, batch, latencies, done)))
            await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    rss = server.rss_mb()
    row = summary(latencies, done["texts"], done["tokens"], done["failed"], elapsed, rss)
    row["offered_texts_per_s"] = round(rate_texts, 1)
    return row


# ---------------------------------------------------------------- the bench


def offline(texts: list[str]) -> dict:
    """The library on the same texts, in this process: what the server's overhead costs."""
    from bertlayers import Extractor

    extractor = Extractor()
    extractor.embed(texts[:64], layers="all")  # warm-up
    rows = {}
    for name, options in (
        ("last", dict(layers=-1, include_special=True, max_length=256)),
        ("all", dict(layers="all")),
    ):
        start = time.perf_counter()
        extractor.embed(texts, **options)
        elapsed = time.perf_counter() - start
        rows[name] = {"seconds": round(elapsed, 3), "texts_per_s": round(len(texts) / elapsed, 1)}
    del extractor
    gc.collect()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--clients", default="1,8,32,128")
    parser.add_argument("--cap", type=float, default=40.0, help="seconds per closed-loop level")
    parser.add_argument("--open-seconds", type=float, default=20.0)
    parser.add_argument("--peer", choices=["infinity", "none"], default="infinity")
    parser.add_argument("--smoke", action="store_true", help="a few texts, CI")
    parser.add_argument(
        "--soak", type=float, default=None, metavar="SECONDS",
        help="only a soak run: our server at ~70%% of its 32-client capacity for SECONDS, "
        "its RSS sampled every 5 s",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--single", type=int, default=None, metavar="N",
        help="only one-text requests: N texts at 1 and at 32 clients (what batching across "
        "requests buys when requests carry one text each)",
    )  # fmt: skip
    parser.add_argument(
        "--server-arg", action="append", default=[], help="pass to bertlayers serve (repeat)"
    )
    parser.add_argument(
        "--per-request", type=int, default=None, metavar="N",
        help="N texts in every request (default: 1 to 16, seeded)",
    )  # fmt: skip
    args = parser.parse_args()
    SERVER_ARGS.extend(args.server_arg)
    if args.smoke:
        args.texts, args.clients, args.cap, args.open_seconds = 120, "1,8", 10.0, 2.0
        args.peer = "none"
    from bertlayers.core.encoder import bundled_model_path

    levels = [int(c) for c in args.clients.split(",")]
    texts = load_texts(args.texts)
    sizes = request_sizes(len(texts), fixed=args.per_request)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()))
    encoded = tokenizer(texts)["input_ids"]
    TOKENS.update((text, len(ids)) for text, ids in zip(texts, encoded, strict=True))
    if args.soak:
        return soak(texts, sizes, args.soak, args.out)
    if args.single:
        return single(texts[: args.single], args.cap, args.out)
    one_at_a_time = sizes[: max(8, len(sizes) // 8)]  # one client is slow: fewer requests
    report: dict = {
        **run_record(),
        "server_args": SERVER_ARGS,
        "texts": len(texts),
        "mean_texts_per_request": round(float(np.mean(sizes)), 2),
        "texts_per_request": args.per_request or "1-16, seeded",
        "offline": offline(texts),
        "servers": {},
    }
    print(f"offline library: {report['offline']}", file=sys.stderr)

    def run_levels(server: Process, works: list[str]) -> dict:
        rows: dict = {}
        for work in works:
            for clients in levels:
                use = one_at_a_time if clients == 1 else sizes
                row = asyncio.run(closed_loop(server, work, texts, use, clients, args.cap))
                rows[f"{work}@{clients}"] = row
                print(f"{server.name} {work} x{clients}: {row}", file=sys.stderr)
        return rows

    ours = start_ours()
    try:
        rows = run_levels(ours, ["last", "all-base64"])
        at = max(c for c in levels if c <= 32)
        for work in ("all-float", "all-npy"):
            row = asyncio.run(closed_loop(ours, work, texts, sizes, at, args.cap))
            rows[f"{work}@{at}"] = row
            print(f"bertlayers {work} x{at}: {row}", file=sys.stderr)
        report["servers"]["bertlayers"] = {"startup_s": round(ours.startup_s, 2), "rows": rows}
    finally:
        ours.stop()

    peer = None
    if args.peer == "infinity":
        peer = start_infinity(str(bundled_model_path()))
        if peer is None:
            print(f"infinity: no venv at {INFINITY} (bench/setup_infinity.sh)", file=sys.stderr)
    if peer is not None:
        report["peers"] = {"infinity": infinity_record()}
        try:
            rows = run_levels(peer, ["infinity"])
            report["servers"]["infinity"] = {"startup_s": round(peer.startup_s, 2), "rows": rows}
        finally:
            peer.stop()

    at = max(c for c in levels if c <= 32)
    capacities = [report["servers"]["bertlayers"]["rows"][f"last@{at}"]["texts_per_s"]]
    if "infinity" in report["servers"]:
        capacities.append(report["servers"]["infinity"]["rows"][f"infinity@{at}"]["texts_per_s"])
    rate = 0.7 * min(capacities)
    report["open_loop_texts_per_s"] = round(rate, 1)
    for name, work, start in (("bertlayers", "last", start_ours), ("infinity", "infinity", None)):
        if name not in report["servers"]:
            continue
        server = start() if start else start_infinity(str(bundled_model_path()))
        try:
            row = asyncio.run(open_loop(server, work, texts, sizes, rate, args.open_seconds))
        finally:
            server.stop()
        report["servers"][name]["rows"]["open"] = row
        print(f"{name} open loop at {rate:.0f} texts/s: {row}", file=sys.stderr)

    report["ratios"] = ratios(report, at)
    print(markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def soak(texts: list[str], sizes: list[int], seconds: float, out: Path | None) -> int:
    """Open loop at ~70% of capacity for `seconds`; RSS growth after the first minute."""
    server = start_ours()
    samples: list[tuple[float, float]] = []
    try:
        capacity = asyncio.run(closed_loop(server, "last", texts, sizes, 32, 30.0))
        rate = 0.7 * capacity["texts_per_s"]
        start = time.perf_counter()

        async def sample() -> None:
            while time.perf_counter() - start < seconds:
                samples.append((round(time.perf_counter() - start, 1), server.rss_mb()))
                await asyncio.sleep(5)

        async def both():
            sampler = asyncio.create_task(sample())
            row = await open_loop(server, "last", texts, sizes, rate, seconds)
            await sampler
            return row

        row = asyncio.run(both())
    finally:
        server.stop()
    warm = [(t, rss) for t, rss in samples if t >= 60] or list(samples)
    growth = (warm[-1][1] - warm[0][1]) / warm[0][1]
    # the trend, not two samples: a least-squares line through every sample after a minute
    slope, intercept = np.polyfit([t for t, _ in warm], [rss for _, rss in warm], 1)
    span = warm[-1][0] - warm[0][0]
    report = {
        **run_record(),
        "seconds": seconds,
        "capacity_texts_per_s": capacity["texts_per_s"],
        "row": row,
        "rss_mb_samples": samples,
        "rss_growth_after_first_minute": round(growth, 4),
        "rss_fit_mb_per_minute": round(float(slope) * 60, 3),
        "rss_fit_growth_after_first_minute": round(float(slope * span / intercept), 4),
        "server_args": SERVER_ARGS,
        "peak_rss_mb": max(rss for _, rss in samples),
    }
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mb_samples"}, indent=2))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if row["failed"] == 0 else 1


def single(texts: list[str], cap: float, out: Path | None) -> int:
    """Requests of one text each, last layer, at 1 and 32 clients, beside the offline
    library's throughput on the same texts (measured first, in this process)."""
    alone = offline(texts)
    server = start_ours()
    rows = {}
    try:
        for clients in (1, 32):
            rows[f"last@{clients}"] = asyncio.run(
                closed_loop(server, "last", texts, [1] * len(texts), clients, cap)
            )
            print(f"one-text requests x{clients}: {rows[f'last@{clients}']}", file=sys.stderr)
    finally:
        server.stop()
    gain = rows["last@32"]["texts_per_s"] / rows["last@1"]["texts_per_s"]
    report = {
        **run_record(),
        "server_args": SERVER_ARGS,
        "texts": len(texts),
        "offline": alone,
        "rows": rows,
        "batching_32_vs_1": round(gain, 2),
        "single_32_vs_offline": round(
            rows["last@32"]["texts_per_s"] / alone["last"]["texts_per_s"], 3
        ),
    }
    print(json.dumps(report, indent=2))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def ratios(report: dict, at: int) -> dict:
    ours = report["servers"]["bertlayers"]["rows"]
    out = {
        f"all_layers_at_{at}_vs_offline": round(
            ours[f"all-base64@{at}"]["texts_per_s"] / report["offline"]["all"]["texts_per_s"], 2
        ),
        f"last_layer_at_{at}_vs_offline": round(
            ours[f"last@{at}"]["texts_per_s"] / report["offline"]["last"]["texts_per_s"], 2
        ),
    }
    if "last@1" in ours:
        out[f"batching_{at}_vs_1"] = round(
            ours[f"last@{at}"]["texts_per_s"] / ours["last@1"]["texts_per_s"], 2
        )
    if "infinity" in report["servers"]:
        peer = report["servers"]["infinity"]["rows"]
        out[f"last_layer_at_{at}_vs_infinity"] = round(
            ours[f"last@{at}"]["texts_per_s"] / peer[f"infinity@{at}"]["texts_per_s"], 2
        )
        out[f"p99_at_{at}_vs_infinity"] = round(
            ours[f"last@{at}"]["p99_s"] / peer[f"infinity@{at}"]["p99_s"], 2
        )
    return out


def markdown(report: dict) -> str:
    lines = [
        "| server | work | clients | texts/s | tokens/s | p50 s | p95 s | p99 s | failed "
        "| RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, server in report["servers"].items():
        for key, row in server["rows"].items():
            work, _, clients = key.partition("@")
            clients = clients or f"open {row.get('offered_texts_per_s')}/s"
            lines.append(
                f"| {name} | {work} | {clients} | {row['texts_per_s']} | {row['tokens_per_s']} "
                f"| {row['p50_s']} | {row['p95_s']} | {row['p99_s']} | {row['failed']} "
                f"| {row['server_rss_mb']} |"
            )
    lines.append("")
    lines.append(f"offline library: {report['offline']}")
    lines.append(f"ratios: {report['ratios']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
