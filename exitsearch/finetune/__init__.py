"""Fine-tuning a chosen configuration: classifier-wise, end-to-end, layer-wise (paper 000),
LGViT's two-stage self-distillation (paper 001) and MEViT's sandwich rule (paper 004).

* :func:`create_strategy` / :func:`register_strategy`: the strategy registry; each strategy is a
  :class:`FinetuneStrategy` with a dataclass of :class:`Hyperparameters` that checks itself.
* :func:`finetune` runs a :class:`Recipe` (:func:`make_recipe`, or a bundle's ``train.yaml``
  read by :meth:`Recipe.from_yaml`): trains with checkpoints and exact resume, scores the new
  weights with the search's evaluator, re-fits the thresholds on validation, and writes a new
  bundle (its ``train.yaml`` is the recipe) and :func:`finetune_report`.
* :func:`compare_strategies`: every strategy on one bundle, and :func:`write_comparison`'s
  table and plot.

Example:
    >>> from exitsearch.finetune import finetune, make_recipe, TrainSettings
    >>> recipe = make_recipe("bundle", "lgvit", TrainSettings(epochs=3))  # doctest: +SKIP
    >>> result = finetune(recipe, "results/finetune/lgvit")  # doctest: +SKIP
    >>> result.report["after"]["matched"]["test"]["accuracy"]  # doctest: +SKIP
"""

# Importing the strategy modules registers them.
from exitsearch.finetune import classifier_wise, end_to_end, layer_wise, lgvit, mevit  # noqa: F401
from exitsearch.finetune.base import Batch, FinetuneStrategy, Hyperparameters, Phase
from exitsearch.finetune.classifier_wise import ClassifierWise, ClassifierWiseHyperparameters
from exitsearch.finetune.compare import PAPER_STRATEGIES, compare_strategies
from exitsearch.finetune.end_to_end import EndToEnd, EndToEndHyperparameters
from exitsearch.finetune.evaluate import refit_operating_points
from exitsearch.finetune.layer_wise import LayerWise, LayerWiseHyperparameters
from exitsearch.finetune.lgvit import AligningModule, LGViT, LGViTHyperparameters
from exitsearch.finetune.mevit import MEViT, MEViTHyperparameters
from exitsearch.finetune.net import MultiExitNet
from exitsearch.finetune.recipe import Recipe, SourceBundle
from exitsearch.finetune.registry import (
    create_strategy,
    get_strategy_class,
    list_strategies,
    register_strategy,
)
from exitsearch.finetune.report import finetune_report, write_comparison
from exitsearch.finetune.run import FinetuneResult, finetune, make_recipe
from exitsearch.finetune.settings import TrainSettings
from exitsearch.finetune.trainer import TrainingLog, load_checkpoint, train_configuration

__all__ = [
    "PAPER_STRATEGIES",
    "AligningModule",
    "Batch",
    "ClassifierWise",
    "ClassifierWiseHyperparameters",
    "EndToEnd",
    "EndToEndHyperparameters",
    "FinetuneResult",
    "FinetuneStrategy",
    "Hyperparameters",
    "LGViT",
    "LGViTHyperparameters",
    "LayerWise",
    "LayerWiseHyperparameters",
    "MEViT",
    "MEViTHyperparameters",
    "MultiExitNet",
    "Phase",
    "Recipe",
    "SourceBundle",
    "TrainSettings",
    "TrainingLog",
    "compare_strategies",
    "create_strategy",
    "finetune",
    "finetune_report",
    "get_strategy_class",
    "list_strategies",
    "load_checkpoint",
    "make_recipe",
    "refit_operating_points",
    "register_strategy",
    "train_configuration",
    "write_comparison",
]
