"""What every store format reads and writes: rows of vectors, an index, a provenance.

Writers take a `StoreData` (the staging area of a run, or a store being converted) and read
it in blocks of rows, so memory stays bounded whatever the store's size. Readers return a
`LayerSource`, which reads one layer, a block of rows, or everything, lazily where the format
allows.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import OutputError
from ..results import ArraySource, LayerSource

BLOCK_BYTES = 64 * 2**20  # rows read and written at a time

NPY_HEADER_BYTES = 128  # fixed, so the final shape can be written over the first one


class StoreData(Protocol):
    """Rows `(num_rows, K, H)` plus their index and provenance."""

    num_rows: int
    row_shape: tuple[int, int]
    dtype: np.dtype
    provenance: dict

    def rows(self, start: int, stop: int) -> np.ndarray: ...

    def index(self) -> dict[str, np.ndarray]: ...


@dataclass
class StoreContent:
    """`StoreData` over vectors read block by block (a finished staging area's file, an
    opened store's source), with the index and provenance a writer needs."""

    vectors: FileArray | LayerSource  # has `shape`, `dtype` and `block(start, stop)`
    index_arrays: dict
    provenance: dict

    @property
    def num_rows(self) -> int:
        return self.vectors.shape[0]

    @property
    def row_shape(self) -> tuple[int, int]:
        return tuple(self.vectors.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.vectors.dtype)

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.vectors.block(start, stop)

    def index(self) -> dict[str, np.ndarray]:
        return self.index_arrays


class FileArray:
    """An array in a file (C order, from a byte offset), read in slices with plain reads
    rather than through a memory map.

    Pages read through a map stay in the process's resident set while the map lives, so a
    writer copying a large store block by block would grow with the store; read pages stay
    in the page cache instead, where the kernel can drop them. Stores' vectors are read so,
    and a run's per-token index (spans, token strings) is gathered into such files at its
    end, so that writing the store holds a block of it at a time.
    """

    def __init__(
        self, path: str | os.PathLike, dtype: np.dtype, shape: tuple[int, ...], offset: int = 0
    ) -> None:
        self.path, self.offset = path, offset
        self.dtype, self.shape = np.dtype(dtype), tuple(int(n) for n in shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @classmethod
    def from_npy(cls, path: str | os.PathLike, start: int = 0) -> FileArray:
        """The array of a `.npy` file, or of one beginning at byte `start` (a zip member)."""
        with open(path, "rb") as handle:
            handle.seek(start)
            version = np.lib.format.read_magic(handle)
            header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = header(handle)
            offset = handle.tell()
        if fortran_order:
            raise ValueError(f"{path} is in Fortran order")
        return cls(path, dtype, shape, offset)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` as a new array `(stop - start, *row_shape)`."""
        out = np.empty((max(0, stop - start), *self.shape[1:]), dtype=self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        with open(self.path, "rb", buffering=0) as handle:
            handle.seek(self.offset + start * self.row_bytes)
            while view:
                got = handle.readinto(view)
                if not got:
                    raise ValueError(f"{self.path} is shorter than its header says")
                view = view[got:]
        return out

    block = read  # the `LayerSource` spelling

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("a FileArray is sliced without a step")
            return self.read(start, max(start, stop))
        i = range(len(self))[key]
        return self.read(i, i + 1)[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.read(0, len(self))
        return out if dtype is None else out.astype(dtype)

    def memmap(self) -> np.ndarray:
        """All rows, memory-mapped read-only."""
        if not self.shape[0]:
            return np.empty(self.shape, dtype=self.dtype)
        return np.memmap(self.path, self.dtype, mode="r", offset=self.offset, shape=self.shape)


class NpySource(ArraySource):
    """A `.npy` (or a stored `.npz` member) memory-mapped for reading layers and all rows,
    whose blocks are read with plain reads (see FileArray), so copying it stays bounded."""

    def __init__(self, rows: FileArray) -> None:
        super().__init__(rows.memmap())
        self.rows = rows

    def block(self, start: int, stop: int) -> np.ndarray:
        return self.rows.read(start, stop)


def array_blocks(array: np.ndarray | FileArray) -> Iterator[np.ndarray]:
    """An array in memory or in a file, in consecutive blocks of rows of about BLOCK_BYTES."""
    row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
    for start, stop in block_ranges(len(array), row_bytes):
        yield np.ascontiguousarray(array[start:stop])


def write_npy_stream(handle, array: np.ndarray | FileArray) -> None:
    """Write an array as `.npy` bytes to a file or zip member, a block at a time."""
    handle.write(npy_header(array.shape, array.dtype))
    for block in array_blocks(array):
        handle.write(memoryview(block.reshape(-1).view(np.uint8)))


def block_ranges(
    num_rows: int, row_bytes: int, most: int | None = None
) -> Iterator[tuple[int, int]]:
    """Consecutive `(start, stop)` row ranges of about BLOCK_BYTES each (or `most`, where
    that is smaller)."""
    step = max(1, min(BLOCK_BYTES, most or BLOCK_BYTES) // max(row_bytes, 1))
    for start in range(0, num_rows, step):
        yield start, min(num_rows, start + step)


def layer_names(provenance: dict, count: int) -> list[str]:
    """Dataset/column/tensor names for the K stored layers: `layer_6`, or `combined`."""
    if provenance.get("combine", "stack") != "stack":
        return ["combined"]
    names: list[str] = []
    for index in provenance["layers"][:count]:
        name = f"layer_{index}"
        while name in names:  # a layer asked for twice ("6,-1" on a 6-layer model)
            name += "_again"
        names.append(name)
    return names


def free_bytes(directory: str | os.PathLike) -> int | None:
    """Bytes free on the file system of `directory` (None where it cannot be told). The blocks
    reserved for root count as free, as a writer may be root: a check against this never
    refuses a write that would fit."""
    try:
        stat = os.statvfs(directory)
    except (OSError, AttributeError):  # gone, or no statvfs (Windows)
        return None
    return stat.f_bfree * stat.f_frsize


def ensure_room(path: os.PathLike, needed: int) -> None:
    """Raise ENOSPC, as the write would, before writing at least `needed` bytes at `path`
    where its file system has fewer free: a store known not to fit is refused before it
    fills the disk, not half way. `needed` is a lower bound of what the writer writes (what
    it writes beyond it, and a disk that others fill meanwhile, the writer still handles)."""
    free = free_bytes(os.path.dirname(os.path.abspath(path)))
    if free is not None and needed > free:
        raise OSError(
            errno.ENOSPC,
            f"{os.strerror(errno.ENOSPC)} ({needed} bytes to write, {free} free)",
            str(path),
        )


def vector_bytes(data: StoreData) -> int:
    """Bytes of a store's vectors."""
    return data.num_rows * int(np.prod(data.row_shape)) * np.dtype(data.dtype).itemsize


def index_bytes(index: dict) -> int:
    """A lower bound of the bytes an index takes in a store that does not compress it:
    its arrays, and for string lists their characters plus an 8-byte offset each."""
    total = 0
    for value in index.values():
        if isinstance(value, Utf8Strings):
            total += value.data.nbytes + 8 * len(value)
        elif isinstance(value, list | tuple):
            total += sum(map(len, map(str, value))) + 8 * len(value)
        else:
            total += value.nbytes if isinstance(value, FileArray) else np.asarray(value).nbytes
    return total


def close_all(handles) -> None:
    """Close every handle, even where one fails (its unwritten data lost: a full disk), so
    that none is left for the garbage collector to flush again; the first failure is raised
    once all are closed."""
    failure: OSError | None = None
    for handle in handles:
        try:
            handle.close()
        except OSError as err:
            failure = failure or err
    if failure is not None:
        raise failure


STRING_KEYS = ("ids", "items")  # index entries that are lists of strings


def utf8_lengths(strings: list[str], data: bytes) -> np.ndarray:
    """The UTF-8 byte length of each string, given all of them joined and encoded."""
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    if len(data) != int(lengths.sum()):  # not all ASCII: count each string's bytes
        lengths = np.fromiter(
            (len(v.encode("utf-8")) for v in strings), dtype=np.int64, count=len(strings)
        )
    return lengths


class Utf8Strings(Sequence):
    """A read-only list of strings kept as one UTF-8 buffer plus offsets, in memory or in
    files (`FileArray`s).

    A store's token strings held as Python strings cost several times the text itself; a run
    writes them to files at its end and its store is written from there, a block at a time.
    """

    def __init__(self, data: np.ndarray | FileArray, offsets: np.ndarray | FileArray) -> None:
        self.data, self.offsets = data, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            raw = self.data[self.offsets[start] : self.offsets[stop]].tobytes()
            bounds = (self.offsets[start : stop + 1] - self.offsets[start]).tolist()
            return [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(bounds)]
        i = range(len(self))[key]
        return self.data[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        yield from self[:]

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other)  # type: ignore[call-overload]


def encode_strings(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as UTF-8 bytes `(total,)` uint8 plus offsets `(n+1,)`: compact whatever their
    lengths (a fixed-width numpy string array would pad every item to the longest one)."""
    if isinstance(values, Utf8Strings):
        return values.data, values.offsets
    # One joined buffer and one array of lengths: no per-string bytes objects or int lists
    strings = values if all(isinstance(v, str) for v in values) else [str(v) for v in values]
    data = "".join(strings).encode("utf-8")
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(utf8_lengths(strings, data), out=offsets[1:])
    return np.frombuffer(data, dtype=np.uint8).copy(), offsets


def decode_strings(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    """The strings `encode_strings` packed: item i is `data[offsets[i]:offsets[i+1]]`, UTF-8."""
    raw = data.tobytes()
    return [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets.tolist())]


def pack_index(index: dict) -> dict[str, np.ndarray]:
    """The index as numeric arrays only: string lists become `NAME.utf8` + `NAME.offsets`."""
    packed = {}
    for name, value in index.items():
        if name in STRING_KEYS:
            packed[f"{name}.utf8"], packed[f"{name}.offsets"] = encode_strings(value)
        else:  # arrays in files stay there, to be written a block at a time
            packed[name] = value if isinstance(value, FileArray) else np.asarray(value)
    return packed


def unpack_index(arrays: dict[str, np.ndarray]) -> dict:
    """The inverse of `pack_index`."""
    index = {k: v for k, v in arrays.items() if "." not in k}
    for name in STRING_KEYS:
        if f"{name}.utf8" in arrays:
            index[name] = decode_strings(arrays[f"{name}.utf8"], arrays[f"{name}.offsets"])
    return index


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version 1.0 `.npy` header padded to a fixed size, so it can be rewritten in place."""
    fields = f"{{'descr': '{np.dtype(dtype).str}', 'fortran_order': False, 'shape': {shape}, }}"
    body_len = NPY_HEADER_BYTES - 10
    body = fields.ljust(body_len - 1) + "\n"
    if len(body) != body_len:
        raise OutputError(f"shape {shape} too large for the npy header")
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + body.encode("latin1")
