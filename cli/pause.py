"""``exitsearch pause ...``: PAUMER patch pausing - train, evaluate, report."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from exitsearch_cli._console import RichProgress, console, handle_errors, invocation
from exitsearch_cli._options import (
    CheckpointOpt,
    DataDirOpt,
    DataOpt,
    DeviceOpt,
    LimitOpt,
    ModelOpt,
    OverrideOpt,
    PretrainedOpt,
    SplitSeedOpt,
    ValSizeOpt,
    WorkersOpt,
    absolute_dir,
    backbone_spec,
    data_spec,
    use_workers,
)
from rich.table import Table

from exitsearch.backbone import DEFAULT_PRESET
from exitsearch.errors import ConfigError

if TYPE_CHECKING:
    from exitsearch.data import DataSpec
    from exitsearch.pausing.report import ReportPoint

app = typer.Typer(
    help="PAUMER patch pausing: one training for many pause configurations "
    "{layer: fraction of the patch tokens paused after that block}; evaluate them by "
    "inference. Costs are FLOPs counted as multiply-accumulates (1 MAC = 1 FLOP, fvcore).",
    no_args_is_help=True,
)

ClockOpt = Annotated[
    str,
    typer.Option(
        help="Clock of images/s: wall (elapsed) or cpu (this process's CPU time; robust to "
        "other jobs on a shared CPU, with --threads 1 the cost on one dedicated core).",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="torch intra-op threads (default: torch's choice)."),
]


def _threads(threads: int | None) -> None:
    import torch

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"`--threads >= 1` must hold, got {threads}")
        torch.set_num_threads(threads)


def _pick(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; known: {', '.join(allowed)}")
    return value


def _model_data(model_dir: str, limit: int | None, data_dir: str | None) -> DataSpec:
    """The data a saved model was trained on, with an optional new ``limit``."""
    from exitsearch._io import read_json
    from exitsearch.data import DataSpec
    from exitsearch.pausing.model import SPEC_FILE

    meta = read_json(Path(model_dir) / SPEC_FILE)
    if "data" not in meta:
        raise ConfigError(f"{model_dir}: {SPEC_FILE} records no data; pass --data")
    d = dict(meta["data"])
    if limit is not None:
        d["limit"] = limit
    if data_dir is not None:
        d["data_dir"] = absolute_dir(data_dir)
    return DataSpec.from_dict(d)


@app.command("train")
@handle_errors
def train(
    out: Annotated[str, typer.Option("--out", help="Folder for checkpoints and the model.")],
    task: Annotated[
        str, typer.Option(help="classification or segmentation (Fashion-MNIST pixels).")
    ] = "classification",
    mode: Annotated[
        str,
        typer.Option(
            help="entropy (PAUMER), random (random-pausing baseline) or none (no pausing)."
        ),
    ] = "entropy",
    model: ModelOpt = DEFAULT_PRESET,
    override: OverrideOpt = None,
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = False,
    init: Annotated[
        str | None,
        typer.Option(
            help="Backbone weights to start from: a weights file or a `backbone train` "
            "checkpoint (last.safetensors)."
        ),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            "--init-from", help="A trained PAUMER model folder of the same task to start from."
        ),
    ] = None,
    data: DataOpt = "fashion-mnist",
    data_dir: DataDirOpt = None,
    val_size: ValSizeOpt = None,
    split_seed: SplitSeedOpt = 0,
    limit: LimitOpt = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine decay).")] = 5e-4,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, batches, pausing.")] = 0,
    augment: Annotated[bool, typer.Option(help="Random crop and flip.")] = True,
    min_layer: Annotated[int, typer.Option(help="Lowest sampled pause layer.")] = 3,
    max_layer: Annotated[
        int | None, typer.Option(help="Highest sampled pause layer (default: depth - 1).")
    ] = None,
    min_fraction: Annotated[float, typer.Option(help="Lowest sampled pause proportion.")] = 0.2,
    max_fraction: Annotated[float, typer.Option(help="Highest sampled pause proportion.")] = 0.8,
    aux_weight: Annotated[float, typer.Option(help="Weight of the auxiliary loss (eq. 3).")] = 0.1,
    decoder_depth: Annotated[
        int, typer.Option(help="Transformer layers of the segmentation mask decoder.")
    ] = 2,
    label_smoothing: Annotated[float, typer.Option(help="Of the main loss.")] = 0.0,
    threads: ThreadsOpt = None,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
) -> None:
    """Train one model for many pause configurations (PAUMER §2.2); resumes when rerun."""
    import torch

    from exitsearch.backbone import create_backbone
    from exitsearch.data import load_splits
    from exitsearch.pausing.model import build_paumer, init_from_paumer, load_backbone_weights
    from exitsearch.pausing.tasks import list_tasks
    from exitsearch.pausing.train import TRAIN_MODES, PauseTrainConfig, train_paumer

    _threads(threads)
    _pick(task, tuple(list_tasks()), "task")
    _pick(mode, TRAIN_MODES, "mode")
    if init and init_from:
        raise ConfigError("--init and --init-from exclude each other")
    cfg = PauseTrainConfig(
        mode=mode,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        augment=augment,
        seed=seed,
        layer_low=min_layer,
        layer_high=max_layer,
        fraction_low=min_fraction,
        fraction_high=max_fraction,
        aux_weight=aux_weight,
    )
    torch.manual_seed(seed)
    bb = create_backbone(backbone_spec(model, override, checkpoint, pretrained))
    if init:
        load_backbone_weights(bb, init)
    decoder: dict[str, Any] = {"depth": decoder_depth} if task == "segmentation" else {}
    pm = build_paumer(bb, task, decoder, label_smoothing)
    start: dict[str, Any] = {"backbone": bb.spec.checkpoint or None, "weights": init}
    if init_from:
        init_from_paumer(pm, init_from)
        start = {"paumer": init_from}
    use_workers(workers)
    splits = load_splits(
        data_spec(data, data_dir, val_size, split_seed, limit), preprocess=bb.preprocess()
    )
    with RichProgress() as progress:
        meta = train_paumer(
            pm,
            splits,
            cfg,
            out,
            progress=progress,
            command=invocation(),
            init=start,
            device=device,
        )
    console.print(
        f"validation {meta['metric']} {meta['val_metric']:.4f} without pausing after "
        f"{cfg.epochs} epochs ({meta['train_seconds']:.0f} s); model in {out}"
    )


def _runs(tokens: list[int]) -> str:
    """``[50, 50, 50, 40, 40]`` -> ``50x3 40x2``."""
    out: list[list[int]] = []
    for t in tokens:
        if out and out[-1][0] == t:
            out[-1][1] += 1
        else:
            out.append([t, 1])
    return " ".join(f"{t}x{n}" for t, n in out)


def _points_table(points: list[ReportPoint], metric: str, base: ReportPoint | None) -> Table:
    table = Table(title=f"{metric} and measured throughput per pause configuration")
    for col in ("model", "mode", "pause", "tokens/block", "MFLOPs", metric, "images/s", "gain"):
        table.add_column(col, justify="right" if col not in ("model", "pause") else "left")
    for p in points:
        gain = f"{p.images_per_s / base.images_per_s - 1:+.0%}" if base else ""
        table.add_row(
            p.series,
            p.mode,
            p.pause or "none",
            _runs(p.info.get("tokens", [])),
            f"{p.flops / 1e6:.2f}",
            f"{p.metric:.4f}",
            f"{p.images_per_s:.1f}",
            gain,
        )
    return table


@app.command("evaluate")
@handle_errors
def evaluate(
    model_dir: Annotated[
        str, typer.Argument(metavar="MODEL_DIR", help="A model folder written by `pause train`.")
    ],
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            "-c",
            help="Pause configuration layer:fraction,... e.g. 3:0.2,5:0.4 (repeatable; "
            "'table1' adds PAUMER's Table 1). No pausing is always included.",
        ),
    ] = None,
    mode: Annotated[str, typer.Option(help="entropy or random pausing.")] = "entropy",
    split: Annotated[str, typer.Option(help="train, val or test.")] = "val",
    limit: LimitOpt = None,
    data_dir: DataDirOpt = None,
    batch_size: Annotated[int, typer.Option(help="Batch of the throughput measurement.")] = 64,
    repeats: Annotated[int, typer.Option(help="Timed rounds (median kept).")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed calls per configuration.")] = 3,
    workers: Annotated[int, typer.Option(help="Processes computing the metric.")] = 1,
    clock: ClockOpt = "wall",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Metric, FLOPs per image and measured images/s of pause configurations."""
    from exitsearch.core.pause import PauseConfig, paper_table1
    from exitsearch.pausing.report import score_configurations

    _threads(threads)
    _pick(mode, ("entropy", "random"), "mode")
    configs: list[PauseConfig] = [PauseConfig()]
    for text in config or []:
        configs += paper_table1() if text.strip().lower() == "table1" else [PauseConfig.parse(text)]
    configs = list(dict.fromkeys(configs))
    data = _model_data(model_dir, limit, data_dir)
    rows = [(Path(model_dir).name, model_dir, c, mode) for c in configs]
    with RichProgress(enabled=not as_json) as progress:
        points = score_configurations(
            rows,
            data,
            split=split,
            workers=workers,
            batch_size=batch_size,
            warmup=warmup,
            repeats=repeats,
            clock=clock,
            progress=progress,
        )
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in points]))
        return
    metric = str(points[0].info.get("metric", "metric"))
    console.print(_points_table(points, metric, points[0]))
    console.print(
        f"{split} split, {data.limit or 'all'} samples per split; batch {batch_size}, {clock} clock"
    )


@app.command("report")
@handle_errors
def report(
    entropy: Annotated[
        str | None, typer.Option(help="Model folder trained with --mode entropy.")
    ] = None,
    random: Annotated[
        str | None, typer.Option(help="Model folder trained with --mode random.")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Model folder trained with --mode none (no pausing).")
    ] = None,
    task: Annotated[str, typer.Option(help="Task the models were trained for.")] = "segmentation",
    out: Annotated[str, typer.Option(help="Folder for the plot and tables.")] = "results/paumer",
    split: Annotated[str, typer.Option(help="Split to score on.")] = "val",
    limit: LimitOpt = None,
    data_dir: DataDirOpt = None,
    batch_size: Annotated[int, typer.Option(help="Batch of the throughput measurement.")] = 64,
    repeats: Annotated[int, typer.Option(help="Timed interleaved rounds (median kept).")] = 15,
    warmup: Annotated[int, typer.Option(help="Untimed calls per configuration.")] = 3,
    workers: Annotated[int, typer.Option(help="Processes computing the metrics.")] = 1,
    clock: ClockOpt = "wall",
    add_config: Annotated[
        list[str] | None,
        typer.Option(
            "--add-config",
            help="A pause configuration to score besides Table 1 (repeatable), e.g. 3:0.8.",
        ),
    ] = None,
    extra: Annotated[
        str | None,
        typer.Option(help="JSON file with extra labelled points (a list of ReportPoint dicts)."),
    ] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Reproduce PAUMER's experiment: metric against measured images/s for Table 1."""
    from exitsearch._io import read_json
    from exitsearch.core.pause import PauseConfig, paper_table1
    from exitsearch.pausing.model import SPEC_FILE
    from exitsearch.pausing.report import BASELINE, ReportPoint, ReportSeries, run_paumer_report

    _threads(threads)
    series = [
        ReportSeries(n, d, m)
        for n, d, m in (
            ("PAUMER (entropy)", entropy, "entropy"),
            ("random pausing", random, "random"),
        )
        if d
    ]
    dirs = [d for d in (baseline, entropy, random) if d]
    if not dirs:
        raise ConfigError("give at least one of --entropy, --random, --baseline")
    for d in dirs:
        got = read_json(Path(d) / SPEC_FILE)["spec"]["task"]
        if got != task:
            raise ConfigError(f"{d} holds a {got} model, but --task is {task}")
    extra_points = []
    if extra:
        extra_points = [ReportPoint.from_dict(p) for p in read_json(extra)]
    data = _model_data(dirs[0], limit, data_dir)
    configs = list(dict.fromkeys([*paper_table1(), *map(PauseConfig.parse, add_config or [])]))
    with RichProgress() as progress:
        doc = run_paumer_report(
            series,
            baseline,
            data,
            out,
            split=split,
            configs=configs,
            workers=workers,
            batch_size=batch_size,
            warmup=warmup,
            repeats=repeats,
            clock=clock,
            extra=extra_points,
            progress=progress,
            command=invocation(),
        )
    points = [ReportPoint.from_dict(p) for p in doc["points"]]
    base = ReportPoint.from_dict(doc["baseline"])
    console.print(_points_table(points, doc["metric"], base))
    table = Table(title=f"{doc['metric']} drop against the baseline ({BASELINE} model)")
    for col in ("series", "gain", "configuration", "speed-up", doc["metric"], "drop"):
        table.add_column(col)
    for name, gains in doc["summary"].items():
        for gain, s in gains.items():
            if s["reached"]:
                table.add_row(
                    name,
                    gain,
                    s["pause"],
                    f"x{s['speedup']:.2f}",
                    f"{s['metric']:.4f}",
                    f"{s['drop'] * 100:.2f} points",
                )
            else:
                table.add_row(name, gain, "not reached", "", "", "")
    console.print(table)
    console.print(f"written: {out}/paumer_report.{{png,csv,json}}")


# ------------------------------------------------------------------------------ search
SEARCH_JSON = "paumer_search.json"
SEARCHED = "searched front (entropy)"


def _numbers(text: str | None, what: str, cast: Any) -> tuple[Any, ...] | None:
    if text is None:
        return None
    try:
        return tuple(cast(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"{what} is a comma-separated list of numbers, got {text!r}") from None


@app.command("search")
@handle_errors
def search(
    model_dir: Annotated[
        str, typer.Argument(metavar="MODEL_DIR", help="A model folder written by `pause train`.")
    ],
    task: Annotated[
        str | None,
        typer.Option(
            help="The model's task (checked; default: whatever the model was trained for)."
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            "-b",
            help="FLOPs per image (multiply-accumulates, e.g. 60MFLOPs) or percent of the "
            "unpaused model (60%). Omit for the whole front.",
        ),
    ] = None,
    n_trials: Annotated[int, typer.Option("--n-trials", help="Trials of the study in total.")] = 32,
    sampler: Annotated[
        str, typer.Option("--sampler", help="Optuna sampler: nsga2, nsga3, tpe, random...")
    ] = "nsga2",
    strategy: Annotated[
        str | None, typer.Option("--strategy", hidden=True, help="Former name of --sampler.")
    ] = None,
    population: Annotated[
        int, typer.Option(help="NSGA population; also the trials evaluated per round.")
    ] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the study (same seed, same front).")] = 0,
    layers: Annotated[
        str | None,
        typer.Option(
            help="Candidate pause layers, e.g. 3,4,5,6,7 (default: the layers the model was "
            "trained to pause at)."
        ),
    ] = None,
    taus: Annotated[
        str,
        typer.Option(
            help="Proportions of the tokens still processed that may pause at a layer (0: none)."
        ),
    ] = "0,0.2,0.4,0.6,0.8",
    mode: Annotated[str, typer.Option(help="entropy or random pausing.")] = "entropy",
    limit: LimitOpt = None,
    data_dir: DataDirOpt = None,
    workers: Annotated[
        int, typer.Option(help="Local processes evaluating trials (one torch thread each).")
    ] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            envvar="RAY_ADDRESS",
            help="Evaluate trials as Ray tasks on this cluster (HOST:PORT); the data must be "
            "readable at the same path on every node.",
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage (a .db path or URL) to resume the study; default memory."
        ),
    ] = None,
    report: Annotated[
        str | None,
        typer.Option(
            help="Report folder of `pause report` (e.g. results/paumer): score and time the "
            "searched front together with the report's models and configurations, in the same "
            "rounds, and rewrite the report with the front as a series of its own."
        ),
    ] = None,
    repeats: Annotated[
        int | None, typer.Option(help="With --report: timed rounds (default: the report's).")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(help=f"JSON file for the search result (default: REPORT/{SEARCH_JSON})."),
    ] = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Search pause configurations (Optuna, trials by inference on validation) for the best
    metric per FLOPs; with --report, add the front to the Table 1 report at measured images/s."""
    sampler = strategy or sampler
    from exitsearch._io import read_json
    from exitsearch.device import resolve_device
    from exitsearch.distributed.cluster import ray_cluster, task_device
    from exitsearch.distributed.executors import LocalExecutor, RayExecutor
    from exitsearch.distributed.pause_search import (
        PauseSearchSettings,
        PauseSpace,
        run_pause_search,
    )
    from exitsearch.pausing.model import SPEC_FILE
    from exitsearch.search.storage import open_storage

    _threads(threads)
    _pick(mode, ("entropy", "random"), "mode")
    meta = read_json(Path(model_dir) / SPEC_FILE)
    got = meta["spec"]["task"]
    if task is not None and task != got:
        raise ConfigError(f"{model_dir} holds a {got} model, but --task is {task}")
    if workers < 1:
        raise ConfigError(f"`--workers >= 1` must hold, got {workers}")
    trained = meta.get("layer_range")
    layer_list = _numbers(layers, "--layers", int) or (
        tuple(range(int(trained[0]), int(trained[1]) + 1)) if trained else None
    )
    tau_list = _numbers(taus, "--taus", float)
    depth = int(meta["spec"]["backbone"]["overrides"].get("depth", 12))
    space = (
        PauseSpace(layer_list, tau_list, mode)
        if layer_list
        else PauseSpace.for_depth(depth, taus=tau_list, mode=mode)
    )
    settings = PauseSearchSettings(
        sampler=sampler,
        n_trials=n_trials,
        seed=seed,
        population_size=population,
        device=device if ray_address else resolve_device(device).device.type,
    )
    data = _model_data(model_dir, limit, data_dir)
    prev = _previous_report(report) if report else None
    with RichProgress() as progress, ray_cluster(ray_address) as info:
        if info is not None:
            progress.log(f"pause search: {info.describe()}")
        if info is not None:  # each trial a Ray task, with a GPU of its own on cuda
            settings = replace(settings, device=task_device(device))
            executor: Any = RayExecutor(num_gpus=1 if settings.device == "cuda" else 0)
        else:
            executor = LocalExecutor(workers, threads=1)
        try:
            result = run_pause_search(
                model_dir,
                data,
                space,
                settings,
                budget=budget,
                executor=executor,
                storage=open_storage(storage) if storage else None,
                progress=progress,
            )
        finally:
            executor.close()
    table = Table(title=f"searched front ({result.metric_name} on validation, FLOPs per image)")
    for col in ("trial", "pause", result.metric_name, "MFLOPs", "of unpaused"):
        table.add_column(col, justify="left" if col == "pause" else "right")
    for p in result.front:
        table.add_row(
            str(p.trial),
            p.pause or "none",
            f"{p.metric:.4f}",
            f"{p.flops / 1e6:.2f}",
            f"{p.flops_fraction:.1%}",
        )
    console.print(table)
    console.print(
        f"{result.n_trials} trials ({result.n_failed} failed) in {result.seconds:.0f} s; "
        f"trials per node: {result.nodes}",
        highlight=False,
    )
    doc: dict[str, Any] = {
        "model": model_dir,
        "data": data.to_dict(),
        "space": {"layers": list(space.layers), "taus": list(space.taus), "mode": space.mode},
        "settings": {
            "sampler": sampler,
            "n_trials": n_trials,
            "population": population,
            "seed": seed,
            "budget": budget,
            "workers": workers,
            "ray_address": ray_address,
        },
        "metric": result.metric_name,
        "full_flops": result.full_flops,
        "budget_flops": result.budget_flops,
        "seconds": result.seconds,
        "nodes": result.nodes,
        "front": [asdict(p) for p in result.front],
        "trials": result.trials,
        "command": invocation(),
    }
    if report:
        doc["report"] = _report_with_front(report, prev, model_dir, mode, result, data, repeats)
    target = Path(out) if out else (Path(report) / SEARCH_JSON if report else None)
    if target is not None:
        from exitsearch._io import atomic_write_json

        atomic_write_json(target, doc)
        console.print(f"written: {target}", highlight=False)


def _previous_report(folder: str) -> dict[str, Any]:
    from exitsearch._io import read_json
    from exitsearch.pausing.report import REPORT_JSON

    path = Path(folder) / REPORT_JSON
    if not path.is_file():
        raise ConfigError(
            f"{path}: no report to add the front to; run `exitsearch pause report --out {folder}` "
            "first"
        )
    return read_json(path)


def _report_with_front(
    folder: str,
    prev: dict[str, Any] | None,
    model_dir: str,
    mode: str,
    result: Any,
    data: DataSpec,
    repeats: int | None,
) -> dict[str, Any]:
    """Rerun the report of ``folder`` with its models and configurations plus the front."""
    from exitsearch.core.pause import PauseConfig
    from exitsearch.data import DataSpec
    from exitsearch.pausing.report import (
        BASELINE,
        ReportPoint,
        ReportSeries,
        matched_speed,
        run_paumer_report,
    )

    assert prev is not None
    st = prev["settings"]
    models = st.get("models", {})
    series = [
        ReportSeries(name, m["dir"], m["mode"]) for name, m in models.items() if name != BASELINE
    ]
    baseline = models.get(BASELINE, {}).get("dir")
    configs = [PauseConfig.parse(c) for c in st.get("configs", [])]
    front = [PauseConfig.parse(p.pause) for p in result.front]
    more = [(SEARCHED, model_dir, c, mode) for c in front]
    with RichProgress() as progress:
        doc = run_paumer_report(
            series,
            baseline,
            DataSpec.from_dict(st.get("data") or data.to_dict()),
            folder,
            split=st.get("split", "val"),
            configs=configs,
            workers=int(st.get("workers", 1)),
            batch_size=int(st.get("batch_size", 64)),
            warmup=int(st.get("warmup", 3)),
            repeats=int(repeats or st.get("repeats", 15)),
            clock=st.get("clock", "wall"),
            progress=progress,
            command=st.get("command"),
            more_rows=more,
            more_settings={
                "searched": {
                    "series": SEARCHED,
                    "model": model_dir,
                    "configs": [c.key for c in front],
                    "command": invocation(),
                    "search_metric": {p.pause: p.metric for p in result.front},
                }
            },
        )
    points = [ReportPoint.from_dict(p) for p in doc["points"]]
    searched = [p for p in points if p.series == SEARCHED]
    entropy_name = next((s.name for s in series if s.mode == mode), None)
    table1 = [
        p for p in points if p.series == entropy_name and (p.info.get("table1") or not p.pause)
    ]
    every = [p for p in points if p.series == entropy_name]
    comparison = {
        "searched_vs_table1": matched_speed(searched, table1),
        "table1_vs_searched": matched_speed(table1, searched),
        "searched_vs_every_configuration": matched_speed(searched, every),
    }
    from exitsearch._io import atomic_write_json
    from exitsearch.pausing.report import REPORT_JSON

    doc["comparison"] = comparison
    atomic_write_json(Path(folder) / REPORT_JSON, doc)
    base = ReportPoint.from_dict(doc["baseline"])
    console.print(_points_table(searched, doc["metric"], base))
    t = Table(title=f"searched front against {entropy_name} Table 1 at matched images/s")
    for col in (
        "searched",
        doc["metric"],
        "images/s",
        "best Table 1 as fast",
        doc["metric"],
        "diff",
    ):
        t.add_column(col, justify="right")
    for row in comparison["searched_vs_table1"]:
        t.add_row(
            row["pause"],
            f"{row['metric']:.4f}",
            f"{row['images_per_s']:.1f}",
            row["reference"] if row["reference"] is not None else "none as fast",
            "" if row["reference_metric"] is None else f"{row['reference_metric']:.4f}",
            "" if row["difference"] is None else f"{row['difference'] * 100:+.2f} points",
        )
    console.print(t)
    console.print(f"written: {folder}/paumer_report.{{png,csv,json}}", highlight=False)
    return {"folder": folder, "comparison": comparison}


if __name__ == "__main__":  # `python -m exitsearch_cli.pause ...` (= `exitsearch pause ...`)
    app()
