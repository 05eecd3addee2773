# directstream — developer commands. Everything installs what it needs on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_PYTHON_DOWNLOADS := never
VENV := .venv
# uv from PyPI, run as a module of the machine's Python (no PATH or shim assumptions).
UV := python3 -m uv
PYTEST_ARGS ?=

.PHONY: help install demo test test-unit lint fmt dev-up dev-down images bench clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml uv.lock
	$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --python python3
	touch $@

install: $(VENV)/.installed ## create .venv with the project and its dev tools

demo: install ## run a DirectStream locally against a real local Kafka, with sample data
	bash hack/demo.sh

test: install ## all tests; starts a real Kafka and Kubernetes control plane when they are not up
	bash hack/test.sh $(PYTEST_ARGS)

test-unit: install ## only the pure unit tests (no servers)
	$(VENV)/bin/python -m pytest tests/unit -q $(PYTEST_ARGS)

lint: install ## ruff, mypy --strict and the import contracts
	$(VENV)/bin/ruff check operator executor tests bench hack
	$(VENV)/bin/ruff format --check operator executor tests bench hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports pyproject.toml

fmt: install ## format and auto-fix
	$(VENV)/bin/ruff format operator executor tests bench hack
	$(VENV)/bin/ruff check --fix operator executor tests bench hack

dev-up: install ## start Kafka, the Kubernetes control plane and the test node; write .dev/env
	bash hack/dev.sh up

images: install ## build the operator and executor images (cached); load them into the dev node if it runs
	bash hack/cluster.sh images

dev-down: ## stop everything dev-up started
	bash hack/dev.sh down

bench: install ## run the benchmarks (they print ratios; nothing is asserted)
	bash hack/bench.sh

clean: dev-down
	rm -rf $(VENV) .directstream .dev
