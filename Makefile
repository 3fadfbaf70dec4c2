# Two entry points; both set up everything they need on a fresh machine first.
#   make run   - the main job on the embedded default (Fashion-MNIST backbone)
#   make test  - the test suite
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test setup setup-tests lint bench

setup:
	@bash scripts/setup.sh

setup-tests:
	@EXITSEARCH_SETUP_TESTS=1 bash scripts/setup.sh

run: setup
	$(BIN)/exitsearch profile

test: setup-tests
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check exitsearch cli tests benchmarks
