"""Labelled image collections read one sample at a time, as torch ``Dataset`` objects.

A :class:`Samples` object knows each sample's stable identity (its relative path, its key in a
tar shard, or its index in an array) and label without decoding any image; images are decoded
per sample by ``__getitem__``, in DataLoader workers, through the model's own preprocessing. Array
sources (Fashion-MNIST, ``.npz``) hold their pixels in memory; file sources hold only names.
"""

from __future__ import annotations

import io
from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from exitsearch._io import sha256_of
from exitsearch.data.preprocess import Preprocess
from exitsearch.errors import DataError

__all__ = [
    "MAX_CLASSES",
    "MAX_IMAGE_PIXELS",
    "ArrayDataset",
    "Samples",
    "check_labels",
    "open_image",
]

MAX_CLASSES = 100_000
"""More classes than this is taken for a broken label array (ImageNet-21k has 21,843)."""
MAX_IMAGE_PIXELS = 16_384 * 16_384
"""Larger images are refused as possible decompression bombs (PIL's own limit is 89 M)."""


def check_labels(
    y: Any, origin: str, num_classes: int | None = None, name: str = "labels"
) -> np.ndarray:
    """Labels as int64, checked before anything is sized by them.

    Raises:
        DataError: not a 1-D integer array, negative, or beyond ``num_classes`` (or beyond
            :data:`MAX_CLASSES` when the classes are inferred from the labels).
    """
    y = np.asarray(y)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise DataError(
            f"{origin}: {name} must be a 1-D integer array, got {y.dtype} of shape {y.shape}"
        )
    if y.size == 0:
        return y.astype(np.int64)
    lo, hi = int(y.min()), int(y.max())
    where = f" in {name}" if name != "labels" else ""
    if num_classes is None and hi >= MAX_CLASSES:
        raise DataError(
            f"{origin}: labels must lie in 0..{MAX_CLASSES - 1} (one class per value), "
            f"found {lo}..{hi}{where}"
        )
    limit = num_classes if num_classes is not None else hi + 1
    if lo < 0 or hi >= limit:
        raise DataError(f"{origin}: labels must lie in 0..{limit - 1}, found {lo}..{hi}{where}")
    return y.astype(np.int64)


def open_image(data: bytes | str, origin: str) -> Any:
    """Decode one image file with PIL, refusing decompression bombs with a one-line error."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            raise DataError(
                f"{origin}: image of {w}x{h} pixels is larger than exitsearch reads "
                f"({MAX_IMAGE_PIXELS:,} pixels; a decompression bomb?)"
            )
        im.load()
        return im
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{origin}: not a readable image ({exc})") from None


class Samples(Dataset):
    """Images with integer labels in ``[0, len(classes))`` and a stable identity per sample.

    Subclasses say how to read one raw image (:meth:`read`) and how to name each sample
    (:meth:`ids`); this class applies the preprocessing and builds subsets.
    """

    y: np.ndarray
    classes: tuple[str, ...]
    origin: str
    preprocess: Preprocess | None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_memory(self) -> bool:
        """True when the pixels are held in memory (no decoding, no workers needed)."""
        return False

    @abstractmethod
    def ids(self) -> np.ndarray:
        """Every sample's stable identity, as strings (paths, keys or indices)."""

    @abstractmethod
    def read(self, i: int) -> Any:
        """Sample ``i``'s raw image (a PIL image, or a uint8 ``C x H x W`` array)."""

    @abstractmethod
    def subset(self, index: np.ndarray) -> Samples:
        """The samples at ``index``, in that order, with the same preprocessing."""

    @abstractmethod
    def content_key(self) -> Any:
        """What identifies the pixels and labels (hashed into :meth:`fingerprint`)."""

    def with_preprocess(self, preprocess: Preprocess | None) -> Samples:
        out = self.subset(np.arange(len(self)))
        out.preprocess = preprocess
        return out

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images this dataset yields."""
        if self.preprocess is None:
            raise DataError(f"{self.origin}: no preprocessing set for a file source")
        return self.preprocess.input_size

    def fingerprint(self) -> str:
        """Hash of pixels (or file identities), labels, classes and preprocessing."""
        cached = getattr(self, "_fingerprint", None)
        if cached is None:
            prep = self.preprocess.to_dict() if self.preprocess is not None else None
            cached = sha256_of(self.content_key(), self.y, list(self.classes), prep)
            self._fingerprint = cached
        return cached

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self._prepared(self.read(int(i))), int(self.y[i])

    def _prepared(self, image: Any) -> np.ndarray:
        if self.preprocess is None:
            raise DataError(f"{self.origin}: no preprocessing set for a file source")
        tf = getattr(self, "_tf", None)
        if tf is None:
            tf = self.preprocess.image_transform()
            self._tf = tf
        return tf(image)

    def batch(self, index: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Preprocessed uint8 images at ``index`` as one ``N x C x H x W`` tensor (in-process)."""
        index = np.asarray(index, dtype=np.int64)
        if index.size == 0:
            return torch.empty((0, *self.image_shape), dtype=torch.uint8)
        return torch.from_numpy(np.stack([self[int(i)][0] for i in index]))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_tf", None)
        return state


class ArrayDataset(Samples):
    """Images (uint8, N x C x H x W) held in memory; identity = index (or ``ids`` when given)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        classes: tuple[str, ...],
        origin: str = "",
        *,
        ids: np.ndarray | None = None,
        preprocess: Preprocess | None = None,
    ) -> None:
        if x.ndim != 4:
            raise DataError(f"{origin}: images must be N x C x H x W, got shape {x.shape}")
        if x.dtype != np.uint8:
            raise DataError(f"{origin}: images must be uint8 (0..255), got {x.dtype}")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{origin}: {len(x)} images but labels of shape {y.shape}")
        self.x = x
        self.y = check_labels(y, origin, len(classes))
        self.classes = tuple(classes)
        self.origin = origin
        self._ids = None if ids is None else np.asarray(ids).astype(str)
        if self._ids is not None and len(self._ids) != len(x):
            raise DataError(f"{origin}: {len(x)} images but {len(self._ids)} ids")
        self.preprocess = preprocess

    @property
    def in_memory(self) -> bool:
        return True

    @property
    def native_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.passthrough:
            return self.native_shape
        return super().image_shape

    @property
    def passthrough(self) -> bool:
        """True when preprocessing leaves the stored pixels as they are (fast batched path)."""
        p = self.preprocess
        return p is None or p.is_identity_on(self.x.shape[2], self.x.shape[3])

    def ids(self) -> np.ndarray:
        if self._ids is not None:
            return self._ids
        return np.arange(len(self)).astype(str)

    def read(self, i: int) -> Any:
        from PIL import Image

        img = self.x[i]
        return Image.fromarray(img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0)))

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        if self.passthrough:
            return self.x[int(i)], int(self.y[i])
        return super().__getitem__(i)

    def batch(self, index: np.ndarray | torch.Tensor) -> torch.Tensor:
        if self.passthrough:
            return torch.from_numpy(self.x[np.asarray(index, dtype=np.int64)])
        return super().batch(index)

    def subset(self, index: np.ndarray) -> ArrayDataset:
        index = np.asarray(index, dtype=np.int64)
        return ArrayDataset(
            self.x[index],
            self.y[index],
            self.classes,
            self.origin,
            ids=self.ids()[index],
            preprocess=self.preprocess,
        )

    def with_preprocess(self, preprocess: Preprocess | None) -> ArrayDataset:
        out = ArrayDataset(
            self.x, self.y, self.classes, self.origin, ids=self._ids, preprocess=preprocess
        )
        return out

    def content_key(self) -> Any:
        return sha256_of(self.x, self.y.astype(np.int64), list(self.classes))

    def fingerprint(self) -> str:
        # Passthrough arrays hash as before the preprocessing existed, so caches stay valid.
        if self.passthrough:
            cached = getattr(self, "_fingerprint", None)
            if cached is None:
                cached = self.content_key()
                self._fingerprint = cached
            return cached
        return super().fingerprint()
