# mbyn — two commands: `make run` and `make test`. Each installs what it needs first (idempotent).
# `make help` lists every target.

SHELL := /bin/bash
# Go is often installed outside the default PATH (the official tarball goes to /usr/local/go).
export PATH := $(PATH):/usr/local/go/bin
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK_SHA := $(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
PY_STAMP := $(VENV)/.installed-$(LOCK_SHA)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help deps system-deps python-deps build run stop test test-browser test-unit fuzz lint secrets-scan bench bench-report status clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

system-deps: ## install missing Debian packages (JDK, Maven, PostgreSQL, kcat, Chromium)
	@bash scripts/install-system-deps.sh

$(PY_STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || { echo "==> creating virtual environment $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> installing pinned Python packages from requirements.lock (about a minute the first time)"
	@$(BIN)/pip install --disable-pip-version-check -r requirements.lock 2>&1 \
		| grep --line-buffered -E "^(Collecting|Installing|Successfully|ERROR)"; test $${PIPESTATUS[0]} -eq 0
	@$(BIN)/pip install --disable-pip-version-check -q --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

python-deps: $(PY_STAMP) ## create .venv and install requirements.lock + mbyn (editable)

build: python-deps ## resolve the Kafka jars and build the Java and Go producers
	@$(BIN)/mbyn build

deps: system-deps python-deps build ## everything `make run` and `make test` need

run: deps ## start the whole pipeline on embedded defaults (Ctrl-C stops everything)
	@$(BIN)/mbyn run $(RUN_ARGS)

stop: ## stop a pipeline left running in the background
	@$(BIN)/mbyn down

status: ## reconciliation: offsets, lag, warehouse rows, verdict
	@$(BIN)/mbyn status

test: deps ## the whole suite: unit, integration (real Kafka, Postgres, Airflow) and end-to-end
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

test-browser: deps ## only the pipeline view's tests on a real Airflow: roles and headless Chromium (in `make test` too)
	@$(BIN)/python -m pytest -m browser tests/e2e/test_pipeline_view_browser.py $(PYTEST_ARGS)

test-unit: python-deps ## only the fast unit tests
	@$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

FUZZ_SECONDS ?= 60
fuzz: python-deps ## fuzz the record codec with atheris for FUZZ_SECONDS (default 60); not part of `make test`
	@$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/pip install --disable-pip-version-check -q atheris==3.0.0
	@mkdir -p var/fuzz/corpus var/fuzz/crashes
	@$(BIN)/python fuzz/fuzz_codec.py -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 \
		-artifact_prefix=var/fuzz/crashes/ var/fuzz/corpus

lint: python-deps ## ruff + mypy + import-linter (the layering in pyproject.toml)
	@$(BIN)/ruff check include dags plugins tests
	@$(BIN)/mypy
	@$(BIN)/lint-imports --config pyproject.toml

secrets-scan: python-deps ## look for committed secrets in every tracked file (detect-secrets; also in `make test`)
	@$(BIN)/python scripts/secrets_scan.py

bench: deps ## benchmarks against Kafka's own perf tools (about 30 min) → bench/results/results.json, BENCHMARKS.md
	@$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-report: python-deps ## regenerate BENCHMARKS.md and the plots from the committed bench/results/results.json
	@$(BIN)/python bench/report.py bench/results/results.json

clean: ## stop everything and delete var/ (broker data, warehouse, reports)
	-@$(BIN)/mbyn down 2>/dev/null || true
	rm -rf var
