"""PauseConfig: parsing, validation, rounding, the paper's Table 1, ExitConfig interplay."""

from __future__ import annotations

import pytest

from exitsearch.core.config import ExitConfig
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadSpec
from exitsearch.pausing import PAPER_TABLE1, PauseConfig, paper_table1


def test_parse_and_round_trip():
    cfg = PauseConfig.parse(" 5:0.4, 3:20% ")
    assert cfg.fractions == {3: 0.2, 5: 0.4}  # sorted by layer, percent understood
    assert cfg.key == "3:0.2,5:0.4" and cfg.layers == (3, 5)
    assert PauseConfig.parse(cfg.key) == cfg
    assert PauseConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict() == {"3": 0.2, "5": 0.4}
    assert PauseConfig.parse("none") == PauseConfig.parse("") == PauseConfig()
    assert not PauseConfig() and PauseConfig().label == "no pausing"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("3=0.2", "looks like"),
        ("3:x", "looks like"),
        ("3:0.2,3:0.3", "appears twice"),
        ("0:0.2", "layer >= 1"),
        ("3:0", "0 < fraction < 1"),
        ("3:1.5", "0 < fraction < 1"),
        ("3:0.6,5:0.4", "sum to less than 1"),
    ],
)
def test_bad_configurations_say_what_is_expected(text, match):
    with pytest.raises(ConfigError, match=match):
        PauseConfig.parse(text)


def test_counts_round_fractions_of_the_original_patch_count():
    # 0.2 * 49 = 9.8 -> 10; 0.3 * 49 = 14.7 -> 15; Python's round sends halves to the even
    # neighbour: 0.5 * 49 = 24.5 -> 24
    assert PauseConfig({3: 0.2, 5: 0.3}).counts(49) == {3: 10, 5: 15}
    assert PauseConfig({2: 0.5}).counts(49) == {2: 24}


def test_check_needs_the_backbone():
    PauseConfig({11: 0.5}).check(depth=12, num_patches=49)
    with pytest.raises(ConfigError, match=r"outside 1\.\.11"):
        PauseConfig({12: 0.5}).check(depth=12, num_patches=49)
    # 0.3 and 0.69 of 49 round to 15 + 34: all 49 patches
    with pytest.raises(ConfigError, match="at least one must stay"):
        PauseConfig({3: 0.3, 5: 0.69}).check(depth=12, num_patches=49)


def test_paper_table1_read_relative_to_the_remaining_tokens():
    configs = paper_table1()
    assert len(configs) == len(PAPER_TABLE1) == 13
    # single-layer columns are the same in both readings
    for raw, cfg in zip(PAPER_TABLE1, configs, strict=True):
        if len(raw) == 1:
            assert cfg.fractions == raw
    # the last column is infeasible as fractions of the original count (0.4 * 3 = 1.2) ...
    with pytest.raises(ConfigError, match="sum to less than 1"):
        PauseConfig(PAPER_TABLE1[-1])
    # ... and becomes 0.4, 0.4 * 0.6, 0.4 * 0.36 of the original count
    assert configs[-1].fractions == {3: 0.4, 5: 0.24, 7: 0.144}
    for cfg in configs:
        cfg.check(depth=12, num_patches=49)


def test_exit_config_pause_converts_both_ways():
    cfg = PauseConfig.parse("3:0.2,5:0.4")
    exit_cfg = ExitConfig((HeadSpec("linear", 4),), thresholds=(0.9,), pause=cfg.fractions)
    assert PauseConfig.from_dict(exit_cfg.pause) == cfg
    assert PauseConfig.from_dict(exit_cfg.to_dict()["pause"]) == cfg
    assert exit_cfg.placement_key.endswith(f"pause {cfg.key}")
