"""A run over an image folder holds a few batches of images, never the whole decoded dataset.

The folder is indexed by name and decoded batch by batch in the loader; ``--limit`` keeps the
work small, but a loader that decoded the whole folder first (as an in-memory array source
does) would need the 9 GiB the test compares against.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 1024  # model input: each decoded image takes 1024 * 1024 * 3 bytes = 3 MiB
PER_CLASS = 1500  # 3,000 images: 9 GiB decoded at the model's input size


@pytest.mark.slow
def test_heads_and_predictions_over_a_folder_stay_far_below_the_decoded_dataset(tmp_path: Path):
    # The same small JPEG under every name: the pixels do not matter here, their number does.
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) // 64 * 64).save(
        buf, format="JPEG", quality=30
    )
    data = tmp_path / "images"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(PER_CLASS):
            (data / c / f"{i:05d}.jpg").write_bytes(buf.getvalue())
    n = 2 * PER_CLASS
    decoded = n * SIZE * SIZE * 3
    cmd = [
        sys.executable, "-m", "exitsearch_cli.main", "heads", "train",
        "--model", "vit_tiny_patch16_224",
        "-o", f"img_size={SIZE}", "-o", "patch_size=128", "-o", "embed_dim=32",
        "-o", "depth=2", "-o", "num_heads=2", "-o", "num_classes=2",
        "--data", str(data), "--run", str(tmp_path / "run"),
        "--head-epochs", "1", "--head-batch-size", "16", "--limit", "48",
        "--workers", "2",
    ]  # fmt: skip
    with open(tmp_path / "out.txt", "w") as fo, open(tmp_path / "err.txt", "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak, not this process's
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert proc.returncode == 0, err[-2000:]
    assert "heads trained" in out
    peak = usage.ru_maxrss * 1024  # KiB on Linux; the largest of the process and its workers
    assert peak < 0.3 * decoded, (
        f"peak RSS {peak / 2**30:.2f} GiB against {decoded / 2**30:.2f} GiB decoded"
    )
