"""A synthetic cache for the search tests: numpy predictions on a toy backbone profile.

The toy backbone has 6 blocks with hand-picked FLOPs, so every exit cost is a sum one can do
on paper::

    stem 10, blocks 100 110 120 130 140 150, final head 5  (total 765)
    cumulative after block m: 110 220 340 470 610 760

Heads: ``linear@m+u`` (3 FLOPs, with an uncertainty predictor) at m = 1..5 and ``mlp@m``
(7 FLOPs, no predictor) at m = 2 and 4. A deeper toy (``deep_world``, 20 blocks costing
100 + 10 (i - 1) each, linear heads at 1..19) exercises configurations with many exits. Logits are rounded to halves so that many samples share
a confidence, an entropy and a prediction: ties are where ``>=`` and ``<=`` matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from exitsearch.core.costs import CostModel
from exitsearch.heads import HeadSpec
from exitsearch.profile.backbone import BackboneProfile, BlockCost
from exitsearch.search.evaluator import Evaluator
from exitsearch.training.predict import Predictions, SplitPredictions

STEM = 10
BLOCKS = (100, 110, 120, 130, 140, 150)
FINAL_HEAD = 5
TOTAL = STEM + sum(BLOCKS) + FINAL_HEAD  # 765
LINEAR_FLOPS = 3
MLP_FLOPS = 7
NUM_CLASSES = 4


def toy_profile(depth: int = 6) -> BackboneProfile:
    """Block i (1-based) costs 100 + 10 (i - 1): the table above for 6 blocks."""
    flops = [100 + 10 * i for i in range(depth)]
    total = STEM + sum(flops) + FINAL_HEAD
    blocks, cum = [], STEM
    for i, f in enumerate(flops):
        cum += f
        blocks.append(BlockCost(i + 1, f, 0, cum, cum / total))
    return BackboneProfile(
        model="toy",
        input_shape=(1, 28, 28),
        num_tokens=17,
        total_flops=total,
        stem_flops=STEM,
        head_flops=FINAL_HEAD,
        blocks=blocks,
        params=0,
    )


def toy_heads(depth: int = 6) -> list[HeadSpec]:
    heads = [HeadSpec("linear", m, {}, True) for m in range(1, depth)]
    heads += [HeadSpec("mlp", m) for m in (2, 4)]
    return sorted(heads, key=lambda s: (s.location, s.type))


def _split(
    rng: np.random.Generator, heads: list[HeadSpec], n: int, depth: int = 6
) -> SplitPredictions:
    labels = rng.integers(0, NUM_CLASSES, n)
    onehot = np.eye(NUM_CLASSES)[labels]
    rows = len(heads) + 1
    conf = np.empty((rows, n), np.float32)
    ent = np.empty((rows, n), np.float32)
    pred = np.empty((rows, n), np.int32)
    unc = np.full((rows, n), np.nan, np.float32)
    scale = 0.35 * 6 / depth  # deeper toys: the same spread of accuracies
    strengths = [scale * s.location + (0.4 if s.type == "mlp" else 0.0) for s in heads] + [2.6]
    for i, strength in enumerate(strengths):
        logits = np.round((rng.normal(0.0, 1.0, (n, NUM_CLASSES)) + strength * onehot) * 2) / 2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        conf[i] = p.max(1)
        ent[i] = np.clip(-(p * np.log(p)).sum(1) / math.log(NUM_CLASSES), 0.0, 1.0)
        pred[i] = p.argmax(1)
        if i < len(heads) and heads[i].uncertainty:
            # a predictor that is right on average: high where the head is wrong, on a grid
            wrong = (pred[i] != labels).astype(np.float64)
            unc[i] = np.clip(np.round((0.6 * wrong + rng.uniform(0, 0.5, n)) * 16) / 16, 0, 1)
    return SplitPredictions(labels.astype(np.int64), conf, ent, pred, unc)


@dataclass
class World:
    preds: Predictions
    profile: BackboneProfile
    head_flops: dict[str, int]
    costs: CostModel
    heads: list[HeadSpec]

    def spec(self, key: str) -> HeadSpec:
        return next(s for s in self.heads if s.key == key)

    def ev(self, split: str = "val") -> Evaluator:
        return Evaluator(self.preds, split, self.costs)


def build_world(seed: int = 0, n_val: int = 240, n_test: int = 160, depth: int = 6) -> World:
    rng = np.random.default_rng(seed)
    heads = toy_heads(depth)
    preds = Predictions(
        heads,
        {"val": _split(rng, heads, n_val, depth), "test": _split(rng, heads, n_test, depth)},
        NUM_CLASSES,
    )
    head_flops = {s.key: LINEAR_FLOPS if s.type == "linear" else MLP_FLOPS for s in heads}
    profile = toy_profile(depth)
    return World(preds, profile, head_flops, CostModel(profile, head_flops), heads)


@pytest.fixture(scope="session")
def world() -> World:
    return build_world()


@pytest.fixture(scope="session")
def deep_world() -> World:
    """20 blocks, linear heads after blocks 1..19: configurations with up to 19 early exits."""
    return build_world(seed=5, n_val=160, n_test=80, depth=20)


@pytest.fixture(scope="session")
def make_world() -> Callable[..., World]:
    return build_world
