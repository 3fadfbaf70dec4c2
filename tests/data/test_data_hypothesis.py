"""Property tests of the loaders: whatever the file holds, a dataset or one DataError, nothing else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from exitsearch.data import DataSpec, Preprocess, load_npz, load_splits
from exitsearch.errors import DataError

LABEL_VALUES = st.one_of(
    st.integers(-3, 12), st.sampled_from([2**31 - 1, 2**62, 2**63 - 1, -(2**63)])
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 12),
    shape=st.sampled_from([(5, 5), (5, 5, 1), (5, 5, 3), (1, 5, 5), (3, 5, 5), (5,), (5, 5, 5, 5)]),
    xdtype=st.sampled_from(["uint8", "float32", "int16"]),
    labels=st.lists(LABEL_VALUES, min_size=0, max_size=14),
    ydtype=st.sampled_from(["int64", "int32", "uint8", "float32", "bool"]),
    with_test=st.booleans(),
)
def test_npz_gives_a_dataset_or_one_data_error(n, shape, xdtype, labels, ydtype, with_test):
    rng = np.random.default_rng(n)
    x = (
        rng.random((n, *shape)).astype(xdtype)
        if xdtype == "float32"
        else (rng.integers(0, 255, (n, *shape)).astype(xdtype))
    )
    with np.errstate(over="ignore"), tempfile.TemporaryDirectory() as tmp:
        y = np.asarray(labels, dtype=np.int64).astype(ydtype, copy=False)
        path = Path(tmp) / "d.npz"
        arrays = {"x": x, "y": y}
        if with_test:
            arrays.update(x_test=x[:3], y_test=y[:3])
        np.savez(path, **arrays)
        try:
            train, test = load_npz(path)
        except DataError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            return
    # accepted: what was loaded is consistent and sized by the data, not by label values
    assert len(train) == n == len(labels)
    assert train.x.ndim == 4 and train.x.dtype == np.uint8
    # classes inferred from the labels: exactly 0..max, and every label within them
    assert train.num_classes == (int(y.astype(np.int64).max()) + 1 if y.size else 0)
    assert np.array_equal(train.y, y.astype(np.int64))
    assert (test is not None) == with_test


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tree=st.dictionaries(
        st.sampled_from(["a", "b", "c", ".hidden"]),
        st.lists(st.sampled_from(["png", "jpg", "txt", "broken", "empty", "big"]), max_size=6),
        max_size=3,
    ),
    layout=st.sampled_from(["flat", "train-test", "train-val"]),
)
def test_image_folder_gives_a_dataset_or_one_data_error(tree, layout):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        parts = {"flat": [root], "train-test": [root / "train", root / "test"],
                 "train-val": [root / "train", root / "val"]}[layout]  # fmt: skip
        for base in parts:
            for cls, files in tree.items():
                (base / cls).mkdir(parents=True, exist_ok=True)
                for i, kind in enumerate(files):
                    f = base / cls / f"f{i}.{'png' if kind in ('png', 'big') else kind}"
                    if kind in ("png", "jpg"):
                        Image.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(
                            f, format="PNG" if kind == "png" else "JPEG"
                        )
                    elif kind == "big":
                        Image.new("L", (9, 7)).save(f)
                    elif kind == "broken":
                        f.with_suffix(".png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
                    elif kind == "empty":
                        f.with_suffix(".jpg").write_bytes(b"")
                    else:
                        f.write_text("notes")
        try:
            splits = load_splits(
                DataSpec(source=str(root), val_size=1),
                preprocess=Preprocess((3, 4, 4), mean=(0.5,) * 3, std=(0.5,) * 3),
            )
            for part in (splits.train, splits.val, splits.test):
                x = part.batch(np.arange(len(part)))
                assert x.shape[1:] == (3, 4, 4)
        except DataError as exc:
            assert "\n" not in str(exc)
