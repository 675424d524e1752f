"""The `bertlayers` command line: parses arguments into one config and calls the core.

One module per command group (`extract.py`: extract, info, inspect, convert; `probe.py`:
probe, with `matching.py` for its similarity and retrieval tasks and `tradeoff.py` for
`--tradeoff`; `predict.py`: predict; `analyze.py`: analyze, report; `search.py`: index,
search; `attention.py`: attention, lens; `truncate.py`: truncate; `verify.py`: verify), the
options they share in `options.py`; `serve` is the service's own front end. Errors are printed
as one line on stderr with a non-zero exit code; stdout carries only the output a command is
asked for (e.g. `info`), never progress or warnings.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .. import __version__
from ..errors import BertlayersError, Spelled
from . import analyze, attention, extract, predict, probe, search, truncate, verify
from .options import ALLOCATOR, Formatter, Interrupted, Parser, UsageError, flag_spelling


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bertlayers",
        description="Embeddings from every encoder layer of BERT-family models.",
        formatter_class=Formatter,
        epilog=(
            "run 'bertlayers COMMAND --help' for the options and examples of a command; "
            "'bertlayers serve --help' for the HTTP service (the `serve` extra)"
        ),
    )
    parser.add_argument("--version", action="version", version=f"bertlayers {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    extract.add_commands(commands)
    _add_serve(commands)
    probe.add_commands(commands)
    predict.add_commands(commands)
    analyze.add_commands(commands)
    attention.add_commands(commands)
    search.add_commands(commands)
    truncate.add_commands(commands)
    verify.add_commands(commands)
    return parser


def _add_serve(commands) -> None:
    """`serve`, listed with the others (in the help and in an invalid-choice message): the
    `bertlayers` program (`launch.py`) hands it to the service's front end before this parser
    runs; `main` says so should it be called with it."""
    commands.add_parser(
        "serve",
        help="the HTTP service: embeddings over HTTP, batched across requests (the `serve` "
        "extra; 'bertlayers serve --help' for its options)",
        add_help=False,
    )


SERVE_ELSEWHERE = (
    "serve is run by the `bertlayers` program (or `python -m bertlayers serve`), not by "
    "bertlayers.cli.main: see 'bertlayers serve --help'"
)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = message.spelled(flag_spelling) if isinstance(message, Spelled) else message
    print(f"bertlayers: warning: {text}", file=sys.stderr)


def _join_layer_values(argv: list[str]) -> list[str]:
    """`--layers -4:` -> `--layers=-4:`: argparse would take `-4:` for an option name."""
    joined: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--layers":
            value = next(tokens, None)
            joined.append(token if value is None else f"--layers={value}")
        else:
            joined.append(token)
    return joined


MMAP_THRESHOLD = 32 << 20  # bytes: glibc's largest dynamic threshold, fixed


def _steady_malloc() -> None:
    """Keep the largest buffers out of the glibc heap, so peak memory stays flat on long runs.

    glibc raises its mmap threshold each time a large buffer is freed; later batch-sized
    arrays then come from the heap, which fragments and grows with the corpus. A fixed
    threshold (what MALLOC_MMAP_THRESHOLD_ would set) returns buffers above it to the OS.
    At 1 MiB every activation went through mmap and page faults, which made the CLI 1.45x
    slower than the library; at 32 MiB the CLI measured 0.99x the library and peak RSS grew
    7.8% (token level) and 5.5% (sentence level, Parquet) for 10x the text (bench/cli.py,
    bench/memory.py).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _quiet_closed_stdout() -> int:
    """stdout's reader went away (`| head`): end as other tools do, with no message.

    Later writes (and the interpreter's final flush) go to /dev/null instead of failing again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 128 + 13  # SIGPIPE, as a shell reports a pipeline's writer it stopped


def main(argv: list[str] | None = None) -> int:
    """Run a command; errors become one line on stderr and a non-zero exit.

    Process-wide settings (the allocator) are left to `entry`, so that calling `main` from
    Python changes nothing but what the command writes."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        print(f"bertlayers: error: {SERVE_ELSEWHERE}", file=sys.stderr)
        return 1
    try:
        args = parser.parse_args(_join_layer_values(argv))
        args.argv = argv  # what a results file records as its command
    except UsageError as err:
        print(f"bertlayers: error: {err}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():  # warnings as one line each, for this command only
            warnings.showwarning = _show_warning
            return args.handler(args)
    except BertlayersError as err:
        print(f"bertlayers: error: {err.spelled(flag_spelling)}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"bertlayers: interrupted: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("bertlayers: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _quiet_closed_stdout()
    except OSError as err:  # the system refused a file operation: say which file, and why
        where = f"{err.filename}: " if err.filename else ""
        print(f"bertlayers: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except Exception as err:  # an unexpected failure: one line, a traceback only on request
        if os.environ.get("BERTLAYERS_DEBUG"):
            raise
        print(
            f"bertlayers: internal error: {type(err).__name__}: {err} "
            "(set BERTLAYERS_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


def entry() -> None:
    """The `bertlayers` program: the allocator set for a long run, then `main`."""
    _steady_malloc()
    ALLOCATOR["trim_heap"] = True  # freed heap pages go back to the OS after each chunk
    sys.exit(main())


if __name__ == "__main__":
    entry()
