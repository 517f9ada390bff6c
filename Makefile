# Both targets create or reuse .venv, so a fresh clone needs nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
# Extras the tests use when present; CI adds tune,ray so their tests run too.
EXTRAS ?= test
BIN := $(VENV)/bin

.PHONY: train test lint bench portability web

$(BIN)/dnnspec: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

train: $(BIN)/dnnspec
	$(BIN)/dnnspec train specs/digits_mlp.dnn --out runs/digits_mlp --overwrite
	cp runs/digits_mlp/model.onnx model.onnx

test: $(BIN)/dnnspec
	$(BIN)/python -m pytest -q

lint: $(BIN)/dnnspec
	$(BIN)/ruff check dnnspec tests tools
	$(BIN)/ruff format --check dnnspec tests tools
	$(BIN)/mypy
	$(BIN)/dnnspec fmt --check specs

bench: $(BIN)/dnnspec
	$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python tools/bench.py

# every example spec's model and 1 and 50 chained train steps in each installed runtime
portability: $(BIN)/dnnspec
	$(BIN)/python -c 'import openvino, tract' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[portability]'
	$(BIN)/python tools/portability.py

# onnxruntime-web for `dnnspec export --web`, as pinned by web/package-lock.json
web: web/node_modules/.package-lock.json
web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund
