"""ONNX graphs under the numpy controller agree with the PyTorch runtime.

Tolerance: logits within ``ONNX_ATOL`` (1e-4; the graphs differ from PyTorch by about 1e-6 in
float32), identical exit indices on real validation images at batch sizes 1, 7 and 64.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from export_world import SPECS, World, spread_point

from exitsearch.core.config import ExitConfig
from exitsearch.core.criteria import exit_statistics
from exitsearch.errors import BundleError, ConfigError
from exitsearch.export import (
    ONNX_ATOL,
    OnnxMultiExitModel,
    OperatingPoint,
    exit_statistics_np,
    export_bundle,
    export_onnx,
    load_bundle,
    load_onnx_bundle,
)
from exitsearch.heads import HeadContext, HeadSpec, create_head
from exitsearch.search.refine import shared_curve

N = 192  # validation images compared per batch size


@pytest.fixture(
    scope="module",
    # dynamo takes about 20 s for the nine graphs here; -m "not slow" leaves it out
    params=[pytest.param("dynamo", marks=pytest.mark.slow), "legacy"],
)
def bundles(request, world: World, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """dynamo: a confidence model with three exits and a final exit; legacy: a cut patience
    model (the exporter is the slow part, so each gets one configuration)."""
    if request.param == "dynamo":
        base = ExitConfig(SPECS, "confidence", (0.5,) * 3, "shared")
    else:
        base = ExitConfig(SPECS, "patience", (1.0,) * 3, "shared", cut=True)
    curve = shared_curve(world.ev, base)
    config = spread_point(curve, world.ev).config
    points = [
        OperatingPoint(p.config.thresholds, "shared", p.mean_cost, p.accuracy)
        for p in curve[:: max(1, len(curve) // 4)]
    ]
    path = export_bundle(
        tmp_path_factory.mktemp("onnx") / "b",
        world.backbone,
        world.bank,
        config,
        points,
        onnx=True,
        onnx_exporter=request.param,
    )
    return path, config


def test_graph_files_are_listed_and_checked(bundles):  # type: ignore[no-untyped-def]
    path, config = bundles
    doc = json.loads((path / "exitsearch.json").read_text())
    g = doc["onnx"]
    names = {"onnx/stem.onnx", "onnx/final_head.onnx", "onnx/rest.onnx"}
    names |= {f"onnx/segment_{k}.onnx" for k in range(3)} | {
        f"onnx/head_{k}.onnx" for k in range(3)
    }
    assert names <= set(doc["files"])
    assert g["max_abs_error"] < ONNX_ATOL
    assert [h["uncertainty"] for h in g["heads"]] == [s.uncertainty for s in config.exits]
    assert [(s["start"], s["stop"]) for s in g["segments"]] == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_onnx_equals_pytorch(world: World, bundles, batch_size):  # type: ignore[no-untyped-def]
    path, _ = bundles
    torch_model = load_bundle(path)
    onnx_model = load_onnx_bundle(path, threads=1)
    idx_t, pred_t, logits_t = world.run_split(torch_model, batch_size, limit=N)
    idx_o, pred_o, logits_o = world.run_split(onnx_model, batch_size, limit=N)
    np.testing.assert_array_equal(idx_o, idx_t)
    np.testing.assert_array_equal(pred_o, pred_t)
    np.testing.assert_allclose(logits_o, logits_t, atol=ONNX_ATOL, rtol=0)
    assert len(np.unique(idx_t)) >= 2


@pytest.mark.parametrize("batch_size", [1, 16])
def test_onnx_stream_mode_equals_pytorch(world: World, bundles, batch_size):  # type: ignore[no-untyped-def]
    """The onnxruntime controller shares the stream scheduler: same exits, same outputs."""
    path, _ = bundles
    x = world.backbone.input_transform()(torch.from_numpy(world.splits.val.x[:N]))
    ref = load_bundle(path).predict(x, batch_size)
    onnx_model = load_onnx_bundle(path, threads=1)
    got = onnx_model.predict(x.numpy(), batch_size)
    assert torch.equal(got.exit_index, ref.exit_index)
    assert torch.equal(got.prediction, ref.prediction)
    np.testing.assert_allclose(got.logits.numpy(), ref.logits.numpy(), atol=ONNX_ATOL, rtol=0)
    batched = onnx_model.run(x.numpy()[:64])
    assert torch.equal(batched.exit_index, got.exit_index[:64])


def test_onnx_switches_operating_points_too(world: World, bundles):  # type: ignore[no-untyped-def]
    path, _ = bundles
    torch_model, onnx_model = load_bundle(path), load_onnx_bundle(path, threads=1)
    for i in range(len(torch_model.operating_points)):
        torch_model.set_operating_point(index=i)
        onnx_model.set_operating_point(index=i)
        np.testing.assert_array_equal(
            world.run_split(onnx_model, 64, limit=N)[0],
            world.run_split(torch_model, 64, limit=N)[0],
        )


def test_onnx_backbone_equals_the_backbone(world: World, bundles):  # type: ignore[no-untyped-def]
    path, _ = bundles
    x = world.backbone.input_transform()(torch.from_numpy(world.splits.val.x[:9]))
    with torch.inference_mode():
        ref = world.backbone(x).numpy()
    got = load_onnx_bundle(path).backbone_forward(x.numpy())
    np.testing.assert_allclose(got, ref, atol=ONNX_ATOL, rtol=0)


def test_numpy_exit_statistics_match_torch():
    gen = torch.Generator().manual_seed(0)
    logits = (
        torch.randn(500, 10, generator=gen)
        * torch.tensor([0.1, 1.0, 10.0, 30.0]).repeat(125)[:, None]
    )
    c_t, e_t, p_t = exit_statistics(logits)
    c_n, e_n, p_n = exit_statistics_np(logits.numpy())
    assert c_n.dtype == e_n.dtype == np.float32 and p_n.dtype == np.int64
    np.testing.assert_array_equal(p_n, p_t.numpy())
    np.testing.assert_allclose(c_n, c_t.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(e_n, e_t.numpy(), atol=1e-6, rtol=0)


def test_bundle_without_onnx_and_unknown_exporter(world: World, tmp_path: Path):
    config = ExitConfig(SPECS[:1], "confidence", (0.5,))
    path = export_bundle(tmp_path / "b", world.backbone, world.bank, config)
    with pytest.raises(BundleError, match="no ONNX graphs; export it again with --onnx"):
        load_onnx_bundle(path)
    with pytest.raises(ConfigError, match="unknown ONNX exporter 'jit'"):
        export_onnx(load_bundle(path), tmp_path / "g", exporter="jit")


def test_exit_after_the_last_block_has_no_rest_graph(world: World, tmp_path: Path):
    last = HeadSpec("linear", world.backbone.depth)
    head = create_head(last, HeadContext.from_backbone(world.backbone))
    config = ExitConfig((SPECS[1], last), "entropy", (0.9, 0.9))
    heads = {SPECS[1].key: world.bank.head(SPECS[1].key), last.key: head}
    path = export_bundle(
        tmp_path / "b", world.backbone, heads, config, onnx=True, onnx_exporter="legacy"
    )
    assert load_bundle(path).segments == [(0, 2), (2, 4), (4, 4)]
    onnx_model = load_onnx_bundle(path, threads=1)
    assert onnx_model.rest is None
    idx_t, _, logits_t = world.run_split(load_bundle(path), 16, limit=64)
    idx_o, _, logits_o = world.run_split(onnx_model, 16, limit=64)
    np.testing.assert_array_equal(idx_o, idx_t)
    np.testing.assert_allclose(logits_o, logits_t, atol=ONNX_ATOL, rtol=0)


SHARED_POOL_CHECK = """
import sys
import numpy as np
from exitsearch.export import load_onnx_bundle
path = sys.argv[1]
x = np.random.default_rng(0).standard_normal((24, 1, 28, 28)).astype(np.float32)
own = load_onnx_bundle(path, threads=2)  # a pool per graph (made before the shared one)
shared = load_onnx_bundle(path, threads=2, shared_threads=True)
later = load_onnx_bundle(path, threads=1)  # onnxruntime now refuses pools of their own
a, b, c = own(x), shared(x), later(x)
assert own.thread_pool == "per graph", own.thread_pool
assert shared.thread_pool == later.thread_pool == "shared (2 threads)", later.thread_pool
assert list(a.exit_index) == list(b.exit_index) == list(c.exit_index)
np.testing.assert_allclose(np.asarray(b.logits), np.asarray(a.logits), atol=1e-5, rtol=0)
print("ok")
"""


def test_graphs_can_share_one_thread_pool(bundles):  # type: ignore[no-untyped-def]
    # in a process of its own: onnxruntime's global pool is made once per process
    path, _ = bundles
    done = subprocess.run(
        [sys.executable, "-c", SHARED_POOL_CHECK, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_legacy_exporter_names_a_pooling_it_cannot_export(world: World, tmp_path: Path, capfd):
    # 4x4 patch tokens pooled to 3x3: adaptive pooling the TorchScript exporter refuses
    pooled = HeadSpec("tokenmap", 2, {"grid": 3})
    head = create_head(pooled, HeadContext.from_backbone(world.backbone))
    config = ExitConfig((pooled,), "confidence", (0.9,))
    with pytest.raises(BundleError, match=r"legacy ONNX exporter cannot export head_0: .*dynamo"):
        export_bundle(
            tmp_path / "b",
            world.backbone,
            {pooled.key: head},
            config,
            onnx=True,
            onnx_exporter="legacy",
        )
    assert not (tmp_path / "b").exists()
    # torch's dump of the graph it failed on (from C++, to the process's stdout) is held back
    assert "Torch IR" not in capfd.readouterr().out
    # the default exporter takes it, and the graph agrees with PyTorch
    path = export_bundle(tmp_path / "d", world.backbone, {pooled.key: head}, config, onnx=True)
    idx_t, _, logits_t = world.run_split(load_bundle(path), 16, limit=32)
    idx_o, _, logits_o = world.run_split(load_onnx_bundle(path, threads=1), 16, limit=32)
    np.testing.assert_array_equal(idx_o, idx_t)
    np.testing.assert_allclose(logits_o, logits_t, atol=ONNX_ATOL, rtol=0)
    # with fallback (the latency probes), legacy exports what it can and dynamo the rest
    print("before")
    graphs = export_onnx(load_bundle(path), tmp_path / "mixed", exporter="legacy", fallback=True)
    print("after")
    assert graphs["dynamo_graphs"] == ["head_0"] and graphs["max_abs_error"] <= ONNX_ATOL
    out = capfd.readouterr().out
    assert "Torch IR" not in out and out.split() == ["before", "after"]
    mixed = OnnxMultiExitModel(tmp_path / "mixed", graphs, config, threads=1)
    idx_m, _, logits_m = world.run_split(mixed, 16, limit=32)
    np.testing.assert_array_equal(idx_m, idx_t)
    np.testing.assert_allclose(logits_m, logits_t, atol=ONNX_ATOL, rtol=0)
