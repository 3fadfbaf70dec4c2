"""Choosing the cached head bank a run takes heads from (exitsearch.pipeline.bank_reuse), on a
real stage store: the bank holding the most candidates, the one an interrupted training
started from, and what happens to a damaged one. (Runs that reuse banks end to end, with
heads equal to those trained afresh, are in test_pipeline_run.py.)"""

from __future__ import annotations

from exitsearch._io import sha256_of
from exitsearch.heads import HeadSpec
from exitsearch.pipeline.bank_reuse import best_cached_bank, record_source, started_from
from exitsearch.pipeline.cache import StageStore

FAMILY = sha256_of("family")
SPECS = [HeadSpec(t, m) for m in (1, 2, 3) for t in ("linear", "mlp")]


class RecordingProgress:
    def __init__(self) -> None:
        self.logs: list[str] = []

    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        pass

    def finish(self, task: str) -> None:
        pass

    def log(self, message: str) -> None:
        self.logs.append(message)


def _bank(store: StageStore, specs: list[HeadSpec], family: str = FAMILY) -> str:
    keys = [s.key for s in specs]
    key = sha256_of("bank", keys, family)
    folder = store.folder("heads", key)
    folder.mkdir(parents=True)
    (folder / "heads.safetensors").write_bytes(" ".join(keys).encode())
    meta = {"family": family, "candidates": keys}
    store.commit("heads", key, ["heads.safetensors"], meta)
    return folder.name


def test_the_bank_holding_most_candidates_then_fewest_others_is_taken(tmp_path):
    store = StageStore(tmp_path)
    everything = _bank(store, SPECS)
    first_two = _bank(store, SPECS[:2])
    _bank(store, SPECS[:4], family=sha256_of("other settings"))
    assert best_cached_bank(store, FAMILY, SPECS[:2]).folder.name == first_two
    assert best_cached_bank(store, FAMILY, SPECS[:3]).folder.name == everything
    shallow = best_cached_bank(store, FAMILY, SPECS[:1])
    assert shallow.folder.name == first_two  # holds it with one other head, not five
    assert shallow.heads == frozenset(s.key for s in SPECS[:2])
    assert best_cached_bank(store, FAMILY, [HeadSpec("vit", 2)]) is None
    assert best_cached_bank(store, sha256_of("unknown"), SPECS) is None


def test_an_interrupted_training_completes_the_bank_it_started_from(tmp_path):
    store = StageStore(tmp_path)
    small = _bank(store, SPECS[:2])
    larger = _bank(store, SPECS[:4])  # cached after the training below was interrupted
    folder = store.folder("heads", sha256_of("the run's own key"))
    assert started_from(folder) is None
    record_source(folder, best_cached_bank(store, FAMILY, SPECS[:2] + SPECS[4:]))
    assert started_from(folder) == small
    # its checkpoint holds the heads the small bank lacks: the same bank again, not the larger
    assert best_cached_bank(store, FAMILY, SPECS).folder.name == larger
    assert best_cached_bank(store, FAMILY, SPECS, prefer=started_from(folder)).folder.name == small


def test_a_damaged_bank_is_said_cleared_and_passed_over(tmp_path):
    store = StageStore(tmp_path)
    progress = RecordingProgress()
    everything = _bank(store, SPECS)
    some = _bank(store, SPECS[:3])
    weights = tmp_path / everything / "heads.safetensors"
    weights.write_bytes(b"X" + weights.read_bytes()[1:])
    chosen = best_cached_bank(store, FAMILY, SPECS, progress=progress)
    assert chosen is not None and chosen.folder.name == some
    assert progress.logs == [
        f"heads: cached bank {everything} is damaged (heads.safetensors does not match its "
        "checksum); not reused, and cleared"
    ]
    assert not (tmp_path / everything).exists()
