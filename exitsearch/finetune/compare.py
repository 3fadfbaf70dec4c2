"""Every strategy on one bundle with the same data, epochs and seed, and the comparison."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exitsearch._io import portable_path
from exitsearch.data import DataSpec
from exitsearch.errors import TrainingDivergedError
from exitsearch.finetune import PAPER_STRATEGIES
from exitsearch.finetune.job import finetune, make_recipe
from exitsearch.finetune.registry import get_strategy_class
from exitsearch.finetune.report import write_comparison
from exitsearch.finetune.settings import TrainSettings
from exitsearch.progress import NullProgress, Progress

__all__ = ["PAPER_STRATEGIES", "compare_strategies"]

SOURCE_CACHE = "source_predictions"


def compare_strategies(
    bundle: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    strategies: Sequence[str] = PAPER_STRATEGIES,
    training: TrainSettings | None = None,
    data: DataSpec | None = None,
    hyperparameters: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    progress: Progress | None = None,
    device: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``bundle`` with each of ``strategies`` into ``out_dir/<strategy>/`` and write
    ``comparison.json``/``.csv``/``.png`` into ``out_dir``.

    Every strategy gets the same data, training settings and seed; each folder resumes or is
    reused on a rerun (see :func:`~exitsearch.finetune.job.finetune`). A strategy that diverges
    is recorded in the comparison and the others still run.

    Args:
        hyperparameters: per strategy name, hyperparameters that differ from the defaults.

    Raises:
        ConfigError: an unknown strategy (before anything runs), or invalid hyperparameters.
    """
    progress = progress or NullProgress()
    for name in strategies:
        get_strategy_class(name)
    hyperparameters = dict(hyperparameters or {})
    unknown = sorted(set(hyperparameters) - set(strategies))
    if unknown:
        from exitsearch.errors import ConfigError

        raise ConfigError(
            f"hyperparameters given for strategies that are not compared: {', '.join(unknown)}"
        )
    training = training or TrainSettings()
    recipes = {
        name: make_recipe(bundle, name, training, data, dict(hyperparameters.get(name, {})))
        for name in strategies
    }
    out = Path(out_dir)
    reports: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for name, recipe in recipes.items():
        progress.log(f"strategy {name}")
        try:
            result = finetune(
                recipe,
                out / name,
                progress=progress,
                overwrite=overwrite,
                source_cache=out / SOURCE_CACHE,
                device=device,
            )
        except TrainingDivergedError as exc:
            failures[name] = f"diverged: {' '.join(str(exc).split())}"
            progress.log(failures[name])
            continue
        reports[name] = result.report
    return write_comparison(
        reports, out, failures, title=f"fine-tuning strategies on {portable_path(bundle)}"
    )
