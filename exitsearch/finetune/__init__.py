"""Fine-tuning a chosen configuration: classifier-wise, end-to-end, layer-wise (Multi-Exit ViT),
LGViT's two-stage self-distillation and MEViT's sandwich rule.

* :func:`create_strategy` / :func:`register_sampler`: the strategy registry; each strategy is a
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

from typing import TYPE_CHECKING

from exitsearch._lazy import lazy_exports

# The strategies of the papers, in the order they are compared (each registers itself in its
# module; the registry imports them on first use).
PAPER_STRATEGIES = ("classifier-wise", "end-to-end", "layer-wise", "lgvit", "mevit")

if TYPE_CHECKING:
    from exitsearch.finetune.base import Batch, FinetuneStrategy, Hyperparameters, Phase
    from exitsearch.finetune.classifier_wise import ClassifierWise, ClassifierWiseHyperparameters
    from exitsearch.finetune.compare import compare_strategies
    from exitsearch.finetune.end_to_end import EndToEnd, EndToEndHyperparameters
    from exitsearch.finetune.evaluate import refit_operating_points
    from exitsearch.finetune.job import FinetuneResult, finetune, make_recipe
    from exitsearch.finetune.layer_wise import LayerWise, LayerWiseHyperparameters
    from exitsearch.finetune.lgvit import AligningModule, LGViT, LGViTHyperparameters
    from exitsearch.finetune.mevit import MEViT, MEViTHyperparameters
    from exitsearch.finetune.net import MultiExitNet
    from exitsearch.finetune.recipe import Recipe, SourceBundle
    from exitsearch.finetune.registry import (
        create_strategy,
        get_strategy_class,
        list_strategies,
        register_sampler,
    )
    from exitsearch.finetune.report import finetune_report, write_comparison
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
    "register_sampler",
    "train_configuration",
    "write_comparison",
]

__getattr__, __dir__ = lazy_exports(
    globals(),
    {
        "AligningModule": "exitsearch.finetune.lgvit",
        "Batch": "exitsearch.finetune.base",
        "ClassifierWise": "exitsearch.finetune.classifier_wise",
        "ClassifierWiseHyperparameters": "exitsearch.finetune.classifier_wise",
        "EndToEnd": "exitsearch.finetune.end_to_end",
        "EndToEndHyperparameters": "exitsearch.finetune.end_to_end",
        "FinetuneResult": "exitsearch.finetune.job",
        "FinetuneStrategy": "exitsearch.finetune.base",
        "Hyperparameters": "exitsearch.finetune.base",
        "LGViT": "exitsearch.finetune.lgvit",
        "LGViTHyperparameters": "exitsearch.finetune.lgvit",
        "LayerWise": "exitsearch.finetune.layer_wise",
        "LayerWiseHyperparameters": "exitsearch.finetune.layer_wise",
        "MEViT": "exitsearch.finetune.mevit",
        "MEViTHyperparameters": "exitsearch.finetune.mevit",
        "MultiExitNet": "exitsearch.finetune.net",
        "Phase": "exitsearch.finetune.base",
        "Recipe": "exitsearch.finetune.recipe",
        "SourceBundle": "exitsearch.finetune.recipe",
        "TrainSettings": "exitsearch.finetune.settings",
        "TrainingLog": "exitsearch.finetune.trainer",
        "compare_strategies": "exitsearch.finetune.compare",
        "create_strategy": "exitsearch.finetune.registry",
        "finetune": "exitsearch.finetune.job",
        "finetune_report": "exitsearch.finetune.report",
        "get_strategy_class": "exitsearch.finetune.registry",
        "list_strategies": "exitsearch.finetune.registry",
        "load_checkpoint": "exitsearch.finetune.trainer",
        "make_recipe": "exitsearch.finetune.job",
        "refit_operating_points": "exitsearch.finetune.evaluate",
        "register_sampler": "exitsearch.finetune.registry",
        "train_configuration": "exitsearch.finetune.trainer",
        "write_comparison": "exitsearch.finetune.report",
    },
)
