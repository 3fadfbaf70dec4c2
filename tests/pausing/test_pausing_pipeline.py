"""``exitsearch run`` over a space with pause configurations, on a tiny real PAUMER model.

The search scores each pause configuration from its own predictions (one inference pass each);
the merged front's figures must be those of the evaluator on predictions recomputed here, the
exported member must exit exactly where the evaluator says, and pool, in-process and a rerun
from the caches must agree.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from exitsearch_cli.main import app
from typer.testing import CliRunner

from exitsearch.backbone import BackboneSpec, create_backbone
from exitsearch.core.config import ExitConfig
from exitsearch.data import DataSpec, iterate_batches, load_splits
from exitsearch.errors import BudgetError, ConfigError
from exitsearch.export import export_bundle, load_bundle
from exitsearch.heads import HeadContext
from exitsearch.pausing import PauseConfig, build_paumer, predict_under_pause
from exitsearch.pipeline.run import RunSettings, run_pipeline
from exitsearch.pipeline.selection import bundle_from_run
from exitsearch.report import schema
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.study import SearchSettings
from exitsearch.training import HeadBank
from exitsearch.training.head_training import HeadTrainConfig

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SPACE = """\
name: tinypause
locations: [2, 4]
heads: {linear: {}, mlp: {}}
uncertainty: false
criteria: [confidence]
thresholds: [shared, per_exit]
pause: {layers: [1, 3], taus: [0.0, 0.3, 0.6], mode: entropy, max_layers: 2}
"""
DATA = DataSpec(limit=240)


@pytest.fixture(scope="module")
def files(tmp_path_factory, fmnist) -> Path:  # type: ignore[no-untyped-def]
    from pause_world import PAUSE_TINY

    root = tmp_path_factory.mktemp("pause-run")
    torch.manual_seed(0)
    model = build_paumer(create_backbone("vit_tiny_patch16_224", **PAUSE_TINY), "classification")
    model.save(root / "paumer", {"data": DATA.to_dict()})
    (root / "space.yaml").write_text(SPACE)
    seg = build_paumer(create_backbone("vit_tiny_patch16_224", **PAUSE_TINY), "segmentation")
    seg.save(root / "seg")
    return root


def settings(files: Path, run: str, **kw) -> RunSettings:  # type: ignore[no-untyped-def]
    base = RunSettings(
        run_dir=files / run,
        backbone=BackboneSpec("fmnist-vit12"),
        data=DATA,
        space=str(files / "space.yaml"),
        budget="80%",
        heads=HeadTrainConfig(epochs=1, batch_size=64, lr=3e-3),
        search=SearchSettings(n_trials=27),
        paumer=str(files / "paumer"),
        pause_workers=1,
    )
    return replace(base, **kw)


@pytest.fixture(scope="module")
def result(files):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    return run_pipeline(settings(files, "run"))


def test_members_carry_their_pause_configuration_and_its_exact_scores(result, files):  # type: ignore[no-untyped-def]
    doc = json.loads((files / "run" / schema.PARETO_JSON).read_text())
    assert doc == json.loads(json.dumps(result.report))
    section = doc["pause"]
    assert len(section["configurations"]) == 9 and section["selection"] == "grid"
    assert doc["search"]["trials_per_pause"] == 27  # 27 split over 9, at least min(100, 27)
    paused = [m for m in doc["front"] if m["pause"]]
    assert paused, "the tiny model's front should use pausing"
    # scores recomputed from scratch: predictions under the member's pause, exact costs
    model = result.ctx.backbone
    bank = HeadBank(result.predictions.heads, HeadContext.from_backbone(model))
    bank.load(files / "run" / doc["artifacts"]["heads"])
    from exitsearch.pausing import load_paumer

    paumer = load_paumer(files / "paumer")
    costs = result.costs
    splits = load_splits(DATA)
    for m in paused[:2]:
        cfg = ExitConfig.from_dict(m["config"])
        assert cfg.pause == PauseConfig.parse(m["pause"]).fractions
        preds = predict_under_pause(paumer, bank, splits, cfg.pause, names=("val",))
        ev = Evaluator(preds, "val", costs).evaluate(cfg)
        assert ev.accuracy == m["val"]["accuracy"] and ev.mean_flops == m["val"]["mean_flops"]
        assert list(ev.exit_counts) == m["val"]["exit_counts"]
    # the front is non-dominated, cheapest first, within the budget
    flops = [m["val"]["mean_flops"] for m in doc["front"]]
    accs = [m["val"]["accuracy"] for m in doc["front"]]
    assert flops == sorted(flops) and accs == sorted(accs)
    assert max(flops) <= doc["budget"]["flops"]
    # test predictions exist only for configurations on the front
    on_front = set(section["on_front"])
    for c in section["configurations"]:
        assert ("test" in c["predictions"]) == (c["pause"] in on_front or c["pause"] == "")
    placements = json.loads((files / "run" / schema.PLACEMENTS_JSON).read_text())
    assert all(m["placement"] in placements for m in doc["front"])
    # the extracted backbone is named inside the run folder, not by this machine's path to it
    assert doc["backbone"]["spec"]["checkpoint"].startswith(f"{schema.CACHE_DIR}/paumer-")
    assert str(files / "run") not in (files / "run" / schema.PARETO_JSON).read_text()


def test_the_exported_member_exits_where_the_evaluator_said(result, files):  # type: ignore[no-untyped-def]
    doc = result.report
    member = max(
        (m for m in doc["front"] if m["pause"]),
        key=lambda m: int((np.asarray(m["val"]["exit_counts"]) > 0).sum()),
    )
    sel = bundle_from_run(files / "run", member["id"])
    path = export_bundle(
        files / "bundle",
        sel.backbone,
        sel.heads,
        sel.config,
        sel.operating_points,
        sel.predicted,
        sel.meta,
        aux_decoder=sel.aux_decoder,  # the run's own, as its pareto.json names it
    )
    model = load_bundle(path)
    assert model.pausing and model.manifest["config"]["pause"] == sel.config.to_dict()["pause"]
    data = load_splits(DATA).val
    idx = np.zeros(len(data), np.int64)
    transform = model.backbone.input_transform()
    for rows, x, _ in iterate_batches(data, 50):
        idx[rows.numpy()] = model(transform(x)).exit_index.numpy()
    assert list(np.bincount(idx, minlength=model.num_outcomes)) == member["val"]["exit_counts"]
    assert model.costs.mean_flops(idx) == pytest.approx(member["val"]["mean_flops"], rel=1e-12)


def test_a_rerun_reuses_every_prediction_and_finds_the_same_front(result, files):  # type: ignore[no-untyped-def]
    again = run_pipeline(settings(files, "run"))
    assert again.report["pause"]["predicted_by_this_run"] == 0  # every pass came from the cache
    assert again.report["front"] == result.report["front"]


@pytest.mark.slow  # spawning two pool processes takes most of its time
def test_prediction_jobs_on_a_process_pool_equal_the_cached_ones(result, files):  # type: ignore[no-untyped-def]
    from exitsearch.distributed.executors import LocalExecutor, TrialFailure
    from exitsearch.pipeline.pausing import PausePredictJob, run_pause_predict_job
    from exitsearch.training import Predictions

    doc = result.report
    run = files / "run"
    model_dir = run / "cache" / f"pause-model-{doc['stage_keys']['pause-model'][:16]}"
    confs = [c for c in doc["pause"]["configurations"] if c["pause"]][:2]
    fp = result.ctx.splits.fingerprint()
    jobs = [
        PausePredictJob(str(model_dir), DATA.to_dict(), fp, PauseConfig.parse(c["pause"]).to_dict())
        for c in confs
    ]
    jobs.append(replace(jobs[0], data_fingerprint="other data"))
    with LocalExecutor(2, threads=1, runner=run_pause_predict_job) as pool:
        out = pool.map(jobs)
    for c, res in zip(confs, out, strict=False):
        cached = Predictions.load(run / c["predictions"]["val"]).splits["val"]
        assert res["pause"] == c["pause"] and res["node_id"] == "local"
        for field in ("labels", "confidence", "entropy", "pred"):
            assert np.array_equal(res["splits"]["val"][field], getattr(cached, field)), field
    assert isinstance(out[-1], TrialFailure) and "DataError" in out[-1].error


def test_sampled_pause_configurations(files):  # type: ignore[no-untyped-def]
    (files / "sampled.yaml").write_text(
        SPACE.replace("max_layers: 2}", "max_layers: 2, trials: 3}")
    )
    res = run_pipeline(settings(files, "sampled", space=str(files / "sampled.yaml")))
    section = res.report["pause"]
    assert section["selection"] == "sampled" and len(section["outer_trials"]) == 3
    assert all(t["hypervolume"] >= 0 for t in section["outer_trials"])
    # resumed: the outer study is complete, nothing is predicted again
    again = run_pipeline(settings(files, "sampled", space=str(files / "sampled.yaml")))
    assert again.report["pause"]["predicted_by_this_run"] == 0
    assert again.report["front"] == res.report["front"]


def test_what_is_refused(files):  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="pass --paumer DIR"):
        run_pipeline(settings(files, "x", paumer=None))
    # a Swin is told that it cannot pause, not sent to train a PAUMER model first
    swin = BackboneSpec("fmnist-swin12")
    with pytest.raises(ConfigError, match=r"does not apply to swin_.*search it without a pause"):
        run_pipeline(settings(files, "x", paumer=None, backbone=swin))
    with pytest.raises(ConfigError, match="needs a search space with a `pause` section"):
        run_pipeline(settings(files, "x", space="multiexit-vit"))
    with pytest.raises(ConfigError, match="a segmentation PAUMER model"):
        run_pipeline(settings(files, "x", paumer=str(files / "seg")))
    with pytest.raises(BudgetError, match="milliseconds"):
        run_pipeline(settings(files, "x", budget="3ms"))


def test_the_command_line(result, files):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    args = ["run", "--space", str(files / "space.yaml"), "--paumer", str(files / "paumer")]
    args += ["--limit", "240", "--head-epochs", "1", "--n-trials", "27", "--budget", "80%"]
    args += ["--run", str(files / "run"), "--pause-workers", "1"]
    ok = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    assert "pause" in ok.stdout and "1:0." in ok.stdout
    bad = runner.invoke(app, [*args, "--model", "vit_tiny_patch16_224"])
    assert bad.exit_code != 0
    assert "--paumer brings the backbone" in bad.output and "--model" in bad.output


@pytest.mark.ray
@pytest.mark.slow
def test_on_ray_the_same_front(result, files, monkeypatch):  # type: ignore[no-untyped-def]
    """``--ray-address``: heads train sharded and the pause predictions run as Ray tasks (the
    model folder shipped through the object store); the front is the in-process one."""
    from exitsearch.distributed.cluster import disconnect

    # a private cluster without token authentication: with it, Ray 2.60 writes
    # ~/.ray/auth_token, and every later private cluster of this machine fails to start
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")

    try:
        res = run_pipeline(settings(files, "ray", ray_address="local"))
    finally:
        disconnect()
    section = res.report["pause"]
    # validation under the 8 paused configurations, test under the paused ones on the front
    assert section["predicted_by_this_run"] == 8 + len([k for k in section["on_front"] if k])
    assert res.report["stage_keys"]["heads"] == result.report["stage_keys"]["heads"]
    assert res.report["front"] == result.report["front"]
