"""``exitsearch run``: the whole pipeline, from a backbone and data to the Pareto front."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from exitsearch_cli._console import RichProgress, console, err_console, handle_errors
from exitsearch_cli._options import (
    AllowOverlapOpt,
    Bf16Opt,
    CheckpointOpt,
    DataDirOpt,
    DeviceOpt,
    HeadBatchOpt,
    HeadEpochsOpt,
    HeadLimitOpt,
    HeadLrOpt,
    HeadMemoryOpt,
    LimitOpt,
    ModelOpt,
    OverrideOpt,
    PresetDataOpt,
    PretrainedOpt,
    RunOpt,
    SpaceOpt,
    SplitSeedOpt,
    ValSizeOpt,
    WorkersOpt,
    backbone_spec,
    data_spec,
    head_config,
    parse_head_memory,
    preset_data,
    run_folder,
    use_workers,
)
from rich import box
from rich.markup import escape
from rich.table import Table

from exitsearch.backbone import DEFAULT_PRESET
from exitsearch.errors import ConfigError
from exitsearch.report import schema
from exitsearch.units import format_flops


@handle_errors
def run(
    ctx: typer.Context,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            "-b",
            help="Compute budget per sample: 8GFLOPs, 750MFLOPs, 8e9, 45% (of the backbone), "
            "or 12ms (with --latency-device or --latency-table); FLOPs count "
            "multiply-accumulates (GMACs is a synonym). Omit for the whole front.",
        ),
    ] = None,
    budget_kind: Annotated[
        str,
        typer.Option(
            "--budget-kind",
            help="mean: expected cost per sample; max: worst case (the model is cut).",
        ),
    ] = "mean",
    model: ModelOpt = DEFAULT_PRESET,
    override: OverrideOpt = None,
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = False,
    data: PresetDataOpt = None,
    data_dir: DataDirOpt = None,
    val_size: ValSizeOpt = None,
    split_seed: SplitSeedOpt = 0,
    limit: LimitOpt = None,
    space: SpaceOpt = "default",
    run_dir: RunOpt = None,
    n_trials: Annotated[
        int,
        typer.Option(
            "--n-trials", help="Search trials in total (resumed studies run the missing ones)."
        ),
    ] = 1500,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Stop starting search trials after this many seconds."),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", help="Seed of head initialisation and of the search (same seed, same front)."
        ),
    ] = 0,
    sampler: Annotated[
        str,
        typer.Option(
            "--sampler",
            help="Optuna sampler of the search: nsga2, nsga3, tpe, gp or random; or exhaustive "
            "(every configuration).",
        ),
    ] = "nsga2",
    strategy: Annotated[
        str | None, typer.Option("--strategy", hidden=True, help="Former name of --sampler.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--fresh", help="Continue an interrupted study (default) or start it afresh."
        ),
    ] = True,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Optuna storage: a .db/.log path or a database URL (default: the run folder's study.db).",
        ),
    ] = None,
    head_epochs: HeadEpochsOpt = 8,
    head_batch_size: HeadBatchOpt = 256,
    head_memory: HeadMemoryOpt = None,
    head_lr: HeadLrOpt = 1e-3,
    head_train_limit: HeadLimitOpt = None,
    bf16: Bf16Opt = False,
    latency_device: Annotated[
        str | None,
        typer.Option(
            "--latency-device",
            help="Measure a latency table on cpu or cuda (needed for budgets in ms).",
        ),
    ] = None,
    latency_batch_size: Annotated[
        int,
        typer.Option(
            "--latency-batch-size", help="Batch size of the latency table (ms are per sample)."
        ),
    ] = 1,
    latency_table: Annotated[
        str | None,
        typer.Option(
            "--latency-table",
            help="Price configurations with a latency table measured elsewhere "
            "(`exitsearch profile MODEL --latency --out TABLE.json` on the target device).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print pareto.json instead of tables.")
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            envvar="RAY_ADDRESS",
            help="Train the heads sharded over this Ray cluster (HOST:PORT of `ray start "
            "--head`); the search stays in this process. Default: no Ray.",
        ),
    ] = None,
    head_shards: Annotated[
        int | None,
        typer.Option(
            "--head-shards",
            help="With --ray-address: shards of the heads, by exit location (default: one per "
            "CPU of the cluster).",
        ),
    ] = None,
    paumer: Annotated[
        str | None,
        typer.Option(
            "--paumer",
            help="With a space that has a `pause` section (e.g. --space paumer): a PAUMER "
            "classification model folder of `exitsearch pause train`. Its backbone is the run's "
            "(heads are trained on it) and each pause configuration is scored by inference on "
            "validation; --n-trials is then split over the pause configurations.",
        ),
    ] = None,
    pause_workers: Annotated[
        int | None,
        typer.Option(
            "--pause-workers",
            help="Processes predicting under pause configurations, one torch thread each "
            "(default: one per CPU; with --ray-address they are Ray tasks).",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    allow_overlap: AllowOverlapOpt = False,
) -> None:
    """Profile, train heads once, predict, search the budget-aware Pareto front, and report."""
    from exitsearch._io import to_json
    from exitsearch.pipeline.run import RunSettings, run_pipeline
    from exitsearch.search.study import SearchSettings

    data = preset_data(model, data)
    if ray_address is not None:  # fail before any work when the cluster cannot be reached
        from exitsearch.distributed.cluster import probe

        probe(ray_address)
    # -- PAUMER: the backbone comes from the pausing model --
    if paumer is not None:
        given = [  # by name: typer may bring its own copy of click's enum
            f"--{name}"
            for name in ("model", "override", "checkpoint", "pretrained")
            if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
        ]
        if given:
            raise ConfigError(
                f"--paumer brings the backbone (architecture and weights); leave out {', '.join(given)}"
            )
        if pause_workers is not None and pause_workers < 1:
            raise ConfigError(f"`--pause-workers >= 1` must hold, got {pause_workers}")
        if run_dir is None:
            run_dir = str(run_folder(None, f"paumer-{Path(paumer).name}", data))
    # --
    use_workers(workers)
    folder = run_folder(run_dir, model, data)
    settings = RunSettings(
        run_dir=folder,
        backbone=backbone_spec(model, override, checkpoint, pretrained),
        data=data_spec(data, data_dir, val_size, split_seed, limit),
        space=space,
        budget=budget,
        budget_kind=budget_kind,
        heads=head_config(head_epochs, head_batch_size, head_lr, head_train_limit, bf16, seed),
        search=SearchSettings(
            sampler=strategy or sampler, n_trials=n_trials, timeout=timeout, seed=seed
        ),
        resume=resume,
        storage=storage,
        latency_device=latency_device,
        latency_batch_size=latency_batch_size,
        latency_table=latency_table,
        ray_address=ray_address,
        head_shards=head_shards,
        paumer=paumer,
        pause_workers=pause_workers,
        allow_overlap=allow_overlap,
        device=device,
        head_memory=parse_head_memory(head_memory),
    )
    before = _front_held(folder)
    with RichProgress(enabled=not as_json) as progress:
        result = run_pipeline(settings, progress)
    doc = result.report
    if as_json:
        typer.echo(to_json(doc))
        return
    if before is not None and before[0] != _front_identity(doc):
        err_console.print(
            f"[yellow]note:[/] this replaced the front {escape(str(folder))} held "
            f"({escape(before[1])}); bundles exported from it stay, and their configuration "
            "numbers are that front's",
            highlight=False,
        )
    for note in doc["notes"]:
        if f"note: {note}" not in progress.logged:  # said once, when it was found
            err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    failed = doc["search"].get("failed_trials") or 0
    if failed:
        err_console.print(
            f"[yellow]note:[/] {failed} of {doc['search']['n_trials']} trials failed (their evaluation "
            f"raised); they are recorded as FAIL in the study {doc['search']['study_name']}",
            highlight=False,
        )
    print_front(doc)
    console.print(
        f"files in {folder}/: {schema.PARETO_JSON}, {schema.PARETO_CSV}, {schema.PARETO_PNG}, "
        f"{schema.PLACEMENTS_JSON}, {schema.BASELINES_JSON}, {schema.HEADS_CSV}, {schema.HEADS_PNG}, {schema.STUDY_DB} (Optuna study "
        f"{doc['search']['study_name']})",
        highlight=False,
    )


def _front_identity(doc: dict) -> str:
    """What a configuration number of a front stands for: each member's configuration, on
    its backbone and classes (a rerun that finds the same front keeps the numbers)."""
    members = [(m.get("id"), m.get("config")) for m in doc.get("front") or []]
    return json.dumps([doc.get("backbone"), doc.get("classes"), members], sort_keys=True)


def _front_held(folder: Path) -> tuple[str, str] | None:
    """The identity (:func:`_front_identity`) and a description of the front a run folder
    holds, if any."""
    from exitsearch._io import read_json
    from exitsearch.errors import CacheError

    try:
        doc = read_json(Path(folder) / schema.PARETO_JSON)
        budget = doc.get("budget") or {}
        said = f"{len(doc.get('front') or [])} members at budget {budget.get('text') or 'none'}"
        if budget.get("kind"):
            said += f", {budget['kind']}"
        said += f", space {doc.get('space')}" if doc.get("space") else ""
        return _front_identity(doc), said
    except (CacheError, OSError, AttributeError, TypeError):  # none, or not a front of ours
        return None


def _params(exit_spec: dict) -> str:
    params = exit_spec.get("params") or {}
    return "[" + ",".join(f"{k}={v}" for k, v in params.items()) + "]" if params else ""


MAX_ROWS = 15


def _compact_exits(exits: list[dict]) -> str:
    """``cnn_add@1-4,6 mlp@9``: runs of one head type at consecutive locations folded."""
    groups: list[tuple[str, list[int]]] = []
    for e in exits:
        name = f"{e['type']}{_params(e)}"
        if groups and groups[-1][0] == name:
            groups[-1][1].append(int(e["location"]))
        else:
            groups.append((name, [int(e["location"])]))
    parts = []
    for name, locations in groups:
        runs: list[list[int]] = []
        for loc in locations:
            if runs and loc == runs[-1][-1] + 1:
                runs[-1].append(loc)
            else:
                runs.append([loc])
        spans = ",".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs)
        parts.append(f"{name}@{spans}")
    return " ".join(parts)


def _thinned(front: list[dict], rows: int) -> list[dict]:
    """At most ``rows`` members, evenly spaced along the cost-ordered front, the cheapest, the
    most accurate and the recommended one always among them."""
    if len(front) <= rows:
        return front
    picks = {round(i * (len(front) - 1) / (rows - 2)) for i in range(rows - 1)}
    picks |= {i for i, m in enumerate(front) if m["recommended"]}
    return [front[i] for i in sorted(picks)]


def _budget_amount(budget: dict) -> str:
    """The budget as typed, with the amount it resolved to when the text does not say it
    (``50% = 36.40 MFLOPs``, ``36395712 = 36.40 MFLOPs``)."""
    text = str(budget["text"])
    if budget.get("ms") is not None and budget.get("flops") is None:
        amount = f"{float(budget['ms']):.4g} ms"
    elif budget.get("flops") is not None:
        amount = format_flops(float(budget["flops"]))
    else:
        return text
    says_unit = any(u in text.lower() for u in ("flop", "mac", "ms"))
    return text if says_unit else f"{text} = {amount}"


def print_front(doc: dict) -> None:
    from exitsearch.core.task import CLASSIFICATION, get_task

    task = get_task(doc.get("task"))
    classify = task.name == CLASSIFICATION
    quality = task.quality

    def points(d: float) -> str:
        """A score difference: points of accuracy, or the change of the MAE."""
        return f"{d * 100:+.2f}" if classify else f"{task.shown(d):+.3f}"

    bb = doc["backbone"]
    budget = doc["budget"]
    title = (
        f"Pareto front within budget {_budget_amount(budget)} ({budget['kind']})"
        if budget["text"]
        else "Pareto front (no budget)"
    )
    table = Table(
        title=f"{title}; backbone {format_flops(bb['flops'])}, {quality} "
        f"{task.format(bb['val_accuracy'])} on validation, {task.format(bb['test_accuracy'])} "
        "on test",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    pausing = any(m["config"].get("pause") for m in doc["front"])
    timed = any(m["val"].get("mean_ms") is not None for m in doc["front"])
    # with milliseconds the speed-up column gives way, so that the exits still fit 80 columns;
    # under a worst-case budget it gives way to the worst case, which that budget bounds
    worst = budget.get("kind") == "max" and not timed
    gain_col = "gain" if classify else "vs bb"
    last = "ms" if timed else "max MF" if worst else "speed"
    cols = ["id", "val", "±95%", gain_col, "test", "MFLOPs", last]
    cols.append("exits; criterion")
    for col in cols:
        table.add_column(
            col,
            justify="left" if col.startswith("exits") else "right",
            overflow="fold",
            ratio=1 if col.startswith("exits") else None,
            min_width=16 if col.startswith("exits") else None,
        )
    shown = _thinned(doc["front"], MAX_ROWS)
    for m in shown:
        style = "bold green" if m["recommended"] else None
        v = m["val"]
        half = max(v["accuracy"] - v["accuracy_low"], v["accuracy_high"] - v["accuracy"])
        gain = v["vs_backbone"]
        sure = "*" if gain["low"] > 0 or gain["high"] < 0 else ""
        config = _compact_exits(m["config"]["exits"])
        config = (
            (config or "-")
            + f"; {m['config']['criterion']}"
            + (", cut" if m["config"]["cut"] else "")
        )
        if pausing:
            pause = ",".join(f"{k}:{v:g}" for k, v in m["config"]["pause"].items()) or "none"
            config += f"; pause {pause}"
        table.add_row(
            f"{m['id']}{' *' if m['recommended'] else ''}",
            task.format(v["accuracy"]),
            f"{half * 100:.2f}" if classify else f"{half:.3f}",
            f"{points(gain['difference'])}{sure}",
            task.format(m["test"]["accuracy"]),
            f"{v['mean_flops'] / 1e6:.2f}",
            f"{v['mean_ms']:.2f}"
            if timed
            else f"{v['max_flops'] / 1e6:.2f}"
            if worst
            else f"{m['speedup']:.2f}x",
            escape(config),
            style=style,
        )
    console.print(table)
    if len(shown) < len(doc["front"]):
        console.print(
            f"{len(shown)} of {len(doc['front'])} front members shown, spread over the cost range; "
            "pareto.csv lists all",
            highlight=False,
        )
    unit = "in points" if classify else "in objects"
    console.print(
        f"val, test: {quality}; ±95%: how far the 95 % interval of the validation {quality} "
        f"reaches from it, on its wider side, {unit} (the interval is lopsided near 0 and 1: "
        f"pareto.csv has both ends); {gain_col}: validation {quality} minus the backbone's on the same "
        f"samples, {unit} (* when its 95 % interval excludes 0); "
        + (
            "ms: mean milliseconds per sample from the latency table (the speed-up in FLOPs is "
            "in pareto.csv)"
            if timed
            else "MFLOPs: mean per sample; max MF: the most one sample costs (what a max budget "
            "bounds; the speed-up is in pareto.csv)"
            if worst
            else "speed: the backbone's FLOPs over the configuration's mean FLOPs per sample"
        ),
        highlight=False,
    )
    base = Table(
        title="baselines (same evaluator, same caches): hypervolume of the searched front / baseline's"
    )
    for col in ("baseline", "points", f"best val {'acc' if classify else quality}", "ratio"):
        base.add_column(col, justify="left" if col == "baseline" else "right")
    for b in doc["baselines"]:
        best = b["best_val_accuracy"]
        if b["ratio"] is not None:
            ratio = f"{b['ratio']:.3f}"
        elif not b["points"]:
            ratio = "inf: none in budget"
        else:
            ratio = "inf: no area"
        base.add_row(b["name"], str(b["points"]), "-" if best is None else task.format(best), ratio)
    console.print(base)
    rec = next(m for m in doc["front"] if m["recommended"])
    console.print(
        f"recommended ({doc.get('recommendation_rule', 'most accurate within budget')}): "
        f"id {rec['id']}: {escape(rec['description'])}; validation "
        + ("" if classify else f"{quality} ")
        + f"{task.format(rec['val']['accuracy'])}, test {task.format(rec['test']['accuracy'])} at "
        + (f"{rec['val']['mean_ms']:.3g} ms, " if rec["val"].get("mean_ms") is not None else "")
        + f"{rec['val']['mean_flops'] / 1e6:.2f} MFLOPs ({rec['speedup']:.2f}x)",
        highlight=False,
    )
