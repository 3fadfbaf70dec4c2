"""BackboneSpec and the typed parsing of ``key=value`` overrides."""

from __future__ import annotations

import pytest

from exitsearch.backbone import ALLOWED_OVERRIDES, BackboneSpec, parse_overrides
from exitsearch.errors import ConfigError


def test_overrides_are_typed():
    got = parse_overrides(
        [
            "img_size=28",
            "mlp_ratio=2.5",
            "class_token=false",
            "global_pool=avg",
            "drop_path_rate=0.1",
            "reg-tokens=4",  # dashes are accepted for underscores
            " depth = 6 ",
        ]
    )
    assert got == {
        "img_size": 28,
        "mlp_ratio": 2.5,
        "class_token": False,
        "global_pool": "avg",
        "drop_path_rate": 0.1,
        "reg_tokens": 4,
        "depth": 6,
    }
    assert type(got["img_size"]) is int and type(got["class_token"]) is bool


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("1", True), ("yes", True), ("False", False), ("0", False), ("no", False)],
)
def test_boolean_spellings(text, value):
    assert parse_overrides([f"class_token={text}"]) == {"class_token": value}


def test_nothing_to_parse():
    assert parse_overrides(None) == {}
    assert parse_overrides([]) == {}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("img_size", "key=value"),
        ("img_size=", "key=value"),
        ("colour=red", "unknown override"),
        ("depth=six", r"takes an? int"),
        ("depth=2.5", r"takes an? int"),
        ("mlp_ratio=wide", "takes a float"),
        ("class_token=maybe", "takes a bool"),
    ],
)
def test_bad_overrides(item, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_overrides([item])
    assert "\n" not in str(info.value)


def test_unknown_override_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as info:
        parse_overrides(["colour=red"])
    assert all(name in str(info.value) for name in ALLOWED_OVERRIDES)


def test_spec_refuses_unknown_overrides():
    with pytest.raises(ConfigError, match="colour"):
        BackboneSpec("vit_tiny_patch16_224", overrides={"colour": "red"})


def test_spec_round_trip():
    spec = BackboneSpec("vit_tiny_patch16_224", {"depth": 3}, checkpoint="w.safetensors")
    assert BackboneSpec.from_dict(spec.to_dict()) == spec
    assert BackboneSpec.from_dict({"model": "m"}) == BackboneSpec("m")
