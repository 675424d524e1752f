"""A results file as read: its recorded metadata (command, commit, date, machine, versions)
and what it lacks of what every result must record to be reproduced."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from docgen import ROOT
from results_specs import SPECS, Spec


@dataclass
class Result:
    """A results file as read, with what it lacks."""

    name: str
    spec: Spec
    data: dict | str | None  # None: no such file committed
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def present(self) -> bool:
        return self.data is not None

    @property
    def date(self) -> str | None:
        return recorded_date(self.data) if isinstance(self.data, dict) else None

    def needs_remake(self) -> bool:
        return bool(self.missing or self.stale or not self.present)

    def source(self) -> str:
        """The line under a table: the file, its command and what it lacks."""
        if not self.present:
            return f"No `{self.name}` is committed yet: `{self.spec.remake}` makes it."
        command = recorded_command(self.data)
        text = f"Source: `{self.name}`" + (f", made by `{command}`" if command else "")
        commit, date = recorded_commit(self.data), self.date
        if commit:
            text += f" at commit `{commit[:12]}`"
        code = self.data.get("code") if isinstance(self.data, dict) else None
        if isinstance(code, dict) and code.get("commit"):
            text += f", measuring the code of commit `{code['commit'][:12]}`"
        if date:
            text += f" on {date}"
        machine = machine_words(self.data) if isinstance(self.data, dict) else None
        if machine:
            text += f" ({machine})"
        text += "."
        problems = []
        if self.missing:
            problems.append("it records no " + ", no ".join(self.missing))
        problems += self.stale
        if problems:
            text += (
                f'\n\n!!! warning "To be re-made"\n    `{self.name}`: '
                + "; ".join(problems)
                + f". Re-make it with `{self.spec.remake}`.\n"
            )
        return text + "\n"


def dig(data: object, path: str) -> object:
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def recorded_command(data: dict | str) -> str | None:
    if isinstance(data, str):
        for line in data.splitlines():
            if line.startswith("# command:"):
                return line.split(":", 1)[1].strip()
            if line.startswith("#") and "python bench/" in line:
                return line.lstrip("# ").strip()
        return None
    return data.get("command")


def recorded_commit(data: dict | str) -> str | None:
    if isinstance(data, str):
        match = re.search(r"^# commit: (\S+)", data, re.M)
        return match.group(1) if match else None
    return data.get("commit") or data.get("git_commit") or dig(data, "git.commit")


def recorded_date(data: dict) -> str | None:
    return data.get("date") or dig(data, "provenance.created")


def _machine(data: dict) -> dict:
    """CPU model, cores and torch version, from the shapes the bench scripts write."""
    found: dict = {}
    machine = data.get("machine")
    versions = data.get("versions") or {}
    if isinstance(machine, dict):
        found["cpu"] = machine.get("cpu_model") or machine.get("cpu")
        found["cores"] = machine.get("cores") or machine.get("logical_cores") or machine.get("cpus")
        found["torch"] = versions.get("torch") or machine.get("torch")
    elif isinstance(machine, str):
        parts = [p.strip() for p in machine.split(",")]
        for part in parts[1:]:
            if m := re.fullmatch(r"(\d+) cores", part):
                found["cores"] = int(m.group(1))
            elif m := re.fullmatch(r"torch (\S+)", part):
                found["torch"] = m.group(1)
            elif not re.fullmatch(r"\d+ threads", part):
                found["cpu"] = part
        found["torch"] = found.get("torch") or versions.get("torch")
    return found


def machine_words(data: dict) -> str | None:
    m = _machine(data)
    words = [str(m["cpu"])] if m.get("cpu") else []
    if m.get("cores"):
        words.append(f"{m['cores']} cores")
    if m.get("torch"):
        words.append(f"torch {m['torch']}")
    return ", ".join(words) or None


def _spellings(name: str) -> tuple[str, ...]:
    """A package's name as a results file may key it: `sentence-transformers` or, as a Python
    identifier, `sentence_transformers`."""
    return tuple(dict.fromkeys((name, name.replace("-", "_"), name.replace("_", "-"))))


def missing_metadata(data: dict | str, spec: Spec) -> list[str]:
    """What a file lacks of the metadata every result must record."""
    missing = []
    if not recorded_command(data):
        missing.append("command")
    if not recorded_commit(data):
        missing.append("git commit")
    if isinstance(data, str):
        if not re.search(r"^# date: ", data, re.M):
            missing.append("date")
        if spec.machine and not re.search(r"^# machine: ", data, re.M):
            missing.append("machine")
        return missing
    if not recorded_date(data):
        missing.append("date")
    if spec.machine:
        machine = _machine(data)
        missing += [
            words
            for key, words in (
                ("cpu", "CPU model"),
                ("cores", "core count"),
                ("torch", "torch version"),
            )
            if not machine.get(key)
        ]
    versions = data.get("versions") or {}
    peers = data.get("peers") or {}
    for peer in spec.peers:
        if not any(
            versions.get(name) or dig(peers, f"{name}.version") or isinstance(data.get(name), str)
            for name in _spellings(peer)
        ):
            missing.append(f"{peer} version")
    for peer in spec.peer_flags:
        if not (dig(peers, f"{peer}.flags") or dig(peers, f"{peer}.command")):
            missing.append(f"{peer} flags")
    return missing


def read(name: str) -> Result:
    spec = SPECS[name]
    path = ROOT / name
    if not path.exists():
        return Result(name, spec, None)
    data: dict | str = json.loads(path.read_text()) if name.endswith(".json") else path.read_text()
    result = Result(name, spec, data, missing=missing_metadata(data, spec))
    if isinstance(data, dict):
        gaps = [f for f in spec.expects if dig(data, f) is None]
        if gaps:
            result.stale.append(
                "it lacks " + ", ".join(f"`{g}`" for g in gaps) + ", which the committed script "
                "writes: it was made by an earlier version of the script"
            )
    if spec.before and not recorded_commit(data):
        result.stale.append(spec.before)
    return result


def latest(results: list[Result]) -> Result:
    """The most recent of several files measuring the same thing: by recorded date; files
    with no date rank below dated ones, in the order given."""
    present = [r for r in results if r.present]
    dated = [r for r in present if r.date]
    if dated:
        return max(dated, key=lambda r: r.date or "")
    return present[0]
