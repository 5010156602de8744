# diag-distill. Every target that needs Python creates the virtual environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
START ?= 10001
OUTPUT_DIR ?=
ARGS ?=

OUTPUT_ARG := $(if $(OUTPUT_DIR),--output-dir $(OUTPUT_DIR),)

.PHONY: venv start stop monitor status test lint bench chaos clean help

help:
	@echo "make start START=10001   start the job (bundled sample notes, offline teacher by default)"
	@echo "make monitor             watch every endpoint (make status: one snapshot)"
	@echo "make stop                stop gracefully (same as /tmp/stop_diag_distillation.sh)"
	@echo "make test | lint | bench"

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

start: $(STAMP)
	$(BIN)/diag-distill start $(START) $(OUTPUT_ARG) $(ARGS)

stop: $(STAMP)
	$(BIN)/diag-distill stop $(ARGS)

monitor: $(STAMP)
	$(BIN)/diag-distill monitor $(ARGS)

status: $(STAMP)
	$(BIN)/diag-distill monitor --once $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check distill tests configs
	$(BIN)/mypy distill

bench: $(STAMP)
	$(BIN)/diag-distill bench $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
