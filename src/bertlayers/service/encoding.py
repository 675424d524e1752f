"""Vectors on the wire: JSON float lists, base64 of little-endian bytes, `.npy` and `.npz`."""

from __future__ import annotations

import base64
import io

import numpy as np

NPY = "application/x-npy"
NPZ = "application/x-npz"


def little_endian(array: np.ndarray, dtype: str) -> np.ndarray:
    """The array as contiguous little-endian `float32`/`float16`, as the wire carries it."""
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))


def to_base64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(little_endian(array, dtype).tobytes()).decode("ascii")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def wants(accept: str | None) -> str:
    """The binary type a client asks for in `Accept`, or JSON."""
    accept = (accept or "").lower()
    if NPZ in accept:
        return NPZ
    if NPY in accept:
        return NPY
    return "application/json"
