"""Stores: every format (.npy, .npz, HDF5, Parquet, safetensors) passes the same contract:
what a store gives back equals the in-memory result, bit for bit, at every level; layer-major
and sharded layouts, conversion between formats, writers working in small blocks, per-text
columns (and stores of earlier versions), memory-mapped reads, and corrupt or incomplete
stores failing clearly. Crash safety and resuming: test_stores_crash.py."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import corpus
from bertlayers import ExtractConfig, load
from bertlayers.errors import InputError, OutputError
from bertlayers.io.readers import records_from_texts, records_from_words
from bertlayers.stores import StoreSink, convert, describe
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


def write_store(extractor, path: Path, records, config: ExtractConfig, **kwargs) -> dict:
    """`records` run through `extractor` into a store at `path` (as `bertlayers extract` writes
    one, its truncation warnings silenced); the run's summary."""
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
        write_store(bundled, path, records_from_texts(texts), config)
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
        write_store(bundled, path, records_from_words(words), config)
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
        write_store(bundled, tmp_path / f"s{suffix}", records_from_texts(texts), config)
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
    write_store(
        bundled, path, records_from_texts(texts), ExtractConfig(level="token", layers="0,-1")
    )
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
    write_store(
        bundled, start, records_from_texts(texts), ExtractConfig(level="word", layers="1,2")
    )
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


def test_corrupt_and_missing_stores_fail_clearly(tmp_path, bundled, texts):
    config = ExtractConfig(layers="0,-1")
    for suffix in SUFFIXES:
        path = tmp_path / f"c{suffix}"
        write_store(bundled, path, records_from_texts(texts), config)
        with path.open("r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
        with pytest.raises(InputError, match=r"(not a readable|truncated or corrupt)"):
            load(path).embeddings  # noqa: B018
    with pytest.raises(InputError, match="no such store"):
        load(tmp_path / "missing.h5")


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
    write_store(bundled, path, records_from_texts(mixed), config)
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
        write_store(bundled, path, records_from_texts(texts), config)
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
            write_store(bundled, path, records_from_texts(long_texts), config)
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
    write_store(
        bundled, path, records_from_texts(texts), ExtractConfig(level="token", layers="0,-1")
    )
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
    write_store(bundled, path, records_from_texts(texts[:3]), ExtractConfig(layers="-1"))
    path.with_suffix(".index.npz").unlink()
    with pytest.raises(InputError, match=r"s\.npy is incomplete: s\.index\.npz .* is missing"):
        load(path)
    assert path.exists() and path.with_suffix(".json").exists()  # nothing else is touched


def test_a_store_replaced_by_one_of_another_shape_leaves_nothing_of_the_old(
    tmp_path, bundled, texts, monkeypatch
):
    """An unsharded safetensors store overwritten by a sharded one (and back): the old file
    or shards are gone, so what loads is the new store."""
    import bertlayers.stores as stores
    import bertlayers.stores.safetensors as st

    path = tmp_path / "s.safetensors"
    small = ExtractConfig(layers="0")
    write_store(bundled, path, records_from_texts(texts), small)
    layer_bytes = len(texts) * 384 * 4
    sharded = functools.partial(st.write_safetensors, max_shard_bytes=layer_bytes + 1)
    monkeypatch.setitem(stores._WRITERS, stores.StoreFormat.SAFETENSORS, sharded)
    write_store(
        bundled, path, records_from_texts(texts), ExtractConfig(layers="0,-1"), overwrite=True
    )
    assert not path.exists() and (tmp_path / "s.safetensors.index.json").exists()
    assert load(path).provenance["layers"] == [0, 6]
    monkeypatch.undo()
    write_store(bundled, path, records_from_texts(texts), small, overwrite=True)
    assert path.exists() and not list(tmp_path.glob("s-*-of-*.safetensors"))
    assert not (tmp_path / "s.safetensors.index.json").exists()
    assert load(path).provenance["layers"] == [0]
