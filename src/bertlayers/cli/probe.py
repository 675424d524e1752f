"""`bertlayers probe | predict | analyze | report`: the layers put to work.

Thin front ends: they read labelled records, get vectors (from a store, or by extracting them
with the core), and hand them to `probing`, `geometry`, `plots` and `report`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

from ..errors import InputError, OptionError
from ..io.readers import InputFormat, Record, guess_format, read_records
from ..outputs import Kind, Target, check_outputs
from .matching import MATCHING_EXAMPLES, add_matching_options, matching_inputs, run_matching
from .options import (
    Formatter,
    add_input_options,
    add_model_options,
    add_runtime_options,
    extract_config,
    int_at_least,
    make_extractor,
    non_negative_int,
    positive_float,
    positive_int,
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
)


def _add_data_options(parser: argparse.ArgumentParser, labelled: bool = True) -> None:
    add_input_options(parser)
    if labelled:
        parser.add_argument("--label-column", default="label", help="csv/tsv/jsonl: the label")
        parser.add_argument(
            "--tag-column", type=int, default=-1, help="conll: the tag's column (-1 = last)"
        )


def _add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that exist (only files of the kind written, never an input)",
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
    """Register probe, predict, analyze and report on the main parser's subcommands."""
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
    _add_data_options(probe)
    _add_extraction_options(probe)
    add_matching_options(probe)
    _add_overwrite_option(probe)
    probe.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    probe.set_defaults(handler=run_probe)

    predict = commands.add_parser(
        "predict",
        help="label new text with a probe saved by 'probe --save-model'",
        description="Embed texts the way the probe was trained and label them: one "
        "'id<TAB>label' line per text, or 'word<TAB>tag' (CoNLL) for word probes.",
        formatter_class=Formatter,
        epilog="examples:\n  bertlayers predict clf.joblib new.txt\n"
        "  bertlayers predict clf.joblib reviews.csv --text-column review --proba -o labels.tsv\n"
        "  bertlayers predict pos.joblib sentences.txt   # one sentence per line -> CoNLL\n",
    )
    predict.add_argument("model_file", help="a probe saved with bertlayers probe --save-model")
    predict.add_argument("input", help="texts: .txt/.csv/.tsv/.jsonl/.conll, or - for stdin")
    predict.add_argument("-o", "--output", default=None, help="write here instead of stdout")
    predict.add_argument("--proba", action="store_true", help="add the label's probability")
    _add_data_options(predict, labelled=False)
    predict.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (or cuda:N)")
    add_runtime_options(predict, legacy=("backend",))
    predict.add_argument("--model", default=None, help="override the model the probe names")
    _add_overwrite_option(predict)
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(handler=run_predict)

    analyze = commands.add_parser(
        "analyze",
        help="per-layer geometry of a store: anisotropy, self-similarity, CKA, norms",
        description="Per-layer geometry (Ethayarajh 2019): anisotropy, self-similarity of a "
        "word across contexts, intra-sentence similarity (token/word stores), linear CKA "
        "between layers and norms. A table on stdout; JSON, CSV and plots with -o.",
        formatter_class=Formatter,
        epilog="examples:\n  bertlayers extract pos.conll --level word -o words.npz\n"
        "  bertlayers analyze words.npz -o runs/pos\n",
    )
    analyze.add_argument("store", help="a store written by bertlayers extract")
    analyze.add_argument("-o", "--output-dir", default=None, help="write analysis.json and plots")
    analyze.add_argument("--seed", type=non_negative_int, default=0, help="the samples drawn")
    analyze.add_argument("--pairs", type=positive_int, default=5000, help="random pairs")
    analyze.add_argument("--max-rows", type=positive_int, default=5000, help="rows for CKA")
    _add_overwrite_option(analyze)
    analyze.set_defaults(handler=run_analyze)

    report = commands.add_parser(
        "report",
        help="one self-contained HTML page of a run's probes, plots and provenance",
        description="Gather probe.json, analysis.json and the plots in a directory into one "
        "HTML file that opens offline.",
        formatter_class=Formatter,
        epilog="examples:\n  bertlayers report runs/sentiment            # runs/sentiment/"
        "report.html\n  bertlayers report runs/pos -o pos.html\n",
    )
    report.add_argument("directory", help="where probe and/or analyze wrote with -o")
    report.add_argument("-o", "--output", default=None, help="default: DIRECTORY/report.html")
    _add_overwrite_option(report)
    report.set_defaults(handler=run_report)


# ------------------------------------------------------------------ reading and vectors


def _data_format(path: str, input_format: str | None) -> InputFormat:
    return InputFormat.parse(input_format, "input format") if input_format else guess_format(path)


def _labelled_records(path: str, args: argparse.Namespace) -> tuple[list[Record], bool]:
    """The labelled records of a file, and whether they are word tags (CoNLL)."""
    fmt = _data_format(path, args.input_format)
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


def _extract_config(args: argparse.Namespace, words: bool, **overrides: str | None):
    """The probe's extraction config; `overrides` (pooling, long) replace the options given."""
    chosen = {"pooling": args.pooling, "long": args.long}
    chosen.update({k: v for k, v in overrides.items() if v is not None})
    return extract_config(
        layers=args.layers,
        level="word" if words else "sentence",
        pooling=chosen["pooling"],
        word_pooling=args.word_pooling,
        long=chosen["long"],
        max_length=args.max_length,
        batch_tokens=args.batch_tokens,
    )


class _Vectors:
    """Gets vectors for records: from a store, or by extracting them (into a store or memory).

    The model is loaded once, and only when something has to be extracted.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._extractor = None

    @property
    def extractor(self):
        if self._extractor is None:
            self._extractor = make_extractor(self.args)
        return self._extractor

    def _check_store(self, provenance: dict, store: str, **overrides: str | None) -> None:
        """An existing store must hold what the options given (or `overrides`) ask for."""
        args = self.args
        model = provenance.get("model", {})
        if args.model is not None and args.model not in (model.get("id"), model.get("name")):
            raise OptionError(
                f"{store} was extracted with {model.get('name')}, not {args.model}: "
                "remove it or give another --store"
            )
        for option in ("pooling", "word_pooling", "long"):
            wanted = overrides.get(option) or getattr(args, option)
            if wanted is not None and option in provenance and provenance[option] != wanted:
                flag = "--" + option.replace("_", "-")
                raise OptionError(
                    f"{store} was extracted with {flag} {provenance[option]}, not {wanted}: "
                    "remove it or give another --store"
                )

    def get(
        self,
        records: list[Record],
        words: bool,
        store: str | None,
        name: str,
        **overrides: str | None,
    ):
        """Vectors of `records` and where they came from; `overrides` (pooling, long) replace
        the command's options for this one extraction."""
        from ..stores import load

        if store and Path(store).exists():
            result = load(store)
            self._check_store(result.provenance, store, **overrides)
            return result, store
        config = _extract_config(self.args, words, **overrides)
        progress = not self.args.quiet
        if store:
            from ..stores import StoreSink

            Path(store).parent.mkdir(parents=True, exist_ok=True)
            sink = StoreSink(
                store,
                self.extractor.identity(config),
                overwrite=self.args.overwrite,
                inputs=_probe_inputs(self.args),
            )
            self.extractor.run(records, sink, config, progress=progress, total=len(records))
            return load(store), store
        from ..results import make_result
        from ..sinks import MemorySink

        sink = MemorySink()
        provenance = self.extractor.run(
            records, sink, config, progress=progress, total=len(records)
        )
        return make_result(sink.vectors(), sink.index.arrays(), provenance), name


def _probe_data(records, words, result, where, data_name):
    from ..analysis.probing import sentence_data, word_data

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


def _require_analysis(command: str) -> None:
    """probe, predict and analyze need the `analysis` extra: say so in one line."""
    from ..extras import require

    for module in ("sklearn", "matplotlib", "joblib"):
        require(module, "analysis", f"bertlayers {command}")


def _figures(directory: Path, *stems: str) -> list[Target]:
    return [
        Target(directory / f"{stem}.{suffix}", kind, make_parents=True)
        for stem in stems
        for suffix, kind in (("png", Kind.PNG), ("svg", Kind.SVG))
    ]


def _results(directory: str, stem: str, *figures: str) -> list[Target]:
    """What `write_results` and the plots write in `directory`: STEM.json, STEM.csv, figures."""
    out = Path(directory)
    return [
        Target(out / f"{stem}.json", Kind.PROVENANCE, make_parents=True),
        Target(out / f"{stem}.csv", Kind.TEXT, make_parents=True),
        *_figures(out, *figures),
    ]


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
        targets += _results(args.output_dir, "probe", *figures)
    if args.save_model:
        targets.append(Target(Path(args.save_model), Kind.JOBLIB, make_parents=True))
    if args.tensorboard:
        targets += _tensorboard_targets(args.tensorboard, None)
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
    targets = _results(args.output_dir, "probe", "probe") if args.output_dir else []
    inputs = [*_probe_inputs(args), *(Path(p) for p in matching_inputs(args))]
    for store in (args.store, args.corpus_store):
        if store and not Path(store).exists():  # extracted into: an output
            targets += [Target(t.path, t.kind, make_parents=True) for t in store_targets(store)]
        elif store:
            inputs += store_files(store)
    return targets, inputs, args.overwrite


def run_probe(args: argparse.Namespace) -> int:
    _require_analysis("probe")  # before the imports that need it
    if args.task != "classify":
        return run_matching(args, _Vectors, _matching_targets(args))
    for flag in ("pair_column", "corpus", "qrels", "doc_column", "corpus_store", "fit_on"):
        if getattr(args, flag):
            raise OptionError(
                f"--{flag.replace('_', '-')} is for --task similarity or --task retrieval"
            )
    from ..analysis.plots import export_tensorboard, plot_probe, plot_projection
    from ..analysis.probing import (
        Classifier,
        Metric,
        check_labels,
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
    vectors = _Vectors(args)
    result, where = vectors.get(records, words, args.store, "the vectors")
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
    print(report.table())
    return 0


def run_predict(args: argparse.Namespace) -> int:
    _require_analysis("predict")  # before the imports that need it
    from ..analysis.probing import load_probe

    probe = load_probe(args.model_file)
    if args.proba and not hasattr(probe.pipeline.named_steps["classifier"], "predict_proba"):
        raise OptionError("--proba needs a logreg probe: a linear SVM gives no probabilities")
    if args.output:
        check_outputs(
            [Target(Path(args.output), Kind.TEXT)], [args.model_file, args.input], args.overwrite
        )
    saved = probe.extraction
    words = probe.level == "word"
    fmt = _data_format(args.input, args.input_format)
    if not words and fmt is InputFormat.CONLL:
        raise InputError("this probe labels texts; a CoNLL input holds words: give texts")
    records = read_records(
        args.input,
        input_format=fmt,
        text_column=args.text_column,
        id_column=args.id_column,
        word_column=args.word_column,
        quoting=args.quoting,
    )
    first = next(records)  # fail on a bad input before loading the model
    extractor = make_extractor(
        args, model=args.model or saved["model"], revision=saved.get("revision")
    )
    if (
        args.model is None
        and saved.get("fingerprint")
        and (extractor.encoder.fingerprint != saved["fingerprint"])
    ):
        import warnings

        warnings.warn(
            f"the model loaded ({extractor.info.name}) differs from the one the probe was "
            "trained on (its fingerprint changed): predictions may be off",
            stacklevel=1,
        )
    config = extract_config(
        layers=saved["layers"],
        level=saved["level"],
        pooling=saved["pooling"],
        word_pooling=saved["word_pooling"],
        include_special=saved["include_special"],
        long=saved["long"],
        max_length=saved["max_length"],
    )
    # written to OUT.tmp and renamed into place when every text is labelled
    tmp = Path(args.output).with_name(Path(args.output).name + ".tmp") if args.output else None
    out = tmp.open("w", encoding="utf-8") if tmp else sys.stdout
    done = False
    try:
        sink = _LabelSink(probe, out, args.proba)
        extractor.run(itertools.chain([first], records), sink, config, progress=not args.quiet)
        done = True
    finally:
        if tmp is not None:
            out.close()
            if done:
                os.replace(tmp, args.output)
            else:
                tmp.unlink(missing_ok=True)
    return 0


class _LabelSink:
    """A sink that labels each embedded chunk with the probe and writes the lines at once:
    `id<TAB>label[<TAB>probability]` per text, or `word<TAB>tag` per word (CoNLL)."""

    def __init__(self, probe, out, proba: bool) -> None:
        self.probe, self.out, self.proba = probe, out, proba

    def reserve(self, n_rows: int, row_shape: tuple[int, ...], dtype):
        from ..sinks import ArrayRows

        return ArrayRows(n_rows, row_shape, dtype)

    def write(self, chunk) -> None:
        labels = self.probe.predict(chunk.vectors)
        lines = []
        if getattr(chunk, "items", None) is not None:  # words: one tag each, CoNLL
            start = 0
            for length in chunk.lengths.tolist():
                for j in range(start, start + length):
                    lines.append(f"{chunk.items[j]}\t{labels[j]}\n")
                lines.append("\n")
                start += length
        else:
            proba = self.probe.predict_proba(chunk.vectors) if self.proba else None
            for i, record_id in enumerate(chunk.ids):
                tail = f"\t{proba[i].max():.4f}" if proba is not None else ""
                lines.append(f"{record_id}\t{labels[i]}{tail}\n")
        self.out.write("".join(lines))
        self.out.flush()

    def close(self, provenance: dict) -> None:
        pass

    def abort(self, provenance: dict) -> None:
        pass


def run_analyze(args: argparse.Namespace) -> int:
    _require_analysis("analyze")  # before the imports that need it
    from ..analysis.geometry import analyze
    from ..analysis.plots import plot_geometry
    from ..analysis.report import write_results
    from ..provenance import summary
    from ..stores import load, store_files

    if args.output_dir:
        targets = _results(args.output_dir, "analysis", "geometry", "cka")
        check_outputs(targets, store_files(args.store), args.overwrite)
    report = analyze(load(args.store), seed=args.seed, pairs=args.pairs, max_rows=args.max_rows)
    report.provenance = summary(report.provenance)
    if report.level == "sentence":
        print(
            "bertlayers: sentence vectors: self- and intra-sentence similarity need a token "
            "or word store",
            file=sys.stderr,
        )
    if args.output_dir:
        write_results(args.output_dir, "analysis", report.to_dict(), report.to_csv())
        plot_geometry(report, args.output_dir)
        print(
            f"bertlayers: wrote analysis.json, analysis.csv and plots to {args.output_dir}",
            file=sys.stderr,
        )
    print(report.table())  # after the files: a closed stdout (`| head`) then loses nothing
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..analysis.report import build_report

    folder = Path(args.directory)
    if not folder.is_dir():
        raise InputError(f"not a directory: {args.directory}")
    target = Path(args.output) if args.output else folder / "report.html"
    inputs = [p for p in folder.iterdir() if p.is_file()]  # the results and plots it reads
    check_outputs([Target(target, Kind.HTML)], inputs, args.overwrite)
    path = build_report(args.directory, args.output)
    print(f"bertlayers: wrote {path}", file=sys.stderr)
    return 0
