"""Giving freed memory back to the operating system (glibc), for long-running front ends."""

from __future__ import annotations


def trim_heap() -> None:
    """Return freed heap pages to the OS (`malloc_trim(0)`), so that fragmentation left by
    one batch's buffers does not add up over a long run. Nothing happens off glibc.

    It acts on the whole process: the stores call it only when a front end asks
    (`StoreSink(trim_heap=True)`), the service between rounds when it is idle."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
