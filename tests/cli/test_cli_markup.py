"""Head keys carry brackets (``gah[s=3]@11``, ``lph[k=3]@2``), which rich would read as markup
and drop: what the CLI prints of a configuration keeps them."""

from __future__ import annotations

from exitsearch_cli import bench as bench_cli
from exitsearch_cli._console import console, err_console

from exitsearch.export.bench import BenchReport, BenchRow, PartTime


def test_bench_report_keeps_head_parameters() -> None:
    row = BenchRow(
        engine="torch",
        batch_size=1,
        batches=3,
        backbone_ms=2.0,
        model_ms=1.0,
        backbone_images_per_s=500.0,
        model_images_per_s=1000.0,
        measured_speedup=2.0,
        speedup_low=1.5,
        speedup_high=2.5,
        predicted_speedup=2.5,
        mean_flops=1e6,
        exit_counts=[1, 2],
        accuracy=None,
        backbone_accuracy=None,
        parts=[PartTime("head gah[s=3]@11+u", 0.5, 0.5)],
    )
    report = BenchReport(
        bundle="b",
        device="cpu",
        device_name="cpu",
        threads=1,
        inputs="random",
        warmup=1,
        repeats=3,
        backbone_flops=2.5e6,
        configuration="confidence: lph[k=3]@2 conf>=0.9, gah[s=3]@11 conf>=0.9 -> final",
        operating_point=None,
        rows=[row],
        notes=["a note on lph[k=5]@4"],
    )
    with console.capture() as out, err_console.capture() as err:
        bench_cli.print_report(report)
    text = out.get() + err.get()
    for key in ("lph[k=3]@2", "gah[s=3]@11 conf>=0.9", "head gah[s=3]@11+u", "lph[k=5]@4"):
        assert key in text, key
