"""The speed-up plot of ``exitsearch bench``: measured against FLOP-predicted, per run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exitsearch._io import atomic_path

__all__ = ["plot_bench"]


def plot_bench(reports: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Horizontal bars of the measured speed-up of every row of ``reports`` (``BenchReport``
    JSON documents, e.g. one per thread count), each with its FLOP-predicted speed-up marked
    and the ratio of the two written next to it. The 0.8-of-predicted mark is dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [
        (report, row)
        for report in reports
        for row in sorted(report["rows"], key=lambda r: (r["batch_size"], r["engine"]))
    ]
    if not rows:
        raise ValueError("no bench rows to plot")
    labels, measured, predicted, colors, err = [], [], [], [], []
    palette = {"torch": "tab:blue", "onnx": "tab:orange"}
    for report, row in rows:
        mode = "" if row.get("mode", "batch") == "batch" else f" {row['mode']}"
        labels.append(
            f"{row['engine']}{mode}, b={row['batch_size']}, {report['threads']} thread(s)"
        )
        measured.append(row["measured_speedup"])
        # the 95 % interval of the median ratio (reports written before it have none)
        low, high = row.get("speedup_low", measured[-1]), row.get("speedup_high", measured[-1])
        err.append((measured[-1] - low, high - measured[-1]))
        predicted.append(row["predicted_speedup"])
        colors.append(palette.get(row["engine"], "tab:gray"))
    height = 0.42 * len(rows) + 2.0
    fig, ax = plt.subplots(figsize=(9, height), dpi=120)
    y = list(range(len(rows)))[::-1]
    ax.barh(
        y,
        measured,
        color=colors,
        alpha=0.85,
        xerr=[[e[0] for e in err], [e[1] for e in err]],
        error_kw={"elinewidth": 1, "capsize": 3, "ecolor": "0.2"},
    )
    ax.scatter(predicted, y, marker="|", s=260, color="black", zorder=5, label="FLOP-predicted")
    ax.scatter(
        [0.8 * p for p in predicted],
        y,
        marker="|",
        s=160,
        color="crimson",
        zorder=5,
        label="0.8 of predicted",
    )
    for yi, m, p, e in zip(y, measured, predicted, err, strict=True):
        ax.text(max(m + e[1], p) + 0.03, yi, f"{m:.2f}x ({m / p:.2f})", va="center", fontsize=8)
    ax.axvline(1.0, color="0.4", lw=1, ls=":")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    # room for every bar's interval and the label after it
    right = max(max(m + e[1], p) for m, p, e in zip(measured, predicted, err, strict=True))
    ax.set_xlim(0, right * 1.25)
    ax.set_xlabel(
        "speed-up over the backbone alone: median of paired rounds, with its 95 % interval\n"
        "(in brackets: measured / FLOP-predicted)"
    )
    ax.set_title(_wrapped(title or "measured against FLOP-predicted speed-up"), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Patch(color=palette.get(engine, "tab:gray"), alpha=0.85, label=f"measured, {engine}")
        for engine in dict.fromkeys(row["engine"] for _, row in rows)
    ]
    # below the axis title, in a strip of its own: never over the bars or the title
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1))
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def _wrapped(title: str, width: int = 72, lines: int = 3) -> str:
    """A title that fits over the axes: at most ``lines`` lines, shortened with an ellipsis."""
    import textwrap

    parts = textwrap.wrap(title, width=width)
    if len(parts) > lines:
        parts = [*parts[: lines - 1], textwrap.shorten(" ".join(parts[lines - 1 :]), width)]
    return "\n".join(parts)
