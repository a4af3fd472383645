# Foldwise: `make demo` sets everything up and runs the main job; `make test` runs the tests.
VENV ?= .venv
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: help setup demo demo-next test test-quick lint bench browser
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

browser:  ## Debian's headless chromium + chromedriver for the browser tests (installed when missing)
	@command -v chromedriver >/dev/null || { command -v apt-get >/dev/null && \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
		echo "no chromium could be installed: the browser tests will be skipped"

test: setup lint browser  ## run the test suite (SQLite and the PostgreSQL server on 127.0.0.1:5432)
	$(BIN)/pytest -n 2 --dist loadfile

.PHONY: docs
docs: setup  ## write the configuration reference from the config model, build the docs into site/ (strict)
	$(BIN)/python -m foldwise.config_reference docs/configuration.md
	$(BIN)/mkdocs build --strict

test-quick: setup  ## the tests not marked slow, for the edit loop (make test runs them all)
	$(BIN)/pytest -n 2 --dist loadfile -m "not slow"

bench: setup  ## run the benchmarks
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_dashboard.py
	$(BIN)/python benchmarks/bench_warm_start.py

.PHONY: docker-base docker-constraints docker-smoke
docker-base:  ## build the local Debian bookworm base image (debootstrap; needs root)
	docker/build-base.sh

docker-constraints: setup  ## write docker/constraints.txt (the image's versions) from the tested .venv
	$(BIN)/python docker/constraints.py

docker-smoke: setup  ## build the images, run the compose stack end to end (a demo run), tear it down
	docker/smoke.sh
