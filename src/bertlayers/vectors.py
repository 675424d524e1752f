"""`VectorSource`: the vectors a probe reads for its records — from a store, or extracted
(into a store, or in memory) with the core.

The model is loaded once, and only when something has to be extracted; a store that exists
must hold what the probe asks for (the model, pooling, long mode), or it is refused in one
line."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import OptionError
from .io.readers import Record
from .results import RaggedEmbeddings, SentenceEmbeddings, make_result

Result = SentenceEmbeddings | RaggedEmbeddings


class VectorSource:
    """Vectors for labelled records. `options` are `ExtractConfig` fields (layers, pooling,
    word_pooling, long, max_length, batch_tokens); `load_extractor` loads the model when it is
    first needed; `model` is the model the caller named (None: any store's will do)."""

    def __init__(
        self,
        load_extractor: Callable[[], object],
        options: dict,
        model: str | None = None,
        overwrite: bool = False,
        inputs: Iterable[str | Path] = (),
        progress: bool = True,
    ) -> None:
        self._load = load_extractor
        self._extractor = None
        self.options = options
        self.model = model
        self.overwrite = overwrite
        self.inputs = list(inputs)
        self.progress = progress

    @property
    def extractor(self):
        if self._extractor is None:
            self._extractor = self._load()
        return self._extractor

    def config(self, words: bool, **overrides: str | None):
        """The extraction config: the options, word or sentence level, `overrides` applied."""
        from .core.config import ExtractConfig

        chosen = {k: v for k, v in self.options.items() if v is not None}
        chosen.update({k: v for k, v in overrides.items() if v is not None})
        return ExtractConfig.from_dict({**chosen, "level": "word" if words else "sentence"})

    def check_store(self, provenance: dict, store: str, **overrides: str | None) -> None:
        """An existing store must hold what the options (or `overrides`) ask for."""
        model = provenance.get("model", {})
        if self.model is not None and self.model not in (model.get("id"), model.get("name")):
            raise OptionError(
                f"{store} was extracted with {model.get('name')}, not {self.model}: "
                "remove it or give another {opt:store}"
            )
        for option in ("pooling", "word_pooling", "long"):
            wanted = overrides.get(option) or self.options.get(option)
            if wanted is not None and option in provenance and provenance[option] != wanted:
                raise OptionError(
                    f"{store} was extracted with {{opt:{option}={provenance[option]}}}, not "
                    f"{wanted}: remove it or give another {{opt:store}}"
                )

    def get(
        self,
        records: list[Record],
        words: bool,
        store: str | None,
        name: str,
        **overrides: str | None,
    ) -> tuple[Result, str]:
        """Vectors of `records` and where they came from (`store`, or `name` in memory);
        `overrides` (pooling, long) replace the options for this one extraction."""
        from .stores import load

        if store and Path(store).exists():
            result = load(store)
            self.check_store(result.provenance, store, **overrides)
            return result, store
        config = self.config(words, **overrides)
        extractor = self.extractor
        if store:
            from .stores import StoreSink

            Path(store).parent.mkdir(parents=True, exist_ok=True)
            sink = StoreSink(
                store, extractor.identity(config), overwrite=self.overwrite, inputs=self.inputs
            )
            extractor.run(records, sink, config, progress=self.progress, total=len(records))
            return load(store), store
        from .sinks import MemorySink

        sink = MemorySink()
        provenance = extractor.run(
            records, sink, config, progress=self.progress, total=len(records)
        )
        return make_result(sink.vectors(), sink.index.arrays(), provenance), name
