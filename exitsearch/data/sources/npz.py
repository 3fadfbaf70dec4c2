"""``.npz`` arrays: ``x`` and ``y``, optionally ``x_test``/``y_test``, ``classes``, ``ids`` and
``task``.

``task`` (a string, default ``"classification"``) says what ``y`` holds: class indices, or with
``"counting"`` whole counts of objects (:mod:`exitsearch.core.task`).

``x`` may be N x H x W, N x H x W x C or N x C x H x W, uint8 or floats in [0, 1]. ``ids`` (and
``ids_test``) name each sample, for example by the relative path it had in an image folder; the
validation split is decided by these names, so the same images as a folder and as an ``.npz`` with
their paths as ``ids`` get the same split. Without ``ids`` a sample's index names it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from exitsearch.data.samples import ArrayDataset, check_labels
from exitsearch.data.sources import SourceData, register_source
from exitsearch.errors import DataError

__all__ = ["load_npz"]


def load_npz(path: str | Path) -> tuple[ArrayDataset, ArrayDataset | None]:
    """The training (and, if present, test) arrays of an ``.npz`` file.

    Raises:
        DataError: the file is missing, unreadable, lacks ``x``/``y``, or they do not match;
            labels are checked before anything is sized by them.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found (expected a .npz with arrays x and y)")
    if not zipfile.is_zipfile(p):
        raise DataError(f"{p}: not a .npz file (not a zip archive of arrays x and y)")
    try:
        with np.load(p, allow_pickle=False) as npz:
            names = set(npz.files)
            missing = [k for k in ("x", "y") if k not in names]
            if missing:
                raise DataError(
                    f"{p}: missing array(s) {', '.join(missing)}; found {sorted(names)}"
                )
            if "x_test" in names and "y_test" not in names:
                raise DataError(f"{p}: has x_test but no y_test")
            labels = {
                k: check_labels(npz[k], str(p), name=k) for k in ("y", "y_test") if k in names
            }
            if "classes" in names:
                classes = tuple(str(c) for c in npz["classes"])
            else:
                top = max((int(v.max()) for v in labels.values() if v.size), default=-1)
                classes = tuple(str(i) for i in range(top + 1))
            for key, y in labels.items():
                labels[key] = check_labels(y, str(p), len(classes), name=key)
            train = ArrayDataset(
                _to_nchw(npz["x"], p, "x"),
                labels["y"],
                classes,
                str(p),
                ids=_ids(npz, "ids", p),
            )
            test = None
            if "x_test" in names:
                test = ArrayDataset(
                    _to_nchw(npz["x_test"], p, "x_test"),
                    labels["y_test"],
                    classes,
                    f"{p}:test",
                    ids=_ids(npz, "ids_test", p),
                )
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{p}: not a readable .npz file ({exc})") from None
    return train, test


def _ids(npz: Any, key: str, p: Path) -> np.ndarray | None:
    if key not in npz.files:
        return None
    ids = np.asarray(npz[key]).astype(str)
    if ids.ndim != 1 or len(set(ids.tolist())) != len(ids):
        raise DataError(f"{p}: {key} must be a 1-D array of distinct names")
    return ids


def _to_nchw(x: np.ndarray, p: Path, key: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = np.transpose(x, (0, 3, 1, 2))
    elif x.ndim != 4:
        raise DataError(f"{p}: {key} must have 3 or 4 dimensions, got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not np.isfinite(x).all():
            raise DataError(f"{p}: {key} holds NaN or infinite values")
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise DataError(
                f"{p}: float {key} must lie in [0, 1], found {x.min():.3g}..{x.max():.3g}"
            )
        return np.ascontiguousarray(np.round(x * 255).astype(np.uint8))
    raise DataError(f"{p}: {key} must be uint8 or float, got {x.dtype}")


@register_source(
    "npz",
    lambda s: s.endswith(".npz"),
    "an .npz file with arrays x and y (x_test, y_test, ids; task 'counting' for counts)",
)
def _open(spec: Any) -> SourceData:
    train, test = load_npz(spec.source)
    return SourceData(train, None, test, task=npz_task(spec.source))


def npz_task(path: str | Path) -> str:
    """The ``task`` an ``.npz`` file names (classification when it names none).

    Raises:
        DataError: ``task`` is not a single string naming a known task.
    """
    from exitsearch.core.task import CLASSIFICATION, task_names

    with np.load(path, allow_pickle=False) as npz:
        if "task" not in npz.files:
            return CLASSIFICATION
        value = npz["task"]
    if value.ndim != 0 or value.dtype.kind not in "US":
        raise DataError(f"{path}: task must be one string, e.g. 'counting'")
    name = str(value)
    if name not in task_names():
        raise DataError(f"{path}: unknown task {name!r}; known: {', '.join(task_names())}")
    return name
