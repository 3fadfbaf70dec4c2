"""Every error reaching the CLI is one ``error:`` line with a non-zero exit status.

Round two of the fault suite, tried as a hostile but honest user of every command: usage
errors, seeds out of range before and after heads were trained, a file where a folder belongs
and a folder where a file belongs (checked before a measurement, not after it), sizes that
cannot fit in memory, ``--head-shards`` without a cluster, a full disk and a read-only run
folder (real ones, in a private mount namespace), SIGTERM, and an exception nothing expects
(``--debug`` / ``EXITSEARCH_DEBUG=1`` show its traceback). Every case runs with the user's own
files around and inside its run folder, compared by hash afterwards (``fault_user_files``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from fault_tiny_run import TinyRun, invoke
from fault_user_files import USER_FILES, namespaces_work, run_in_namespace
from fault_world import TINY_MODEL, one_line_error, partial_results, run_cli, temp_files

from exitsearch.report import schema

pytestmark = [
    pytest.mark.usefixtures("user_tree"),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

NO_NAMESPACE = namespaces_work()
needs_namespace = pytest.mark.skipif(NO_NAMESPACE is not None, reason=str(NO_NAMESPACE))
TERMINATED = "terminated; finished work is kept, rerun the command to resume"
DEBUG_HINT = "rerun with --debug (exitsearch --debug COMMAND ...) or EXITSEARCH_DEBUG=1"


def assert_error(result, fragment: str, code: int = 2) -> str:  # type: ignore[no-untyped-def]
    """One ``error:`` line holding ``fragment``, exit status ``code``, no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    line = one_line_error(result.stderr)
    assert fragment in line, line
    return line


def own_temp_files(run_dir: Path) -> list[str]:
    """Temporary files under the run folder that are not the user's own."""
    mine = {rel.removeprefix("run/") for rel in USER_FILES if rel.startswith("run/")}
    return [p for p in temp_files(run_dir) if p not in mine]


def no_stage(run_dir: Path) -> None:
    """Nothing was computed: no cache stage, no result file."""
    assert not list((run_dir / schema.CACHE_DIR).glob("*-*"))
    for name in (schema.PARETO_JSON, schema.STUDY_DB, schema.RUN_JSON):
        assert not (run_dir / name).exists()


# ------------------------------------------------------------------------ usage errors
USAGE = [
    (["run", "--limit", "abc"], "Invalid value for '--limit'"),
    (["--nope"], "No such option: --nope"),
    (["bench"], "Missing argument 'BUNDLE'"),
    (["export", "RUN", "--config", "x"], "Invalid value for '--config'"),
    (["profile", "--repeats"], "Option '--repeats' requires an argument"),
    (["heads", "nosuch"], "No such command 'nosuch'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["run", "--head-lr", "fast"], "Invalid value for '--head-lr'"),
]


@pytest.mark.parametrize(("argv", "fragment"), USAGE, ids=[" ".join(a) for a, _ in USAGE])
def test_usage_errors_are_one_line(argv: list[str], fragment: str):
    assert_error(invoke(argv), fragment)


# ------------------------------------------------------------------------------ seeds
SEEDS = [
    ("heads-train-negative", "heads", ["--seed", "-1"], "--seed must lie in 0..4294967295"),
    ("heads-train-2**32", "heads", ["--seed", str(2**32)], "got 4294967296"),
    ("heads-train-2**63", "heads", ["--seed", str(2**63)], f"got {2**63}"),
    ("heads-train-2**64", "heads", ["--seed", str(2**64)], f"got {2**64}"),
    ("run-split-seed-negative", "run", ["--split-seed", "-1"], "--split-seed must lie in 0.."),
    ("run-split-seed-2**63", "run", ["--split-seed", str(2**63)], "--split-seed must lie"),
]


@pytest.mark.parametrize(
    ("command", "extra", "fragment"), [s[1:] for s in SEEDS], ids=[s[0] for s in SEEDS]
)
def test_seeds_out_of_range_before_heads_are_trained(
    tiny_run: TinyRun, tmp_path: Path, command: str, extra: list[str], fragment: str
):
    run = tmp_path / "run"
    args = (
        tiny_run.heads_args(run, *extra) if command == "heads" else tiny_run.run_args(run, *extra)
    )
    assert_error(invoke(args), fragment)
    no_stage(run)


AFTER_HEADS = [
    (
        "heads-predict",
        lambda t, r: ["heads", "predict", *TINY_MODEL, "--run", str(r)],
        "--seed",
        -1,
    ),
    ("pause-search", lambda t, r: ["pause", "search", str(r), "--budget", "50%"], "--seed", 2**32),
    (
        "finetune",
        lambda t, r: ["finetune", str(t.bundle), "-s", "classifier-wise", "--out", str(r / "ft")],
        "--seed",
        2**63,
    ),
    (
        "finetune-split",
        lambda t, r: ["finetune", str(t.bundle), "-s", "classifier-wise", "--out", str(r / "ft")],
        "--split-seed",
        -5,
    ),
    (
        "backbone-train",
        lambda t, r: ["backbone", "train", *TINY_MODEL, "--out", str(r / "bb")],
        "--seed",
        2**63,
    ),
    (
        "pause-train",
        lambda t, r: ["pause", "train", *TINY_MODEL, "--out", str(r / "pm")],
        "--seed",
        -1,
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "option", "seed"), [s[1:] for s in AFTER_HEADS], ids=[s[0] for s in AFTER_HEADS]
)
def test_seeds_out_of_range_on_a_trained_run(
    tiny_run: TinyRun, tmp_path: Path, argv, option: str, seed: int
):
    run = tiny_run.copy_run(tmp_path / "run")
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    line = assert_error(invoke([*argv(tiny_run, run), option, str(seed)]), f"got {seed}")
    assert option in line
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before


# ------------------------------------------------ a file where a folder belongs, and back
def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("mine\n")
    return path


FILE_AS_FOLDER = [
    ("run-folder", lambda t, f: t.run_args(f), "is a file, where the run folder"),
    ("run-folder-below", lambda t, f: t.run_args(f / "sub"), "is a file, where the run folder"),
    ("heads-train", lambda t, f: t.heads_args(f), "is a file, where the run folder"),
    (
        "backbone-train-out",
        lambda t, f: ["backbone", "train", *TINY_MODEL, "--limit", "50", "--out", str(f)],
        "is a file, where a folder is expected",
    ),
    (
        "pause-train-out",
        lambda t, f: ["pause", "train", *TINY_MODEL, "--limit", "50", "--out", str(f)],
        "is a file, where a folder is expected",
    ),
    (
        "export-out-below",
        lambda t, f: ["export", str(t.run_dir), "--out", str(f / "b")],
        "is a file, where a folder is expected",
    ),
    (
        "finetune-out",
        lambda t, f: ["finetune", str(t.bundle), "-s", "classifier-wise", "--out", str(f)],
        "is a file, where a folder is expected",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "fragment"), [c[1:] for c in FILE_AS_FOLDER], ids=[c[0] for c in FILE_AS_FOLDER]
)
def test_a_file_where_a_folder_belongs(tiny_run: TinyRun, tmp_path: Path, argv, fragment: str):
    path = _a_file(tmp_path)
    line = assert_error(invoke(argv(tiny_run, path)), fragment)
    assert str(path) in line
    assert path.read_text() == "mine\n"


FOLDER_AS_FILE = [
    ("profile-save-folder", ["profile", *TINY_MODEL[1:], "--latency", "--save", "{dir}"]),
    ("profile-save-below-file", ["profile", *TINY_MODEL[1:], "--save", "{file}/p.json"]),
    ("profile-save-empty", ["profile", *TINY_MODEL[1:], "--save", ""]),
    ("bench-json-folder", ["bench", "{bundle}", "--batch-size", "2", "--json-out", "{dir}"]),
    ("bench-json-below-file", ["bench", "{bundle}", "--json-out", "{file}/b.json"]),
    ("bench-plot-folder", ["bench", "{bundle}", "--batch-size", "2", "--plot", "{dir}"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("argv", [c[1] for c in FOLDER_AS_FILE], ids=[c[0] for c in FOLDER_AS_FILE])
def test_a_folder_where_a_file_belongs_is_refused_before_measuring(
    tiny_run: TinyRun, tmp_path: Path, argv: list[str]
):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    path = _a_file(tmp_path)
    args = [
        a.format(dir=folder, file=path, bundle=tiny_run.bundle) if "{" in a else a for a in argv
    ]
    result = invoke(args)
    line = assert_error(result, "")
    assert re.search(r"is a folder|is a file, where a folder|empty one", line), line
    assert result.stdout == ""  # no table: nothing was measured
    assert list(folder.iterdir()) == []


# ----------------------------------------------------------- sizes, repeats, clusters
NUMBERS = [
    ("bench-batch-1e8", ["bench", "{bundle}", "--batch-size", "100000000"], "of memory, more"),
    (
        "profile-batch-1e8",
        ["profile", *TINY_MODEL[1:], "--latency", "--batch-size", "100000000"],
        "of memory, more",
    ),
    ("profile-repeats-0", ["profile", *TINY_MODEL[1:], "--latency", "--repeats", "0"], "--repeats"),
    ("profile-warmup-neg", ["profile", *TINY_MODEL[1:], "--warmup", "-1"], "--warmup at least 0"),
    ("bench-repeats-0", ["bench", "{bundle}", "--repeats", "0"], "--repeats and --stream-repeats"),
    ("bench-stream-repeats-0", ["bench", "{bundle}", "--stream-repeats", "0"], "at least 1"),
    ("bench-warmup-neg", ["bench", "{bundle}", "--warmup", "-1"], "--warmup at least 0"),
    ("bench-threads-0", ["bench", "{bundle}", "--threads", "0"], "--threads takes a positive"),
    ("bench-batch-0", ["bench", "{bundle}", "--batch-size", "0,1"], "positive integers"),
    ("bench-point-99", ["bench", "{bundle}", "--point", "99"], "operating point 99 does not"),
    ("bench-budget-1flop", ["bench", "{bundle}", "--budget", "1FLOPs"], "no operating point"),
    ("bench-device-tpu", ["bench", "{bundle}", "--device", "tpu"], "unknown device 'tpu'"),
    ("export-exporter", ["export", "{run}", "--onnx-exporter", "x"], "--onnx-exporter takes"),
    ("export-best-and-id", ["export", "{run}", "--best", "--config", "1"], "exclude each other"),
    ("finetune-strategy", ["finetune", "{bundle}", "-s", "nope"], "unknown fine-tuning strategy"),
    (
        "finetune-unknown-set",
        ["finetune", "{bundle}", "-s", "classifier-wise", "--set", "alpha=x", "--out", "{tmp}/f"],
        "has no hyperparameter 'alpha'",
    ),
    ("finetune-not-a-bundle", ["finetune", "{tmp}", "-s", "end-to-end"], "an exitsearch bundle?"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "fragment"), [c[1:] for c in NUMBERS], ids=[c[0] for c in NUMBERS]
)
def test_impossible_sizes_and_settings(
    tiny_run: TinyRun, tmp_path: Path, argv: list[str], fragment: str
):
    args = [
        a.format(bundle=tiny_run.bundle, run=tiny_run.run_dir, tmp=tmp_path) if "{" in a else a
        for a in argv
    ]
    result = invoke(args)
    assert_error(result, fragment)
    assert result.stdout == ""


RUN_SETTINGS = [
    ("n-trials-0", ["--n-trials", "0"], "`n_trials >= 1` must hold"),
    ("head-epochs-0", ["--head-epochs", "0"], "`epochs >= 1` must hold"),
    ("limit-negative", ["--limit", "-5"], "`limit >= 1` must hold"),
    ("val-size-negative", ["--val-size", "-1"], "`val_size >= 1` must hold"),
    ("head-lr-nan", ["--head-lr", "nan"], "`lr > 0` must hold"),
    ("head-batch-0", ["--head-batch-size", "0"], "`batch_size >= 1` must hold"),
    ("budget-kind-case", ["--budget-kind", "MAX"], "unknown budget kind 'MAX'"),
    ("space-a-folder", ["--space", "{tmp}"], "no such search-space file"),
    ("head-shards-no-cluster", ["--head-shards", "2"], "no cluster is given"),
    ("head-shards-0", ["--head-shards", "0"], "--head-shards takes a positive integer"),
]


@pytest.mark.parametrize(
    ("extra", "fragment"), [c[1:] for c in RUN_SETTINGS], ids=[c[0] for c in RUN_SETTINGS]
)
def test_run_settings_that_cannot_work(
    tiny_run: TinyRun, tmp_path: Path, extra: list[str], fragment: str, monkeypatch
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    run = tmp_path / "run"
    args = tiny_run.run_args(run, *(e.format(tmp=tmp_path) for e in extra))
    assert_error(invoke(args), fragment)
    assert not list((run / schema.CACHE_DIR).glob("heads-*"))


def test_head_shards_without_a_cluster_on_heads_train(
    tiny_run: TinyRun, tmp_path: Path, monkeypatch
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    run = tmp_path / "run"
    assert_error(invoke(tiny_run.heads_args(run, "--head-shards", "4")), "--ray-address")
    no_stage(run)


# ------------------------------------------------------ messages name real commands
@pytest.mark.parametrize(
    "argv",
    [["export", "{tmp}"], ["profile", "no_such_vit"]],
    ids=["export-not-a-run", "profile-unknown-model"],
)
def test_a_command_a_message_suggests_exists(tmp_path: Path, argv: list[str]):
    line = assert_error(invoke([a.format(tmp=tmp_path) for a in argv]), "")
    suggested = re.findall(r"`exitsearch ([a-z -]+?)`", line)
    assert suggested, line
    for command in suggested:
        words = command.split()
        result = invoke([*words, "--help"])
        assert result.exit_code == 0, f"`exitsearch {command}` in {line!r} does not exist"


# -------------------------------------------------------------- the operating system
@pytest.mark.slow
@needs_namespace
def test_a_full_disk_while_saving_heads(tiny_run: TinyRun, tmp_path: Path):
    """16 KiB of tmpfs: the profile fits, the heads' first checkpoint does not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    run = disk / "run"
    args = tiny_run.heads_args(run)
    after = f"find {shlex.quote(str(disk))} -name '*.tmp'; cat {shlex.quote(str(run))}/cache/*/manifest.json"
    done = run_in_namespace(
        f"mount -t tmpfs -o size=16k tmpfs {shlex.quote(str(disk))}", args, after
    )
    _, _, tail = done.stdout.partition("--after--\n")
    assert "rc=2" in tail, done.stdout + done.stderr
    line = one_line_error("\n".join(x for x in done.stderr.splitlines() if x.startswith("error")))
    assert "no space left on the device" in line and "checkpoint-epoch1.safetensors" in line, line
    assert "Traceback" not in done.stderr
    assert ".tmp" not in tail  # nothing half-written left behind
    assert '"stage": "profile"' in tail  # the finished profile stage is kept whole


@pytest.mark.slow
@needs_namespace
def test_a_full_disk_while_exporting(tiny_run: TinyRun, tmp_path: Path):
    disk = tmp_path / "disk"
    disk.mkdir()
    args = ["export", str(tiny_run.run_dir), "--out", str(disk / "b")]
    done = run_in_namespace(
        f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(disk))}",
        args,
        f"ls -A {shlex.quote(str(disk))}",
    )
    _, _, tail = done.stdout.partition("--after--\n")
    assert tail.splitlines()[0] == "rc=2", done.stdout + done.stderr
    line = one_line_error(done.stderr)
    assert "no space left on the device" in line, line
    assert tail.splitlines()[1:] == []  # no bundle, no temporary folder


@pytest.mark.slow
@needs_namespace
def test_export_from_a_read_only_run_folder(tiny_run: TinyRun, tmp_path: Path):
    run = tiny_run.copy_run(tmp_path / "run")
    q = shlex.quote(str(run))
    ro = f"mount --bind {q} {q}\nmount -o remount,bind,ro {q}"
    done = run_in_namespace(ro, ["export", str(run)])
    assert "rc=2" in done.stdout, done.stdout + done.stderr
    line = one_line_error(done.stderr)
    assert "read-only file system" in line and "--out" in line, line
    assert not list((run / "export").glob("config-*"))
    # the way out the message names works
    out = tmp_path / "elsewhere"
    done = run_in_namespace(ro, ["export", str(run), "--out", str(out)])
    assert "rc=0" in done.stdout, done.stdout + done.stderr
    assert (out / "exitsearch.json").is_file()


# ------------------------------------------------------------------ signals and bugs
@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_rerun_resumes(tiny_run: TinyRun, tmp_path: Path):
    run = tmp_path / "run"
    args = [*tiny_run.heads_args(run), "--head-epochs", "3"]
    done = run_cli(args, fault="checkpoint.json:1:TERM:after")
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == TERMINATED
    assert "Traceback" not in done.stderr
    assert partial_results(run) == [] and own_temp_files(run) == []
    again = run_cli(args)
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch 1 of 3" in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("how", ["plain", "--debug", "EXITSEARCH_DEBUG=1"])
def test_an_unexpected_exception(tiny_run: TinyRun, tmp_path: Path, how: str, monkeypatch):
    run = tmp_path / "run"
    args = tiny_run.heads_args(run)
    if how == "--debug":
        args = ["--debug", *args]
    if how.startswith("EXITSEARCH_DEBUG"):
        monkeypatch.setenv("EXITSEARCH_DEBUG", "1")
    done = run_cli(args, fault="profile.json:1:BUG:before")
    assert done.returncode == 1, done.stderr
    if how == "plain":
        line = one_line_error(
            "\n".join(x for x in done.stderr.splitlines() if x.startswith("error"))
        )
        assert "unexpected InjectedBug: injected at os.replace" in line, line
        assert DEBUG_HINT in line
        assert "Traceback" not in done.stderr
    else:
        assert "Traceback (most recent call last)" in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("fault_cli.InjectedBug") or (
            "InjectedBug: injected at os.replace" in done.stderr.strip().splitlines()[-1]
        )
    assert partial_results(run) == [] and own_temp_files(run) == []


# ------------------------------------------------- weights, said in exitsearch's words
TORCH_WORDS = ("Error(s) in loading state_dict", "Error while deserializing", "HeaderTooLarge")


def _nan_checkpoint(path: Path, value: float) -> Path:
    import torch
    from safetensors.torch import save_file

    from exitsearch.backbone import create_backbone

    tiny = dict(
        img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=4, num_heads=2
    )
    bb = create_backbone(TINY_MODEL[1], **tiny)
    state = {k: v.contiguous().clone() for k, v in bb.model.state_dict().items()}
    state["blocks.1.mlp.fc1.weight"][0, 0] = value
    save_file(state, str(path))
    del torch
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_checkpoint_with_non_finite_weights(tiny_run: TinyRun, tmp_path: Path, value: float):
    ckpt = _nan_checkpoint(tmp_path / "w.safetensors", value)
    run = tmp_path / "run"
    line = assert_error(
        invoke(tiny_run.run_args(run, "--checkpoint", str(ckpt))), "hold NaN or infinity"
    )
    assert str(ckpt) in line and "blocks.1.mlp.fc1.weight" in line
    assert "larger budget" not in line
    no_stage(run)


def _forge(bundle: Path, name: str, data: bytes) -> None:
    """Replace one file of a bundle and record its checksum, as a hand-edited bundle would."""
    import hashlib
    import json

    (bundle / name).write_bytes(data)
    doc = json.loads((bundle / "exitsearch.json").read_text())
    doc.pop("manifest_sha256", None)
    doc["files"][name] = hashlib.sha256(data).hexdigest()
    (bundle / "exitsearch.json").write_text(json.dumps(doc))


def _safetensors_bytes(**tensors) -> bytes:  # type: ignore[no-untyped-def]
    from safetensors.torch import save

    return save(tensors)


def _heads_of_another_shape(bundle: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(bundle / "heads.safetensors"))
    first = sorted(k for k in state if k.startswith("0."))[0]
    import torch

    state[first] = torch.zeros(*(s + 1 for s in state[first].shape))
    _forge(bundle, "heads.safetensors", _safetensors_bytes(**state))


def _backbone_with_an_extra_tensor(bundle: Path) -> None:
    import torch
    from safetensors.torch import load_file

    state = load_file(str(bundle / "backbone.safetensors"))
    state["extra.weight"] = torch.zeros(2)
    _forge(bundle, "backbone.safetensors", _safetensors_bytes(**state))


WEIGHTS = [
    ("heads-other-shape", _heads_of_another_shape, "do not fit its head (tensor '"),
    ("backbone-extra-tensor", _backbone_with_an_extra_tensor, "unexpected 'extra.weight'"),
    (
        "heads-cut-short",
        lambda b: _forge(b, "heads.safetensors", (b / "heads.safetensors").read_bytes()[:100]),
        "not a readable safetensors file (its header is cut short",
    ),
    (
        "heads-empty",
        lambda b: _forge(b, "heads.safetensors", b""),
        "not a readable safetensors file (the file is empty)",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "fragment"), [w[1:] for w in WEIGHTS], ids=[w[0] for w in WEIGHTS]
)
def test_weights_that_do_not_fit_are_explained(
    tiny_run: TinyRun, tmp_path: Path, damage, fragment: str
):
    import shutil

    bundle = Path(shutil.copytree(tiny_run.bundle, tmp_path / "bundle"))
    damage(bundle)
    line = assert_error(invoke(["bench", str(bundle), "--batch-size", "2"]), fragment)
    assert not any(words in line for words in TORCH_WORDS), line


# ------------------------------------------------------- more signals, more hostility
@pytest.mark.slow
def test_sigterm_during_the_search_keeps_every_finished_trial(tiny_run: TinyRun, tmp_path: Path):
    """SIGTERM once trials are being recorded: the trial in flight is marked, none is lost, and
    the rerun finishes the study."""
    import signal

    from fault_world import count_trials, finished_trials, signal_when, start

    run = tiny_run.copy_run(tmp_path / "run")
    (run / schema.STUDY_DB).unlink()
    for name in (schema.PARETO_JSON, schema.RUN_JSON):
        (run / name).unlink()
    # enough trials that the search is still running when the signal comes: 60 took 3 s, and
    # a poll of the study waits up to 1 s while the run holds its lock
    args = tiny_run.run_args(run, "--n-trials", "300")
    db = run / schema.STUDY_DB
    done = signal_when(start(args), lambda: count_trials(db) >= 10, signal.SIGTERM)
    assert done.signalled_at, done.stderr
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == TERMINATED
    assert "Traceback" not in done.stderr
    kept = finished_trials(db)
    assert len(kept) >= 10
    assert count_trials(db, "RUNNING") == 0  # the trial in flight was settled
    again = run_cli(args)
    assert again.returncode == 0, again.stderr
    after = finished_trials(db)
    assert all(after[n] == kept[n] for n in kept)  # no finished trial lost or changed
    assert (run / schema.PARETO_JSON).is_file()


@pytest.mark.slow
def test_sigterm_during_an_export_leaves_nothing(tiny_run: TinyRun, tmp_path: Path):
    dest = tmp_path / "out" / "b"
    done = run_cli(
        ["export", str(tiny_run.run_dir), "--out", str(dest)],
        fault="heads.safetensors:1:TERM:before",
    )
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == TERMINATED
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # its temporary folder removed too


@pytest.mark.slow
@needs_namespace
def test_a_run_in_a_read_only_run_folder(tiny_run: TinyRun, tmp_path: Path):
    run = tiny_run.copy_run(tmp_path / "run")
    q = shlex.quote(str(run))
    done = run_in_namespace(
        f"mount --bind {q} {q}\nmount -o remount,bind,ro {q}", tiny_run.run_args(run)
    )
    assert "rc=2" in done.stdout, done.stdout + done.stderr
    line = one_line_error(done.stderr)
    assert "read-only file system" in line and str(run) in line, line


@pytest.mark.slow
@pytest.mark.parametrize(
    "where", ["the-run-itself", "its-cache"], ids=["out-is-the-run", "out-is-its-cache"]
)
def test_export_onto_the_run_folder_itself(tiny_run: TinyRun, tmp_path: Path, where: str):
    run = tiny_run.copy_run(tmp_path / "run")
    out = run if where == "the-run-itself" else run / schema.CACHE_DIR
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    line = assert_error(
        invoke(["export", str(run), "--out", str(out), "--overwrite"]), "not an exitsearch bundle"
    )
    assert str(out) in line
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before


# ---------------------------------------------------------------- data that says nothing
def _one_class_npz(tmp_path: Path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "one.npz"
    np.savez(path, x=rng.integers(0, 256, (240, 28, 28), dtype=np.uint8), y=np.zeros(240, int))
    return path


def _one_class_folder(tmp_path: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    (root / "cats").mkdir(parents=True)
    for i in range(60):
        pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(root / "cats" / f"{i}.png")
    return root


@pytest.mark.parametrize("make", [_one_class_npz, _one_class_folder], ids=["npz", "folder"])
def test_data_of_a_single_class_is_refused(tiny_run: TinyRun, tmp_path: Path, make):
    data = make(tmp_path)
    run = tmp_path / "run"
    args = tiny_run.run_args(run, "--data", str(data), "-o", "num_classes=1", "--val-size", "20")
    line = assert_error(invoke(args), "the data has a single class")
    assert str(data) in line
    assert not list((run / schema.CACHE_DIR).glob("heads-*"))


@pytest.mark.parametrize(
    "argv",
    [
        ["profile", *TINY_MODEL[1:], "--json", "--save", "{fifo}"],
        ["bench", "{bundle}", "--batch-size", "2", "--repeats", "1", "--json-out", "{fifo}"],
    ],
    ids=["profile-save", "bench-json-out"],
)
def test_a_result_written_to_a_pipe_leaves_the_pipe(tiny_run: TinyRun, tmp_path: Path, argv):
    """``--save /dev/null`` and friends: a device or FIFO is written into, never replaced by a
    renamed file (as root, /dev/null itself would have become a regular file)."""
    import os
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    args = [a.format(fifo=fifo, bundle=tiny_run.bundle) if "{" in a else a for a in argv]
    result = invoke(args)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert got and got[0].lstrip().startswith(b"{")


def test_a_decompression_bomb_in_an_image_folder(tiny_run: TinyRun, tmp_path: Path):
    """An image read in a DataLoader worker: torch re-raises the worker's error with the worker's
    whole traceback as its text; the user sees only the error's own line."""
    import numpy as np
    from PIL import Image

    root = _one_class_folder(tmp_path)
    (root / "dogs").mkdir()
    rng = np.random.default_rng(1)
    for i in range(60):
        pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(root / "dogs" / f"{i}.png")
    bomb = root / "dogs" / "bomb.png"
    Image.new("1", (20000, 10000)).save(bomb)  # 200 Mpixels in 24 KiB
    run = tmp_path / "run"
    args = tiny_run.run_args(run, "--data", str(root), "-o", "num_classes=2", "--val-size", "20")
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = result.stderr.strip().splitlines()[-1]  # after the progress lines of the heads
    assert line.startswith(f"error: {bomb}: not a readable image"), line
    assert "decompression bomb" in line


@pytest.mark.slow
def test_an_error_before_any_work_is_the_only_output(tiny_run: TinyRun, tmp_path: Path):
    """The real process: no blank line from an empty progress display before the error line,
    nothing on stdout."""
    done = run_cli(tiny_run.run_args(_a_file(tmp_path)))  # refused inside the command
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, repr(done.stderr)


def test_the_bundle_names_the_classes_of_the_run(tiny_run: TinyRun):
    """The run records its data's class names; the bundle exported from it carries them."""
    import json

    import exitsearch
    from exitsearch.data import FASHION_MNIST_CLASSES

    doc = json.loads((tiny_run.run_dir / schema.PARETO_JSON).read_text())
    assert doc["classes"] == list(FASHION_MNIST_CLASSES)
    model = exitsearch.load(tiny_run.bundle)
    assert model.classes == list(FASHION_MNIST_CLASSES)
