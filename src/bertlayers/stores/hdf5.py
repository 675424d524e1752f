"""HDF5 (`.h5`/`.hdf5`, via h5py): one dataset per layer, for MATLAB, R, Julia and friends.

Layout: `/vectors/layer_6` `(rows, H)` for each stored layer (chunked by rows, so reading one
layer reads nothing of the others), `/index/*` (ids, offsets, items, spans, per-text columns)
and the provenance as JSON in the root attribute `bertlayers`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import FileArray, StoreData, Utf8Strings, array_blocks, block_ranges, layer_names

STRING_BLOCK = 1 << 16  # strings converted and written at a time


class HDF5Source:
    """Reads layers of an HDF5 store lazily (the file stays open while the source lives)."""

    def __init__(self, path: Path, names: list[str]) -> None:
        import h5py

        self.file = h5py.File(path, "r")
        self.datasets = [self.file["vectors"][name] for name in names]
        rows, hidden = self.datasets[0].shape
        self.shape = (rows, len(names), hidden)
        self.dtype = self.datasets[0].dtype

    def layer(self, position: int) -> np.ndarray:
        return self.datasets[position][...]

    def block(self, start: int, stop: int) -> np.ndarray:
        return np.stack([d[start:stop] for d in self.datasets], axis=1)

    def all(self) -> np.ndarray:
        return self.block(0, self.shape[0])


def write_hdf5(data: StoreData, path: Path) -> list[Path]:
    import h5py

    tmp = path.with_name(path.name + ".tmp")
    k, hidden = data.row_shape
    names = layer_names(data.provenance, k)
    row_bytes = k * hidden * data.dtype.itemsize
    with h5py.File(tmp, "w") as h5:
        h5.attrs["bertlayers"] = json.dumps(data.provenance)
        group = h5.create_group("vectors")
        chunk_rows = max(1, min(data.num_rows, (1 << 20) // max(hidden * data.dtype.itemsize, 1)))
        datasets = [
            group.create_dataset(
                name, shape=(data.num_rows, hidden), dtype=data.dtype, chunks=(chunk_rows, hidden)
            )
            for name in names
        ]
        for start, stop in block_ranges(data.num_rows, row_bytes):
            block = data.rows(start, stop)
            for position, dataset in enumerate(datasets):
                dataset[start:stop] = block[:, position]
        index = h5.create_group("index")
        for name, value in data.index().items():
            if isinstance(value, list | Utf8Strings):  # ids, items: variable-length UTF-8
                strings = index.create_dataset(name, shape=(len(value),), dtype=h5py.string_dtype())
                for start in range(0, len(value), STRING_BLOCK):  # not all as Python strings
                    strings[start : start + STRING_BLOCK] = np.asarray(
                        value[start : start + STRING_BLOCK], dtype=object
                    )
            else:
                value = value if isinstance(value, FileArray) else np.asarray(value)
                dataset = index.create_dataset(name, shape=value.shape, dtype=value.dtype)
                start = 0
                for block in array_blocks(value):
                    dataset[start : start + len(block)] = block
                    start += len(block)
    return [tmp]


def read_hdf5(path: Path) -> tuple[HDF5Source, dict, dict]:
    import h5py

    with h5py.File(path, "r") as h5:
        provenance = json.loads(h5.attrs["bertlayers"])
        index = {}
        for name, dataset in h5["index"].items():
            value = dataset[...]
            if value.dtype.kind == "O":  # variable-length strings come back as bytes
                value = [v.decode() if isinstance(v, bytes) else str(v) for v in value]
            index[name] = value
        names = list(h5["vectors"].keys())
    stored = layer_names(provenance, len(names))
    return HDF5Source(path, stored), index, provenance
