"""Resolve a layer spec against a model (pure: shared by the core, the stores and analysis).

Convention (Hugging Face `hidden_states`): 0 is the embedding output, 1..L are the encoder
layers, negative indices count from the end (-1 is the last layer). Google's
`extract_features.py` and bert-as-service count encoder layers only: their index is ours minus 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import OptionError

LayerSpec = str | int | Sequence[int] | None


@dataclass(frozen=True)
class LayerSelection:
    """Resolved layer indices (non-negative, in the order asked) and the deepest one needed."""

    indices: tuple[int, ...]
    num_layers: int  # L, the number of encoder layers; valid indices are 0..L

    @property
    def deepest(self) -> int:
        """The deepest layer that must be computed: the forward pass may stop there."""
        return max(self.indices)


def _check(index: int, num_layers: int, spec: object) -> int:
    total = num_layers + 1
    if not -total <= index < total:
        raise OptionError(
            f"layer {index} in '{spec}' is out of range: this model has layers 0..{num_layers} "
            f"(0 = embeddings, {num_layers} = last encoder layer; negatives -{total}..-1)"
        )
    return index % total


def _parse_int(token: str, spec: object) -> int:
    try:
        return int(token)
    except ValueError:
        raise OptionError(
            f"invalid layer spec '{spec}': use all, an index (6), a list (0,6,-1) "
            "or a slice (-4:, 1:7)"
        ) from None


def resolve_layers(spec: LayerSpec, num_layers: int) -> LayerSelection:
    """Turn `all`, an int, a comma list (`0,6,-1`) or a slice (`-4:`, `1:7`) into indices."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return LayerSelection(tuple(range(num_layers + 1)), num_layers)
    if isinstance(spec, str) and not spec.strip():
        raise OptionError(
            "empty layer spec: use all, an index (6), a list (0,6,-1) or a slice (-4:, 1:7)"
        )
    if isinstance(spec, bool):
        raise OptionError(f"invalid layer spec '{spec}'")
    if isinstance(spec, int):
        return LayerSelection((_check(spec, num_layers, spec),), num_layers)
    if isinstance(spec, str):
        text = spec.strip()
        if ":" in text:
            parts = text.split(":")
            if len(parts) > 3:
                raise OptionError(f"invalid layer slice '{spec}': use start:stop[:step]")
            bounds = [_parse_int(p, spec) if p.strip() else None for p in parts]
            start, stop = bounds[0], bounds[1]
            step = bounds[2] if len(bounds) == 3 else None
            if step == 0:
                raise OptionError(f"invalid layer slice '{spec}': step cannot be 0")
            for bound in (start, stop):
                if bound is not None:
                    # A slice end may equal L+1 (exclusive), as in Python.
                    _check(bound - 1 if bound > 0 else bound, num_layers, spec)
            indices = tuple(range(num_layers + 1)[slice(start, stop, step)])
            if not indices:
                raise OptionError(f"layer slice '{spec}' selects no layer of 0..{num_layers}")
            return LayerSelection(indices, num_layers)
        tokens = [t for t in text.split(",")]
        if any(not t.strip() for t in tokens):
            raise OptionError(f"invalid layer spec '{spec}': empty item in the list")
        return LayerSelection(
            tuple(_check(_parse_int(t.strip(), spec), num_layers, spec) for t in tokens),
            num_layers,
        )
    indices = tuple(_check(int(i), num_layers, spec) for i in spec)
    if not indices:
        raise OptionError("empty layer list: select at least one layer")
    return LayerSelection(indices, num_layers)


def resolve_attention_layers(spec: LayerSpec, num_layers: int) -> tuple[int, ...]:
    """The layers whose self-attention is asked for, in the hidden-state convention: `all` is
    1..L; layer 0 (the embedding output) has no attention and is refused with the range."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return tuple(range(1, num_layers + 1))
    indices = resolve_layers(spec, num_layers).indices
    if 0 in indices:
        raise OptionError(
            f"layer 0 (the embedding output) has no attention, in '{spec}': the attention "
            f"layers of this model are 1..{num_layers} (negatives -{num_layers}..-1)"
        )
    return indices


def resolve_heads(spec: LayerSpec, num_heads: int) -> tuple[int, ...]:
    """Attention heads `0..A-1` from `all`, an index (negatives from the end), a list, a comma
    list (`0,3`) or a slice (`:4`)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return tuple(range(num_heads))
    try:  # the layer grammar over 0..A-1: resolve as if there were A-1 "layers"
        return resolve_layers(spec, num_heads - 1).indices
    except OptionError:
        raise OptionError(
            f"invalid heads '{spec}': this model has heads 0..{num_heads - 1} per layer "
            f"(negatives -{num_heads}..-1); use all, an index, a list (0,3) or a slice (:4)"
        ) from None
