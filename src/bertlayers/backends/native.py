"""A compact forward pass for the BERT family in plain torch, without transformers' model code.

Importing transformers' modeling code costs seconds of every start-up (it pulls in
`torch._dynamo`, `torch.distributed.tensor`, sympy and `scipy.optimize`); a few dozen lines of
torch compute the same hidden states from the weights file. `native_spec` reads every config
field the forward pass depends on, with transformers' own config object supplying the
defaults, and refuses what it does not port exactly (the encoder then runs transformers'
model): other model types, relative position embeddings, an activation outside `ACTIVATIONS`,
decoders, pruned heads, config fields it does not know. Ported: BERT, RoBERTa and XLM-R
(positions after the padding index), ELECTRA (embeddings projected to the hidden size),
DistilBERT (no segments; learned or sinusoidal positions) and MPNet (relative position bias).
Every layer is post-LayerNorm: `h = LN(h + attn(h))`, `h = LN(h + W2 act(W1 h))`.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# hidden_act -> function, as transformers' ACT2FN defines each name (`gelu` is the exact erf
# GELU, `gelu_new` / `gelu_fast` the tanh forms written out, `gelu_pytorch_tanh` torch's)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_python": lambda x: x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))),
    "gelu_new": lambda x: 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))),
    "gelu_fast": lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1 + 0.044715 * x * x))),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_10": lambda x: torch.clip(F.gelu(x), -10, 10),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "relu6": F.relu6,
    "relu2": lambda x: torch.square(F.relu(x)),
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": lambda x: x,
}

# config fields of any model that do not change what the encoder computes at inference
_NEUTRAL = {
    "_name_or_path", "architectures", "model_type", "transformers_version", "id2label",
    "label2id", "num_labels", "problem_type", "finetuning_task", "torch_dtype", "dtype",
    "output_attentions", "output_hidden_states", "return_dict", "torchscript", "use_bfloat16",
    "chunk_size_feed_forward", "use_cache", "bos_token_id", "eos_token_id", "sep_token_id",
    "cls_token_id", "decoder_start_token_id", "initializer_range", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "classifier_dropout", "gradient_checkpointing",
    "tie_word_embeddings", "tie_encoder_decoder", "tokenizer_class", "prefix",
    "task_specific_params", "output_past", "is_encoder_decoder", "is_decoder",
    "add_cross_attention", "pruned_heads", "cross_attention_hidden_size", "tf_legacy_loss",
    # generation settings some saved configs carry: an encoder never generates
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens",
}  # fmt: skip
_BERT_FIELDS = {
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
    "pad_token_id", "position_embedding_type",
}  # fmt: skip
_DISTILBERT_FIELDS = {
    "vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "activation", "dropout",
    "attention_dropout", "max_position_embeddings", "sinusoidal_pos_embds", "pad_token_id",
    "qa_dropout", "seq_classif_dropout", "tie_weights_",
}  # fmt: skip
_ELECTRA_HEAD = {
    "summary_type", "summary_use_proj", "summary_activation", "summary_last_dropout",
    "summary_proj_to_labels",
}  # fmt: skip

# model type -> (family, the base model's prefix in task checkpoints, config fields it knows)
FAMILIES = {
    "bert": ("bert", "bert.", _BERT_FIELDS),
    "roberta": ("roberta", "roberta.", _BERT_FIELDS),
    "xlm-roberta": ("roberta", "roberta.", _BERT_FIELDS),
    "electra": ("electra", "electra.", _BERT_FIELDS | {"embedding_size"} | _ELECTRA_HEAD),
    "distilbert": ("distilbert", "distilbert.", _DISTILBERT_FIELDS),
    "mpnet": ("mpnet", "mpnet.", (_BERT_FIELDS - {"type_vocab_size", "position_embedding_type"})
              | {"relative_attention_num_buckets"}),
}  # fmt: skip
MPNET_BUCKETS = 32  # transformers' MPNet computes its buckets with 32 whatever the config says
MPNET_PADDING = 1  # and its positions after index 1, whatever pad_token_id says


@dataclass(frozen=True)
class NativeSpec:
    """What the native forward pass computes, read from a model's config."""

    family: str  # bert | roberta | electra | distilbert | mpnet
    prefix: str  # the base model's prefix in a task checkpoint (`bert.`)
    num_layers: int
    hidden_size: int
    num_heads: int
    activation: str  # a key of ACTIVATIONS
    layer_norm_eps: float
    type_vocab_size: int  # 0: no segment embeddings
    position_offset: int | None  # positions count from offset + 1 past padding; None: 0..T-1
    sinusoidal: bool  # DistilBERT's fixed sinusoidal positions
    max_positions: int
    embedding_size: int  # ELECTRA's embeddings are projected to the hidden size when smaller


def native_spec(config: Any, raw: dict) -> NativeSpec | str:
    """The native spec of a model (`config`: transformers' config object, or the model
    cache's copy of its fields, for its defaults (read by attribute: no transformers import
    here); `raw`: config.json as saved, for the fields it names), or why it has none."""
    model_type = raw.get("model_type") or getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        return f"model type '{model_type}' is not ported"
    family, prefix, fields = FAMILIES[model_type]
    unknown = sorted(set(raw) - fields - _NEUTRAL)
    if unknown:
        return f"config field '{unknown[0]}' is not ported"
    for flag in ("is_decoder", "add_cross_attention", "is_encoder_decoder"):
        if getattr(config, flag, False):
            return f"config {flag}=True is not ported"
    if getattr(config, "pruned_heads", None):
        return "pruned attention heads are not ported"
    position = raw.get("position_embedding_type", "absolute")
    if position != "absolute":
        return f"position_embedding_type '{position}' is not ported"
    distil = family == "distilbert"
    activation = config.activation if distil else config.hidden_act
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        return f"activation '{activation}' is not ported"
    if family == "mpnet" and config.relative_attention_num_buckets != MPNET_BUCKETS:
        return f"relative_attention_num_buckets={config.relative_attention_num_buckets}"
    hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
    if hidden % heads:
        return f"hidden size {hidden} is not a multiple of {heads} heads"
    offsets = {"roberta": config.pad_token_id, "mpnet": MPNET_PADDING}
    if family == "roberta" and not isinstance(config.pad_token_id, int):
        return "RoBERTa positions without a pad_token_id are not ported"
    return NativeSpec(
        family=family,
        prefix=prefix,
        num_layers=int(config.num_hidden_layers),
        hidden_size=hidden,
        num_heads=heads,
        activation=activation,
        layer_norm_eps=1e-12 if distil else float(config.layer_norm_eps),  # fixed in DistilBERT
        type_vocab_size=0 if family in ("distilbert", "mpnet") else int(config.type_vocab_size),
        position_offset=offsets.get(family),
        sinusoidal=distil and bool(config.sinusoidal_pos_embds),
        max_positions=int(config.max_position_embeddings),
        embedding_size=int(config.embedding_size) if family == "electra" else hidden,
    )


# ---------------------------------------------------------------- weights


def weight_files(resolve: Callable[[str], Path | None]) -> list[Path] | str:
    """The weight files of a model, as transformers picks them: safetensors first, then
    PyTorch pickles; single or sharded (`resolve` maps a file name to a path, None if absent)."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        path = resolve(single)
        if path is not None:
            return [path]
        path = resolve(index)
        if path is not None:
            index_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(index_map.values()))
            paths = [resolve(name) for name in shards]
            if any(p is None for p in paths):
                return f"a shard of {index} is missing"
            return paths
    return "no model.safetensors or pytorch_model.bin"


def _read_tensors(files: Sequence[Path]) -> dict[str, torch.Tensor]:
    """Every tensor of the weight files (OSError naming a file that cannot be read)."""
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                tensors.update(load_file(str(file)))
            else:
                tensors.update(torch.load(file, map_location="cpu", weights_only=True))
        except Exception as err:  # safetensors' and pickle's own error types
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise OSError(f"cannot read {file.name}: {first}") from None
    return tensors


def _layer_names(spec: NativeSpec, i: int) -> dict[str, str]:
    """Parameter names (without `.weight`/`.bias`) of encoder layer `i`, by role."""
    if spec.family == "distilbert":
        base = f"transformer.layer.{i}."
        return {
            "q": base + "attention.q_lin", "k": base + "attention.k_lin",
            "v": base + "attention.v_lin", "o": base + "attention.out_lin",
            "ln1": base + "sa_layer_norm", "ff1": base + "ffn.lin1",
            "ff2": base + "ffn.lin2", "ln2": base + "output_layer_norm",
        }  # fmt: skip
    base = f"encoder.layer.{i}."
    if spec.family == "mpnet":
        q, k, v, o = (base + f"attention.attn.{x}" for x in "qkvo")
        ln1 = base + "attention.LayerNorm"
    else:
        q, k, v = (base + f"attention.self.{x}" for x in ("query", "key", "value"))
        o, ln1 = base + "attention.output.dense", base + "attention.output.LayerNorm"
    return {
        "q": q, "k": k, "v": v, "o": o, "ln1": ln1, "ff1": base + "intermediate.dense",
        "ff2": base + "output.dense", "ln2": base + "output.LayerNorm",
    }  # fmt: skip


class _Weights:
    """The checkpoint's tensors under the base model's names (task prefix dropped, old
    `gamma`/`beta` LayerNorm names read as `weight`/`bias`), cast for the device."""

    def __init__(self, tensors: dict[str, torch.Tensor], prefix: str, cast) -> None:
        self.tensors = tensors
        self.prefix = prefix if any(k.startswith(prefix) for k in tensors) else ""
        self.cast = cast

    def get(self, name: str) -> torch.Tensor | None:
        key = self.prefix + name
        tensor = self.tensors.get(key)
        if tensor is None and key.endswith((".weight", ".bias")):
            old = key.rsplit(".", 1)[0] + (".gamma" if key.endswith(".weight") else ".beta")
            tensor = self.tensors.get(old)
        return None if tensor is None else self.cast(tensor)

    def need(self, name: str) -> torch.Tensor:
        tensor = self.get(name)
        if tensor is None:
            raise KeyError(name)
        return tensor


def sinusoidal_positions(n_pos: int, dim: int) -> torch.Tensor:
    """DistilBERT's fixed position table, computed as transformers computes it (float64)."""
    import numpy as np

    angle = np.array([[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)]
                      for pos in range(n_pos)])  # fmt: skip
    out = torch.empty(n_pos, dim)
    out[:, 0::2] = torch.FloatTensor(np.sin(angle[:, 0::2]))
    out[:, 1::2] = torch.FloatTensor(np.cos(angle[:, 1::2]))
    return out


@dataclass(eq=False)
class _Layer:
    qkv_w: torch.Tensor  # (3H, H): query, key and value in one matmul
    qkv_b: torch.Tensor
    o_w: torch.Tensor
    o_b: torch.Tensor
    ln1: tuple[torch.Tensor, torch.Tensor]
    ff1_w: torch.Tensor
    ff1_b: torch.Tensor
    ff2_w: torch.Tensor
    ff2_b: torch.Tensor
    ln2: tuple[torch.Tensor, torch.Tensor]


class NativeEncoder:
    """The weights of one model and the forward pass over them (see the module docstring)."""

    def __init__(self, spec: NativeSpec, tensors: dict[str, torch.Tensor], cast) -> None:
        """Raises KeyError naming a weight the checkpoint lacks."""
        self.spec = spec
        w = _Weights(tensors, spec.prefix, cast)
        emb = "embeddings."
        self.word = w.need(emb + "word_embeddings.weight")
        self.position = w.get(emb + "position_embeddings.weight")
        if self.position is None and spec.sinusoidal:  # not saved: computed as transformers does
            self.position = cast(sinusoidal_positions(spec.max_positions, spec.hidden_size))
        if self.position is None:
            raise KeyError(emb + "position_embeddings.weight")
        self.types = w.need(emb + "token_type_embeddings.weight") if spec.type_vocab_size else None
        self.emb_ln = (w.need(emb + "LayerNorm.weight"), w.need(emb + "LayerNorm.bias"))
        self.project = None  # as transformers: a projection where the sizes differ
        if spec.embedding_size != spec.hidden_size:
            self.project = (w.need("embeddings_project.weight"), w.need("embeddings_project.bias"))
        self.relative = w.need("encoder.relative_attention_bias.weight") if (
            spec.family == "mpnet") else None  # fmt: skip
        self.layers = [self._layer(w, _layer_names(spec, i)) for i in range(spec.num_layers)]
        self.act = ACTIVATIONS[spec.activation]
        self._check_shapes()

    def _check_shapes(self) -> None:
        """ValueError where the weights do not have the config's sizes (transformers then
        loads the model, and says so in its own words)."""
        hidden, spec = self.spec.hidden_size, self.spec
        width = self.word.shape[1]  # the embeddings' width (ELECTRA's may be smaller)
        checks = [
            ("word embeddings", (width,), (spec.embedding_size,)),
            ("position embeddings", self.position.shape[1:], (width,)),
            ("embedding LayerNorm", self.emb_ln[0].shape, (width,)),
        ]
        if self.project is not None:
            checks.append(("embeddings projection", self.project[0].shape, (hidden, width)))
        if self.types is not None:
            checks.append(("segment embeddings", self.types.shape, (spec.type_vocab_size, width)))
        if self.relative is not None:
            checks.append(("relative position bias", self.relative.shape,
                           (MPNET_BUCKETS, spec.num_heads)))  # fmt: skip
        for i, layer in enumerate(self.layers, start=1):
            inner = layer.ff1_w.shape[0]
            checks += [
                (f"layer {i} query, key and value", layer.qkv_w.shape, (3 * hidden, hidden)),
                (f"layer {i} attention output", layer.o_w.shape, (hidden, hidden)),
                (f"layer {i} feed-forward out", layer.ff2_w.shape, (hidden, inner)),
                (f"layer {i} LayerNorms", (*layer.ln1[0].shape, *layer.ln2[0].shape),
                 (hidden, hidden)),
            ]  # fmt: skip
        for name, found, wanted in checks:
            if tuple(found) != tuple(wanted):
                raise ValueError(f"the {name} weights are {tuple(found)}, the config says "
                                 f"{tuple(wanted)}")  # fmt: skip

    @staticmethod
    def _layer(w: _Weights, names: dict[str, str]) -> _Layer:
        def pair(role: str) -> tuple[torch.Tensor, torch.Tensor]:
            return w.need(names[role] + ".weight"), w.need(names[role] + ".bias")

        (qw, qb), (kw, kb), (vw, vb) = pair("q"), pair("k"), pair("v")
        return _Layer(
            torch.cat([qw, kw, vw]), torch.cat([qb, kb, vb]), *pair("o"), pair("ln1"),
            *pair("ff1"), *pair("ff2"), pair("ln2"),
        )  # fmt: skip

    # ------------------------------------------------------------ the pass

    def embed(self, ids: torch.Tensor, types: torch.Tensor | None) -> torch.Tensor:
        """Hidden state 0: `(B, T, H)`."""
        spec = self.spec
        b, t = ids.shape
        if spec.position_offset is None:
            positions = torch.arange(t, device=ids.device).expand(b, t)
        else:  # fairseq's positions: count real tokens from offset + 1; padding keeps offset
            real = ids.ne(spec.position_offset).int()
            positions = (torch.cumsum(real, dim=1).type_as(real) * real).long()
            positions = positions + spec.position_offset
        h = F.embedding(ids, self.word)
        if self.types is not None:
            h = h + F.embedding(torch.zeros_like(ids) if types is None else types, self.types)
        h = h + F.embedding(positions, self.position)
        h = F.layer_norm(h, h.shape[-1:], *self.emb_ln, eps=spec.layer_norm_eps)
        if self.project is not None:
            h = F.linear(h, *self.project)
        return h

    def attention_bias(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """What SDPA takes: `(B, 1, 1, T)` booleans (True = attend), or for MPNet the
        additive `(B, A, T, T)` relative position bias with padding at the dtype's minimum."""
        keep = mask.bool()[:, None, None, :]
        if self.relative is None:
            return keep
        t = mask.shape[1]
        position = torch.arange(t, device=mask.device)
        buckets = _relative_buckets(position[None, :] - position[:, None])  # (T, T)
        bias = F.embedding(buckets, self.relative).permute(2, 0, 1)[None]  # (1, A, T, T)
        padding = torch.zeros(keep.shape, dtype=dtype, device=mask.device)
        return bias.to(dtype) + padding.masked_fill(~keep, torch.finfo(dtype).min)

    def layer(self, h: torch.Tensor, layer: _Layer, bias: torch.Tensor) -> torch.Tensor:
        """One encoder layer: `(B, T, H)` -> `(B, T, H)`."""
        b, t, width = h.shape
        heads = self.spec.num_heads
        eps = self.spec.layer_norm_eps
        qkv = F.linear(h, layer.qkv_w, layer.qkv_b).view(b, t, 3, heads, width // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, A, T, d)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, A, T, d)
        context = context.transpose(1, 2).reshape(b, t, width)
        h = F.layer_norm(h + F.linear(context, layer.o_w, layer.o_b), (width,), *layer.ln1, eps=eps)
        inner = self.act(F.linear(h, layer.ff1_w, layer.ff1_b))
        return F.layer_norm(h + F.linear(inner, layer.ff2_w, layer.ff2_b), (width,), *layer.ln2,
                            eps=eps)  # fmt: skip

    def hidden_states(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        types: torch.Tensor | None,
        layers: Sequence[int],
    ) -> list[torch.Tensor]:
        """Hidden states `layers` (0 = embeddings) of a padded batch, one `(B, T, H)` each;
        layers past the deepest one asked for are never run."""
        wanted = set(layers)
        h = self.embed(ids, types)
        kept = {0: h} if 0 in wanted else {}
        bias = self.attention_bias(mask, h.dtype)
        for i, layer in enumerate(self.layers[: max(layers)], start=1):
            h = self.layer(h, layer, bias)
            if i in wanted:
                kept[i] = h
        return [kept[i] for i in layers]


def _relative_buckets(relative: torch.Tensor, num_buckets: int = MPNET_BUCKETS,
                      max_distance: int = 128) -> torch.Tensor:  # fmt: skip
    """MPNet's (T5's) bucket of each relative position, as transformers computes it."""
    n = -relative
    num_buckets //= 2
    out = (n < 0).to(torch.long) * num_buckets
    n = torch.abs(n)
    max_exact = num_buckets // 2
    large = max_exact + (
        torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)  # fmt: skip
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return out + torch.where(n < max_exact, n, large)


def load_native(
    spec: NativeSpec, files: Sequence[Path], device: torch.device, dtype: torch.dtype
) -> NativeEncoder | str:
    """The model's weights on `device` in `dtype`, or why they cannot run natively."""

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=device, dtype=dtype)

    tensors = _read_tensors(files)
    try:
        return NativeEncoder(spec, tensors, cast)
    except KeyError as err:
        return f"the checkpoint has no weight {err.args[0]}"
    except ValueError as err:
        return str(err)


class NativeForward:
    """The `Forward` of a `NativeEncoder`: a padded batch in, the layers asked for out."""

    def __init__(
        self,
        encoder: NativeEncoder,
        input_names: Sequence[str],
        to_device: Callable[[torch.Tensor], torch.Tensor],
        lock: threading.Lock | contextlib.AbstractContextManager,
    ) -> None:
        self.encoder = encoder
        self.token_types = "token_type_ids" in input_names
        self.to_device = to_device
        self.lock = lock

    @torch.inference_mode()
    def __call__(self, batch: dict[str, torch.Tensor], layers: Sequence[int]) -> list[torch.Tensor]:
        ids = self.to_device(batch["input_ids"])
        mask = self.to_device(batch["attention_mask"])
        types = batch.get("token_type_ids") if self.token_types else None
        types = None if types is None else self.to_device(types)
        with self.lock:
            return self.encoder.hidden_states(ids, mask, types, layers)
