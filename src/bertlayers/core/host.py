"""Device results to host memory: on a CUDA device through one reused pinned buffer.

`tensor.cpu()` allocates fresh pageable host memory for every batch. On the H200 GPU check
(`bench/results/gpu.json`, `d2h`) that ran at 1.3 GB/s where a copy into pinned memory ran at
54 GB/s, and token-level rows, which copy every layer of every token, were bound by it.
"""

from __future__ import annotations

import numpy as np
import torch


class HostCopy:
    """Copies device tensors to host arrays; each array is valid until the next copy."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def numpy(self, tensor: torch.Tensor) -> np.ndarray:
        """`tensor` on the host as a numpy array (a view of the reused buffer on CUDA)."""
        if tensor.device.type != "cuda":
            return tensor.cpu().numpy()
        size = tensor.numel()
        buffer = self._buffer
        if buffer is None or buffer.dtype != tensor.dtype or buffer.numel() < size:
            # a little room to spare, so batches that grow a bit do not allocate again
            buffer = torch.empty(size + size // 4, dtype=tensor.dtype, pin_memory=True)
            self._buffer = buffer
        view = buffer[:size].view(tensor.shape)
        view.copy_(tensor)  # blocking: the rows are read as soon as this returns
        return view.numpy()
