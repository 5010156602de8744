# diag-distill. Every target that needs Python creates the virtual environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# The build backend warns about editable installs in general; nothing in it applies to this project.
PIP := PYTHONWARNINGS=ignore $(BIN)/python -m pip --disable-pip-version-check
START ?= 10001
OUTPUT_DIR ?=
ARGS ?=

OUTPUT_ARG := $(if $(OUTPUT_DIR),--output-dir $(OUTPUT_DIR),)

.PHONY: venv dev start stop monitor status test lint bench eval chaos clean help

help:
	@echo "make start START=10001   start the job (bundled sample notes, offline teacher by default)"
	@echo "make monitor             watch every endpoint (make status: one snapshot)"
	@echo "make stop                stop gracefully (same as /tmp/stop_diag_distillation.sh)"
	@echo "make test | lint | bench | eval | chaos"
	@echo "every other command: .venv/bin/diag-distill --help (or: source .venv/bin/activate)"

venv: $(STAMP)

dev: $(DEV_STAMP)

# What a job needs: the package and its runtime dependencies only.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing diag-distill into $(VENV)"
	@$(PIP) install --quiet -e .
	@touch $(STAMP)

# What tests, lint and profiling need on top.
$(DEV_STAMP): $(STAMP)
	@$(PIP) install --quiet -e '.[dev]'
	@touch $(DEV_STAMP)

start: $(STAMP)
	$(BIN)/diag-distill start $(START) $(OUTPUT_ARG) $(ARGS)

stop: $(STAMP)
	$(BIN)/diag-distill stop $(ARGS)

monitor: $(STAMP)
	$(BIN)/diag-distill monitor $(ARGS)

status: $(STAMP)
	$(BIN)/diag-distill monitor --once $(ARGS)

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check distill tests configs
	$(BIN)/mypy distill

bench: $(STAMP)
	$(BIN)/diag-distill bench $(ARGS)

# Figures of the offline teacher on ../shared/data (SAMPLE=N notes per set); asserts nothing.
SAMPLE ?=
eval: $(STAMP)
	$(BIN)/diag-distill eval $(if $(SAMPLE),--sample $(SAMPLE),) $(ARGS)

chaos: $(DEV_STAMP)
	$(BIN)/python -m pytest -q tests/system/test_chaos.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
