"""Stores are crash-safe and resumable: a run interrupted (KeyboardInterrupt, `kill -9`) or
stopped by a full disk (a real small tmpfs) keeps the chunks it made durable, and `--resume`
finishes the store as an uninterrupted run writes it, byte for byte; a resumed run refuses
other settings or input, and still warns about every truncated text. How stores are written
and read: test_stores.py."""

from __future__ import annotations

import contextlib
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
from bertlayers.io.readers import records_from_texts
from bertlayers.stores import StoreSink, convert, describe, disk_size
from test_stores import SUFFIXES, write_store


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
    write_store(bundled, whole, records_from_texts(texts), config)
    path = tmp_path / "resumed.npy"
    with pytest.raises(KeyboardInterrupt):
        write_store(bundled, path, _interrupting(records_from_texts(texts), 47), config)
    assert not path.exists()
    report = describe(path)
    assert report["complete"] is False and report["texts"] == 40  # two durable chunks
    with pytest.raises(InputError, match="is incomplete"):
        load(path)
    with pytest.raises(OutputError, match="an interrupted run left"):
        StoreSink(path, bundled.identity(config))
    write_store(bundled, path, records_from_texts(texts), config, resume=True)
    assert path.read_bytes() == whole.read_bytes()
    assert load(path).ids == load(whole).ids
    if level == "token":
        assert (tmp_path / "resumed.index.npz").read_bytes() != b""
        assert load(path).items == load(whole).items


def test_resume_refuses_other_settings_or_input(tmp_path, bundled, review_texts):
    config = ExtractConfig(layers="0,-1", chunk_size=10)
    path = tmp_path / "r.npy"
    with pytest.raises(KeyboardInterrupt):
        write_store(bundled, path, _interrupting(records_from_texts(review_texts[:40]), 25), config)
    other = ExtractConfig(layers="all", chunk_size=10)
    with pytest.raises(
        InputError,
        match=r"cannot resume: layers was \[0, 6\] in the interrupted run, now \[0, 1, 2",
    ):
        StoreSink(path, bundled.identity(other), resume=True)
    changed = ["changed", *review_texts[1:40]]
    with pytest.raises(InputError, match="the input differs from the interrupted run's"):
        write_store(bundled, path, records_from_texts(changed), config, resume=True)


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
    write_store(bundled, whole, records_from_texts(texts), config)
    stores = {".npy": whole}
    for suffix in SUFFIXES[1:]:
        stores[suffix] = base / f"whole{suffix}"
        convert(whole, stores[suffix])
    staged = base / "staged.npy"
    with pytest.raises(KeyboardInterrupt):  # after the last chunk, before the store
        write_store(bundled, staged, _interrupting(records_from_texts([*texts, "x"]), 100), config)
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
            write_store(bundled, path, records_from_texts(runs.texts), runs.config)
        assert not path.exists() and not list(mount.rglob("*.tmp"))
        durable = describe(path)
        assert 0 < durable["texts"] < len(runs.texts)
        assert durable["texts"] % runs.config.chunk_size == 0  # whole chunks
        assert durable["shape"][0] == runs.rows(durable["texts"])  # and the rows of those
        _free_space(mount)
        write_store(bundled, path, records_from_texts(runs.texts), runs.config, resume=True)
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
            write_store(bundled, path, records_from_texts(runs.texts), runs.config, resume=True)
        assert not path.exists() and not list(mount.rglob("*.tmp"))  # no half-written files
        assert sorted(p.name for p in mount.iterdir()) == [partial.name]
        assert describe(path)["texts"] == len(runs.texts)
        vectors = (partial / "vectors.npy").stat().st_size  # an .npy store's: moved back
        assert vectors == (runs.staged / "vectors.npy").stat().st_size
        spans = (partial / "index-spans.bin").stat().st_size
        assert (fails_at == "staged index") == (spans < 16 * runs.rows(len(runs.texts)))
        _free_space(mount)
        write_store(bundled, path, records_from_texts(runs.texts), runs.config, resume=True)
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


def test_a_resumed_run_warns_about_every_truncated_text(tmp_path, bundled):
    """The truncation warning of a resumed run counts the texts of the interrupted run too."""
    texts = ["word " * 600, "short", "short too", "word " * 700, "last"]
    config = ExtractConfig(layers="0", chunk_size=2, max_length=64)
    path = tmp_path / "t.npy"
    with pytest.raises(KeyboardInterrupt):
        write_store(bundled, path, _interrupting(records_from_texts(texts), 3), config)
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
