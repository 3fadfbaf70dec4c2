"""PAUMER patch pausing: pause configurations as a search dimension.

A pause configuration ``{layer: fraction}`` stops ``round(fraction * N)`` of the ``N`` patch
tokens after block ``layer`` (the lowest-entropy ones of an auxiliary decoder); later blocks run
on fewer tokens and the patch assembler puts every token back for the heads. One training
(:func:`train_paumer`) serves many configurations; each is scored by inference
(:func:`evaluate_pause_config`, :func:`evaluate_pause_jobs`), costed exactly
(:func:`pause_cost`), and can produce an exit-head prediction cache
(:func:`predict_under_pause`) for the exit search; exit heads that read paused states train
under PAUMER's randomised pausing (:class:`RandomPausing`).
"""

from exitsearch.core.pause import PAPER_TABLE1, PauseConfig, paper_table1
from exitsearch.pausing.costs import (
    PauseCost,
    aux_decoder_flops,
    pause_block_flops,
    pause_cost,
    paused_block_flops,
    with_pauses,
)
from exitsearch.pausing.evaluate import (
    PauseEvaluation,
    evaluate_metric,
    evaluate_pause_config,
    measure_throughput,
    measure_throughputs,
    predict_under_pause,
    timing_batch,
)
from exitsearch.pausing.metrics import Accuracy, MeanIoU, Metric, confusion_matrix, mean_iou
from exitsearch.pausing.model import PaumerModel, PaumerSpec, build_paumer, load_paumer
from exitsearch.pausing.pause import (
    AuxDecoder,
    PausedStates,
    PausedTokens,
    PauseMode,
    PausingViT,
    assemble,
    token_entropy,
)
from exitsearch.pausing.pool import PauseJob, evaluate_pause_jobs, run_pause_job
from exitsearch.pausing.random_states import RandomPausing
from exitsearch.pausing.report import (
    ReportPoint,
    ReportSeries,
    run_paumer_report,
    write_paumer_report,
)
from exitsearch.pausing.segmentation import (
    GARMENT_THRESHOLD,
    MaskTransformer,
    garment_mask,
    patch_labels,
    segmentation_labels,
)
from exitsearch.pausing.tasks import PauseTask, create_task, list_tasks, register_task
from exitsearch.pausing.train import PauseTrainConfig, train_paumer

__all__ = [
    "GARMENT_THRESHOLD",
    "PAPER_TABLE1",
    "Accuracy",
    "AuxDecoder",
    "MaskTransformer",
    "MeanIoU",
    "Metric",
    "PaumerModel",
    "PaumerSpec",
    "PauseConfig",
    "PauseCost",
    "PauseEvaluation",
    "PauseJob",
    "PauseMode",
    "PauseTask",
    "PauseTrainConfig",
    "PausedStates",
    "PausedTokens",
    "PausingViT",
    "RandomPausing",
    "ReportPoint",
    "ReportSeries",
    "assemble",
    "aux_decoder_flops",
    "build_paumer",
    "confusion_matrix",
    "create_task",
    "evaluate_metric",
    "evaluate_pause_config",
    "evaluate_pause_jobs",
    "garment_mask",
    "list_tasks",
    "load_paumer",
    "mean_iou",
    "measure_throughput",
    "measure_throughputs",
    "paper_table1",
    "patch_labels",
    "pause_block_flops",
    "pause_cost",
    "paused_block_flops",
    "predict_under_pause",
    "register_task",
    "run_paumer_report",
    "run_pause_job",
    "segmentation_labels",
    "timing_batch",
    "token_entropy",
    "train_paumer",
    "with_pauses",
    "write_paumer_report",
]
