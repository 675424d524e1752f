"""The attention pass: maps per layer and head from the unmodified transformers model, with
eager attention for this pass only (SDPA, the fast path's kernel, cannot return maps), and
the value norms of norm-based attention taken with forward hooks.

Kept apart from the fast path: it runs under the encoder's lock, switches the model to eager
attention and back, and stops at the deepest layer asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

from ..errors import ModelError

# (value projection, output projection) inside one encoder layer, by architecture family;
# a fused `Wqkv` holds the value as its third part
VALUE_AND_OUTPUT = (
    ("attention.self.value", "attention.output.dense"),  # BERT, RoBERTa, ELECTRA, XLM-R
    ("attention.self.value_proj", "attention.output.dense"),  # DeBERTa(-v2)
    ("attention.v_lin", "attention.out_lin"),  # DistilBERT
    ("attention.attn.v", "attention.attn.o"),  # MPNet
    ("attn.Wqkv", "attn.Wo"),  # ModernBERT
)


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """The model with eager attention for the duration (and as it was after); models that
    only have eager attention (DeBERTa, MPNet) are left as they are."""
    config = model.config
    before = config._attn_implementation
    if before == "eager" or not model._can_set_attn_implementation():
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def _projections(layer: torch.nn.Module) -> tuple[torch.nn.Linear, torch.nn.Linear, bool]:
    modules = dict(layer.named_modules())
    for value, output in VALUE_AND_OUTPUT:
        if value in modules and output in modules:
            return modules[value], modules[output], value.endswith("Wqkv")
    raise ModelError(
        f"norm-based attention needs the value and output projections of each layer; "
        f"{type(layer).__name__} has none of the known ones"
    )


class AttentionForward:
    """Maps `(B, K, A, T, T)` of a padded batch for layers `1..L` and heads, and optionally the
    norms `(B, K, A, T)` of each key token's transformed value vector ‖f_h(x_j)‖ (the value
    projection of head h, then head h's slice of the output projection, without its bias)."""

    def __init__(
        self,
        model: torch.nn.Module,
        layer_list: Sequence[torch.nn.Module],
        input_names: Sequence[str],
        to_device: Callable[[torch.Tensor], torch.Tensor],
        depth: Callable[[int], contextlib.AbstractContextManager],
        lock,
        num_heads: int,
    ) -> None:
        self.model = getattr(model, "_orig_mod", model)  # a compiled model's own module
        self.layer_list = list(layer_list)
        self.input_names = list(input_names)
        self.to_device = to_device
        self.depth = depth
        self.lock = lock
        self.num_heads = num_heads

    @torch.inference_mode()
    def __call__(
        self,
        batch: dict[str, torch.Tensor],
        layers: Sequence[int],
        heads: Sequence[int],
        norms: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        inputs = {name: self.to_device(batch[name]) for name in self.input_names if name in batch}
        deepest = max(layers)
        values: dict[int, torch.Tensor] = {}
        hooks = []
        with self.lock, self.depth(deepest), eager_attention(self.model):
            if norms:
                hooks = [self._hook(k, values) for k in layers]
            try:
                outputs = self.model(**inputs, output_attentions=True)
            finally:
                for hook in hooks:
                    hook.remove()
        attentions = outputs.attentions or ()
        if len(attentions) < deepest:
            kind = getattr(self.model.config, "model_type", type(self.model).__name__)
            raise ModelError(
                f"transformers returns no attention maps for this {kind} model "
                f"({len(attentions)} of {deepest} layers): attention is not available for it"
            )
        index = torch.as_tensor(list(heads), device=attentions[0].device)
        maps = torch.stack([attentions[k - 1].index_select(1, index) for k in layers], dim=1)
        if not norms:
            return maps.float(), None
        stacked = torch.stack([values[k].index_select(1, index) for k in layers], dim=1)
        return maps.float(), stacked.float()  # (B, K, A, T, T), (B, K, A, T)

    def _hook(self, layer: int, out: dict[int, torch.Tensor]):
        """A hook on layer `layer`'s value projection that keeps ‖f_h(x_j)‖: `(B, A_all, T)`."""
        value, output, fused = _projections(self.layer_list[layer - 1])
        heads = self.num_heads
        weight = output.weight  # (H, heads * d): head h reads columns h*d:(h+1)*d

        def keep(module, args, result) -> None:
            v = result
            if fused:  # (B, T, 3 * heads * d): query, key, value
                v = v.view(*v.shape[:-1], 3, -1)[..., 2, :]
            b, t, width = v.shape
            d = width // heads
            per_head = v.view(b, t, heads, d).transpose(1, 2)  # (B, heads, T, d)
            w = weight.view(weight.shape[0], heads, d).transpose(0, 1)  # (heads, H, d)
            transformed = torch.einsum("bhtd,hod->bhto", per_head, w)  # (B, heads, T, H)
            out[layer] = transformed.norm(dim=-1)  # (B, heads, T)

        return value.register_forward_hook(keep)
