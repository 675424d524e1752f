"""`bertlayers attention | lens`: inside the layers — attention maps per layer and head (a
page, a figure, a store, per-head statistics), and what each layer "thinks" a token is."""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from ..errors import BertlayersError, OptionError
from ..outputs import Kind, Target, check_outputs, write_text_atomically
from .options import (
    ALLOCATOR,
    Formatter,
    add_input_options,
    add_model_options,
    add_overwrite_option,
    add_runtime_options,
    figure_targets,
    make_extractor,
    positive_int,
    reader_options,
    require_analysis,
)

ATTENTION_EXAMPLES = """\
examples:
  bertlayers attention texts.txt -o view.html                 # head view and model view
  echo "The cat sat on the mat." | bertlayers attention - -o heads.png --layers 3
  bertlayers attention texts.txt -o model.svg --heads 0:4     # a layers x heads grid
  bertlayers attention pairs.tsv --text-column a --pair-column b -o view.html --level word
  bertlayers attention corpus.txt --stats -o runs/heads       # per-head table and heatmaps
  bertlayers attention corpus.txt -o maps.npz --layers -2:    # every text's maps, resumable
  bertlayers attention texts.txt -o rollout.html --rollout    # Abnar & Zuidema's rollout
  bertlayers attention texts.txt -o norms.html --norms        # Kobayashi et al.'s ||a f(x)||

layers: the attention of layer k (1..L) is the self-attention inside encoder layer k, the one
that produces hidden state k; layer 0 (the embeddings) has none. Negatives count from the end.
Outputs by suffix: .html a standalone page (no network), .png/.svg a figure (the head view of
one layer, or the model view of several: --view), a store (.npz, .h5, .parquet, .safetensors,
.npy: each text's T x T (query, key) rows of layers x heads; bertlayers.load_attention reads
it back), or with --stats a directory. Without -o: each token's most-attended token per layer.
"""

STORE_SUFFIXES = (".npz", ".npy", ".h5", ".hdf5", ".parquet", ".safetensors")


def add_commands(commands) -> None:
    """Register attention and lens on the main parser's subcommands."""
    attention = commands.add_parser(
        "attention",
        help="attention maps per layer and head: a page, a figure, a store, head statistics",
        description="Attention maps per layer and head (eager attention, equal to "
        "transformers' output_attentions), per token or per word, with rollout, norm-based "
        "attention and per-head statistics over a corpus.",
        formatter_class=Formatter,
        epilog=ATTENTION_EXAMPLES,
    )
    attention.add_argument("input", help="texts: .txt, .csv, .tsv, .jsonl, .parquet; - for stdin")
    attention.add_argument("-o", "--output", default=None, help="OUT.html, OUT.png/.svg, a store")
    add_model_options(attention)
    attention.add_argument("--layers", default="all", help="all | 3 | 1,6 | -2: (1..L)")
    attention.add_argument("--heads", default="all", help="all | 0 | 0,3 | :4 (0-based)")
    attention.add_argument("--level", default="token", help="token | word (Clark et al.)")
    attention.add_argument(
        "--long", default="error", help="texts over the limit: error | truncate (no windows)"
    )
    attention.add_argument(
        "--max-tokens",
        type=positive_int,
        default=None,
        help="tokens per text (default: the model's limit; 256 for a page or a figure)",
    )
    kinds = attention.add_mutually_exclusive_group()
    kinds.add_argument("--stats", action="store_true", help="per-head statistics: -o DIR")
    kinds.add_argument("--rollout", action="store_true", help="attention rollout (all layers)")
    kinds.add_argument("--norms", action="store_true", help="norm-based attention ||a f(x)||")
    attention.add_argument(
        "--view", default=None, help="a figure's view: head (one layer) | model (a grid)"
    )
    attention.add_argument(
        "--view-texts", type=positive_int, default=20, help="texts a page or figure holds"
    )
    add_input_options(attention)
    attention.add_argument("--pair-column", default=None, help="column with the second text")
    attention.add_argument("--words-column", default=None, help="jsonl column of split words")
    attention.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (or cuda:N)")
    attention.add_argument("--dtype", default="float32", help="compute dtype")
    attention.add_argument("--output-dtype", default="float32", help="a store's: float32|float16")
    add_runtime_options(attention)
    attention.add_argument("--resume", action="store_true", help="continue a store's run")
    add_overwrite_option(attention)
    attention.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    attention.set_defaults(handler=run_attention)

    lens = commands.add_parser(
        "lens",
        help="what each layer 'thinks' a token is: the masked-LM head read at every layer",
        description="Decode every layer's token vectors through the model's masked-LM head: "
        "the top-k tokens per position and layer, and the rank of the token actually there. "
        "Needs a model with a trained head (bert-base-uncased; the bundled MiniLM has none).",
        formatter_class=Formatter,
        epilog="examples:\n  bertlayers lens texts.txt --model bert-base-uncased -k 5\n"
        '  echo "Paris is the [MASK] of France." | bertlayers lens - --model bert-base-uncased\n'
        "  bertlayers lens texts.txt --model bert-base-uncased -o lens.json --layers 0,6,12\n",
    )
    lens.add_argument("input", help="texts: .txt, .csv, .tsv, .jsonl; - for stdin")
    lens.add_argument("-o", "--output", default=None, help="write every layer's top-k: .json")
    add_model_options(lens)
    lens.add_argument("-k", type=positive_int, default=5, help="tokens per position and layer")
    lens.add_argument("--layers", default="all", help="hidden states: all | 0,6,-1 | -4:")
    lens.add_argument("--long", default="error", help="texts over the limit: error | truncate")
    add_input_options(lens)
    lens.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (or cuda:N)")
    add_overwrite_option(lens)
    lens.set_defaults(handler=run_lens)


# ------------------------------------------------------------------ attention


def _kind_of(args: argparse.Namespace) -> str:
    """What the command writes: page, figure, store, stats, or the table on stdout."""
    if args.stats:
        if not args.output:
            return "stats-stdout"
        if Path(args.output).suffix:
            raise OptionError("--stats writes a directory (a table and heatmaps): -o DIR")
        return "stats"
    if not args.output:
        return "stdout"
    suffix = Path(args.output).suffix.lower()
    if suffix == ".html":
        return "page"
    if suffix in (".png", ".svg"):
        return "figure"
    if suffix in STORE_SUFFIXES:
        return "store"
    raise OptionError(
        f"cannot tell what to write to '{args.output}': use .html (a page), .png or .svg (a "
        f"figure), a store ({', '.join(STORE_SUFFIXES)}), or --stats with a directory"
    )


def _targets(args: argparse.Namespace, kind: str) -> list[Target]:
    out = Path(args.output) if args.output else None
    if kind == "page":
        return [Target(out, Kind.HTML)]
    if kind == "figure":
        return [Target(out, Kind.PNG if out.suffix.lower() == ".png" else Kind.SVG)]
    if kind == "stats":
        from ..analysis.attention import MEASURES

        stems = [f"attention-{m}" for m in MEASURES]
        return [
            Target(out / "attention-stats.csv", Kind.TEXT, make_parents=True),
            Target(out / "attention-stats.json", Kind.PROVENANCE, make_parents=True),
            *figure_targets(out, *stems),
        ]
    if kind == "store":
        from ..stores import store_targets

        return store_targets(out)
    return []


def _config(args: argparse.Namespace, kind: str):
    from ..core.config import AttentionConfig

    visual = kind in ("page", "figure")
    max_tokens = args.max_tokens or (256 if visual else None)
    if args.rollout and (args.layers != "all" or args.heads != "all"):
        raise OptionError(
            "--rollout multiplies every layer from the first with all heads: leave --layers "
            "and --heads at all"
        )
    return AttentionConfig(
        layers=args.layers,
        heads=args.heads,
        level=args.level,
        long=args.long,
        max_tokens=max_tokens,
        norms=args.norms,
    )


def run_attention(args: argparse.Namespace) -> int:
    kind = _kind_of(args)
    if kind in ("page", "figure", "stats", "stats-stdout") or args.rollout:
        require_analysis("attention")
    config = _config(args, kind)
    if args.view not in (None, "head", "model"):
        raise OptionError(f"unknown --view '{args.view}': use head or model")
    if args.resume and kind != "store":
        raise OptionError("--resume continues a store's run: -o a store")
    if not args.resume:
        check_outputs(_targets(args, kind), [args.input], args.overwrite)
    reader = reader_options(args)
    # a file is read once before the model loads (to fail early, and to count), then again
    # lazily as the maps stream; stdin is read once, as it comes
    total = None if args.input == "-" else sum(1 for _ in reader.records(args.input))
    engine = make_extractor(args).engine
    plan = engine.attention_plan(config)
    source = reader.records(args.input)
    transform = _transform(args, plan)
    if kind == "store":
        return _to_store(args, engine, plan, source, total, transform)
    if kind.startswith("stats"):
        return _stats(args, engine, plan, source, total, kind)
    shown = list(itertools.islice(source, args.view_texts))
    more = total is not None and total > args.view_texts
    texts = []
    for chunk in engine.iter_attention(shown, plan, _bar(args, len(shown))):
        texts.extend(transform(t) for t in chunk)
    if more and kind != "stdout":
        print(
            f"bertlayers: warning: the {kind} holds the first {args.view_texts} of "
            f"{total} texts (--view-texts)",
            file=sys.stderr,
        )
    if kind == "page":
        return _page(args, texts)
    if kind == "figure":
        return _figure(args, texts)
    _print_top(texts)
    return 0


def _bar(args: argparse.Namespace, total: int | None):
    from ..core.progress import Progress

    return Progress(not args.quiet, total)


def _transform(args: argparse.Namespace, plan):
    """What is shown or stored of each text: its maps, or their rollout."""
    if not args.rollout:
        return lambda maps: maps

    from dataclasses import replace

    from ..analysis.attention import rollout

    def rolled(maps):
        rolled_maps = rollout(maps.maps, maps.layers, maps.heads, plan.num_heads)
        return replace(maps, maps=rolled_maps[:, None], heads=[0], kind="rollout")

    return rolled


def _to_store(args, engine, plan, source, total, transform) -> int:
    from ..core.stream import stream_attention
    from ..stores import StoreSink

    run = engine.run_info
    identity = {
        "model": run.info.model_id,
        "fingerprint": run.fingerprint,
        "compute_dtype": run.compute,
        "device": run.device,
        **plan.settings(),
        "rollout": args.rollout,
        "output_dtype": args.output_dtype,
        "chunk_size": plan.config.chunk_size,
    }
    sink = StoreSink(
        args.output,
        identity,
        overwrite=args.overwrite,
        resume=args.resume,
        inputs=[args.input],
        trim_heap=ALLOCATOR["trim_heap"],
    )
    try:
        provenance = stream_attention(
            engine, sink.skip_done(source), sink, plan, not args.quiet,
            None if total is None else total - sink.resumed_from, transform, args.output_dtype,
        )  # fmt: skip
    except KeyboardInterrupt:
        from .options import Interrupted

        kept = f"the {sink.records} texts made durable are kept in {sink.partial}"
        raise Interrupted(f"{kept} (--resume continues from there)") from None
    except BertlayersError as err:
        if sink.records:
            raise BertlayersError(
                f"{err.template} (the {sink.records} texts before it are kept in {sink.partial};"
                " --resume continues from there)"
            ) from None
        raise
    if not args.quiet:
        shape = "x".join(str(n) for n in provenance["shape"])
        print(f"bertlayers: wrote {args.output} ({shape} rows)", file=sys.stderr)
    return 0


def _stats(args, engine, plan, source, total, kind) -> int:
    from ..analysis.attention import HeadStats, stats_csv, write_stats_csv, write_stats_json
    from ..analysis.attention_plots import stats_heatmaps

    if plan.config.norms:
        raise OptionError("--stats reads attention weights (rows summing to 1), not --norms")
    stats = HeadStats(plan.layers, plan.heads)
    for chunk in engine.iter_attention(source, plan, _bar(args, total)):
        for maps in chunk:
            stats.add(maps.maps, maps.special, maps.items)
    table = stats.result()
    if kind == "stats-stdout":
        print(stats_csv(table), end="")
        return 0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {
        "command": "bertlayers " + shlex.join(getattr(args, "argv", [])),
        "model": engine.run_info.info.name,
        "fingerprint": engine.run_info.fingerprint,
        "data": args.input,
        **plan.settings(),
        **stats.settings(),
    }
    write_stats_csv(table, out / "attention-stats.csv")
    write_stats_json(table, out / "attention-stats.json", metadata)
    stats_heatmaps(table, out)
    if not args.quiet:
        print(f"bertlayers: wrote attention-stats.csv/.json and heatmaps to {out}", file=sys.stderr)
    print(stats_csv(table), end="")
    return 0


def _shown(maps) -> np.ndarray:
    """Weights to draw: norm-based maps scaled to shares of each row."""
    if maps.kind != "norms":
        return maps.maps
    sums = maps.maps.sum(axis=-1, keepdims=True)
    return maps.maps / np.where(sums > 0, sums, 1)


def _page(args, texts) -> int:
    from ..analysis.attention_view import ViewText, write_view

    if not texts:
        raise OptionError(f"{args.input} holds no text")
    views = [ViewText(_shown(t), t.items, t.special, t.segments, title=f"{t.id}") for t in texts]
    write_view(
        args.output, views, texts[0].layers, texts[0].heads, max_tokens=10**9,
        level=texts[0].level,
    )  # fmt: skip
    if not args.quiet:
        print(f"bertlayers: wrote {args.output}", file=sys.stderr)
    return 0


def _figure(args, texts) -> int:
    from ..analysis.attention_plots import head_view_figure, model_view_figure

    if not texts:
        raise OptionError(f"{args.input} holds no text")
    first = texts[0]
    out = Path(args.output)
    fmt = out.suffix.lower().lstrip(".")
    view = args.view or ("head" if len(first.layers) == 1 else "model")
    maps = _shown(first)
    if view == "head":
        head_view_figure(
            maps, first.items, first.layers, first.heads, out.parent, layer=first.layers[0],
            special=first.special, segments=first.segments, stem=out.stem, formats=(fmt,),
        )  # fmt: skip
    else:
        model_view_figure(
            maps, first.layers, first.heads, out.parent, segments=first.segments,
            stem=out.stem, formats=(fmt,),
        )  # fmt: skip
    if not args.quiet:
        print(f"bertlayers: wrote {args.output} ({view} view of text {first.id})", file=sys.stderr)
    return 0


def _print_top(texts) -> None:
    """Each token's most-attended token per layer (mean over the selected heads)."""
    for t in texts:
        print(f"# text {t.id}: {len(t.items)} {t.level}s, layers {t.layers}, heads {t.heads}")
        mean = _shown(t).mean(axis=1)  # (K, T, T)
        header = "\t".join(["token", *(f"layer {k}" for k in t.layers)])
        print(header)
        for i, item in enumerate(t.items):
            cells = [f"{t.items[int(mean[k, i].argmax())]} {mean[k, i].max():.2f}" for k in
                     range(len(t.layers))]  # fmt: skip
            print("\t".join([item, *cells]))


# ------------------------------------------------------------------ lens


def run_lens(args: argparse.Namespace) -> int:
    from ..core.lens import Lens

    if args.long not in ("error", "truncate"):
        raise OptionError(f"unknown --long '{args.long}': use error or truncate")
    if args.output:
        if Path(args.output).suffix.lower() != ".json":
            raise OptionError("the lens writes JSON: -o OUT.json")
        check_outputs([Target(Path(args.output), Kind.PROVENANCE)], [args.input], args.overwrite)
    records = list(reader_options(args).records(args.input))
    lens = Lens(args.model, device=args.device, revision=args.revision)
    results = lens.read(
        [r.text for r in records],
        layers=args.layers,
        k=args.k,
        ids=[r.id for r in records],
        truncate=args.long == "truncate",
    )
    if args.output:
        from .. import __version__

        data = {
            "bertlayers_version": __version__,
            "model": lens.model_id,
            "k": args.k,
            "texts": [
                {
                    "id": r.id,
                    "tokens": r.items,
                    "layers": r.layers,
                    "masked": r.masked.tolist(),
                    "truncated": r.truncated,
                    "top": r.top_tokens,
                    "probabilities": np.round(r.top_probs, 6).tolist(),
                    "rank": r.rank.tolist(),
                }
                for r in results
            ],
        }
        write_text_atomically(args.output, json.dumps(data, ensure_ascii=False) + "\n")
    for r in results:
        print(f"# text {r.id}: top-{args.k} per layer; (rank of the token there)")
        for i, item in enumerate(r.items):
            mark = "  <- [MASK]" if r.masked[i] else ""
            print(f"{item}{mark}")
            for k, layer in enumerate(r.layers):
                tops = ", ".join(
                    f"{tok} {p:.2f}" for tok, p in zip(r.top_tokens[k][i], r.top_probs[k, i],
                                                       strict=True)
                )  # fmt: skip
                print(f"  layer {layer:>2}: {tops} ({r.rank[k, i]})")
    return 0
