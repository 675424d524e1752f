"""`bertlayers serve`: load the model, then run the app under uvicorn until SIGTERM/SIGINT.

On a signal the server stops accepting, `/ready` turns false, requests in flight finish
(within `--grace`), and the process exits 0. The model is loaded before the port opens, so
a bad `--model` is a one-line error and exit 1, not a server answering 503 forever.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from dataclasses import replace

from ..errors import BertlayersError, first_line
from .settings import ServeSettings

API_KEY_ENV = "BERTLAYERS_API_KEY"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit 2, as the rest of the command line has them."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bertlayers serve",
        description=(
            "Serve embeddings of any layer over HTTP: POST /v1/embed (layers, level and pooling "
            "per request), the OpenAI-compatible POST /v1/embeddings, POST /v1/attention (maps per "
            "layer and head), POST /v1/settings (what /v1/embed options resolve to); GET /v1/info, "
            "/health, /ready, /metrics, /docs, /openapi.json. Requests are batched together; "
            "binds to 127.0.0.1 unless told."
        ),
    )
    add = parser.add_argument
    add("--model", default=None, help="hub id or directory (default: the bundled MiniLM)")
    add("--revision", default=None, help="hub revision")
    add("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    add("--dtype", default="float32", help="compute dtype: float32, float16, bfloat16")
    add("--runtime", default=None, help="torch (default), compile, int8 or openvino")
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback)")
    add("--port", type=_port, default=8080, help="port (default 8080; 0 picks a free one)")
    add(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; /health is open)",
    )
    add("--served-model-name", default=None, help="the `model` clients send (default: its name)")
    add(
        "--max-wait-ms",
        type=_non_negative,
        default=0.0,
        help="wait for more requests before "
        "a batch, trading latency for throughput (default 0: start when the worker is free)",
    )
    add(
        "--max-queue-tokens",
        type=_positive,
        default=262_144,
        help="tokens waiting before requests get 429 (default 262144)",
    )
    add(
        "--round-tokens",
        type=_positive,
        default=ServeSettings.round_tokens,
        help="tokens the worker takes from the queue per embed call (default %(default)s): "
        "larger rounds pack fuller batches, smaller ones even out latency",
    )
    add(
        "--max-round-tokens",
        type=_positive,
        default=ServeSettings.max_round_tokens,
        help="with more queued, a round grows up to this many tokens (default: as "
        "--round-tokens, a fixed round; growing rounds raised no throughput in the serving "
        "benchmark and lengthened the tail at 128 clients)",
    )
    add("--max-texts", type=_positive, default=2048, help="texts per request (default 2048)")
    add("--max-chars", type=_positive, default=100_000, help="characters per text (default 100000)")
    add(
        "--max-body-bytes",
        type=_positive,
        default=32 * 2**20,
        help="request body bytes (default 32 MiB)",
    )
    add(
        "--max-output-bytes",
        type=_positive,
        default=256 * 2**20,
        help="raw vector bytes per request (default 256 MiB)",
    )
    add(
        "--request-timeout",
        type=_non_negative,
        default=60.0,
        help="seconds a request may wait before it is computed (default 60; 0 = no limit)",
    )
    add(
        "--max-connections",
        type=_positive,
        default=512,
        help="connections served at once; past it, new ones get 503 (default 512; memory is "
        "at most about this times --max-body-bytes)",
    )
    add("--batch-tokens", type=_positive, default=None, help="padded tokens per forward batch")
    add(
        "--grace",
        type=_non_negative,
        default=30.0,
        help="seconds in-flight requests get to finish after SIGTERM (default 30)",
    )
    add(
        "--cors-origin",
        action="append",
        default=[],
        help="allow this browser origin (repeat); CORS is off without it",
    )
    add(
        "--no-trim-heap",
        dest="trim_heap",
        action="store_false",
        help="do not give freed heap memory back to the OS when idle (glibc malloc_trim)",
    )
    add("--log-level", default="info", help="uvicorn's log level (default info)")
    add(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: this process under uvicorn; ray: a Ray Serve deployment of --replicas "
        "replicas behind Ray's HTTP proxy on --host/--port (the `ray` extra; uvicorn's "
        "--max-connections, --log-level and --grace are then the proxy's own)",
    )
    add("--replicas", type=_positive, default=1, help="with --engine ray: replicas, one model each")
    add(
        "--address",
        default=None,
        help="with --engine ray: the cluster (auto, HOST:PORT; default: start a local one)",
    )
    add("--cpus-per-replica", type=float, default=1.0, help="with --engine ray (default 1)")
    add("--gpus-per-replica", type=float, default=0.0, help="with --engine ray (default 0)")
    add(
        "--openapi",
        action="store_true",
        help="print the OpenAPI document (as docs/openapi.json holds it) and exit",
    )
    return parser


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the service; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        import uvicorn

        from ..core.config import ModelOptions
        from ..core.engine import Engine
        from . import create_app

        model = ModelOptions(
            args.model, args.device, args.dtype, args.revision, args.runtime or "torch"
        )
        if args.engine == "local" and not args.openapi:
            check_port(args.host, args.port)  # before the model loads: fail in a second
        # with --engine ray, only a check (on the CPU) that the model loads
        engine = Engine.from_options(
            model if args.engine == "local" else replace(model, device="cpu")
        )
        settings = ServeSettings(
            api_key=args.api_key or None,
            served_model_name=args.served_model_name,
            max_wait_ms=args.max_wait_ms,
            max_queue_tokens=args.max_queue_tokens,
            round_tokens=args.round_tokens,
            max_round_tokens=args.max_round_tokens,
            max_texts=args.max_texts,
            max_chars=args.max_chars,
            max_body_bytes=args.max_body_bytes,
            max_output_bytes=args.max_output_bytes,
            request_timeout=args.request_timeout,
            grace_seconds=args.grace,
            cors_origins=tuple(args.cors_origin),
            batch_tokens=args.batch_tokens,
            trim_heap=args.trim_heap,
        )
        if args.engine == "ray" and not args.openapi:
            del engine  # it loaded: the replicas load their own
            return _serve_on_ray(args, settings, model)
        app = create_app(engine, settings)
        if args.openapi:
            print(openapi_text(app))
            return 0
    except BertlayersError as err:
        print(f"bertlayers serve: error: {err.spelled(flag_spelling)}", file=sys.stderr)
        return 1
    pipeline = app.state.service.pipeline
    if not pipeline.exact:
        print(
            "bertlayers serve: warning: /v1/embeddings does not reproduce this model's "
            f"sentence-transformers pipeline exactly ({', '.join(pipeline.unsupported)})",
            file=sys.stderr,
        )
    _warn_if_open(args, settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=math.ceil(args.grace),
        limit_concurrency=args.max_connections,
        access_log=True,
    )
    server = _Server(config, app)
    # uvicorn re-raises the signal that stopped it once it has drained; a drained stop is a
    # clean exit here, so that signal is received by a handler that does nothing.
    previous = {sig: signal.signal(sig, _drained) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _warn_if_open(args: argparse.Namespace, settings: ServeSettings) -> None:
    """A server that listens beyond loopback without a key says so."""
    if args.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        print(
            f"bertlayers serve: warning: listening on {args.host} without --api-key",
            file=sys.stderr,
        )


def _serve_on_ray(args: argparse.Namespace, settings: ServeSettings, model) -> int:
    """`--engine ray`: the app as a Ray Serve deployment; the model loaded here first was a
    check that it loads (a bad --model is one line, before any replica starts)."""
    from ..extras import require

    require("ray", "ray", "--engine ray")
    if args.port == 0:
        raise BertlayersError("--engine ray needs a fixed --port for Ray's HTTP proxy, not 0")
    from ..distributed.cluster import connect
    from ..distributed.serve import serve_until_signal, start

    engine_options = model.to_dict()

    _warn_if_open(args, settings)

    def start_serving() -> tuple[str, int]:
        url = start(
            engine_options,
            settings,
            host=args.host,
            port=args.port,
            replicas=args.replicas,
            cpus_per_replica=args.cpus_per_replica,
            gpus_per_replica=args.gpus_per_replica,
        )
        return url, args.replicas

    try:
        with connect(args.address, quiet=False):
            serve_until_signal(start_serving)
    except BertlayersError:
        raise
    except Exception as err:  # Ray Serve's (a port in use, replicas that do not start)
        first = first_line(err)[:300]
        raise BertlayersError(f"Ray Serve failed: {type(err).__name__}: {first}") from None
    return 0


def _drained(sig: int, frame: object) -> None:
    """The signal uvicorn passes on after a graceful stop: already handled."""


def openapi_text(app) -> str:
    """The app's OpenAPI document as committed: sorted keys, two-space indent."""
    import json

    return json.dumps(app.openapi(), indent=2, sort_keys=True)


def check_port(host: str, port: int) -> None:
    """Refuse, in one line naming host and port, an address nothing can listen on (a port in
    use, a host not on this machine): before the model loads, not after."""
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as err:
        raise BertlayersError(f"cannot listen on {host}:{port}: {first_line(err)}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as err:
            reason = err.strerror or first_line(err)
            raise BertlayersError(
                f"cannot listen on {host}:{port}: {reason} (is another server running there? "
                "choose another --port)"
            ) from None


ENDPOINTS = (
    "POST /v1/embed, /v1/embeddings (OpenAI), /v1/attention, /v1/settings; "
    "GET /v1/info, /health, /ready, /metrics, /docs, /openapi.json"
)


class _Server:
    """uvicorn's server, with `/ready` turned false as soon as a signal asks it to stop, and
    a line on stderr once it listens: the model and the endpoints."""

    def __new__(cls, config, app, quiet: bool = False):
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame) -> None:
                app.state.service.draining = True
                super().handle_exit(sig, frame)

            async def startup(self, sockets=None) -> None:
                await super().startup(sockets)
                if quiet or not self.servers:
                    return
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                service = app.state.service
                print(
                    f"bertlayers serve: {service.name} ({service.engine.info.num_layers} layers, "
                    f"{service.engine.runtime.value} on {service.engine.run_info.device}) at "
                    f"http://{host}:{port}: {ENDPOINTS}",
                    file=sys.stderr,
                    flush=True,
                )

        return Server(config)


def flag_spelling(name: str, value: str | None) -> str:
    """Options as this command's flags (`--max-length`); the extract options a request sets
    are named as the request's fields."""
    from .errors import field_spelling

    if name in SERVE_FLAGS:
        flag = "--" + name.replace("_", "-")
        return flag if value in (None, "True") else f"{flag} {value}"
    return field_spelling(name, value)


SERVE_FLAGS = {"model", "device", "dtype", "revision", "runtime", "host", "port", "api_key"}
