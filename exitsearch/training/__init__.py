"""Training exit heads (classifier-wise, all at once) and caching their predictions."""

from exitsearch.training.bank import HeadBank
from exitsearch.training.heads import HeadStatus, HeadTrainConfig, HeadTrainResult, train_heads
from exitsearch.training.predict import Predictions, SplitPredictions, exit_statistics, predict

__all__ = [
    "HeadBank",
    "HeadStatus",
    "HeadTrainConfig",
    "HeadTrainResult",
    "Predictions",
    "SplitPredictions",
    "exit_statistics",
    "predict",
    "train_heads",
]
