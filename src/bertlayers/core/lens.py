"""The MLM lens: what each layer "thinks" a token is, read through the model's own masked-LM
head (a logit lens for encoders).

The lens runs the unmodified transformers masked-LM model with its encoder cut to the first k
layers, so the head reads hidden state k exactly as it reads the last one (BERT's head is
tied to the input embeddings and applies to any layer's vectors; a model with a final norm,
as ModernBERT, has it applied to layer k too). Per layer and position: the top-k tokens with
their probabilities, and the rank of the token actually there. A model without a trained
head (the bundled sentence-transformers MiniLM has none) is refused in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ModelError, OptionError
from ..layers import resolve_layers
from .encoder import (
    default_model,
    find_layer_list,
    first_layers,
    hub_unreachable,
    load_error,
    quiet_transformers,
    resolve_device,
)


@dataclass
class LensResult:
    """One text read through the head at each selected layer."""

    id: str
    items: list[str]  # (T,) tokens, special ones included
    layers: list[int]  # hidden-state indices: 0 = embeddings, 1..L
    top_ids: np.ndarray  # (K, T, k)
    top_tokens: list[list[list[str]]]  # (K, T, k)
    top_probs: np.ndarray  # (K, T, k) float32
    rank: np.ndarray  # (K, T) rank of the token at the position (1 = the head's first choice)
    masked: np.ndarray  # (T,) bool: the position holds the mask token
    truncated: bool


class Lens:
    """A model's masked-LM head applied to every layer's token vectors."""

    def __init__(
        self, model: str | None = None, device: str | None = "auto", revision: str | None = None
    ) -> None:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        model_id = model or default_model()
        self.device = resolve_device(device)
        hub = {"revision": revision, "local_files_only": hub_unreachable(model_id)}
        try:
            with quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(model_id, **hub)
                self.model, loading = AutoModelForMaskedLM.from_pretrained(
                    model_id, output_loading_info=True, **hub
                )
        except (OSError, ValueError) as err:
            raise ModelError(load_error(model_id, err, hub["local_files_only"])) from None
        missing = sorted(loading.get("missing_keys", []))
        if missing:
            raise ModelError(
                f"model '{model_id}' has no masked-LM head (its weights lack {missing[0]}"
                f"{' and more' if len(missing) > 1 else ''}): the lens needs a model trained "
                "with one, such as bert-base-uncased"
            )
        self.model.eval().to(self.device)
        self.model_id = model_id
        self.num_layers = int(self.model.config.num_hidden_layers)
        self._layers = find_layer_list(self.model, self.num_layers)
        self._all_layers = list(self._layers)
        self.max_length = int(min(self.tokenizer.model_max_length, 1 << 20))
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit:
            self.max_length = min(self.max_length, int(limit))

    @torch.inference_mode()
    def read(
        self,
        texts: Sequence[str],
        layers: object = "all",
        k: int = 5,
        ids: Sequence[str] | None = None,
        truncate: bool = False,
    ) -> list[LensResult]:
        """Each text's top-`k` tokens and true-token rank at each selected layer (0..L)."""
        if k < 1:
            raise OptionError(f"{{opt:k}} must be at least 1, got {k}")
        selected = list(resolve_layers(layers, self.num_layers).indices)
        ids = [str(i) for i in range(len(texts))] if ids is None else list(ids)
        out = []
        for record_id, text in zip(ids, texts, strict=True):
            out.append(self._read_one(record_id, text, selected, k, truncate))
        return out

    def _read_one(
        self, record_id: str, text: str, layers: list[int], k: int, truncate: bool
    ) -> LensResult:
        full = self.tokenizer(text, truncation=False)["input_ids"]
        if len(full) > self.max_length and not truncate:
            raise OptionError(
                f"record {record_id} has {len(full)} tokens, over the limit of "
                f"{self.max_length} (use {{opt:long=truncate}} to cut it)"
            )
        enc = self.tokenizer(text, truncation=True, max_length=self.max_length, return_tensors="pt")
        accepted = {"input_ids", "attention_mask", "token_type_ids"}
        inputs = {n: t.to(self.device) for n, t in enc.items() if n in accepted}
        token_ids = enc["input_ids"][0]
        width = min(k, self.model.config.vocab_size)
        tops, probs, ranks = [], [], []
        config = self.model.config
        for layer in layers:
            with first_layers(config, self._layers, self._all_layers, layer):
                logits = self.model(**inputs).logits[0].float()  # (T, V)
            p = torch.softmax(logits, dim=-1)
            top = p.topk(width, dim=-1)
            true = logits.gather(1, token_ids.to(logits.device)[:, None])  # (T, 1)
            ranks.append(((logits > true).sum(dim=-1) + 1).cpu().numpy())
            tops.append(top.indices.cpu().numpy())
            probs.append(top.values.cpu().numpy())
        top_ids = np.stack(tops)  # (K, T, k)
        tokens = [
            [self.tokenizer.convert_ids_to_tokens(row.tolist()) for row in layer]
            for layer in top_ids
        ]
        mask_id = self.tokenizer.mask_token_id
        return LensResult(
            id=record_id,
            items=self.tokenizer.convert_ids_to_tokens(token_ids.tolist()),
            layers=layers,
            top_ids=top_ids,
            top_tokens=tokens,
            top_probs=np.stack(probs).astype(np.float32),
            rank=np.stack(ranks).astype(np.int64),
            masked=(token_ids == (-1 if mask_id is None else mask_id)).numpy(),
            truncated=len(full) > self.max_length,
        )
