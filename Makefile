# The two commands of a newcomer: `make run` and `make test`. Both install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: rabbitmq promtool run test demo soak bench lint typecheck schemas check-schemas deploy-check simulator clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

rabbitmq:
	@scripts/ensure-rabbitmq.sh

promtool:
	@scripts/ensure-promtool.sh

## Start RabbitMQ if needed and run the worker (the bundled simulator stands in for HeyGen without HEYGEN_API_KEY).
run: $(STAMP) rabbitmq
	$(VENV)/bin/heygen-worker run

## Run a scripted conversation against a running worker and print the events.
demo: $(STAMP) rabbitmq
	$(VENV)/bin/heygen-worker demo

simulator: $(STAMP)
	$(VENV)/bin/heygen-simulator

## Lint, type-check, contract drift check and the whole test suite (not the soak).
test: $(STAMP) rabbitmq promtool lint typecheck check-schemas deploy-check
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

## Dockerfile (hadolint), compose file (compose loader), Helm chart (real Helm engine + k8s schemas).
deploy-check: $(STAMP)
	scripts/deploy-check.sh

soak: $(STAMP) rabbitmq
	$(PY) -m pytest -q -m slow -o addopts='-ra -p no:cloudcoil'

bench: $(STAMP) rabbitmq
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
