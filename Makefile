# housing-mlops: `make demo` runs the whole pipeline locally, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# The real dataset, when this checkout sits beside the shared data (never copied into the repo).
HOUSING_CSV ?= $(wildcard $(CURDIR)/../shared/data/housing.csv)
export HOUSING_CSV

.PHONY: help venv lock audit demo down test test-py lint bench

help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/housing-mlops: requirements.lock hooks/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e hooks
	touch $@

venv: $(BIN)/housing-mlops ## create .venv from the lock file

# The dev venv's lock (every direct dependency, combined), then every image's own lock, with hashes, constrained by
# it (images/lock.sh; docs/images.md). `make audit` checks them all against published advisories.
lock: ## recompile requirements.lock and every image's hashed lock (images/*/requirements.lock)
	test -x $(BIN)/uv || { $(PY) -m venv $(VENV) && $(BIN)/python -m pip install -q uv==$(UV_VERSION); }
	$(BIN)/uv pip compile -q requirements.in --python-version 3.11 -o requirements.lock
	UV=$(BIN)/uv images/lock.sh

# Every lock's pins against published advisories (PyPI's per-release data; AUDIT_ARGS='--source osv:DIR' for OSV
# records on disk), kept and explained in ci/audit-accepted.toml, recorded in ci/audit.json, which the tests check
# offline against the locks (tests/images/test_audit.py). docs/security.md#dependencies-and-advisories.
AUDIT_ARGS ?=

audit: venv ## check every lock against published advisories → ci/audit.json
	$(BIN)/python ci/audit.py --record ci/audit.json $(AUDIT_ARGS)

demo: venv ## run the whole pipeline locally, leave the stack running
	$(BIN)/python -m housing_mlops.demo

down: venv ## stop the local stack
	$(BIN)/housing-mlops local down

# mk/*.mk add what their tests need (e.g. `TEST_DEPS += tools`).
TEST_DEPS := venv

test: ## every test (pytest over tests/, then lint)
	$(MAKE) $(TEST_DEPS)
	$(BIN)/pytest tests
	$(MAKE) lint

test-py: venv ## only the Python pipeline tests
	$(BIN)/pytest tests/python

LINT_DIRS = $(wildcard hooks tests bench ci images/common)

lint: venv
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)

# Serving latency/throughput (ours vs the previous MLServer runtime, KServe's server, the original recipe and the
# in-process floor; REST and gRPC), hostile requests, image size and start-up, time to first prediction and model
# quality, side by side in one run; writes bench/results/{latest.json,report.md,bench.png}.
BENCH_ARGS ?=

bench: venv ## benchmarks → bench/results/ (report.md, latest.json, bench.png); ~5 min
	$(BIN)/python bench/run.py $(BENCH_ARGS)

-include mk/*.mk
