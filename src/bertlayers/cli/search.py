"""`bertlayers index | search`: semantic search over one layer of a store (FAISS)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError
from .options import Formatter, add_input_options, non_negative_int, positive_int

INDEX_EXAMPLES = """\
examples:
  bertlayers extract news.jsonl --id-column id --long split -o news.parquet
  # index layer 4; keep the texts, so search shows them
  bertlayers index news.parquet -o news.index --layer 4 --texts news.jsonl --id-column id
  bertlayers search news.index "oil prices fall" -k 5
  bertlayers search news.index --queries questions.txt -k 10 --json > hits.jsonl

Up to 100,000 vectors the index is exact (inner product of unit vectors = cosine); beyond,
HNSW (or --kind ivf), with its recall@10 against exact search printed when built.
"""


def add_commands(commands) -> None:
    """Register index and search on the main parser's subcommands."""
    index = commands.add_parser(
        "index",
        help="build a FAISS index of one layer of a store, for 'bertlayers search'",
        description="Index one layer (or the mean of all layers) of a sentence-level store "
        "with FAISS (the `search` extra). The index records the store's provenance, so "
        "search embeds queries with the same model and settings.",
        formatter_class=Formatter,
        epilog=INDEX_EXAMPLES,
    )
    index.add_argument("store", help="a sentence-level store written by bertlayers extract")
    index.add_argument("-o", "--output", required=True, help="the index directory to write")
    index.add_argument("--layer", default="-1", help="a layer index (4, -1) or mean")
    index.add_argument("--kind", default="auto", help="auto | flat (exact) | hnsw | ivf")
    index.add_argument(
        "--texts",
        default=None,
        help="the input the store was extracted from, so search shows each hit's text "
        "(its ids must be the store's, in order)",
    )
    add_input_options(index)
    index.add_argument("--seed", type=non_negative_int, default=0, help="recall's sample")
    index.add_argument("--overwrite", action="store_true", help="replace an existing index")
    index.add_argument("-q", "--quiet", action="store_true", help="no messages on stderr")
    index.set_defaults(handler=run_index)

    search = commands.add_parser(
        "search",
        help="the nearest stored texts of a query, from an index built by 'bertlayers index'",
        description="Embed each query with the index's model and settings and print its k "
        "nearest stored texts: a header, then query (its number, in the order given), rank, id, "
        "score and text, tab-separated (or JSON lines with --json).",
        formatter_class=Formatter,
        epilog=INDEX_EXAMPLES,
    )
    search.add_argument("index", help="an index directory written by bertlayers index")
    search.add_argument("query", nargs="*", help="query texts (or --queries FILE)")
    search.add_argument("--queries", default=None, help="a file of queries (txt: one per line)")
    search.add_argument("-k", type=positive_int, default=5, help="hits per query")
    search.add_argument("--json", action="store_true", help="JSON lines, one per query")
    search.add_argument(
        "--max-chars",
        type=non_negative_int,
        default=200,
        help="cut each hit's text to this many characters in the table (0: all; --json: all)",
    )
    search.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (or cuda:N)")
    search.add_argument(
        "--text-column", default="text", help="--queries csv/tsv/jsonl: the text column"
    )
    search.add_argument("-q", "--quiet", action="store_true", help="no messages on stderr")
    search.set_defaults(handler=run_search)


def _texts_for(args: argparse.Namespace, ids: list[str]) -> list[str]:
    """The texts of `--texts`, checked against the store's ids, in order."""
    from ..io.readers import read_records

    records = read_records(
        args.texts,
        input_format=args.input_format,
        text_column=args.text_column,
        id_column=args.id_column,
        quoting=args.quoting,
    )
    texts = []
    for position, record in enumerate(records):
        if position >= len(ids):
            raise InputError(f"{args.texts} has more records than the store's {len(ids)}")
        if record.id != ids[position]:
            raise InputError(
                f"{args.texts} and {args.store} disagree at record {position + 1}: id "
                f"'{record.id}' in the file, '{ids[position]}' in the store (same --id-column?)"
            )
        texts.append(record.text)
    if len(texts) != len(ids):
        raise InputError(f"{args.texts} has {len(texts)} records; the store has {len(ids)}")
    return texts


def run_index(args: argparse.Namespace) -> int:
    from ..errors import OptionError
    from ..extras import require
    from ..search import Index
    from ..stores import load

    require("faiss", "search", "bertlayers index")
    from pathlib import Path

    target = Path(args.output)
    if target.exists() and not args.overwrite:
        raise OptionError(f"{target} exists: give --overwrite to replace it")
    result = load(args.store)
    texts = _texts_for(args, list(result.ids)) if args.texts else None
    index = Index.build(result, layer=args.layer, kind=args.kind, texts=texts, seed=args.seed)
    index.save(target, overwrite=args.overwrite)
    if not args.quiet:
        meta = index.meta
        print(
            f"bertlayers: indexed {meta['count']} vectors ({meta['vectors']}, dim {meta['dim']}) "
            f"as {meta['kind']}; recall@10 against exact search: {index.recall_at_10:.4f}; "
            f"wrote {target}",
            file=sys.stderr,
        )
    return 0


def run_search(args: argparse.Namespace) -> int:
    from ..errors import OptionError
    from ..search import Index

    if bool(args.query) == bool(args.queries):
        raise OptionError("give query texts or --queries FILE (one of them)")
    index = Index.load(args.index)
    if args.queries:
        from ..io.readers import read_records

        records = list(read_records(args.queries, text_column=args.text_column))
        ids, queries = [r.id for r in records], [r.text for r in records]
    else:
        queries = list(args.query)
        ids = [str(i + 1) for i in range(len(queries))]
    from ..core.extract import Extractor

    hits = index.search(queries, k=args.k, extractor=Extractor(index.model, device=args.device))
    out = sys.stdout
    if args.json:
        for query_id, query, found in zip(ids, queries, hits, strict=True):
            row = {"query_id": query_id, "query": query, "hits": [h.__dict__ for h in found]}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return 0
    out.write("query\trank\tid\tscore\ttext\n")
    for query_id, found in zip(ids, hits, strict=True):
        for rank, hit in enumerate(found, start=1):
            text = " ".join((hit.text or "").split())
            if args.max_chars and len(text) > args.max_chars:
                text = text[: args.max_chars - 1] + "…"
            out.write(f"{query_id}\t{rank}\t{hit.id}\t{hit.score:.4f}\t{text}\n")
    return 0
