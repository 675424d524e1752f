"""The results files the docs render: what each is, what it must record, how to re-make it.

Every committed file under `bench/results/` and `docs/results/` has a `Spec` in `SPECS`
(tests/test_docs.py fails on one without): the command that makes it again, the peers whose
versions (and flags) it must record, and what changed since for a file that records no commit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    """What a results file is, what it must record, and the command that re-makes it."""

    remake: str  # the command to run (from the repository root) to make the file again
    peers: tuple[str, ...] = ()  # other tools measured: each needs its version recorded
    peer_flags: tuple[str, ...] = ()  # peers started with their own flags: those recorded too
    expects: tuple[str, ...] = ()  # fields the committed script writes (dotted paths)
    machine: bool = True  # a timing: the machine matters
    before: str = ""  # what changed since, for a file that records no commit


SPECS: dict[str, Spec] = {
    "bench/results/cli.json": Spec(
        "python bench/cli.py --long 150 --out bench/results/cli.json",
        peers=("sentence-transformers", "transformers"),
    ),
    "bench/results/startup.json": Spec(
        "python bench/cli.py --startup --rounds 5 --out bench/results/startup.json",
        peers=("sentence-transformers",),
    ),
    "bench/results/cli-short-before.json": Spec(
        "git worktree add ../before f05ee2a && PYTHONPATH=../before/src python bench/cli.py "
        "--corpora short --contenders cli,library,st-encode,tutorial,cli-openvino --rounds 3 "
        "--out bench/results/cli-short-before.json",
        peers=("sentence-transformers", "transformers", "openvino"),
    ),
    "bench/results/serve-before.json": Spec(
        "git worktree add ../before f05ee2a && bench/setup_infinity.sh && "
        "PYTHONPATH=../before/src python bench/serve.py --clients 32 "
        "--out bench/results/serve-before.json",
        peers=("infinity",),
        peer_flags=("infinity",),
    ),
    "bench/results/serve-4-per-request.json": Spec(
        "bench/setup_infinity.sh && python bench/serve.py --clients 32 --per-request 4 "
        "--out bench/results/serve-4-per-request.json",
        peers=("infinity",),
        peer_flags=("infinity",),
    ),
    "bench/results/serve-rounds.json": Spec(
        "python bench/serve.py --clients 32,128 --peer none --server-arg=--max-round-tokens "
        "--server-arg=32768 --out bench/results/serve-rounds.json",
        expects=("server_args",),
    ),
    "bench/results/attention.json": Spec(
        "python bench/attention.py --out bench/results/attention.json",
        peers=("transformers",),
    ),
    "bench/results/cli-short.json": Spec(
        "python bench/cli.py --corpora short --contenders "
        "cli,library,st-encode,tutorial,cli-openvino --rounds 3 --out bench/results/cli-short.json",
        peers=("sentence-transformers", "transformers", "openvino"),
    ),
    "bench/results/speed-minilm.json": Spec(
        "python bench/speed.py --models minilm --fortunes 600 --news 15 --rounds 3 "
        "--out bench/results/speed-minilm.json",
        peers=("sentence-transformers", "transformers", "openvino"),
    ),
    "bench/results/speed.json": Spec(
        "python bench/speed.py --fortunes 600 --news 15 --rounds 1 --out bench/results/speed.json",
        peers=("sentence-transformers", "transformers", "openvino"),
    ),
    "bench/results/backends.json": Spec(
        "pip install onnxruntime onnx && python bench/backends.py --rounds 2 "
        "--out bench/results/backends.json",
        peers=("openvino", "onnxruntime"),
    ),
    "bench/results/breakdown.txt": Spec(
        "python bench/breakdown.py --texts 600 --out bench/results/breakdown.txt"
    ),
    "bench/results/cli-profile.txt": Spec(
        "py-spy record --rate 100 --format raw -o cli.raw -- bertlayers extract short.txt -o "
        "out.npy --layers all --quiet && python bench/profile_summary.py cli.raw > "
        "bench/results/cli-profile.txt",
        peers=("py-spy",),
    ),
    "bench/results/memory.json": Spec(
        "python bench/memory.py --texts 1000 --out bench/results/memory.json",
        before="made at 8b55554, before 5b3b4e2 set the program's mmap threshold to 32 MiB "
        "(it was 1 MiB): the program measured is not today's",
    ),
    "bench/results/memory-mmap32.json": Spec(
        "python bench/memory.py --texts 1000 --formats npy --out bench/results/memory-mmap32.json"
    ),
    "bench/results/memory-sentence-mmap32.json": Spec(
        "python bench/memory.py --level sentence --layers 0 --texts 4000 --formats parquet "
        "--out bench/results/memory-sentence-mmap32.json"
    ),
    "bench/results/memory-sentence.json": Spec(
        "python bench/memory.py --level sentence --layers 0 --texts 10000 --formats npy,parquet "
        "--out bench/results/memory-sentence.json",
        before="made at 1295363, before Arrow's pool gave buffers back after each block and "
        "before the 32 MiB mmap threshold",
    ),
    "bench/results/memory-sentence-bfa1b9b.json": Spec(
        "(an earlier program: this bench run against the code of commit bfa1b9b)"
    ),
    "bench/results/memory-no-threshold.json": Spec(
        "(an experiment: bench/memory.py run against a program with its mallopt call removed)"
    ),
    "bench/results/ray.json": Spec(
        "python bench/ray.py --texts 6000 --shard-size 500 --rounds 2 --out bench/results/ray.json",
        peers=("ray",),
        expects=("results.ray-2.max_abs_diff_vs_local",),
    ),
    "bench/results/ray-rates.json": Spec(
        "python bench/ray.py --rates --rounds 5 --out bench/results/ray-rates.json",
        peers=("tokenizers",),
    ),
    "bench/results/serve.json": Spec(
        "bench/setup_infinity.sh && python bench/serve.py --out bench/results/serve.json",
        peers=("infinity",),
        peer_flags=("infinity",),
    ),
    "bench/results/serve-single.json": Spec(
        "python bench/serve.py --single 800 --out bench/results/serve-single.json"
    ),
    "bench/results/soak.json": Spec(
        "python bench/serve.py --soak 600 --out bench/results/soak.json",
        expects=("server_args",),
    ),
    "bench/results/soak-no-trim.json": Spec(
        "python bench/serve.py --soak 600 --server-arg=--no-trim-heap "
        "--out bench/results/soak-no-trim.json",
        expects=("server_args",),
    ),
    "bench/results/truncate.json": Spec(
        "python bench/truncate.py --out bench/results/truncate.json",
        peers=("sentence-transformers",),
    ),
    "bench/results/attention-view.json": Spec(
        "python bench/attention_view.py --out bench/results/attention-view.json",
        peers=("chromium",),
    ),
    "bench/results/gpu.json": Spec(
        "make gpu-check OUT=bench/results (on the GPU machine)",
        peers=("sentence-transformers", "transformers"),
    ),
}

PROBE_COMMANDS = {
    "sentiment": "bertlayers probe ../shared/data/sentiment-polarity.tsv -o docs/results/sentiment",
    "hedge": "bertlayers probe ../shared/data/hedge-conll2010.tsv -o docs/results/hedge",
    "topic": "bertlayers probe ../shared/data/news-bbc.jsonl --id-column id --long split "
    "-o docs/results/topic",
    "pos": "bertlayers probe ../shared/data/pos-wsj.conll -o docs/results/pos",
    "similarity": "python examples/bbc_topic_pairs.py ../shared/data/news-bbc.jsonl "
    "runs/bbc-pairs.tsv --pairs 2000 && bertlayers probe runs/bbc-pairs.tsv --task similarity "
    "--id-column id --pair-column pair --long split --post none,center,whiten,whiten-16,abtt "
    "-o docs/results/similarity",
    "retrieval": "bertlayers probe ../shared/data/news-bbc.jsonl --task retrieval --id-column id "
    "--text-column title --doc-column text --doc-long split --post none,center,whiten,abtt "
    "-o docs/results/retrieval",
}
for _task, _command in PROBE_COMMANDS.items():
    SPECS[f"docs/results/{_task}/probe.json"] = Spec(
        _command,
        machine=False,
        before="made before bdb9e05 rewrote the scalar-mix trainer (torch to numpy): its `mix` "
        "scores are not today's"
        if _task in ("sentiment", "hedge", "topic", "pos")
        else "",
    )
ANALYZE_COMMANDS = {
    "pos": "bertlayers extract ../shared/data/pos-wsj.conll --level word -o runs/pos.npz && "
    "bertlayers analyze runs/pos.npz -o docs/results/pos",
    "sentiment": "bertlayers extract ../shared/data/sentiment-polarity.tsv -o runs/sentiment.npy "
    "&& bertlayers analyze runs/sentiment.npy -o docs/results/sentiment",
    "topic": "bertlayers extract ../shared/data/news-bbc.jsonl --id-column id --long split "
    "-o runs/topic.npy && bertlayers analyze runs/topic.npy -o docs/results/topic",
}
for _task, _command in ANALYZE_COMMANDS.items():
    SPECS[f"docs/results/{_task}/analysis.json"] = Spec(_command, machine=False)
TRADEOFF_COMMAND = (
    "bertlayers probe ../shared/data/sentiment-polarity.tsv --projection none --tradeoff "
    "-o docs/results/tradeoff"
)
SPECS["docs/results/tradeoff/probe.json"] = Spec(TRADEOFF_COMMAND, machine=False)
SPECS["docs/results/tradeoff/tradeoff.json"] = Spec(TRADEOFF_COMMAND)  # speed: machine matters
SPECS["docs/results/attention/attention-stats.json"] = Spec(
    "bertlayers attention ../shared/data/sentiment-polarity.tsv --text-column text --stats "
    "-o docs/results/attention --overwrite -q",
    machine=False,
)
