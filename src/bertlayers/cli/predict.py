"""`bertlayers predict`: label new text with a probe saved by `probe --save-model`, embedding
it exactly as the probe's training text was."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

from ..errors import InputError, OptionError
from ..io.readers import InputFormat, read_records
from ..outputs import Kind, Target, check_outputs, make_parents
from .options import (
    Formatter,
    add_data_options,
    add_overwrite_option,
    add_runtime_options,
    data_format,
    extract_config,
    make_extractor,
    require_analysis,
)


def add_commands(commands) -> None:
    """Register predict on the main parser's subcommands."""
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
    add_data_options(predict, labelled=False)
    predict.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (or cuda:N)")
    add_runtime_options(predict, legacy=("backend",))
    predict.add_argument("--model", default=None, help="override the model the probe names")
    add_overwrite_option(predict)
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    require_analysis("predict")  # before the imports that need it
    from ..analysis.predict import LabelSink
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
    fmt = data_format(args.input, args.input_format)
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
    if tmp:
        make_parents(tmp)
    out = tmp.open("w", encoding="utf-8") if tmp else sys.stdout
    done = False
    try:
        sink = LabelSink(probe, out, args.proba)
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
