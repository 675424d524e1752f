"""Cut an encoder down to its first K layers: a model directory that loads wherever the
original does (transformers `AutoModel`, sentence-transformers, `bertlayers extract` and
`serve`), whose hidden state K is the original's layer K.

    from bertlayers.core.truncate import truncate_model
    truncate_model(None, 4, "minilm-4")      # the bundled all-MiniLM-L6-v2, layers 1..4

What the directory holds (written into `NAME.tmp-XXXX` beside it, checked, then renamed into
place, so a failure never leaves half a model under the real name):
- `config.json`: the source's, with the layer count set to K (`num_hidden_layers`, or the
  architecture's own name for it, e.g. DistilBERT's `n_layers`) and the per-layer entries
  (`layer_types`, `per_layer_config`) cut to the first K. Where the last hidden state goes
  through a final norm (ModernBERT's `final_norm`), `tie_last_hidden_states: false` is added
  so that `hidden_states[K]` stays the plain output of layer K, as in the source; the cut
  model's `last_hidden_state` (what sentence-transformers pools) is then that norm of layer K,
  which no layer of the source is.
- `model.safetensors`: every tensor of the source's weight files but those of the dropped
  layers, names and dtypes unchanged.
- the tokenizer files and the sentence-transformers modules (`modules.json`, its configs and
  module folders: pooling, `Dense` with its weights, ...), copied unchanged.
- `bertlayers_truncate.json`: the source and its fingerprint, K, what changed in the config,
  the check below, and each file's size and sha256 (how `--overwrite` knows the directory
  is one this wrote, unchanged since).

Before the rename, the cut model is loaded from the temporary directory with transformers and
run on calibration texts beside the source: the same tokens, every weight it loads equal to
the source's, and its `hidden_states[K]` within `TOLERANCE` of the source's `hidden_states[K]`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from ..errors import ModelError, OptionError, OutputError
from .encoder import Encoder, default_model, find_layer_list, quiet_transformers

PROVENANCE = "bertlayers_truncate.json"
WEIGHTS = "model.safetensors"
TOLERANCE = 1e-5  # max |cut hidden_states[K] - source hidden_states[K]| on the check texts
CHECK_TEXTS = 8
CHECK_MAX_TOKENS = 64
CALIBRATION = Path(__file__).parent.parent / "data" / "calibration.txt"
KIND = "a model directory written by bertlayers truncate"

# config.json entries with one item per layer: cut to the first K
PER_LAYER_LISTS = ("layer_types",)
PER_LAYER_MAPS = ("per_layer_config",)  # {layer index: overrides}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)
ST_FILES = ("modules.json", "config_sentence_transformers.json")  # and sentence_*_config.json
# what a hub snapshot needs: configs, tokenizer files, safetensors weights, module folders
HUB_FILES = ["*.json", "*.txt", "*.model", "*.jinja", "*.safetensors", "*/pytorch_model.bin"]
HUB_LEGACY_WEIGHTS = ["*.json", "pytorch_model*.bin", "*/pytorch_model.bin"]


def truncate_model(
    model: str | Path | None,
    keep_layers: int,
    output: str | Path,
    overwrite: bool = False,
    revision: str | None = None,
) -> Path:
    """Write `model` cut to its first `keep_layers` encoder layers to the directory `output`.

    `model` is a hub id, a local directory, or None for `BERTLAYERS_MODEL` / the bundled
    all-MiniLM-L6-v2. `keep_layers` is K in 1..L (L = the model's encoder layers; K = L writes
    a copy, with a warning). The output is never an input, never inside the model's
    directory, and replaces an existing directory only with `overwrite` and only when this
    function wrote it (unchanged since). Returns the output directory.
    """
    if isinstance(keep_layers, bool) or not isinstance(keep_layers, int):
        raise OptionError(f"keep_layers must be a whole number, got {keep_layers!r}")
    output = Path(output)
    model_id = str(model) if model is not None else default_model()
    inputs = [Path(model_id)] if Path(model_id).exists() else []
    check_model_output(output, inputs, overwrite)  # before any work
    encoder = _load(model_id, revision)
    plan = plan_cut(encoder, keep_layers)
    source = _source_directory(encoder, model_id, revision)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f"{output.name}.tmp-"))
    try:
        record = _write(encoder, plan, source, tmp)
        _write_json(tmp / PROVENANCE, {**record, "files": _manifest(tmp)})
        _usual_permissions(tmp)
        _move_into_place(tmp, output, [*inputs, source], overwrite)  # a hub snapshot too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


# ---------------------------------------------------------------- what is cut, if it can be


@dataclass(frozen=True)
class CutPlan:
    """K of L layers, and the layer list's module path (`encoder.layer`, `transformer.layer`,
    `layers`)."""

    keep: int
    num_layers: int
    layer_path: str


def _load(model_id: str, revision: str | None) -> Encoder:
    """The source as every command loads it (the same one-line errors), float32 on the CPU; a
    model whose layers share weights is refused naming why."""
    try:
        encoder = Encoder(model_id, device="cpu", revision=revision)
    except ModelError:
        reason = _shared_layers(_cached_config(model_id, revision))
        if reason:
            raise ModelError(f"cannot cut '{model_id}': {reason}") from None
        raise
    reason = _shared_layers(encoder.model.config)
    if reason:
        raise ModelError(f"cannot cut '{model_id}': {reason}")
    return encoder


def _cached_config(model_id: str, revision: str | None):
    """The config from a directory or the local cache only (None if it cannot be read)."""
    from transformers import AutoConfig

    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(model_id, revision=revision, local_files_only=True)
    except Exception:
        return None


def _shared_layers(config) -> str | None:
    groups = getattr(config, "num_hidden_groups", None)
    if config is None or groups is None:
        return None
    return (
        f"{config.model_type} runs its {config.num_hidden_layers} layers with "
        f"{groups} shared set(s) of weights (num_hidden_groups): there are no per-layer "
        "weights to keep"
    )


def plan_cut(encoder: Encoder, keep: int) -> CutPlan:
    """Check K against the model's layers, find the layer list and refuse tied layers."""
    info = encoder.info
    total = info.num_layers
    if not 1 <= keep <= total:
        raise OptionError(
            f"cannot keep {keep} layers of {info.name}: it has {total} encoder layers, "
            f"keep 1..{total}"
        )
    if keep == total:
        warnings.warn(
            f"keeping {keep} of {total} layers: the output is a copy of {info.name}",
            stacklevel=3,
        )
    layers = find_layer_list(encoder.model, total)
    path = next(name for name, module in encoder.model.named_modules() if module is layers)
    owner: dict[int, int] = {}
    for i, layer in enumerate(layers):
        for parameter in layer.parameters():
            if parameter.numel() == 0:
                continue
            first = owner.setdefault(parameter.data_ptr(), i)
            if first != i:
                raise ModelError(
                    f"cannot cut '{info.model_id}': its layers {first + 1} and {i + 1} share "
                    "weights (tied layers): cutting one would change the other"
                )
    return CutPlan(keep=keep, num_layers=total, layer_path=path)


# ---------------------------------------------------------------- the source's files


def _source_directory(encoder: Encoder, model_id: str, revision: str | None) -> Path:
    """The directory holding the source's files: the local one, or its hub snapshot."""
    local = Path(model_id)
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    commit = encoder.info.revision or revision
    try:
        snapshot = Path(snapshot_download(model_id, revision=commit, allow_patterns=HUB_FILES))
        if not _weight_files(snapshot, missing_ok=True):
            snapshot_download(model_id, revision=commit, allow_patterns=HUB_LEGACY_WEIGHTS)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelError(f"cannot fetch the files of '{model_id}' from the hub: {first}") from None
    return snapshot


def _weight_files(source: Path, missing_ok: bool = False) -> list[Path]:
    """The source's weight files: safetensors (one or sharded), else PyTorch `.bin`."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (source / single).is_file():
            return [source / single]
        if (source / index).is_file():
            weight_map = json.loads((source / index).read_text(encoding="utf-8"))["weight_map"]
            return [source / name for name in sorted(set(weight_map.values()))]
    if missing_ok:
        return []
    raise ModelError(
        f"no weight file in {source} (model.safetensors or pytorch_model.bin): nothing to cut"
    )


def _tensors(files: Iterable[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(file, "pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    yield name, handle.get_tensor(name)
        else:  # a PyTorch pickle: tensors may share storage (tied), which safetensors refuses
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            for name, tensor in state.items():
                yield name, tensor.contiguous().clone()


def _cut_weights(plan: CutPlan, files: list[Path]) -> tuple[dict[str, torch.Tensor], int]:
    """Every tensor but those of layers K+1..L (0-based K..L-1), names unchanged; and how
    many were dropped. The layer list is found in the file's names as in the model's, after
    any prefix the file adds (`bert.` of a checkpoint with a head)."""
    pattern = re.compile(rf"(?:^|\.){re.escape(plan.layer_path)}\.(\d+)\.")
    kept: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    dropped = 0
    for name, tensor in _tensors(files):
        match = pattern.search(name)
        index = int(match.group(1)) if match else None
        if index is not None:
            seen.add(index)
        if index is not None and index >= plan.keep:
            dropped += 1
        else:
            kept[name] = tensor
    if seen != set(range(plan.num_layers)):
        names = ", ".join(f.name for f in files)
        raise ModelError(
            f"cannot find the weights of the {plan.num_layers} encoder layers "
            f"('{plan.layer_path}.N.') in {names}: not cut"
        )
    return kept, dropped


def _cut_config(source: Path, config, plan: CutPlan, final_norm: bool) -> tuple[dict, dict]:
    """config.json with the layer count K and per-layer entries cut; and what changed
    (`{key: [before, after]}`)."""
    raw = json.loads((source / "config.json").read_text(encoding="utf-8"))
    keep, total = plan.keep, plan.num_layers
    own_name = type(config).attribute_map.get("num_hidden_layers", "num_hidden_layers")
    counts = [n for n in dict.fromkeys(("num_hidden_layers", own_name)) if n in raw] or [own_name]
    after = dict(raw)
    for name in counts:
        after[name] = keep
    for name in PER_LAYER_LISTS:
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, list) or len(value) != total:
            raise ModelError(
                f"config.json's {name} does not hold one entry per layer ({total}): "
                "cannot cut it consistently"
            )
        after[name] = value[:keep]
    for name in PER_LAYER_MAPS:
        value = raw.get(name)
        if isinstance(value, dict):
            after[name] = {k: v for k, v in value.items() if int(k) < keep}
    if final_norm and keep < total:
        after["tie_last_hidden_states"] = False
    changes = {k: [raw.get(k), v] for k, v in after.items() if raw.get(k, None) != v}
    return after, changes


def _companion_files(source: Path, tokenizer) -> tuple[list[str], list[str]]:
    """The tokenizer's files and the sentence-transformers modules present in `source`:
    (files, folders), relative to it."""
    names = dict.fromkeys([*TOKENIZER_FILES, *getattr(tokenizer, "vocab_files_names", {}).values()])
    names.update(dict.fromkeys(ST_FILES))
    names.update(dict.fromkeys(p.name for p in source.glob("sentence_*_config.json")))
    files = [n for n in names if (source / n).is_file()]
    folders = []
    modules = source / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text(encoding="utf-8")):
            folder = str(module.get("path") or "")
            if not folder:
                continue  # the Transformer module: the model at the root
            if Path(folder).is_absolute() or ".." in Path(folder).parts:
                raise ModelError(f"modules.json names a folder outside the model: {folder}")
            if (source / folder).is_dir():
                folders.append(folder)
    return files, folders


# ---------------------------------------------------------------- writing and checking


def _write(encoder: Encoder, plan: CutPlan, source: Path, tmp: Path) -> dict:
    """Write the cut model into `tmp`, check it against the source; its provenance record."""
    texts = _check_texts()
    batch = _tokenize(encoder.tokenizer, texts, encoder.input_names, encoder.info.max_length)
    reference, final_norm = _source_states(encoder, batch, plan.keep)
    config, changes = _cut_config(source, encoder.model.config, plan, final_norm)
    _write_json(tmp / "config.json", config)
    files = _weight_files(source)
    tensors, dropped = _cut_weights(plan, files)
    metadata = {"format": "pt"}
    from safetensors.torch import save_file

    save_file(tensors, str(tmp / WEIGHTS), metadata=metadata)
    kept = len(tensors)
    del tensors
    copied, folders = _companion_files(source, encoder.tokenizer)
    for name in copied:
        shutil.copy2(source / name, tmp / name)
    for folder in folders:
        shutil.copytree(source / folder, tmp / folder)
    difference = _check(encoder, tmp, texts, reference, plan.keep)
    info = encoder.info
    fingerprint, revision = encoder.fingerprint, info.revision
    if source.parent.name == "snapshots" and not Path(info.model_id).is_dir():
        revision = revision or source.name  # a hub snapshot's folder is its commit
        fingerprint = revision if fingerprint == "unknown" else fingerprint
    return {
        "bertlayers_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "truncate": {
            "keep_layers": plan.keep,
            "layers": f"hidden_states 0..{plan.keep} are the source's 0..{plan.keep} "
            "(0 = embedding output, 1..K = encoder layers)",
            "config_changes": changes,
            "final_norm": final_norm,
            "note": (
                f"last_hidden_state is the source's final norm applied to layer {plan.keep} "
                f"(no layer of the source); hidden_states[{plan.keep}] is layer {plan.keep}"
            )
            if final_norm and plan.keep < plan.num_layers
            else None,
            "weights": {
                "from": [f.name for f in files],
                "tensors_kept": kept,
                "tensors_dropped": dropped,
                "layer_list": plan.layer_path,
            },
            "copied": [*copied, *folders],
            "check": {
                "texts": len(texts),
                "max_abs_diff": difference,
                "tolerance": TOLERANCE,
                "what": f"hidden_states[{plan.keep}] of the cut model against the source's, "
                "float32 on the CPU",
            },
        },
        "source": {
            "id": info.model_id,
            "name": info.name,
            "fingerprint": fingerprint,
            "revision": revision,
            "model_type": info.model_type,
            "architecture": info.architecture,
            "num_layers": plan.num_layers,
        },
    }


def _check_texts() -> list[str]:
    lines = CALIBRATION.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()][:CHECK_TEXTS]


def _tokenize(tokenizer, texts: list[str], names: list[str], max_length: int) -> dict:
    enc = tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=min(CHECK_MAX_TOKENS, max_length),
        return_tensors="pt",
    )
    return {k: v for k, v in enc.items() if k in names}


@torch.inference_mode()
def _source_states(encoder: Encoder, batch: dict, keep: int) -> tuple[torch.Tensor, bool]:
    """The source's `hidden_states[K]` `(B, T, H)`, and whether its last hidden state goes
    through a final norm (its last layer's plain output is not its `last_hidden_state`)."""
    model = encoder.model
    reference = model(**batch, output_hidden_states=True).hidden_states[keep]
    config = model.config
    tie = getattr(config, "tie_last_hidden_states", None)
    config.tie_last_hidden_states = False  # hidden_states[-1]: the plain layer output
    try:
        out = model(**batch, output_hidden_states=True)
    finally:
        if tie is None:
            del config.tie_last_hidden_states
        else:
            config.tie_last_hidden_states = tie
    return reference, not torch.equal(out.hidden_states[-1], out.last_hidden_state)


@torch.inference_mode()
def _check(encoder: Encoder, cut: Path, texts: list[str], reference, keep: int) -> float:
    """Load the cut model as transformers does and hold it to the source: its tokens, its
    weights, its hidden state K. Returns the largest absolute difference."""
    from transformers import AutoModel, AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(cut)
        model, loading = AutoModel.from_pretrained(cut, output_loading_info=True)
    model = model.eval().float()
    if model.config.num_hidden_layers != keep:
        raise ModelError(f"the cut model has {model.config.num_hidden_layers} layers, not {keep}")
    if tokenizer(texts)["input_ids"] != encoder.tokenizer(texts)["input_ids"]:
        raise ModelError("the cut model's tokenizer does not tokenize as the source's: not cut")
    source_weights = encoder.model.state_dict()
    for name, tensor in model.state_dict().items():
        if name in loading["missing_keys"]:
            continue  # not in the source's files either (its hidden states show if it was)
        if name not in source_weights or not torch.equal(tensor, source_weights[name]):
            raise ModelError(f"the cut model's {name} is not the source's: not cut")
    batch = _tokenize(tokenizer, texts, encoder.input_names, encoder.info.max_length)
    states = model(**batch, output_hidden_states=True).hidden_states[keep]
    real = batch["attention_mask"].bool()  # padding positions carry no meaning
    difference = float((states - reference)[real].abs().max())
    if not difference <= TOLERANCE:
        raise ModelError(
            f"the cut model's hidden state {keep} differs from the source's layer {keep} by "
            f"{difference:.2e} (over {TOLERANCE:g}): not cut"
        )
    return difference


def _usual_permissions(root: Path) -> None:
    """The modes `mkdir` and `open` give under the umask (mkdtemp makes 0700, safetensors
    0600), read off config.json, which `open` wrote: no change to the process's umask."""
    file_mode = (root / "config.json").stat().st_mode & 0o666
    (root / WEIGHTS).chmod(file_mode)
    root.chmod(file_mode | (file_mode & 0o444) >> 2)  # x wherever r


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> list[str]:
    """Every file under `root`, relative, sorted; the provenance file left out."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.relative_to(root).as_posix() != PROVENANCE
    )


def _manifest(root: Path) -> dict[str, dict]:
    return {
        name: {"bytes": (root / name).stat().st_size, "sha256": _sha256(root / name)}
        for name in _files(root)
    }


# ---------------------------------------------------------------- the output rules
# The rules of `bertlayers.outputs.check_outputs`, for a kind that is a directory: a model
# directory that `truncate` wrote, recognised by its provenance and unchanged since.


def not_ours(path: Path) -> str | None:
    """Why `path` is not a model directory this wrote, unchanged since; None when it is."""
    if path.is_symlink() or not path.is_dir():
        return f"{path} is {'a link' if path.is_symlink() else 'a file'}, not {KIND}"
    try:
        record = json.loads((path / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        record = None
    if not (
        isinstance(record, dict)
        and "bertlayers_version" in record
        and isinstance(record.get("truncate"), dict)
        and isinstance(record.get("files"), dict)
    ):
        return f"{path} is a directory that is not {KIND}"
    listed, present = record["files"], _files(path)
    for name in sorted(set(listed) ^ set(present)):
        what = "added" if name in present else "removed"
        return f"{path} was written by bertlayers truncate, but {name} was {what} since"
    for name in present:
        entry = listed[name]
        file = path / name
        if (
            file.is_symlink()
            or file.stat().st_size != entry.get("bytes")
            or _sha256(file) != entry.get("sha256")
        ):
            return f"{path} was written by bertlayers truncate, but {name} has changed since"
    return None


def check_model_output(
    path: str | Path, inputs: Iterable[str | Path] = (), overwrite: bool = False
) -> None:
    """Refuse, with one line naming the path, an output that is an input, holds one or lies
    inside one; an existing output without `overwrite`; and with it any that `not_ours`."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    for source in inputs:
        source = Path(source)
        resolved = Path(os.path.realpath(source))
        if _same_file(path, source):
            raise OutputError(f"{path} is the input {source}: write the output to another path")
        if resolved.is_relative_to(real):
            raise OutputError(f"{path} holds the input {source}: write the output to another path")
        if source.is_dir() and real.is_relative_to(resolved):
            raise OutputError(
                f"{path} is inside the model directory {source}: write the output elsewhere"
            )
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # missing parents are made
    if not parent.is_dir():
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output directory is not writable: {parent}")
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise OutputError(f"output exists: {path} (use {{opt:overwrite=True}} to replace it)")
    reason = not_ours(path)
    if reason:
        raise OutputError(
            f"{reason}: {{opt:overwrite=True}} never replaces it (choose another output)"
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing (or a broken link)
        return False


def _move_into_place(tmp: Path, output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Rename `tmp` to `output`; an old output (checked again: it may have changed while the
    model was cut) is set aside under a unique name first and removed once the new one is in."""
    check_model_output(output, inputs, overwrite)
    if not os.path.lexists(output):
        os.rename(tmp, output)
        return
    aside = Path(tempfile.mkdtemp(dir=output.parent, prefix=f"{output.name}.old-"))
    os.rename(output, aside)  # onto the empty directory mkdtemp made
    try:
        os.rename(tmp, output)
    except BaseException:
        os.rename(aside, output)
        raise
    shutil.rmtree(aside)
