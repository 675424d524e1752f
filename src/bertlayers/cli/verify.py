"""`bertlayers verify`: check that this model, runtime, device and dtype give the right vectors
(see `bertlayers.core.verify`)."""

from __future__ import annotations

import argparse
import itertools
import json
import sys

from .options import (
    Formatter,
    add_input_options,
    add_model_options,
    add_runtime_options,
    model_options,
    non_negative_int,
    reader_options,
)

VERIFY_EXAMPLES = """\
examples:
  bertlayers verify                                  # the bundled model, torch, float32
  bertlayers verify --model bert-base-uncased --runtime openvino
  bertlayers verify --dtype bfloat16 --device cuda   # half precision: held to a cosine
  bertlayers verify --runtime int8 reviews.tsv --text-column text   # and on your texts
  bertlayers verify --json > verify.json; echo $?    # 0 within the bound, 1 over it

what is checked: sentence level with every pooling (cls, mean, max, first, last; with and
without special tokens), pairs, texts over the limit (split in windows, and truncated), token
level, word level (raw and pre-split words), every combine mode, a layer subset (the forward
pass stops early) and jobs sharing batches as a server runs them; on built-in awkward texts
(empty, one token, zero-width and control characters, emoji, U+2028, combining marks, RTL,
CJK) and on FILE's first --limit records (any input the extract command reads).

the reference: transformers' AutoModel on one text at a time, unpadded, float32, on the CPU
(output_hidden_states=True), windows stitched by the documented rule.

the bound: float32 compute: every layer within max |difference| 1e-4 of the reference;
float16 compute: lowest cosine >= 0.999; bfloat16: >= 0.99; --runtime int8: >= 0.97 (the
worst row of every check and layer).
exit status: 0 when every check is within the bound, 1 when one is not (or on an error).
"""


def add_commands(commands) -> None:
    """Register `verify` on the main parser's subcommands."""
    verify = commands.add_parser(
        "verify",
        help="check that this model, runtime, device and dtype give the right vectors",
        description="Run every level and pooling, batched, on awkward texts (and FILE's), "
        "and compare every layer with transformers run on one text at a time in float32.",
        formatter_class=Formatter,
        epilog=VERIFY_EXAMPLES,
    )
    verify.add_argument(
        "input",
        nargs="?",
        default=None,
        metavar="FILE",
        help="your texts too: a .txt, .csv, .tsv, .jsonl, .parquet or CoNLL file, - for stdin",
    )
    add_model_options(verify)
    add_runtime_options(verify)
    verify.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (or cuda:N)")
    verify.add_argument(
        "--dtype", default="float32", help="compute dtype: float32|float16|bfloat16"
    )
    add_input_options(verify)
    verify.add_argument("--pair-column", help="column with the second text (segment B)")
    verify.add_argument("--words-column", help="jsonl column holding a list of pre-split words")
    verify.add_argument(
        "--limit",
        type=non_negative_int,
        default=100,
        help="FILE's records checked (0: all; each runs alone through the reference)",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "-q", "--quiet", action="store_true", help="the verdict line only, no table or progress"
    )
    verify.set_defaults(handler=run_verify)


def _user_records(args: argparse.Namespace) -> list | None:
    """FILE's first `--limit` records, read before the model loads (a bad file fails first)."""
    if args.input is None:
        return None
    records = reader_options(args).records(args.input)
    return list(records if not args.limit else itertools.islice(records, args.limit))


def run_verify(args: argparse.Namespace) -> int:
    from ..core.engine import Engine
    from ..core.verify import verify

    records = _user_records(args)
    options = model_options(args)
    report = verify(Engine.from_options(options), records, progress=not (args.quiet or args.json))
    return show_report(report, as_json=args.json, quiet=args.quiet)


def show_report(report, as_json: bool = False, quiet: bool = False) -> int:
    """Print a `VerifyReport` on stdout (JSON; the verdict alone; or the table and the
    verdict) and return the exit status: 0 within the bound, 1 over it."""
    if as_json:
        print(json.dumps(report.to_dict(), indent=1))
    elif quiet:
        print(report.verdict())
    else:
        print(report.table())
        print(report.verdict())
    sys.stdout.flush()
    return 0 if report.passed else 1
