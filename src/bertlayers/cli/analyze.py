"""`bertlayers analyze | report`: the geometry of a store's layers, and one HTML page of a
run's results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from ..outputs import Kind, Target, check_outputs
from .options import (
    Formatter,
    add_overwrite_option,
    non_negative_int,
    positive_int,
    require_analysis,
    result_targets,
)


def add_commands(commands) -> None:
    """Register analyze and report on the main parser's subcommands."""
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
    add_overwrite_option(analyze)
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
    report.add_argument("directory", help="where probe, analyze or attention --stats wrote with -o")
    report.add_argument("-o", "--output", default=None, help="default: DIRECTORY/report.html")
    add_overwrite_option(report)
    report.set_defaults(handler=run_report)


def run_analyze(args: argparse.Namespace) -> int:
    require_analysis("analyze")  # before the imports that need it
    from ..analysis.geometry import analyze
    from ..analysis.plots import plot_geometry
    from ..analysis.report import write_results
    from ..provenance import summary
    from ..stores import load, store_files

    if args.output_dir:
        targets = result_targets(args.output_dir, "analysis", "geometry", "cka")
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
    from ..analysis.report import build_report, report_inputs

    folder = Path(args.directory)
    if not folder.is_dir():
        raise InputError(f"not a directory: {args.directory}")
    target = Path(args.output) if args.output else folder / "report.html"
    inputs = report_inputs(folder)  # what it reads; an earlier report is an output
    check_outputs([Target(target, Kind.HTML)], inputs, args.overwrite)
    path = build_report(args.directory, args.output)
    print(f"bertlayers: wrote {path}", file=sys.stderr)
    return 0
