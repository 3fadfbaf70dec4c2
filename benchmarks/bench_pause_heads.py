"""Exit heads trained without pausing against heads trained under PAUMER's randomised pausing,
both scored on the paused states a pause run scores them on.

The same heads (the ``paumer`` space's: linear and MLP after blocks 2, 4, 6, 8, 10) train twice
on the backbone of one PAUMER classification model, with the same seeds and data: once on the
plain hidden states, once with every batch pausing a proportion drawn uniformly from the
space's range at one of its pause layers (``RandomPausing``). Both banks are then predicted on
validation under pause configurations of the space's grid; the JSON gives each head's accuracy
per configuration and the mean gain of the heads that sit after a pause layer.

    exitsearch pause train --task classification --out runs/cls --epochs 1 --limit 8000 \\
        --init exitsearch/assets/fmnist-vit12/model.safetensors
    python benchmarks/bench_pause_heads.py --paumer runs/cls --train-limit 4000 \\
        --val-size 2000 --out results/paumer/heads_under_pausing.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from exitsearch._io import atomic_write_json
from exitsearch.data import DataSpec, load_splits
from exitsearch.pausing import RandomPausing, load_paumer, predict_under_pause
from exitsearch.search.space import load_search_space
from exitsearch.training import HeadTrainConfig, train_heads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paumer", required=True, help="A PAUMER classification model folder.")
    ap.add_argument("--space", default="paumer")
    ap.add_argument("--train-limit", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    model = load_paumer(args.paumer)
    vit = model.vit
    bb = vit.backbone
    space = load_search_space(args.space)
    assert space.pause is not None, f"{args.space} has no pause section"
    opts = space.pause
    specs = space.candidate_heads(bb.depth)
    splits = load_splits(DataSpec(val_size=args.val_size), bb.img_size[0], bb.in_chans)
    cfg = HeadTrainConfig(epochs=args.epochs, train_limit=args.train_limit, seed=args.seed)
    taus = [t for t in opts.taus if t > 0]
    sampler = RandomPausing(vit, opts.layers, min(taus), max(taus), opts.mode)
    grid = []
    for c in opts.grid():
        try:
            grid.append(vit.resolve(c))
        except Exception:  # a configuration that pauses every token does not fit
            continue
    doc: dict = {
        "paumer": Path(args.paumer).name,
        "space": space.name,
        "heads": [s.key for s in specs],
        "train_limit": args.train_limit,
        "epochs": args.epochs,
        "val_size": len(splits.val),
        "sampler": {k: v for k, v in sampler.identity().items() if k != "weights"},
        "banks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, states_from in (("plain", None), ("random-pausing", sampler)):
            t0 = time.perf_counter()
            result = train_heads(bb, splits, specs, cfg, Path(tmp) / name, states_from=states_from)
            train_s = time.perf_counter() - t0
            per_config = {}
            for pause in grid:
                preds = predict_under_pause(model, result.bank, splits, pause, names=("val",))
                acc = preds.splits["val"].correct[:-1].mean(axis=1)
                per_config[pause.key or "none"] = [float(a) for a in acc]
            doc["banks"][name] = {"train_seconds": round(train_s, 1), "val_accuracy": per_config}
            print(f"{name}: trained in {train_s:.0f} s", flush=True)
    first_pause = min(opts.layers)
    gains = []
    rows = []
    for key in doc["banks"]["plain"]["val_accuracy"]:
        a = np.array(doc["banks"]["plain"]["val_accuracy"][key])
        b = np.array(doc["banks"]["random-pausing"]["val_accuracy"][key])
        after = [i for i, s in enumerate(specs) if s.location > first_pause]
        gain = float((b[after] - a[after]).mean())
        before = [i for i, s in enumerate(specs) if s.location <= first_pause]
        rows.append(
            {
                "pause": key,
                "mean_gain_after_pause": gain,
                "max_change_before_pause": float(np.abs(b[before] - a[before]).max())
                if before
                else 0.0,
            }
        )
        if key != "none":
            gains.append(gain)
    doc["summary"] = {
        "configurations": len(rows),
        "mean_gain_after_pause_over_paused_configs": float(np.mean(gains)),
        "median_gain": float(np.median(gains)),
        "configs_improved": int(sum(g > 0 for g in gains)),
        "per_config": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, doc)
    s = doc["summary"]
    print(
        f"{s['configs_improved']}/{len(gains)} paused configurations improved; mean gain of the "
        f"heads after a pause layer {100 * s['mean_gain_after_pause_over_paused_configs']:+.2f} "
        f"points (median {100 * s['median_gain']:+.2f}); without pausing "
        f"{100 * rows[0]['mean_gain_after_pause']:+.2f}"
    )


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
