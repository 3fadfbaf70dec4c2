"""A new exit criterion is one class that registers itself: the evaluator, simplification and
the exported runtime follow its attributes, with no list or name check to extend."""

from __future__ import annotations

import numpy as np
import torch

from exitsearch.core.config import ExitConfig
from exitsearch.core.criteria import REGISTRY, ExitCriterion, create_criterion, register_criterion
from exitsearch.export.runtime import needs_history
from exitsearch.search.study import simplify


def test_a_criterion_that_reads_earlier_exits(world):
    with REGISTRY.scoped():

        @register_criterion("unanimous")
        class Unanimous(ExitCriterion):
            """Ready once every exit so far predicted the same label (readiness 1 or 0)."""

            quantity = "unanimous"
            reads_history = True

            def readiness(self, confidence, entropy, pred, uncertainty):  # type: ignore[no-untyped-def]
                first = pred[:1]
                same = np.cumprod(pred == first, axis=0)
                same[0] = 0  # one exit alone is no agreement
                return same.astype(np.float32)

            def bound(self, threshold: float) -> float:
                return float(threshold)

            def threshold(self, bound: float) -> float:
                return float(bound)

            def runtime_readiness(self, conf, ent, pred, unc, history):  # type: ignore[no-untyped-def]
                if history is None or history.shape[1] == 0:
                    return torch.zeros(pred.shape)
                full = torch.cat([history, pred[:, None]], dim=1).T.numpy()
                return torch.from_numpy(self.readiness(None, None, full, None)[-1])

        crit = create_criterion("unanimous")
        assert needs_history(crit) and not needs_history(create_criterion("confidence"))
        heads = tuple(world.heads[i] for i in (0, 2, 4))
        config = ExitConfig(heads, "unanimous", (1.0, 1.0, 1.0), "shared")
        ev = world.ev()
        idx = ev.exit_index(config)
        pred = ev.sp.pred[ev.outcome_rows(config)]
        # by hand: leave at the first exit k >= 1 whose prediction all earlier ones share
        want = np.full(idx.shape, 3)
        for n in range(idx.size):
            for k in (1, 2):
                if (pred[: k + 1, n] == pred[0, n]).all():
                    want[n] = k
                    break
        assert np.array_equal(idx, want)
        assert (idx == 0).sum() == 0  # exit 0 never fires, yet it stays: later ones read it
        assert simplify(config, ev) == config
    assert "unanimous" not in REGISTRY.names()
