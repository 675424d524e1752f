"""`bertlayers probe`: which layer is best for my labels, put to a linear probe per layer.

A thin front end: it reads labelled records, gets vectors (from a store, or by extracting them
with the core), and hands them to `probing`, `plots` and `report`; `matching.py` runs its
similarity and retrieval tasks, `tradeoff.py` its `--tradeoff`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError, OptionError
from ..io.readers import InputFormat, Record, read_records
from ..outputs import Kind, Target, check_outputs
from .matching import MATCHING_EXAMPLES, add_matching_options, matching_inputs, run_matching
from .options import (
    Formatter,
    add_data_options,
    add_model_options,
    add_overwrite_option,
    add_runtime_options,
    data_format,
    int_at_least,
    make_extractor,
    non_negative_int,
    positive_float,
    positive_int,
    require_analysis,
    result_targets,
)
from .tradeoff import (
    TRADEOFF_EXAMPLES,
    add_tradeoff_options,
    check_tradeoff,
    check_tradeoff_options,
    run_tradeoff,
    tradeoff_targets,
)

PROBE_EXAMPLES = (
    """\
examples:
  # sentiment: which layer? 5-fold CV, table on stdout, JSON/CSV/plots in runs/sentiment
  bertlayers probe sentiment.tsv --label-column label -o runs/sentiment
  # keep the vectors (reused on the next run), save the best probe, then label new text
  bertlayers probe sentiment.tsv --store runs/sentiment/vectors.npy -o runs/sentiment \\
      --save-model runs/sentiment/clf.joblib
  bertlayers predict runs/sentiment/clf.joblib new.txt
  # POS / NER tags from a CoNLL file (word<TAB>tag): word-level vectors, folds by sentence
  bertlayers probe train.conll --test test.conll -o runs/pos
  # long documents: windows over the whole text instead of truncation
  bertlayers probe news.jsonl --label-column label --long split -o runs/topic

The table gives each layer (0 = embedding output), the mean of all layers, the last four
concatenated, a learned scalar mix, and majority-class and bag-of-words baselines: the mean
and standard deviation over folds of accuracy and macro-F1 (entity-level F1 too for BIO tags).

"""
    + MATCHING_EXAMPLES
    + """
Matching tables give each layer, the mean of all layers, the mean of layer 1 and the last,
and the last four concatenated, per pooling and --post, with 95% bootstrap intervals, beside
TF-IDF and word-overlap (similarity) or BM25 (retrieval) baselines.

"""
    + TRADEOFF_EXAMPLES
    + """
The trade-off table gives each K: layer K's score with its interval (it is exactly the last
layer of the model cut to K), the texts/s of that cut model measured here, and its size on
disk; with -o, tradeoff.json/.csv record the machine (CPU, cores, torch, date, commit) and
the command, and tradeoff.png plots score and speed against K.
"""
)


def _add_extraction_options(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--layers", default="all", help="layers to probe: all | 0,6,-1 | -4:")
    parser.add_argument(
        "--pooling",
        default=None,
        help="texts: cls|mean|max|first|last (unset: mean); similarity and retrieval take "
        "several, comma-separated (mean,cls), each its own rows",
    )
    parser.add_argument(
        "--word-pooling", default=None, help="words: first|last|mean|max (default: first)"
    )
    parser.add_argument(
        "--long",
        default=None,
        help="texts over the model's limit: truncate (default for texts) | split | error",
    )
    parser.add_argument("--max-length", type=positive_int, default=None, help="tokens per text")
    parser.add_argument("--batch-tokens", type=positive_int, default=None)
    parser.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (or cuda:N)")
    parser.add_argument("--dtype", default="float32", help="compute dtype")
    add_runtime_options(parser, legacy=("backend",))


def add_commands(commands) -> None:
    """Register `probe` on the main parser's subcommands."""
    probe = commands.add_parser(
        "probe",
        help="score a linear probe on every layer: which layer is best for my labels?",
        description="Per-layer linear probes (scikit-learn) with k-fold cross-validation or a "
        "test set, on text labels (csv/tsv/jsonl) or word tags (conll); or, with --task "
        "similarity|retrieval, per-layer cosine similarity against gold scores and cosine "
        "search of queries over a corpus.",
        formatter_class=Formatter,
        epilog=PROBE_EXAMPLES,
    )
    probe.add_argument(
        "data",
        help="labelled .csv/.tsv/.jsonl (one text per row) or .conll; scored pairs "
        "(similarity); queries (retrieval)",
    )
    probe.add_argument(
        "--task",
        default="classify",
        choices=("classify", "similarity", "retrieval"),
        help="classify: labels or tags; similarity: scored pairs; retrieval: queries over a corpus",
    )
    probe.add_argument(
        "--store",
        default=None,
        help="read the vectors from this store; when it does not exist, extract into it first",
    )
    probe.add_argument("--test", default=None, help="a labelled test file (instead of folds)")
    probe.add_argument("--test-store", default=None, help="vectors of --test, as --store")
    probe.add_argument("-o", "--output-dir", default=None, help="write probe.json/.csv and plots")
    probe.add_argument("--classifier", default="logreg", help="logreg | svm (linear)")
    probe.add_argument("--folds", type=int_at_least(2), default=5, help="k of k-fold CV")
    probe.add_argument(
        "--seed", type=non_negative_int, default=0, help="folds, sampling and solvers"
    )
    probe.add_argument(
        "--C", dest="c", type=positive_float, default=1.0, help="inverse regularization (> 0)"
    )
    probe.add_argument(
        "--metric",
        default=None,
        help="accuracy|macro_f1|entity_f1 for 'best' (default: macro_f1 for texts, "
        "accuracy for tags, entity_f1 for BIO tags)",
    )
    probe.add_argument(
        "--projection", default="pca", help="plot of each layer's vectors: pca | umap | none"
    )
    probe.add_argument(
        "--tensorboard", default=None, help="also export every layer to TensorBoard's projector"
    )
    probe.add_argument("--save-model", default=None, help="save the fitted probe (.joblib)")
    probe.add_argument(
        "--use",
        default="best",
        help="what --save-model fits: best | a layer (6, -1) | mean | concat | mix",
    )
    add_data_options(probe)
    _add_extraction_options(probe)
    add_matching_options(probe)
    add_tradeoff_options(probe)
    add_overwrite_option(probe)
    probe.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    probe.set_defaults(handler=run_probe)


# ------------------------------------------------------------------ reading and vectors


def _labelled_records(path: str, args: argparse.Namespace) -> tuple[list[Record], bool]:
    """The labelled records of a file, and whether they are word tags (CoNLL)."""
    fmt = data_format(path, args.input_format)
    if fmt is InputFormat.TXT:
        raise InputError(
            f"{path}: a probe needs labels: give a .csv/.tsv/.jsonl file with a label column "
            "or a .conll file with tags (plain text has no labels)"
        )
    words = fmt is InputFormat.CONLL
    records = list(
        read_records(
            path,
            input_format=fmt,
            text_column=args.text_column,
            id_column=args.id_column,
            word_column=args.word_column,
            label_column=None if words else args.label_column,
            tag_column=args.tag_column if words else None,
            quoting=args.quoting,
        )
    )
    return records, words


def _labels_of(records: list[Record], words: bool) -> tuple[list[str], object, str]:
    """Labels, the text of each, and the level: what `check_labels` needs."""
    import numpy as np

    if words:
        labels = [tag for r in records for tag in r.tags]
        groups = np.repeat(np.arange(len(records)), [len(r.tags) for r in records])
        return labels, groups, "word"
    return [r.label for r in records], np.arange(len(records)), "sentence"


def _vectors(args: argparse.Namespace):
    """Where the probe's vectors come from: its stores, or the model (loaded when needed)."""
    from ..vectors import VectorSource

    options = {
        "layers": args.layers,
        "pooling": args.pooling,
        "word_pooling": args.word_pooling,
        "long": args.long,
        "max_length": args.max_length,
        "batch_tokens": args.batch_tokens,
    }
    return VectorSource(
        lambda: make_extractor(args),
        options,
        model=args.model,
        overwrite=args.overwrite,
        inputs=_probe_inputs(args),
        progress=not args.quiet,
    )


def _probe_data(records, words, result, where, data_name):
    from ..analysis.probe_data import sentence_data, word_data

    build = word_data if words else sentence_data
    return build(result, records, name=where, data_name=data_name)


def _extraction_record(provenance: dict, args: argparse.Namespace) -> dict:
    """What `predict` needs to embed new text exactly as the probe's training text."""
    model = provenance.get("model", {})
    bundled = str(model.get("name", "")).endswith("(bundled)")
    return {
        "model": None if bundled else model.get("id"),
        "model_name": model.get("name"),
        "fingerprint": model.get("fingerprint"),
        "revision": args.revision,
        "level": provenance.get("level", "sentence"),
        "layers": provenance.get("layers"),
        "pooling": provenance.get("pooling", "mean"),
        "word_pooling": provenance.get("word_pooling", "first"),
        "include_special": provenance.get("include_special", False),
        "long": provenance.get("long"),
        "max_length": provenance.get("max_length"),
    }


# ------------------------------------------------------------------ outputs


def _tensorboard_targets(directory: str, layers: list[int] | None) -> list[Target]:
    """What `export_tensorboard` writes (the layer folders once the layers are known)."""
    out = Path(directory)
    targets = [Target(out / "projector_config.pbtxt", Kind.TEXT, make_parents=True)]
    for layer in layers or []:
        for name in ("tensors.tsv", "metadata.tsv"):
            targets.append(Target(out / f"layer_{layer:02d}" / name, Kind.TEXT, True))
    return targets


def _probe_inputs(args: argparse.Namespace) -> list[Path]:
    from ..stores import store_files

    inputs = [Path(p) for p in (args.data, args.test) if p]
    for store in (args.store, args.test_store):
        if store and Path(store).exists():
            inputs += store_files(store)
    return inputs


def _check_probe_outputs(args: argparse.Namespace) -> None:
    """Every path probe writes, checked before any work: results, plots, model, stores."""
    from ..stores import store_targets

    targets: list[Target] = []
    if args.output_dir:
        figures = ("probe",) if args.projection == "none" else ("probe", "projection")
        targets += result_targets(args.output_dir, "probe", *figures)
    if args.save_model:
        targets.append(Target(Path(args.save_model), Kind.JOBLIB, make_parents=True))
    if args.tensorboard:
        targets += _tensorboard_targets(args.tensorboard, None)
    targets += tradeoff_targets(args)
    for store in (args.store, args.test_store):
        if store and not Path(store).exists():  # extracted into: an output
            targets += [Target(t.path, t.kind, make_parents=True) for t in store_targets(store)]
    check_outputs(targets, _probe_inputs(args), args.overwrite)


# ------------------------------------------------------------------ handlers


def _matching_targets(args: argparse.Namespace):
    """What `check_outputs` needs for a matching run: its outputs, inputs and --overwrite."""
    from ..stores import store_files, store_targets

    for flag in ("test", "test_store", "save_model", "tensorboard"):
        if getattr(args, flag):
            raise OptionError(f"--{flag.replace('_', '-')} is for --task classify")
    targets = result_targets(args.output_dir, "probe", "probe") if args.output_dir else []
    targets += tradeoff_targets(args)
    inputs = [*_probe_inputs(args), *(Path(p) for p in matching_inputs(args))]
    for store in (args.store, args.corpus_store):
        if store and not Path(store).exists():  # extracted into: an output
            targets += [Target(t.path, t.kind, make_parents=True) for t in store_targets(store)]
        elif store:
            inputs += store_files(store)
    return targets, inputs, args.overwrite


def run_probe(args: argparse.Namespace) -> int:
    require_analysis("probe")  # before the imports that need it
    check_tradeoff_options(args)
    if args.task != "classify":
        return run_matching(args, _vectors, _matching_targets(args))
    for flag in ("pair_column", "corpus", "qrels", "doc_column", "corpus_store", "fit_on"):
        if getattr(args, flag):
            raise OptionError(
                f"--{flag.replace('_', '-')} is for --task similarity or --task retrieval"
            )
    from ..analysis.plots import export_tensorboard, plot_probe, plot_projection
    from ..analysis.probe_data import check_labels
    from ..analysis.probing import (
        Classifier,
        Metric,
        feature_for,
        fit_probe,
        run_probes,
        save_probe,
    )
    from ..analysis.report import write_results
    from ..provenance import summary

    Classifier.parse(args.classifier, "classifier")
    if args.metric:
        Metric.parse(args.metric, "metric")
    if args.projection not in ("pca", "umap", "none"):
        raise OptionError(f"unknown projection '{args.projection}': use pca, umap or none")
    if args.projection == "umap" and args.output_dir:
        import importlib.util

        if importlib.util.find_spec("umap") is None:
            raise OptionError(
                "--projection umap needs the umap-learn package (pip install umap-learn)"
            )
    if args.test_store and not args.test:
        raise OptionError("--test-store gives the vectors of --test: name the --test file too")
    _check_probe_outputs(args)

    records, words = _labelled_records(args.data, args)
    check_labels(*_labels_of(records, words), None if args.test else args.folds, args.data)
    test_records = None
    if args.test:
        test_records, test_words = _labelled_records(args.test, args)
        if test_words != words:
            raise InputError(f"{args.data} and {args.test} must both be CoNLL, or both not")
    vectors = _vectors(args)
    result, where = vectors.get(records, words, args.store, "the vectors")
    if args.tradeoff:  # a model to cut, before the probes run
        check_tradeoff(args, result.provenance, result.layers, where)
    data = _probe_data(records, words, result, where, args.data)
    test = None
    if test_records is not None:
        test_result, test_where = vectors.get(test_records, words, args.test_store, "test vectors")
        test = _probe_data(test_records, words, test_result, test_where, args.test)
    if args.tensorboard:  # its layer folders, now that the layers are known
        targets = _tensorboard_targets(args.tensorboard, list(data.layers))
        check_outputs(targets, _probe_inputs(args), args.overwrite)

    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        n = len(data.layers) + 2 + (3 if len(data.layers) > 1 else 0)
        bar = tqdm(total=n, desc="probing", unit="probe", file=sys.stderr, dynamic_ncols=True)

    def done(name: str) -> None:
        if bar is not None:
            bar.set_postfix_str(name, refresh=False)
            bar.update(1)

    try:
        report = run_probes(
            data, test, args.classifier, args.folds, args.seed, args.c, args.metric, done
        )
    finally:
        if bar is not None:
            bar.close()
    report.provenance = summary(report.provenance)
    report.task["data"] = args.data  # what the report names
    if args.test:
        report.task["test"] = args.test
    if args.output_dir:  # the files first: a closed stdout (`| head`) then loses nothing
        out = Path(args.output_dir)
        write_results(out, "probe", report.to_dict(), report.to_csv())
        plot_probe(report, out)
        if args.projection != "none":
            plot_projection(data, out, args.projection, args.seed)
        if not args.quiet:
            print(f"bertlayers: wrote probe.json, probe.csv and plots to {out}", file=sys.stderr)
    if args.tensorboard:
        config = export_tensorboard(data, args.tensorboard)
        if not args.quiet:
            print(
                f"bertlayers: wrote {config} (tensorboard --logdir {args.tensorboard})",
                file=sys.stderr,
            )
    if args.save_model:
        feature = feature_for(report, args.use, data.layers)
        extraction = _extraction_record(result.provenance, args)
        probe = fit_probe(data, feature, extraction, args.classifier, args.seed, args.c, report)
        save_probe(probe, args.save_model)
        if not args.quiet:
            print(
                f"bertlayers: saved the {feature.name} probe ({report.metric} "
                f"{probe.cv_score:.4f}) to {args.save_model}",
                file=sys.stderr,
            )
    tradeoff = None
    if args.tradeoff:  # before the tables: a refusal leaves stdout empty, the files kept
        kept = ("pooling", "word_pooling", "long", "max_length", "include_special")
        made = {k: result.provenance.get(k) for k in kept}  # as the probed vectors were made
        workload = (records, vectors.config(words, **made))
        tradeoff = run_tradeoff(args, report.to_dict(), result.provenance, where, [workload])
    print(report.table())
    if tradeoff is not None:
        print()
        print(tradeoff.table())
    return 0
