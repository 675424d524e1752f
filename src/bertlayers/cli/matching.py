"""`bertlayers probe --task similarity | retrieval`: which layer matches best.

Reads scored pairs, or queries with a corpus and relevance judgements, gets the vectors (from
stores, or by extracting them with the core), and hands arrays to `analysis.matching`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError, OptionError
from ..io.matching import read_retrieval, read_scored_pairs, text_records
from ..io.readers import read_records
from ..options import LongMode, Pooling
from ..outputs import check_outputs
from .options import positive_int
from .tradeoff import check_tradeoff, run_tradeoff

MATCHING_EXAMPLES = """\
matching (cosine of one vector per text; every layer, combined layers, baselines):
  # similarity: pairs with a gold score; Spearman/Pearson (and AUC for a 0/1 gold) per layer
  bertlayers probe sts.tsv --task similarity --text-column sentence1 \\
      --pair-column sentence2 --score-column score --post none,whiten -o runs/sts
  # retrieval: each BBC article from its title (one file: query and document columns)
  bertlayers probe news-bbc.jsonl --task retrieval --id-column id --text-column title \\
      --doc-column text --doc-long split -o runs/bbc-retrieval
  # retrieval with a separate corpus and TREC/BEIR qrels
  bertlayers probe queries.jsonl --task retrieval --corpus docs.jsonl --qrels qrels.tsv \\
      --id-column _id --query-pooling cls --doc-pooling mean
"""


def add_matching_options(probe: argparse.ArgumentParser) -> None:
    """The options of the similarity and retrieval tasks, in their own group of `probe`."""
    group = probe.add_argument_group("similarity and retrieval (--task similarity|retrieval)")
    group.add_argument(
        "--pair-column", default=None, help="similarity: the column with each pair's second text"
    )
    group.add_argument(
        "--score-column", default="score", help="similarity: the column with the gold score"
    )
    group.add_argument(
        "--corpus", default=None, help="retrieval: the documents (txt/csv/tsv/jsonl)"
    )
    group.add_argument(
        "--qrels",
        default=None,
        help="retrieval: relevance judgements, TREC ('qid 0 docid rel') or BEIR TSV",
    )
    group.add_argument(
        "--doc-column",
        default=None,
        help="retrieval without --corpus: the column of DATA holding each query's document",
    )
    group.add_argument(
        "--doc-text-column", default="text", help="retrieval: the text column of --corpus"
    )
    group.add_argument(
        "--doc-id-column",
        default=None,
        help="retrieval: the id column of --corpus (unset: the --id-column)",
    )
    group.add_argument(
        "--corpus-store",
        default=None,
        help="retrieval: the documents' vectors, as --store (read, or extracted into)",
    )
    group.add_argument("--query-pooling", default=None, help="retrieval: pooling of queries")
    group.add_argument("--doc-pooling", default=None, help="retrieval: pooling of documents")
    group.add_argument(
        "--doc-long", default=None, help="retrieval: --long for documents (e.g. split)"
    )
    group.add_argument(
        "--post",
        default="none",
        help="post-processing, each its own row (comma-separated): none, center, whiten, "
        "whiten-K (whitening kept to the top K directions, Su et al.'s whitening-K), abtt "
        "(all-but-the-top: centre, remove the top d/100 directions)",
    )
    group.add_argument(
        "--fit-on",
        default=None,
        help="fit --post on these texts (a file) instead of the data's own texts",
    )
    group.add_argument(
        "--bootstrap",
        type=positive_int,
        default=1000,
        help="resamples for the 95%% confidence intervals",
    )


# ------------------------------------------------------------------ reading


def _poolings(args: argparse.Namespace) -> list[tuple[str | None, str | None]]:
    """(query pooling, document pooling) per pooling asked for (`--pooling mean,cls`); None
    where none was asked for (an existing store's, or the default)."""
    asked = [Pooling.parse(p, "pooling").value for p in args.pooling.split(",")] if (
        args.pooling) else [None]  # fmt: skip
    query = Pooling.parse(args.query_pooling, "pooling").value if args.query_pooling else None
    doc = Pooling.parse(args.doc_pooling, "pooling").value if args.doc_pooling else None
    return list(dict.fromkeys((query or p, doc or p) for p in asked))


def _label(query_pooling: str, doc_pooling: str) -> str:
    return query_pooling if query_pooling == doc_pooling else f"{query_pooling}/{doc_pooling}"


def _vectors_of(vectors, records, store, name, data_name, **overrides):
    """The probe's vectors for `records`; a store given must hold exactly these texts."""
    from ..analysis.probe_data import check_ids

    result, where = vectors.get(records, False, store, name, **overrides)
    check_ids(list(result.ids), records, where, data_name)
    return result, where


def _stacked(result, name: str):
    """`(N, K, H)` sentence vectors, one per layer: what matching reads."""
    import numpy as np

    from ..results import SentenceEmbeddings

    if not isinstance(result, SentenceEmbeddings):
        raise InputError(
            f"{name} is a {result.level}-level store; matching needs sentence-level vectors"
        )
    combine = result.provenance.get("combine", "stack")
    if combine != "stack":
        raise InputError(f"{name} holds layers combined by {combine}: matching needs each layer")
    return np.asarray(result.embeddings, dtype=np.float32)


def _same_model(first, second, names: tuple[str, str]) -> None:
    """Vectors compared by cosine must come from one model and the same layers."""
    a, b = first.provenance.get("model", {}), second.provenance.get("model", {})
    from ..provenance import same_model

    if not same_model(a, b):
        raise InputError(
            f"{names[0]} ({a.get('name')}) and {names[1]} ({b.get('name')}) come from "
            "different models: their vectors cannot be compared"
        )
    if list(first.layers) != list(second.layers):
        raise InputError(
            f"{names[0]} holds layers {list(first.layers)} but {names[1]} holds "
            f"{list(second.layers)}: extract both with the same --layers"
        )


# ------------------------------------------------------------------ the handler


def run_matching(args: argparse.Namespace, vectors_of, targets) -> int:
    """Score similarity or retrieval per layer. `vectors_of` is the probe's `_Vectors` (store or
    extraction), `targets` what the run writes (checked before any work)."""
    from ..analysis.matching import matching_views, retrieval_report, similarity_report
    from ..analysis.plots import plot_matching
    from ..analysis.postprocess import parse_posts
    from ..analysis.report import write_results
    from ..provenance import summary

    posts = parse_posts(args.post)
    combos = _poolings(args)
    if args.doc_long:
        LongMode.parse(args.doc_long, "long")
    for flag, value in (("--store", args.store), ("--corpus-store", args.corpus_store)):
        if value and len(combos) > 1:
            raise OptionError(f"{flag} holds one pooling: give one --pooling with it")
    if args.store and args.corpus_store and Path(args.store).resolve() == Path(
        args.corpus_store).resolve():  # fmt: skip
        raise OptionError("--store (queries) and --corpus-store (documents) must differ")
    if args.task == "similarity":
        retrieval_only = ("corpus", "qrels", "doc_column", "corpus_store", "query_pooling",
                          "doc_pooling", "doc_long", "doc_id_column")  # fmt: skip
        for flag in retrieval_only:
            if getattr(args, flag):
                raise OptionError(f"--{flag.replace('_', '-')} is for --task retrieval")
        if args.doc_text_column != "text":
            raise OptionError("--doc-text-column is for --task retrieval")
    check_outputs(*targets)

    vectors = vectors_of(args)
    fit_records = None
    if args.fit_on:
        fit_records = list(read_records(args.fit_on, text_column=args.text_column))
    provenance: dict = {}
    if args.task == "similarity":
        pairs = read_scored_pairs(
            args.data, args.pair_column, args.score_column, args.text_column, args.id_column,
            args.input_format, args.quoting,
        )  # fmt: skip
        texts, left, right, gold = pairs.texts, pairs.left, pairs.right, pairs.gold
        records = text_records(texts)
        stacks, fits, layers = {}, {}, None
        for pooling, _ in combos:
            result, where = _vectors_of(vectors, records, args.store, "the vectors", args.data,
                                        pooling=pooling)  # fmt: skip
            label = result.provenance.get("pooling", pooling)
            stacks[label], layers, provenance = (
                _stacked(result, where),
                result.layers,
                result.provenance,
            )
            if fit_records is not None:
                fit, fit_where = vectors.get(fit_records, False, None, "--fit-on", pooling=label)
                _same_model(result, fit, (where, fit_where))
                fits[label] = _stacked(fit, fit_where)
        if args.tradeoff:  # a model to cut, before the scoring
            check_tradeoff(args, provenance, layers, where)
        bar, done = _progress(args, len(combos) * len(matching_views(layers)) * len(posts))
        try:
            report = similarity_report(
                stacks, list(layers), left, right, gold, texts, posts, fits or None,
                args.bootstrap, args.seed, done, {"data": args.data}, provenance,
            )  # fmt: skip
        finally:
            if bar is not None:
                bar.close()
    else:
        data = read_retrieval(
            args.data, args.text_column, args.id_column, args.input_format, args.quoting,
            corpus=args.corpus, qrels=args.qrels, doc_column=args.doc_column,
            doc_text_column=args.doc_text_column, doc_id_column=args.doc_id_column,
        )  # fmt: skip
        queries, documents, relevant = data.queries, data.documents, data.relevant
        n_queries, groups = data.n_queries, data.groups
        if not documents:
            raise InputError(f"{args.corpus}: the corpus is empty")
        if n_queries is not None and len(queries) < n_queries:
            print(
                f"bertlayers: {len(queries)} of {n_queries} queries have a relevant document in "
                f"{args.qrels}; the others are not scored",
                file=sys.stderr,
            )
        q_stacks, d_stacks, fits, layers = {}, {}, {}, None
        doc_long = args.doc_long or args.long
        corpus_name = args.corpus or args.data
        for q_pooling, d_pooling in combos:
            q, q_where = _vectors_of(vectors, queries, args.store, "the query vectors",
                                     args.data, pooling=q_pooling)  # fmt: skip
            d, d_where = _vectors_of(vectors, documents, args.corpus_store, "the corpus vectors",
                                     corpus_name, pooling=d_pooling, long=doc_long)  # fmt: skip
            _same_model(q, d, (q_where, d_where))
            label = _label(q.provenance.get("pooling"), d.provenance.get("pooling"))
            q_stacks[label], d_stacks[label] = _stacked(q, q_where), _stacked(d, d_where)
            layers, provenance = q.layers, d.provenance
            if fit_records is not None:
                fit, fit_where = vectors.get(
                    fit_records, False, None, "--fit-on",
                    pooling=d.provenance.get("pooling"), long=doc_long,
                )  # fmt: skip
                _same_model(d, fit, (d_where, fit_where))
                fits[label] = _stacked(fit, fit_where)
        if args.tradeoff:  # a model to cut, before the scoring
            check_tradeoff(args, provenance, layers, d_where)
        bar, done = _progress(args, len(combos) * len(matching_views(layers)) * len(posts))
        task = {
            "data": args.data,
            "corpus": args.corpus or f"{args.data} (column {args.doc_column})",
            "query_long": args.long or "truncate",
            "doc_long": doc_long or "truncate",
        }
        try:
            report = retrieval_report(
                q_stacks, d_stacks, list(layers), relevant, [r.text for r in queries],
                [r.text for r in documents], posts, fits or None, args.bootstrap, args.seed,
                done, task, provenance, groups,
            )  # fmt: skip
        finally:
            if bar is not None:
                bar.close()
    report.provenance = summary(report.provenance)
    if args.output_dir:  # the files first: a closed stdout (`| head`) then loses nothing
        out = Path(args.output_dir)
        write_results(out, "probe", report.to_dict(), report.to_csv())
        plot_matching(report, out)
        if not args.quiet:
            print(f"bertlayers: wrote probe.json, probe.csv and plots to {out}", file=sys.stderr)
    tradeoff = None
    if args.tradeoff:  # before the tables: a refusal leaves stdout empty, the files kept
        best = next(s for s in report.scores if s.label == report.best)
        poolings = (best.pooling or "").split("/")
        query_pooling, doc_pooling = poolings[0], poolings[-1]
        if args.task == "similarity":
            workloads = [(records, vectors.config(False, pooling=query_pooling))]
        else:
            workloads = [
                (queries, vectors.config(False, pooling=query_pooling)),
                (documents, vectors.config(False, pooling=doc_pooling, long=doc_long)),
            ]
        tradeoff = run_tradeoff(args, report.to_dict(), provenance, args.data, workloads)
    print(report.table())
    if tradeoff is not None:
        print()
        print(tradeoff.table())
    return 0


def _progress(args: argparse.Namespace, total: int):
    if args.quiet:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="scoring", unit="row", file=sys.stderr, dynamic_ncols=True)

    def done(name: str) -> None:
        bar.set_postfix_str(name, refresh=False)
        bar.update(1)

    return bar, done


def matching_inputs(args: argparse.Namespace) -> list[str]:
    """The files a matching run reads (never to be overwritten)."""
    return [p for p in (args.corpus, args.qrels, args.fit_on) if p]
