"""``exitsearch run``: profile, train heads, predict, search, report, reusing valid stages.

Every stage's folder is keyed by a hash of everything that determines its content (backbone
weights, data split, candidate heads, settings), see :mod:`exitsearch.pipeline.cache`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from exitsearch._io import atomic_write_json, file_sha256, read_json, sha256_of
from exitsearch._mismatch import nonfinite_tensors
from exitsearch.backbone import Backbone, BackboneSpec, create_backbone, resolve_spec
from exitsearch.backbone.presets import PRESETS
from exitsearch.budget import Budget, BudgetKind, BudgetUnit, parse_budget
from exitsearch.core.config import ExitConfig
from exitsearch.core.costs import CostModel
from exitsearch.core.pause import PauseConfig
from exitsearch.core.task import CLASSIFICATION, get_task
from exitsearch.data import DataSpec, DataSplits, load_splits
from exitsearch.errors import BudgetError, CacheError, CheckpointError, ConfigError, DataError
from exitsearch.heads import HeadContext, HeadSpec
from exitsearch.heads.bank import HeadBank
from exitsearch.heads.profile import profile_heads
from exitsearch.pipeline.bank_reuse import (
    SOURCE,
    best_cached_bank,
    load_heads,
    merge_into,
    record_source,
    started_from,
    write_subset,
)
from exitsearch.pipeline.cache import StageStore
from exitsearch.pipeline.lock import RunLock
from exitsearch.profile import BackboneProfile, LatencyTable, profile_backbone
from exitsearch.profile.latency import parts_note
from exitsearch.progress import NullProgress, Progress
from exitsearch.report import schema
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.sampling import ConfigSampler
from exitsearch.search.space import SearchSpace, load_search_space
from exitsearch.search.storage import check_storage, open_storage
from exitsearch.search.study import BudgetConstraint, SearchResult, SearchSettings, run_search
from exitsearch.training.head_training import (
    SUMMARY,
    WEIGHTS,
    HeadTrainConfig,
    StateSampler,
    train_heads,
)
from exitsearch.training.predict import Predictions, predict

__all__ = [
    "RunContext",
    "RunSettings",
    "prepare",
    "resolve_budget",
    "run_pipeline",
    "stage_heads",
    "stage_predict",
    "stage_profile",
]


@dataclass(frozen=True)
class RunSettings:
    """Everything ``exitsearch run`` needs."""

    run_dir: Path
    backbone: BackboneSpec
    data: DataSpec = field(default_factory=DataSpec)
    space: str = "default"
    budget: str | None = None
    budget_kind: str = "mean"
    heads: HeadTrainConfig = field(default_factory=HeadTrainConfig)
    search: SearchSettings = field(default_factory=SearchSettings)
    resume: bool = True
    storage: str | None = None
    seed_baselines: bool = True
    # Distributed (exitsearch.distributed): with a Ray address the heads stage trains shards
    # of the candidate heads on that cluster; None keeps everything in this process (no Ray).
    ray_address: str | None = None
    head_shards: int | None = None
    latency_device: str | None = None
    latency_batch_size: int = 1
    # A latency table measured elsewhere (`exitsearch profile --latency --out`), instead of
    # measuring one here (exitsearch.profile.table)
    latency_table: str | None = None
    # PAUMER pause configurations (exitsearch.pipeline.pausing): a classification model folder
    # of `exitsearch pause train`, used when the space has a `pause` section; its backbone is
    # the run's. pause_workers: processes predicting under pause configurations (None: one per
    # CPU; with ray_address they run as Ray tasks instead).
    paumer: str | None = None
    pause_workers: int | None = None
    # Validation samples that the backbone's recorded training split used for training are
    # refused unless this is set (the user knows the overlap and accepts optimistic fronts).
    allow_overlap: bool = False
    device: str = "auto"
    # Bytes head training may plan for (None: half of what is available); heads that do not
    # fit together train in groups (exitsearch.training.groups). The heads do not depend on it.
    head_memory: int | None = None
    # `budget` and `budget_kind` parsed once, when the settings are made: a malformed budget
    # fails there, before any work, and every stage reads this typed value
    parsed_budget: Budget | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        parsed = None if self.budget is None else parse_budget(self.budget, self.budget_kind)
        object.__setattr__(self, "parsed_budget", parsed)


@dataclass
class RunContext:
    """What the stages share: the loaded backbone, data, space and caches."""

    settings: RunSettings
    backbone: Backbone
    splits: DataSplits
    space: SearchSpace
    candidates: list[HeadSpec]
    store: StageStore
    progress: Progress
    keys: dict[str, str] = field(default_factory=dict)
    folders: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    latency: dict[str, Any] | None = None  # where the latency table's milliseconds come from

    @property
    def run_dir(self) -> Path:
        return self.settings.run_dir


def _check_preset_has_weights(spec: BackboneSpec) -> None:
    """A preset names a trained backbone: searching its random initialisation is a mistake."""
    if spec.model in PRESETS and not spec.pretrained and resolve_spec(spec).checkpoint is None:
        raise ConfigError(
            f"preset {spec.model} ships no weights: train them first (`exitsearch backbone train "
            f"--model {spec.model} --from-scratch --out build/{spec.model}`) and pass --checkpoint "
            f"build/{spec.model}/model.safetensors"
        )


def prepare(settings: RunSettings, progress: Progress | None = None) -> RunContext:
    """Load backbone, data and search space; fail early on bad input."""
    progress = progress or NullProgress()
    space = load_search_space(settings.space)
    _check_preset_has_weights(settings.backbone)
    backbone = create_backbone(settings.backbone)
    bad = nonfinite_tensors(backbone.model)
    if bad:
        raise CheckpointError(
            f"{settings.backbone.checkpoint or settings.backbone.model}: the backbone's weights "
            f"hold NaN or infinity ({len(bad)} tensor{'s' if len(bad) > 1 else ''}, first "
            f"{bad[0]!r}); no exit can be "
            "trained on them: use a checkpoint saved before training diverged"
        )
    splits = load_run_splits(settings.data, backbone, settings.allow_overlap, progress)
    if (note := splits.limit_note()) is not None:
        progress.log(f"note: {note}")
    settings = replace(settings, data=splits.spec)  # the split rule adopted from the backbone
    backbone.input_transform().check_channels(splits.train.image_shape[0], splits.train.origin)
    task = get_task(splits.task)
    if splits.num_classes < 2 and task.name == CLASSIFICATION:
        raise DataError(
            f"{settings.data.source}: the data has a single class, so every prediction is right "
            "and every accuracy is 1.0 whatever the exits do; give data of at least two classes"
        )
    try:
        task.check_outputs(splits.num_classes, backbone.num_classes)
    except ConfigError:
        preset = PRESETS.get(settings.backbone.model)
        if preset is None or settings.backbone.checkpoint or settings.backbone.pretrained:
            raise
        # the shipped weights are for the preset's own data: -o num_classes alone cannot help
        raise ConfigError(
            f"{task.mismatch(splits.num_classes, backbone.num_classes)}: the shipped "
            f"{preset.name} weights are for {preset.data}; "
            + preset.train_first({"num_classes": task.outputs(splits.num_classes)})
        ) from None
    space = space.for_task(task)
    candidates = space.candidate_heads(backbone.depth)
    store = StageStore(settings.run_dir / schema.CACHE_DIR, progress)
    return RunContext(settings, backbone, splits, space, candidates, store, progress)


def load_run_splits(
    spec: DataSpec,
    backbone: Backbone,
    allow_overlap: bool = False,
    progress: Progress | None = None,
) -> DataSplits:
    """The run's splits, in the backbone's preprocessing, checked against its training split.

    A backbone trained by ``exitsearch backbone train`` records its data and split; on the same
    data the run uses the same split rule, and validation samples the backbone was trained on
    are refused (the front would be measured on training data).

    Raises:
        DataError: the run's validation split overlaps the backbone's training samples.
    """
    from exitsearch.data import open_source, split_index, split_overlap
    from exitsearch.errors import DataError

    source = open_source(spec)
    recorded = recorded_split(backbone, spec)
    index = None
    if recorded is not None:
        spec = replace(spec, split=recorded.split)
        index = split_index(source, spec)
        overlap = split_overlap(source, index, recorded)
        if overlap and not allow_overlap:
            held = recorded.val_size if recorded.val_size is not None else "1/6 of the"
            raise DataError(
                f"{overlap} validation samples of this run were in the backbone's training set "
                f"(it held out {held} samples with split seed {recorded.seed}); use --split-seed "
                f"{recorded.seed} with --val-size at most that, or pass --allow-overlap"
            )
        if overlap and progress is not None:
            progress.log(
                f"warning: {overlap} validation samples were in the backbone's training set "
                "(--allow-overlap): validation accuracy will be optimistic"
            )
    splits = load_splits(spec, preprocess=backbone.preprocess(), source=source, index=index)
    check_class_order(backbone, splits.classes)
    return splits


def check_class_order(backbone: Backbone, classes: Sequence[str]) -> None:
    """Refuse data that name the backbone's classes in another order than its training did:
    its output i would be scored against another class, and the run would blame the backbone
    (a folder's classes are sorted by name; an ``.npz`` orders them by its ``classes``).

    Raises:
        DataError: the same class names, in another order.
    """
    trained = (backbone.record or {}).get("classes")
    now = [str(c) for c in classes]
    if not isinstance(trained, list) or sorted(map(str, trained)) != sorted(now):
        return
    moved = [(i, t, c) for i, (t, c) in enumerate(zip(trained, now, strict=True)) if t != c]
    if not moved:
        return
    i, t, c = moved[0]
    raise DataError(
        f"the data name the backbone's classes in another order than its training did: its "
        f"output {i} is {t!r}, the data's label {i} is {c!r} ({len(moved)} of {len(now)} "
        "classes moved); give the data the training's order (an .npz's `classes`; a folder's "
        "classes are sorted by name) or train the backbone on these data"
    )


def recorded_split(backbone: Backbone, spec: DataSpec) -> DataSpec | None:
    """The split the backbone's training recorded, when it was trained on the same data."""
    record = backbone.record or {}
    data = record.get("data")
    if not isinstance(data, dict) or "source" not in data:
        return None
    try:
        recorded = DataSpec.from_record(data)
    except (ConfigError, TypeError):
        return None
    return recorded if _same_source(recorded, spec) else None


def _same_source(a: DataSpec, b: DataSpec) -> bool:
    if a.source == b.source == "fashion-mnist":
        return _resolved(a.data_dir) == _resolved(b.data_dir)
    return _resolved(a.source) == _resolved(b.source)


def _resolved(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


# ------------------------------------------------------------------------ stages
def stage_profile(ctx: RunContext) -> tuple[BackboneProfile, dict[str, int]]:
    """Backbone per-block FLOPs and every candidate head's FLOPs."""
    bb = ctx.backbone
    arch = {
        **resolve_spec(ctx.settings.backbone).to_dict(),
        "checkpoint": None,
        "pretrained": False,
    }
    key = sha256_of("profile-v1", arch, [s.to_dict() for s in ctx.candidates])
    ctx.keys["profile"] = key
    folder = ctx.store.lookup("profile", key)
    if folder is None:
        t0 = time.perf_counter()
        prof = profile_backbone(bb)
        costs = profile_heads(ctx.candidates, HeadContext.from_backbone(bb))
        folder = ctx.store.folder("profile", key)
        atomic_write_json(
            folder / "profile.json",
            {
                "backbone": prof.to_json(),
                "heads": {
                    k: {"flops": c.flops, "params": c.params, "uncounted_ops": c.uncounted_ops}
                    for k, c in costs.items()
                },
            },
        )
        ctx.store.commit("profile", key, ["profile.json"])
        ctx.timings["profile"] = time.perf_counter() - t0
    else:
        ctx.progress.log("profile: reusing the cached profile")
    ctx.folders["profile"] = folder
    doc = read_json(folder / "profile.json")
    return BackboneProfile.from_json(doc["backbone"]), {
        k: int(v["flops"]) for k, v in doc["heads"].items()
    }


def stage_latency(ctx: RunContext) -> tuple[LatencyTable, dict[str, float]] | None:
    """Measured milliseconds of the backbone parts and of every candidate head, per sample.

    Keyed by the architecture, the heads, the device, the batch size and the machine, since a
    latency table describes one machine.
    """
    device = ctx.settings.latency_device
    arch = {
        **resolve_spec(ctx.settings.backbone).to_dict(),
        "checkpoint": None,
        "pretrained": False,
    }
    if ctx.settings.latency_table is not None:
        from exitsearch.profile.table import read_table

        given = read_table(ctx.settings.latency_table)
        given.check(arch, ctx.backbone.preprocess().input_size, [s.key for s in ctx.candidates])
        ctx.keys["latency"] = file_sha256(ctx.settings.latency_table)
        env = given.environment
        ctx.latency = _latency_source(given.backbone, str(env.get("engine", "torch")), "file")
        ctx.progress.log(
            f"latency: the table of {env.get('machine') or env.get('device_name', '?')} "
            f"({env.get('device', '?')}, {env.get('threads', '?')} "
            f"threads, batch {given.backbone.batch_size}) from {ctx.settings.latency_table}"
        )
        return given.backbone, given.heads_ms_per_sample()
    if device is None:
        return None
    batch = ctx.settings.latency_batch_size
    key = sha256_of(
        "latency-v4", arch, [s.to_dict() for s in ctx.candidates], device, batch, _machine()
    )
    ctx.keys["latency"] = key
    folder = ctx.store.lookup("latency", key)
    if folder is None:
        t0 = time.perf_counter()
        ctx.progress.log(
            f"latency: measuring the backbone and {len(ctx.candidates)} heads on {device} at batch {batch}"
        )
        from exitsearch.export.timing import measure_in_runtime

        measured = measure_in_runtime(
            ctx.backbone, ctx.candidates, device, batch, task=ctx.splits.task
        )
        folder = ctx.store.folder("latency", key)
        atomic_write_json(
            folder / "latency.json",
            {"backbone": measured.table.to_json(), "heads_ms_per_batch": measured.heads_ms},
        )
        ctx.store.commit("latency", key, ["latency.json"])
        ctx.timings["latency"] = time.perf_counter() - t0
    ctx.folders["latency"] = folder
    doc = read_json(folder / "latency.json")
    table = LatencyTable.from_json(doc["backbone"])
    ctx.latency = _latency_source(table, "torch", "measured")
    return table, {k: v / table.batch_size for k, v in doc["heads_ms_per_batch"].items()}


def _latency_source(table: LatencyTable, engine: str, how: str) -> dict[str, Any]:
    """What pareto.json says of the latency table a run priced milliseconds with."""
    return {
        "source": how,  # "measured" by this run, or read from a --latency-table "file"
        "engine": engine,
        "device": table.device,
        "device_name": table.device_name,
        "threads": table.threads,
        "batch_size": table.batch_size,
    }


def _machine() -> str:
    """What a latency table depends on besides the model: processor and thread count."""
    import torch

    from exitsearch.device import machine_name

    return f"{machine_name()}|{torch.get_num_threads()} threads"


def stage_heads(ctx: RunContext, states_from: StateSampler | None = None) -> HeadBank:
    """Train every candidate head once (classifier-wise), or reuse the trained bank.

    With ``RunSettings.ray_address`` the heads train in shards over a Ray cluster. Every head
    draws its initialisation and dropout from seeds of its own, so sharded heads equal jointly
    trained ones and both share one cache key, and a cached bank trained for other candidates
    gives the heads it holds (only the missing ones train). ``states_from`` (PAUMER's
    randomised pausing in a pause run) gives the training states instead of the plain
    backbone; such heads train here.
    """
    cfg = ctx.settings.heads
    task = get_task(ctx.splits.task)
    weights, data = ctx.backbone.weights_checksum(), ctx.splits.fingerprint()
    training = [
        asdict(cfg),
        *([] if states_from is None else [states_from.identity()]),
        *([] if task.name == CLASSIFICATION else [task.name, task.version]),
    ]
    # what a head's training depends on besides itself: a bank of the same family holds the
    # same weights for every head it shares with the candidates (exitsearch.pipeline.bank_reuse)
    family = sha256_of("heads-family-v1", weights, data, *training)
    key = sha256_of("heads-v2", weights, data, [s.to_dict() for s in ctx.candidates], *training)
    ctx.keys["heads"] = key
    folder = ctx.store.lookup("heads", key)
    if folder is not None:
        shards = read_json(folder / SUMMARY).get("shards") or []
        where = f" in {len(shards)} shards" if len(shards) > 1 else ""
        ctx.progress.log(f"heads: reusing {len(ctx.candidates)} heads trained{where}")
        bank = HeadBank(ctx.candidates, HeadContext.from_backbone(ctx.backbone))
        bank.load(folder / WEIGHTS)
        ctx.folders["heads"] = folder
        return bank.eval()
    keys = [s.key for s in ctx.candidates]
    folder = ctx.store.folder("heads", key)
    # a pause run's heads go whole into its pause-model folder, so it keeps banks of its own
    cached = (
        None
        if states_from is not None
        else best_cached_bank(
            ctx.store, family, ctx.candidates, prefer=started_from(folder), progress=ctx.progress
        )
    )
    if cached is not None and set(keys) <= cached.heads:
        ctx.progress.log(
            f"heads: reusing {len(keys)} of the {len(cached.heads)} heads trained with the "
            f"same settings in {cached.folder.name} (a head trains the same whichever heads "
            "train beside it)"
        )
        bank = load_heads(cached, ctx.backbone, keys)
        write_subset(folder, bank, cached)
        meta = {"seconds": 0.0, "family": family, "candidates": keys}
        ctx.store.commit("heads", key, [WEIGHTS, SUMMARY], meta)
        _clear_resume_state(folder)  # of a training interrupted here before
        ctx.keys["heads_source"] = cached.key
        ctx.folders["heads"] = folder
        return bank
    todo = [s for s in ctx.candidates if cached is None or s.key not in cached.heads]
    if cached is not None:
        ctx.progress.log(
            f"heads: {len(keys) - len(todo)} of the {len(keys)} heads come from "
            f"{cached.folder.name}, trained with the same settings (a head trains the same "
            f"whichever heads train beside it); training the other {len(todo)}"
        )
        record_source(folder, cached)
        ctx.keys["heads_source"] = cached.key
    t0 = time.perf_counter()
    if ctx.settings.ray_address is not None and states_from is None:
        from exitsearch.pipeline.cluster import train_heads_on_cluster

        result = train_heads_on_cluster(ctx, folder, todo)
    else:
        if ctx.settings.ray_address is not None:
            ctx.progress.log(
                "heads: trained here under randomised pausing (not sharded over the cluster)"
            )
        result = train_heads(
            ctx.backbone,
            ctx.splits,
            todo,
            cfg,
            folder,
            progress=ctx.progress,
            device=ctx.settings.device,
            memory=ctx.settings.head_memory,
            states_from=states_from,
        )
    bank = result.bank
    if cached is not None:
        bank = merge_into(folder, ctx.backbone, ctx.candidates, bank, cached)
    meta = {"seconds": result.seconds, "family": family, "candidates": keys}
    ctx.store.commit("heads", key, [WEIGHTS, SUMMARY], meta)
    _clear_resume_state(folder)
    ctx.timings["heads"] = time.perf_counter() - t0
    ctx.folders["heads"] = folder
    return bank


def _clear_resume_state(folder: Path) -> None:
    """Remove what resumes a heads training, not needed once the stage is done."""
    for leftover in (
        *folder.glob("checkpoint-epoch*.safetensors"),
        folder / "checkpoint.json",
        folder / SOURCE,
    ):
        leftover.unlink(missing_ok=True)


def stage_predict(ctx: RunContext, bank: HeadBank) -> Predictions:
    """Every head's per-sample outputs on validation and test. Heads taken from a cached bank
    (``heads_source``, :mod:`exitsearch.pipeline.bank_reuse`) take their rows from its cached
    predictions; only the others are predicted."""
    key = sha256_of("predict-v1", ctx.keys["heads"], ctx.splits.fingerprint())
    ctx.keys["predict"] = key
    folder = ctx.store.lookup("predict", key)
    if folder is not None:
        ctx.progress.log("predict: reusing cached predictions")
        ctx.folders["predict"] = folder
        return Predictions.load(folder)
    t0 = time.perf_counter()
    source = ctx.keys.get("heads_source")
    cached = (
        None
        if source is None
        else ctx.store.lookup("predict", sha256_of("predict-v1", source, ctx.splits.fingerprint()))
    )
    keys = [s.key for s in bank.specs]
    if cached is None:
        preds = predict(
            ctx.backbone, bank, ctx.splits, progress=ctx.progress, device=ctx.settings.device
        )
    else:
        old = Predictions.load(cached)
        held = {s.key for s in old.heads}
        new = [k for k in keys if k not in held]
        parts = [old]
        if new:
            ctx.progress.log(
                f"predict: {len(keys) - len(new)} heads' rows from the cached {cached.name}; "
                f"predicting the other {len(new)}"
            )
            sub = bank.subset(new)
            parts.append(
                predict(
                    ctx.backbone, sub, ctx.splits, progress=ctx.progress, device=ctx.settings.device
                )
            )
        else:
            ctx.progress.log(f"predict: taking these heads' rows of the cached {cached.name}")
        preds = Predictions.gather(keys, parts)
    folder = ctx.store.folder("predict", key)
    preds.save(folder)
    ctx.store.commit("predict", key, ["predictions.json", *(f"{s}.npz" for s in preds.splits)])
    ctx.timings["predict"] = time.perf_counter() - t0
    ctx.folders["predict"] = folder
    return preds


def resolve_budget(
    budget: Budget | None,
    kind: str,
    costs: CostModel,
    min_exit_flops: float,
    min_exit_ms: float | None = None,
) -> tuple[Budget | None, BudgetConstraint, str | None]:
    """Parse and check the budget against what the backbone and its exits can cost.

    Returns the budget, the constraint (in FLOPs, or in milliseconds per sample with a latency
    table), and a note for the user (or None).

    Raises:
        BudgetError: malformed, in milliseconds without a latency table, or below the cheapest
            possible exit (the message says the cheapest).
    """
    from exitsearch.units import format_flops

    if budget is None:
        return None, BudgetConstraint(None, BudgetKind(kind)), None
    text = budget.text
    if budget.unit is BudgetUnit.MILLISECONDS:
        if costs.latency is None or min_exit_ms is None:
            raise BudgetError(
                f"budget {text!r} is in milliseconds, which needs a latency table: add "
                "--latency-device cpu (or cuda) and --latency-batch-size N, or give FLOPs or percent"
            )
        lat = costs.latency.per_sample()
        if budget.value < min_exit_ms:
            raise BudgetError(
                f"budget {text} is below the cheapest possible exit, {min_exit_ms:.4g} ms per sample "
                f"on {costs.latency.device_name} at batch {costs.latency.batch_size}"
            )
        notes = [n for n in (parts_note(lat),) if n]
        if budget.value >= lat.parts_ms:
            notes.append(
                f"budget {text} is above the backbone's own {lat.parts_ms:.4g} ms per sample: "
                "every configuration fits, the whole front is returned"
            )
        return (
            budget,
            BudgetConstraint(None, budget.kind, ms=budget.value),
            "; ".join(notes) or None,
        )
    flops = budget.to_flops(costs.backbone_flops)
    if flops < min_exit_flops:
        # a bare number up to 1 reads like a share of the backbone: say how to write one
        hint = (
            f"; for {budget.value:g} of the backbone's cost write {budget.value * 100:g}%"
            if budget.bare and budget.value <= 1
            else ""
        )
        raise BudgetError(
            f"budget {text} ({format_flops(flops)}) is below the cheapest possible exit, "
            f"{format_flops(min_exit_flops)} (one exit after the first candidate block){hint}"
        )
    note = None
    if flops >= costs.backbone_flops:
        note = (
            f"budget {text} ({format_flops(flops)}) is at or above the backbone's own cost "
            f"({format_flops(costs.backbone_flops)} per sample; the budget is "
            f"{flops / costs.backbone_flops:.3g}x that): every configuration fits and the whole "
            "front is returned; a budget saves compute only below it (e.g. --budget 50%)"
        )
    return budget, BudgetConstraint(flops, budget.kind), note


def affordable_heads(
    candidates: list[HeadSpec],
    profile: BackboneProfile,
    head_flops: dict[str, int],
    constraint: BudgetConstraint,
) -> tuple[list[HeadSpec], list[HeadSpec]]:
    """Split the candidates into those worth training under the budget and those that are not.

    Under a ``max`` budget an exit whose own cost (backbone up to its block plus the head)
    exceeds the budget can never be reached by a feasible configuration. Under a ``mean`` budget
    a head that costs more than the whole budget by itself is skipped too (it could only fit
    if nearly every sample left before it). Budgets in milliseconds skip nothing here.
    """
    if constraint.flops is None:
        return list(candidates), []
    limit = constraint.flops
    kept, skipped = [], []
    for spec in candidates:
        own = head_flops[spec.key]
        reach = profile.cumulative(spec.location) + own
        too_costly = reach > limit if constraint.kind is BudgetKind.MAX else own > limit
        (skipped if too_costly else kept).append(spec)
    if not kept:  # the budget check before already said the cheapest exit; keep them all
        return list(candidates), []
    return kept, skipped


def skipped_reason(constraint: BudgetConstraint) -> str:
    from exitsearch.units import format_flops

    budget = format_flops(constraint.flops or 0)
    if constraint.kind is BudgetKind.MAX:
        return f"reaching their exit costs more than the max budget of {budget} per sample"
    return f"each head alone costs more than the mean budget of {budget} per sample"


def _search_or_explain(*args: Any, **kwargs: Any) -> SearchResult:
    """:func:`run_search`, with a damaged study turned into a one-line error."""
    import optuna
    import sqlalchemy.exc

    try:
        return run_search(*args, **kwargs)
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.DatabaseError) as exc:
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        raise CacheError(
            f"the Optuna study storage is damaged ({detail}); move {schema.STUDY_DB} away (or pass "
            "--storage) to search afresh"
        ) from None


@dataclass
class PipelineResult:
    ctx: RunContext
    predictions: Predictions
    costs: CostModel
    budget: Budget | None
    constraint: BudgetConstraint
    search: SearchResult
    notes: list[str]
    report: dict[str, Any]


# Below this many validation samples a front says nothing; below the second, little.
MIN_VALIDATION = 10
FEW_VALIDATION = 200


def check_validation_size(n: int, origin: str) -> None:
    """Refuse a search on fewer than :data:`MIN_VALIDATION` validation samples."""
    if n < MIN_VALIDATION:
        raise DataError(
            f"{origin}: validation has {n} sample{'s' if n != 1 else ''}; a front fitted to so few "
            f"says nothing about new data: give at least {MIN_VALIDATION} (thousands for a front "
            "worth trusting) with --val-size or more data"
        )


def validation_notes(ev: Evaluator, num_classes: int) -> list[str]:
    """What the run should say before searching: few validation samples, a backbone at chance."""
    from exitsearch.intervals import mean_interval, wilson_interval

    notes = []
    if ev.n < FEW_VALIDATION:
        notes.append(
            f"validation has only {ev.n} samples: accuracies are uncertain by several points "
            "(see the intervals) and thresholds fitted to them may not hold on new data"
        )
    backbone_ok = ev.backbone_correct()
    if ev.task.name == CLASSIFICATION:
        low, high = wilson_interval(int(backbone_ok.sum()), ev.n)
        chance = 1.0 / num_classes
    else:
        low, high = mean_interval(backbone_ok)
        chance = ev.task.chance(ev.sp.labels)
    if low <= chance:
        shown = sorted(ev.task.shown(v) for v in (low, high))
        notes.append(
            f"the backbone is no better than chance on validation ({ev.task.quality} "
            f"{ev.task.format(float(backbone_ok.mean()))}, chance {ev.task.format(chance)}, "
            f"95 % interval {shown[0]:.4f} to {shown[1]:.4f}): no exit configuration can be "
            "trusted; train or fine-tune it first"
        )
    return notes


STUDY_OWNER_ATTR = "exitsearch_owner"
STUDY_OWNERS = "studies.json"


def claim_study(
    storage: Any, study_name: str, cache_dir: Path, progress: Progress, fresh: bool = False
) -> None:
    """Continue a study of the run folder's ``study.db`` only if this folder's caches wrote it
    (``fresh``: replace it whoever wrote it).

    A ``study.db`` copied in from elsewhere (another machine's run, a committed result) holds
    trials this run did not make; resuming it would report them as if they were. Each study
    this folder starts gets a random token, kept in the study and in the folder's cache
    (``studies.json``); a study whose token the cache does not know is started afresh.
    """
    import secrets

    import optuna

    owners_path = cache_dir / STUDY_OWNERS
    try:
        owners = read_json(owners_path) if owners_path.is_file() else {}
    except CacheError:
        owners = {}
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        study = None
    if study is not None:
        token = study.user_attrs.get(STUDY_OWNER_ATTR)
        if not fresh and token is not None and owners.get(study_name) == token:
            return
        if not fresh:
            progress.log(
                f"search: the study {study_name} in {schema.STUDY_DB} was not started by this "
                "run folder (its cache does not know it); starting the search afresh"
            )
        optuna.delete_study(study_name=study_name, storage=storage)
    study = optuna.create_study(
        study_name=study_name, storage=storage, directions=["maximize", "minimize"]
    )
    token = secrets.token_hex(8)
    study.set_user_attr(STUDY_OWNER_ATTR, token)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(owners_path, {**owners, study_name: token})


def run_pipeline(settings: RunSettings, progress: Progress | None = None) -> PipelineResult:
    """Run every stage (reusing valid ones) and write the report into the run folder.

    A space with a ``pause`` section (and ``--paumer``) adds pause configurations as a
    dimension of the stages (:class:`~exitsearch.pipeline.pausing.PauseDimension`): the same
    stages run, the heads train under randomised pausing, and the search stage searches inside
    every configuration and merges their fronts.
    """
    from exitsearch.pipeline.pausing import PauseDimension
    from exitsearch.report.run_report import write_report
    from exitsearch.search.baselines import baseline_placements

    progress = progress or NullProgress()
    pause = PauseDimension.of(settings)
    parsed = settings.parsed_budget
    if parsed is not None and (
        parsed.unit is BudgetUnit.MILLISECONDS
        and settings.latency_device is None
        and settings.latency_table is None
    ):
        raise BudgetError(
            f"budget {settings.budget!r} is in milliseconds, which needs a latency table: add "
            "--latency-device cpu (or cuda) and --latency-batch-size N, or --latency-table "
            "TABLE.json, or give FLOPs or percent"
        )
    if settings.latency_device is not None and settings.latency_table is not None:
        raise ConfigError(
            "--latency-device measures a table here; --latency-table reads one: give one"
        )
    if settings.latency_table is not None:  # a missing or foreign file fails before any work
        from exitsearch.profile.table import read_table

        read_table(settings.latency_table)
    if settings.storage is not None:  # a user's own file is refused before any work
        check_storage(settings.storage)
    with RunLock(settings.run_dir):
        if pause is not None:
            settings = pause.backbone(settings)
        ctx = prepare(settings, progress)
        if pause is not None:
            pause.open(ctx)
        check_validation_size(len(ctx.splits.val), ctx.splits.val.origin)
        profile, head_flops = stage_profile(ctx)
        latency = stage_latency(ctx)
        costs = CostModel(profile, head_flops, *(latency or (None, {})))
        grid = [PauseConfig()]
        if pause is not None:
            costs = pause.costs(costs)
            grid = pause.grid
        first_location = min(s.location for s in ctx.candidates)
        first = [s for s in ctx.candidates if s.location == first_location]
        cheapest = min(  # the cheapest exit of any configuration known before the search
            costs.under_pause(c.fractions).profile.cumulative(first_location) + head_flops[s.key]
            for c in grid
            for s in first
        )
        cheapest_ms = None
        if latency is not None:
            per_sample = latency[0].per_sample()
            cheapest_ms = min(
                per_sample.cumulative_ms(first_location) + latency[1][s.key] for s in first
            )
        budget, constraint, note = resolve_budget(
            settings.parsed_budget, settings.budget_kind, costs, cheapest, cheapest_ms
        )
        notes = [note] if note else []
        if note:  # said before the long stages start, not only in the final report
            progress.log(f"note: {note}")
        # with pausing, blocks cost less than the unpaused profile says: every head is kept
        kept, skipped = (
            affordable_heads(ctx.candidates, profile, head_flops, constraint)
            if pause is None
            else (ctx.candidates, [])
        )
        if skipped:
            skip_note = (
                f"{len(skipped)} of {len(ctx.candidates)} candidate heads not trained: "
                + skipped_reason(constraint)
            )
            progress.log(f"note: {skip_note}")
            notes.append(skip_note)
            ctx.candidates = kept
        bank = stage_heads(ctx, pause.states() if pause is not None else None)
        preds = stage_predict(ctx, bank)
        # a budget in milliseconds makes the search rank by the latency table's milliseconds
        ev = Evaluator(preds, "val", costs, constraint.unit)
        for note in validation_notes(ev, preds.num_classes):
            progress.log(f"note: {note}")
            notes.append(note)
        seeds = (
            [c for _, _, c in baseline_placements(ctx.candidates, ctx.backbone.depth)]
            if settings.seed_baselines
            else []
        )
        storage = open_storage(settings.storage or (settings.run_dir / schema.STUDY_DB))
        if pause is not None:
            result, costs, dimension = pause.search(ctx, preds, costs, constraint, storage, seeds)
        else:
            result, dimension = _search_stage(ctx, ev, constraint, storage, seeds), {}
        report = write_report(ctx, preds, costs, budget, constraint, result, notes, **dimension)
        return PipelineResult(ctx, preds, costs, budget, constraint, result, notes, report)


def _search_stage(
    ctx: RunContext,
    ev: Evaluator,
    constraint: BudgetConstraint,
    storage: Any,
    seeds: list[ExitConfig],
) -> SearchResult:
    """The exit search on cached validation predictions, in the run's Optuna study.

    Raises:
        BudgetError: nothing fits the budget.
    """
    settings = ctx.settings
    search_key = sha256_of(
        "search-v1",
        ctx.keys["predict"],
        ctx.keys["profile"],
        ctx.space.to_dict(),
        settings.budget,
        settings.budget_kind,
        {k: v for k, v in asdict(settings.search).items() if k not in ("n_trials", "timeout")},
        settings.seed_baselines,
        ctx.keys.get("latency"),
        *(["ranked-by-ms"] if constraint.unit == "ms" else []),
    )
    ctx.keys["search"] = search_key
    study_name = f"search-{search_key[:12]}"
    resume = settings.resume
    if settings.storage is None:  # the run folder's own study.db
        claim_study(
            storage, study_name, settings.run_dir / schema.CACHE_DIR, ctx.progress, fresh=not resume
        )
        resume = True
    t0 = time.perf_counter()
    result = _search_or_explain(
        ev,
        ConfigSampler(ctx.space, ctx.candidates, ctx.backbone.depth),
        constraint,
        settings.search,
        storage=storage,
        study_name=study_name,
        resume=resume,
        seed_placements=seeds,
        progress=ctx.progress,
        exclusive=settings.storage is None,
    )
    ctx.timings["search"] = time.perf_counter() - t0
    if not result.front:
        raise BudgetError(
            f"no configuration found within budget {settings.budget}; try a larger budget or "
            "more trials"
        )
    return result
