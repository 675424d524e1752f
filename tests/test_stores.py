"""Stores: every format passes the same contract; runs are crash-safe and resumable."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import corpus
from bertlayers import ExtractConfig, load
from bertlayers.errors import InputError, OutputError, TruncationWarning
from bertlayers.io.readers import records_from_texts, records_from_words
from bertlayers.stores import StoreSink, convert, describe, disk_size
from bertlayers.stores.parquet import write_parquet
from bertlayers.stores.safetensors import write_safetensors

SUFFIXES = [".npy", ".npz", ".h5", ".parquet", ".safetensors"]


@pytest.fixture(scope="module")
def texts(review_texts) -> list[str]:
    return ["", "Short one.", *review_texts[:20], "   "]


def _direct(extractor, level, texts, **options):
    method = {
        "sentence": extractor.extract,
        "token": extractor.extract_tokens,
        "word": extractor.extract_words,
    }[level]
    return method(texts, **options)


def _write(extractor, path: Path, records, config: ExtractConfig, **kwargs) -> dict:
    sink = StoreSink(path, extractor.identity(config), **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return extractor.run(sink.skip_done(records), sink, config)


class TestStoreContract:
    """Round trip: what a store gives back equals the in-memory result, bit for bit."""

    @pytest.mark.parametrize("suffix", SUFFIXES)
    @pytest.mark.parametrize("level", ["sentence", "token", "word"])
    @pytest.mark.parametrize("dtype", ["float32", "float16"])
    def test_round_trip(self, tmp_path, bundled, texts, suffix, level, dtype):
        options = {"layers": "0,3,-1", "output_dtype": dtype}
        config = ExtractConfig(level=level, **options)
        path = tmp_path / f"store{suffix}"
        _write(bundled, path, records_from_texts(texts), config)
        loaded = load(path)
        direct = _direct(bundled, level, texts, **options)
        assert not Path(str(path) + ".partial").exists()
        assert loaded.ids == direct.ids == [str(i) for i in range(len(texts))]
        assert loaded.layers == [0, 3, 6]
        np.testing.assert_array_equal(loaded.n_tokens, direct.n_tokens)
        np.testing.assert_array_equal(loaded.truncated, direct.truncated)
        provenance = loaded.provenance
        assert provenance["complete"] is True and provenance["level"] == level
        assert provenance["model"] == direct.provenance["model"]
        assert provenance["output_dtype"] == dtype
        assert "texts" not in provenance and provenance["num_texts"] == len(texts)
        np.testing.assert_array_equal(loaded.windows, direct.windows)
        if level == "sentence":
            assert loaded.embeddings.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(loaded.embeddings, direct.embeddings)
            np.testing.assert_array_equal(loaded.layer(-1), direct.embeddings[:, 2])
        else:
            assert loaded.vectors.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(loaded.vectors, direct.vectors)
            np.testing.assert_array_equal(loaded.offsets, direct.offsets)
            assert loaded.items == direct.items
            np.testing.assert_array_equal(loaded.spans, direct.spans)
            np.testing.assert_array_equal(loaded.layer(3), direct.vectors[:, 1])
            assert [a.shape for a in loaded.arrays()] == [a.shape for a in direct.arrays()]
        report = describe(path)
        assert report["complete"] and report["bytes"] > 0


def test_pre_split_words_and_combined_layers_round_trip(tmp_path, bundled):
    words = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["", "x"]]
    config = ExtractConfig(level="word", layers="-4:", combine="concat")
    for suffix in SUFFIXES:
        path = tmp_path / f"w{suffix}"
        _write(bundled, path, records_from_words(words), config)
        loaded = load(path)
        assert loaded.items == [w for ws in words for w in ws]
        assert loaded.vectors.shape == (8, 1, 4 * 384)
        assert loaded.provenance["replaced_words"] == [["2", 0]]


def test_layer_major_formats_read_one_layer_only(tmp_path, bundled, texts):
    import h5py
    import pyarrow.parquet as pq
    from safetensors import safe_open

    config = ExtractConfig(level="token", layers="all")
    for suffix in (".h5", ".parquet", ".safetensors"):
        _write(bundled, tmp_path / f"s{suffix}", records_from_texts(texts), config)
    with h5py.File(tmp_path / "s.h5") as h5:
        assert sorted(h5["vectors"]) == [f"layer_{i}" for i in range(7)]
        assert h5["vectors/layer_4"].chunks[1] == 384
    schema = pq.read_schema(tmp_path / "s.parquet")
    assert [n for n in schema.names if n.startswith("layer_")] == [f"layer_{i}" for i in range(7)]
    with safe_open(str(tmp_path / "s.safetensors"), framework="np") as handle:
        assert handle.get_slice("layer_4").get_shape()[1] == 384


def test_sharded_parquet_and_safetensors(tmp_path, bundled, texts):
    from bertlayers.stores import StoreContent, open_store

    path = tmp_path / "base.npy"
    _write(bundled, path, records_from_texts(texts), ExtractConfig(level="token", layers="0,-1"))
    source, index, provenance, _ = open_store(path)
    data = StoreContent(source, index, provenance)
    shards = tmp_path / "shards"
    for tmp in write_parquet(data, shards, shard_rows=50):
        tmp.rename(shards)
    assert len(list(shards.glob("part-*.parquet"))) == -(-source.shape[0] // 50)
    st_path = tmp_path / "emb.safetensors"
    layer_bytes = source.shape[0] * 384 * 4
    for tmp in write_safetensors(data, st_path, max_shard_bytes=layer_bytes + 1):
        tmp.rename(tmp.with_name(tmp.name.removesuffix(".tmp")))
    assert (tmp_path / "emb.safetensors.index.json").exists()
    assert (tmp_path / "emb-00002-of-00002.safetensors").exists()
    base = load(path)
    for other in (load(shards), load(st_path)):
        np.testing.assert_array_equal(other.vectors, base.vectors)
        assert other.items == base.items and other.ids == base.ids


def test_convert_between_every_format(tmp_path, bundled, texts):
    start = tmp_path / "a.npy"
    _write(bundled, start, records_from_texts(texts), ExtractConfig(level="word", layers="1,2"))
    reference = load(start)
    previous = start
    for suffix in [".h5", ".parquet", ".safetensors", ".npz", ".npy"]:
        target = tmp_path / f"c{len(suffix)}{suffix}"
        convert(previous, target)
        converted = load(target)
        np.testing.assert_array_equal(converted.vectors, reference.vectors)
        assert converted.items == reference.items and converted.ids == reference.ids
        np.testing.assert_array_equal(converted.offsets, reference.offsets)
        previous = target
    with pytest.raises(OutputError, match="output exists"):
        convert(start, previous)


def _interrupting(records, after: int):
    for count, record in enumerate(records):
        if count == after:
            raise KeyboardInterrupt
        yield record


@pytest.mark.parametrize("level", ["sentence", "token"])
def test_resume_after_an_interruption_is_identical(tmp_path, bundled, review_texts, level):
    texts = review_texts[:90]
    config = ExtractConfig(level=level, layers="0,-1", chunk_size=20, output_dtype="float16")
    whole = tmp_path / "whole.npy"
    _write(bundled, whole, records_from_texts(texts), config)
    path = tmp_path / "resumed.npy"
    with pytest.raises(KeyboardInterrupt):
        _write(bundled, path, _interrupting(records_from_texts(texts), 47), config)
    assert not path.exists()
    report = describe(path)
    assert report["complete"] is False and report["texts"] == 40  # two durable chunks
    with pytest.raises(InputError, match="is incomplete"):
        load(path)
    with pytest.raises(OutputError, match="an interrupted run left"):
        StoreSink(path, bundled.identity(config))
    _write(bundled, path, records_from_texts(texts), config, resume=True)
    assert path.read_bytes() == whole.read_bytes()
    assert load(path).ids == load(whole).ids
    if level == "token":
        assert (tmp_path / "resumed.index.npz").read_bytes() != b""
        assert load(path).items == load(whole).items


def test_resume_refuses_other_settings_or_input(tmp_path, bundled, review_texts):
    config = ExtractConfig(layers="0,-1", chunk_size=10)
    path = tmp_path / "r.npy"
    with pytest.raises(KeyboardInterrupt):
        _write(bundled, path, _interrupting(records_from_texts(review_texts[:40]), 25), config)
    other = ExtractConfig(layers="all", chunk_size=10)
    with pytest.raises(
        InputError,
        match=r"cannot resume: layers was \[0, 6\] in the interrupted run, now \[0, 1, 2",
    ):
        StoreSink(path, bundled.identity(other), resume=True)
    changed = ["changed", *review_texts[1:40]]
    with pytest.raises(InputError, match="the input differs from the interrupted run's"):
        _write(bundled, path, records_from_texts(changed), config, resume=True)


def test_corrupt_and_missing_stores_fail_clearly(tmp_path, bundled, texts):
    config = ExtractConfig(layers="0,-1")
    for suffix in SUFFIXES:
        path = tmp_path / f"c{suffix}"
        _write(bundled, path, records_from_texts(texts), config)
        with path.open("r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
        with pytest.raises(InputError, match=r"(not a readable|truncated or corrupt)"):
            load(path).embeddings  # noqa: B018
    with pytest.raises(InputError, match="no such store"):
        load(tmp_path / "missing.h5")


PAGE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096


def _pages(*sizes: int) -> int:
    return sum(-(-size // PAGE) for size in sizes)


@contextlib.contextmanager
def _tmpfs(mount: Path, pages: int):
    """A tmpfs of `pages` pages at `mount` (skips where mounting is not allowed); it must
    unmount cleanly: a file left open on it (by a writer that failed) makes that fail."""
    mount.mkdir(exist_ok=True)
    size = f"size={pages * PAGE // 1024}k"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mount
    finally:
        gc.collect()
        assert subprocess.run(["umount", str(mount)]).returncode == 0, "a file is left open"


def _free_space(mount: Path) -> None:
    """The disk is no longer full: the tmpfs grows."""
    subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)


@dataclass
class DiskFullRuns:
    """What the disk-full tests share: a run's texts and settings, its store in every format
    (uninterrupted, on a roomy disk), and its staging area with every text durable."""

    texts: list[str]
    config: ExtractConfig
    stores: dict[str, Path]  # suffix -> the uninterrupted run's store
    staged: Path  # a staging area: every chunk durable, the store not yet written
    staged_pages: int  # pages its files take
    index_pages: int  # pages of the index it gathers when the store is written
    store_pages: dict[str, int]  # suffix -> pages of what the store's writer writes

    def rows(self, texts: int) -> int:
        """Rows of the first `texts` texts."""
        return int(load(self.stores[".npy"]).offsets[texts])


@pytest.fixture(scope="module")
def disk_full_runs(tmp_path_factory, bundled, review_texts) -> DiskFullRuns:
    import shutil

    from bertlayers.stores.staging import StagedStore

    base = tmp_path_factory.mktemp("disk-full")
    texts = review_texts[:100]
    config = ExtractConfig(level="token", layers="0", output_dtype="float16", chunk_size=20)
    whole = base / "whole.npy"
    _write(bundled, whole, records_from_texts(texts), config)
    stores = {".npy": whole}
    for suffix in SUFFIXES[1:]:
        stores[suffix] = base / f"whole{suffix}"
        convert(whole, stores[suffix])
    staged = base / "staged.npy"
    with pytest.raises(KeyboardInterrupt):  # after the last chunk, before the store
        _write(bundled, staged, _interrupting(records_from_texts([*texts, "x"]), 100), config)
    partial = Path(f"{staged}.partial")
    staged_pages = _pages(*(f.stat().st_size for f in partial.iterdir()))
    gathered = base / "gathered"
    shutil.copytree(partial, gathered)
    StagedStore(gathered).index()
    index_pages = _pages(*(f.stat().st_size for f in gathered.glob("index-*.bin")))
    store_pages = {suffix: _pages(disk_size(path)) for suffix, path in stores.items()}
    store_pages[".npy"] = _pages(
        *(whole.with_suffix(s).stat().st_size for s in (".index.npz", ".json"))
    )
    return DiskFullRuns(texts, config, stores, partial, staged_pages, index_pages, store_pages)


def _same_store(path: Path, reference: Path) -> None:
    """Equal in every vector, id and index column, and in provenance but for its time; an
    `.npy` byte for byte (its vectors are the staging file, renamed)."""
    got, want = load(path), load(reference)
    assert got.vectors.dtype == want.vectors.dtype
    np.testing.assert_array_equal(got.vectors, want.vectors)
    assert got.ids == want.ids and got.items == want.items
    for name in ("offsets", "spans", "n_tokens", "truncated", "windows"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert {**got.provenance, "created": 0} == {**want.provenance, "created": 0}
    if path.suffix == ".npy":
        assert path.read_bytes() == reference.read_bytes()


def _keep(path: Path, into: Path) -> Path:
    """A copy of a store's files (off the tmpfs, which is unmounted before they are read)."""
    import shutil

    into.mkdir()
    for part in path.parent.glob(f"{path.stem}*"):
        copy = shutil.copytree if part.is_dir() else shutil.copy
        copy(part, into / part.name)
    return into / path.name


# the library says `resume=True`, the command line `--resume`
DISK_FULL = (
    r"disk full while writing .*; the .* kept in .*\(rerun with (--resume|resume=True) once fixed\)"
)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_disk_full_keeps_what_was_made_durable(tmp_path, bundled, disk_full_runs, suffix, capfd):
    """The disk fills while chunks are staged: the chunks made durable are kept, and
    `--resume` on a freed disk finishes the store as an uninterrupted run writes it."""
    runs = disk_full_runs
    with _tmpfs(tmp_path / "small", runs.staged_pages // 2) as mount:
        path = mount / f"e{suffix}"
        with pytest.raises(OutputError, match=DISK_FULL):
            _write(bundled, path, records_from_texts(runs.texts), runs.config)
        assert not path.exists() and not list(mount.rglob("*.tmp"))
        durable = describe(path)
        assert 0 < durable["texts"] < len(runs.texts)
        assert durable["texts"] % runs.config.chunk_size == 0  # whole chunks
        assert durable["shape"][0] == runs.rows(durable["texts"])  # and the rows of those
        _free_space(mount)
        _write(bundled, path, records_from_texts(runs.texts), runs.config, resume=True)
        assert not Path(f"{path}.partial").exists()
        kept = _keep(path, tmp_path / "kept")
    assert capfd.readouterr().err == ""  # no "Exception ignored", no HDF5 diagnostics
    _same_store(kept, runs.stores[suffix])


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("fails_at", ["staged index", "store", "store, part written"])
def test_disk_full_while_writing_the_store_keeps_the_staging_area(
    tmp_path, bundled, disk_full_runs, suffix, fails_at, capfd, monkeypatch
):
    """Every chunk is durable, then the disk fills while the store itself is written: while
    the token index is gathered in the staging area, as the store's writing begins (where
    the free space is checked first, before anything is written), or part way through it
    (the check off, so that the write itself fails). The staging area stays whole, no
    `*.tmp` is left, and `--resume` on a freed disk finishes the store."""
    import shutil

    import bertlayers.stores.base as base

    runs = disk_full_runs
    pages = runs.staged_pages + 2  # and two more: less than the index needs
    if fails_at != "staged index":  # room for the index gathered in the staging area as well
        pages += runs.index_pages
    if fails_at == "store, part written":
        pages += runs.store_pages[suffix] // 2
        monkeypatch.setattr(base, "free_bytes", lambda directory: None)
    with _tmpfs(tmp_path / "small", pages) as mount:
        path = mount / f"e{suffix}"
        partial = Path(f"{path}.partial")
        shutil.copytree(runs.staged, partial)
        with pytest.raises(OutputError, match=DISK_FULL):
            _write(bundled, path, records_from_texts(runs.texts), runs.config, resume=True)
        assert not path.exists() and not list(mount.rglob("*.tmp"))  # no half-written files
        assert sorted(p.name for p in mount.iterdir()) == [partial.name]
        assert describe(path)["texts"] == len(runs.texts)
        vectors = (partial / "vectors.npy").stat().st_size  # an .npy store's: moved back
        assert vectors == (runs.staged / "vectors.npy").stat().st_size
        spans = (partial / "index-spans.bin").stat().st_size
        assert (fails_at == "staged index") == (spans < 16 * runs.rows(len(runs.texts)))
        _free_space(mount)
        _write(bundled, path, records_from_texts(runs.texts), runs.config, resume=True)
        assert not partial.exists()
        kept = _keep(path, tmp_path / "kept")
    assert capfd.readouterr().err == ""
    _same_store(kept, runs.stores[suffix])


def test_disk_full_while_writing_an_hdf5_store_is_one_error_line(tmp_path, disk_full_runs):
    """What a user saw: the staging area fits, the HDF5 store written from it at the end does
    not (though more than its vectors and strings do, so that the free-space check lets it
    through and HDF5 itself meets the full disk). It was the error, six h5py tracebacks and
    a segfault; it is the error alone, exit 1."""
    from bertlayers.stores import open_store
    from bertlayers.stores.base import index_bytes

    runs = disk_full_runs
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(runs.texts) + "\n", encoding="utf-8")
    vectors, index, _, _ = open_store(runs.stores[".npy"])
    checked = vectors.shape[0] * vectors.shape[2] * 2 + index_bytes(index)  # float16 rows
    written = disk_size(runs.stores[".h5"])
    assert written - checked > 32 * PAGE  # room in between, whatever the ids' lengths
    room = (checked + written) // 2 // PAGE
    with _tmpfs(tmp_path / "small", runs.staged_pages + runs.index_pages + 4 + room) as mount:
        path = mount / "e.h5"
        options = ["--level", "token", "--layers", "0", "--output-dtype", "float16", "-q"]
        result = subprocess.run(
            _cli(str(source), "-o", str(path), "--chunk-size", "20", *options),
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
            capture_output=True,
            text=True,
            timeout=600,
        )
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0].startswith("bertlayers: error: disk full while writing "), lines[0]
        assert re.search(DISK_FULL, lines[0])
        assert not path.exists() and not list(mount.rglob("*.tmp"))
        assert describe(path)["texts"] == len(runs.texts)


CRASH_TEXTS = 1200


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bertlayers", "extract", *args]


def _durable(journal: Path) -> int:
    """Texts made durable so far by a run, from its journal (rewritten atomically)."""
    try:
        return json.loads(journal.read_text(encoding="utf-8"))["records"]
    except FileNotFoundError:  # not begun yet, or finished and removed
        return 0


def test_kill_9_and_resume_is_byte_identical(tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(corpus.many_texts(CRASH_TEXTS)) + "\n", encoding="utf-8")
    common = ["--layers", "0,3,-1", "--chunk-size", "100", "--output-dtype", "float16", "-q"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    whole = tmp_path / "whole.npy"
    subprocess.run(_cli(str(source), "-o", str(whole), *common), check=True, env=env, timeout=600)
    crashed = tmp_path / "crashed.npy"
    rng = random.Random(7)
    kills = 0
    journal = Path(str(crashed) + ".partial") / "journal.json"
    for _ in range(3):
        before = _durable(journal)
        process = subprocess.Popen(
            _cli(str(source), "-o", str(crashed), "--resume", *common),
            env=env,
            stderr=subprocess.DEVNULL,
        )
        # Wait for this run's first durable chunk (model loading takes a while, longer on a
        # busy machine), then kill it at a random point of the chunks that follow.
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if _durable(journal) > before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
    assert kills >= 1, "the run finished before it could be killed"
    durable = describe(crashed)
    assert durable["complete"] is False and 0 < durable["texts"] < CRASH_TEXTS
    # durable points are whole chunks: the first of 64 texts (durable early), then 100 each
    assert (durable["texts"] - 64) % 100 == 0
    subprocess.run(
        _cli(str(source), "-o", str(crashed), "--resume", *common), check=True, env=env, timeout=600
    )
    assert crashed.read_bytes() == whole.read_bytes()
    assert load(crashed).ids == [str(i) for i in range(1, CRASH_TEXTS + 1)]
    assert not Path(str(crashed) + ".partial").exists()


@pytest.mark.parametrize("include_special", [False, True])
def test_token_rows_written_in_place_equal_the_in_memory_result(
    tmp_path, bundled, texts, include_special
):
    """Token rows go to the store's file as batches finish (length order, across records);
    with split long texts and several chunks, the file equals the in-memory result exactly."""
    articles = [a["text"] for a in corpus.articles()[:2]]  # 931 and 307 wordpieces
    mixed = [texts[3], articles[0], *texts[:5], articles[1], texts[6]]
    options = {"layers": "0,2,-1", "include_special": include_special, "chunk_size": 4}
    config = ExtractConfig(level="token", **options)
    path = tmp_path / "tokens.npy"
    _write(bundled, path, records_from_texts(mixed), config)
    loaded = load(path)
    direct = bundled.extract_tokens(mixed, **options)
    assert direct.provenance["num_windowed"] >= 1  # a long article ran in several windows
    np.testing.assert_array_equal(loaded.vectors, direct.vectors)
    np.testing.assert_array_equal(loaded.offsets, direct.offsets)
    assert loaded.items == direct.items


def test_utf8_strings_hold_a_list_of_strings_compactly(tmp_path):
    from bertlayers.stores.base import FileArray, Utf8Strings, decode_strings, encode_strings

    flat = ["EU", "rejects", "Ger", "##man", "naïve", "café", "日本", "", "x"]
    data, offsets = encode_strings(flat)  # a plain list, with non-ASCII strings
    assert decode_strings(data, offsets) == flat
    (tmp_path / "utf8").write_bytes(data.tobytes())
    (tmp_path / "offsets").write_bytes(offsets.tobytes())
    in_files = Utf8Strings(
        FileArray(tmp_path / "utf8", np.uint8, data.shape),
        FileArray(tmp_path / "offsets", np.int64, offsets.shape),
    )
    for strings in (Utf8Strings(data, offsets), in_files):
        assert len(strings) == len(flat) and list(strings) == flat and strings == flat
        assert strings[4] == "naïve" and strings[-1] == "x" and strings[-2] == ""
        assert strings[3:7] == flat[3:7] and strings[::2] == flat[::2] and strings[5:2] == []
        with pytest.raises(IndexError):
            strings[len(flat)]
        stored_data, stored_offsets = encode_strings(strings)  # stored as is, no re-encoding
        assert stored_data is strings.data and stored_offsets is strings.offsets
    spans = FileArray(tmp_path / "offsets", np.int64, (len(flat) + 1,))
    np.testing.assert_array_equal(spans[2:5], offsets[2:5])
    np.testing.assert_array_equal(np.asarray(spans), offsets)
    assert spans[-1] == offsets[-1] and spans.nbytes == offsets.nbytes


def test_writers_in_small_blocks_write_the_same_store(tmp_path, bundled, texts, monkeypatch):
    """Writers copy rows, token positions, spans and strings block by block (bounded memory):
    blocks of a few rows or bytes, which split texts, must give the stores of one block."""
    import bertlayers.stores.base as base
    import bertlayers.stores.hdf5 as hdf5
    import bertlayers.stores.staging as staging

    config = ExtractConfig(level="token", layers="0,-1")
    reference = bundled.extract_tokens(texts, layers="0,-1")
    assert reference.vectors.shape[0] > 100
    monkeypatch.setattr(base, "BLOCK_BYTES", 7 * 16)  # 7 span rows, 14 offsets, 1 vector row
    monkeypatch.setattr(hdf5, "STRING_BLOCK", 5)
    monkeypatch.setattr(staging, "INDEX_TEXTS", 3)  # the index gathered 3 texts at a time,
    monkeypatch.setattr(staging, "INDEX_ITEMS", 20)  # or fewer where they have 20+ tokens
    for suffix in SUFFIXES:  # from a run's staging area, its index in files
        path = tmp_path / f"small-blocks{suffix}"
        _write(bundled, path, records_from_texts(texts), config)
        stored = load(path)
        np.testing.assert_array_equal(stored.vectors, reference.vectors)
        np.testing.assert_array_equal(stored.offsets, reference.offsets)
        np.testing.assert_array_equal(stored.spans, reference.spans)
        assert stored.items == reference.items and stored.ids == reference.ids
        _same_texts(stored, reference)
    monkeypatch.setattr(base, "BLOCK_BYTES", 5 * 16)  # converted in other blocks
    for suffix in SUFFIXES:  # from a store read back, its index in memory
        back = tmp_path / f"back{suffix}.npz"
        convert(tmp_path / f"small-blocks{suffix}", back)
        converted = load(back)
        np.testing.assert_array_equal(converted.vectors, reference.vectors)
        np.testing.assert_array_equal(converted.spans, reference.spans)
        assert converted.items == reference.items and converted.ids == reference.ids
        _same_texts(converted, reference)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "small-blocks.parquet").num_row_groups > 10
    table = pq.read_table(tmp_path / "small-blocks.parquet", columns=["text_index", "position"])
    text_index = table.column("text_index").to_numpy()
    np.testing.assert_array_equal(
        text_index, np.repeat(np.arange(len(texts)), np.diff(reference.offsets))
    )
    np.testing.assert_array_equal(
        table.column("position").to_numpy(),
        np.arange(len(text_index)) - reference.offsets[text_index],
    )


def _same_texts(stored, reference) -> None:
    """The per-text columns of a store equal those of the in-memory result."""
    assert stored.ids == reference.ids
    for name in ("n_tokens", "truncated", "windows"):
        np.testing.assert_array_equal(getattr(stored, name), getattr(reference, name))
        assert getattr(stored, name).dtype == getattr(reference, name).dtype
    assert "texts" not in stored.provenance
    assert stored.provenance["num_texts"] == len(reference.ids)


def test_per_text_columns_are_in_the_index_and_old_stores_still_load(
    tmp_path, bundled, texts, monkeypatch
):
    """Ids, token counts, truncation and windows are columns of each store's index (not
    lists in its JSON provenance); stores that kept them in the provenance still load.
    Parquet blocks are written as row groups of ROW_GROUP_BYTES (here two rows)."""
    import pyarrow.parquet as pq

    import bertlayers.stores.parquet as parquet

    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 2 * 384 * 4)

    long_texts = [*texts[:3], "word " * 1200, texts[3]]
    sentence = ExtractConfig(layers="-1", long="split", chunk_size=2)
    token = ExtractConfig(level="token", layers="-1", long="split", chunk_size=2)
    for config, direct in (
        (sentence, bundled.extract(long_texts, layers="-1", long="split")),
        (token, bundled.extract_tokens(long_texts, layers="-1", long="split")),
    ):
        assert direct.windows.tolist() == [1, 1, 1, 3, 1]
        for suffix in SUFFIXES:
            path = tmp_path / f"{config.level.value}{suffix}"
            _write(bundled, path, records_from_texts(long_texts), config)
            _same_texts(load(path), direct)
        metadata = pq.ParquetFile(tmp_path / f"{config.level.value}.parquet").metadata
        groups = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        assert max(groups) == 2 and sum(groups) == len(
            direct.vectors if config is token else direct.embeddings
        )
        # as the stores of earlier versions: the columns in the provenance's `texts`
        old = {
            "ids": direct.ids,
            "n_tokens": direct.n_tokens.tolist(),
            "truncated": direct.truncated.tolist(),
            "windows": direct.windows.tolist(),
        }
        npy = tmp_path / f"{config.level.value}.npy"
        provenance = json.loads(npy.with_suffix(".json").read_text())
        npy.with_suffix(".json").write_text(json.dumps(dict(provenance, texts=old)))
        if config.level.value == "sentence":  # its index had no file of its own
            npy.with_suffix(".index.npz").unlink()
        else:
            with np.load(npy.with_suffix(".index.npz")) as index:
                kept = {k: index[k] for k in index.files if not k.startswith("ids")}
                kept = {k: v for k, v in kept.items() if k not in old}
            np.savez(npy.with_suffix(".index.npz"), **kept)
            table = pq.read_table(tmp_path / "token.parquet")
            table = table.drop_columns(["n_tokens", "truncated", "windows"])
            meta = json.loads(table.schema.metadata[b"bertlayers"])
            table = table.replace_schema_metadata(
                {b"bertlayers": json.dumps(dict(meta, texts=old)).encode()}
            )
            pq.write_table(table, tmp_path / "old-token.parquet")
            loaded = load(tmp_path / "old-token.parquet")
            assert loaded.ids == direct.ids and loaded.windows.tolist() == old["windows"]
            np.testing.assert_array_equal(loaded.offsets, direct.offsets)
        loaded = load(npy)
        assert loaded.ids == direct.ids and loaded.windows.tolist() == old["windows"]
        np.testing.assert_array_equal(loaded.n_tokens, direct.n_tokens)
        np.testing.assert_array_equal(loaded.truncated, direct.truncated)
        convert(npy, tmp_path / f"new-{config.level.value}.h5")  # and convert to the new one
        _same_texts(load(tmp_path / f"new-{config.level.value}.h5"), direct)


def test_npz_vectors_are_memory_mapped_unless_recompressed(tmp_path, bundled, texts):
    import zipfile

    path = tmp_path / "s.npz"
    _write(bundled, path, records_from_texts(texts), ExtractConfig(level="token", layers="0,-1"))
    direct = bundled.extract_tokens(texts, layers="0,-1")
    loaded = load(path)
    assert isinstance(loaded.vectors, np.memmap)  # not read into memory
    np.testing.assert_array_equal(loaded.vectors, direct.vectors)
    squeezed = tmp_path / "squeezed.npz"  # what `zip -9` or np.savez_compressed would make
    with (
        zipfile.ZipFile(path) as source,
        zipfile.ZipFile(squeezed, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for name in source.namelist():
            out.writestr(name, source.read(name))
    recompressed = load(squeezed)
    assert not isinstance(recompressed.vectors, np.memmap)
    np.testing.assert_array_equal(recompressed.vectors, direct.vectors)
    assert recompressed.items == direct.items


def test_npy_store_without_its_index_is_an_error(tmp_path, bundled, texts):
    path = tmp_path / "s.npy"
    _write(bundled, path, records_from_texts(texts[:3]), ExtractConfig(layers="-1"))
    path.with_suffix(".index.npz").unlink()
    with pytest.raises(InputError, match=r"s\.npy is incomplete: s\.index\.npz .* is missing"):
        load(path)
    assert path.exists() and path.with_suffix(".json").exists()  # nothing else is touched


def test_a_resumed_run_warns_about_every_truncated_text(tmp_path, bundled):
    """The truncation warning of a resumed run counts the texts of the interrupted run too."""
    texts = ["word " * 600, "short", "short too", "word " * 700, "last"]
    config = ExtractConfig(layers="0", chunk_size=2, max_length=64)
    path = tmp_path / "t.npy"
    with pytest.raises(KeyboardInterrupt):
        _write(bundled, path, _interrupting(records_from_texts(texts), 3), config)
    assert describe(path)["texts"] == 2
    sink = StoreSink(path, bundled.identity(config), resume=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundled.run(sink.skip_done(records_from_texts(texts)), sink, config)
    messages = [str(w.message) for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(messages) == 1
    assert (
        messages[0].startswith("2 of 5 texts were longer than 64 tokens")
        and "(ids: 0, 3)" in (messages[0])
    )
    assert load(path).truncated.tolist() == [True, False, False, True, False]


def test_a_store_replaced_by_one_of_another_shape_leaves_nothing_of_the_old(
    tmp_path, bundled, texts, monkeypatch
):
    """An unsharded safetensors store overwritten by a sharded one (and back): the old file
    or shards are gone, so what loads is the new store."""
    import bertlayers.stores as stores
    import bertlayers.stores.safetensors as st

    path = tmp_path / "s.safetensors"
    small = ExtractConfig(layers="0")
    _write(bundled, path, records_from_texts(texts), small)
    layer_bytes = len(texts) * 384 * 4
    sharded = functools.partial(st.write_safetensors, max_shard_bytes=layer_bytes + 1)
    monkeypatch.setitem(stores._WRITERS, stores.StoreFormat.SAFETENSORS, sharded)
    _write(bundled, path, records_from_texts(texts), ExtractConfig(layers="0,-1"), overwrite=True)
    assert not path.exists() and (tmp_path / "s.safetensors.index.json").exists()
    assert load(path).provenance["layers"] == [0, 6]
    monkeypatch.undo()
    _write(bundled, path, records_from_texts(texts), small, overwrite=True)
    assert path.exists() and not list(tmp_path.glob("s-*-of-*.safetensors"))
    assert not (tmp_path / "s.safetensors.index.json").exists()
    assert load(path).provenance["layers"] == [0]
