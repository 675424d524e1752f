"""The PyTorch forward pass (eager, torch.compile'd or int8-quantized modules alike)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence

import torch


class EagerForward:
    """Runs the model's own forward pass and picks the hidden states asked for, running only
    the layers up to the deepest one (`depth`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        input_names: Sequence[str],
        to_device: Callable[[torch.Tensor], torch.Tensor],
        depth: Callable[[int], contextlib.AbstractContextManager],
        lock: threading.Lock,
    ) -> None:
        self.model = model
        self.input_names = list(input_names)
        self.to_device = to_device
        self.depth = depth
        self.lock = lock

    @torch.inference_mode()
    def __call__(self, batch: dict[str, torch.Tensor], layers: Sequence[int]) -> list[torch.Tensor]:
        inputs = {name: self.to_device(batch[name]) for name in self.input_names if name in batch}
        # At least one layer runs: hidden state 0 is recorded on the way into the first layer.
        deepest = max(1, max(layers))
        with self.lock, self.depth(deepest):
            outputs = self.model(**inputs, output_hidden_states=True)
        states = outputs.hidden_states
        return [states[i] for i in layers]
