"""Training exit heads (classifier-wise, all at once) and caching their predictions; the epoch
checkpoints every training resumes from."""

from exitsearch.heads.bank import HeadBank
from exitsearch.training.checkpoint import EpochCheckpoint, Resumed
from exitsearch.training.head_training import (
    HeadStatus,
    HeadTrainConfig,
    HeadTrainResult,
    train_heads,
)
from exitsearch.training.predict import Predictions, SplitPredictions, predict

__all__ = [
    "EpochCheckpoint",
    "HeadBank",
    "HeadStatus",
    "HeadTrainConfig",
    "HeadTrainResult",
    "Predictions",
    "Resumed",
    "SplitPredictions",
    "predict",
    "train_heads",
]
