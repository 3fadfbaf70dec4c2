"""Heads trained for one candidate list serving another: a budget that rules out heads, or
lets more in, does not retrain the heads a cached bank already holds.

Every head draws its initialisation, dropout and data order from seeds of its own and trains
on the frozen backbone's states alone, so a head trains the same whichever heads train beside
it (the groups and shards of :mod:`exitsearch.training` rely on the same property). Banks of one
*family* (the same backbone weights, data split, training settings and state sampler) are
therefore interchangeable head by head: a bank's manifest records its family and its heads, a
run whose candidates a cached bank covers takes them from it, and a run that needs more trains
only the heads the best cached bank lacks and merges them with its heads. (Runs with pause
configurations keep banks of their own: their heads go whole into the pause-model folder.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitsearch._io import atomic_write_json, read_json, sha256_of
from exitsearch.backbone import Backbone
from exitsearch.errors import CacheError
from exitsearch.heads import HeadContext, HeadSpec
from exitsearch.heads.bank import HeadBank
from exitsearch.pipeline.cache import StageStore
from exitsearch.progress import Progress
from exitsearch.training.head_training import SUMMARY, WEIGHTS

__all__ = [
    "SOURCE",
    "CachedBank",
    "best_cached_bank",
    "load_heads",
    "merge_into",
    "record_source",
    "started_from",
    "write_subset",
]

SOURCE = "source.json"


@dataclass(frozen=True)
class CachedBank:
    """A complete, intact heads folder of the family asked for."""

    folder: Path
    key: str  # its cache key
    heads: frozenset[str]  # the keys of the heads it holds


def best_cached_bank(
    store: StageStore,
    family: str,
    candidates: list[HeadSpec],
    *,
    prefer: str | None = None,
    progress: Progress | None = None,
) -> CachedBank | None:
    """The best intact cached bank of ``family`` holding any of ``candidates``: the one named
    ``prefer`` (the source an interrupted training started from, :func:`started_from`), else
    the one holding the most of them (all of them first), then the fewest other heads (the
    smallest file to read); None when there is none. A bank whose files no longer match their
    checksums is said, cleared and passed over."""
    wanted = {s.key for s in candidates}
    found = []
    for folder, manifest in store.complete("heads"):
        meta = manifest.get("meta") or {}
        held = meta.get("candidates")
        if meta.get("family") != family or not isinstance(held, list):
            continue
        heads = frozenset(str(k) for k in held)
        if heads & wanted and manifest.get("key"):
            found.append(CachedBank(folder, str(manifest["key"]), heads))
    found.sort(
        key=lambda b: (
            b.folder.name != prefer,
            -len(b.heads & wanted),
            len(b.heads - wanted),
            b.folder.name,
        )
    )
    for bank in found:
        problem = store.verify(bank.folder)
        if problem is None:
            return bank
        if progress is not None:
            progress.log(
                f"heads: cached bank {bank.folder.name} is damaged ({problem}); not reused, "
                "and cleared"
            )
        store.discard("heads", bank.key)
    return None


def started_from(folder: Path) -> str | None:
    """The cached bank an unfinished training in ``folder`` completes (:func:`record_source`)."""
    try:
        return str(read_json(folder / SOURCE)["from"])
    except (CacheError, KeyError, TypeError):
        return None


def record_source(folder: Path, bank: CachedBank) -> None:
    """Say in ``folder`` which cached bank the heads training there completes, so that a
    resumed training completes the same one (its checkpoint holds exactly the missing heads)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / SOURCE, {"from": bank.folder.name, "key": bank.key})


def load_heads(bank: CachedBank, backbone: Backbone, keys: list[str]) -> HeadBank:
    """The heads named by ``keys`` (in that order) from a cached bank."""
    specs = [HeadSpec.from_dict(h) for h in read_json(bank.folder / SUMMARY)["heads"]]
    full = HeadBank(specs, HeadContext.from_backbone(backbone))
    full.load(bank.folder / WEIGHTS)
    return full.subset(keys).eval()


def write_subset(folder: Path, bank: HeadBank, source: CachedBank) -> None:
    """Write ``bank`` (heads taken from ``source``) into ``folder`` as a bank of its own: the
    run's files then name a bank of exactly its heads, whatever becomes of the source."""
    summary = read_json(source.folder / SUMMARY)
    keys = [s.key for s in bank.specs]
    rows = {h["key"]: h for h in summary["heads"]}
    identity = sha256_of("heads-subset-v1", summary.get("identity"), keys)
    folder.mkdir(parents=True, exist_ok=True)
    bank.save(folder / WEIGHTS, {"identity": identity})
    atomic_write_json(
        folder / SUMMARY,
        {
            "identity": identity,
            "config": summary.get("config"),
            "heads": [rows[k] for k in keys],
            "seconds": 0.0,
            "backbone_passes": 0,
            "reused": {"from": source.folder.name, "heads": keys},
        },
    )


def merge_into(
    folder: Path,
    backbone: Backbone,
    candidates: list[HeadSpec],
    fresh: HeadBank,
    reused: CachedBank,
) -> HeadBank:
    """Complete ``fresh``, the heads just trained in ``folder`` (those of ``candidates`` that
    ``reused`` lacks), with ``reused``'s: one bank over ``candidates`` in their order, written
    over the folder's weights and summary (which then names both origins)."""
    trained = read_json(folder / SUMMARY)
    old_keys = [s.key for s in candidates if s.key in reused.heads]
    old = load_heads(reused, backbone, old_keys)
    old_rows = {
        h["key"]: h for h in read_json(reused.folder / SUMMARY)["heads"] if h["key"] in old_keys
    }
    rows = {h["key"]: h for h in trained["heads"]} | old_rows
    bank = HeadBank(candidates, HeadContext.from_backbone(backbone))
    for i, spec in enumerate(candidates):
        source = old if spec.key in old_rows else fresh
        bank.heads[i].load_state_dict(source.head(spec.key).state_dict())
    identity = sha256_of("heads-merged-v1", trained.get("identity"), reused.key)
    summary: dict[str, Any] = {
        **trained,
        "identity": identity,
        "heads": [rows[s.key] for s in candidates],
        "reused": {"from": reused.folder.name, "heads": old_keys},
    }
    bank.save(folder / WEIGHTS, {"identity": identity})
    atomic_write_json(folder / SUMMARY, summary)
    return bank.eval()
