"""What the commands share: the parser and help classes, checked number types, the options
that say how records are read, which model loads, what runs it and what may be overwritten,
how an option is spelled in an error, and the files a results command writes; one place builds
the `ExtractConfig`, `ModelOptions` and `Extractor` of every command that runs a model."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from ..io.readers import InputFormat, Quoting, ReaderOptions, guess_format
from ..options import Backend, Runtime
from ..outputs import Kind, Target


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with each option's default, said once: not for options without one (None), not
    for flags (off unless given), not where the help already says its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.nargs == 0 or "default" in text:
            return action.help
        return super()._get_help_string(action)


class UsageError(Exception):
    """A command line argparse refused: one line, exit 2, no usage block."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (`bertlayers: error: ...`) instead of the usage
    block: subcommands' parsers are made with the same class."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "whole number"  # what argparse names in its own errors
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="hub id or local directory (default: $BERTLAYERS_MODEL, else the bundled "
        "all-MiniLM-L6-v2)",
    )
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")


def reader_options(args: argparse.Namespace) -> ReaderOptions:
    """How a command's input is read, from the flags `add_input_options` added (the same for
    a local run and each Ray actor); a column a command does not offer is None."""
    return ReaderOptions(
        input_format=args.input_format,
        text_column=args.text_column,
        pair_column=getattr(args, "pair_column", None),
        id_column=args.id_column,
        words_column=getattr(args, "words_column", None),
        word_column=args.word_column,
        quoting=args.quoting,
    )


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """How records are read from a file: its format, and its text, id and word columns."""
    parser.add_argument(
        "--input-format",
        default=None,
        help="|".join(f.value for f in InputFormat)
        + " (default: from the file suffix; txt for stdin)",
    )
    parser.add_argument(
        "--text-column", default="text", help="column (csv/tsv/jsonl) with the text"
    )
    parser.add_argument(
        "--id-column", default=None, help="column with record ids (default: line number)"
    )
    parser.add_argument(
        "--word-column",
        type=non_negative_int,
        default=0,
        help="conll: the column (0-based) holding the word",
    )
    parser.add_argument(
        "--quoting",
        default="csv",
        help="csv/tsv: " + "|".join(q.value for q in Quoting) + " (csv: RFC 4180 quotes, "
        "strictly; none: quotes are plain characters, one record per line, as in GLUE's TSVs)",
    )


def add_runtime_options(parser: argparse.ArgumentParser, legacy: tuple[str, ...] = ()) -> None:
    """`--runtime` (what runs the forward pass), and the deprecated flags it replaces
    (`backend`, `int8`, `compile`) where a command had them."""
    parser.add_argument(
        "--runtime",
        default=None,
        help="what runs the model: " + "|".join(r.value for r in Runtime) + " (default "
        "torch: PyTorch, every device and dtype, the reference); openvino: OpenVINO on the "
        "CPU in float32, faster on CPUs, every layer within 1e-4 of torch (`pip install "
        "'bertlayers[openvino]'`); int8: int8 matmuls on the CPU, faster than torch but "
        "approximate, checked against float32 by bertlayers verify (lowest cosine per layer "
        "≥ 0.97); compile: torch.compile, slow to start on the first run, then reuses the "
        "cached kernels (~/.cache/bertlayers); see the Speed benchmarks page",
    )
    if "backend" in legacy:
        parser.add_argument(
            "--backend",
            default=None,
            help="deprecated: --runtime " + "|".join(b.value for b in Backend),
        )
    if "int8" in legacy:
        parser.add_argument("--int8", action="store_true", help="deprecated: --runtime int8")
    if "compile" in legacy:
        parser.add_argument("--compile", action="store_true", help="deprecated: --runtime compile")


def runtime_of(args: argparse.Namespace) -> Runtime:
    """The runtime the options ask for; a deprecated flag still works, and says so."""
    from ..backends import resolve_runtime

    flags = {
        "--backend": getattr(args, "backend", None),
        "--int8": getattr(args, "int8", False),
        "--compile": getattr(args, "compile", False),
    }
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # said below, once, as a line
        runtime = resolve_runtime(
            args.runtime, flags["--int8"], flags["--compile"], flags["--backend"]
        )
    used = [flag for flag, value in flags.items() if value]
    if used:
        print(
            f"bertlayers: warning: {', '.join(used)} is deprecated: use --runtime {runtime.value}",
            file=sys.stderr,
        )
    return runtime


def extract_config(**options: object):
    """The `ExtractConfig` of a command: options left at None take the config's defaults,
    which are stated once, there."""
    from ..core.config import ExtractConfig

    return ExtractConfig(**{k: v for k, v in options.items() if v is not None})


def model_options(args: argparse.Namespace, model: str | None = None, revision=None):
    """The `ModelOptions` of a command: its model (or `model`), device, dtype and runtime."""
    from ..core.config import ModelOptions

    return ModelOptions(
        model=model if model is not None else getattr(args, "model", None),
        device=args.device,
        dtype=getattr(args, "dtype", "float32"),
        revision=revision if revision is not None else getattr(args, "revision", None),
        runtime=runtime_of(args),
    )


def make_extractor(args: argparse.Namespace, model: str | None = None, revision=None):
    """The `Extractor` of a command (see `model_options`). The command line keeps compiled
    kernels in ~/.cache/bertlayers unless told otherwise."""
    from ..core.engine import Engine
    from ..core.extract import Extractor

    options = model_options(args, model, revision)
    if options.runtime is Runtime.COMPILE:
        import os

        from ..backends.compiled import compile_cache_dir

        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))
    return Extractor(engine=Engine.from_options(options))


# Allocator tuning is the program's (`bertlayers.cli.entry`), never `main`'s when it is called
# from Python: it acts on the whole process.
ALLOCATOR = {"trim_heap": False}


class Interrupted(Exception):
    """Ctrl-C, with what was kept and how to go on."""


def flag_spelling(name: str, value: str | None) -> str:
    """An option as the command line spells it: `--max-length`, `--long split`, `--resume`."""
    flag = "--" + name.replace("_", "-")
    return flag if value in (None, "True") else f"{flag} {value}"


def add_data_options(parser: argparse.ArgumentParser, labelled: bool = True) -> None:
    """How a probe's data is read: the input options, and where its labels or tags are."""
    add_input_options(parser)
    if labelled:
        parser.add_argument("--label-column", default="label", help="csv/tsv/jsonl: the label")
        parser.add_argument(
            "--tag-column", type=int, default=-1, help="conll: the tag's column (-1 = last)"
        )


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that exist (only files of the kind written, never an input)",
    )


def data_format(path: str, input_format: str | None) -> InputFormat:
    """The format asked for, else the one the path's suffix names."""
    return InputFormat.parse(input_format, "input format") if input_format else guess_format(path)


def require_analysis(command: str) -> None:
    """probe, predict and analyze need the `analysis` extra: say so in one line."""
    from ..extras import require

    for module in ("sklearn", "matplotlib", "joblib"):
        require(module, "analysis", f"bertlayers {command}")


def figure_targets(directory: Path, *stems: str) -> list[Target]:
    """The PNG and SVG of each figure `stem` a command writes in `directory`."""
    return [
        Target(directory / f"{stem}.{suffix}", kind, make_parents=True)
        for stem in stems
        for suffix, kind in (("png", Kind.PNG), ("svg", Kind.SVG))
    ]


def result_targets(directory: str, stem: str, *figures: str) -> list[Target]:
    """What `write_results` and the plots write in `directory`: STEM.json, STEM.csv, figures."""
    out = Path(directory)
    return [
        Target(out / f"{stem}.json", Kind.PROVENANCE, make_parents=True),
        Target(out / f"{stem}.csv", Kind.TEXT, make_parents=True),
        *figure_targets(out, *figures),
    ]
