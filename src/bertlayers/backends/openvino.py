"""The forward pass on OpenVINO: the PyTorch model converted once per layer selection.

On the CPUs measured (`bench/backends.py`, 2 cores, AVX-512) OpenVINO's fused graph ran the
all-layer forward pass faster than PyTorch eager in float32, with every layer within 2e-5 of
it. The model is converted straight from PyTorch (OpenVINO's PyTorch frontend, no ONNX file),
with only the layers up to the deepest one requested (early exit) and one output holding the
requested hidden states `(K, B, T, H)`; batch size and length stay dynamic. Inference
precision is pinned to float32 (OpenVINO would otherwise pick bfloat16 where the CPU has it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import ModelError, OptionError, first_line

INSTALL_HINT = "pip install 'bertlayers[openvino]'"
KEEP_COMPILED = 4  # layer selections kept converted; another one converts again (seconds)


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise OptionError(
            f"backend 'openvino' needs the openvino package, which is not installed "
            f"({INSTALL_HINT})"
        ) from None
    return openvino


class SelectedStates(torch.nn.Module):
    """The encoder with the requested hidden states stacked as its one output."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str], layers: Sequence[int]):
        super().__init__()
        self.model = model
        self.names = list(names)
        self.layers = list(layers)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, inputs, strict=True)), output_hidden_states=True)
        return torch.stack([out.hidden_states[i] for i in self.layers])


class OpenVINOForward:
    """Runs padded batches through OpenVINO on the CPU; one compiled model per selection."""

    def __init__(
        self,
        model: torch.nn.Module,
        input_names: Sequence[str],
        depth: Callable[[int], contextlib.AbstractContextManager],
        threads: int,
    ) -> None:
        """`depth(n)` is the encoder's context that keeps only the first `n` layers; the
        conversion runs inside it, so deeper layers are not in the converted graph."""
        self._ov = _import_openvino()
        self._core = self._ov.Core()
        self._model = model
        self._names = list(input_names)
        self._depth = depth
        self._config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        self._compiled: dict[tuple[int, ...], object] = {}  # the latest few, oldest first

    @property
    def version(self) -> str:
        """The OpenVINO version, for provenance."""
        return self._ov.get_version().split("-")[0]

    def _convert(self, layers: tuple[int, ...]):
        """Trace the model for `layers` and compile it for the CPU.

        The PyTorch frontend is driven directly rather than through `openvino.convert_model`:
        the same graph (measured equally fast), converted in half the time, and without the
        usage-telemetry events `convert_model` adds to the one `import openvino` sends.
        """
        from openvino.frontend import FrontEndManager
        from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

        ov = self._ov
        # The example has padding, so no trace takes the path for a mask of all ones.
        mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
        example = tuple(mask if n == "attention_mask" else mask * 0 + 1 for n in self._names)
        try:
            with self._depth(max(1, max(layers))), torch.no_grad(), _quiet_tracing():
                decoder = TorchScriptPythonDecoder(
                    SelectedStates(self._model, self._names, layers),
                    example_input=example,
                    shared_memory=True,
                )
            frontend = FrontEndManager().load_by_framework("pytorch")
            graph = frontend.load(decoder)
            for index in range(len(self._names)):  # any batch size and length
                place = graph.get_place_by_input_index(index)
                graph.set_partial_shape(place, ov.PartialShape([-1, -1]))
                graph.set_element_type(place, ov.Type.i64)
            return self._core.compile_model(frontend.convert(graph), "CPU", self._config)
        except Exception as err:  # conversion errors come from many layers of OpenVINO
            first = first_line(err)
            model_type = getattr(self._model.config, "model_type", type(self._model).__name__)
            raise ModelError(
                f"OpenVINO cannot convert this {model_type} model ({first[:200]}); "
                "use the default backend 'torch'"
            ) from None

    def __call__(self, batch: dict[str, torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
        """The hidden states `layers` of a padded batch: `(K, B, T, H)` float32 on the CPU."""
        key = tuple(layers)
        compiled = self._compiled.pop(key, None)
        if compiled is None:
            if len(self._compiled) >= KEEP_COMPILED:  # each one holds its own packed weights
                del self._compiled[next(iter(self._compiled))]
            compiled = self._convert(key)
        self._compiled[key] = compiled
        inputs = [np.ascontiguousarray(batch[name].numpy(), dtype=np.int64) for name in self._names]
        result = compiled(inputs)  # outputs are copied out of the request (share_outputs=False)
        return torch.from_numpy(result[0])


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Tracing warnings (`TracerWarning`, shape-dependent branches) are about the trace, not
    the user's data: keep them off the user's stderr."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
