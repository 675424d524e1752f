"""Shared fixtures: real models (the bundled BERT, tiny random encoders built offline) and a
reference that runs each text alone, unpadded, in float32, straight through transformers.

Most tests run on text shipped in `tests/data` (`corpus.py`). Tests whose point is a particular
data set request the `shared_data` fixture: the shared corpora (`../shared/data`, or the folder
in `BERTLAYERS_TEST_DATA`); without them they skip, all under one summary line. With `CI` set,
missing corpora fail the run, and so does any skip but the GPU test's."""

from __future__ import annotations

import functools
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import numpy as np
import pytest
import torch

import corpus
from bertlayers import Extractor
from bertlayers.core.encoder import bundled_model_path

ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "BERTLAYERS_TEST_DATA"
DATA = Path(os.environ.get(DATA_ENV) or ROOT.parent / "shared" / "data")
SHARED_FILES = (  # the ones the tests (and the bench scripts they run) read
    "sentiment-polarity.tsv",
    "pos-wsj.conll",
    "news-bbc.jsonl",
    "corpus-fortunes.txt",
)
TINY_ARCHS = [
    "bert",
    "roberta",
    "distilbert",
    "electra",
    "deberta-v2",
    "mpnet",
    "xlm-roberta",
    "modernbert",
]


# ---------------------------------------------------------------- the shared corpora, and CI


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def shared_data_missing() -> str | None:
    """Why the shared corpora cannot be read (None when they can)."""
    if not DATA.is_dir():
        return f"the shared corpora are not at {DATA}"
    missing = [name for name in SHARED_FILES if not (DATA / name).is_file()]
    return f"{DATA} lacks {', '.join(missing)}" if missing else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared corpora's folder, for tests whose point is that data; they skip without it,
    all under one summary line (see `pytest_runtest_makereport`)."""
    reason = shared_data_missing()
    if reason:
        pytest.skip(f"{reason}: set {DATA_ENV} to the folder that holds them")
    return DATA


def pytest_collection_modifyitems(config, items) -> None:
    """Mark the tests that use `shared_data` (`-m "not shared_data"` runs the others); in CI
    a run that needs the corpora and lacks them stops here, saying so."""
    needing = [item for item in items if "shared_data" in item.fixturenames]
    for item in needing:
        item.add_marker(pytest.mark.shared_data)
    reason = shared_data_missing()
    if needing and reason and in_ci():
        pytest.exit(
            f"CI: {reason}, and {len(needing)} tests need them: set {DATA_ENV}",
            returncode=pytest.ExitCode.TESTS_FAILED,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Every skip for want of the shared corpora at one place (the check above), so that -ra
    folds them into one summary line instead of one per test."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and DATA_ENV in report.longrepr[2]:
        line = shared_data_missing.__code__.co_firstlineno
        report.longrepr = (__file__, line, report.longrepr[2])
    return report


_SKIPPED: list[str] = []


def pytest_runtest_logreport(report) -> None:
    """Remember every skip but the gpu test's: in CI they fail the run."""
    if report.skipped and "gpu" not in report.keywords:
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus) -> None:
    if in_ci() and _SKIPPED and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if in_ci() and _SKIPPED:
        terminalreporter.write_line(
            f"CI: the run fails: {len(_SKIPPED)} test(s) skipped, and only the gpu test may be: "
            + ", ".join(_SKIPPED[:5])
            + (", ..." if len(_SKIPPED) > 5 else ""),
            red=True,
        )


# ---------------------------------------------------------------- shipped text, the bundled model


@pytest.fixture(scope="session")
def review_texts() -> list[str]:
    """The 320 shipped reviews (tests/data/reviews.tsv), both labels mixed."""
    return corpus.review_texts()


@pytest.fixture(scope="session")
def bundled() -> Extractor:
    return Extractor(device="cpu")


# ---------------------------------------------------------------- a running server


@pytest.fixture(scope="session")
def server():
    """`bertlayers serve` with an API key and small limits (`serving.SERVER_OPTIONS`), started
    once for test_serve.py and test_serve_admission.py. Sharing it is safe: its settings are
    fixed at start, no endpoint changes its state, and tests read its metrics as differences
    or as names present (the queue-filling tests use a server of their own)."""
    from serving import SERVER_OPTIONS, Server

    s = Server(*SERVER_OPTIONS)
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="session")
def http(server):
    """An httpx client of `server`, with its API key."""
    import httpx

    from serving import AUTH

    with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as client:
        yield client


# ---------------------------------------------------------------- tiny models, built offline


def _bert_vocab() -> dict[str, int]:
    lines = (bundled_model_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {token: i for i, token in enumerate(lines)}


def _bpe_tokenizer():
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus.training_lines(),
        vocab_size=800,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    model = bpe._tokenizer.model
    import json

    state = json.loads(bpe._tokenizer.to_str())["model"]
    del model
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    from transformers import RobertaTokenizer

    return RobertaTokenizer(vocab=state["vocab"], merges=merges)


@functools.lru_cache(maxsize=1)
def _unigram_vocab() -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = [
        "<pad>",
        "<unk>",
        "<s>",
        "</s>",
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "<mask>",
    ]
    trainer = trainers.UnigramTrainer(
        vocab_size=800, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(corpus.training_lines(), trainer)
    import json

    return [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]


def build_tiny_model(arch: str, root: Path) -> Path:
    """A tiny random encoder of `arch` with a real fast tokenizer, saved to a directory."""
    from transformers import (
        AutoModel,
        BertConfig,
        BertTokenizer,
        DebertaV2Config,
        DebertaV2Tokenizer,
        DistilBertConfig,
        DistilBertTokenizer,
        ElectraConfig,
        ModernBertConfig,
        MPNetConfig,
        MPNetTokenizer,
        RobertaConfig,
        XLMRobertaConfig,
        XLMRobertaTokenizer,
    )

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
    bert_vocab = _bert_vocab()
    if arch == "bert":
        tokenizer = BertTokenizer(vocab=bert_vocab)
        config = BertConfig(vocab_size=len(bert_vocab), max_position_embeddings=40, **small)
    elif arch == "electra":
        tokenizer = BertTokenizer(vocab=bert_vocab)
        config = ElectraConfig(
            vocab_size=len(bert_vocab), embedding_size=16, max_position_embeddings=40, **small
        )
    elif arch == "distilbert":
        tokenizer = DistilBertTokenizer(vocab=bert_vocab)
        config = DistilBertConfig(
            vocab_size=len(bert_vocab),
            dim=32,
            n_layers=3,
            n_heads=4,
            hidden_dim=64,
            max_position_embeddings=40,
        )
    elif arch == "roberta":
        tokenizer = _bpe_tokenizer()
        config = RobertaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=42,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            type_vocab_size=1,
            **small,
        )
    elif arch == "xlm-roberta":
        tokenizer = XLMRobertaTokenizer(vocab=_unigram_vocab())
        config = XLMRobertaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=42,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            type_vocab_size=1,
            **small,
        )
    elif arch == "mpnet":
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        for token in bert_vocab:
            vocab.setdefault(token, len(vocab))
        vocab["<mask>"] = len(vocab)
        tokenizer = MPNetTokenizer(vocab=vocab)
        config = MPNetConfig(
            vocab_size=len(vocab), max_position_embeddings=42, pad_token_id=1, **small
        )
    elif arch == "deberta-v2":
        tokenizer = DebertaV2Tokenizer(vocab=_unigram_vocab(), unk_token="<unk>")
        config = DebertaV2Config(
            vocab_size=len(tokenizer),
            max_position_embeddings=40,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
            type_vocab_size=0,
            pad_token_id=tokenizer.pad_token_id,
            **small,
        )
    elif arch == "modernbert":
        tokenizer = BertTokenizer(vocab=bert_vocab)
        config = ModernBertConfig(
            vocab_size=len(bert_vocab),
            max_position_embeddings=40,
            global_attn_every_n_layers=2,
            local_attention=8,
            pad_token_id=0,
            cls_token_id=101,
            sep_token_id=102,
            bos_token_id=101,
            eos_token_id=102,
            **small,
        )
    else:
        raise ValueError(arch)
    model = AutoModel.from_config(config)
    path = root / arch
    model.save_pretrained(path)
    tokenizer.model_max_length = 40 if arch in ("deberta-v2", "modernbert") else int(1e30)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_tiny_model(arch, root) for arch in TINY_ARCHS}


# ---------------------------------------------------------------- the reference


class Reference:
    """Each text alone, unpadded, float32, `output_hidden_states=True`, straight through HF."""

    def __init__(self, model_dir: str | Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval().float()
        import inspect

        self.accepts = set(inspect.signature(self.model.forward).parameters)

    @torch.inference_mode()
    def hidden(self, text: str, pair: str | None = None, max_length: int | None = None):
        """(L+1, T, H) hidden states and the special-token mask (T,) of one text."""
        enc = self.tokenizer(
            text,
            pair,
            return_tensors="pt",
            return_special_tokens_mask=True,
            truncation="longest_first" if max_length else False,
            max_length=max_length,
        )
        special = enc.pop("special_tokens_mask")[0].numpy().astype(bool)
        inputs = {k: v for k, v in enc.items() if k in self.accepts}
        out = self.model(**inputs, output_hidden_states=True)
        states = torch.stack(out.hidden_states)[:, 0].numpy()
        return states, special

    def pooled(self, text: str, pooling: str, pair: str | None = None, max_length=None):
        """(L+1, H) pooled with plain numpy, the way the docs say pooling works."""
        states, special = self.hidden(text, pair, max_length)
        content = ~special
        if not content.any():
            content = np.ones_like(special)
        idx = np.flatnonzero(content)
        if pooling == "cls":
            return states[:, 0]
        if pooling == "mean":
            return states[:, idx].mean(axis=1)
        if pooling == "max":
            return states[:, idx].max(axis=1)
        if pooling == "first":
            return states[:, idx[0]]
        if pooling == "last":
            return states[:, idx[-1]]
        raise ValueError(pooling)

    # ------------------------------------------------------------ long texts in windows

    @functools.cached_property
    def template(self) -> tuple[list[int], list[int]]:
        """The special-token ids the tokenizer puts before and after one text's tokens (read
        off its special-token mask)."""
        enc = self.tokenizer("word", return_special_tokens_mask=True)
        content = np.flatnonzero(np.asarray(enc["special_tokens_mask"]) == 0)
        ids = enc["input_ids"]
        return ids[: content[0]], ids[content[-1] + 1 :]

    @torch.inference_mode()
    def forward_ids(self, ids: list[int]) -> np.ndarray:
        """(L+1, T, H) states of content token ids run alone, special tokens around them."""
        before, after = self.template
        full = torch.tensor([[*before, *ids, *after]])
        return torch.stack(self.model(input_ids=full, output_hidden_states=True).hidden_states)[
            :, 0
        ].numpy()

    def windowed(
        self,
        text: str,
        max_length: int,
        stride: int | None = None,
        include_special: bool = False,
    ) -> tuple[dict[str, np.ndarray], int]:
        """(L+1, H) per pooling of a text embedded in windows (`long='split'`), and the number
        of windows, by a plain loop over what `core/windows.py` documents: windows of
        `max_length` less the special tokens, sharing `stride` tokens (a quarter of a window
        by default), the last one aligned to the end of the text; each window runs alone; each
        content token takes its vectors from the window where it has the most context on both
        sides (the earlier one on ties), the special tokens from the first and the last window;
        `cls` is the mean of the windows' first vectors."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        n = len(ids)
        prefix, width = len(self.template[0]), max_length - sum(map(len, self.template))
        stride = width // 4 if stride is None else stride
        if n <= width:
            bounds = [(0, n)]
        else:
            starts = [*range(0, n - width, width - stride), n - width]
            bounds = [(start, start + width) for start in starts]
        runs = [self.forward_ids(ids[start:end]) for start, end in bounds]
        rows = [runs[0][:, p] for p in range(prefix)]  # the first window's leading specials
        for i in range(n):
            best, owner = -1, 0
            for w, (start, end) in enumerate(bounds):
                if start <= i < end and min(i - start, end - 1 - i) > best:
                    best, owner = min(i - start, end - 1 - i), w
            rows.append(runs[owner][:, prefix + i - bounds[owner][0]])
        last, (start, end) = runs[-1], bounds[-1]
        rows.extend(last[:, p] for p in range(prefix + end - start, last.shape[1]))  # trailing
        stitched = np.stack(rows, axis=1)  # (L+1, T, H): specials at both ends
        body = stitched[:, prefix : prefix + n]
        pool_over = stitched if include_special or n == 0 else body
        pooled = {
            "cls": np.mean([states[:, 0] for states in runs], axis=0),
            "mean": pool_over.mean(axis=1),
            "max": pool_over.max(axis=1),
            "first": pool_over[:, 0],
            "last": pool_over[:, -1],
        }
        return pooled, len(runs)

    # ------------------------------------------------------------ words

    @functools.cached_property
    def words_tokenizer(self):
        """For pre-split words: byte-level BPE needs `add_prefix_space=True` (transformers
        refuses `is_split_into_words` without it), so each word is tokenized as in running
        text, after a space."""
        from transformers import AutoTokenizer

        if getattr(self.tokenizer, "add_prefix_space", True):
            return self.tokenizer
        return AutoTokenizer.from_pretrained(self.tokenizer.name_or_path, add_prefix_space=True)

    @torch.inference_mode()
    def words(
        self, text: str | None = None, words: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """(W, L+1, H) per word pooling (first, last, mean, max): a text's words (the
        tokenizer's word ids) or pre-split words, each pooled over its tokens, the text run
        alone."""
        if words is None:
            enc = self.tokenizer(text, return_tensors="pt")
        else:
            enc = self.words_tokenizer(words, is_split_into_words=True, return_tensors="pt")
        word_ids = enc.word_ids(0)
        inputs = {k: v for k, v in enc.items() if k in self.accepts}
        out = self.model(**inputs, output_hidden_states=True)
        states = torch.stack(out.hidden_states)[:, 0].numpy()  # (L+1, T, H)
        numbers = sorted({w for w in word_ids if w is not None})
        rows = [states[:, [t for t, w in enumerate(word_ids) if w == n]] for n in numbers]
        pools = {
            "first": lambda r: r[:, 0],
            "last": lambda r: r[:, -1],
            "mean": lambda r: r.mean(axis=1),
            "max": lambda r: r.max(axis=1),
        }
        empty = np.zeros((0, states.shape[0], states.shape[2]), np.float32)
        return {
            mode: np.stack([pool(r) for r in rows]) if rows else empty
            for mode, pool in pools.items()
        }


@pytest.fixture(scope="session")
def bundled_reference() -> Reference:
    return Reference(bundled_model_path())
