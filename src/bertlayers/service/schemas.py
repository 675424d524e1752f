"""Request and response bodies of the service (pydantic): the OpenAPI document is made from
these, so each field says what it means."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LayerField = str | int | list[int]
LAYERS_DOC = (
    "Layers in the project's convention (0 = embeddings, 1..L encoder layers, negatives from "
    "the end): 'all', an index, a list, or a comma list or slice string ('0,6,-1', '-4:')."
)


class EmbedRequest(BaseModel):
    """`POST /v1/embed`: texts (or pairs, or pre-split words) and how to embed them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] | None = Field(None, description="The texts to embed.")
    pairs: list[str] | None = Field(
        None, description="Second texts, one per text: embedded as pairs (sentence level)."
    )
    words: list[list[str]] | None = Field(
        None, description="Pre-split words per text, instead of texts (word level)."
    )
    layers: LayerField = Field("all", description=LAYERS_DOC)
    level: Literal["sentence", "token", "word"] = "sentence"
    pooling: Literal["cls", "mean", "max", "first", "last"] = "mean"
    word_pooling: Literal["first", "last", "mean", "max"] = "first"
    combine: Literal["stack", "mean", "sum", "concat"] = "stack"
    include_special: bool = Field(False, description="Pool over [CLS]/[SEP] too, or keep them.")
    long: Literal["split", "truncate", "error"] | None = Field(
        None, description="Texts over the model's limit: default truncate (sentence), split."
    )
    max_length: int | None = Field(None, ge=4, description="Tokens per sequence.")
    normalize: bool = Field(False, description="L2-normalize every output vector.")
    encoding: Literal["float", "base64"] = Field(
        "float", description="float: nested JSON lists; base64: little-endian bytes, C order."
    )
    dtype: Literal["float32", "float16"] = Field("float32", description="Of base64 and binary.")
    timeout: float | None = Field(
        None, gt=0, le=3600, description="Seconds the request may wait before it is computed."
    )


class TextInfo(BaseModel):
    """What happened to one text."""

    n_tokens: int = Field(description="Tokens of the whole text, special tokens included.")
    truncated: bool
    windows: int = Field(description="Windows the text ran in (1 unless split).")
    tokens: list[str] | None = Field(None, description="Token strings (token level).")
    words: list[str] | None = Field(None, description="Word strings (word level).")
    spans: list[list[int]] | None = Field(
        None, description="(start, end) character offsets of each token or word in its text."
    )


class Usage(BaseModel):
    """Tokens the request ran, as OpenAI counts them: every text's tokens, special tokens
    included (an embedding has no completion, so the two are equal)."""

    prompt_tokens: int
    total_tokens: int


class EmbedResponse(BaseModel):
    """Vectors `shape` = (texts, layers, hidden) at sentence level; at token and word level
    the rows of all texts `(sum T_i, layers, hidden)`, text i being rows
    `offsets[i]:offsets[i+1]` (float: one nested list per text)."""

    object: Literal["embeddings"] = "embeddings"
    model: str
    level: str
    layers: list[int]
    combine: str
    shape: list[int]
    dtype: str
    encoding: str
    offsets: list[int] | None = None
    embeddings: str | list
    texts: list[TextInfo]
    usage: Usage


class OpenAIEmbeddingRequest(BaseModel):
    """`POST /v1/embeddings`, as OpenAI's; `layers`, `pooling`, `combine`, `include_special`
    and `normalize` are extras (the `openai` client sends them through `extra_body`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: str | list[str] = Field(description="A text or a list of texts.")
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        None, ge=1, description="Keep the first N values of each vector (Matryoshka models)."
    )
    user: str | None = None
    layers: LayerField | None = Field(None, description=LAYERS_DOC + " Default: the last.")
    pooling: Literal["cls", "mean", "max", "first", "last"] | None = None
    combine: Literal["stack", "mean", "sum", "concat"] | None = None
    include_special: bool | None = None
    normalize: bool | None = None


class OpenAIEmbedding(BaseModel):
    """One text's vector in `/v1/embeddings`: its position in `input`, and the vector (a float
    list, or base64 of little-endian float32)."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class AppliedPipeline(BaseModel):
    """What `/v1/embeddings` applied: the model's sentence-transformers pipeline unless the
    request changed it (`source` says which)."""

    layers: list[int]
    combine: str
    pooling: str
    include_special: bool = Field(description="Whether [CLS]/[SEP] were pooled too.")
    normalize: bool
    max_length: int
    source: str


class OpenAIEmbeddingResponse(BaseModel):
    """`POST /v1/embeddings`'s answer, as OpenAI's: one vector per input text, in order."""

    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: Usage
    bertlayers: AppliedPipeline | None = Field(
        None, description="An extra: the layers, pooling and normalization applied."
    )


class ErrorDetail(BaseModel):
    """What went wrong: the message, its type, the field at fault (`param`) and a code."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error's body: one `ErrorDetail` under `error`, as OpenAI's API nests it."""

    error: ErrorDetail


class Info(BaseModel):
    """`GET /v1/info`: the model, its fingerprint and layers, what runs it, its
    sentence-transformers pipeline, and the limits of this service."""

    model: str
    served_model_name: str
    fingerprint: str
    architecture: str
    num_layers: int
    layers: list[int]
    hidden_size: int
    max_length: int
    runtime: str
    device: str
    compute_dtype: str
    model_info: dict
    sentence_pipeline: dict
    limits: dict
    version: str


class SettingsRequest(BaseModel):
    """`POST /v1/settings`: the options of `/v1/embed`, without texts."""

    model_config = ConfigDict(extra="forbid", strict=True)

    layers: LayerField = Field("all", description=LAYERS_DOC)
    level: Literal["sentence", "token", "word"] = "sentence"
    pooling: Literal["cls", "mean", "max", "first", "last"] = "mean"
    word_pooling: Literal["first", "last", "mean", "max"] = "first"
    combine: Literal["stack", "mean", "sum", "concat"] = "stack"
    include_special: bool = False
    long: Literal["split", "truncate", "error"] | None = None
    max_length: int | None = Field(None, ge=4)
    dtype: Literal["float32", "float16"] = "float32"


class SettingsResponse(BaseModel):
    """`POST /v1/settings`'s answer: what the options resolve to on this model."""

    settings: dict = Field(description="The resolved settings a store's provenance records.")


class Ready(BaseModel):
    """`GET /ready`: whether the service takes requests, and why not (loading, draining)."""

    ready: bool
    status: str


class AttentionRequest(BaseModel):
    """`POST /v1/attention`: texts (or pairs, or pre-split words) and which maps to return."""

    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] | None = Field(None, description="The texts.")
    pairs: list[str] | None = Field(None, description="Second texts, one per text (A/B).")
    words: list[list[str]] | None = Field(None, description="Pre-split words per text.")
    layers: LayerField = Field(
        "all",
        description="Attention layers 1..L (the self-attention inside encoder layer k; layer 0 "
        "has none): 'all', an index, a list, or a comma list or slice string ('-2:').",
    )
    heads: LayerField = Field("all", description="Heads 0..A-1: 'all', an index, a list, ':4'.")
    level: Literal["token", "word"] = Field(
        "token", description="word: pieces merged as Clark et al. (2019)."
    )
    long: Literal["error", "truncate"] = Field(
        "error", description="A text over the limit: refused (422), or cut and flagged."
    )
    max_tokens: int | None = Field(None, ge=4, description="Tokens per text (the limit).")
    norms: bool = Field(False, description="Norm-based attention ||a f(x)|| (Kobayashi et al.).")
    encoding: Literal["float", "base64"] = Field(
        "float", description="float: nested lists (K, A, T, T); base64: little-endian, C order."
    )
    dtype: Literal["float32", "float16"] = Field("float32", description="Of base64 and binary.")
    timeout: float | None = Field(
        None, gt=0, le=3600, description="Seconds the request may wait before it is computed."
    )


class AttentionText(BaseModel):
    """One text's maps and what each row and column is."""

    tokens: list[str] = Field(description="The T units (tokens, or words), special ones too.")
    spans: list[list[int]] = Field(description="(start, end) of each unit in its text.")
    special: list[bool]
    segments: list[int] = Field(description="0: the text, 1: the pair.")
    n_tokens: int = Field(description="Tokens of the whole text, before truncation.")
    truncated: bool
    shape: list[int] = Field(description="(layers, heads, T, T)")
    maps: str | list = Field(description="maps[k][a][i][j]: attention of unit i to unit j.")


class AttentionResponse(BaseModel):
    """`POST /v1/attention`'s answer: which layers and heads, and each text's maps."""

    object: Literal["attention"] = "attention"
    model: str
    level: str
    kind: str = Field(description="attention (softmax weights) or norms.")
    layers: list[int]
    heads: list[int]
    dtype: str
    encoding: str
    texts: list[AttentionText]
    usage: Usage
