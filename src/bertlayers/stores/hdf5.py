"""HDF5 (`.h5`/`.hdf5`, via h5py): one dataset per layer, for MATLAB, R, Julia and friends.

Layout: `/vectors/layer_6` `(rows, H)` for each stored layer (chunked by rows, so reading one
layer reads nothing of the others), `/index/*` (ids, offsets, items, spans, per-text columns)
and the provenance as JSON in the root attribute `bertlayers`.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from .base import (
    FileArray,
    StoreData,
    Utf8Strings,
    array_blocks,
    block_ranges,
    ensure_room,
    index_bytes,
    layer_names,
    vector_bytes,
)

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
    """Write the store as `PATH.tmp`; returns it for the caller to rename.

    HDF5 writes through a `_FailSafeFile`, so that the library never sees an I/O error: a
    failure (a full disk) stops the writing between two h5py calls, the file is closed and
    removed, and the error is raised as an `OSError` naming the file."""
    tmp = path.with_name(path.name + ".tmp")
    index = data.index()
    # a lower bound: HDF5 adds metadata, pads the last chunk of each layer, and stores each
    # string as a 16-byte heap id plus a heap object
    ensure_room(tmp, vector_bytes(data) + index_bytes(index))
    target = _FailSafeFile(tmp)
    h5 = None
    try:
        h5 = _create(target)
        _fill(h5, data, index, target)
        h5.close()  # its last metadata written: a failure there is in target.failure too
        target.check()
    except BaseException as err:
        failure = target.failure or err  # the cause, not what it made h5py raise
    else:
        target.close()
        return [tmp]
    _discard(h5, target)
    if isinstance(failure, OSError):
        code = failure.errno
        raise OSError(code, os.strerror(code) if code else str(failure), str(tmp)) from None
    raise failure


class _FailSafeFile:
    """The file under an HDF5 file being written (h5py's `fileobj` driver), which never
    fails a read or a write of the library's.

    libhdf5 does not survive every failed write: a string dataset's write whose global heap
    cannot be written (a full disk) crashes the process (H5T__conv_vlen frees memory it never
    allocated), and objects whose flush failed retry it when freed, printing a traceback each,
    then crash. So the first failure (an `OSError`, or Ctrl-C) is kept in `failure` for the
    writer to raise between two h5py calls (`check`), and what the library writes from then
    on is held in memory (its reads see it), so that the call in progress and the closing of
    the file end as if all went well; the file is then discarded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self.position = 0
        self.size = 0
        self.failure: BaseException | None = None
        self.held: list[tuple[int, bytes]] = []  # (offset, bytes) written since the failure

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.position = offset + (0, self.position, self.size)[whence]
        return self.position

    def tell(self) -> int:
        return self.position

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        start = self.position
        if self.failure is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self.fd, view[done:], start + done)
            except BaseException as err:  # kept, raised by check()
                self.failure = err
        if self.failure is not None:
            self.held.append((start, bytes(view)))
        self.position = start + len(view)
        self.size = max(self.size, self.position)
        return len(view)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        start = self.position
        done = 0
        try:
            while done < len(view):
                got = os.pread(self.fd, len(view) - done, start + done)
                if not got:
                    break
                view[done : done + len(got)] = got
                done += len(got)
        except BaseException as err:  # kept, raised by check()
            self.failure = self.failure or err
        view[done:] = bytes(len(view) - done)  # past what reached the disk
        for at, data in self.held:
            low, high = max(at, start), min(at + len(data), start + len(view))
            if low < high:
                view[low - start : high - start] = data[low - at : high - at]
        self.position = start + len(view)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self.position if size is None else size
        if self.failure is None:
            try:
                os.ftruncate(self.fd, size)
            except BaseException as err:  # kept, raised by check()
                self.failure = err
        self.size = size
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _create(target: _FailSafeFile):
    """A new HDF5 file over `target`, which keeps no raw data in memory (no chunk cache,
    8 MiB a dataset since HDF5 2.0, nor sieve buffer): the writes reach the file in the
    call that makes them, and a failure is seen when that call returns."""
    import h5py
    from h5py import h5f, h5fd, h5p

    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5f.LIBVER_EARLIEST, h5f.LIBVER_LATEST)  # as h5py.File's default
    metadata, slots, _, w0 = fapl.get_cache()
    fapl.set_cache(metadata, slots, 0, w0)
    fapl.set_sieve_buf_size(0)
    fapl.set_fileobj_driver(h5fd.fileobj_driver, target)
    fcpl = h5p.create(h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)  # as h5py.File's default
    name = repr(target).encode("ascii", "replace")
    return h5py.File(h5f.create(name, h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl))


def _fill(h5, data: StoreData, index: dict, target: _FailSafeFile) -> None:
    """Write the vectors, index and provenance, checking `target` after each write."""
    import h5py

    k, hidden = data.row_shape
    names = layer_names(data.provenance, k)
    row_bytes = k * hidden * data.dtype.itemsize
    h5.attrs["bertlayers"] = json.dumps(data.provenance)
    group = h5.create_group("vectors")
    chunk_rows = max(1, min(data.num_rows, (1 << 20) // max(hidden * data.dtype.itemsize, 1)))
    datasets = [
        group.create_dataset(
            name, shape=(data.num_rows, hidden), dtype=data.dtype, chunks=(chunk_rows, hidden)
        )
        for name in names
    ]
    target.check()
    for start, stop in block_ranges(data.num_rows, row_bytes):
        block = data.rows(start, stop)
        for position, dataset in enumerate(datasets):
            dataset[start:stop] = block[:, position]
            target.check()
    group = h5.create_group("index")
    for name, value in index.items():
        if isinstance(value, list | Utf8Strings):  # ids, items: variable-length UTF-8
            strings = group.create_dataset(name, shape=(len(value),), dtype=h5py.string_dtype())
            for start in range(0, len(value), STRING_BLOCK):  # not all as Python strings
                strings[start : start + STRING_BLOCK] = np.asarray(
                    value[start : start + STRING_BLOCK], dtype=object
                )
                target.check()
        else:
            value = value if isinstance(value, FileArray) else np.asarray(value)
            dataset = group.create_dataset(name, shape=value.shape, dtype=value.dtype)
            start = 0
            for block in array_blocks(value):
                dataset[start : start + len(block)] = block
                start += len(block)
                target.check()


def _discard(h5, target: _FailSafeFile) -> None:
    """Close a file whose writing failed (the library sees no error: it closes, and no h5py
    object is left over unwritten data), then remove it."""
    if h5 is not None:
        with contextlib.suppress(Exception):
            h5.close()
    target.held.clear()
    target.close()
    with contextlib.suppress(OSError):
        target.path.unlink(missing_ok=True)


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
