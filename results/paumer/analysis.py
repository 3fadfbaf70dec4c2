"""Why entropy pausing does not beat random pausing here: what is paused, and what is lost.

Run from the repository root (writes results/paumer/analysis.json):

    python results/paumer/analysis.py

For each model and configuration, on the first 2,000 validation images: mIoU, the mIoU of
garment-versus-background alone, how often the garment class is right on pixels both label and
prediction call garment, the share of paused tokens that are background patches, and the
auxiliary decoder's patch accuracy at the first pause layer.
"""

import json
from pathlib import Path

import numpy as np
import torch

from exitsearch.data import DataSpec, load_splits
from exitsearch.pausing import confusion_matrix, load_paumer, mean_iou

torch.set_num_threads(1)
val = load_splits(DataSpec(limit=2000)).val
out: dict[str, object] = {}
for name in ("entropy", "random"):
    m = load_paumer(f"results/paumer/runs/{name}")
    tf = m.backbone.input_transform()
    for cfg in ("3:0.6", "5:0.8", "3:0.4,5:0.24,7:0.144"):
        cm = np.zeros((11, 11), np.int64)
        bg_paused = n_paused = aux_ok = aux_n = 0
        for batch in m.task.batches(val, 250):
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():
                res = m(tf(batch.images), cfg, name, gen, return_aux=True)
            cm += confusion_matrix(res.logits.argmax(1).numpy(), batch.target.numpy(), 11)
            for p in res.states.paused:
                lab = batch.aux_target.gather(1, p.index)
                bg_paused += int((lab == 0).sum())
                n_paused += lab.numel()
            first = min(res.states.aux_logits)
            logits, index = res.states.aux_logits[first], res.states.aux_index[first]
            aux_ok += int((logits.argmax(-1) == batch.aux_target.gather(1, index)).sum())
            aux_n += index.numel()
        fg = np.array([[cm[0, 0], cm[0, 1:].sum()], [cm[1:, 0].sum(), cm[1:, 1:].sum()]])
        out[f"{name} {cfg}"] = {
            "mIoU": round(mean_iou(cm), 4),
            "fg/bg mIoU": round(mean_iou(fg), 4),
            "garment class right (on garment pixels called garment)": round(
                float(np.trace(cm[1:, 1:]) / cm[1:, 1:].sum()), 4
            ),
            "paused tokens that are background": round(bg_paused / n_paused, 4),
            "aux decoder patch accuracy at first pause layer": round(aux_ok / aux_n, 4),
        }
shares = [float((b.aux_target == 0).float().mean()) for b in m.task.batches(val, 500)]
out["background share of patches"] = round(float(np.mean(shares)), 4)
Path("results/paumer/analysis.json").write_text(json.dumps(out, indent=1) + "\n")
