# Two entry points; both set up everything they need on a fresh machine first.
#   make run   - the main job on the embedded default (Fashion-MNIST backbone)
#   make test  - the test suite
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run run-swin run-count test setup setup-tests lint bench

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

# The Swin reference run (results/fmnist-swin12-fashion-mnist): the fmnist-swin12 backbone is
# trained first (its weights are not shipped; about 35 minutes on 2 cores, resumed when rerun),
# then searched at the ViT reference's budget in FLOPs (36,395,712, half of fmnist-vit12) with
# the same settings, and the two fronts are compared at matched FLOPs.
SWIN_BACKBONE := build/fmnist-swin12
SWIN_REFERENCE := --model fmnist-swin12 --checkpoint $(SWIN_BACKBONE)/model.safetensors \
	--budget 36395712 --run results/fmnist-swin12-fashion-mnist --head-train-limit 4000 \
	--head-epochs 2 --val-size 5000 --n-trials 400

run-swin: setup
	$(BIN)/exitsearch backbone train --model fmnist-swin12 --from-scratch --out $(SWIN_BACKBONE) \
		--epochs 8 --batch-size 128 --lr 1e-3 --seed 0
	$(BIN)/exitsearch run $(SWIN_REFERENCE)
	$(BIN)/python benchmarks/compare_fronts.py results/fmnist-swin12-fashion-mnist \
		results/fmnist-vit12-fashion-mnist --out results/fmnist-swin12-fashion-mnist/vs_vit12

# The counting reference run (results/fmnist-count-vit12-counting): the fmnist-count-vit12
# backbone is trained first on the generated counting canvases (its weights are not shipped;
# about 25 minutes on 2 cores, resumed when rerun), then searched at half its FLOPs with the
# reference run's head training and trials.
COUNT_BACKBONE := build/fmnist-count-vit12
COUNT_REFERENCE := --model fmnist-count-vit12 --checkpoint $(COUNT_BACKBONE)/model.safetensors \
	--data fashion-mnist-count --budget 50% --run results/fmnist-count-vit12-counting \
	--head-train-limit 4000 --head-epochs 2 --n-trials 400

run-count: setup
	$(BIN)/exitsearch backbone train --model fmnist-count-vit12 --data fashion-mnist-count \
		--out $(COUNT_BACKBONE) --epochs 15 --batch-size 128 --lr 1e-3 --seed 0
	$(BIN)/exitsearch run $(COUNT_REFERENCE)

test: setup-tests
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check exitsearch cli tests benchmarks
