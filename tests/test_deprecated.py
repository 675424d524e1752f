"""The deprecated spellings still work, and each one says so where it is used: the flags
`--backend`, `--int8` and `--compile` (one warning line naming `--runtime`), the keywords
`backend=`, `int8=` and `torch_compile=`, and the modules `bertlayers.extract`,
`bertlayers.readers` and `bertlayers.probing` (a `DeprecationWarning` at the caller's line).

Everywhere else the tests use `--runtime` and `runtime=`: pyproject.toml turns these warnings
into errors outside `pytest.warns`."""

from __future__ import annotations

import inspect
import json
import sys

import numpy as np
import pytest

from bertlayers import Extractor, Runtime
from bertlayers.errors import OptionError
from conftest import Reference
from test_cli import assert_one_line_error, run_cli

TEXTS = ["The ferry was late again.", "A warm, funny film."]
PROBING = "bertlayers.analysis.probing"


@pytest.fixture(scope="module")
def tiny(tiny_model_dirs) -> str:
    return str(tiny_model_dirs["bert"])


@pytest.mark.parametrize(
    ("flags", "runtime"),
    [(["--backend", "openvino"], "openvino"), (["--int8"], "int8"), (["--compile"], "compile")],
    ids=["backend", "int8", "compile"],
)
def test_a_deprecated_flag_still_works_and_says_so_in_one_line(flags, runtime, tiny, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "old.npy"
    cache = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    result = run_cli(
        "extract", str(source), "-o", str(out), "--model", tiny, *flags, "-q", env=cache
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"bertlayers: warning: {flags[0]} is deprecated: use --runtime {runtime}"
    ]
    provenance = json.loads(out.with_suffix(".json").read_text())
    got = np.load(out)
    if runtime == "int8":  # approximate by design: the same as the library's int8 runtime
        assert provenance["compute_dtype"] == "int8"
        expected = Extractor(tiny, device="cpu", runtime="int8").embed(TEXTS, layers="all")
        np.testing.assert_allclose(got, expected, atol=1e-6)
    else:  # float32: the reference
        assert provenance.get("backend", "").startswith("openvino") or provenance["compiled"]
        reference = Reference(tiny)
        for i, text in enumerate(TEXTS):
            assert np.abs(got[i] - reference.pooled(text, "mean")).max() <= 1e-4


@pytest.mark.parametrize(
    ("keyword", "runtime"),
    [
        ({"backend": "openvino"}, Runtime.OPENVINO),
        ({"int8": True}, Runtime.INT8),
        ({"torch_compile": True}, Runtime.COMPILE),
    ],
    ids=["backend", "int8", "torch_compile"],
)
def test_a_deprecated_keyword_still_works_and_warns_at_the_callers_line(keyword, runtime, tiny):
    line = inspect.currentframe().f_lineno + 2
    with pytest.warns(DeprecationWarning, match=f"use runtime='{runtime.value}'") as caught:
        extractor = Extractor(tiny, device="cpu", **keyword)
    ours = [w for w in caught if "are deprecated: use runtime=" in str(w.message)]
    assert [(w.filename, w.lineno) for w in ours] == [(__file__, line)]
    assert extractor.engine.runtime is runtime
    if runtime is not Runtime.COMPILE:  # compiling is test_compile's (and the flag's) work
        expected = Extractor(tiny, device="cpu", runtime=runtime.value).embed(TEXTS)
        np.testing.assert_allclose(extractor.embed(TEXTS), expected, atol=1e-6)


def test_deprecated_spellings_that_conflict_are_refused(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("a text\n", encoding="utf-8")
    both = run_cli("extract", str(source), "-o", str(tmp_path / "x.npy"), "--int8", "--compile")
    assert_one_line_error(both, "int8 and torch.compile cannot be combined")
    refused = pytest.raises(OptionError, match=r"int8 and torch\.compile cannot be combined")
    with refused, pytest.warns(DeprecationWarning):
        Extractor(device="cpu", int8=True, torch_compile=True)
    refused = pytest.raises(OptionError, match="backend 'openvino' cannot be combined with int8")
    with refused, pytest.warns(DeprecationWarning):
        Extractor(device="cpu", backend="openvino", int8=True)


def _import_extract():
    import bertlayers.extract  # noqa: F401


def _import_readers():
    import bertlayers.readers  # noqa: F401


def _import_probing():
    import bertlayers.probing  # noqa: F401


@pytest.mark.parametrize(
    ("importer", "message", "name", "home"),
    [
        (
            _import_extract,
            "use `from bertlayers import Extractor, ExtractConfig`",
            "Extractor",
            "bertlayers.core.extract",
        ),
        (_import_readers, "use bertlayers.io.readers", "read_records", "bertlayers.io.readers"),
        (
            _import_probing,
            "use bertlayers.analysis.probing",
            "load_probe",
            "bertlayers.analysis.probing",
        ),
    ],
)
def test_a_deprecated_module_warns_at_the_importing_line_and_still_serves(
    importer, message, name, home
):
    module = f"bertlayers.{importer.__name__.removeprefix('_import_')}"
    sys.modules.pop(module, None)  # imported afresh: its warning is raised at import
    with pytest.warns(DeprecationWarning, match=f"{module} is deprecated: {message}") as caught:
        importer()
    ours = [w for w in caught if f"{module} is deprecated" in str(w.message)]
    assert [(w.filename, w.lineno) for w in ours] == [
        (__file__, importer.__code__.co_firstlineno + 1)
    ]
    assert getattr(sys.modules[module], name) is getattr(sys.modules[home], name)
