"""`bertlayers extract | info | inspect | convert`: texts into stores, and stores looked at."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

from ..errors import BertlayersError, OptionError, OutputError, first_line
from ..io.readers import InputFormat, Quoting, guess_format
from ..options import Combine, Device, DType, Level, Pooling, WordPooling
from ..outputs import check_not_input, check_outputs
from ..stores import StoreFormat, store_format
from .options import (
    ALLOCATOR,
    Formatter,
    Interrupted,
    add_input_options,
    add_model_options,
    add_runtime_options,
    extract_config,
    make_extractor,
    model_options,
    non_negative_int,
    positive_int,
    reader_options,
)

EXTRACT_EXAMPLES = """\
examples:
  bertlayers extract texts.txt -o emb.npy                      # all layers, mean-pooled
  bertlayers extract texts.txt -o emb.npy --layers -4: --combine mean
  bertlayers extract data.tsv --text-column text -o emb.npy --pooling cls --layers 0,6,-1
  bertlayers extract qa.jsonl --text-column question --pair-column answer -o pairs.npy
  cat texts.txt | bertlayers extract - -o emb.npy --quiet
  bertlayers extract texts.txt -o emb.npy --model bert-base-uncased   # any hub id or directory
  bertlayers extract ner.conll -o words.npz --level word --word-pooling first   # NER / POS
  bertlayers extract articles.jsonl -o tokens.npz --level token --layers -4:    # any length
  bertlayers extract articles.jsonl -o docs.npy --long split --pooling mean     # whole documents
  bertlayers extract texts.txt -o emb.npy --server http://127.0.0.1:8080   # on a shared server

output (sentence level): OUT.npy holds float32 (N, K, H) in input order — texts x selected
layers x hidden size ((N, 1, H) for --combine mean/sum, (N, 1, K*H) for concat); OUT.json
beside it holds the provenance (model and hash, layers, pooling, per-text token counts,
truncation flags and windows). Token and word level are ragged: OUT.npy holds the flat rows
(sum T_i, K, H) and OUT.index.npz the offsets (N+1,), ids, tokens/words and character spans;
an .npz output holds all of it in one file. Read any output back with bertlayers.load(PATH).

layers: 0 = embedding output, 1..L = encoder layers, negatives count from the end (-1 = last).
Google's extract_features.py and bert-as-service count encoder layers only: their index is ours - 1.
"""


def add_commands(commands) -> None:
    """Register extract, info, inspect and convert on the main parser's subcommands."""
    extract = commands.add_parser(
        "extract",
        help="embed texts with every (or selected) layer and write them to a file",
        description="Embed texts with every (or selected) encoder layer, pooled per text.",
        formatter_class=Formatter,
        epilog=EXTRACT_EXAMPLES,
    )
    extract.add_argument(
        "input",
        help="a .txt (one text per line), .csv, .tsv, .jsonl or .parquet file (or a URL); - for "
        "stdin; with --engine ray also a directory or a quoted glob",
    )
    extract.add_argument(
        "-o",
        "--output",
        required=True,
        help="output store: .npy, .npz, .h5/.hdf5, .parquet (or a directory with --format "
        "parquet), .safetensors; missing directories are created",
    )
    extract.add_argument(
        "--format",
        default=None,
        help="npy|npz|hdf5|parquet|safetensors (default: from the output's suffix)",
    )
    extract.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last durable chunk",
    )
    add_model_options(extract)
    extract.add_argument("--layers", default="all", help="all | 6 | 0,6,-1 | -4: | 1:7")
    extract.add_argument(
        "--level",
        default="sentence",
        help="sentence (one vector per text) | token (per word piece) | word",
    )
    extract.add_argument(
        "--pooling",
        default=None,
        help="sentence level: " + "|".join(p.value for p in Pooling) + " (default: mean)",
    )
    extract.add_argument(
        "--word-pooling",
        default=None,
        help="word level: " + "|".join(p.value for p in WordPooling) + " (default: first)",
    )
    extract.add_argument(
        "--long",
        default=None,
        help="texts over the model's limit: split (windows; default at token/word level) | "
        "truncate (default at sentence level) | error",
    )
    extract.add_argument(
        "--stride",
        type=non_negative_int,
        default=None,
        help="with --long split: tokens shared by neighbouring windows (default: a quarter)",
    )
    extract.add_argument(
        "--combine",
        default="stack",
        help="|".join(c.value for c in Combine) + " (stack keeps every layer)",
    )
    extract.add_argument(
        "--include-special",
        action="store_true",
        help="let mean/max/first/last pooling see [CLS]/[SEP] (<s>, </s>) too",
    )
    add_input_options(extract)
    extract.add_argument(
        "--pair-column", default=None, help="column with the second text (segment B)"
    )
    extract.add_argument(
        "--words-column",
        default=None,
        help="jsonl column holding a list of pre-split words (instead of --text-column)",
    )
    extract.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="tokens per text (default: the model's limit); longer texts are truncated and counted",
    )
    extract.add_argument(
        "--batch-tokens",
        type=positive_int,
        default=None,
        help="padded tokens per batch (default: 1024 on CPU, 16384 on a GPU)",
    )
    extract.add_argument("--max-batch-size", type=positive_int, default=256, help="texts per batch")
    extract.add_argument(
        "--chunk-size",
        type=positive_int,
        default=1024,
        help="texts sorted and batched together; also the unit a --resume restarts from",
    )
    extract.add_argument(
        "--device", default="auto", help="|".join(d.value for d in Device) + " (or cuda:N)"
    )
    extract.add_argument(
        "--dtype", default="float32", help="compute dtype: " + "|".join(d.value for d in DType)
    )
    extract.add_argument("--output-dtype", default="float32", help="stored dtype: float32|float16")
    add_runtime_options(extract, legacy=("backend", "int8", "compile"))
    extract.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output of the kind written (never an input, never a file "
        "or directory of another kind)",
    )
    extract.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="embed on a `bertlayers serve` server instead of loading a model here (the "
        "`client` extra); the store, its provenance and --resume work as locally",
    )
    extract.add_argument(
        "--api-key",
        default=os.environ.get("BERTLAYERS_API_KEY"),
        help="the server's key (default: $BERTLAYERS_API_KEY)",
    )
    ray = extract.add_argument_group(
        "Ray (the `ray` extra): a cluster embeds the input into a directory of Parquet shards"
    )
    ray.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: this process; ray: an actor pool on a Ray cluster (INPUT may be a "
        "directory, a quoted glob or a URL; -o is a directory)",
    )
    ray.add_argument(
        "--address",
        default=None,
        help="the cluster: auto (the one `ray start` runs here) or HOST:PORT (default: start "
        "a local one for this run)",
    )
    ray.add_argument("--actors", type=positive_int, default=1, help="actors, each one model")
    ray.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs each actor holds")
    ray.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs each actor holds")
    ray.add_argument(
        "--shard-size",
        type=positive_int,
        default=10_000,
        help="texts per shard: one output file each, and the unit --resume restarts from",
    )
    extract.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    extract.set_defaults(handler=run_extract)

    info = commands.add_parser(
        "info",
        help="show a model's architecture, layers, hidden size and max length",
        description="Show a model's architecture, layers, hidden size, max length and the "
        "layer-index convention.",
        formatter_class=Formatter,
        epilog="examples:\n  bertlayers info\n  bertlayers info --model bert-base-uncased --json\n",
    )
    add_model_options(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(handler=run_info)

    inspect = commands.add_parser(
        "inspect",
        help="show what a store holds: provenance, shapes, dtype, size, completeness",
        description="Show a store's provenance, shapes, dtype, size on disk and completeness.",
        formatter_class=Formatter,
        epilog="examples:\n  bertlayers inspect emb.npy\n  bertlayers inspect words.h5 --json\n",
    )
    inspect.add_argument("path", help="a store written by bertlayers extract (or its .partial)")
    inspect.add_argument("--json", action="store_true", help="print the provenance as JSON")
    inspect.set_defaults(handler=run_inspect)

    convert = commands.add_parser(
        "convert",
        help="convert a store to another format",
        description="Convert a store to another format, block by block.",
        formatter_class=Formatter,
        epilog="examples:\n  bertlayers convert emb.npy emb.parquet\n"
        "  bertlayers convert tokens.h5 tokens.safetensors --overwrite\n",
    )
    convert.add_argument("source", help="a complete store")
    convert.add_argument(
        "target",
        help="the new store (format from its suffix or --format; missing directories are created)",
    )
    convert.add_argument("--format", default=None, help="npy|npz|hdf5|parquet|safetensors")
    convert.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing target of the kind written (never the source)",
    )
    convert.set_defaults(handler=run_convert)


def _count_records(args: argparse.Namespace, first: int | None = None) -> tuple[int, int] | None:
    """Read the input once before loading the model: fail early, and know the total texts
    and their characters (the progress bar counts tokens: see `core.progress`). `first`:
    only the first so many records (a resumed run's, to leave out)."""
    if args.input == "-":
        return None
    from ..core.progress import text_chars

    records = _records(args)
    if first is not None:
        records = itertools.islice(records, first)
    count = chars = 0
    for record in records:
        count += 1
        chars += text_chars(record.text, record.pair)
    return count, chars


def _records(args: argparse.Namespace):
    return reader_options(args).records(args.input)


def _check_extract_args(args: argparse.Namespace) -> None:
    check_not_input(args.output, [args.input])  # first: -o onto the input is about the input
    if args.engine == "ray" and args.format is None and "." not in os.path.basename(args.output):
        args.format = "parquet"  # a directory of shards is all the Ray runner writes
    fmt = (
        InputFormat.parse(args.input_format, "input format")
        if args.input_format
        else guess_format(args.input)
    )
    # a Ray run's directory, glob or URL folder: its files are checked one by one
    many = args.engine == "ray" and not args.input_format and not os.path.isfile(args.input)
    if many:
        fmt = InputFormat.JSONL if args.words_column else InputFormat.CSV
    if fmt in (InputFormat.TXT, InputFormat.CONLL) and (args.pair_column or args.id_column):
        raise OptionError(
            "--pair-column and --id-column need a csv, tsv or jsonl input "
            "(or --input-format for stdin)"
        )
    if args.words_column and fmt is not InputFormat.JSONL:
        raise OptionError("--words-column needs a jsonl input")
    level = Level.parse(args.level, "level")
    if args.pooling is not None and level is not Level.SENTENCE:
        raise OptionError(
            f"--pooling applies to --level sentence; at --level {level.value} "
            + ("use --word-pooling" if level is Level.WORD else "every token is kept")
        )
    if args.word_pooling is not None and level is not Level.WORD:
        raise OptionError("--word-pooling applies to --level word")
    if args.pair_column and level is not Level.SENTENCE:
        raise OptionError("--pair-column works at --level sentence")
    Quoting.parse(args.quoting, "quoting")
    store_format(args.output, args.format)
    if args.resume and args.overwrite:
        raise OptionError("--resume continues a run and --overwrite starts again: choose one")
    if args.resume and args.input == "-":
        raise OptionError("--resume needs an input file: stdin cannot be read again")
    if args.engine == "ray":
        _check_ray_args(args)


def _check_ray_args(args: argparse.Namespace) -> None:
    if args.server:
        raise OptionError("--server and --engine ray are two engines: choose one")
    if args.input == "-":
        raise OptionError("--engine ray reads files (each actor its shards), not stdin")
    if store_format(args.output, args.format) is not StoreFormat.PARQUET or args.output.endswith(
        ".parquet"
    ):
        raise OptionError(
            "--engine ray writes a directory of Parquet shards: give -o a directory "
            "(no suffix), not a single file"
        )
    if (
        InputFormat.parse(args.input_format, "input format") is InputFormat.CONLL
        if (args.input_format)
        else guess_format(args.input) is InputFormat.CONLL
    ):
        raise OptionError("CoNLL input runs with --engine local only")


def run_extract(args: argparse.Namespace) -> int:
    from ..core.stream import stream
    from ..info import check_layers
    from ..stores import StoreSink, store_targets

    _check_extract_args(args)
    if args.engine == "ray":
        return _run_ray(args)
    if not args.resume:  # fail before the model loads; a resumed run's store is checked below
        check_outputs(store_targets(args.output, args.format), [args.input], args.overwrite)
    config = _config(args)
    if not args.server:  # a layer the model lacks: refused from its config.json, before loading
        check_layers(args.model, args.revision, config.layers)
    total = _count_records(args)
    engine = _remote_engine(args) if args.server else make_extractor(args).engine
    sink = StoreSink(
        args.output,
        engine.identity(config),
        fmt=args.format,
        overwrite=args.overwrite,
        resume=args.resume,
        inputs=[args.input],
        trim_heap=ALLOCATOR["trim_heap"],
        model_name=getattr(getattr(engine, "info", None), "name", None),
    )
    if sink.resumed_from and not args.quiet:
        print(f"bertlayers: resuming after {sink.resumed_from} texts", file=sys.stderr)
    total, chars = total if total is not None else (None, None)
    if total is not None and sink.resumed_from:
        done = _count_records(args, first=sink.resumed_from)
        total, chars = total - done[0], chars - done[1]
    try:
        provenance = stream(
            engine, sink.skip_done(_records(args)), sink, config, not args.quiet, total, chars
        )
    except OutputError:  # it names what is kept, and how to resume
        raise
    except BertlayersError as err:
        if sink.records:
            raise BertlayersError(
                f"{err.template} (the {sink.records} texts embedded before it are kept in "
                f"{sink.partial}; --resume continues from there)"
            ) from None
        raise
    except KeyboardInterrupt:
        if not sink.records:
            raise Interrupted("no text was made durable yet: nothing is kept") from None
        raise Interrupted(
            f"the {sink.records} texts made durable are kept in {sink.partial} "
            "(--resume continues from there)"
        ) from None
    if not args.quiet:
        shape = "x".join(str(n) for n in provenance["shape"])
        print(f"bertlayers: wrote {args.output} ({shape}, {provenance['format']})", file=sys.stderr)
    return 0


def _config(args: argparse.Namespace):
    return extract_config(
        layers=args.layers,
        level=args.level,
        pooling=args.pooling,
        word_pooling=args.word_pooling,
        long=args.long,
        stride=args.stride,
        combine=args.combine,
        include_special=args.include_special,
        max_length=args.max_length,
        output_dtype=args.output_dtype,
        batch_tokens=args.batch_tokens,
        max_batch_size=args.max_batch_size,
        chunk_size=args.chunk_size,
    )


def _run_ray(args: argparse.Namespace) -> int:
    """`--engine ray`: plan shards here, embed them on the cluster's actors."""
    from ..extras import require

    require("ray", "ray", "--engine ray")
    from ..distributed import extract_to_store
    from ..distributed.cluster import connect
    from ..distributed.runner import staging_dir

    config = _config(args)
    reader = reader_options(args)
    engine = model_options(args)
    partial = staging_dir(args.output)
    try:
        with connect(args.address, quiet=args.quiet):
            provenance = extract_to_store(
                [args.input],
                args.output,
                config,
                engine,
                reader,
                actors=args.actors,
                gpus_per_actor=args.gpus_per_actor,
                cpus_per_actor=args.cpus_per_actor,
                shard_size=args.shard_size,
                resume=args.resume,
                overwrite=args.overwrite,
                progress=not args.quiet,
            )
    except BertlayersError:
        raise
    except Exception as err:  # Ray's own (a lost cluster, an actor out of memory): one line
        first = first_line(err)[:300]
        raise BertlayersError(
            f"the Ray job failed: {type(err).__name__}: {first} (Ray's logs are in "
            f"/tmp/ray/session_latest/logs; finished shards are kept in {partial})"
        ) from None
    except KeyboardInterrupt:
        if not partial.is_dir():
            raise Interrupted("no shard was planned yet: nothing is kept") from None
        raise Interrupted(
            f"the finished shards are kept in {partial} (--resume continues from there)"
        ) from None
    if not args.quiet:
        shape = "x".join(str(n) for n in provenance["shape"])
        print(
            f"bertlayers: wrote {args.output} ({shape}, {provenance['shards']} Parquet shards)",
            file=sys.stderr,
        )
    return 0


def _remote_engine(args: argparse.Namespace):
    """The server as the engine of the streaming run; model options belong to the server."""
    local = [
        name
        for name, default in (
            ("model", None),
            ("revision", None),
            ("device", "auto"),
            ("dtype", "float32"),
            ("runtime", None),
        )
        if getattr(args, name, default) != default
    ]
    if local:
        raise OptionError(f"--{local[0]} is the server's to choose: leave it out with --server")
    from ..client import Client, RemoteEngine

    return RemoteEngine(Client(args.server, api_key=args.api_key))


def run_info(args: argparse.Namespace) -> int:
    from ..core.encoder import load_model_info
    from ..provenance import LAYER_CONVENTION

    info = load_model_info(args.model, args.revision)  # config and tokenizer: no weights
    if args.json:
        data = dict(vars(info), layer_convention=LAYER_CONVENTION)
        print(json.dumps(data, indent=1))
        return 0
    n = info.num_layers
    rows = [
        ("model", info.name),
        ("path", info.model_id) if info.name != info.model_id else None,
        ("architecture", f"{info.architecture} ({info.model_type})"),
        ("layers", f"{n} encoder layers + the embedding output = hidden states 0..{n}"),
        ("hidden size", str(info.hidden_size)),
        ("max length", f"{info.max_length} tokens (special tokens included)"),
        (
            "segments",
            "yes (token_type_ids: pairs are encoded as segment A/B)" if info.has_segments else "no",
        ),
        ("tokenizer", f"{info.tokenizer} (fast)"),
        ("layer index", f"0 = embedding output, 1..{n} = encoder layers, -1 = last ({n})"),
        ("", "Google's extract_features.py / bert-as-service index = ours - 1"),
    ]
    for row in rows:
        if row:
            print(f"{row[0] + ':' if row[0] else '':<14}{row[1]}")
    return 0


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def run_inspect(args: argparse.Namespace) -> int:
    from ..stores import describe

    report = describe(args.path)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    rows = [
        ("store", f"{report['path']} ({report['format']})"),
        ("complete", "yes" if report["complete"] else f"no — {report['status']}"),
        ("model", report.get("model", "?")),
        ("level", report.get("level", "?")),
        ("layers", report.get("layers", "?")),
        ("pooling", report.get("pooling", "-")),
        ("combine", report.get("combine", "-")),
        ("shape", " x ".join(str(n) for n in report.get("shape", []))),
        ("dtype", report.get("dtype", "?")),
        ("texts", report.get("texts", "?")),
        ("truncated", report.get("truncated", "-")),
        ("windowed", report.get("windowed", "-")),
        ("size", _human(report["bytes"])),
        ("created", report["created"]) if report.get("created") else None,
        ("started", report["started"]) if report.get("started") else None,
        ("version", report["bertlayers_version"]) if report.get("bertlayers_version") else None,
    ]
    for key, value in filter(None, rows):
        print(f"{key + ':':<11}{value}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ..stores import convert

    fmt = convert(args.source, args.target, fmt=args.format, overwrite=args.overwrite)
    print(f"bertlayers: wrote {args.target} ({fmt.value})", file=sys.stderr)
    return 0
