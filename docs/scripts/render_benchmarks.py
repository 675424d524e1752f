"""Benchmark and results tables for the docs, rendered from the committed results files.

No figure on the benchmarks pages (or in the README's results table) is typed by hand: each
table is rendered here from a file in `bench/results/` or `docs/results/`, with a line naming
the file, the command that made it and the metadata it records. Where a file lacks what a
result needs to be reproduced (the command, the git commit, the date, the machine: CPU model,
cores and torch version; each peer's version and flags), the table says what is missing rather
than guessing it, and the status table lists the command that re-makes the file.

Writes `docs/snippets/*.md` (included by the pages with `--8<--`) and the results block of
README.md (between `<!-- results:start -->` and `<!-- results:end -->`).

    python docs/scripts/render_benchmarks.py            # rewrite the snippets and README block
    python docs/scripts/render_benchmarks.py --check    # exit 1 if a committed one is stale

The parts, each a module beside this one: `results_specs` (what each file is and the command
that re-makes it), `result_files` (reading a file and checking its metadata), `md_format`
(numbers and tables), `verdicts` (the targets), `bench_tables` and `gpu_tables` (the benchmark
pages), `results_tables` (the results pages and the status tables), `readme_results` (the
README's block). This one puts the pages together.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tables import (
    backends_table,
    cli_tables,
    memory_table,
    ray_tables,
    serve_tables,
    speed_tables,
    text_file,
    truncate_table,
)
from compare_tables import (
    attention_table,
    attention_view_table,
    before_after_table,
    serve_variant_table,
    startup_table,
)
from docgen import ROOT, main
from gpu_tables import gpu_tables
from md_format import GENERATED
from readme_results import README_END, README_START, readme_block
from result_files import Result, latest, missing_metadata, read
from results_specs import PROBE_COMMANDS, SPECS, Spec
from results_tables import (
    geometry_table,
    matching_table,
    probe_table,
    remake_list,
    status_table,
)
from verdicts import memory_verdicts, serve_verdicts, soak_trend, speed_verdicts, verdict_table

__all__ = [
    "SPECS",
    "Result",
    "Spec",
    "gpu_tables",
    "latest",
    "missing_metadata",
    "read",
    "render",
    "soak_trend",
]

SNIPPETS = ROOT / "docs" / "snippets"
README = ROOT / "README.md"


def render() -> dict[Path, str]:
    r = {name: read(name) for name in SPECS}
    cli_files = [r["bench/results/cli-short.json"], r["bench/results/cli.json"]]
    memory_token = [r["bench/results/memory-mmap32.json"], r["bench/results/memory.json"]]
    memory_sentence = [
        r["bench/results/memory-sentence-mmap32.json"],
        r["bench/results/memory-sentence.json"],
    ]
    serve, soak = r["bench/results/serve.json"], r["bench/results/soak.json"]
    probes = {task: r[f"docs/results/{task}/probe.json"] for task in PROBE_COMMANDS}
    bench_files = [x for name, x in r.items() if name.startswith("bench/")]
    doc_files = [x for name, x in r.items() if name.startswith("docs/")]

    def snippet(body: str) -> str:
        return GENERATED + "\n" + body.rstrip() + "\n"

    files = {
        "verdicts-speed.md": verdict_table(speed_verdicts(cli_files)),
        "verdicts-serve.md": verdict_table(serve_verdicts(serve, soak)),
        "verdicts-memory.md": verdict_table(memory_verdicts(memory_token, memory_sentence)),
        "bench-cli.md": cli_tables(cli_files),
        "bench-speed.md": speed_tables(
            [r["bench/results/speed-minilm.json"], r["bench/results/speed.json"]]
        ),
        "bench-backends.md": backends_table(r["bench/results/backends.json"]),
        "bench-breakdown.md": text_file(r["bench/results/breakdown.txt"]),
        "bench-cli-profile.md": text_file(r["bench/results/cli-profile.txt"]),
        "bench-memory.md": "\n".join(memory_table(x) for x in memory_token + memory_sentence),
        "bench-memory-earlier.md": "\n".join(
            memory_table(r[n])
            for n in (
                "bench/results/memory-no-threshold.json",
                "bench/results/memory-sentence-bfa1b9b.json",
            )
        ),
        "bench-serve.md": serve_tables(
            serve,
            r["bench/results/serve-single.json"],
            [soak, r["bench/results/soak-no-trim.json"]],
        ),
        "bench-ray.md": ray_tables(r["bench/results/ray.json"], r["bench/results/ray-rates.json"]),
        "bench-truncate.md": truncate_table(r["bench/results/truncate.json"]),
        "bench-gpu.md": gpu_tables(r["bench/results/gpu.json"]),
        "bench-startup.md": startup_table(r["bench/results/startup.json"]),
        "bench-before-after.md": before_after_table(
            r["bench/results/cli-short-before.json"],
            r["bench/results/cli-short.json"],
            r["bench/results/serve-before.json"],
            serve,
        ),
        "bench-serve-variants.md": serve_variant_table(
            [
                serve,
                r["bench/results/serve-4-per-request.json"],
                r["bench/results/serve-rounds.json"],
            ]
        ),
        "bench-attention.md": attention_table(r["bench/results/attention.json"]),
        "bench-attention-view.md": attention_view_table(r["bench/results/attention-view.json"]),
        "bench-status.md": status_table(bench_files),
        "bench-remake.md": remake_list(bench_files),
        "results-status.md": status_table(doc_files),
        "results-remake.md": remake_list(doc_files),
        "results-probes.md": probe_table(probes),
        "results-geometry.md": geometry_table(r["docs/results/pos/analysis.json"]),
        "results-retrieval.md": matching_table(probes["retrieval"], "mrr@10", ("bm25",)),
        "results-similarity.md": matching_table(
            probes["similarity"], "auc", ("tf-idf cosine", "word overlap")
        ),
    }
    out = {SNIPPETS / name: snippet(body) for name, body in files.items()}
    readme = README.read_text()
    if README_START in readme and README_END in readme:
        head, rest = readme.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        block = readme_block(
            cli_files, serve, memory_token, probes, r["bench/results/startup.json"]
        )
        out[README] = head + block + tail
    return out


if __name__ == "__main__":
    sys.exit(main(render, __doc__, "python docs/scripts/render_benchmarks.py"))
