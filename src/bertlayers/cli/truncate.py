"""`bertlayers truncate`: a model cut to its first K encoder layers (see `core.truncate`)."""

from __future__ import annotations

import argparse
import json
import sys

from .options import Formatter, add_model_options

TRUNCATE_EXAMPLES = """\
examples:
  bertlayers probe reviews.tsv --label-column label -o runs/reviews   # 1. which layer is best?
  bertlayers truncate --keep-layers 4 -o minilm-4     # 2. the bundled MiniLM, layers 1..4 of 6
  bertlayers serve --model minilm-4                   # 3. serve it: its last layer is layer 4
  bertlayers extract texts.txt -o emb.npy --model minilm-4 --layers -1
  bertlayers truncate --model bert-base-uncased --keep-layers 8 -o bert-8
  bertlayers truncate --keep-layers 3 -o minilm-4 --overwrite   # replace a cut model of ours

what is written: DIR/config.json (the layer count K; per-layer entries cut), DIR/model.safetensors
(every tensor but those of layers K+1..L, names unchanged), the tokenizer files, the
sentence-transformers modules where the model has them, and DIR/bertlayers_truncate.json (source
and fingerprint, K, what changed, the check, each file's sha256). It loads with transformers'
AutoModel, sentence-transformers, `bertlayers extract/serve --model DIR`.

exactness: before DIR is renamed into place, the cut model is loaded and its hidden_states[K]
checked against the source's layer K (max abs diff <= 1e-5). Where the last hidden state goes
through a final norm (ModernBERT), hidden_states[K] is still layer K, and last_hidden_state (what
sentence-transformers pools) is that norm applied to layer K.

K: 1..L (L = the model's encoder layers, `bertlayers info`); K = L writes a copy, with a warning.
"""


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


whole_number.__name__ = "whole number"  # what argparse names in its own errors


def add_commands(commands) -> None:
    """Register `truncate` on the main parser's subcommands."""
    truncate = commands.add_parser(
        "truncate",
        help="write a model cut to its first K encoder layers (smaller, faster, exact)",
        description="Write a model directory holding the first K encoder layers of a model: "
        "its hidden state K equals the model's layer K.",
        formatter_class=Formatter,
        epilog=TRUNCATE_EXAMPLES,
    )
    add_model_options(truncate)
    truncate.add_argument(
        "--keep-layers",
        type=whole_number,
        required=True,
        metavar="K",
        help="encoder layers to keep: 1..L (the first K; layer 0, the embeddings, always stays)",
    )
    truncate.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="the model directory to write"
    )
    truncate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace DIR if `bertlayers truncate` wrote it and it is unchanged since (never "
        "another directory, never the model)",
    )
    truncate.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    truncate.set_defaults(handler=run_truncate)


def run_truncate(args: argparse.Namespace) -> int:
    from ..core.truncate import PROVENANCE, truncate_model

    path = truncate_model(
        args.model, args.keep_layers, args.output, overwrite=args.overwrite, revision=args.revision
    )
    if not args.quiet:
        record = json.loads((path / PROVENANCE).read_text(encoding="utf-8"))
        cut, source = record["truncate"], record["source"]
        size = sum(entry["bytes"] for entry in record["files"].values())
        weights = cut["weights"]
        keep = cut["keep_layers"]
        print(
            f"bertlayers: wrote {path}: {source['name']} cut to {keep} of its "
            f"{source['num_layers']} layers; {weights['tensors_kept']} tensors kept, "
            f"{weights['tensors_dropped']} dropped; {size / 1e6:.1f} MB; its hidden state "
            f"{keep} is the model's layer {keep} (max abs diff "
            f"{cut['check']['max_abs_diff']:.1e} on {cut['check']['texts']} texts)",
            file=sys.stderr,
        )
    return 0
