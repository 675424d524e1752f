"""Attention maps per layer and head, against transformers' eager `output_attentions` for each
text run alone; word merging, norm-based attention and the MLM lens against hand computations;
the `attention` and `lens` commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertlayers import Engine
from bertlayers.core.config import AttentionConfig
from bertlayers.errors import InputError, ModelError, OptionError
from bertlayers.io.readers import Record, records_from_texts, records_from_words
from conftest import TINY_ARCHS
from test_cli import assert_one_line_error, run_cli

TOLERANCE = 1e-5
TEXTS = [
    "The cat sat on the mat, and then it slept.",
    "a",
    "",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "Ünïcödé — emoji 🙂 and zero\u200bwidth.",
]


class EagerReference:
    """Each text alone, unpadded, float32, eager attention, `output_attentions=True`."""

    def __init__(self, model_dir) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()

    @torch.inference_mode()
    def maps(self, text: str, pair: str | None = None, max_length: int | None = None):
        enc = self.tokenizer(
            text, pair, return_tensors="pt", truncation=bool(max_length), max_length=max_length
        )
        accepted = {"input_ids", "attention_mask", "token_type_ids"}
        inputs = {k: v for k, v in enc.items() if k in accepted}
        out = self.model(**inputs, output_attentions=True)
        return torch.stack(out.attentions)[:, 0].numpy()  # (L, A, T, T)


@pytest.fixture(scope="module")
def bundled_eager():
    from bertlayers.core.encoder import bundled_model_path

    return EagerReference(bundled_model_path())


def _records():
    return [*records_from_texts(TEXTS), Record("pair", "Where is the cat?", "On the mat.")]


def test_maps_equal_eager_attention_for_each_text_alone_whatever_it_is_batched_with(
    bundled, bundled_eager
):
    records = _records()
    got = bundled.attentions(records)  # every layer and head, batched together
    assert [m.id for m in got] == [r.id for r in records]
    for record, maps in zip(records, got, strict=True):
        expected = bundled_eager.maps(record.text, record.pair)
        assert maps.maps.dtype == np.float32 and maps.maps.shape == expected.shape
        assert np.abs(maps.maps - expected).max() <= TOLERANCE, record.id
        assert maps.layers == list(range(1, 7)) and maps.heads == list(range(12))
        assert maps.items[0] == "[CLS]" and maps.items[-1] == "[SEP]" and maps.special[0]
        np.testing.assert_allclose(maps.maps.sum(-1), 1, atol=1e-5)
    pair = got[-1]
    assert (
        pair.segments.tolist() == [0] * 7 + [1] * 5
    )  # [CLS] where is the cat ? [SEP] | on the mat . [SEP]
    # a selection is the same numbers, in the order asked
    some = bundled.attentions(records[:1], layers="-1,2", heads="3,0")[0]
    full = bundled_eager.maps(records[0].text)
    assert np.abs(some.maps - full[[5, 1]][:, [3, 0]]).max() <= TOLERANCE


def test_the_model_switches_back_to_its_fast_attention_and_embeddings_are_unchanged(bundled):
    before = bundled.embed(["a text to embed"], layers="all")
    bundled.attentions(["attention first"])
    assert bundled.encoder.model.config._attn_implementation == "sdpa"
    assert np.array_equal(before, bundled.embed(["a text to embed"], layers="all"))


def test_the_pass_stops_at_the_deepest_layer_asked_for(bundled):
    ran = []
    layers = bundled.encoder.model.encoder.layer
    hooks = [layer.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, layer in
             enumerate(layers)]  # fmt: skip
    try:
        bundled.attentions(["only the first two layers run"], layers="1,2")
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == [0, 1]
    assert len(bundled.encoder.model.encoder.layer) == 6  # the model is whole again


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_every_tiny_architecture_equals_its_eager_reference(tiny_model_dirs, arch):
    path = tiny_model_dirs[arch]
    engine = Engine(str(path), device="cpu")
    reference = EagerReference(path)
    records = list(records_from_texts(["hello world and more words here", "a b", "x"]))
    got = engine.attentions(records, AttentionConfig(long="truncate"))
    for record, maps in zip(records, got, strict=True):
        expected = reference.maps(record.text, max_length=engine.info.max_length)
        assert maps.maps.shape == expected.shape
        assert np.abs(maps.maps - expected).max() <= TOLERANCE, arch


def test_word_level_merges_pieces_as_clark_et_al(bundled):
    words = [["Tokenization", "is", "unbelievably", "fun"]]
    token = bundled.attentions(list(records_from_words(words)), layers="2", heads="0:3")[0]
    word = bundled.attentions(
        list(records_from_words(words)), layers="2", heads="0:3", level="word"
    )[0]
    assert word.items == ["[CLS]", *words[0], "[SEP]"] and word.level == "word"
    # by hand: to a word = sum of its pieces' columns, from a word = mean of its pieces' rows
    ids = token.word_ids
    units = [[0], *([int(i) for i in np.flatnonzero(ids == w)] for w in range(4)), [len(ids) - 1]]
    expected = np.zeros(word.maps.shape)
    for u, rows in enumerate(units):
        for v, cols in enumerate(units):
            expected[:, :, u, v] = token.maps[:, :, rows][:, :, :, cols].sum(-1).mean(-1)
    np.testing.assert_allclose(word.maps, expected, atol=1e-6)
    np.testing.assert_allclose(word.maps.sum(-1), 1, atol=1e-5)
    raw = bundled.attentions(["Tokenization is fun"], level="word")[0]
    assert raw.items == ["[CLS]", "Tokenization", "is", "fun", "[SEP]"]
    assert raw.spans[1].tolist() == [0, 12]


def test_long_texts_are_refused_or_truncated_and_flagged(bundled, bundled_eager):
    long_text = "word " * 600
    with pytest.raises(InputError, match=r"record 1 has 602 tokens, over the limit of 512"):
        bundled.attentions(["short", long_text])
    cut = bundled.attentions(["short", long_text], long="truncate")
    assert [m.truncated for m in cut] == [False, True] and cut[1].maps.shape[-1] == 512
    assert cut[1].n_tokens == 602
    capped = bundled.attentions(["a few words of text"], max_tokens=5, long="truncate")[0]
    assert capped.maps.shape[-1] == 5
    np.testing.assert_allclose(
        capped.maps, bundled_eager.maps("a few words of text", max_length=5), atol=TOLERANCE
    )
    with pytest.raises(InputError, match="or a larger max_tokens"):
        bundled.attentions(["a few words of text"], max_tokens=5)
    with pytest.raises(OptionError, match="windows do not make sense"):
        bundled.attentions(["x"], long="split")


def test_bad_specs_are_one_line_with_the_valid_range(bundled):
    with pytest.raises(
        OptionError, match=r"layer 0 .* no attention.* layers of this model are 1\.\.6"
    ):
        bundled.attentions(["x"], layers="0")
    with pytest.raises(OptionError, match=r"layer 7 in '7' is out of range"):
        bundled.attentions(["x"], layers="7")
    with pytest.raises(OptionError, match=r"heads 0\.\.11 per layer"):
        bundled.attentions(["x"], heads="12")
    with pytest.raises(OptionError, match="per token or per word"):
        bundled.attentions(["x"], level="sentence")
    assert bundled.attentions(["x"], layers="-1", heads="-1")[0].heads == [11]


def test_norm_based_attention_equals_a_hand_computation(bundled):
    """‖α_ij f_h(x_j)‖ with f_h(x) = (x W_V + b_V)_h W_O^h (Kobayashi et al. 2020), computed
    here from the layer's own weights and its input hidden state."""
    text = "The norms of the value vectors matter."
    got = bundled.attentions([text], layers="2", norms=True)[0]
    attention = bundled.attentions([text], layers="2")[0]
    assert got.kind == "norms"
    hidden = bundled.extract_tokens([text], layers="1", include_special=True)[0].vectors[:, 0]
    layer = bundled.encoder.model.encoder.layer[1]
    w_v = layer.attention.self.value.weight.detach().numpy()
    b_v = layer.attention.self.value.bias.detach().numpy()
    w_o = layer.attention.output.dense.weight.detach().numpy()  # (H, H)
    values = hidden @ w_v.T + b_v  # (T, H)
    d = 384 // 12
    for h in (0, 7):
        f = values[:, h * d : (h + 1) * d] @ w_o[:, h * d : (h + 1) * d].T  # (T, H)
        expected = attention.maps[0, h] * np.linalg.norm(f, axis=-1)[None, :]
        np.testing.assert_allclose(got.maps[0, h], expected, rtol=1e-4, atol=1e-6)


def test_int8_weights_are_refused_for_attention():
    engine = Engine(device="cpu", runtime="int8")
    with pytest.raises(OptionError, match="attention maps need the model's float weights"):
        engine.attentions(list(records_from_texts(["x"])), AttentionConfig())


# ---------------------------------------------------------------- the MLM lens


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory):
    """A tiny random BERT with a masked-LM head, and the bundled tokenizer."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    from bertlayers.core.encoder import bundled_model_path

    path = tmp_path_factory.mktemp("tiny-mlm")
    tokenizer = BertTokenizerFast.from_pretrained(bundled_model_path())
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_the_lens_equals_the_head_applied_by_hand_to_each_layer(tiny_mlm):
    """Each layer's hidden state through BERT's head, computed in numpy: dense, exact GELU,
    LayerNorm, then the decoder tied to the input embeddings."""
    import math

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from bertlayers.core.lens import Lens

    text = "paris is the [MASK] of france ."
    [result] = Lens(str(tiny_mlm), device="cpu").read([text], k=4)
    model = AutoModelForMaskedLM.from_pretrained(tiny_mlm).eval()
    enc = AutoTokenizer.from_pretrained(tiny_mlm)(text, return_tensors="pt")
    with torch.no_grad():
        states = model.bert(**enc, output_hidden_states=True).hidden_states
    head = model.cls.predictions

    def weights(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy()

    w1, b1 = weights(head.transform.dense.weight), weights(head.transform.dense.bias)
    ln = head.transform.LayerNorm
    decoder, bias = weights(head.decoder.weight), weights(head.bias)
    ids = enc["input_ids"][0].numpy()
    erf = np.vectorize(math.erf)
    assert result.layers == [0, 1, 2, 3] and result.masked.sum() == 1
    for k in result.layers:
        x = states[k][0].numpy() @ w1.T + b1
        x = 0.5 * x * (1 + erf(x / np.sqrt(2)))  # exact GELU, as BERT's config says
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + ln.eps)
        x = x * weights(ln.weight) + weights(ln.bias)
        logits = x @ decoder.T + bias  # (T, V)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        top = np.argsort(-logits, axis=-1, kind="stable")[:, :4]
        np.testing.assert_array_equal(result.top_ids[k], top)
        expected = np.take_along_axis(probs, top, 1)
        np.testing.assert_allclose(result.top_probs[k], expected, rtol=1e-4)
        rank = (logits > logits[np.arange(len(ids)), ids][:, None]).sum(-1) + 1
        np.testing.assert_array_equal(result.rank[k], rank)


def test_a_model_without_a_head_is_refused_in_one_line():
    from bertlayers.core.lens import Lens

    with pytest.raises(ModelError, match="has no masked-LM head"):
        Lens(device="cpu")


def test_lens_command_prints_and_writes_json(tiny_mlm, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("the [MASK] sat on the mat .\n", encoding="utf-8")
    out = tmp_path / "lens.json"
    run = run_cli("lens", str(source), "--model", str(tiny_mlm), "-k", "3", "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert "<- [MASK]" in run.stdout and "layer  3:" in run.stdout
    data = json.loads(out.read_text())
    assert data["texts"][0]["tokens"][2] == "[MASK]" and len(data["texts"][0]["top"]) == 4
    bundled = run_cli("lens", str(source))
    assert_one_line_error(bundled, "has no masked-LM head")


# ---------------------------------------------------------------- the attention command


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS[:2] + TEXTS[3:]) + "\n", encoding="utf-8")
    return path


def test_attention_store_holds_every_texts_maps_and_resumes(bundled, texts_file, tmp_path):
    from bertlayers import load_attention

    store = tmp_path / "maps.npz"
    run = run_cli("attention", str(texts_file), "-o", str(store), "--layers", "-2:", "-q")
    assert run.returncode == 0, run.stderr
    loaded = load_attention(store)
    direct = bundled.attentions(texts_file.read_text().splitlines(), layers="-2:")
    assert [m.id for m in loaded] == ["1", "2", "3", "4"]
    for got, expected in zip(loaded, direct, strict=True):
        np.testing.assert_allclose(got.maps, expected.maps, atol=1e-7)
        assert got.items == expected.items and got.layers == [5, 6]
        np.testing.assert_array_equal(got.special, expected.special)
    again = run_cli("attention", str(texts_file), "-o", str(store), "-q")
    assert_one_line_error(again, "output exists")


def test_attention_stats_directory_and_stdout(bundled, texts_file, tmp_path):
    from bertlayers.analysis.attention import HeadStats

    out = tmp_path / "heads"
    run = run_cli("attention", str(texts_file), "--stats", "-o", str(out), "-q")
    assert run.returncode == 0, run.stderr
    data = json.loads((out / "attention-stats.json").read_text())
    stats = HeadStats(list(range(1, 7)), list(range(12)))
    for maps in bundled.attentions(texts_file.read_text().splitlines()):
        stats.add(maps.maps, maps.special, maps.items)
    for row, expected in zip(data["rows"], stats.result(), strict=True):
        assert row["layer"] == expected["layer"] and row["head"] == expected["head"]
        assert abs(row["entropy"] - expected["entropy"]) < 1e-6
    assert data["texts"] == 4 and "entropy" in data["measures"]
    for name in ("attention-stats.csv", "attention-entropy.png", "attention-to_sep.svg"):
        assert (out / name).exists(), name
    assert run.stdout.splitlines()[0].startswith("layer,head,entropy")
    for _ in range(2):  # a report of the run, twice: the first report is not an input
        reported = run_cli("report", str(out), "--overwrite")
        assert reported.returncode == 0, reported.stderr
    page = (out / "report.html").read_text()
    assert "Attention heads" in page and page.count('<img class="plot"') == 8
    assert "Entropy of a query token" in page


def test_attention_page_figures_and_stdout(texts_file, tmp_path):
    page = tmp_path / "view.html"
    run = run_cli("attention", str(texts_file), "-o", str(page), "-q", "--level", "word")
    assert run.returncode == 0, run.stderr
    text = page.read_text()
    assert "attn-data" in text and "http://" not in text.replace("http://www.w3.org", "")
    for name, extra in (("heads.png", ["--layers", "3"]), ("grid.svg", ["--heads", ":2"])):
        run = run_cli("attention", str(texts_file), "-o", str(tmp_path / name), "-q", *extra)
        assert run.returncode == 0, run.stderr
        assert (tmp_path / name).stat().st_size > 1000
        assert (
            not (tmp_path / name).with_suffix(".svg" if name.endswith("png") else ".png").exists()
        )
    rolled = run_cli(
        "attention", str(texts_file), "-o", str(tmp_path / "r.html"), "--rollout", "-q"
    )
    assert rolled.returncode == 0, rolled.stderr
    table = run_cli("attention", str(texts_file), "--layers", "1,6", "--heads", "0")
    assert table.returncode == 0 and table.stdout.startswith("# text 1")
    assert "token\tlayer 1\tlayer 6" in table.stdout


def test_attention_bad_input_is_one_line(texts_file, tmp_path):
    cases = [
        (["--layers", "0"], "layer 0 (the embedding output) has no attention"),
        (["-o", str(tmp_path / "x.txt")], "cannot tell what to write"),
        (["--stats", "-o", str(tmp_path / "x.csv")], "--stats writes a directory"),
        (["--rollout", "--layers", "2", "-o", str(tmp_path / "r.html")], "--rollout multiplies"),
        (["--long", "split"], "windows do not make sense for attention"),
        (["--max-tokens", "3"], "--max-tokens must be at least 4"),
        (["--view", "side", "-o", str(tmp_path / "f.png")], "unknown --view 'side'"),
    ]
    for extra, message in cases:
        assert_one_line_error(run_cli("attention", str(texts_file), *extra), message)
    long_file = tmp_path / "long.txt"
    long_file.write_text("short\n" + "word " * 600 + "\n", encoding="utf-8")
    refused = run_cli("attention", str(long_file), "-o", str(tmp_path / "l.npz"), "-q")
    assert_one_line_error(refused, "record 2 has 602 tokens")
    assert not (tmp_path / "l.npz").exists()
