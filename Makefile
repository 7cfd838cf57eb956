# Two set-up commands work on a bare machine: `make demo` and `make test`.
# Each creates the virtual environment it needs (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-all lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/arw-sv demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu" -q

lint: $(STAMP)
	$(BIN)/ruff check arw_sv eval bench tests recipes
	$(BIN)/ruff format --check arw_sv eval bench tests recipes

format: $(STAMP)
	$(BIN)/ruff format arw_sv eval bench tests

bench: $(STAMP)
	$(BIN)/python -m bench.speed.metrics

clean:
	rm -rf $(VENV) runs
