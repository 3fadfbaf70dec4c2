"""The report of one fine-tuning and the comparison of strategies on one bundle.

``finetune_report`` is the ``report.json`` of a fine-tuning folder: the recipe, the training
history, and the configuration scored *before* (the source bundle's weights) and *after* on the
same data by the same evaluator and cost model, each with its own operating points re-fitted on
validation. "Matched cost" is the source configuration's validation cost as exported: each side
takes its most accurate operating point within it on validation, and that point's test accuracy
is reported (thresholds are never chosen on test).

``write_comparison`` turns the reports of several strategies into ``comparison.json``,
``comparison.csv`` and ``comparison.png`` (each strategy's front on validation and its test
re-score against classifier-wise and the unchanged source).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exitsearch._io import atomic_path, atomic_write_json, portable_path
from exitsearch.core.config import ExitConfig
from exitsearch.core.costs import CostModel
from exitsearch.export.points import OperatingPoint
from exitsearch.finetune.evaluate import refit_operating_points, score_placement
from exitsearch.profile import UNIT
from exitsearch.search.evaluator import Evaluator
from exitsearch.training.predict import Predictions
from exitsearch.units import format_flops

if TYPE_CHECKING:
    from exitsearch.finetune.recipe import Recipe
    from exitsearch.finetune.trainer import TrainingLog

__all__ = ["REPORT_SCHEMA", "finetune_report", "write_comparison"]

REPORT_SCHEMA = 2
COMPARISON_JSON = "comparison.json"
COMPARISON_CSV = "comparison.csv"
COMPARISON_PNG = "comparison.png"
BASELINE = "classifier-wise"


def finetune_report(
    *,
    recipe: Recipe,
    log: TrainingLog,
    config: ExitConfig,
    costs: CostModel,
    before: Predictions,
    after: Predictions,
    points: Sequence[OperatingPoint],
    budget: float,
    default: OperatingPoint,
) -> dict[str, Any]:
    """The ``report.json`` document of one fine-tuning (see the module docstring).

    Args:
        recipe: what was run.
        log: the training log.
        config: the configuration as the source bundle exported it.
        costs: the cost model of the configuration.
        before, after: cached predictions of the source weights and of the new ones.
        points: the new weights' operating points (re-fitted on validation).
        budget: matched cost, mean FLOPs per sample (the source configuration on validation).
        default: the new bundle's default operating point.
    """
    src_points = refit_operating_points(before, costs, config)
    exported = {
        split: Evaluator(before, split, costs).evaluate(config).to_dict()
        for split in ("val", "test")
    }
    return {
        "schema": REPORT_SCHEMA,
        "strategy": recipe.strategy,
        "hyperparameters": dict(recipe.hyperparameters),
        "recipe": _portable(recipe.to_dict()),
        "recipe_identity": recipe.identity,
        "bundle": "bundle",
        "unit": UNIT,
        "backbone_flops": float(costs.backbone_flops),
        "placement": config.placement_key,
        "exit_flops": [float(v) for v in costs.exit_flops(config)],
        "notes": list(log.notes),
        "training": {
            "phases": log.phases,
            "epochs": log.epochs,
            "seconds": log.seconds,
            "history": log.history,
        },
        "budget": {
            "mean_flops": float(budget),
            "what": "the source configuration's mean cost on validation, as exported",
        },
        "default_thresholds": list(default.thresholds),
        "before": {
            **score_placement(before, costs, config, src_points, budget),
            "exported": exported,
        },
        "after": score_placement(after, costs, config, points, budget),
    }


def _portable(recipe_doc: dict[str, Any]) -> dict[str, Any]:
    """The recipe with its source bundle relative to the working directory: a report is a
    result, shared or committed; the bundle's own train.yaml keeps the absolute path."""
    source = dict(recipe_doc["source"])
    source["bundle"] = portable_path(source["bundle"])
    return {**recipe_doc, "source": source}


def _row(
    name: str, status: str, side: Mapping[str, Any] | None, doc: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One line of the comparison; ``side`` is a report's ``before`` or ``after``, ``doc`` the
    report when the line is a fine-tuning (None for the unchanged source)."""
    row: dict[str, Any] = {"strategy": name, "status": status}
    if side is None:
        return row
    m = side["matched"]
    training = doc["training"] if doc else None
    row.update(
        {
            "epochs": training["epochs"] if training else None,
            "train_seconds": round(training["seconds"], 1) if training else None,
            "matched_val_accuracy": m["val"]["accuracy"],
            "matched_val_mean_flops": m["val"]["mean_flops"],
            "matched_test_accuracy": m["test"]["accuracy"],
            "matched_test_mean_flops": m["test"]["mean_flops"],
            "val_hypervolume": side["hypervolume_val"],
            "final_val_accuracy": side["final"]["val_accuracy"],
            "final_test_accuracy": side["final"]["test_accuracy"],
            "exit_val_accuracy": " ".join(f"{e['val_accuracy']:.4f}" for e in side["exits"]),
            "exit_test_accuracy": " ".join(f"{e['test_accuracy']:.4f}" for e in side["exits"]),
            # reports of schema 1 listed every point
            "operating_points": side.get("points", len(side["operating_points"])),
        }
    )
    return row


def write_comparison(
    reports: Mapping[str, Mapping[str, Any]],
    out_dir: str | Path,
    failures: Mapping[str, str] | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Write ``comparison.json``/``.csv``/``.png`` into ``out_dir`` from strategy reports.

    Args:
        reports: ``report.json`` documents by strategy name (same bundle, data and settings).
        out_dir: where to write.
        failures: strategies that did not finish, with the reason (e.g. divergence).
        title: plot title.

    Returns:
        The ``comparison.json`` document.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failures = dict(failures or {})
    first = next(iter(reports.values()), None)
    rows = []
    if first is not None:
        rows.append(_row("source (no fine-tuning)", "reference", first["before"], None))
    for name, doc in reports.items():
        rows.append(_row(name, "finished", doc["after"], doc))
    for name, why in failures.items():
        rows.append(_row(name, why, None, None))
    base = reports.get(BASELINE)
    if base is not None:
        ref = base["after"]["matched"]["test"]["accuracy"]
        for row in rows:
            if "matched_test_accuracy" in row:
                row["matched_test_vs_classifier_wise"] = row["matched_test_accuracy"] - ref
    doc = {
        "schema": REPORT_SCHEMA,
        "unit": UNIT,
        "placement": first["placement"] if first else None,
        "budget": first["budget"] if first else None,
        "backbone_flops": first["backbone_flops"] if first else None,
        "source_exported": first["before"]["exported"] if first else None,
        "rows": rows,
        "fronts": {
            **({"source (no fine-tuning)": first["before"]["operating_points"]} if first else {}),
            **{name: d["after"]["operating_points"] for name, d in reports.items()},
        },
        "failures": failures,
    }
    atomic_write_json(out / COMPARISON_JSON, doc, indent=None)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with atomic_path(out / COMPARISON_CSV) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for row in rows:
            w.writerow(row)
    if first is not None:
        _plot(out / COMPARISON_PNG, doc, title)
    return doc


def _plot(path: Path, doc: Mapping[str, Any], title: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_val, ax_test) = plt.subplots(1, 2, figsize=(12, 5), dpi=120, sharey=True)
    cmap = plt.get_cmap("tab10")
    scale = 1e6
    matched = {r["strategy"]: r for r in doc["rows"] if "matched_test_accuracy" in r}
    for i, (name, pts) in enumerate(doc["fronts"].items()):
        if not pts:
            continue
        style: dict[str, Any] = {"color": cmap(i % 10), "lw": 1.3}
        if name == BASELINE:
            style = {"color": "black", "lw": 2.4}
        elif name.startswith("source"):
            style = {"color": "0.55", "lw": 1.3, "ls": "--"}
        vx = [p["val"]["mean_flops"] / scale for p in pts]
        ax_val.step(vx, [p["val"]["accuracy"] for p in pts], where="post", label=name, **style)
        # test: each validation operating point re-scored (not a front: nothing is chosen on
        # test), and the point matched to the budget on validation
        ax_test.scatter(
            [p["test"]["mean_flops"] / scale for p in pts],
            [p["test"]["accuracy"] for p in pts],
            s=7,
            color=style["color"],
            alpha=0.6,
        )
        if name in matched:
            row = matched[name]
            ax_test.scatter(
                [row["matched_test_mean_flops"] / scale],
                [row["matched_test_accuracy"]],
                s=90,
                marker="D",
                facecolors="none",
                edgecolors=[style["color"]],
                linewidths=2,
                zorder=6,
                label=f"{name}: {row['matched_test_accuracy']:.4f}",
            )
    budget = doc["budget"]["mean_flops"]
    ax_val.axvline(
        budget / scale, color="crimson", ls=":", lw=1, label="budget: source as exported"
    )
    ax_test.axvline(budget / scale, color="crimson", ls=":", lw=1)
    for ax in (ax_val, ax_test):
        ax.grid(alpha=0.3)
        ax.set_xlabel(
            f"mean cost per sample (MFLOPs; backbone {format_flops(doc['backbone_flops'])})"
        )
    ax_val.set_ylabel("accuracy")
    ax_val.set_title("operating points re-fitted on validation")
    ax_test.set_title("the same points on test; ◇ chosen on validation at the budget")
    ax_val.legend(fontsize=7, loc="lower right")
    ax_test.legend(fontsize=7, loc="lower right", title="test accuracy at the budget")
    fig.suptitle(title or f"fine-tuning strategies: {doc['placement']}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
