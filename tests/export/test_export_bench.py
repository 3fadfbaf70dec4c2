"""The benchmark: both models on the same inputs, predicted speed-up from the exits taken."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from export_world import DATA, SPECS, World

from exitsearch.core.config import ExitConfig
from exitsearch.errors import ConfigError
from exitsearch.export import benchmark, export_bundle, load_bundle
from exitsearch.export.bench import bench_inputs
from exitsearch.export.runtime import BOOKKEEPING


@pytest.fixture(scope="module")
def bundle(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # an easy configuration: a low confidence bar at the first two exits
    config = ExitConfig(SPECS, "confidence", (0.3, 0.3, 0.3))
    return export_bundle(
        tmp_path_factory.mktemp("bench") / "b",
        world.backbone,
        world.bank,
        config,
        extra_meta={"data": DATA.to_dict()},
    )


def test_benchmark_reports_measured_and_predicted_speedup(bundle: Path):
    model = load_bundle(bundle)
    report = benchmark(model, (1, 8), repeats=4, warmup=1, stream=False)
    assert report.inputs.startswith("fashion-mnist validation")
    assert [r.batch_size for r in report.rows] == [1, 8]
    flops = np.asarray(model.costs.exit_flops)
    for row in report.rows:
        assert row.engine == "torch" and row.batches == 4 and row.mode == "batch"
        assert sum(row.exit_counts) == 4 * row.batch_size
        mean = float((np.asarray(row.exit_counts) * flops).sum() / sum(row.exit_counts))
        assert row.mean_flops == pytest.approx(mean)
        assert row.predicted_speedup == pytest.approx(model.costs.backbone_flops / mean)
        assert row.backbone_ms > 0 and row.model_ms > 0
        # one definition per column: medians, and the median of the paired per-round ratios
        assert row.backbone_images_per_s == pytest.approx(row.batch_size / row.backbone_ms * 1e3)
        assert row.model_images_per_s == pytest.approx(row.batch_size / row.model_ms * 1e3)
        assert len(row.round_speedups) == 4
        assert row.measured_speedup == pytest.approx(statistics.median(row.round_speedups))
        assert row.speedup_low <= row.measured_speedup <= row.speedup_high
        # fewer than 6 rounds: the interval is their range
        assert (row.speedup_low, row.speedup_high) == (
            min(row.round_speedups),
            max(row.round_speedups),
        )
        assert 0.0 <= row.accuracy <= 1.0 and 0.0 <= row.backbone_accuracy <= 1.0
        parts = [p.part for p in row.parts]
        assert parts[0] == "stem" and "blocks 1-1" in parts and BOOKKEEPING in parts
        assert f"head {SPECS[0].key}" in parts
        assert sum(p.share for p in row.parts) == pytest.approx(1.0)
        # each round kept, and the totals over them set against a table timed in the runtime
        assert len(row.round_ms) == 4 and len(row.round_exit_counts) == 4
        assert [sum(c) for c in row.round_exit_counts] == [row.batch_size] * 4
        assert np.sum(row.round_exit_counts, axis=0).tolist() == row.exit_counts
        if row.batch_size == 1:
            assert row.measured_sample_ms == pytest.approx(sum(row.round_ms) / 4)
            backbone = sum(s * m for s, m in zip(row.round_speedups, row.round_ms, strict=True))
            assert row.total_speedup == pytest.approx(backbone / sum(row.round_ms))
            assert row.predicted_sample_ms > 0 and row.predicted_speedup_ms > 0
        else:  # a batch thinning out exit by exit is not what a table's parts time
            assert row.predicted_sample_ms is None and row.total_speedup is None
    doc = report.to_json()
    assert doc["rows"][0]["parts"][0]["part"] == "stem"
    assert report.cpus >= 1 and (report.load_average is None or len(report.load_average) == 3)


def test_rounds_cycling_over_few_images_count_each_image_once(bundle: Path):
    model = load_bundle(bundle)
    pool, labels, _ = bench_inputs(model, 20)
    inputs = (pool[:20], labels[:20], "20 images")
    report = benchmark(model, (8,), repeats=5, warmup=0, inputs=inputs, stream=False)
    (row,) = report.rows
    # 2 distinct batches of 8, timed in 5 rounds: the counts and scores are of the 16 images
    assert row.batches == 5 and len(row.round_exit_counts) == 5
    assert sum(row.exit_counts) == 16
    assert row.round_exit_counts[2] == row.round_exit_counts[0]
    np.testing.assert_array_equal(row.exit_counts, np.sum(row.round_exit_counts[:2], axis=0))
    flops = np.asarray(model.costs.exit_flops)
    assert row.mean_flops == pytest.approx(float((np.asarray(row.exit_counts) * flops).sum() / 16))
    assert row.accuracy is not None and (row.accuracy * 16) == pytest.approx(
        round(row.accuracy * 16)
    )


def test_a_busy_machine_gets_a_note():
    from exitsearch.export.bench import _busy_note

    assert _busy_note(None, 2) is None and _busy_note([0.2, 0.5, 0.5], 2) is None
    note = _busy_note([1.7, 1.0, 0.8], 2)
    assert note and "load average 1.70" in note and "2 processor(s)" in note


def test_stream_mode_runs_the_same_batches_as_one_stream(bundle: Path):
    model = load_bundle(bundle)
    report = benchmark(model, (1, 8), repeats=4, warmup=1, stream_repeats=2)
    assert [(r.batch_size, r.mode) for r in report.rows] == [
        (1, "batch"),
        (8, "batch"),
        (8, "stream"),
    ]
    batch, stream = report.rows[1], report.rows[2]
    assert stream.label == "torch stream b=8" and batch.label == "torch b=8"
    # the same 32 inputs, so the same exits and the same predicted speed-up
    assert stream.exit_counts == batch.exit_counts
    assert stream.predicted_speedup == pytest.approx(batch.predicted_speedup)
    assert stream.accuracy == batch.accuracy and stream.backbone_accuracy == batch.backbone_accuracy
    assert stream.batches == 4 * 2 and len(stream.round_speedups) == 2
    assert stream.measured_speedup == pytest.approx(statistics.median(stream.round_speedups))
    parts = [p.part for p in stream.parts]
    assert parts[0] == "stem" and BOOKKEEPING in parts
    assert sum(p.share for p in stream.parts) == pytest.approx(1.0)
    # every pass runs the same exits; the stream, on full batches, is set against the table
    assert stream.round_exit_counts == [stream.exit_counts] * 2
    assert stream.measured_sample_ms == pytest.approx(sum(stream.round_ms) / (2 * 32))
    assert stream.predicted_sample_ms > 0 and batch.predicted_sample_ms is None
    with pytest.raises(ConfigError, match="stream_repeats >= 1"):
        benchmark(model, (8,), stream_repeats=0)


def test_inputs_fall_back_to_noise_without_the_data(bundle: Path):
    model = load_bundle(bundle)
    model.manifest = {**(model.manifest or {}), "meta": {"data": {"source": "/nowhere.npz"}}}
    x, y, described = bench_inputs(model, 5)
    assert y is None and x.shape == (5, 1, 28, 28) and described.startswith("random")
    assert "cannot be read here: /nowhere.npz: file not found" in described  # which, why
    given = (torch.zeros(3, 1, 28, 28), None, "zeros")
    report = benchmark(model, (2,), repeats=2, warmup=0, inputs=given)
    assert report.inputs == "zeros" and report.rows[0].accuracy is None


def test_benchmark_validates_its_settings(bundle: Path):
    model = load_bundle(bundle)
    with pytest.raises(ConfigError, match="batch sizes"):
        benchmark(model, (0,))
    with pytest.raises(ConfigError, match="`repeats >= 1`"):
        benchmark(model, (1,), repeats=0)


def test_the_plot_draws_new_and_old_reports(bundle: Path, tmp_path: Path):
    from exitsearch.report.bench import plot_bench

    report = benchmark(load_bundle(bundle), (2,), repeats=3, warmup=0, stream=False).to_json()
    old = {**report, "rows": [dict(report["rows"][0])]}
    for key in ("speedup_low", "speedup_high", "round_speedups"):  # written before intervals
        old["rows"][0].pop(key)
    out = plot_bench([report, old], tmp_path / "bench.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
