"""Request records in, response bodies out: what `/v1/embed` and `/v1/embeddings` read from a
request and write back (JSON floats, base64, `.npy`, `.npz`)."""

from __future__ import annotations

import itertools

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import Response

from ..chunks import RaggedChunk, SentenceChunk
from ..core.plan import Plan
from ..errors import BertlayersError
from ..io.readers import Record, records_from_texts, records_from_words
from ..options import Level
from .encoding import NPY, NPZ, npy_bytes, npz_bytes, to_base64, wants
from .errors import ServiceError, library_error
from .schemas import AttentionRequest, EmbedRequest


def json_response(content: object, status: int = 200, headers: dict | None = None) -> Response:
    """JSON written by orjson: numpy arrays go out without a Python float per value."""
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def normalized(array: np.ndarray) -> np.ndarray:
    """Each vector (last axis) scaled to unit L2 norm, in the array's dtype."""
    norms = np.linalg.norm(array.astype(np.float32), axis=-1, keepdims=True)
    return (array / np.maximum(norms, 1e-12)).astype(array.dtype)


def request_records(body: EmbedRequest | AttentionRequest) -> tuple[list[Record], list[str]]:
    """A request's records (texts, pairs or pre-split words), and their texts."""
    if (body.texts is None) == (body.words is None):
        raise ServiceError(422, "send either 'texts' or 'words'", param="texts")
    try:
        if body.words is not None:
            if body.pairs is not None:
                raise ServiceError(422, "'pairs' go with 'texts', not 'words'", param="pairs")
            records = list(records_from_words(body.words))
            return records, [r.text for r in records]
        if body.pairs is not None and len(body.pairs) != len(body.texts or []):
            raise ServiceError(
                422,
                f"{len(body.pairs)} pairs for {len(body.texts or [])} texts: send one each",
                param="pairs",
            )
        records = list(records_from_texts(body.texts or [], body.pairs))
    except BertlayersError as err:
        raise library_error(err, 422, param="texts") from None
    return records, list(body.texts or [])


def embed_response(
    service_name: str, body: EmbedRequest, plan: Plan, chunk: SentenceChunk, request: Request
) -> Response:
    """`/v1/embed`'s answer: JSON (floats or base64), or `.npy` / `.npz` as `Accept` asks."""
    sentence = plan.config.level is Level.SENTENCE
    dtype = body.dtype
    flat = np.asarray(chunk.vectors).astype(dtype, copy=False)
    offsets = chunk.offsets if isinstance(chunk, RaggedChunk) else None
    if body.normalize:
        flat = normalized(flat)
    layers = list(plan.layers)
    n_tokens = np.asarray(chunk.n_tokens, dtype=np.int64)
    kind = wants(request.headers.get("accept"))
    meta = {
        "X-Bertlayers-Layers": ",".join(map(str, layers)),
        "X-Bertlayers-Level": plan.config.level.value,
        "X-Bertlayers-Tokens": str(int(n_tokens.sum())),
    }
    if kind == NPY:
        if not sentence:
            raise ServiceError(
                406, "token and word output is ragged: ask for application/x-npz", param="accept"
            )
        return Response(npy_bytes(flat), media_type=NPY, headers=meta)
    if kind == NPZ:
        arrays = {
            "embeddings": flat,
            "layers": np.array(layers, dtype=np.int64),
            "n_tokens": n_tokens,
            "truncated": np.asarray(chunk.truncated, dtype=bool),
            "windows": np.asarray(chunk.windows, dtype=np.int64),
        }
        if isinstance(chunk, RaggedChunk):
            arrays["offsets"] = offsets
            arrays["items"] = np.array(chunk.items, dtype=str)
            arrays["spans"] = np.asarray(chunk.spans, dtype=np.int64).reshape(-1, 2)
        return Response(npz_bytes(arrays), media_type=NPZ, headers=meta)
    texts = []
    name = "tokens" if plan.config.level is Level.TOKEN else "words"
    for record in chunk.records():
        entry: dict = {
            "n_tokens": record.n_tokens,
            "truncated": record.truncated,
            "windows": record.windows,
        }
        if not sentence:
            entry[name] = record.items
            entry["spans"] = record.spans
        texts.append(entry)
    if body.encoding == "base64":
        embeddings: object = to_base64(flat, dtype)
    elif sentence:
        embeddings = flat.astype(np.float32)
    else:
        embeddings = [flat[a:b].astype(np.float32) for a, b in itertools.pairwise(offsets)]
    tokens = int(n_tokens.sum())
    return json_response(
        {
            "object": "embeddings",
            "model": service_name,
            "level": plan.config.level.value,
            "layers": layers,
            "combine": plan.config.combine.value,
            "shape": list(flat.shape),
            "dtype": dtype,
            "encoding": body.encoding,
            "offsets": offsets,
            "embeddings": embeddings,
            "texts": texts,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def attention_response(service_name: str, body, plan, texts: list, request: Request) -> Response:
    """`/v1/attention`'s answer: JSON (nested floats or base64 per text), or `.npz` (every
    text's maps raveled one after another, `offsets` into them, `lengths` T per text)."""
    dtype = body.dtype
    tokens = int(sum(t.n_tokens for t in texts))
    meta = {
        "X-Bertlayers-Layers": ",".join(map(str, plan.layers)),
        "X-Bertlayers-Heads": ",".join(map(str, plan.heads)),
        "X-Bertlayers-Tokens": str(tokens),
    }
    if wants(request.headers.get("accept")) == NPZ:
        flat = [t.maps.astype(dtype).ravel() for t in texts]
        sizes = [len(f) for f in flat]
        arrays = {
            "maps": np.concatenate(flat) if flat else np.zeros(0, dtype),
            "offsets": np.r_[0, np.cumsum(sizes)].astype(np.int64),
            "lengths": np.asarray([len(t.items) for t in texts], dtype=np.int64),
            "layers": np.asarray(plan.layers, dtype=np.int64),
            "heads": np.asarray(plan.heads, dtype=np.int64),
            "items": np.array([x for t in texts for x in t.items], dtype=str),
            "spans": np.concatenate([t.spans for t in texts]).astype(np.int64),
            "special": np.concatenate([t.special for t in texts]).astype(bool),
            "segments": np.concatenate([t.segments for t in texts]).astype(np.int64),
            "n_tokens": np.asarray([t.n_tokens for t in texts], dtype=np.int64),
            "truncated": np.asarray([t.truncated for t in texts], dtype=bool),
        }
        return Response(npz_bytes(arrays), media_type=NPZ, headers=meta)
    out = []
    for t in texts:
        maps = t.maps.astype(dtype)
        encoded = to_base64(maps, dtype) if body.encoding == "base64" else maps.astype(np.float32)
        out.append(
            {
                "tokens": t.items,
                "spans": t.spans,
                "special": t.special,
                "segments": t.segments,
                "n_tokens": t.n_tokens,
                "truncated": t.truncated,
                "shape": list(maps.shape),
                "maps": encoded,
            }
        )
    return json_response(
        {
            "object": "attention",
            "model": service_name,
            "level": plan.config.level.value,
            "kind": "norms" if plan.config.norms else "attention",
            "layers": list(plan.layers),
            "heads": list(plan.heads),
            "dtype": dtype,
            "encoding": body.encoding,
            "texts": out,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        headers=meta,
    )
