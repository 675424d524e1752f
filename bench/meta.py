"""What every results file records about its run: the command, the git commit, the date, the
machine (CPU model, cores, memory) and the versions of bertlayers and of each peer, so that a
figure in the docs can be traced to the run that made it and reproduced."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = (
    "bertlayers",
    "torch",
    "transformers",
    "tokenizers",
    "sentence-transformers",
    "numpy",
    "openvino",
    "ray",
    "fastapi",
    "uvicorn",
)


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (else the platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_root() -> Path:
    """The working tree whose `bertlayers` runs: this one, or the one `PYTHONPATH` points at
    (how a before/after comparison runs one bench script on two versions of the code)."""
    spec = importlib.util.find_spec("bertlayers")
    if spec is None or spec.origin is None:
        return ROOT
    root = Path(spec.origin).resolve().parents[2]  # <root>/src/bertlayers/__init__.py
    return root if (root / "src" / "bertlayers").is_dir() else ROOT  # else: installed


def git_commit(root: Path = ROOT) -> str | None:
    """The commit of a working tree (with `-dirty` when its code has changes), or None."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
            check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
             ".", ":!bench/results", ":!docs/results"],  # results are not the code measured
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def versions(names: tuple[str, ...] = PEERS) -> dict[str, str | None]:
    """Installed versions of bertlayers and its peers (None where one is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict:
    """CPU model, cores, memory, OS and Python of this machine."""
    memory = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def run_record(argv: list[str] | None = None, **extra: object) -> dict:
    """The record a results file starts with: command, commit, date, machine, versions."""
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(argv[0], ROOT) if argv and os.path.exists(argv[0]) else argv[0]
    code = code_root()
    measured = {} if code == ROOT else {"code": {"path": str(code), "commit": git_commit(code)}}
    return {
        "command": "python " + shlex.join([script, *argv[1:]]),
        "commit": git_commit(),
        **measured,  # the code measured, where it is not this tree's
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        **extra,
    }


def run_with_peak_rss(command: list[str], **popen: object) -> tuple[int, float, float]:
    """Run a command; its exit status, wall seconds and peak RSS in MiB, read as VmHWM from
    /proc while it runs. (wait4's ru_maxrss would do on a small parent only: on Linux a child's
    figure starts from the parent's RSS at the fork, so a bench holding gigabytes of arrays
    would report them as the child's.)"""
    start = time.perf_counter()
    process = subprocess.Popen(command, **popen)
    status_file = Path(f"/proc/{process.pid}/status")
    peak_kib = 0
    while process.poll() is None:
        with contextlib.suppress(OSError):
            for line in status_file.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib = max(peak_kib, int(line.split()[1]))
        time.sleep(0.02)
    return process.returncode, time.perf_counter() - start, peak_kib / 1024
