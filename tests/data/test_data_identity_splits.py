"""Splits by stable identity: same names, same split, whatever the format or the file order."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from exitsearch.backbone import create_backbone
from exitsearch.data import DataSpec, iterate_batches, load_shards, load_splits, open_source
from exitsearch.errors import DataError
from exitsearch.pipeline.run import load_run_splits

CLASSES = ("ant", "bee", "cat")


def _images(n: int = 90) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
    y = np.arange(n) % 3
    names = [f"{CLASSES[c]}/{i:04d}.png" for i, c in enumerate(y)]
    return x, y, names


def _folder(root, x, y, names):  # type: ignore[no-untyped-def]
    for img, rel in zip(x, names, strict=True):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / rel)
    return root


def _val_names(spec: DataSpec) -> set[str]:
    s = load_splits(spec, image_size=12, channels=1)
    return set(s.val.ids().tolist()), s


def test_same_names_same_split_as_npz_and_folder(tmp_path):
    x, y, names = _images()
    folder = _folder(tmp_path / "imgs", x, y, names)
    order = np.random.default_rng(1).permutation(len(y))  # the npz holds them in another order
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x[order], y=y[order], ids=np.array(names)[order], classes=np.array(CLASSES))
    a, sa = _val_names(DataSpec(source=str(folder), seed=3, val_size=15))
    b, sb = _val_names(DataSpec(source=str(npz), seed=3, val_size=15))
    assert a == b and len(a) == 15
    assert set(sa.test.ids().tolist()) == set(sb.test.ids().tolist())
    # and the pixels that travel with the names are the same
    fa = dict(zip(sa.val.ids().tolist(), sa.val.batch(np.arange(15)).numpy(), strict=True))
    fb = dict(zip(sb.val.ids().tolist(), sb.val.batch(np.arange(15)).numpy(), strict=True))
    assert all(np.array_equal(fa[k], fb[k]) for k in fa)


def test_smaller_validation_is_a_subset_and_seed_changes_it(tmp_path):
    x, y, names = _images()
    folder = str(_folder(tmp_path / "imgs", x, y, names))
    small, _ = _val_names(DataSpec(source=folder, val_size=5))
    large, _ = _val_names(DataSpec(source=folder, val_size=20))
    other, _ = _val_names(DataSpec(source=folder, val_size=20, seed=9))
    assert small < large and other != large


def test_loader_with_workers_gives_the_same_batches(tmp_path):
    x, y, names = _images(40)
    s = load_splits(
        DataSpec(source=str(_folder(tmp_path / "i", x, y, names))), image_size=12, channels=1
    )
    runs = []
    for workers in (0, 2):
        gen = torch_gen()
        runs.append(
            [
                (i.clone(), b.clone(), t.clone())
                for i, b, t in iterate_batches(
                    s.train, 7, shuffle=True, generator=gen, workers=workers
                )
            ]
        )
    for (i0, b0, t0), (i1, b1, t1) in zip(*runs, strict=True):
        assert np.array_equal(i0, i1) and np.array_equal(b0, b1) and np.array_equal(t0, t1)


def torch_gen():  # type: ignore[no-untyped-def]
    import torch

    return torch.Generator().manual_seed(4)


def test_webdataset_shards_read_like_the_folder(tmp_path):
    x, y, names = _images(30)
    folder = _folder(tmp_path / "imgs", x, y, names)
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(3):
        with tarfile.open(shards / f"shard-{s:06d}.tar", "w") as tf:
            for i in range(s * 10, s * 10 + 10):
                key = names[i].rsplit(".", 1)[0]
                buf = io.BytesIO()
                Image.fromarray(x[i]).save(buf, format="PNG")
                for ext, data in (("png", buf.getvalue()), ("cls", str(int(y[i])).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    (shards / "classes.txt").write_text("\n".join(CLASSES))
    src = load_shards(shards)
    assert len(src.train) == 30 and src.train.classes == CLASSES
    assert DataSpec(source=str(shards)).kind == "webdataset"
    ws = load_splits(DataSpec(source=str(shards), val_size=6), image_size=12, channels=1)
    assert len(ws.val) == 6 and len(ws.train) + len(ws.val) + len(ws.test) == 30
    # a shard sample is named by its key (the path without the suffix): same pixels and label
    from exitsearch.data import Preprocess

    p = Preprocess((1, 12, 12))
    fsrc = open_source(DataSpec(source=str(folder))).train.with_preprocess(p)
    by_name = {k: i for i, k in enumerate(fsrc.ids().tolist())}
    wtrain = src.train.with_preprocess(p)
    for i, key in enumerate(wtrain.ids().tolist()):
        j = by_name[key + ".png"]
        assert np.array_equal(wtrain[i][0], fsrc[j][0]) and wtrain.y[i] == fsrc.y[j]
    # moved, the same shards keep the key their cached stages are found by
    key = src.train.content_key()
    shards.rename(tmp_path / "moved")
    assert load_shards(tmp_path / "moved").train.content_key() == key


def test_broken_shard_is_one_line(tmp_path):
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 40)
    with pytest.raises(DataError, match=r"bad\.tar"):
        load_shards(tmp_path / "bad.tar")


def test_run_refuses_validation_the_backbone_trained_on(tmp_path):
    """The embedded backbone records its split; a run with another seed would validate on
    its training images and is refused, the recorded split is accepted."""
    bb = create_backbone("fmnist-vit12")
    assert bb.record is not None and bb.record["data"]["source"] == "fashion-mnist"
    ok = load_run_splits(DataSpec(val_size=500, seed=0), bb)
    assert ok.spec.split == "permutation" and len(ok.val) == 500
    with pytest.raises(DataError, match="were in the backbone's training set"):
        load_run_splits(DataSpec(val_size=500, seed=7), bb)
    allowed = load_run_splits(DataSpec(val_size=500, seed=7), bb, allow_overlap=True)
    assert len(allowed.val) == 500
    src = open_source(DataSpec())
    assert len(src.train) == 60000


def test_run_refuses_data_naming_the_classes_in_another_order(tmp_path):
    """A backbone trained on an .npz whose classes are (cat, bee, ant) reads the same images
    as a folder, whose classes are sorted (ant, bee, cat), with two outputs swapped."""
    x, y, names = _images()
    folder = str(_folder(tmp_path / "imgs", x, y, names))
    overrides = {"img_size": 12, "patch_size": 4, "in_chans": 1, "num_classes": 3}
    overrides |= {"embed_dim": 16, "depth": 2, "num_heads": 2}
    bb = create_backbone("vit_tiny_patch16_224", **overrides)
    bb.record = {"classes": ["cat", "bee", "ant"]}
    with pytest.raises(DataError, match=r"output 0 is 'cat', the data's label 0 is 'ant' \(2 of 3"):
        load_run_splits(DataSpec(source=folder), bb)
    npz = tmp_path / "d.npz"  # the training's own order is accepted
    np.savez(npz, x=x, y=2 - y, ids=np.array(names), classes=np.array(["cat", "bee", "ant"]))
    assert load_run_splits(DataSpec(source=str(npz)), bb).classes == ("cat", "bee", "ant")
    bb.record = {"classes": ["cat", "dog", "eel"]}  # other names: other data, not an order
    assert load_run_splits(DataSpec(source=folder), bb).classes == CLASSES


def test_a_limit_that_leaves_classes_out_is_said(tmp_path):
    """A folder's training split is in path order, class by class: the first few samples can be
    of one class only. The split says so (run and backbone train print it)."""
    x, y, names = _images()
    folder = _folder(tmp_path / "imgs", x, y, names)
    few = load_splits(DataSpec(source=str(folder), limit=10), image_size=12, channels=1)
    kept = set(np.asarray(few.train.y).tolist())
    assert len(kept) < 3  # the premise: the first 10 in path order miss a class
    note = few.limit_note()
    missing = [c for i, c in enumerate(CLASSES) if i not in kept]
    assert note is not None and all(c in note for c in missing), note
    assert "\n" not in note
    every = load_splits(DataSpec(source=str(folder), limit=60), image_size=12, channels=1)
    assert every.limit_note() is None
    assert load_splits(DataSpec(source=str(folder)), image_size=12, channels=1).limit_note() is None
