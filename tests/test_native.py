"""The native forward pass (bertlayers.backends.native) against transformers' model.

Every layer of every supported family equals transformers' hidden states (padded batches,
pairs and segments, texts at the length limit) and the reference (one text alone, unpadded);
each config field the port reads, changed in a tiny model whose every weight is random (so a
LayerNorm or bias the port mixes up shows), still matches, and the change is shown to matter
(a port that ignored it would fail). Whatever is not ported runs transformers' model and says
so. `bertlayers extract` of one line imports no transformers model code, and `info` and a
layer out of range need no weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bertlayers import Extractor
from bertlayers.backends.native import ACTIVATIONS
from bertlayers.core.encoder import Encoder, bundled_model_path
from bertlayers.errors import OptionError
from conftest import Reference

TOLERANCE = 1e-4
NATIVE_ARCHS = ["bert", "roberta", "distilbert", "electra", "xlm-roberta", "mpnet"]
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "short",
    "Naïve café owners don't like 😀 emoji — or do they?",
    "A rather longer sentence, with commas, numbers like 3.14159 and 2024, and "
    "some unusual words: antidisestablishmentarianism, floccinaucinihilipilification.",
    "x",
]
PAIRS = ["a question?", "an answer here", "", "no", "the pair of a very short text"]


def _batch(encoder: Encoder, texts, pairs=None) -> dict[str, torch.Tensor]:
    """A padded batch, cut at the model's length limit."""
    enc = encoder.tokenizer(
        texts,
        pairs,
        padding=True,
        truncation="longest_first",
        max_length=encoder.info.max_length,
        return_tensors="pt",
    )
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _transformers_states(encoder: Encoder, batch: dict) -> tuple[torch.Tensor, ...]:
    """transformers' own hidden states for the batch (the lazily loaded model)."""
    inputs = {k: v for k, v in batch.items() if k in encoder.input_names}
    with torch.inference_mode():
        return encoder.model(**inputs, output_hidden_states=True).hidden_states


def _max_diff(encoder: Encoder, batch: dict) -> float:
    layers = list(range(encoder.info.num_layers + 1))
    ours = encoder.hidden_state_list(batch, layers)
    theirs = _transformers_states(encoder, batch)
    real = batch["attention_mask"].bool()  # padding positions carry no meaning
    return max(float((a - theirs[i])[real].abs().max()) for i, a in zip(layers, ours, strict=True))


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Every weight random (LayerNorms away from 1 and 0 too), so each one's role shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(noise * 0.3)  # pre-activations of order 1: activations differ


def _save_variant(
    source: Path, path: Path, seed: int = 0, head: str | None = None, **changes
) -> Path:
    """The tiny model of `source` with config fields changed and random weights, saved with
    the source's tokenizer (as transformers' `head` class, e.g. a masked-LM checkpoint)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(source)
    for name, value in changes.items():
        setattr(config, name, value)
    torch.manual_seed(seed)
    cls = getattr(transformers, head) if head else transformers.AutoModel
    model = cls.from_config(config) if cls is transformers.AutoModel else cls(config)
    _randomize(model, seed)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, path / name)
    return path


@pytest.fixture(scope="module")
def random_models(tiny_model_dirs, tmp_path_factory) -> dict[str, Path]:
    """Each native family with every weight random."""
    root = tmp_path_factory.mktemp("random-native")
    return {a: _save_variant(tiny_model_dirs[a], root / a) for a in NATIVE_ARCHS}


# ---------------------------------------------------------------- equal to transformers


def test_the_bundled_model_runs_natively_and_equals_transformers():
    encoder = Encoder(device="cpu")
    assert encoder.forward_path == "native" and encoder.native_refused is None
    assert _max_diff(encoder, _batch(encoder, TEXTS)) <= TOLERANCE
    assert _max_diff(encoder, _batch(encoder, TEXTS, PAIRS)) <= TOLERANCE


@pytest.mark.parametrize("arch", NATIVE_ARCHS)
def test_every_family_equals_transformers_every_layer(arch, random_models):
    encoder = Encoder(str(random_models[arch]), device="cpu")
    assert encoder.forward_path == "native", encoder.native_refused
    assert _max_diff(encoder, _batch(encoder, TEXTS)) <= TOLERANCE
    assert _max_diff(encoder, _batch(encoder, TEXTS, PAIRS)) <= TOLERANCE
    # at the length limit: every position embedding in use (RoBERTa's after the padding index)
    long = _batch(encoder, [" ".join(["word"] * 200), TEXTS[1]])
    assert long["input_ids"].shape[1] == encoder.info.max_length
    assert _max_diff(encoder, long) <= TOLERANCE


@pytest.mark.parametrize("arch", ["bundled", *NATIVE_ARCHS])
def test_native_rows_equal_the_reference_text_by_text(arch, random_models, review_texts):
    """Through the library (batched, sorted, padded): each text as if it ran alone."""
    path = bundled_model_path() if arch == "bundled" else random_models[arch]
    extractor = Extractor(str(path), device="cpu")
    assert extractor.encoder.forward_path == "native"
    reference = Reference(path)
    texts = [*TEXTS, *review_texts[:6]]
    limit = min(extractor.encoder.info.max_length, 40)
    fits = [t for t in texts if len(reference.tokenizer(t)["input_ids"]) <= limit]
    result = extractor.extract(fits, layers="all", pooling="mean", max_length=limit)
    assert result.provenance["forward"] == "native"
    for i, text in enumerate(fits):
        expected = reference.pooled(text, "mean")
        assert np.abs(result.embeddings[i] - expected).max() <= TOLERANCE


def test_the_native_pass_stops_at_the_deepest_layer_asked_for(random_models, monkeypatch):
    encoder = Encoder(str(random_models["bert"]), device="cpu")
    native = encoder.native
    calls = []
    run_layer = native.layer

    def counted(h, layer, bias):
        calls.append(next(i for i, known in enumerate(native.layers) if known is layer))
        return run_layer(h, layer, bias)

    monkeypatch.setattr(native, "layer", counted)
    batch = _batch(encoder, TEXTS)
    assert [s.shape[0] for s in encoder.hidden_state_list(batch, [0])] == [len(TEXTS)]
    assert calls == []
    encoder.hidden_state_list(batch, [1, 0])
    assert calls == [0]
    calls.clear()
    full = encoder.hidden_state_list(batch, [3])
    assert calls == [0, 1, 2]
    assert torch.equal(encoder.hidden_state_list(batch, [3, 3])[1], full[0])


# ---------------------------------------------------------------- each config field it reads


def test_every_ported_activation_is_transformers_own():
    """`gelu` is the exact erf GELU, not a tanh form: each name as ACT2FN computes it."""
    from transformers.activations import ACT2FN

    x = torch.linspace(-12, 12, 4001)
    for name, function in ACTIVATIONS.items():
        assert torch.allclose(function(x), ACT2FN[name](x), atol=1e-6, rtol=0), name
    assert not torch.allclose(ACTIVATIONS["gelu"](x), ACT2FN["gelu_new"](x), atol=1e-6)


# (family, config changes): each changes what the encoder computes
VARIANTS = [
    ("bert", {"hidden_act": "relu"}),
    ("bert", {"hidden_act": "gelu_new"}),
    ("bert", {"hidden_act": "quick_gelu"}),
    ("bert", {"hidden_act": "silu"}),
    ("bert", {"layer_norm_eps": 1e-2}),
    ("bert", {"type_vocab_size": 3}),
    ("roberta", {"hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-3}),
    ("roberta", {"pad_token_id": 3}),  # positions count from the padding index
    ("xlm-roberta", {"hidden_act": "relu"}),
    ("electra", {"hidden_act": "gelu_new", "layer_norm_eps": 1e-2}),
    ("electra", {"embedding_size": 32}),  # equal to the hidden size: no projection
    ("distilbert", {"activation": "relu"}),
    ("distilbert", {"sinusoidal_pos_embds": True}),  # the table as saved
    ("mpnet", {"hidden_act": "relu", "layer_norm_eps": 1e-2}),
]
# fields that change the weights' shapes or only their initial values
SHAPES_OR_INIT = {"type_vocab_size", "embedding_size", "sinusoidal_pos_embds"}


@pytest.mark.parametrize(("arch", "changes"), VARIANTS, ids=lambda v: str(v))
def test_each_config_field_read_still_matches(arch, changes, tiny_model_dirs, tmp_path):
    variant_dir = _save_variant(tiny_model_dirs[arch], tmp_path / "variant", **changes)
    variant = Encoder(str(variant_dir), device="cpu")
    assert variant.forward_path == "native", variant.native_refused
    batch = _batch(variant, TEXTS, PAIRS)
    if "type_vocab_size" in changes:  # a third segment, as transformers takes it
        batch["token_type_ids"] = (batch["token_type_ids"] * 2).clamp(max=2)
    assert _max_diff(variant, batch) <= TOLERANCE
    if SHAPES_OR_INIT & set(changes):
        return
    # the field matters: the same weights under the unchanged config give other states, so
    # a port that ignored it would fail the check above
    base_dir = _save_variant(tiny_model_dirs[arch], tmp_path / "base")
    base = Encoder(str(base_dir), device="cpu", forward="transformers")
    with torch.no_grad():
        pairs = zip(base.model.parameters(), variant.model.parameters(), strict=True)
        for p_base, p_variant in pairs:
            p_base.copy_(p_variant)
    honoured = _transformers_states(variant, batch)[-1]
    ignored = _transformers_states(base, batch)[-1]
    real = batch["attention_mask"].bool()
    assert float((honoured - ignored)[real].abs().max()) > 2 * TOLERANCE


def test_distilbert_sinusoidal_positions_left_out_of_the_checkpoint(tiny_model_dirs, tmp_path):
    """Positions missing from the file are computed as transformers computes them."""
    from safetensors.torch import load_file, save_file

    path = _save_variant(tiny_model_dirs["distilbert"], tmp_path / "m", sinusoidal_pos_embds=True)
    tensors = load_file(str(path / "model.safetensors"))
    names = [k for k in tensors if k.endswith("position_embeddings.weight")]
    assert names
    save_file({k: v for k, v in tensors.items() if k not in names}, str(path / "model.safetensors"))
    encoder = Encoder(str(path), device="cpu")
    assert encoder.forward_path == "native"
    assert _max_diff(encoder, _batch(encoder, TEXTS)) <= TOLERANCE


# ---------------------------------------------------------------- checkpoints as saved


def test_task_checkpoints_pickles_shards_and_old_layernorm_names(tiny_model_dirs, tmp_path):
    source = tiny_model_dirs["bert"]
    masked = _save_variant(source, tmp_path / "mlm", head="BertForMaskedLM")  # `bert.` prefix
    assert json.loads((masked / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    sharded = _save_variant(source, tmp_path / "sharded")
    import transformers

    model = transformers.AutoModel.from_pretrained(sharded)
    shutil.rmtree(sharded)
    model.save_pretrained(sharded, max_shard_size="100KB")  # model.safetensors.index.json
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, sharded / name)
    assert (sharded / "model.safetensors.index.json").exists()
    legacy = _save_variant(source, tmp_path / "legacy", head="BertForMaskedLM", seed=3)
    weights = transformers.BertForMaskedLM.from_pretrained(legacy).state_dict()
    (legacy / "model.safetensors").unlink()
    old = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
    renamed = {}
    for key, value in weights.items():
        for new_name, old_name in old.items():
            key = key.replace(new_name, old_name)
        renamed[key] = value
    torch.save(renamed, legacy / "pytorch_model.bin")  # a pickle with old gamma/beta names
    for path in (masked, sharded, legacy):
        encoder = Encoder(str(path), device="cpu")
        assert encoder.forward_path == "native", (path.name, encoder.native_refused)
        assert _max_diff(encoder, _batch(encoder, TEXTS, PAIRS)) <= TOLERANCE, path.name


def test_a_hub_snapshot_in_the_cache_runs_natively_with_its_commit(tiny_model_dirs, tmp_path):
    """A hub id read from the cache (offline): its files from the snapshot, and its commit
    as revision and fingerprint."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-bert"
    shutil.copytree(tiny_model_dirs["bert"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "import json; from bertlayers.core.encoder import Encoder; "
        "e = Encoder('someone/tiny-bert', device='cpu'); "
        "print(json.dumps([e.forward_path, e.info.revision, e.fingerprint]))"
    )
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1",
               BERTLAYERS_CACHE=str(tmp_path / "cache"))  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["native", commit, commit]


def test_weights_that_cannot_be_read_or_do_not_fit_the_config(tiny_model_dirs, tmp_path):
    """A damaged weights file is one line naming it; weights of other sizes than the config
    says are left to transformers (which says so in its own words)."""
    import dataclasses

    from bertlayers.backends.native import load_native, native_spec, weight_files
    from bertlayers.errors import ModelError

    path = tmp_path / "damaged"
    shutil.copytree(tiny_model_dirs["bert"], path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"cannot read model\.safetensors"):
        Encoder(str(path), device="cpu")
    source = tiny_model_dirs["bert"]
    encoder = Encoder(str(source), device="cpu")
    spec = native_spec(encoder.config, json.loads((source / "config.json").read_text()))
    files = weight_files(lambda name: (source / name) if (source / name).exists() else None)
    for changes, reason in (
        ({"type_vocab_size": 5}, "the segment embeddings weights are (2, 32), the config says"),
        ({"hidden_size": 64, "embedding_size": 64}, "the word embeddings weights are (32,),"),
        ({"num_layers": 4}, "the checkpoint has no weight encoder.layer.3."),
    ):
        refused = load_native(dataclasses.replace(spec, **changes), files, torch.device("cpu"),
                              torch.float32)  # fmt: skip
        assert isinstance(refused, str) and refused.startswith(reason), refused


# ---------------------------------------------------------------- what falls back


@pytest.mark.parametrize("arch", ["deberta-v2", "modernbert"])
def test_families_not_ported_run_transformers(arch, tiny_model_dirs):
    extractor = Extractor(str(tiny_model_dirs[arch]), device="cpu")
    assert extractor.encoder.forward_path == "transformers"
    assert f"model type '{arch}' is not ported" == extractor.encoder.native_refused
    result = extractor.extract(TEXTS[:2], layers="all")
    assert result.provenance["forward"] == "transformers"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"hidden_act": "gelu_accurate"}, "activation 'gelu_accurate' is not ported"),
        ({"position_embedding_type": "relative_key"}, "'relative_key' is not ported"),
        ({"a_field_from_the_future": 1}, "config field 'a_field_from_the_future' is not ported"),
    ],
)
def test_configs_not_ported_run_transformers_and_say_why(
    changes, reason, tiny_model_dirs, tmp_path
):
    path = tmp_path / "m"
    shutil.copytree(tiny_model_dirs["bert"], path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **changes}))
    encoder = Encoder(str(path), device="cpu")
    assert encoder.forward_path == "transformers"
    assert reason in encoder.native_refused
    batch = _batch(encoder, TEXTS[:2])
    assert len(encoder.hidden_state_list(batch, [0, 1])) == 2


def test_the_opt_out_and_the_runtimes_that_need_transformers(tiny_model_dirs, monkeypatch):
    path = str(tiny_model_dirs["bert"])
    assert Encoder(path, device="cpu", forward="transformers").forward_path == "transformers"
    monkeypatch.setenv("BERTLAYERS_FORWARD", "transformers")
    extractor = Extractor(path, device="cpu")
    assert extractor.encoder.forward_path == "transformers"
    assert extractor.extract(TEXTS[:2]).provenance["forward"] == "transformers"
    monkeypatch.setenv("BERTLAYERS_FORWARD", "fastest")
    with pytest.raises(OptionError, match="BERTLAYERS_FORWARD is 'fastest'"):
        Encoder(path, device="cpu")
    monkeypatch.delenv("BERTLAYERS_FORWARD")
    encoder = Encoder(path, device="cpu", runtime="int8")
    assert encoder.forward_path == "transformers" and "int8" in encoder.native_refused


def test_resume_identity_names_the_native_forward(tiny_model_dirs):
    """Rows of the two forward passes agree within 1e-4, not to the bit: a store is resumed
    by the pass that began it."""
    from bertlayers.core.config import ExtractConfig
    from bertlayers.core.engine import Engine

    engine = Engine(str(tiny_model_dirs["bert"]), device="cpu")
    assert engine.identity(ExtractConfig())["forward"] == "native"


def test_attention_maps_load_transformers_model_on_first_use(random_models, monkeypatch):
    """The attention pass needs transformers' model: loaded then, not before."""
    extractor = Extractor(str(random_models["bert"]), device="cpu")
    encoder = extractor.encoder
    assert encoder._model is None
    ours = extractor.attentions(TEXTS[:3], layers="all")
    assert encoder._model is not None and encoder.forward_path == "native"
    embedded = extractor.extract(TEXTS[:3], layers="all")  # the fast path stays native
    assert embedded.provenance["forward"] == "native"
    monkeypatch.setenv("BERTLAYERS_FORWARD", "transformers")
    plain = Extractor(str(random_models["bert"]), device="cpu")
    for mine, theirs in zip(ours, plain.attentions(TEXTS[:3], layers="all"), strict=True):
        np.testing.assert_array_equal(mine.maps, theirs.maps)
    np.testing.assert_allclose(
        embedded.embeddings, plain.extract(TEXTS[:3], layers="all").embeddings, atol=TOLERANCE
    )


# ---------------------------------------------------------------- start-up


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300
    )


HEAVY = (
    "transformers.models.bert.modeling_bert",
    "transformers.modeling_utils",
    "torch._dynamo",
    "torch.distributed.tensor",
    "sympy",
    "scipy.optimize",
)


def test_extracting_one_line_imports_no_transformers_model_code(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("A single line of text.\n", encoding="utf-8")
    code = (
        "import json, sys\n"
        "from bertlayers.cli import main\n"
        f"code = main(['extract', {str(one)!r}, '-o', {str(tmp_path / 'out.npy')!r}, '-q'])\n"
        "modeling = sorted(m for m in sys.modules if m.startswith('transformers.models.')\n"
        "                  and '.modeling_' in m and not m.endswith('.modeling_auto'))\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps([code, modeling, heavy]))\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [0, [], []]
    assert json.loads((tmp_path / "out.json").read_text())["forward"] == "native"


def test_info_and_a_layer_out_of_range_need_no_weights(tiny_model_dirs, tmp_path, capsys):
    """A model directory without its weights: `info` describes it, `--layers 99` is refused
    naming the range, and only a run that needs the weights says they are missing."""
    from bertlayers.cli import main

    path = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dirs["bert"], path)
    (path / "model.safetensors").unlink()
    one = tmp_path / "one.txt"
    one.write_text("one line\n", encoding="utf-8")
    assert main(["info", "--model", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_layers"] == 3
    run = ["extract", str(one), "-o", str(tmp_path / "o.npy"), "--model", str(path), "--layers"]
    assert main([*run, "99"]) == 1
    error = capsys.readouterr().err
    assert "layer 99 in '99' is out of range: this model has layers 0..3" in error
    assert main([*run, "2"]) == 1
    assert f"cannot load model '{path}'" in capsys.readouterr().err


def test_info_equals_the_loaded_models_info(tiny_model_dirs):
    from bertlayers.core.encoder import load_model_info

    for path in [bundled_model_path(), *tiny_model_dirs.values()]:
        assert load_model_info(str(path)) == Encoder(str(path), device="cpu").info
