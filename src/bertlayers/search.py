"""`Index`: semantic search over one layer of a store, with FAISS.

    index = Index.build("docs.parquet", layer=4, texts=records)   # or bertlayers index ...
    index.save("docs.index")
    Index.load("docs.index").search("how do I reset it?", k=5)

An index holds the unit-length vectors of one layer (or the mean of all layers) of a
sentence-level store, so inner product is cosine. Up to `EXACT_LIMIT` vectors it is exact
(`IndexFlatIP`); beyond, HNSW (or IVF when asked), with its recall@10 against exact search
measured when built. It records the store's provenance: queries are embedded with the store's
own model and settings, and vectors made otherwise are refused. Needs the `search` extra
(faiss-cpu).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .analysis.matching import search_exact
from .analysis.postprocess import unit_rows
from .errors import InputError, OptionError
from .extras import require
from .options import StrEnum
from .provenance import same_model, summary
from .results import SentenceEmbeddings

INDEX_FORMAT = "bertlayers-index/1"
EXACT_LIMIT = 100_000  # vectors up to which exact search is the default (fast enough on a CPU)
RECALL_QUERIES = 1000  # stored vectors used as queries to measure an approximate index


class IndexKind(StrEnum):
    """The FAISS index `Index.build` makes: exact (flat), or approximate (HNSW, IVF) for many
    vectors; `auto` chooses by size."""

    AUTO = "auto"  # flat up to EXACT_LIMIT vectors, HNSW beyond
    FLAT = "flat"  # exact inner product
    HNSW = "hnsw"  # graph, M=32, efSearch 128
    IVF = "ivf"  # inverted lists, 4 sqrt(N) lists, nprobe 16


# how queries are embedded: as the store's texts were
_SETTINGS = ("pooling", "include_special", "long", "max_length", "combine", "stride")
# what query vectors must share with the store to be comparable (long and max_length change only
# texts over the limit, so queries made with another --long are accepted)
_MUST_MATCH = ("pooling", "include_special", "combine")


@dataclass(frozen=True)
class Hit:
    """One search result: the stored text's id, its cosine score, and its text when known."""

    id: str
    score: float
    text: str | None = None


def _layer_spec(layer: int | str) -> int | str:
    if isinstance(layer, int):
        return layer
    text = str(layer).strip().lower()
    if text == "mean":
        return "mean"
    try:
        return int(text)
    except ValueError:
        raise OptionError(f"unknown layer '{layer}': use a layer index (4, -1) or mean") from None


def _vectors_of(result: SentenceEmbeddings, layer: int | str, name: str) -> np.ndarray:
    """The `(N, D)` vectors an index holds: one layer, the mean of all, or the combination
    the store already holds."""
    if not isinstance(result, SentenceEmbeddings):
        raise InputError(f"{name} is a {result.level}-level store: an index needs sentence vectors")
    if result.provenance.get("combine", "stack") != "stack":
        return np.asarray(result.embeddings[:, 0], dtype=np.float32)
    if layer == "mean":
        return np.asarray(result.embeddings, dtype=np.float32).mean(axis=1)
    return np.asarray(result.layer(layer), dtype=np.float32)


def _layer_name(result: SentenceEmbeddings, layer: int | str) -> str:
    combine = result.provenance.get("combine", "stack")
    if combine != "stack":
        return f"layers {list(result.layers)} combined by {combine}"
    if layer == "mean":
        return f"mean of layers {list(result.layers)}"
    from .layers import resolve_layers

    return f"layer {resolve_layers(layer, result.provenance['model']['num_layers']).indices[0]}"


class Index:
    """A FAISS index of one layer of a store, with the ids (and texts) of its rows."""

    def __init__(self, faiss_index, ids: list[str], texts: list[str] | None, meta: dict) -> None:
        self.faiss_index = faiss_index
        self.ids = ids
        self.texts = texts
        self.meta = meta
        self._extractor = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def recall_at_10(self) -> float:
        """Recall@10 of this index against exact search, measured when it was built."""
        return float(self.meta["recall_at_10"])

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        store: str | Path | SentenceEmbeddings,
        layer: int | str = -1,
        kind: IndexKind | str = IndexKind.AUTO,
        texts: Sequence[str] | None = None,
        seed: int = 0,
    ) -> Index:
        """Index one layer (`-1`, `4`) or the mean of all layers (`"mean"`) of a sentence-level
        store (a path or a loaded result). `texts`, in the store's order, are shown by search."""
        require("faiss", "search", "bertlayers.Index")
        import faiss

        from .stores import load

        name = str(store) if not isinstance(store, SentenceEmbeddings) else "the store"
        result = load(store) if not isinstance(store, SentenceEmbeddings) else store
        spec = _layer_spec(layer)
        vectors = unit_rows(_vectors_of(result, spec, name))
        n, dim = vectors.shape
        if n == 0:
            raise InputError(f"{name} holds no vectors: there is nothing to index")
        if texts is not None and len(texts) != n:
            raise InputError(f"{len(texts)} texts given for the {n} vectors of {name}")
        kind = IndexKind.parse(kind, "index kind")
        if kind is IndexKind.AUTO:
            kind = IndexKind.FLAT if n <= EXACT_LIMIT else IndexKind.HNSW
        if kind is IndexKind.FLAT:
            index = faiss.IndexFlatIP(dim)
        elif kind is IndexKind.HNSW:
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 200
            index.hnsw.efSearch = 128
        else:
            n_lists = max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))  # FAISS wants 39 per list
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, n_lists, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.nprobe = min(16, n_lists)
        index.add(vectors)
        meta = {
            "format": INDEX_FORMAT,
            "kind": kind.value,
            "layer": spec,
            "vectors": f"{_layer_name(result, spec)}, unit length (inner product = cosine)",
            "count": n,
            "dim": dim,
            "store": summary(result.provenance),
            "bertlayers_version": __version__,
        }
        built = cls(index, list(result.ids), list(texts) if texts is not None else None, meta)
        built.meta["recall_at_10"] = built._measure_recall(vectors, seed)
        return built

    def _measure_recall(self, vectors: np.ndarray, seed: int) -> float:
        """Recall@10 against exact numpy search, on up to 1,000 stored vectors as queries.

        As ANN-benchmarks counts it: a hit is a returned vector whose exact cosine reaches the
        true 10th neighbour's (less 1e-5), so ties (duplicate texts) and float rounding at the
        boundary do not count as misses. Stored vectors as queries find themselves first, so
        this is optimistic for HNSW and IVF next to unseen queries."""
        rng = np.random.default_rng(seed)
        n = len(vectors)
        picked = rng.choice(n, size=min(RECALL_QUERIES, n), replace=False)
        k = min(10, n)
        _, exact_scores = search_exact(vectors[picked], vectors, k=k, block=64)
        _, found = self.faiss_index.search(vectors[picked], k)
        threshold = exact_scores[:, -1:] - 1e-5
        found_scores = np.einsum("qd,qkd->qk", vectors[picked], vectors[np.maximum(found, 0)])
        hits = ((found_scores >= threshold) & (found >= 0)).sum()
        return float(hits) / (len(picked) * k)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the index as a directory (`index.faiss`, `index.json`, `items.jsonl`),
        complete or not at all: it is written beside and renamed into place."""
        import faiss

        target = Path(path)
        if target.exists():
            if not overwrite:
                raise OptionError(f"{target} exists: give {{opt:overwrite=True}} to replace it")
            if not (target / "index.json").is_file():
                raise OptionError(
                    f"{target} exists and is not a bertlayers index: not replacing it"
                )
        staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            faiss.write_index(self.faiss_index, str(staging / "index.faiss"))
            with open(staging / "items.jsonl", "w", encoding="utf-8") as out:
                for i, record_id in enumerate(self.ids):
                    item = {"id": record_id}
                    if self.texts is not None:
                        item["text"] = self.texts[i]
                    out.write(json.dumps(item, ensure_ascii=False) + "\n")
            (staging / "index.json").write_text(json.dumps(self.meta, indent=1) + "\n")
            for file in staging.iterdir():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            if target.exists():
                target.rename(old)
            try:
                staging.rename(target)
            except BaseException:
                if old.exists() and not target.exists():
                    old.rename(target)  # the index that was there stays
                raise
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(cls, path: str | Path) -> Index:
        """Read an index written by `save` (or `bertlayers index`)."""
        require("faiss", "search", "bertlayers.Index")
        import faiss

        folder = Path(path)
        meta_file = folder / "index.json"
        if not meta_file.is_file():
            raise InputError(f"{path} is not a bertlayers index (no index.json in it)")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{meta_file} is not valid JSON ({err.msg})") from None
        if meta.get("format") != INDEX_FORMAT:
            raise InputError(f"{path}: unknown index format {meta.get('format')!r}")
        ids, texts = [], []
        try:
            with open(folder / "items.jsonl", encoding="utf-8") as items:
                for line in items:
                    item = json.loads(line)
                    ids.append(str(item["id"]))
                    texts.append(item.get("text"))
            index = faiss.read_index(str(folder / "index.faiss"))
            count = int(meta["count"])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else err
            raise InputError(f"{path} is damaged ({type(err).__name__}: {reason})") from None
        if index.ntotal != len(ids) or len(ids) != count:
            raise InputError(f"{path} is damaged: {index.ntotal} vectors for {len(ids)} ids")
        has_texts = any(t is not None for t in texts)
        return cls(index, ids, texts if has_texts else None, meta)

    # ------------------------------------------------------------------ searching

    def check_query(self, query: SentenceEmbeddings) -> None:
        """Refuse query vectors made by another model or with other settings than the store's."""
        stored, given = self.meta["store"], query.provenance
        if not same_model(given.get("model", {}), stored.get("model", {})):
            raise InputError(
                f"the queries were embedded with {given.get('model', {}).get('name')}, the index "
                f"with {stored.get('model', {}).get('name')} (the models differ): embed them "
                "with the index's model"
            )
        for setting in _MUST_MATCH:
            if setting in stored and given.get(setting) != stored[setting]:
                raise InputError(
                    f"the queries were embedded with {setting} {given.get(setting)!r}, the index "
                    f"with {stored[setting]!r}: embed them with the index's settings"
                )
        if self.meta["layer"] == "mean" or stored.get("combine", "stack") != "stack":
            if list(query.layers) != list(stored["layers"]):
                raise InputError(
                    f"the index combines layers {stored['layers']}; the queries hold "
                    f"{list(query.layers)}"
                )
        elif self._layer_index() not in query.layers:
            raise InputError(
                f"the index holds layer {self._layer_index()}; the queries hold "
                f"{list(query.layers)}"
            )

    @property
    def model(self) -> str | None:
        """The store's model id for `Extractor` (None: the bundled model, wherever installed)."""
        model = self.meta["store"].get("model", {})
        return None if str(model.get("name", "")).endswith("(bundled)") else model.get("id")

    @property
    def extractor(self):
        """The store's model, loaded on first use."""
        if self._extractor is None:
            from .core.extract import Extractor

            self._extractor = Extractor(self.model)
        return self._extractor

    def embed_queries(self, queries: Sequence[str], extractor=None) -> SentenceEmbeddings:
        """Embed query texts with the store's model and settings (checked by fingerprint)."""
        extractor = extractor if extractor is not None else self.extractor
        stored = self.meta["store"]
        fingerprint = stored.get("model", {}).get("fingerprint")
        loaded = extractor.encoder.fingerprint
        if fingerprint not in (None, "unknown") and loaded not in (None, "unknown") and (
            loaded != fingerprint):  # fmt: skip
            raise InputError(
                f"the model loaded ({extractor.info.name}) is not the one the index's store was "
                f"extracted with ({stored['model'].get('name')}): its weights differ"
            )
        options = {s: stored[s] for s in _SETTINGS if s in stored}
        options["layers"] = stored["layers"]
        if self.meta["layer"] != "mean" and options.get("combine", "stack") == "stack":
            options["layers"] = [self._layer_index()]
        return extractor.extract(list(queries), **options)

    def _layer_index(self) -> int:
        from .layers import resolve_layers

        num_layers = self.meta["store"]["model"]["num_layers"]
        return resolve_layers(self.meta["layer"], num_layers).indices[0]

    def search(
        self,
        queries: str | Sequence[str] | SentenceEmbeddings,
        k: int = 5,
        extractor=None,
    ) -> list[list[Hit]]:
        """The `k` nearest stored texts of each query, best first: texts are embedded with the
        store's settings; `SentenceEmbeddings` are checked against them first."""
        if isinstance(queries, str):
            queries = [queries]
        if k < 1:
            raise OptionError(f"k must be at least 1, got {k}")
        if isinstance(queries, SentenceEmbeddings):
            self.check_query(queries)
            embedded = queries
        else:
            if len(queries) == 0:
                return []
            embedded = self.embed_queries(queries, extractor)
        spec = self.meta["layer"]
        if spec != "mean" and embedded.provenance.get("combine", "stack") == "stack":
            spec = self._layer_index()
        vectors = unit_rows(_vectors_of(embedded, spec, "the queries"))
        if vectors.shape[1] != self.meta["dim"]:
            raise InputError(
                f"the queries have {vectors.shape[1]} dimensions; the index {self.meta['dim']}"
            )
        scores, rows = self.faiss_index.search(vectors, min(k, len(self.ids)))
        hits = []
        for row_scores, row_ids in zip(scores, rows, strict=True):
            hits.append(
                [
                    Hit(self.ids[j], float(s), self.texts[j] if self.texts else None)
                    for s, j in zip(row_scores, row_ids, strict=True)
                    if j >= 0
                ]
            )
        return hits
