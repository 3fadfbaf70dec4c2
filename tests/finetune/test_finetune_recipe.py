"""The recipe: round trip through YAML, and one-line errors for bad recipes."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml
from finetune_world import FAST, FinetuneWorld

from exitsearch.data import DataSpec
from exitsearch.errors import ConfigError
from exitsearch.finetune import Recipe, TrainSettings, make_recipe


@pytest.fixture(scope="module")
def recipe(ft_world: FinetuneWorld) -> Recipe:
    return make_recipe(ft_world.lgvit, "lgvit", FAST, hyperparameters={"alpha": 0.5})


def test_recipe_round_trips_through_yaml(recipe, tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(recipe.to_yaml())
    again = Recipe.from_yaml(path)
    assert again == recipe and again.identity == recipe.identity
    doc = yaml.safe_load(path.read_text())
    # every hyperparameter is written out, defaults included
    assert doc["hyperparameters"]["alpha"] == 0.5 and doc["hyperparameters"]["gamma"] == 0.3
    assert doc["training"] == FAST.to_dict()
    assert doc["exit_config"]["exits"][0]["type"] == "lph"


def test_a_recipe_on_the_legacy_split_round_trips(recipe, tmp_path):
    # the embedded backbone's data are split by the seeded permutation it was trained with; the
    # rule is written out and read back, so a finished fine-tuning of it is recognised as such
    legacy = dataclasses.replace(recipe, data=DataSpec(limit=256, split="permutation"))
    path = tmp_path / "train.yaml"
    path.write_text(legacy.to_yaml())
    assert yaml.safe_load(path.read_text())["data"]["split"] == "permutation"
    again = Recipe.from_yaml(path)
    assert again == legacy and again.identity == legacy.identity != recipe.identity


def test_recipe_takes_the_bundles_data_by_default(ft_world, recipe):
    assert recipe.data == DataSpec(limit=256)
    assert make_recipe(ft_world.lgvit, "mevit", data=DataSpec(limit=64)).data.limit == 64
    assert make_recipe(ft_world.lgvit, "mevit").training == TrainSettings()


def test_identity_ignores_where_the_source_lies(recipe):
    import dataclasses

    moved = dataclasses.replace(
        recipe, source=dataclasses.replace(recipe.source, bundle="/elsewhere")
    )
    assert moved.identity == recipe.identity
    other = dataclasses.replace(recipe, training=TrainSettings(epochs=2))
    assert other.identity != recipe.identity


def _edit(recipe: Recipe, path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    doc = recipe.to_dict()
    change(doc)
    path.write_text(yaml.safe_dump(doc))
    return path


def _set(keys: str, value):  # type: ignore[no-untyped-def]
    def change(doc):  # type: ignore[no-untyped-def]
        *parents, last = keys.split(".")
        for k in parents:
            doc = doc[k]
        if value is KeyError:
            del doc[last]
        else:
            doc[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_set("format", KeyError), "not a fine-tuning recipe"),
        (_set("version", 2), "recipe version 2 is newer than this exitsearch reads"),
        (_set("version", "1"), "`version` must be a positive integer"),
        (_set("strategy", "layerwise"), "unknown fine-tuning strategy 'layerwise'; known: "),
        (_set("strategy", ["lgvit"]), "`strategy` must be a name"),
        (_set("hyperparameters.alpah", 1), "has no hyperparameter 'alpah'; known: alpha"),
        (_set("hyperparameters.gamma", 2), "`0 <= gamma <= 1` must hold"),
        (_set("hyperparameters", [1]), "`hyperparameters` must be a mapping"),
        (_set("training.epochs", 0), "`epochs >= 1` must hold"),
        (_set("training.lr", "fast"), "`lr` must be a number"),
        (_set("training.epoch", 3), "unknown training setting(s) 'epoch'; known: epochs"),
        (_set("data.limit", 0), "`limit >= 1` must hold"),
        (_set("data.splt", "hash"), "unknown key(s) in `data`: 'splt'"),
        (_set("data.split", "random"), "unknown split rule 'random'"),
        (_set("source", KeyError), "`source` is missing"),
        (_set("source.manifest_sha256", "abc"), "must be a SHA-256 hex digest"),
        (_set("source.bundle", KeyError), "`source.bundle` is missing"),
        (_set("extra", 1), "unknown key(s) 'extra'"),
    ],
)
def test_bad_recipes_are_one_line_errors(recipe, tmp_path, change, match):
    path = _edit(recipe, tmp_path / "bad.yaml", change)
    with pytest.raises(ConfigError) as err:
        Recipe.from_yaml(path)
    msg = str(err.value)
    assert match in msg, msg
    assert msg.startswith(str(path)) and "\n" not in msg


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- a\n- b\n", "a recipe is a YAML mapping, got list"),
        ("strategy: [\n", "not valid YAML"),
        ("", "a recipe is a YAML mapping, got NoneType"),
    ],
)
def test_unreadable_recipes_are_one_line_errors(tmp_path, text, match):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        Recipe.from_yaml(path)
    assert "\n" not in str(err.value)


def test_the_export_stub_is_named_as_such(ft_world, tmp_path):
    stub = Path(shutil.copy(ft_world.lgvit / "train.yaml", tmp_path / "train.yaml"))
    with pytest.raises(ConfigError, match="this is the stub `exitsearch export` writes"):
        Recipe.from_yaml(stub)
    with pytest.raises(ConfigError, match="recipe file not found"):
        Recipe.from_yaml(tmp_path / "missing.yaml")
