"""Shared geometry of the pausing tests (a module of its own: every test folder has a conftest)."""

from __future__ import annotations

from typing import Any

# 28 px images in 4 px patches: a 7 x 7 grid of 49 patch tokens plus the class token, the
# geometry of the embedded default, at width 32 and depth 6.
PAUSE_TINY: dict[str, Any] = {
    "img_size": 28,
    "patch_size": 4,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 32,
    "depth": 6,
    "num_heads": 2,
}
