"""Fixtures of the serving tests: a real bundle of the export tests' tiny pipeline (a 4-block
ViT on Fashion-MNIST with three trained exits and its operating points)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from PIL import Image

from exitsearch.data import FASHION_MNIST_CLASSES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))

from export_world import SPECS, World, build_world, spread_point

from exitsearch.core.config import ExitConfig
from exitsearch.export import OperatingPoint, export_bundle
from exitsearch.search.refine import shared_curve


@pytest.fixture(scope="session")
def serve_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST missing (install dataset-fashion-mnist)")
    return build_world(tmp_path_factory.mktemp("serve-heads"))


@pytest.fixture(scope="session")
def bundle(serve_world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose default operating point spreads samples over every exit, with the whole
    confidence curve as operating points (cheapest first)."""
    world = serve_world
    curve = shared_curve(world.ev, ExitConfig(SPECS, "confidence", (0.5,) * 3, "shared"))
    config = spread_point(curve, world.ev).config
    points = sorted(
        (OperatingPoint(p.config.thresholds, "shared", p.mean_cost, p.accuracy) for p in curve),
        key=lambda p: p.mean_flops,  # OperatingPoint's FLOPs
    )
    return export_bundle(
        tmp_path_factory.mktemp("serve-bundles") / "tiny",
        world.backbone,
        world.bank,
        config,
        points,
        {"val": world.ev.evaluate(config).to_dict()},
        {"run": "tiny", "classes": list(FASHION_MNIST_CLASSES)},
    )


@pytest.fixture(scope="session")
def pngs(serve_world: World) -> list[bytes]:
    """48 validation images as PNG files (what a client sends)."""
    out = []
    for x in serve_world.splits.val.x[:48]:
        buf = io.BytesIO()
        Image.fromarray(x[0]).save(buf, "PNG")
        out.append(buf.getvalue())
    return out
