"""`Client`: a `bertlayers serve` server from Python, returning the library's result types.

`Client(url).extract(texts, layers="all")` gives the `SentenceEmbeddings` that
`Extractor().extract(texts, layers="all")` gives, computed by the server. Big inputs are cut
into requests of `batch_size` texts, sent `concurrency` at a time (the server batches them
together), in `.npz` (no JSON floats). 429 and 503 answers are retried with back-off,
honouring `Retry-After`. `RemoteEngine` is the same server seen as an engine, so the
streaming run (`bertlayers extract --server URL`) writes any store from it, resumable.
Needs the `client` extra (httpx).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .chunks import RaggedChunk, SentenceChunk
from .core.config import ExtractConfig
from .core.plan import Plan
from .errors import BertlayersError, InputError, OptionError
from .extras import require
from .info import ModelInfo
from .io.readers import Record, as_records, records_from_words
from .layers import LayerSelection
from .options import Combine, Level
from .provenance import RunInfo
from .results import ArraySource, RaggedEmbeddings, SentenceEmbeddings


class ServerError(BertlayersError):
    """The server refused a request (its one-line message), or could not be reached."""


RETRIED = (429, 503)


class Client:
    """A client of one server. Thread-safe; use it as a context manager or `close()` it."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 300.0,
        batch_size: int = 64,
        concurrency: int = 4,
        retries: int = 8,
    ) -> None:
        require("httpx", "client", "bertlayers.Client")
        import httpx

        if batch_size < 1 or concurrency < 1:
            raise OptionError("batch_size and concurrency must be at least 1")
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency + 1),
        )
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.retries = retries
        self._reached = False  # until a server answers once, a refused connection fails fast
        self._info: dict | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ transport

    def _send(self, method: str, path: str, **kwargs: object):
        """One call, retried on 429/503 and on a lost connection; errors as `ServerError`.

        A server that has never answered gets two quick retries (a wrong URL fails in about a
        second); once it has answered, a lost connection (a restart) gets the full `retries`.
        """
        import httpx

        delay = 0.25
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                if attempt == self.retries or (not self._reached and attempt == 2):
                    raise ServerError(f"cannot reach {self.url}: {err}") from None
            else:
                self._reached = True
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRIED or attempt == self.retries:
                    raise ServerError(_message(response)) from None
                after = response.headers.get("retry-after", "")
                delay = max(delay, float(after)) if after.replace(".", "", 1).isdigit() else delay
            time.sleep(min(delay, 30.0))
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def info(self) -> dict:
        """The server's `/v1/info`: model, fingerprint, layers, limits."""
        if self._info is None:
            self._info = self._send("GET", "/v1/info").json()
        return self._info

    def _embed_npz(self, payload: dict) -> dict[str, np.ndarray]:
        response = self._send(
            "POST", "/v1/embed", json=payload, headers={"Accept": "application/x-npz"}
        )
        with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}

    def _batches(self, payloads: list[dict]) -> list[dict[str, np.ndarray]]:
        if len(payloads) == 1 or self.concurrency == 1:
            return [self._embed_npz(p) for p in payloads]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._embed_npz, payloads))

    # ------------------------------------------------------------------ the library's API

    def embed(self, texts: Sequence[str], pairs: Sequence[str] | None = None, **options):
        """Like `Extractor.embed`: an `(N, K, H)` array in input order."""
        return self.extract(texts, pairs, **options).embeddings

    def extract(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, **options: object
    ) -> SentenceEmbeddings:
        """Like `Extractor.extract`: `SentenceEmbeddings` with ids, token counts, flags."""
        return self._extract(as_records(texts, pairs), Level.SENTENCE, options)

    def extract_tokens(self, texts: Sequence[str], **options: object) -> RaggedEmbeddings:
        """Like `Extractor.extract_tokens`: every token's vectors, per text."""
        return self._extract(as_records(texts, None), Level.TOKEN, options)

    def extract_words(
        self, texts: Sequence[str] | Sequence[Sequence[str]], **options: object
    ) -> RaggedEmbeddings:
        """Like `Extractor.extract_words`: raw texts or pre-split words per text."""
        items = list(texts)
        if items and all(isinstance(t, list | tuple) for t in items):
            records = list(records_from_words(items))
        else:
            records = as_records(items, None)
        return self._extract(records, Level.WORD, options)

    def embed_records(
        self, records: Sequence[Record], level: Level | str, options: dict
    ) -> list[dict[str, np.ndarray]]:
        """Each batch of records as the server's `.npz` arrays, in order."""
        if "level" in options:
            raise OptionError("the level is set by the method: extract, extract_tokens, ...")
        level = Level.parse(level, "level")
        payloads = []
        for start in range(0, len(records), self.batch_size):
            batch = records[start : start + self.batch_size]
            payload = {"level": level.value, **_wire_options(options)}
            if any(r.words is not None for r in batch):
                payload["words"] = [list(r.words or r.text.split(" ")) for r in batch]
            else:
                payload["texts"] = [r.text for r in batch]
                if any(r.pair is not None for r in batch):
                    payload["pairs"] = [r.pair or "" for r in batch]
            payloads.append(payload)
        return self._batches(payloads)

    def _extract(self, records: list[Record], level: Level, options: dict):
        if not records:
            raise InputError("no texts to embed")
        replies = self.embed_records(records, level, options)
        info = self.info()
        layers = [int(x) for x in replies[0]["layers"]]
        provenance = {
            "level": level.value,
            "layers": layers,
            "combine": str(options.get("combine", Combine.STACK.value)),
            "model": {
                "id": info["model"],
                "name": info["served_model_name"],
                "fingerprint": info["fingerprint"],
                "num_layers": info["num_layers"],
                "hidden_size": info["hidden_size"],
            },
            "server": self.url,
        }
        common = dict(
            ids=[r.id for r in records],
            layers=layers,
            n_tokens=np.concatenate([r["n_tokens"] for r in replies]),
            truncated=np.concatenate([r["truncated"] for r in replies]),
            windows=np.concatenate([r["windows"] for r in replies]),
            provenance=provenance,
        )
        vectors = np.concatenate([r["embeddings"] for r in replies])
        if level is Level.SENTENCE:
            return SentenceEmbeddings(ArraySource(vectors), **common)
        lengths = np.concatenate([np.diff(r["offsets"]) for r in replies])
        return RaggedEmbeddings(
            ArraySource(vectors),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            items=[str(x) for r in replies for x in r["items"]],
            spans=np.concatenate([r["spans"] for r in replies]).astype(np.int64),
            **common,
        )


def _message(response) -> str:
    try:
        return f"server: {response.json()['error']['message']} (HTTP {response.status_code})"
    except Exception:
        return f"server answered HTTP {response.status_code}"


_WIRE = {  # ExtractConfig fields the server takes, by their name on the wire
    "layers": "layers",
    "pooling": "pooling",
    "word_pooling": "word_pooling",
    "combine": "combine",
    "include_special": "include_special",
    "long": "long",
    "max_length": "max_length",
    "output_dtype": "dtype",
}
_LOCAL = {"batch_tokens", "max_batch_size", "max_padding", "chunk_size", "chunk_bytes"}


def _wire_options(options: dict) -> dict:
    """Extract options as the server's fields; batching options stay local (the server
    batches its own way) and any other name is refused."""
    wire = {}
    for name, value in options.items():
        if name in _WIRE:
            if value is None:
                continue
            value = getattr(value, "value", value)
            if isinstance(value, tuple):
                value = list(value)
            wire[_WIRE[name]] = value
        elif name == "stride" and value is not None:
            raise OptionError("{opt:stride} is the server's to choose: leave it out")
        elif name not in _LOCAL and name != "stride":
            raise OptionError(f"unknown option {name}")
    return wire


# ---------------------------------------------------------------- the server as an engine


class RemoteEngine:
    """What the streaming run needs of an engine, answered by a server: `bertlayers extract
    --server URL` writes stores (and resumes them) exactly as with a local model."""

    def __init__(self, client: Client) -> None:
        self.client = client
        info = client.info()
        self.info = ModelInfo(**info["model_info"])
        self.run_info = RunInfo(
            info=self.info,
            fingerprint=info["fingerprint"],
            compute=info["compute_dtype"],
            device=info["device"],
            backend={"server": client.url, "runtime": info["runtime"]},
        )
        self._plans: dict = {}

    def plan(self, config: ExtractConfig | Plan) -> Plan:
        """The config as the server resolves it (layers, max length, windows): asked once."""
        if isinstance(config, Plan):
            return config
        if config not in self._plans:
            payload = {"level": config.level.value, **_wire_options(_options_of(config))}
            settings = self.client._send("POST", "/v1/settings", json=payload).json()["settings"]
            self._plans[config] = Plan(
                config=config,
                selection=LayerSelection(tuple(settings["layers"]), self.info.num_layers),
                hidden_size=self.info.hidden_size,
                max_length=settings["max_length"],
                window=settings.get("window"),
                stride=settings.get("stride"),
                batch_tokens=0,  # the server batches its own way
            )
        return self._plans[config]

    def settings(self, config: ExtractConfig | Plan) -> dict:
        """The server's resolved settings for this config."""
        return self.plan(config).settings()

    def identity(self, config: ExtractConfig | Plan) -> dict:
        plan = self.plan(config)
        return {
            "model": self.info.model_id,
            "fingerprint": self.run_info.fingerprint,
            "compute_dtype": self.run_info.compute,
            "server": self.client.url,
            **plan.settings(),
            "chunk_size": plan.config.chunk_size,
        }

    def iter_chunks(
        self,
        records: Iterable[Record],
        config: ExtractConfig | Plan,
        progress=None,
        reserve=None,
    ) -> Iterator[SentenceChunk]:
        """Chunks of `chunk_size` records, embedded by the server, in input order."""
        plan = self.plan(config)
        options = _options_of(plan.config)
        level = plan.config.level
        iterator = iter(records)
        while chunk := [r for _, r in zip(range(plan.config.chunk_size), iterator, strict=False)]:
            replies = self.client.embed_records(chunk, level, options)
            vectors = np.concatenate([r["embeddings"] for r in replies])
            common = dict(
                ids=[r.id for r in chunk],
                n_tokens=np.concatenate([r["n_tokens"] for r in replies]),
                truncated=np.concatenate([r["truncated"] for r in replies]),
                windows=np.concatenate([r["windows"] for r in replies]),
            )
            if level is Level.SENTENCE:
                yield SentenceChunk(vectors=vectors, **common)
            else:
                if reserve is not None and level is Level.TOKEN:
                    target = reserve(len(vectors), plan.row_shape, vectors.dtype)
                    target.put(0, vectors)
                    vectors = target.vectors
                yield RaggedChunk(
                    vectors=vectors,
                    lengths=np.concatenate([np.diff(r["offsets"]) for r in replies]),
                    items=[str(x) for r in replies for x in r["items"]],
                    spans=np.concatenate([r["spans"] for r in replies]).astype(np.int64),
                    replaced=[],
                    **common,
                )
            if progress is not None:
                progress.update(len(chunk), int(common["n_tokens"].sum()))


def _options_of(config: ExtractConfig) -> dict:
    """A config's options but its level (a method or an argument of its own)."""
    return {k: v for k, v in config.to_dict().items() if k != "level"}
