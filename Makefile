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

# The reference run (results/fmnist-vit12-fashion-mnist): half the backbone's FLOPs, heads
# trained on 4,000 samples per epoch for 2 epochs, 5,000 validation samples, 400 trials.
REFERENCE := --budget 50% --run results/fmnist-vit12-fashion-mnist --head-train-limit 4000 \
	--head-epochs 2 --val-size 5000 --n-trials 400

run: setup
	$(BIN)/exitsearch run $(REFERENCE)

test: setup-tests
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check exitsearch cli tests benchmarks
