"""The `bertlayers` program: `serve` goes to the service's front end, every other command to
the command line's. The two front ends never import each other; this is where they meet."""

from __future__ import annotations

import sys


def entry() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        from .errors import BertlayersError

        try:
            from .service.cli import main
        except BertlayersError as err:  # the `serve` extra is missing
            print(f"bertlayers serve: error: {err}", file=sys.stderr)
            sys.exit(1)
        sys.exit(main(argv[1:]))
    from .cli import entry as command_line

    command_line()


if __name__ == "__main__":
    entry()
