"""The package's layout is its data flow, and its import rules hold: checked on the source.

- `core` and `backends` never import `stores`, `analysis` or a front end (not even lazily);
- `analysis` never imports `core`, `backends` or torch, directly or through what it imports;
- front ends (`cli`, `service`, `distributed`) never import each other, but for the seams
  named in `SEAMS`: `--engine ray` hands a command to the Ray front end, and the Ray Serve
  deployment serves the service's app (`create_app`); the client (`bertlayers.Client`,
  which the CLI uses for `--server`) imports none of them;
- no import cycle anywhere, lazy imports included, and no module imports another module's
  `_private` names;
- the client (`Client`, `RemoteEngine`) in use loads no torch;
- importing the package, the analysis, the stores, and `bertlayers --help` load no torch;
- the library changes no process-wide state: logging, environment, RNGs, warnings, allocator.
"""

from __future__ import annotations

import ast
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "bertlayers"
FRONT_ENDS = ("bertlayers.cli", "bertlayers.service", "bertlayers.distributed")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(every module imported anywhere in the file, those imported at module level)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    everywhere, top = set(), set()
    top_nodes = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        found = []
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                root = ".".join([*base, node.module] if node.module else base)
            else:
                root = node.module or ""
            found = [root] + [f"{root}.{alias.name}" for alias in node.names]
        else:
            continue
        everywhere.update(found)
        if id(node) in top_nodes:
            top.update(found)
    return everywhere, top


MODULES = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(sources: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module} imports {target}"
        for module, (everywhere, _) in MODULES.items()
        if _within(module, sources)
        for target in sorted(everywhere)
        if any(_within(target, f) for f in forbidden)
    ]


@pytest.mark.parametrize("layer", ["bertlayers.core", "bertlayers.backends"])
def test_core_and_backends_never_import_stores_analysis_or_a_front_end(layer):
    forbidden = ("bertlayers.stores", "bertlayers.analysis", *FRONT_ENDS)
    assert _violations(layer, forbidden) == []


def _closure(module: str) -> set[str]:
    """Every module loaded by importing `module` (module-level imports, packages included)."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        parts = current.split(".")
        parents = [".".join(parts[:i]) for i in range(1, len(parts))]  # packages run first
        todo += [p for p in parents if p in MODULES]
        if current in MODULES:
            todo += [t for t in MODULES[current][1] if t in MODULES or "." not in t]
            todo += [t.split(".")[0] for t in MODULES[current][1] if t not in MODULES]
    return seen


def test_analysis_never_imports_model_code():
    assert _violations("bertlayers.analysis", ("bertlayers.core", "bertlayers.backends")) == []
    assert _violations("bertlayers.analysis", ("torch",)) == []
    for module in MODULES:
        if _within(module, "bertlayers.analysis"):
            loaded = _closure(module)
            bad = sorted(m for m in loaded if m == "torch" or _within(m, "bertlayers.core"))
            assert not bad, f"importing {module} loads {bad}"


# (importer, imported): every import across front ends, each a named seam
SEAMS = {
    # `bertlayers extract --engine ray`: the CLI parses, the Ray runner runs
    ("bertlayers.cli.extract", "bertlayers.distributed"),
    ("bertlayers.cli.extract", "bertlayers.distributed.extract_to_store"),
    ("bertlayers.cli.extract", "bertlayers.distributed.cluster"),
    ("bertlayers.cli.extract", "bertlayers.distributed.cluster.connect"),
    ("bertlayers.cli.extract", "bertlayers.distributed.runner"),
    ("bertlayers.cli.extract", "bertlayers.distributed.runner.staging_dir"),
    # `bertlayers serve --engine ray`: the command starts the Ray Serve deployment
    ("bertlayers.service.cli", "bertlayers.distributed.cluster"),
    ("bertlayers.service.cli", "bertlayers.distributed.cluster.connect"),
    ("bertlayers.service.cli", "bertlayers.distributed.serve"),
    ("bertlayers.service.cli", "bertlayers.distributed.serve.serve_until_signal"),
    ("bertlayers.service.cli", "bertlayers.distributed.serve.start"),
    # the deployment's replicas serve the service's own app
    ("bertlayers.distributed.serve", "bertlayers.service.app"),
    ("bertlayers.distributed.serve", "bertlayers.service.app.create_app"),
    ("bertlayers.distributed.serve", "bertlayers.service.settings"),
    ("bertlayers.distributed.serve", "bertlayers.service.settings.ServeSettings"),
}


def test_front_ends_never_import_each_other():
    allowed = {f"{a} imports {b}" for a, b in SEAMS}
    used = set()
    for front in FRONT_ENDS:
        others = tuple(f for f in FRONT_ENDS if f != front)
        found = set(_violations(front, others))
        assert found - allowed == set()
        used |= found
    assert used == allowed  # a seam no longer used is taken off the list


@pytest.mark.parametrize("where", ["module level", "anywhere"])
def test_no_import_cycle(where):
    """No cycle among module-level imports, nor among all imports (lazy ones in functions
    included): the engine and its routes never reach back to each other."""
    pick = 1 if where == "module level" else 0
    graph = {m: {t for t in found[pick] if t in MODULES and t != m} for m, found in MODULES.items()}

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            if not all(_within(m, "bertlayers") and m.count(".") == 0 for m in cycle):
                raise AssertionError(" -> ".join(cycle))
            return
        for target in graph[module]:
            if target.startswith(module + "."):  # a package importing its own modules
                continue
            visit(target, [*path, module])

    for module in graph:
        visit(module, [])


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_")]
                private = [n for n in private if not n.startswith("__")]
                if private:
                    found.append(f"{_module_name(path)} imports {private} from {node.module}")
    assert found == []


def test_the_client_imports_no_front_end():
    """The CLI's `--server` uses the client: it must not pull in the server's code."""
    assert _violations("bertlayers.client", FRONT_ENDS) == []


def test_the_layout_reads_as_the_data_flow():
    for package in ("core", "backends", "io", "stores", "analysis", "cli", "service"):
        init = PACKAGE / package / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()[0]) > 20, f"{package}/__init__.py says its role"
    flat = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert flat == sorted(
        [
            "__init__",
            "__main__",
            "chunks",
            "client",  # bertlayers.Client: a server from Python (no server code)
            "errors",
            "extract",  # deprecated alias of core.extract
            "extras",
            "info",  # ModelInfo: what is known of a model, without torch (client, provenance)
            "launch",  # the `bertlayers` program: `serve` to the service, the rest to the cli
            "layers",
            "maps",  # AttentionMaps and word merging: the attention route's and analysis' type
            "memory",  # malloc_trim, for front ends that run long
            "options",
            "outputs",
            "probing",  # deprecated alias of analysis.probing (old saved probes name it)
            "provenance",
            "readers",  # deprecated alias of io.readers
            "results",
            "search",  # bertlayers.Index: FAISS over one layer of a store (model loaded lazily)
            "sinks",
            "vectors",  # VectorSource: a probe's vectors from a store, or extracted
        ]
    )


# Start-up (#30) is imports: transformers' costs about half a second, its model code seconds.
# What a model load and the fast path import at module level never reaches transformers; the
# native port, the model cache and its tokenizer never import it at all (not even lazily);
# model info from files needs no torch.
START_UP = ("bertlayers.cli", "bertlayers.core.engine", "bertlayers.core.encoder")
NEVER_TRANSFORMERS = (
    "bertlayers.backends.native",
    "bertlayers.core.modelcache",
    "bertlayers.core.tokenizer",
    "bertlayers.info",
)


def test_the_start_up_path_imports_transformers_only_when_it_needs_it():
    for module in START_UP:
        loaded = _closure(module)
        assert not [m for m in loaded if _within(m, "transformers")], module
    for module in NEVER_TRANSFORMERS:
        assert _violations(module, ("transformers",)) == []
    assert not [m for m in _closure("bertlayers.info") if _within(m, "torch")]


def test_no_torch_for_the_analysis_the_stores_or_the_help():
    code = (
        "import sys\n"
        "import bertlayers\n"
        "from bertlayers import load, SentenceEmbeddings, resolve_layers\n"
        "import bertlayers.stores, bertlayers.analysis.geometry, bertlayers.analysis.metrics\n"
        "import bertlayers.analysis.probing, bertlayers.analysis.plots\n"
        "import bertlayers.analysis.report, bertlayers.analysis.matching, bertlayers.search\n"
        "from bertlayers.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    main(['extract', '--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    main(['search', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stdout + out.stderr
    from bertlayers import Extractor  # and the lazy names still resolve

    assert Extractor.__module__ == "bertlayers.core.extract"


def _process_state() -> dict:
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    return {
        "environ": dict(os.environ),
        "hf_verbosity": hf_logging.get_verbosity(),
        "hf_bars": hf_logging.is_progress_bar_enabled(),
        "loggers": {
            name: logging.getLogger(name).level for name in ("transformers", "torch", "", "py")
        },
        "torch_rng": torch.get_rng_state().clone(),
        "numpy_rng": np.random.get_state()[1].copy(),
        "random": random.getstate(),
        "showwarning": warnings.showwarning,
        "threads": torch.get_num_threads(),
    }


def test_the_library_leaves_process_state_as_it_was(tmp_path, monkeypatch, capsys):
    """Loading a model, embedding, writing a store, probing and the CLI's `main` in-process:
    afterwards the environment, logging levels, RNG states, `warnings.showwarning` and the
    thread count are as before, and no allocator call (mallopt, malloc_trim) was made."""
    import ctypes

    from bertlayers import Extractor
    from bertlayers.analysis.probing import Classifier, _learn_mix
    from bertlayers.cli import main
    from bertlayers.core.config import ExtractConfig
    from bertlayers.io.readers import records_from_texts
    from bertlayers.stores import StoreSink

    calls: list[str] = []
    real = ctypes.CDLL

    class Recording:
        def __init__(self, name, *args, **kwargs):
            self._lib = real(name, *args, **kwargs)

        def __getattr__(self, attribute):
            calls.append(attribute)
            return getattr(self._lib, attribute)

    monkeypatch.setattr(ctypes, "CDLL", Recording)
    import torch._dynamo  # torch sets TORCHINDUCTOR_CACHE_DIR itself when this loads

    before = _process_state()
    extractor = Extractor(device="cpu")
    extractor.embed(["one text", "two texts"], layers="-1")
    config = ExtractConfig(layers="0", chunk_size=1)
    sink = StoreSink(tmp_path / "s.npy", extractor.identity(config))
    extractor.run(sink.skip_done(records_from_texts(["a", "b", "c"])), sink, config)
    Classifier.parse("logreg", "classifier")
    rng = np.random.default_rng(0)
    _learn_mix(rng.normal(size=(20, 3, 4)).astype(np.float32), np.array(["a", "b"] * 10), 0)
    source = tmp_path / "t.txt"
    source.write_text("hello\nworld\n", encoding="utf-8")
    assert main(["extract", str(source), "-o", str(tmp_path / "c.npy"), "-q"]) == 0
    capsys.readouterr()
    after = _process_state()
    assert not calls, f"allocator calls: {calls}"
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
        elif isinstance(value, np.ndarray):
            assert np.array_equal(value, after[key]), key
        else:
            assert value == after[key], key


def test_a_missing_extra_is_one_line_naming_the_install(monkeypatch, tmp_path, capsys):
    """The base install extracts to .npy/.npz; each other format and the analysis commands
    name the extra to install when its package is absent."""
    from bertlayers.cli import main
    from bertlayers.extras import MissingExtra
    from bertlayers.stores import store_format

    for module, suffix, extra in (("h5py", ".h5", "hdf5"), ("pyarrow", ".parquet", "parquet")):
        monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
        with pytest.raises(MissingExtra, match=rf"pip install 'bertlayers\[{extra}\]'"):
            store_format(tmp_path / f"x{suffix}")
    assert store_format(tmp_path / "x.npy").value == "npy"
    monkeypatch.setitem(sys.modules, "sklearn", None)
    data = tmp_path / "d.tsv"
    data.write_text("label\ttext\na\tone\nb\ttwo\n", encoding="utf-8")
    assert main(["probe", str(data)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "bertlayers: error: bertlayers probe needs the scikit-learn package: "
        "pip install 'bertlayers[analysis]'"
    ]
