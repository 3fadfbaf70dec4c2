"""``exitsearch run`` over a space with a ``pause`` section: pause configurations as a search
dimension (PAUMER), exits searched inside each.

A pause configuration changes what every block after its first pause layer computes, so its
exit heads cannot be scored from the unpaused cache: each configuration costs one inference
pass over the validation split (:func:`~exitsearch.pausing.predict_under_pause`), which is the
part that runs in parallel, on a local process pool or as Ray tasks (``--ray-address``) through
the executors of :mod:`exitsearch.distributed`. Inside a configuration everything is cached:
the exit search (:func:`~exitsearch.search.study.run_search`, with its exact threshold
refinement) scores exit configurations from that configuration's predictions with block costs
counted on the tokens really processed (:meth:`CostModel.under_pause`), and the feasible fronts
of all configurations merge into one Pareto front whose members carry ``config.pause``.

Stages (in ``<run>/cache/``, keyed by content like the others):

* ``paumer``: the PAUMER classification model given with ``--paumer``: its backbone weights as
  a checkpoint file (the run's backbone: heads are trained on exactly these weights by the
  normal heads stage, under PAUMER's randomised pausing over the space's pause layers and
  proportions, :class:`~exitsearch.pausing.RandomPausing`), its auxiliary decoder's weights (``aux.safetensors``, for export), and a
  copy of the model folder.
* ``pause-model``: the model folder plus the trained heads: what a prediction job loads (it is
  shipped to Ray nodes whole).
* ``pause-predict``: the predictions of the heads under one pause configuration on one split.
  Validation is predicted for every configuration; test only for the configurations on the
  merged front (test is touched only to report the front).

Which configurations: the space's grid (every combination of ``taus`` at up to ``max_layers``
of ``layers``), or with ``pause.trials`` that many sampled by an outer Optuna study (TPE, seeded
rounds of :data:`OUTER_ROUND` asked and told in order, objective: the hypervolume of the
configuration's own front within the budget; that study lives in the run's Optuna storage
and resumes). ``--n-trials`` is split evenly over the configurations, at least
``min(MIN_TRIALS_PER_PAUSE, n_trials)`` exit-search trials each. The exit searches inside the
configurations run in memory: their inputs are cached, their samplers seeded, and a database
write per trial would make them 50 times slower.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from exitsearch._io import (
    atomic_write_json,
    file_sha256,
    portable_path,
    read_json,
    save_safetensors,
    sha256_of,
)
from exitsearch.backbone import BackboneSpec
from exitsearch.core.costs import CostModel, pause_key
from exitsearch.core.pause import PauseConfig
from exitsearch.device import resolve_device
from exitsearch.errors import BudgetError, ConfigError, DataError
from exitsearch.pausing.costs import with_pauses
from exitsearch.progress import NullProgress
from exitsearch.report import schema
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.pareto import hypervolume, pareto_mask
from exitsearch.search.refine import CurvePoint
from exitsearch.search.sampling import ConfigSampler
from exitsearch.search.space import PauseOptions, SearchSpace, load_search_space
from exitsearch.search.study import BudgetConstraint, SearchResult, SearchSettings, run_search
from exitsearch.training.predict import Predictions, SplitPredictions

if TYPE_CHECKING:
    from exitsearch.pipeline.run import RunContext, RunSettings

__all__ = [
    "AUX_FILE",
    "BACKBONE_FILE",
    "MIN_TRIALS_PER_PAUSE",
    "OUTER_ROUND",
    "PauseDimension",
    "PausePredictJob",
    "PauseRunResult",
    "prepare_paumer",
    "run_pause_predict_job",
]

BACKBONE_FILE = "backbone.safetensors"
AUX_FILE = "aux.safetensors"
MIN_TRIALS_PER_PAUSE = 100
OUTER_ROUND = 8  # configurations asked (and predicted in parallel) per round of the outer study
SEED_PLACEMENTS = 10  # placements of the unpaused front refined inside every pause configuration
PAUSE_SECTION = "pause"  # key of pareto.json that describes the pause configurations


# ----------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class PausePredictJob:
    """One prediction pass as picklable values (runs in a pool process or a Ray task).

    Attributes:
        model_dir: a ``pause-model`` folder: ``model.safetensors`` + ``paumer.json`` (the PAUMER
            model) and ``heads.safetensors`` + ``heads.json`` (the trained heads).
        data: ``DataSpec.to_dict()``; with Ray it must be readable at that path on every node.
        data_fingerprint: ``DataSplits.fingerprint()`` on the driver, checked by the worker.
        pause: ``PauseConfig.to_dict()``.
        mode: ``entropy`` or ``random``.
        names: the splits to predict.
        device: where the model and heads run (``cpu``, ``cuda``...).
    """

    model_dir: str
    data: Mapping[str, Any]
    data_fingerprint: str
    pause: Mapping[str, float]
    mode: str = "entropy"
    names: tuple[str, ...] = ("val",)
    batch_size: int = 500
    seed: int = 0
    label: str = ""
    device: str = "cpu"


_LOADED: dict[tuple[str, int], Any] = {}


def _loaded(folder: str) -> tuple[Any, Any]:
    """``(PaumerModel, HeadBank)`` of a pause-model folder, loaded once per process."""
    from exitsearch.heads import HeadContext, HeadSpec
    from exitsearch.heads.bank import HeadBank
    from exitsearch.pausing.model import MODEL_FILE, load_paumer
    from exitsearch.training.head_training import SUMMARY, WEIGHTS

    root = Path(folder)
    key = (str(root.resolve()), (root / MODEL_FILE).stat().st_mtime_ns)
    if key not in _LOADED:
        model = load_paumer(root)
        specs = [HeadSpec.from_dict(h) for h in read_json(root / SUMMARY)["heads"]]
        bank = HeadBank(specs, HeadContext.from_backbone(model.backbone))
        bank.load(root / WEIGHTS)
        _LOADED[key] = (model, bank.eval())
    return _LOADED[key]


def run_pause_predict_job(job: PausePredictJob) -> dict[str, Any]:
    """Predict the heads of ``job.model_dir`` under ``job.pause`` on ``job.names``.

    Returns the arrays of every split (``SplitPredictions`` fields) with the head specs.

    Raises:
        DataError: this process reads different data than the driver did.
    """
    from exitsearch.pausing.evaluate import predict_under_pause
    from exitsearch.pausing.pool import cached_splits

    model, bank = _loaded(job.model_dir)
    bb = model.backbone
    splits = cached_splits(job.data, bb.preprocess())
    if splits.fingerprint() != job.data_fingerprint:
        raise DataError(
            f"this worker reads different data than the driver for {dict(job.data)}; every node "
            "needs the same files at the same path"
        )
    preds = predict_under_pause(
        model,
        bank,
        splits,
        PauseConfig.from_dict(job.pause),
        job.mode,
        names=tuple(job.names),
        batch_size=job.batch_size,
        seed=job.seed,
        device=job.device,
    )
    return {
        "pause": PauseConfig.from_dict(job.pause).key,
        "label": job.label,
        "heads": [s.to_dict() for s in preds.heads],
        "num_classes": preds.num_classes,
        "splits": {name: asdict(sp) for name, sp in preds.splits.items()},
    }


def _predictions(result: Mapping[str, Any]) -> Predictions:
    from exitsearch.heads import HeadSpec

    return Predictions(
        [HeadSpec.from_dict(h) for h in result["heads"]],
        {name: SplitPredictions(**arrays) for name, arrays in result["splits"].items()},
        int(result["num_classes"]),
    )


# ---------------------------------------------------------------------- the paumer
@dataclass(frozen=True)
class PaumerFiles:
    """The ``paumer`` stage: where the model's parts were written, and its identity."""

    folder: Path
    key: str
    backbone: BackboneSpec  # with ``checkpoint`` = the extracted backbone weights
    model_sha256: str
    source: str

    @property
    def aux(self) -> Path:
        return self.folder / AUX_FILE


def prepare_paumer(paumer_dir: str | Path, cache_root: Path) -> PaumerFiles:
    """Extract the backbone and auxiliary-decoder weights of the PAUMER classification model in
    ``paumer_dir`` into ``cache_root/paumer-<key>/`` (reused when already there).

    Raises:
        ConfigError: not a classification model.
        CacheError, CheckpointError: unreadable model folder.
    """
    from exitsearch.pausing.model import MODEL_FILE, SPEC_FILE, PaumerSpec, load_paumer

    src = Path(paumer_dir)
    meta = read_json(src / SPEC_FILE)
    spec = PaumerSpec.from_dict(meta["spec"])
    if spec.task != "classification":
        raise ConfigError(
            f"{src}: a {spec.task} PAUMER model; exit heads need a classification model "
            "(`exitsearch pause train --task classification`)"
        )
    model_sha = file_sha256(src / MODEL_FILE)
    key = sha256_of("paumer-v1", model_sha, spec.to_dict())
    folder = cache_root / f"paumer-{key[:16]}"
    done = folder / "paumer-stage.json"
    if not done.is_file():
        model = load_paumer(src)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_safetensors(tmp / BACKBONE_FILE, model.backbone.model.state_dict())
        save_safetensors(tmp / AUX_FILE, model.vit.aux.state_dict())
        shutil.copy(src / MODEL_FILE, tmp / MODEL_FILE)
        atomic_write_json(tmp / SPEC_FILE, meta)
        atomic_write_json(
            tmp / "paumer-stage.json",
            {"source": str(src.resolve()), "model_sha256": model_sha, "spec": spec.to_dict()},
        )
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    backbone = replace(spec.backbone, checkpoint=str((folder / BACKBONE_FILE).resolve()))
    return PaumerFiles(folder, key, backbone, model_sha, str(src.resolve()))


def _pause_model_folder(ctx: RunContext, paumer: PaumerFiles) -> Path:
    """``pause-model``: the PAUMER model files and the trained heads in one folder."""
    from exitsearch.pausing.model import MODEL_FILE, SPEC_FILE
    from exitsearch.training.head_training import SUMMARY, WEIGHTS

    key = sha256_of("pause-model-v1", paumer.key, ctx.keys["heads"])
    ctx.keys["pause-model"] = key
    folder = ctx.store.lookup("pause-model", key)
    if folder is None:
        folder = ctx.store.folder("pause-model", key)
        folder.mkdir(parents=True, exist_ok=True)
        for name, src in (
            (MODEL_FILE, paumer.folder / MODEL_FILE),
            (SPEC_FILE, paumer.folder / SPEC_FILE),
            (WEIGHTS, ctx.folders["heads"] / WEIGHTS),
            (SUMMARY, ctx.folders["heads"] / SUMMARY),
        ):
            shutil.copy(src, folder / name)
        ctx.store.commit("pause-model", key, [MODEL_FILE, SPEC_FILE, WEIGHTS, SUMMARY])
    return folder


# ------------------------------------------------------------------ predictions
class _PausePredictor:
    """Predictions per (pause configuration, split), from the cache or computed in parallel."""

    def __init__(self, ctx: RunContext, model_dir: Path, mode: str, executor: Any) -> None:
        self.ctx = ctx
        self.model_dir = model_dir
        self.mode = mode
        self.executor = executor
        self.device = _trial_device(ctx.settings)
        self.memo: dict[tuple[str, str], Predictions] = {}
        self.folders: dict[tuple[str, str], Path] = {}
        self.computed = 0

    def _key(self, cfg: PauseConfig, split: str) -> str:
        return sha256_of(
            "pause-predict-v1",
            self.ctx.keys["pause-model"],
            self.ctx.splits.fingerprint(),
            cfg.key,
            self.mode,
            split,
        )

    def get(self, configs: Sequence[PauseConfig], split: str) -> dict[str, Predictions]:
        """Predictions of ``split`` under each configuration (empty: the unpaused cache)."""
        out: dict[str, Predictions] = {}
        todo: list[PauseConfig] = []
        for cfg in dict.fromkeys(configs):
            memo = self.memo.get((cfg.key, split))
            if memo is not None:
                out[cfg.key] = memo
                continue
            key = self._key(cfg, split)
            folder = self.ctx.store.lookup("pause-predict", key)
            if folder is not None:
                preds = Predictions.load(folder)
                self.memo[(cfg.key, split)] = out[cfg.key] = preds
                self.folders[(cfg.key, split)] = folder
            else:
                todo.append(cfg)
        if todo:
            out.update(self._compute(todo, split))
        return out

    def _compute(self, configs: list[PauseConfig], split: str) -> dict[str, Predictions]:
        from exitsearch.distributed.executors import TrialFailure

        ctx = self.ctx
        jobs = [
            PausePredictJob(
                str(self.model_dir.resolve()),
                ctx.settings.data.to_dict(),
                ctx.splits.fingerprint(),
                cfg.to_dict(),
                self.mode,
                (split,),
                seed=ctx.settings.search.seed,
                label=cfg.key,
                device=self.device,
            )
            for cfg in configs
        ]
        task = f"predict {split} under {len(jobs)} pause configurations"
        ctx.progress.start(task, len(jobs))
        t0 = time.perf_counter()
        out: dict[str, Predictions] = {}
        try:
            results = self.executor.map(jobs)
        finally:
            ctx.progress.finish(task)
        for cfg, res in zip(configs, results, strict=True):
            if isinstance(res, TrialFailure):
                raise ConfigError(f"predicting under pause configuration {cfg.key}: {res.error}")
            preds = _predictions(res)
            key = self._key(cfg, split)
            folder = ctx.store.folder("pause-predict", key)
            preds.save(folder)
            ctx.store.commit(
                "pause-predict",
                key,
                ["predictions.json", f"{split}.npz"],
                {"pause": cfg.key, "mode": self.mode, "split": split, "node": res.get("node_id")},
            )
            self.memo[(cfg.key, split)] = out[cfg.key] = preds
            self.folders[(cfg.key, split)] = folder
            self.computed += 1
        ctx.timings[f"pause-predict-{split}"] = ctx.timings.get(f"pause-predict-{split}", 0.0) + (
            time.perf_counter() - t0
        )
        return out


def _trial_device(settings: RunSettings) -> str:
    """Where pause predictions run: the run's device here, or a GPU per Ray task on CUDA."""
    if settings.ray_address is not None:
        from exitsearch.distributed.cluster import task_device

        return task_device(settings.device)
    return str(resolve_device(settings.device).device)


def _executor(settings: RunSettings) -> Any:
    from exitsearch.distributed.executors import LocalExecutor, RayExecutor

    if settings.ray_address is not None:
        gpus = 1 if _trial_device(settings) == "cuda" else 0
        return RayExecutor(runner=run_pause_predict_job, threads=1, num_gpus=gpus)
    workers = settings.pause_workers or (os.cpu_count() or 1)
    return LocalExecutor(max(1, workers), threads=1, runner=run_pause_predict_job)


# ----------------------------------------------------------------------- search
@dataclass
class _PauseFront:
    """The search inside one pause configuration."""

    config: PauseConfig
    front: list[CurvePoint]  # configurations carry ``pause``
    result: SearchResult
    final_accuracy: float


@dataclass
class PauseRunResult:
    """What the pause-aware pipeline found, besides the merged front."""

    fronts: dict[str, _PauseFront] = field(default_factory=dict)
    trials_per_pause: int = 0
    outer_trials: list[dict[str, Any]] = field(default_factory=list)


def _attach(points: Sequence[CurvePoint], cfg: PauseConfig) -> list[CurvePoint]:
    if not cfg:
        return list(points)
    return [
        CurvePoint(replace(p.config, pause=dict(cfg.fractions)), p.accuracy, p.mean_cost)
        for p in points
    ]


def _merge(points: Sequence[CurvePoint]) -> list[CurvePoint]:
    """Non-dominated points of feasible per-configuration fronts, cheapest first."""
    if not points:
        return []
    mask = pareto_mask([p.accuracy for p in points], [p.mean_cost for p in points])
    chosen = [p for p, keep in zip(points, mask, strict=True) if keep]
    return sorted(chosen, key=lambda p: (p.mean_cost, -p.accuracy))


def _check_budget_unit(settings: RunSettings) -> None:
    from exitsearch.budget import BudgetUnit

    budget = settings.parsed_budget
    if budget is not None and budget.unit is BudgetUnit.MILLISECONDS:
        raise BudgetError(
            f"budget {settings.budget!r} is in milliseconds, but latency tables are measured "
            "without pausing; with a pause space give FLOPs or percent"
        )


class PauseDimension:
    """The pause configurations of a run as a dimension of the pipeline's stages (PAUMER).

    :func:`exitsearch.pipeline.run.run_pipeline` asks :meth:`of` whether the run has one and,
    if so, lets it take part in its stages: the backbone is the PAUMER model's
    (:meth:`backbone`, :meth:`open`), block costs are known under every configuration
    (:meth:`costs`), heads train under randomised pausing (:meth:`states`), and the search
    stage searches inside each configuration and merges the fronts (:meth:`search`), whose
    report adds a pause section.
    """

    def __init__(self, space: SearchSpace, paumer_dir: str) -> None:
        assert space.pause is not None
        self.space = space
        self.opts: PauseOptions = space.pause
        self.paumer_dir = paumer_dir
        self.paumer: PaumerFiles | None = None
        self.model: Any = None
        self.grid: list[PauseConfig] = []

    @classmethod
    def of(cls, settings: RunSettings) -> PauseDimension | None:
        """The run's pause dimension; None for a space without ``pause`` and no ``--paumer``.

        Raises:
            ConfigError: ``--paumer`` with a space without ``pause``, a pause space without
                ``--paumer``, or a latency table (measured without pausing).
            BudgetError: a budget in milliseconds.
        """
        space = load_search_space(settings.space)
        if settings.paumer is None and space.pause is None:
            return None
        if space.pause is None:
            raise ConfigError(
                f"--paumer needs a search space with a `pause` section; {settings.space} has "
                "none (try --space paumer)"
            )
        if settings.paumer is None:
            _check_pausable(settings)
            raise ConfigError(
                f"search space {settings.space} has a `pause` section: pass --paumer DIR, a "
                "PAUMER classification model (`exitsearch pause train --task classification`), "
                "whose backbone the heads are trained on"
            )
        if settings.latency_device is not None or settings.latency_table is not None:
            raise ConfigError(
                "a latency table is measured without pausing; leave out --latency-device and "
                "--latency-table with a pause space"
            )
        _check_budget_unit(settings)
        return cls(space, settings.paumer)

    def backbone(self, settings: RunSettings) -> RunSettings:
        """``settings`` with the PAUMER model's backbone (its weights extracted into the run's
        cache): the heads are trained on exactly these weights."""
        self.paumer = prepare_paumer(self.paumer_dir, settings.run_dir / schema.CACHE_DIR)
        return replace(settings, backbone=self.paumer.backbone)

    def open(self, ctx: RunContext) -> None:
        """Load the PAUMER model and check the space and the run's backbone against it."""
        from exitsearch.pausing.model import load_paumer

        assert self.paumer is not None
        ctx.keys["paumer"] = self.paumer.key
        self.opts.check(ctx.backbone.depth, self.space.source)
        self.model = load_paumer(self.paumer.folder)
        if self.model.backbone.weights_checksum() != ctx.backbone.weights_checksum():
            raise ConfigError(
                f"{self.paumer.folder}: the extracted backbone does not match the model"
            )

    def costs(self, costs: CostModel) -> CostModel:
        """``costs`` plus the block costs of the configurations known before the search (the
        grid, or no pausing when the configurations are sampled)."""
        self.grid = _grid(self.opts, self.model) if self.opts.trials is None else [PauseConfig()]
        return with_pauses(costs, self.model, self.grid, self.opts.mode)

    def states(self) -> Any:
        """Heads read paused states: they train under PAUMER's randomised pausing."""
        return _random_pausing(self.opts, self.model)

    def search(
        self,
        ctx: RunContext,
        plain: Predictions,
        costs: CostModel,
        constraint: BudgetConstraint,
        storage: Any,
        seeds: list[Any],
    ) -> tuple[SearchResult, CostModel, dict[str, Any]]:
        """Search inside each configuration (predicting validation under it, in parallel),
        merge the feasible fronts, and predict test under the merged front's configurations.

        Returns the merged result, the cost model with every configuration searched, and what
        :func:`~exitsearch.report.run_report.write_report` adds for this dimension.

        Raises:
            BudgetError: nothing fits the budget.
        """
        from exitsearch.distributed.cluster import ray_cluster

        assert self.paumer is not None
        settings = ctx.settings
        model_dir = _pause_model_folder(ctx, self.paumer)
        search_key = sha256_of(
            "pause-search-v1",
            ctx.keys["predict"],
            ctx.keys["profile"],
            ctx.keys["pause-model"],
            self.space.to_dict(),
            settings.budget,
            settings.budget_kind,
            asdict(settings.search),
            settings.seed_baselines,
        )
        ctx.keys["search"] = search_key
        t0 = time.perf_counter()
        with ray_cluster(settings.ray_address) as info:
            if info is not None:
                ctx.progress.log(f"pause predictions: {info.describe()}")
            executor = _executor(settings)
            try:
                predictor = _PausePredictor(ctx, model_dir, self.opts.mode, executor)
                for split in ("val", "test"):
                    predictor.memo[("", split)] = plain
                    predictor.folders[("", split)] = ctx.folders["predict"]
                search = _Search(
                    ctx,
                    self.space,
                    costs,
                    constraint,
                    storage,
                    search_key,
                    seeds,
                    predictor,
                    self.model,
                )
                run = (
                    search.grid(self.grid)
                    if self.opts.trials is None
                    else search.sampled(self.opts)
                )
                merged = _merge([p for f in run.fronts.values() for p in f.front])
                if not merged:
                    raise BudgetError(
                        f"no configuration found within budget {settings.budget}; try a larger "
                        "budget or more trials"
                    )
                front_pauses = [PauseConfig(dict(p.config.pause)) for p in merged]
                tests = predictor.get(front_pauses, "test")
            finally:
                executor.close()
        ctx.timings["search"] = time.perf_counter() - t0
        result = _search_result(run, merged, search_key)
        report = self._report_fields(ctx, search.costs, constraint, result, run, predictor, tests)
        return result, search.costs, report

    def _report_fields(
        self,
        ctx: RunContext,
        costs: CostModel,
        constraint: BudgetConstraint,
        result: SearchResult,
        run: PauseRunResult,
        predictor: _PausePredictor,
        tests: Mapping[str, Predictions],
    ) -> dict[str, Any]:
        """What the report adds: members scored on their own configuration's predictions, and
        a ``pause`` section (the configurations, their costs and fronts, the auxiliary
        decoder)."""
        from exitsearch.report.run_report import front_hypervolume, hv_reference

        assert self.paumer is not None
        run_dir = ctx.run_dir
        scale = float(costs.backbone_flops)
        plain = predictor.memo[("", "val")]
        ref = hv_reference(plain.num_classes, constraint, scale)
        on_front = [pause_key(p.config.pause) for p in result.front]
        configurations = []
        for key, f in run.fronts.items():
            cfg = f.config
            blocks = costs.under_pause(cfg.fractions).profile.blocks
            configurations.append(
                {
                    "pause": key,
                    "fractions": cfg.to_dict(),
                    "tokens": _token_counts(ctx.backbone, cfg),
                    "flops_without_exits": float(
                        costs.profile.stem_flops
                        + sum(b.flops for b in blocks)
                        + costs.profile.head_flops
                    ),
                    "val_accuracy_without_exits": f.final_accuracy,
                    "hypervolume": front_hypervolume(f.front, ref, scale),
                    "front_points": len(f.front),
                    "on_merged_front": on_front.count(key),
                    "trials": f.result.n_trials,
                    "predictions": {
                        split: str(predictor.folders[(key, split)].relative_to(run_dir))
                        for split in ("val", "test")
                        if (key, split) in predictor.folders
                    },
                }
            )
        configurations.sort(key=lambda c: c["flops_without_exits"])
        section = {
            "paumer": portable_path(self.paumer.source),
            "paumer_sha256": self.paumer.model_sha256,
            "mode": self.opts.mode,
            "aux": str(self.paumer.aux.relative_to(run_dir)),
            "aux_sha256": file_sha256(self.paumer.aux),
            "space": self.opts.to_dict(),
            "selection": "grid" if self.opts.trials is None else "sampled",
            "outer_trials": run.outer_trials,
            "configurations": configurations,
            # the front of no pausing alone, to see what pausing as a dimension adds
            "hypervolume_without_pausing": front_hypervolume(run.fronts[""].front, ref, scale)
            if "" in run.fronts
            else None,
            "on_front": sorted(set(on_front), key=lambda k: (k != "", k)),
            "predicted_by_this_run": predictor.computed,
        }
        return {
            "paused": {k: (predictor.memo[(k, "val")], tests[k]) for k in tests},
            "sections": {PAUSE_SECTION: section},
            "search_fields": {"trials_per_pause": run.trials_per_pause},
            "record_fields": {"paumer": portable_path(self.paumer.source)},
        }


def _random_pausing(opts: PauseOptions, model: Any) -> Any:
    """PAUMER's randomised pausing over the space's pause layers and proportions, for training
    the exit heads on the paused states they are scored on (None: the space never pauses)."""
    from exitsearch.pausing.random_states import RandomPausing

    taus = [t for t in opts.taus if t > 0]
    if not taus:
        return None
    return RandomPausing(model.vit, opts.layers, min(taus), max(taus), opts.mode)


def _grid(opts: PauseOptions, model: Any) -> list[PauseConfig]:
    """The grid's configurations that fit ``model`` (pausing every token after rounding does
    not; such a configuration is left out)."""
    out = []
    for cfg in opts.grid():
        try:
            out.append(model.vit.resolve(cfg))
        except ConfigError:
            continue
    return out


class _Search:
    """Exit searches inside pause configurations, their predictions computed on demand."""

    def __init__(
        self,
        ctx: RunContext,
        space: SearchSpace,
        costs: CostModel,
        constraint: BudgetConstraint,
        storage: Any,
        key: str,
        seeds: list[Any],
        predictor: _PausePredictor,
        model: Any,
    ) -> None:
        self.ctx = ctx
        self.space = space
        self.costs = costs
        self.constraint = constraint
        self.storage = storage
        self.key = key
        self.seeds = seeds
        self.predictor = predictor
        self.model = model
        self.sampler = ConfigSampler(space, ctx.candidates, ctx.backbone.depth)
        self.fronts: dict[str, _PauseFront] = {}
        self.trials = MIN_TRIALS_PER_PAUSE

    def _settings(self, cfg: PauseConfig) -> SearchSettings:
        base = replace(self.ctx.settings.search, n_trials=self.trials, timeout=None)
        if not cfg:  # no pausing: the normal search (its placements seed the others)
            return base
        # Exact refinement dominates a search inside a pause configuration (0.6 s a placement
        # at 4,000 validation samples). Refining the first non-dominated layer (and the seeds)
        # instead of three cut it from 1,132 s to 431 s in a 37-configuration run, for a
        # merged front with 0.03 % less hypervolume (measured, results/paumer/README.md).
        return replace(base, refine_fronts=1, max_refine=max(10, base.max_refine // 4))

    def search(self, configs: Sequence[PauseConfig]) -> None:
        """Predict validation under ``configs`` (in parallel) and search inside each."""
        new = [c for c in dict.fromkeys(configs) if c.key not in self.fronts]
        if not new:
            return
        self.costs = with_pauses(self.costs, self.model, new, self.space.pause.mode)  # type: ignore[union-attr]
        preds = self.predictor.get(new, "val")
        if "" in [c.key for c in new]:  # no pausing first: its front seeds the others
            new = sorted(new, key=lambda c: c.key != "")
        task = f"exit search inside {len(new)} pause configurations"
        self.ctx.progress.start(task, len(new))
        try:
            for cfg in new:
                self.fronts[cfg.key] = self._one(cfg, preds[cfg.key])
                self.ctx.progress.advance(task)
        finally:
            self.ctx.progress.finish(task)

    def _one(self, cfg: PauseConfig, preds: Predictions) -> _PauseFront:
        ev = Evaluator(preds, "val", self.costs.under_pause(cfg.fractions))
        seeds = list(self.seeds)
        plain = self.fronts.get("")
        if plain is not None and cfg:  # the placements giving most points to the unpaused front
            counts = Counter(p.config.placement_key for p in plain.front)
            first = {p.config.placement_key: replace(p.config, pause={}) for p in plain.front}
            seeds += [first[k] for k, _ in counts.most_common(SEED_PLACEMENTS)]
        # In memory: these trials cost microseconds each and a database write would cost ~90 ms
        # (measured: 11 against 600 trials/s); their inputs are cached stages and the sampler
        # is seeded, so a rerun reproduces the same front in seconds.
        result = run_search(
            ev,
            self.sampler,
            self.constraint,
            self._settings(cfg),
            storage=optuna.storages.InMemoryStorage(),
            study_name=f"search-{self.key[:12]}@{cfg.key or 'none'}",
            resume=False,
            seed_placements=seeds,
            progress=NullProgress(),
        )
        return _PauseFront(cfg, _attach(result.front, cfg), result, float(ev.backbone().accuracy))

    def grid(self, grid: Sequence[PauseConfig]) -> PauseRunResult:
        self.trials = _trials_per_pause(self.ctx.settings.search.n_trials, len(grid))
        self.search([c for c in grid if not c])  # no pausing first (its placements seed)
        self.search(grid)
        return PauseRunResult(dict(self.fronts), self.trials)

    def sampled(self, opts: PauseOptions) -> PauseRunResult:
        """An outer Optuna study samples ``opts.trials`` configurations (see module)."""
        from optuna.trial import TrialState

        from exitsearch.search.driver import finished, open_study, run_rounds, settle_interrupted
        from exitsearch.search.samplers import create_sampler

        assert opts.trials is not None
        self.trials = _trials_per_pause(self.ctx.settings.search.n_trials, opts.trials)
        settings = self.ctx.settings
        study = open_study(
            self.storage,
            f"search-{self.key[:12]}-pauses",
            directions=["maximize"],
            sampler=create_sampler("tpe", settings.search.seed),
            resume=settings.resume,
        )
        from exitsearch.report.run_report import hv_reference

        ref = hv_reference(
            self.predictor.memo[("", "val")].num_classes,
            self.constraint,
            float(self.costs.backbone_flops),
        )
        scale = float(self.costs.backbone_flops)
        settle_interrupted(study, self.ctx.progress, "pause configurations")  # asked again below
        done = finished(study)
        self.search([PauseConfig()])

        def run_round(asked: list[Any]) -> list[float]:
            configs = [self._sample(t, opts) for t in asked]
            self.search(configs)
            values = []
            for t, cfg in zip(asked, configs, strict=True):
                t.set_user_attr("pause", cfg.key)
                f = self.fronts[cfg.key].front
                values.append(
                    hypervolume([p.accuracy for p in f], [p.mean_cost / scale for p in f], *ref)
                )
            return values

        run_rounds(study, max(0, opts.trials - done), OUTER_ROUND, run_round, done=done)
        configs = [
            PauseConfig.parse(t.user_attrs["pause"])
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "pause" in t.user_attrs
        ]
        self.search(configs)  # configurations of an earlier, resumed run
        rows = [
            {"number": t.number, "pause": t.user_attrs.get("pause"), "hypervolume": t.value}
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ]
        return PauseRunResult(dict(self.fronts), self.trials, rows)

    def _sample(self, trial: Any, opts: PauseOptions) -> PauseConfig:
        """``tau@l`` per layer; beyond ``max_layers`` pausing layers the later ones are dropped
        (configurations reached twice are scored once)."""
        taus = {
            layer: trial.suggest_categorical(f"tau@{layer}", list(opts.taus))
            for layer in opts.layers
        }
        chosen = [(layer, t) for layer, t in taus.items() if t > 0]
        if opts.max_layers is not None:
            chosen = chosen[: opts.max_layers]
        try:
            return self.model.vit.resolve(PauseConfig.from_relative(dict(chosen)))
        except ConfigError:
            return PauseConfig()


def _trials_per_pause(total: int, configurations: int) -> int:
    """``total`` split evenly, at least ``min(MIN_TRIALS_PER_PAUSE, total)`` each."""
    return max(min(MIN_TRIALS_PER_PAUSE, total), math.ceil(total / max(1, configurations)))


def _search_result(run: PauseRunResult, merged: list[CurvePoint], key: str) -> SearchResult:
    """One :class:`SearchResult` for the report: the merged front and every inner trial."""
    trials: list[dict[str, Any]] = []
    out = SearchResult(front=merged, study_name=f"search-{key[:12]}@*")
    for f in run.fronts.values():
        r = f.result
        trials += [dict(t, pause=f.config.key) for t in r.trials]
        out.n_trials += r.n_trials
        out.n_failed += r.n_failed
        out.ran_now += r.ran_now
        out.seconds += r.seconds
        out.refine_seconds += r.refine_seconds
        out.placements_refined += r.placements_refined
    out.trials = trials
    return out


# ----------------------------------------------------------------------- report
def _token_counts(backbone: Any, cfg: PauseConfig) -> list[int]:
    """Tokens (prefix included) each block processes under ``cfg``."""
    counts = cfg.counts(backbone.num_patches)
    n = backbone.num_tokens
    out = []
    for block in range(1, backbone.depth + 1):
        out.append(n)
        n -= counts.get(block, 0)
    return out


def _check_pausable(settings: RunSettings) -> None:
    """Refuse a pause space for a backbone family that cannot pause tokens, before pointing
    the user at training a PAUMER model for it.

    Raises:
        ConfigError: the run's backbone cannot pause tokens (a Swin).
    """
    from exitsearch.backbone import resolve_spec
    from exitsearch.backbone.families import family_of_name

    model = resolve_spec(settings.backbone).model
    family = family_of_name(model)
    if family is not None and not family.adapter.supports_pausing:
        raise ConfigError(
            f"search space {settings.space} pauses tokens (PAUMER), which does not apply to "
            f"{model}: its {family.name} blocks attend within windows of a fixed grid; search "
            "it without a pause space (--space default or lgvit)"
        )
