"""Connecting a front end (the CLI) to a Ray cluster, and leaving it again."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from ..errors import BertlayersError, first_line


@contextlib.contextmanager
def connect(address: str | None, quiet: bool = False) -> Iterator[None]:
    """Join the cluster at `address` (`auto`: the one `ray start` runs on this machine;
    `HOST:PORT`), or start a local one when None; disconnect (stopping a local one) after.
    A process already connected (`ray.init` done) keeps its connection.

    A front end's choice, made here and only here: Ray Data's own progress bars and INFO
    logs are turned off (the command draws one bar of texts on stderr), and what Ray prints
    of its workers' output goes to stderr too, so that stdout stays clean.
    """
    import ray
    import ray.data

    if ray.is_initialized():  # a Python session already on a cluster: use it, leave it be
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield from _connected(address, quiet)


def _connected(address: str | None, quiet: bool) -> Iterator[None]:
    import ray
    import ray.data

    try:
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=not quiet,
            configure_logging=True,
        )
    except Exception as err:  # ConnectionError, AuthenticationError, ValueError, ...
        where = f"at {address}" if address else "locally"
        raise BertlayersError(
            f"cannot connect to a Ray cluster {where}: {first_line(err)}"
        ) from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()
