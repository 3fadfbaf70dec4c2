"""Datasets, splits, the model's own preprocessing and batch loading."""

from exitsearch.data.loader import default_workers, iterate_batches, set_default_workers
from exitsearch.data.preprocess import Preprocess
from exitsearch.data.samples import ArrayDataset, Samples, check_labels
from exitsearch.data.sources import SourceData, open_source, register_source, source_names
from exitsearch.data.sources.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    load_fashion_mnist,
)
from exitsearch.data.sources.folder import ImageFolderDataset, load_image_folder
from exitsearch.data.sources.npz import load_npz
from exitsearch.data.sources.webdataset import TarShardDataset, load_shards
from exitsearch.data.splits import DataSpec, DataSplits, load_splits, split_index, split_overlap
from exitsearch.data.transforms import Augment, InputTransform, augment

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "ArrayDataset",
    "Augment",
    "DataSpec",
    "DataSplits",
    "ImageFolderDataset",
    "InputTransform",
    "Preprocess",
    "Samples",
    "SourceData",
    "TarShardDataset",
    "augment",
    "check_labels",
    "default_workers",
    "iterate_batches",
    "load_fashion_mnist",
    "load_image_folder",
    "load_npz",
    "load_shards",
    "load_splits",
    "open_source",
    "register_source",
    "set_default_workers",
    "source_names",
    "split_index",
    "split_overlap",
]
