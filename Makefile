# Foldwise: `make demo` sets everything up and runs the main job; `make test` runs the tests.
VENV ?= .venv
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: help setup demo demo-next test lint bench
help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create .venv and install Foldwise with its dev tools

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --editable '.[dev]'
	touch $@

demo: setup  ## deliver the demo data (first drop) and run the retraining flow on it
	$(BIN)/foldwise demo --config configs/demo.toml
	$(BIN)/foldwise run --config configs/demo.toml

demo-next: setup  ## deliver the next demo drop
	$(BIN)/foldwise demo --config configs/demo.toml --next

lint: setup  ## ruff
	$(BIN)/ruff check .

test: setup lint  ## run the test suite (SQLite and the PostgreSQL server on 127.0.0.1:5432)
	$(BIN)/pytest

bench: setup  ## run the benchmarks
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_dashboard.py
	$(BIN)/python benchmarks/bench_warm_start.py
