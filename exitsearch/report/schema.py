"""The files of a run folder (``results/<run>/``) and the keys they hold.

``pareto.json`` (schema version :data:`PARETO_SCHEMA`; written without indentation)::

    {
      "schema": 2,
      "run": "<run name>",
      "unit": "FLOPs (MACs)",
      "backbone": {"spec": BackboneSpec.to_dict(), "weights_sha256": str,
                   "flops": int, "val_accuracy": float, "test_accuracy": float},
      "data": DataSpec.to_dict(),
      "classes": [str, ...],           # label i is classes[i] (class folders, npz "classes"...)
      "budget": {"text": str, "kind": "mean" | "max", "flops": float | null},
      "latency": {"source": "measured" | "file", "engine": "torch" | "onnx", "device": str,
                  "device_name": str, "threads": int, "batch_size": int} | null,
      "artifacts": {"heads": "<path of heads.safetensors, relative to the run folder>",
                    "predictions": "<folder>", "profile": "<profile.json>"},
      "front": [                       # cheapest first
        {"id": int, "config": ExitConfig.to_dict(), "placement": ExitConfig.placement_key,
         "val": Evaluation.to_dict() | Intervals, "test": Evaluation.to_dict() | Intervals,
         "speedup": float, "recommended": bool}
      ],                               # Intervals: {"accuracy_low", "accuracy_high" (Wilson 95 %),
                                       #   "vs_backbone": {"difference", "low", "high", ...}}
      "recommended": int | null,       # see "recommendation_rule"
      "recommendation_rule": str,
      "baselines": [{"name": str, "description": str, "points": int, "best_val_accuracy": float,
                     "hypervolume": float, "ratio": float}],   # their fronts: baselines.json
      "hypervolume": {"front": float, "reference": {"accuracy": float, "cost_fraction": float}},
      "search": {"sampler": str, "n_trials": int, "seconds": float, ...}
    }

``baselines.json``: each baseline's own front as columns (written without indentation)::

    {"<name>": {"placements": [ExitConfig.to_dict() without thresholds, ...],
                "placement": [int, ...], "threshold_mode": ["shared" | "per_exit", ...],
                "thresholds": [float | [float, ...], ...],   # shared: one number; per exit: a list
                "val_accuracy": [...], "val_mean_flops": [...],
                "test_accuracy": [...], "test_mean_flops": [...]}}
  (``val_mean_ms``/``test_mean_ms`` instead when the budget is in milliseconds: the run
  then ranks by the latency table's milliseconds)

``placements.json``: for every placement on the front, its own Pareto-optimal threshold
settings on validation (the operating points an exported bundle can switch between; at most 64,
spread over the cost range; written without indentation)::

    {"<placement key>": [{"thresholds": [...], "threshold_mode": str,
                          "val_accuracy": float, "mean_flops": float}, ...]}   # cheapest first
"""

from __future__ import annotations

PARETO_SCHEMA = 2
PARETO_JSON = "pareto.json"
PARETO_CSV = "pareto.csv"
PARETO_PNG = "pareto.png"
PLACEMENTS_JSON = "placements.json"
BASELINES_JSON = "baselines.json"
HEADS_PNG = "heads.png"
HEADS_CSV = "heads.csv"
RUN_JSON = "run.json"
STUDY_DB = "study.db"
CACHE_DIR = "cache"
EXPORT_DIR = "export"  # bundles of `exitsearch export RUN` without --out
