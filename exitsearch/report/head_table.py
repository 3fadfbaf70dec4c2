"""Accuracy of every trained (location, head) against its cumulative cost; practical exits.

Multi-Exit ViT calls an exit *practical* when it is more accurate than every exit that costs less
(an earlier or lighter branch), *impractical* otherwise. Marked on validation accuracy (for a
counting task, on the mean score: minus the MAE; the table and plot show the MAE).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from exitsearch._io import atomic_path
from exitsearch.core.task import CLASSIFICATION, Task, get_task
from exitsearch.profile.backbone import BackboneProfile
from exitsearch.training.predict import Predictions

__all__ = ["HeadRow", "head_table", "plot_heads", "write_heads_csv"]


@dataclass(frozen=True)
class HeadRow:
    key: str
    head: str
    location: int
    cumulative_flops: int
    head_flops: int
    val_accuracy: float
    test_accuracy: float | None
    practical: bool


def head_table(
    preds: Predictions, profile: BackboneProfile, head_flops: dict[str, int]
) -> list[HeadRow]:
    """One row per head (cheapest first) plus the backbone's final exit (key ``final``)."""

    def mean_score(split: str) -> np.ndarray:
        return preds.splits[split].scores(preds.task).mean(axis=1, dtype=np.float64)

    val = mean_score("val")
    test = mean_score("test") if "test" in preds.splits else None
    rows = []
    for i, s in enumerate(preds.heads):
        rows.append(
            (
                s.key,
                s.variant,
                s.location,
                profile.cumulative(s.location) + head_flops[s.key],
                head_flops[s.key],
                float(val[i]),
                None if test is None else float(test[i]),
            )
        )
    rows.append(
        (
            "final",
            "backbone",
            profile.depth,
            profile.total_flops,
            profile.head_flops,
            float(val[-1]),
            None if test is None else float(test[-1]),
        )
    )
    rows.sort(key=lambda r: (r[3], -r[5]))
    out, best = [], -np.inf
    for r in rows:
        practical = r[5] > best
        best = max(best, r[5])
        out.append(HeadRow(*r, practical=practical))
    return out


def write_heads_csv(rows: list[HeadRow], path: str | Path, task: Task | None = None) -> None:
    """The rows as CSV; a counting task's columns are ``val_mae``/``test_mae``."""
    task = task or get_task(None)

    def shown(r: HeadRow) -> dict[str, object]:
        d = asdict(r)
        if task.name == CLASSIFICATION:
            return d
        q = task.quality.lower()
        return {
            (k.replace("accuracy", q) if k.endswith("_accuracy") else k): (
                task.shown(v) if k.endswith("_accuracy") and v is not None else v
            )
            for k, v in d.items()
        }

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(shown(rows[0])))
        writer.writeheader()
        for r in rows:
            writer.writerow(shown(r))


def plot_heads(rows: list[HeadRow], path: str | Path, title: str, task: Task | None = None) -> None:
    """Validation accuracy (or MAE) against cumulative MFLOPs, one marker per head type,
    practical circled."""
    task = task or get_task(None)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.5, 5.5), dpi=120)
    types = sorted({r.head.split("[")[0] for r in rows if r.key != "final"})
    markers = "os^vD<>phP*X"
    cmap = plt.get_cmap("tab10")
    for i, t in enumerate(types):
        pts = [r for r in rows if r.key != "final" and r.head.split("[")[0] == t]
        ax.scatter(
            [r.cumulative_flops / 1e6 for r in pts],
            [task.shown(r.val_accuracy) for r in pts],
            s=18,
            marker=markers[i % len(markers)],
            color=cmap(i % 10),
            label=t,
            alpha=0.8,
        )
    prac = [r for r in rows if r.practical]
    ax.scatter(
        [r.cumulative_flops / 1e6 for r in prac],
        [task.shown(r.val_accuracy) for r in prac],
        s=110,
        facecolors="none",
        edgecolors="black",
        linewidths=1.2,
        label="practical exit",
    )
    final = next(r for r in rows if r.key == "final")
    ax.scatter(
        [final.cumulative_flops / 1e6],
        [task.shown(final.val_accuracy)],
        marker="*",
        s=220,
        color="gold",
        edgecolors="black",
        label="backbone (final exit)",
        zorder=5,
    )
    ax.set_xlabel("cumulative cost of the exit (MFLOPs, 1 MAC = 1 FLOP)")
    ax.set_title(title)
    accs = [r.val_accuracy for r in rows]
    if task.name == CLASSIFICATION:
        ax.set_ylabel("validation accuracy")
        ax.set_ylim(max(0.0, min(accs) - 0.03), min(1.0, max(accs) + 0.03))  # every head shown
    else:  # every head shown, better upwards
        ax.set_ylabel(f"validation {task.quality} (lower is better)")
        span = [task.shown(v) for v in (min(accs), max(accs))]
        pad = 0.05 * max(abs(span[0] - span[1]), 1e-3)
        ax.set_ylim(max(span) + pad, max(0.0, min(span) - pad))
    ax.grid(alpha=0.3)
    # outside the axes: the legend never covers a head
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
