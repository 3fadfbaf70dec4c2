"""Stale and damaged caches on purpose: change one input of a finished run, or damage one of
its files, rerun the same command, and check that exactly the affected stages recompute.

One base run (``exitsearch run`` in the test process, backbone weights from a checkpoint file)
is shared by the module; each test reruns on a copy of its folder. Which stages were reused is
read from the progress log ("<stage>: reusing ...") and from the stage folders: a reused stage
keeps its folder and manifest byte for byte, a recomputed one gets a new folder (another key)
or, when damaged, the same folder rebuilt. Changing the split seed is covered by
tests/pipeline/test_pipeline_run.py (test_new_split_seed_retrains_heads_but_reuses_the_profile).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from exitsearch_cli.main import app
from fault_world import SPACE, TINY_MODEL, flip_byte, front, manifest_of, stage_folders
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from exitsearch.backbone import create_backbone
from exitsearch.data import FASHION_MNIST_DIR
from exitsearch.pipeline.cache import MANIFEST
from exitsearch.report import schema

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist missing"),
]

REUSED = {
    "profile": "profile: reusing the cached profile",
    "heads": "heads: reusing",
    "predict": "predict: reusing cached predictions",
}
TINY = dict(
    img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=4, num_heads=2
)


@dataclass
class Base:
    root: Path
    run_dir: Path
    args: list[str]
    study: str

    def copy(self, dst: Path) -> Path:
        return Path(shutil.copytree(self.run_dir, dst))

    def with_args(self, run_dir: Path, **changes: str) -> list[str]:
        """The base command on ``run_dir``, with options replaced (``limit="200"``...)."""
        args = list(self.args)
        args[args.index("--run") + 1] = str(run_dir)
        for key, value in changes.items():
            option = "--" + key.replace("_", "-")
            if option in args:
                args[args.index(option) + 1] = value
            else:
                args += [option, value]
        return args


def _invoke(args: list[str]) -> Any:
    torch.set_num_threads(1)
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, small_fmnist_dir: Path) -> Base:
    root = tmp_path_factory.mktemp("stale")
    (root / "space.yaml").write_text(SPACE)
    (root / "linear-only.yaml").write_text(SPACE.replace("  mlp: {}\n", ""))
    (root / "more-heads.yaml").write_text(
        SPACE.replace("  mlp: {}\n", "  mlp: {}\n  cnn_add: {}\n")
    )
    (root / "two-criteria.yaml").write_text(SPACE.replace("[confidence]", "[confidence, entropy]"))
    weights = create_backbone("vit_tiny_patch16_224", **TINY).model.state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, str(root / "a.safetensors"))
    gen = torch.Generator().manual_seed(1)
    other = {k: v + 0.02 * torch.randn(v.shape, generator=gen) for k, v in weights.items()}
    save_file({k: v.contiguous() for k, v in other.items()}, str(root / "b.safetensors"))
    run_dir = root / "run"
    args = [
        *("run", *TINY_MODEL, "--checkpoint", str(root / "a.safetensors")),
        *("--data-dir", str(small_fmnist_dir), "--limit", "300", "--head-epochs", "2"),
        *("--n-trials", "20", "--space", str(root / "space.yaml"), "--budget", "70%"),
        *("--run", str(run_dir)),
    ]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    study = json.loads((run_dir / schema.PARETO_JSON).read_text())["search"]["study_name"]
    return Base(root, run_dir, args, study)


def _manifests(run_dir: Path) -> dict[str, bytes]:
    return {
        p.parent.name: p.read_bytes() for p in (run_dir / schema.CACHE_DIR).glob("*/manifest.json")
    }


# ------------------------------------------------------------------------ changed inputs
CHANGES = [
    # (id, options changed, stages recomputed, new search study)
    ("nothing", {}, set(), False),
    ("checkpoint", {"checkpoint": "b.safetensors"}, {"heads", "predict"}, True),
    ("limit", {"limit": "200"}, {"heads", "predict"}, True),
    # fewer heads: the cached bank holds them all (copied into a bank of the run's own, with
    # their predictions)
    ("fewer-heads", {"space": "linear-only.yaml"}, {"profile", "heads", "predict"}, True),
    # more heads: a new bank, where only the new heads train
    ("more-heads", {"space": "more-heads.yaml"}, {"profile", "heads", "predict"}, True),
    ("criteria-only", {"space": "two-criteria.yaml"}, set(), True),
    ("budget", {"budget": "60%"}, set(), True),
]


@pytest.mark.parametrize(
    ("changes", "recomputed", "new_study"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES]
)
def test_exactly_the_affected_stages_recompute(
    base: Base, tmp_path: Path, changes: dict[str, str], recomputed: set[str], new_study: bool
):
    run_dir = base.copy(tmp_path / "run")
    before_folders, before_manifests = stage_folders(run_dir), _manifests(run_dir)
    files = {"checkpoint", "space"}
    args = base.with_args(
        run_dir, **{k: str(base.root / v) if k in files else v for k, v in changes.items()}
    )
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    after_folders = stage_folders(run_dir)
    for stage in ("profile", "heads", "predict"):
        new = after_folders[stage] - before_folders[stage]
        assert before_folders[stage] <= after_folders[stage]  # nothing stale was deleted...
        if stage in recomputed:
            assert len(new) == 1, (stage, new)
            if stage == "heads" and "linear-only" in changes.get("space", ""):
                assert "heads: reusing 3 of the 6 heads" in " ".join(result.stderr.split())
            else:
                assert REUSED[stage] not in result.stderr
            (folder,) = new
            assert manifest_of(run_dir / schema.CACHE_DIR / folder)["stage"] == stage
            if stage == "heads" and "more-heads" in changes.get("space", ""):
                said = " ".join(result.stderr.split())  # the console wraps lines
                assert "heads: 6 of the 9 heads come from heads-" in said
                assert "training the other 3" in said
        else:
            assert new == set(), (stage, new)
            assert REUSED[stage] in result.stderr
    # ...and every folder that was there is byte for byte what it was
    after_manifests = _manifests(run_dir)
    assert {k: after_manifests[k] for k in before_manifests} == before_manifests
    study = json.loads((run_dir / schema.PARETO_JSON).read_text())["search"]["study_name"]
    assert (study != base.study) == new_study
    assert ("finished trial(s) kept" in result.stderr) == (not new_study)


# -------------------------------------------------------------------------- damaged files
def _stage(run_dir: Path, stage: str) -> Path:
    (folder,) = (run_dir / schema.CACHE_DIR).glob(f"{stage}-*")
    return folder


@pytest.mark.parametrize(
    ("stage", "name"),
    [("predict", "val.npz"), ("heads", "heads.safetensors"), ("profile", "profile.json")],
)
def test_a_flipped_byte_is_reported_and_recomputed(base: Base, tmp_path: Path, stage, name):
    run_dir = base.copy(tmp_path / "run")
    folder = _stage(run_dir, stage)
    flip_byte(folder / name)
    result = _invoke(base.with_args(run_dir))
    assert result.exit_code == 0, result.output
    log = " ".join(result.stderr.split())
    assert (
        f"{stage}: cached artifact is damaged ({name} does not match its checksum); recomputing"
        in log
    )
    for other in {"profile", "heads", "predict"} - {stage}:
        assert REUSED[other] in log, other  # predictions are keyed by the heads' inputs
    assert stage_folders(run_dir) == stage_folders(base.run_dir)
    assert (folder / MANIFEST).is_file()
    original = _stage(base.run_dir, stage)
    if name.endswith(".npz"):
        with np.load(folder / name) as ours, np.load(original / name) as theirs:
            assert ours.files == theirs.files
            assert all(np.array_equal(ours[k], theirs[k], equal_nan=True) for k in ours.files)
    elif name.endswith(".safetensors"):
        ours, theirs = load_file(str(folder / name)), load_file(str(original / name))
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    else:
        assert json.loads((folder / name).read_text()) == json.loads((original / name).read_text())
    assert front(run_dir) == front(base.run_dir)


def test_a_damaged_epoch_checkpoint_is_reported_and_training_restarts(base: Base, tmp_path: Path):
    run_dir = base.copy(tmp_path / "run")
    heads = _stage(run_dir, "heads")
    for name in (MANIFEST, "heads.json", "heads.safetensors"):  # back to an unfinished stage
        (heads / name).unlink()
    # a committed stage keeps no checkpoint: leave one cut off in the middle of its JSON
    (heads / "checkpoint.json").write_text('{"epoch": 1, "identity": {"spec')
    result = _invoke(base.with_args(run_dir))
    assert result.exit_code == 0, result.output
    assert "checkpoint" in result.stderr
    assert front(run_dir) == front(base.run_dir)


def _damage_a_trials_page(db: Path) -> None:
    """Overwrite the page that holds the trials' values: the header and schema stay intact."""
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = con.execute("PRAGMA page_size").fetchone()
        (root,) = con.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'trial_values'"
        ).fetchone()
    finally:
        con.close()
    data = bytearray(db.read_bytes())
    data[(root - 1) * page_size : root * page_size] = b"\xa5" * page_size
    db.write_bytes(bytes(data))


def test_a_damaged_study_is_one_line_naming_the_file(base: Base, tmp_path: Path):
    run_dir = base.copy(tmp_path / "run")
    _damage_a_trials_page(run_dir / schema.STUDY_DB)
    result = _invoke(base.with_args(run_dir))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and schema.STUDY_DB in lines[0]
    assert "Traceback" not in result.output
