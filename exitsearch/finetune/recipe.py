"""The training recipe: everything needed to rerun a fine-tuning, as the bundle's ``train.yaml``.

::

    format: exitsearch-finetune-recipe
    version: 1
    strategy: lgvit                     # a registered strategy
    hyperparameters: {alpha: 0.01, ...} # the strategy's, all of them (defaults written out)
    training: {epochs: 3, batch_size: 128, lr: 0.0001, ...}   # TrainSettings
    data: {source: fashion-mnist, data_dir: null, val_size: null, seed: 0, limit: null}
    source:
      bundle: /abs/path/of/the/source/bundle
      manifest_sha256: <the source bundle's manifest checksum>
    exit_config: {...}                  # the configuration trained (for reading; not used)

Read with ``yaml.safe_load`` only; every section is validated and a problem is one
:class:`~exitsearch.errors.ConfigError` line naming the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from exitsearch._io import sha256_of
from exitsearch.data import DataSpec
from exitsearch.errors import ConfigError, ExitSearchError
from exitsearch.finetune.base import FinetuneStrategy
from exitsearch.finetune.registry import create_strategy
from exitsearch.finetune.settings import TrainSettings

__all__ = ["RECIPE_FORMAT", "RECIPE_VERSION", "Recipe", "SourceBundle"]

RECIPE_FORMAT = "exitsearch-finetune-recipe"
RECIPE_VERSION = 1
_KEYS = ("format", "version", "strategy", "hyperparameters", "training", "data", "source")


@dataclass(frozen=True)
class SourceBundle:
    """The bundle a recipe starts from, and the checksum that identifies it."""

    bundle: str
    manifest_sha256: str

    def __post_init__(self) -> None:
        if not isinstance(self.bundle, str) or not self.bundle:
            raise ConfigError(f"`source.bundle` must be a folder path, got {self.bundle!r}")
        if not isinstance(self.manifest_sha256, str) or len(self.manifest_sha256) != 64:
            raise ConfigError(
                f"`source.manifest_sha256` must be a SHA-256 hex digest, got "
                f"{self.manifest_sha256!r}"
            )


@dataclass(frozen=True)
class Recipe:
    """A fine-tuning to run: strategy and hyperparameters, training settings, data, source.

    Building one validates it: the strategy must be registered and its hyperparameters valid
    (they are stored complete, defaults included, so that a later change of a default does not
    change what a recipe means).

    Raises:
        ConfigError: unknown strategy, hyperparameter or setting; invalid value.
    """

    strategy: str
    source: SourceBundle
    training: TrainSettings = field(default_factory=TrainSettings)
    data: DataSpec = field(default_factory=DataSpec)
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    exit_config: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.hyperparameters, Mapping):
            raise ConfigError(
                f"`hyperparameters` must be a mapping, got {type(self.hyperparameters).__name__}"
            )
        hp = create_strategy(self.strategy, self.hyperparameters).hparams
        object.__setattr__(self, "hyperparameters", hp.to_dict())

    def build_strategy(self) -> FinetuneStrategy:
        """A fresh strategy object with this recipe's hyperparameters."""
        return create_strategy(self.strategy, self.hyperparameters)

    @property
    def identity(self) -> str:
        """Hash of what determines the result (not where the source bundle lies)."""
        return sha256_of(
            "finetune-recipe-v1",
            self.strategy,
            dict(self.hyperparameters),
            self.training.to_dict(),
            self.data.to_dict(),
            self.source.manifest_sha256,
        )

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": RECIPE_FORMAT,
            "version": RECIPE_VERSION,
            "strategy": self.strategy,
            "hyperparameters": dict(self.hyperparameters),
            "training": self.training.to_dict(),
            "data": self.data.to_dict(),
            "source": {
                "bundle": self.source.bundle,
                "manifest_sha256": self.source.manifest_sha256,
            },
        }
        if self.exit_config is not None:
            doc["exit_config"] = dict(self.exit_config)
        return doc

    def to_yaml(self) -> str:
        header = (
            "# exitsearch fine-tuning recipe, written by `exitsearch finetune`.\n"
            "# Rerun the same training with:  exitsearch finetune --recipe <this file> --out DIR\n"
        )
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, doc: Any, where: str = "recipe") -> Recipe:
        """Validate a parsed recipe document.

        Raises:
            ConfigError: not a recipe, unsupported version, a missing, unknown or invalid key.
        """
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{where}: a recipe is a YAML mapping, got {type(doc).__name__}")
        if doc.get("format") != RECIPE_FORMAT:
            hint = (
                " (this is the stub `exitsearch export` writes; a fine-tuning recipe is written "
                "by `exitsearch finetune` into the new bundle's train.yaml)"
                if "backbone" in doc and "heads" in doc
                else ""
            )
            raise ConfigError(
                f"{where}: not a fine-tuning recipe (`format: {RECIPE_FORMAT}` missing){hint}"
            )
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(f"{where}: `version` must be a positive integer, got {version!r}")
        if version > RECIPE_VERSION:
            raise ConfigError(
                f"{where}: recipe version {version} is newer than this exitsearch reads "
                f"({RECIPE_VERSION}); upgrade exitsearch"
            )
        unknown = sorted(set(doc) - set(_KEYS) - {"exit_config"})
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join((*_KEYS, 'exit_config'))}"
            )
        for key in ("strategy", "source"):
            if key not in doc:
                raise ConfigError(f"{where}: `{key}` is missing")
        if not isinstance(doc["strategy"], str):
            raise ConfigError(f"{where}: `strategy` must be a name, got {doc['strategy']!r}")
        try:
            source = _section(doc, "source", where)
            missing = [k for k in ("bundle", "manifest_sha256") if k not in source]
            if missing:
                raise ConfigError(f"`source.{missing[0]}` is missing")
            extra = sorted(set(source) - {"bundle", "manifest_sha256"})
            if extra:
                raise ConfigError(f"unknown key(s) in `source`: {', '.join(map(repr, extra))}")
            data = _section(doc, "data", where)
            data_keys = {f.name for f in fields(DataSpec)}
            if set(data) - data_keys:
                raise ConfigError(
                    f"unknown key(s) in `data`: {', '.join(map(repr, sorted(set(data) - data_keys)))}; "
                    f"known: {', '.join(sorted(data_keys))}"
                )
            exit_config = doc.get("exit_config")
            return cls(
                strategy=doc["strategy"],
                source=SourceBundle(**source),
                training=TrainSettings.from_dict(_section(doc, "training", where)),
                data=DataSpec(**data),
                hyperparameters=_section(doc, "hyperparameters", where),
                exit_config=dict(exit_config) if isinstance(exit_config, Mapping) else None,
            )
        except ExitSearchError as exc:
            if str(exc).startswith(where):
                raise
            raise ConfigError(f"{where}: {exc}") from None
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Recipe:
        """Read and validate the recipe file at ``path`` (``yaml.safe_load``).

        Raises:
            ConfigError: unreadable file, invalid YAML, or an invalid recipe.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{p}: recipe file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: cannot read the recipe ({exc})") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({' '.join(str(exc).split())})") from None
        return cls.from_dict(doc, str(p))


def _section(doc: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"`{key}` must be a mapping, got {type(value).__name__}")
    return dict(value)
