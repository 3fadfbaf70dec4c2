"""Datasets, splits and batch preparation."""

from exitsearch.data.sources import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    ArrayDataset,
    load_fashion_mnist,
    load_image_folder,
    load_npz,
)
from exitsearch.data.splits import DataSpec, DataSplits, load_splits
from exitsearch.data.transforms import InputTransform, augment, iterate_batches

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "ArrayDataset",
    "DataSpec",
    "DataSplits",
    "InputTransform",
    "augment",
    "iterate_batches",
    "load_fashion_mnist",
    "load_image_folder",
    "load_npz",
    "load_splits",
]
