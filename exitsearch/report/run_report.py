"""Writing a run's results: ``pareto.json``/``.csv``/``.png``, ``placements.json``, heads table."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from exitsearch._io import atomic_path, atomic_write_json, portable_path
from exitsearch.budget import Budget, BudgetKind
from exitsearch.core.config import ExitConfig
from exitsearch.core.costs import CostModel, pause_key
from exitsearch.core.task import CLASSIFICATION, Task, get_task
from exitsearch.device import environment
from exitsearch.intervals import paired_scores, score_interval
from exitsearch.report import schema
from exitsearch.report.head_table import head_table, plot_heads, write_heads_csv
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.pareto import hypervolume, pareto_mask, spread
from exitsearch.search.refine import CurvePoint, refine_placement
from exitsearch.search.study import BudgetConstraint, SearchResult
from exitsearch.training.predict import Predictions
from exitsearch.units import format_flops

if TYPE_CHECKING:
    from exitsearch.backbone import Backbone
    from exitsearch.heads import HeadSpec
    from exitsearch.search.space import SearchSpace


__all__ = [
    "RunView",
    "finite_or_none",
    "front_hypervolume",
    "front_member",
    "hv_reference",
    "placement_curves",
    "plot_pareto",
    "recommend",
    "write_pareto_csv",
    "write_report",
]


class RunView(Protocol):
    """What the report reads of a run: its settings, backbone, space, candidate heads, stage
    folders, cache keys, timings and the latency table's origin (the pipeline's ``RunContext``
    is one)."""

    settings: Any
    backbone: Backbone
    space: SearchSpace
    candidates: list[HeadSpec]
    keys: dict[str, str]
    folders: dict[str, Path]
    timings: dict[str, float]
    latency: dict[str, Any] | None

    @property
    def run_dir(self) -> Path: ...


def finite_or_none(x: float) -> float | None:
    """A rate for the report: None where there is nothing to measure (NaN)."""
    return x if math.isfinite(x) else None


def hv_reference(
    num_classes: int,
    constraint: BudgetConstraint,
    backbone_cost: float,
    chance: float | None = None,
) -> tuple[float, float]:
    """Hypervolume reference: chance accuracy (or ``chance``, the score of the best constant
    prediction, for other tasks), and the budget (or the backbone) as cost fraction
    (``backbone_cost`` in the budget's unit)."""
    cost = constraint.limit / backbone_cost if constraint.limit is not None else 1.0
    return (1.0 / num_classes if chance is None else chance), cost


def front_hypervolume(points: list[CurvePoint], ref: tuple[float, float], scale: float) -> float:
    return hypervolume([p.accuracy for p in points], [p.mean_cost / scale for p in points], *ref)


def write_report(
    ctx: RunView,
    preds: Predictions,
    costs: CostModel,
    budget: Budget | None,
    constraint: BudgetConstraint,
    result: SearchResult,
    notes: list[str],
    *,
    paused: Mapping[str, tuple[Predictions, Predictions]] | None = None,
    sections: Mapping[str, Any] | None = None,
    search_fields: Mapping[str, Any] | None = None,
    record_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write every result file of the run folder and return the ``pareto.json`` document.

    ``preds`` are the predictions without pausing (the baselines, the backbone and the heads
    table read them). In a run with pause configurations as a dimension (PAUMER), ``paused``
    holds each configuration's validation and test predictions by its key, and every front
    member is scored on those of its own configuration (``""``: no pausing, ``preds``);
    ``sections`` are added to ``pareto.json`` (the pause section), ``search_fields`` to its
    ``search`` section and ``record_fields`` to ``run.json``.
    """
    from exitsearch.search.baselines import score_baselines

    run_dir = ctx.run_dir
    # the search ranked by the budget's unit (FLOPs, or milliseconds with a latency table);
    # fronts, baselines and hypervolumes are compared in it
    val = Evaluator(preds, "val", costs, constraint.unit)
    test = Evaluator(preds, "test", costs, constraint.unit)
    scored: dict[str, tuple[Evaluator, Evaluator]] = {"": (val, test)}
    for key, (v, t) in (paused or {}).items():
        if key:
            scored[key] = (
                Evaluator(v, "val", costs, constraint.unit),
                Evaluator(t, "test", costs, constraint.unit),
            )
    scale = val.backbone_cost
    task = val.task
    chance = None if task.name == CLASSIFICATION else task.chance(val.sp.labels)
    ref = hv_reference(preds.num_classes, constraint, scale, chance)
    backbone_ok = (val.backbone_correct(), test.backbone_correct())
    members, correct = [], []
    for i, p in enumerate(result.front):
        key = pause_key(p.config.pause)
        v, t = scored[key]
        member = front_member(
            i, p.config, v, t, backbone_ok, **({"pause": key} if paused is not None else {})
        )
        if key:
            member["description"] += f" | pause {key}"
        members.append(member)
        correct.append(v.correct_of(p.config))
    recommended, more = recommend(members, correct, task)
    notes = [*notes, *more]
    baselines = score_baselines(val, ctx.candidates, ctx.backbone.depth, constraint)
    front_hv = front_hypervolume(result.front, ref, scale)
    base_docs, base_fronts = baseline_documents(baselines, test, ref, scale, front_hv)
    # operating points carry FLOPs, whatever the unit the search ranked by; each placement's
    # on the predictions of its own pause configuration
    placements: dict[str, Any] = {}
    for key in dict.fromkeys(pause_key(p.config.pause) for p in result.front):
        on = scored[key][0].predictions
        pts = [p for p in result.front if pause_key(p.config.pause) == key]
        placements.update(placement_curves(Evaluator(on, "val", costs), pts))
    bb_val, bb_test = val.backbone(), test.backbone()
    doc = {
        "schema": schema.PARETO_SCHEMA,
        "run": run_dir.name,
        "unit": "FLOPs (MACs)",
        "backbone": {
            "spec": _portable_spec(ctx.settings.backbone, run_dir),
            "resolved": _portable_spec(ctx.backbone.spec, run_dir, resolved=True),
            "weights_sha256": ctx.backbone.weights_checksum(),
            "flops": costs.backbone_flops,
            "val_accuracy": bb_val.accuracy,
            "test_accuracy": bb_test.accuracy,
            **_reported(task, "val_", bb_val.accuracy),
            **_reported(task, "test_", bb_test.accuracy),
        },
        **_task_fields(task),
        # label i is classes[i]: what exported bundles answer with beside the index
        "classes": [str(c) for c in ctx.splits.classes],
        "data": ctx.settings.data.to_dict(),
        "budget": {
            "text": ctx.settings.budget,
            "kind": constraint.kind.value,
            "flops": constraint.flops,
            "ms": constraint.ms,
        },
        # the latency table behind every ms figure (null without one)
        "latency": ctx.latency,
        "space": ctx.space.name,
        "artifacts": {
            "heads": str((ctx.folders["heads"] / "heads.safetensors").relative_to(run_dir)),
            "heads_summary": str((ctx.folders["heads"] / "heads.json").relative_to(run_dir)),
            "predictions": str(ctx.folders["predict"].relative_to(run_dir)),
            "profile": str((ctx.folders["profile"] / "profile.json").relative_to(run_dir)),
            "study": schema.STUDY_DB,
        },
        "front": members,
        "recommended": recommended["id"],
        "recommendation_rule": RECOMMENDATION_RULE,
        "intervals": INTERVALS[task.name == CLASSIFICATION],
        "baselines": base_docs,
        "hypervolume": {
            "front": front_hv,
            "reference": {"accuracy": ref[0], "cost_fraction": ref[1]},
        },
        "search": {
            "sampler": ctx.settings.search.sampler,
            "n_trials": result.n_trials,
            "failed_trials": result.n_failed,
            "seconds": result.seconds,
            "trials_per_second": finite_or_none(result.trials_per_second),
            "refine_seconds": result.refine_seconds,
            "placements_refined": result.placements_refined,
            "seed": ctx.settings.search.seed,
            "study_name": result.study_name,
            **(search_fields or {}),
        },
        **(sections or {}),
        "notes": notes,
        "stage_keys": ctx.keys,
        "timings": ctx.timings,
    }
    atomic_write_json(run_dir / schema.PARETO_JSON, doc, indent=None)
    atomic_write_json(run_dir / schema.PLACEMENTS_JSON, placements, indent=None)
    atomic_write_json(run_dir / schema.BASELINES_JSON, base_fronts, indent=None)
    write_pareto_csv(run_dir / schema.PARETO_CSV, members, task)
    plot_pareto(
        run_dir / schema.PARETO_PNG,
        result,
        baselines,
        members,
        constraint,
        scale,
        ctx,
        bb_val.accuracy,
        val,
    )
    rows = head_table(preds, costs.profile, dict(costs.head_flops))
    write_heads_csv(rows, run_dir / schema.HEADS_CSV, task)
    plot_heads(
        rows,
        run_dir / schema.HEADS_PNG,
        f"{len(preds.heads)} exit heads on {ctx.settings.backbone.model}"
        + (" (no pausing)" if paused is not None else ""),
        task,
    )
    write_run_record(run_dir, ctx, **(record_fields or {}))
    return doc


def _portable_spec(spec: Any, run_dir: Path, resolved: bool = False) -> dict[str, Any]:
    """A backbone spec for a result file: a checkpoint inside the run folder (a PAUMER run's
    backbone, extracted into its cache) relative to the folder, which is where export looks
    for it when the path does not resolve; any other checkpoint as the user gave it, or, for the
    ``resolved`` spec, relative to the working directory (no absolute path of this machine)."""
    doc = spec.to_dict()
    checkpoint = doc.get("checkpoint")
    if checkpoint:
        path = Path(checkpoint).resolve()
        if path.is_relative_to(run_dir.resolve()):
            doc["checkpoint"] = str(path.relative_to(run_dir.resolve()))
        elif resolved:
            doc["checkpoint"] = portable_path(checkpoint)
    return doc


def write_run_record(run_dir: Path, ctx: RunView, **extra: Any) -> None:
    """``run.json``: the settings, stage keys and timings of the run, and the software and
    machine it ran on (what a same-seed rerun elsewhere may differ by)."""
    atomic_write_json(
        run_dir / schema.RUN_JSON,
        {
            "backbone": _portable_spec(ctx.settings.backbone, run_dir),
            "data": ctx.settings.data.to_dict(),
            "space": ctx.settings.space,
            "budget": ctx.settings.budget,
            "budget_kind": ctx.settings.budget_kind,
            "heads": ctx.settings.heads.__dict__,
            "search": ctx.settings.search.__dict__,
            **extra,
            "stage_keys": ctx.keys,
            "timings": ctx.timings,
            "environment": environment(),
        },
    )


RECOMMENDATION_RULE = (
    "the member whose gain over the backbone has the highest 95 % lower bound on validation "
    "(paired, same samples); the cheaper one on ties"
)


INTERVALS = {
    True: "95 %: Wilson score for accuracy; Newcombe's paired hybrid score for the "
    "difference to the backbone on the same samples",
    False: "95 %: normal intervals of the mean score (minus the absolute error) and of its "
    "paired difference to the backbone on the same samples",
}


def _task_fields(task: Task) -> dict[str, Any]:
    """What a non-classification report says about its scores: the task, the quality it
    reports, and that ``accuracy`` fields hold the mean score."""
    if task.name == CLASSIFICATION:
        return {}
    return {
        "task": task.name,
        "quality": task.quality,
        "score": f"each `accuracy` is the mean per-sample score, here minus the {task.quality}; "
        f"`{task.quality.lower()}` fields hold the {task.quality} itself",
    }


def _reported(task: Task, prefix: str, score: float) -> dict[str, float]:
    """``{prefix + quality: value}`` for tasks whose quality is not the mean score."""
    if task.name == CLASSIFICATION:
        return {}
    return {f"{prefix}{task.quality.lower()}": task.shown(score)}


def _how_sure(correct: np.ndarray, backbone_correct: np.ndarray, task: Task) -> dict[str, Any]:
    """95 % interval of the mean score, and the paired difference to the backbone."""
    low, high = score_interval(correct)
    out: dict[str, Any] = {
        "accuracy_low": low,
        "accuracy_high": high,
        "vs_backbone": paired_scores(correct, backbone_correct).to_dict(),
    }
    if task.name != CLASSIFICATION:
        q = task.quality.lower()
        shown = sorted((task.shown(low), task.shown(high)))
        mean = float(correct.mean(dtype=np.float64))
        out |= {q: task.shown(mean), f"{q}_low": shown[0], f"{q}_high": shown[1]}
    return out


def front_member(
    i: int,
    config: ExitConfig,
    val: Evaluator,
    test: Evaluator,
    backbone_ok: tuple[np.ndarray, np.ndarray],
    **extra: Any,
) -> dict[str, Any]:
    """One front member's document: its configuration, and its scores on validation and test
    with their 95 % intervals and paired differences to the backbone."""
    ve, te = val.evaluate(config), test.evaluate(config)
    return {
        "id": i,
        "config": config.to_dict(),
        "placement": config.placement_key,
        "description": config.describe(),
        **extra,
        "val": ve.to_dict() | _how_sure(val.correct_of(config), backbone_ok[0], val.task),
        "test": te.to_dict() | _how_sure(test.correct_of(config), backbone_ok[1], val.task),
        "speedup": ve.speedup,
        "recommended": False,
    }


def recommend(
    members: list[dict[str, Any]], correct: list[np.ndarray], task: Task | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Mark the member :data:`RECOMMENDATION_RULE` chooses; return it and the notes on what the
    validation split cannot tell (``correct``: each member's per-sample outcomes)."""
    recommended = max(
        members, key=lambda m: (m["val"]["vs_backbone"]["low"], -m["val"]["mean_flops"])
    )
    recommended["recommended"] = True
    return recommended, _uncertainty_notes(members, correct, recommended, task or get_task(None))


def gain_text(task: Task, difference: float) -> str:
    """A difference of mean scores as a user reads it: ``+0.52 points`` of accuracy, or
    ``-0.031 MAE``."""
    if task.name == CLASSIFICATION:
        return f"{difference * 100:+.2f} points"
    return f"{task.shown(difference):+.3f} {task.quality}"


def interval_text(task: Task, low: float, high: float) -> str:
    """An interval of a score difference in the reported unit, low to high."""
    if task.name == CLASSIFICATION:
        return f"{low * 100:+.2f} to {high * 100:+.2f}"
    a, b = sorted((task.shown(low), task.shown(high)))
    return f"{a:+.3f} to {b:+.3f}"


def _uncertainty_notes(
    members: list[dict[str, Any]],
    correct: list[np.ndarray],
    recommended: dict[str, Any],
    task: Task,
) -> list[str]:
    """What the validation split cannot tell: members apart, or a gain from noise."""
    notes = []
    n = correct[0].size
    best = max(range(len(members)), key=lambda i: members[i]["val"]["accuracy"])
    cheapest = min(range(len(members)), key=lambda i: members[i]["val"]["mean_flops"])
    if best != cheapest:
        d = paired_scores(correct[best], correct[cheapest])
        if not d.significant:
            notes.append(
                f"validation has {n} samples, too few to tell the front's members apart: the most "
                f"accurate and the cheapest differ by {gain_text(task, d.difference)} (95 % "
                f"interval {interval_text(task, d.low, d.high)}); use more validation data "
                "before trusting the ordering"
            )
    gain = recommended["val"]["vs_backbone"]
    if gain["difference"] > 0 and gain["low"] <= 0:
        notes.append(
            f"the recommended configuration's gain over the backbone on validation "
            f"({gain_text(task, gain['difference'])}, 95 % interval "
            f"{interval_text(task, gain['low'], gain['high'])}) is within noise; expect no gain "
            "on new data"
        )
    return notes


def baseline_documents(
    baselines: list[Any],
    test: Evaluator,
    ref: tuple[float, float],
    scale: float,
    front_hv: float,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each baseline's summary for ``pareto.json`` and its own front for ``baselines.json``."""
    summaries, fronts = [], {}
    for b in baselines:
        hv = front_hypervolume(b.front, ref, scale)
        summaries.append(
            {
                "name": b.name,
                "description": b.description,
                "hypervolume": hv,
                "ratio": (front_hv / hv) if hv > 0 else None,
                "points": len(b.front),
                "best_val_accuracy": max((p.accuracy for p in b.front), default=None),
            }
        )
        fronts[b.name] = columns_of(b.front, test)
    return summaries, fronts


def columns_of(points: list[CurvePoint], test: Evaluator) -> dict[str, Any]:
    """A front as columns: its placements once, then per point the placement's index, the
    thresholds and the scores on validation and test (``baselines.json``)."""
    placements: dict[str, int] = {}
    configs: list[dict[str, Any]] = []
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "placement",
            "thresholds",
            "threshold_mode",
            "val_accuracy",
            f"val_mean_{test.unit}",
            "test_accuracy",
            f"test_mean_{test.unit}",
        )
    }
    for p in points:
        key = p.config.placement_key
        if key not in placements:
            placements[key] = len(configs)
            doc = p.config.to_dict()
            configs.append(
                {k: v for k, v in doc.items() if k not in ("thresholds", "threshold_mode")}
            )
        test_acc, test_mean, _ = test.quick(p.config)
        for k, v in (
            ("placement", placements[key]),
            ("thresholds", _thresholds_column(p.config)),
            ("threshold_mode", p.config.threshold_mode),
            ("val_accuracy", p.accuracy),
            (f"val_mean_{test.unit}", p.mean_cost),
            ("test_accuracy", test_acc),
            (f"test_mean_{test.unit}", test_mean),
        ):
            cols[k].append(v)
    return {"placements": configs, **cols}


def config_of_column(columns: dict[str, Any], i: int) -> ExitConfig:
    """Point ``i`` of a front written by :func:`columns_of`, as the configuration it scores."""
    placement = columns["placements"][columns["placement"][i]]
    thresholds = columns["thresholds"][i]
    if not isinstance(thresholds, list):  # one shared threshold for every exit
        thresholds = [thresholds] * len(placement["exits"])
    return ExitConfig.from_dict(
        placement | {"thresholds": thresholds, "threshold_mode": columns["threshold_mode"][i]}
    )


def _thresholds_column(config: ExitConfig) -> float | list[float]:
    """A shared threshold once, per-exit thresholds as a list."""
    if config.threshold_mode == "shared":
        return float(config.thresholds[0])
    return [float(t) for t in config.thresholds]


# Operating points kept per placement: enough to switch between along its curve, few enough that
# placements.json stays small (a refined placement has hundreds of Pareto-optimal settings).
MAX_OPERATING_POINTS = 64


def placement_curves(ev: Evaluator, front: list[CurvePoint]) -> dict[str, list[dict[str, Any]]]:
    """Each front placement's own Pareto-optimal threshold settings (operating points), at
    most :data:`MAX_OPERATING_POINTS` spread over its cost range."""
    out: dict[str, list[dict[str, Any]]] = {}
    seen = {}
    for p in front:
        seen.setdefault(p.config.placement_key, p.config)
    for key, config in seen.items():
        pts = refine_placement(ev, config, per_exit=True)
        mask = pareto_mask([q.accuracy for q in pts], [q.mean_cost for q in pts])
        optimal = sorted(
            (q for q, m in zip(pts, mask, strict=True) if m), key=lambda q: q.mean_cost
        )
        chosen = [optimal[i] for i in spread(len(optimal), MAX_OPERATING_POINTS)]
        out[key] = [
            {
                "thresholds": list(q.config.thresholds),
                "threshold_mode": q.config.threshold_mode,
                "val_accuracy": q.accuracy,
                "mean_flops": q.mean_cost,
            }
            for q in chosen
        ]
    return out


def write_pareto_csv(path: Path, members: list[dict[str, Any]], task: Task | None = None) -> None:
    """One row per front member; a counting run's columns give the MAE (``val_mae``...) and
    its change against the backbone (negative is better) in place of accuracies and gains."""
    task = task or get_task(None)
    fields = [
        "id",
        "recommended",
        "val_accuracy",
        "val_accuracy_low",
        "val_accuracy_high",
        "val_gain_vs_backbone",
        "val_gain_low",
        "val_gain_high",
        "test_accuracy",
        "mean_flops",
        "p95_flops",
        "max_flops",
        "speedup",
        "exits",
        "criterion",
        "description",
    ]
    # With a latency table: milliseconds per sample on its device, next to the FLOPs
    timed = any(m["val"].get("mean_ms") is not None for m in members)
    if timed:
        fields[fields.index("max_flops") + 1 : fields.index("max_flops") + 1] = [
            "mean_ms",
            "max_ms",
        ]
    if task.name != CLASSIFICATION:
        fields = list(_csv_row(dict.fromkeys(fields, 0.0), task))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for m in members:
            row = {
                "id": m["id"],
                "recommended": m["recommended"],
                "val_accuracy": m["val"]["accuracy"],
                "val_accuracy_low": m["val"]["accuracy_low"],
                "val_accuracy_high": m["val"]["accuracy_high"],
                "val_gain_vs_backbone": m["val"]["vs_backbone"]["difference"],
                "val_gain_low": m["val"]["vs_backbone"]["low"],
                "val_gain_high": m["val"]["vs_backbone"]["high"],
                "test_accuracy": m["test"]["accuracy"],
                "mean_flops": m["val"]["mean_flops"],
                "p95_flops": m["val"]["p95_flops"],
                "max_flops": m["val"]["max_flops"],
                "speedup": m["speedup"],
                "exits": " ".join(f"{e['type']}@{e['location']}" for e in m["config"]["exits"]),
                "criterion": m["config"]["criterion"],
                "description": m["description"],
            }
            if timed:
                row |= {"mean_ms": m["val"].get("mean_ms"), "max_ms": m["val"].get("max_ms")}
            w.writerow(_csv_row(row, task) if task.name != CLASSIFICATION else row)


def _csv_row(row: dict[str, Any], task: Task) -> dict[str, Any]:
    """A CSV row in the reported quality: scores become the quality, and an interval's ends
    swap where the quality falls as the score rises."""
    q = task.quality.lower()
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in ("val_accuracy", "test_accuracy"):
            out[k.replace("accuracy", q)] = task.shown(v)
        elif k == "val_accuracy_low":
            out[f"val_{q}_low"] = task.shown(row["val_accuracy_high"])
        elif k == "val_accuracy_high":
            out[f"val_{q}_high"] = task.shown(row["val_accuracy_low"])
        elif k == "val_gain_vs_backbone":
            out[f"val_{q}_vs_backbone"] = task.shown(v)
        elif k == "val_gain_low":
            out[f"val_{q}_vs_backbone_low"] = task.shown(row["val_gain_high"])
        elif k == "val_gain_high":
            out[f"val_{q}_vs_backbone_high"] = task.shown(row["val_gain_low"])
        else:
            out[k] = v
    return out


def plot_pareto(
    path: Path,
    result: SearchResult,
    baselines: list[Any],
    members: list[dict[str, Any]],
    constraint: BudgetConstraint,
    scale: float,
    ctx: RunView,
    backbone_acc: float,
    val: Evaluator,
) -> None:
    """Accuracy against cost (``val`` scores the baselines' worst cases): trials, every baseline (own colour and marker), the searched front
    on validation and re-scored on test, the recommendation, the budget and the backbone. Under
    a max budget the cost axis is each configuration's worst case, the cost the budget limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worst = constraint.kind is BudgetKind.MAX
    what = "max" if worst else "mean"
    # the axis is the unit the search ranked by: MFLOPs, or milliseconds with a latency table
    ms = val.unit == "ms"
    div = 1.0 if ms else 1e6
    key = ("max_" if worst else "mean_") + ("ms" if ms else "flops")

    def cost_of(config: ExitConfig, mean_cost: float) -> float:
        return (val.quick(config)[2] if worst else mean_cost) / div

    def shown(cost: float) -> str:
        return f"{cost:.3g} ms" if ms else format_flops(cost)

    task = val.task

    def y_of(values: Any) -> list[float]:
        """Scores as the plot shows them: accuracy, or the MAE."""
        return [task.shown(float(v)) for v in values]

    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=120)
    trials = [t for t in result.trials if t.get("feasible")]
    if trials and not worst:  # trials record their mean cost only
        ax.scatter(
            [t["mean_cost"] / div for t in trials],
            y_of(t["accuracy"] for t in trials),
            s=4,
            color="0.75",
            label=f"search trials ({len(result.trials)})",
            zorder=1,
        )
    cmap = plt.get_cmap("tab20")
    markers = "os^vD<>phP*X8"
    for i, b in enumerate(x for x in baselines if x.front):
        xs = [cost_of(p.config, p.mean_cost) for p in b.front]
        ys = y_of(p.accuracy for p in b.front)
        style = {"color": cmap(i % 20), "marker": markers[i % len(markers)], "label": b.name}
        if len(xs) == 1:
            ax.scatter(xs, ys, s=60, edgecolors="black", zorder=4, **style)
        else:
            order = np.argsort(xs)
            ax.plot(
                np.asarray(xs)[order],
                np.asarray(ys)[order],
                drawstyle="steps-post",
                lw=1.0,
                alpha=0.85,
                markevery=max(1, len(xs) // 8),
                markersize=5,
                **style,
            )
    fx = [m["val"][key] / div for m in members]
    by_cost = sorted(range(len(members)), key=lambda i: (fx[i], -members[i]["val"]["accuracy"]))
    ax.step(
        [fx[i] for i in by_cost],
        y_of(np.maximum.accumulate([members[i]["val"]["accuracy"] for i in by_cost])),
        where="post",
        color="black",
        lw=2.2,
        label="searched front (validation)",
        zorder=5,
    )
    ax.scatter(
        fx,
        y_of(m["test"]["accuracy"] for m in members),
        s=12,
        color="crimson",
        zorder=6,
        label="searched front re-scored on test",
    )
    rec = next(m for m in members if m["recommended"])
    ax.scatter(
        [rec["val"][key] / div],
        y_of([rec["val"]["accuracy"]]),
        s=140,
        marker="D",
        facecolors="none",
        edgecolors="crimson",
        linewidths=2,
        zorder=7,
        label="recommended" + (f" ({format_flops(rec['val']['mean_flops'])} mean)" if ms else ""),
    )
    if constraint.limit is not None and constraint.limit < 1.5 * scale:
        text = f"{ctx.settings.budget} = " if ctx.settings.budget else ""
        ax.axvline(
            constraint.limit / div,
            color="crimson",
            ls="--",
            lw=1,
            label=f"budget {text}{shown(constraint.limit)} ({what} cost)",
        )
    ax.axhline(
        task.shown(backbone_acc),
        color="0.4",
        ls=":",
        lw=1,
        label=f"backbone alone (validation {task.format(backbone_acc)}, {shown(scale)})",
    )
    accs = [m["val"]["accuracy"] for m in members]
    accs += [p.accuracy for b in baselines for p in b.front]  # every plotted point in view
    if task.name == CLASSIFICATION:
        ax.set_ylim(max(0.0, min(accs) - 0.03), min(1.0, max(max(accs), backbone_acc) + 0.01))
    else:  # the MAE, better upwards as accuracy is
        span = y_of([min(accs), max(max(accs), backbone_acc)])
        pad = 0.05 * max(abs(span[0] - span[1]), 1e-3)
        ax.set_ylim(max(span) + pad, max(0.0, min(span) - pad))
    if ms:
        ax.set_xlabel(
            f"{what} time per sample (ms, from the latency table; backbone {shown(scale)}, "
            f"{format_flops(val.costs.backbone_flops)})"
        )
    else:
        ax.set_xlabel(f"{what} cost per sample (MFLOPs; backbone {format_flops(scale)})")
    quality = task.quality if task.higher_is_better else f"{task.quality} (lower is better)"
    ax.set_ylabel(quality)
    ax.set_title(
        f"{ctx.settings.backbone.model}: {task.quality} against {what} "
        f"{'time' if ms else 'cost'} "
        f"({ctx.space.name} space)"
    )
    ax.grid(alpha=0.3)
    # outside the axes: the legend never covers a curve
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
