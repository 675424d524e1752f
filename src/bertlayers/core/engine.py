"""The `Engine`: one loaded model (encoder, tokenizer, runtime) that embeds records.

It owns the model and resolves a config into a `Plan` once; the work is the routes':
`sentence.py` (one vector per text, pooled on the device), `windowed.py` (token and word
level, long texts in windows) and `jobs.py` (a chunk stream for one plan, or many jobs
sharing forward passes). The CLI, the service and the Ray actors all call an `Engine`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ..backends import resolve_runtime
from ..chunks import RecordVectors, SentenceChunk
from ..errors import BertlayersError
from ..info import ModelInfo
from ..io.readers import Record
from ..layers import LayerSelection
from ..maps import AttentionMaps
from ..options import Backend, DType, Runtime
from ..provenance import RunInfo
from ..sinks import Reserve
from .attention import AttentionPlan, attention_chunks, resolve_attention_plan
from .config import AttentionConfig, ExtractConfig, ModelOptions
from .encoder import Encoder
from .jobs import embed_jobs, iter_chunks
from .pipeline import SentencePipeline, sentence_pipeline_of
from .plan import Plan, resolve_plan
from .progress import Progress
from .sentence import token_counts

Job = tuple[Sequence[Record], "ExtractConfig | Plan"]


class Engine:
    """One loaded model (encoder + tokenizer + runtime) that embeds records for a config.

    `model` is a hub id, a local directory, or None for `BERTLAYERS_MODEL` / the bundled
    all-MiniLM-L6-v2. `dtype` is the compute dtype; outputs are float32 unless asked otherwise.
    `runtime` is what runs the forward pass: `torch`, `compile`, `int8` or `openvino` (see
    `bertlayers.backends`; `int8=`, `torch_compile=`, `backend=` are its deprecated spellings).

    Calls from several threads run one at a time (a service's worker batches many requests'
    records into one `embed_many` call instead).
    """

    def __init__(
        self,
        model: str | None = None,
        device: str | None = "auto",
        dtype: DType | str = DType.FLOAT32,
        revision: str | None = None,
        runtime: Runtime | str | None = None,
        *,
        int8: bool = False,
        torch_compile: bool = False,
        backend: Backend | str | None = None,
    ) -> None:
        chosen = resolve_runtime(runtime, int8, torch_compile, backend, stacklevel=2)
        self.encoder = Encoder(model, device=device, dtype=dtype, revision=revision, runtime=chosen)
        self._lock = threading.Lock()  # one embed call at a time
        self._plans: dict[ExtractConfig, Plan] = {}

    @classmethod
    def from_options(cls, options: ModelOptions) -> Engine:
        """The engine of a `ModelOptions` (as the CLI, the service and Ray actors build it)."""
        return cls(**options.to_dict())

    @property
    def runtime(self) -> Runtime:
        return self.encoder.runtime

    @property
    def fingerprint(self) -> str:
        """Hub commit hash, or sha256 of a local model's weights: what identifies the model."""
        return self.encoder.fingerprint

    @property
    def info(self) -> ModelInfo:
        """Architecture, number of layers, hidden size and max length of the loaded model."""
        return self.encoder.info

    @property
    def run_info(self) -> RunInfo:
        """What runs the model, as a provenance records it."""
        return self.encoder.run_info

    def sentence_pipeline(self) -> SentencePipeline:
        """The model's own sentence-transformers pipeline (pooling, max length, normalize)."""
        return sentence_pipeline_of(self.info.model_id, self.encoder.local_dir, self.info.revision)

    # ------------------------------------------------------------------ the plan

    def plan(self, config: ExtractConfig | Plan) -> Plan:
        """`config` resolved against this model (kept: a config is resolved once)."""
        if isinstance(config, Plan):
            return config
        try:
            return self._plans[config]
        except (KeyError, TypeError):  # TypeError: layers given as an unhashable sequence
            pass
        info = self.encoder.info
        plan = resolve_plan(
            config,
            info.num_layers,
            info.hidden_size,
            info.max_length,
            sum(len(x) for x in self.encoder.special_template),
            self.encoder.device.type,
        )
        with contextlib.suppress(TypeError):
            self._plans[config] = plan
        return plan

    def settings(self, config: ExtractConfig | Plan) -> dict:
        """The resolved settings recorded in the provenance."""
        return self.plan(config).settings()

    def output_shape(
        self, config: ExtractConfig | Plan, selection: LayerSelection | None = None
    ) -> tuple[int, int]:
        """The `(K, H)` of one output row (a text, token or word) for this config."""
        return self.plan(config).row_shape

    def batch_tokens(self, config: ExtractConfig | Plan) -> int:
        """Padded tokens per batch: as configured, else what measured fastest for the device
        (small batches of similar length on CPUs, large ones on GPUs)."""
        return self.plan(config).batch_tokens

    def identity(self, config: ExtractConfig | Plan) -> dict:
        """What must match for an interrupted store to be resumed: the model, the settings,
        and the batching (which decides the bytes of every row)."""
        plan = self.plan(config)
        encoder = self.encoder
        return {
            "model": self.info.model_id,
            "fingerprint": encoder.fingerprint,
            "compute_dtype": encoder.compute,
            "compiled": encoder.compiled,
            **({"backend": "openvino"} if encoder.runtime is Runtime.OPENVINO else {}),
            # the native port's rows equal transformers' within 1e-4, not to the bit
            **({"forward": "native"} if encoder.forward_path == "native" else {}),
            "device": str(encoder.device),
            **plan.settings(),
            **plan.batching(),
        }

    # ------------------------------------------------------------------ running

    def token_counts(self, records: Sequence[Record]) -> np.ndarray:
        """Tokens of each record, special tokens included, before truncation: `(N,)`.

        Cheap next to a forward pass; a service uses it to bound its queue in tokens."""
        return token_counts(self.encoder, records)

    def release_cached_memory(self) -> None:
        """Hand the device's cached blocks back (after an out-of-memory failure, before a
        retry); nothing to do on a CPU."""
        self.encoder.release_cached_memory()

    def embed_jobs(self, jobs: Sequence[Job]) -> list[SentenceChunk | BertlayersError]:
        """Embed several jobs (records, config or plan), each its own way, in shared batches.

        Returns per job a chunk of its records in input order (equal to the job run alone),
        or the `BertlayersError` its input or config raised (see `jobs.py`)."""
        outcomes: list = [None] * len(jobs)
        planned = []
        for j, (records, config) in enumerate(jobs):
            try:
                planned.append((j, (records, self.plan(config))))
            except BertlayersError as err:
                outcomes[j] = err
        with self._lock:
            results = embed_jobs(self.encoder, [job for _, job in planned])
        for (j, _), result in zip(planned, results, strict=True):
            outcomes[j] = result
        return outcomes

    def embed_many(self, jobs: Sequence[Job]) -> list[list[RecordVectors] | BertlayersError]:
        """`embed_jobs`, each job's chunk as one `RecordVectors` per record."""
        return [
            out if isinstance(out, BertlayersError) else out.records()
            for out in self.embed_jobs(jobs)
        ]

    def embed(self, records: Sequence[Record], config: ExtractConfig | Plan) -> list[RecordVectors]:
        """Embed records in memory, one `RecordVectors` each, in input order: one job.

        All the records are sorted and batched together (no chunks); nothing else is built
        (no sink, no provenance). The results are those of `iter_chunks`, row for row."""
        [outcome] = self.embed_jobs([(list(records), config)])
        if isinstance(outcome, BertlayersError):
            raise outcome
        return outcome.records()

    def iter_chunks(
        self,
        records: Iterable[Record],
        config: ExtractConfig | Plan,
        progress: Progress | None = None,
        reserve: Reserve | None = None,
    ) -> Iterator[SentenceChunk]:
        """Embed records chunk by chunk; each chunk comes back whole and in input order.

        At token level a chunk's rows are written, as batches finish, into room made by
        `reserve` (a sink's, e.g. a store's file; by default an array in memory)."""
        return iter_chunks(self.encoder, records, self.plan(config), progress, reserve)

    # ------------------------------------------------------------------ attention

    def attention_plan(self, config: AttentionConfig | AttentionPlan) -> AttentionPlan:
        """An attention config resolved against this model: layers 1..L, heads, the limit."""
        if isinstance(config, AttentionPlan):
            return config
        return resolve_attention_plan(config, self.encoder)

    def iter_attention(
        self,
        records: Iterable[Record],
        config: AttentionConfig | AttentionPlan,
        progress: Progress | None = None,
    ) -> Iterator[list[AttentionMaps]]:
        """Attention maps of records, chunk by chunk, in input order (see `attention.py`)."""
        return attention_chunks(self.encoder, records, self.attention_plan(config), progress)

    def attentions(
        self, records: Sequence[Record], config: AttentionConfig | AttentionPlan
    ) -> list[AttentionMaps]:
        """Every record's attention maps, in input order: one call, under the engine's lock."""
        with self._lock:
            return [m for chunk in self.iter_attention(records, config) for m in chunk]
