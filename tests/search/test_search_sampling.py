"""Trials to configurations: free, uniform and LGViT placements use only trained heads."""

from __future__ import annotations

import itertools

import optuna
import pytest

from exitsearch.core.config import ExitConfig
from exitsearch.heads import HeadSpec
from exitsearch.heads.mappings import split_halves
from exitsearch.search.sampling import ConfigSampler
from exitsearch.search.space import load_search_space, parse_search_space

DEPTH = 12


@pytest.fixture(autouse=True)
def quiet_optuna():
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    optuna.logging.set_verbosity(before)


def _configs(sampler: ConfigSampler, n: int, seed: int = 0) -> list[tuple[dict, ExitConfig | None]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        config = sampler.sample(trial)
        out.append((dict(trial.params), config))
        study.tell(trial, 0.0)
    return out


def test_free_placement_uses_only_trained_heads(world):
    space = parse_search_space({"heads": {"linear": {}, "mlp": {}}})  # every criterion
    sampler = ConfigSampler(space, world.preds.heads, depth=6)
    trained = set(world.preds.heads)
    seen = set()
    for params, config in _configs(sampler, 200):
        if config is None:
            assert all(params[f"exit@{m}"] == "none" for m in (1, 2, 3, 4, 5))
            continue
        assert set(config.exits) <= trained
        for s in config.exits:
            assert params[f"exit@{s.location}"] == s.variant
        assert len(config.thresholds) == len(config.exits)
        seen |= set(config.exits)
        # the world's linear heads carry predictors, but the mlp heads do not: no uncertainty
        assert config.criterion != "uncertainty"
    assert seen == trained  # every trained head gets used sometime
    assert sampler.criteria == ["confidence", "entropy", "patience"]


@pytest.fixture(scope="module")
def uniform_sampler() -> ConfigSampler:
    space = parse_search_space(
        {
            "placement": "uniform",
            "heads": {"linear": {}, "mlp": {"half": "shallow"}},
            "num_exits": {"low": 1, "high": 5},
            "criteria": ["confidence"],
            "uncertainty": False,
        }
    )
    return ConfigSampler(space, space.candidate_heads(DEPTH), DEPTH)


# Evenly spaced over blocks 1..11 of a 12-block backbone: targets i * 12 / (n + 1).
UNIFORM = {1: [6], 2: [4, 8], 3: [3, 6, 9], 4: [2, 5, 7, 10], 5: [2, 4, 6, 8, 10]}


@pytest.mark.parametrize(("n", "expected"), list(UNIFORM.items()))
def test_uniform_locations_are_evenly_spaced(uniform_sampler, n, expected):
    assert uniform_sampler.uniform_locations(n) == expected


def test_uniform_placement_samples_evenly_spaced_exits_of_one_type(uniform_sampler):
    trained = set(uniform_sampler.heads)
    for params, config in _configs(uniform_sampler, 120, seed=1):
        n, head_type = params["num_exits"], params["head"]
        assert 1 <= n <= 5
        if head_type == "linear":
            assert config is not None
            assert list(config.locations) == UNIFORM[n]
        elif config is not None:  # mlp is trained in the shallow half only (blocks 1..6)
            assert list(config.locations) == [m for m in UNIFORM[n] if m <= 6]
        if config is not None:
            assert {s.type for s in config.exits} == {head_type}
            assert set(config.exits) <= trained


def test_lgvit_placement_local_shallow_global_deep_monotone_mappings():
    space = load_search_space("lgvit")
    heads = space.candidate_heads(DEPTH)
    sampler = ConfigSampler(space, heads, DEPTH)
    trained = set(heads)
    both_halves = 0
    for params, config in _configs(sampler, 300, seed=2):
        chosen = [m for m in range(1, DEPTH) if params[f"exit@{m}"]]
        if config is None:
            assert not chosen
            continue
        assert list(config.locations) == chosen
        assert set(config.exits) <= trained
        local = [s for s in config.exits if s.type == "lph"]
        glob = [s for s in config.exits if s.type == "gah"]
        assert len(local) + len(glob) == len(config.exits)
        assert all(2 * s.location <= DEPTH for s in local)
        assert all(2 * s.location > DEPTH for s in glob)
        ks = [s.params["k"] for s in local]
        ss = [s.params["s"] for s in glob]
        assert ks == sorted(ks, reverse=True), ks
        assert ss == sorted(ss), ss
        # a half's first exit gets the larger k (the smaller s) of the sampled ends, its last
        # exit the other end, each snapped to a trained value (0, 3, 5 and 1, 2, 3)
        k_ends = sorted((params["k_first"], params["k_last"]), reverse=True)
        s_ends = sorted((params["s_first"], params["s_last"]))
        if local:
            assert ks[0] == _snap(k_ends[0], (0, 3, 5))
            if len(local) > 1:
                assert ks[-1] == _snap(k_ends[1], (0, 3, 5))
        if glob:
            assert ss[0] == _snap(s_ends[0], (1, 2, 3))
            if len(glob) > 1:
                assert ss[-1] == _snap(s_ends[1], (1, 2, 3))
        both_halves += bool(local and glob)
    assert both_halves > 50


def _snap(value: int, trained: tuple[int, ...]) -> int:
    """Nearest trained value; ties go to the larger one."""
    return min(trained, key=lambda v: (abs(v - value), -v))


def test_lgvit_exits_are_the_mapped_variants():
    space = load_search_space("lgvit")
    sampler = ConfigSampler(space, space.candidate_heads(DEPTH), DEPTH)
    from exitsearch.heads.mappings import KernelMapping, WindowMapping

    # k from 3 down to 0 over 1, 2, 3: 3, 1.5 -> 1, 0 (the space trains k = 1); s from 2 to 3
    # over 8, 10: 2, 3
    exits = sampler.lgvit_exits([1, 2, 3, 8, 10], KernelMapping(3, 0), WindowMapping(2, 3))
    assert [s.key for s in exits] == [
        "lph[k=3]@1+u",
        "lph[k=1]@2+u",
        "lph[k=0]@3+u",
        "gah[s=2]@8+u",
        "gah[s=3]@10+u",
    ]
    # every mapping pair the sampler can draw finds its exact variants trained
    kernels = [m for m in space.mappings() if isinstance(m, KernelMapping)]
    windows = [m for m in space.mappings() if isinstance(m, WindowMapping)]
    for chosen in ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [2, 3, 5, 7, 8, 11], [4, 9]):
        for kernel, window in itertools.product(kernels, windows):
            exits = sampler.lgvit_exits(chosen, kernel, window)
            shallow, deep = split_halves(chosen, DEPTH)
            want = {**kernel.assign(shallow), **window.assign(deep)}
            got = {s.location: int(next(iter(s.params.values()))) for s in exits}
            assert got == want


def test_lgvit_exits_snap_to_the_nearest_hand_given_variant():
    space = load_search_space("lgvit")
    from exitsearch.heads.mappings import KernelMapping, WindowMapping

    # heads given by hand without k = 1: a mapped 1 snaps to 0 (|1 - 0| = 1 < |1 - 3| = 2)
    lph = [HeadSpec("lph", m, {"k": k}, True) for m in (1, 2, 3) for k in (0, 3, 5)]
    only = ConfigSampler(space, lph, DEPTH)
    exits = only.lgvit_exits([1, 2, 3], KernelMapping(3, 0), WindowMapping())
    assert [s.params["k"] for s in exits] == [3, 0, 0]
