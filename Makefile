# The two commands of a newcomer: `make run` and `make test`. Both install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The RabbitMQ 4 node scripts/rabbitmq4.sh runs, unless AMQP_URL names another broker.
R4_URL := amqp://guest:guest@127.0.0.1:5682/

.PHONY: rabbitmq promtool run test pytest demo soak bench lint typecheck schemas check-schemas docs docs-check gen-docs deploy-check simulator clean

$(STAMP): pyproject.toml contracts/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./contracts -e '.[dev,bench]'
	touch $(STAMP)

## Build (once per machine) and start the RabbitMQ 4 node: AMQP 5682, management 15682.
rabbitmq:
	@scripts/rabbitmq4.sh start

promtool:
	@scripts/ensure-promtool.sh

## Start RabbitMQ if needed and run the worker (the bundled simulator stands in for HeyGen without HEYGEN_API_KEY).
run: $(STAMP) rabbitmq
	AMQP_URL=$${AMQP_URL:-$(R4_URL)} $(VENV)/bin/heygen-worker run

## Run a scripted conversation against a running worker and print the events.
demo: $(STAMP) rabbitmq
	AMQP_URL=$${AMQP_URL:-$(R4_URL)} $(VENV)/bin/heygen-worker demo

simulator: $(STAMP)
	$(VENV)/bin/heygen-simulator

## Lint, type-check, contract drift check and the whole test suite (not the soak), against a
## RabbitMQ 4 node with 4.3's defaults; a node this command started is stopped again.
test: $(STAMP) promtool lint typecheck check-schemas docs-check
	scripts/rabbitmq4.sh with $(MAKE) --no-print-directory deploy-check pytest

pytest: $(STAMP)
	$(PY) -m pytest -q --ignore=tests/deploy

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

schemas: $(STAMP)
	$(PY) -m contracts.schema write

check-schemas: $(STAMP)
	$(PY) -m contracts.schema check

## Serve the documentation site (docs/, mkdocs.yml) with live reload on http://127.0.0.1:8000.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

## Regenerate the docs' tables from the code (settings, metrics, CLI, contracts, runbooks, bench).
gen-docs: $(STAMP)
	$(PY) -m docsgen write

## The docs' generated parts match the code, and the site builds with no broken link.
docs-check: $(STAMP)
	$(PY) -m docsgen check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/site

## Dockerfile (hadolint), compose file (compose loader), Helm chart (real Helm engine + k8s schemas).
deploy-check: $(STAMP)
	scripts/deploy-check.sh

soak: $(STAMP)
	scripts/rabbitmq4.sh with $(PY) -m pytest -q -m slow -o addopts='-ra -p no:cloudcoil'

bench: $(STAMP)
	scripts/rabbitmq4.sh with $(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
