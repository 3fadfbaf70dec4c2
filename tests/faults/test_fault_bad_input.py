"""Bad input on purpose: every case must end with one ``error:`` line on stderr, exit status 2,
no traceback, and nothing half-written.

Already covered elsewhere and not repeated here: the five budget strings of the issue
(``8GFLOP``, ``-1GFLOPs``, ``8 parsecs``, ``0``, empty) through ``exitsearch run``
(tests/cli/test_cli_run.py), an unknown model and a missing checkpoint through
``exitsearch profile`` (tests/cli/test_cli_commands.py), an unknown id for ``exitsearch export``
on a hand-made run folder and a bundle missing its ONNX graph for ``exitsearch bench``
(tests/export/test_export_cli.py; the id is tried once more here on a real run folder),
and property-based tests of the budget parser (tests/test_budget.py) and of the search-space
loader (tests/search/test_search_space.py). The property test below adds the one step between
them that had none: checking a parsed budget against what the backbone and its exits cost.

The commands run in the test process through typer's ``CliRunner`` (a subprocess per case would
cost seconds of imports each); the real entry point is run as a subprocess by
test_fault_interrupt.py. Every ``run`` reads a 600-sample IDX copy of Fashion-MNIST.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from exitsearch_cli.main import app
from fault_world import SPACE, TINY_MODEL, flip_byte, one_line_error, temp_files
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from typer.testing import CliRunner

from exitsearch._io import read_json
from exitsearch.backbone import create_backbone
from exitsearch.budget import parse_budget
from exitsearch.core.costs import CostModel
from exitsearch.errors import BudgetError
from exitsearch.pipeline.cache import StageStore
from exitsearch.pipeline.run import resolve_budget
from exitsearch.profile import BackboneProfile
from exitsearch.report import schema

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

TINY = dict(
    img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=4, num_heads=2
)


@dataclass
class World:
    root: Path
    data_dir: Path
    space: Path

    def run_args(
        self, run_dir: Path, *extra: str, budget: str | None = "70%", data_dir: bool = True
    ) -> list[str]:
        """The tiny ``run`` on the small IDX copy; ``extra`` comes last, so it overrides."""
        args = ["run", *TINY_MODEL, "--limit", "200", "--head-epochs", "1", "--n-trials", "10"]
        args += ["--run", str(run_dir)]
        if data_dir:
            args += ["--data-dir", str(self.data_dir)]
        if "--space" not in extra:
            args += ["--space", str(self.space)]
        if budget is not None and "--budget" not in extra:
            args += ["--budget", budget]
        return [*args, *extra]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, small_fmnist_dir: Path) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    space = root / "tiny.yaml"
    space.write_text(SPACE)
    return World(root, small_fmnist_dir, space)


@dataclass
class RunAndBundle:
    run_dir: Path  # a finished tiny run
    bundle: Path  # its recommended configuration, exported


@pytest.fixture(scope="module")
def run_and_bundle(world: World) -> RunAndBundle:
    """What export and bench need: a real run folder and a bundle (trains: marked slow)."""
    done = RunAndBundle(world.root / "run", world.root / "bundle")
    result = _invoke(world.run_args(done.run_dir))
    assert result.exit_code == 0, result.output
    result = _invoke(["export", str(done.run_dir), "--out", str(done.bundle)])
    assert result.exit_code == 0, result.output
    return done


def _invoke(args: list[str]):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    return CliRunner().invoke(app, args)


def assert_user_error(result, fragment: str) -> str:  # type: ignore[no-untyped-def]
    """One ``error:`` line holding ``fragment``, exit 2, nothing on stdout, no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    line = one_line_error(result.stderr)
    assert fragment in line, line
    return line


def assert_nothing_half(run_dir: Path) -> None:
    """No result of a run and no stage without its manifest; a complete stage may stay."""
    for name in (schema.PARETO_JSON, schema.RUN_JSON, schema.STUDY_DB, schema.PLACEMENTS_JSON):
        assert not (run_dir / name).exists(), name
    cache = run_dir / schema.CACHE_DIR
    for folder in sorted(cache.glob("*-*")) if cache.is_dir() else []:
        assert StageStore(cache).verify(folder) is None, f"half-written stage {folder.name}"
    if run_dir.exists():
        assert temp_files(run_dir) == []


def _write_idx(path: Path, array: np.ndarray) -> None:
    arr = np.ascontiguousarray(array)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(header + arr.tobytes())


def _cut(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def _save_weights(path: Path, **changes: int) -> Path:
    bb = create_backbone("vit_tiny_patch16_224", **{**TINY, **changes})
    save_file({k: v.contiguous() for k, v in bb.model.state_dict().items()}, str(path))
    return path


# ---------------------------------------------------------------------------- budgets
@pytest.mark.parametrize(
    ("budget", "kind", "fragment"),
    [
        ("101%", "mean", "a budget in percent must be at most 100%, got '101%'"),
        ("nan", "mean", "cannot read budget 'nan'; accepted: 8GFLOPs"),
        ("1e400", "mean", "budget must be a positive, finite amount, got '1e400'"),
        ("8 GFLOPs per image", "mean", "cannot read budget '8 GFLOPs per image'"),
        ("70%", "worst", "unknown budget kind 'worst'; expected mean or max"),
        ("12ms", "mean", "is in milliseconds, which needs a latency table: add --latency-device"),
        ("1FLOPs", "mean", "budget 1FLOPs (1 FLOPs) is below the cheapest possible exit"),
        ("0.0001%", "max", "is below the cheapest possible exit"),
        ("0.5", "mean", "(0.5 FLOPs) is below the cheapest possible exit, "),
        ("0.5", "mean", "candidate block); for 0.5 of the backbone's cost write 50%"),
    ],
    ids=[
        "over-100%",
        "nan",
        "overflow",
        "trailing-words",
        "kind",
        "ms-no-table",
        "1FLOPs",
        "tiny-%",
        "bare-fraction",
        "bare-fraction-hint",
    ],
)
def test_bad_budgets(world: World, tmp_path: Path, budget: str, kind: str, fragment: str):
    run_dir = tmp_path / "run"
    args = world.run_args(run_dir, "--budget", budget, "--budget-kind", kind, budget=None)
    assert_user_error(_invoke(args), fragment)
    assert_nothing_half(run_dir)
    # heads were never trained for a budget that cannot be met
    assert not list((run_dir / schema.CACHE_DIR).glob("heads-*"))


@pytest.mark.slow
@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(
    amount=st.floats(min_value=1.0, max_value=1e7, allow_nan=False),
    percent=st.booleans(),
)
def test_a_budget_is_refused_exactly_below_the_cheapest_exit(
    run_and_bundle: RunAndBundle, amount: float, percent: bool
):
    """Between the parser and the search: any FLOPs or percent budget against the real costs."""
    pareto = read_json(run_and_bundle.run_dir / schema.PARETO_JSON)
    doc = read_json(run_and_bundle.run_dir / pareto["artifacts"]["profile"])
    costs = CostModel(
        BackboneProfile.from_json(doc["backbone"]),
        {k: int(v["flops"]) for k, v in doc["heads"].items()},
    )
    cheapest = min(
        costs.profile.cumulative(1) + f for k, f in costs.head_flops.items() if k.endswith("@1")
    )
    if percent:
        amount = amount / 1e5  # 1e-5 .. 100
        text, flops = f"{amount!r}%", amount / 100 * costs.backbone_flops
    else:
        text, flops = f"{amount!r}FLOPs", amount
    try:
        budget, constraint, note = resolve_budget(parse_budget(text), "mean", costs, cheapest)
    except BudgetError as exc:
        assert flops < cheapest
        assert "below the cheapest possible exit" in str(exc)
        return
    assert flops >= cheapest
    assert budget == parse_budget(text)
    assert constraint.flops == pytest.approx(flops, rel=1e-12)
    assert (note is not None) == (flops >= costs.backbone_flops)


# ------------------------------------------------------------------- models and weights
CHECKPOINTS: list[tuple[str, Callable[[Path], Path], str]] = [
    (
        "depth-2",
        lambda d: _save_weights(d / "w.safetensors", depth=2),
        "does not fit the model: missing 'blocks.2.",
    ),
    (
        "wider",
        lambda d: _save_weights(d / "w.safetensors", embed_dim=48),
        "has shape (48,) in the checkpoint but (32,) in the model",
    ),
    (
        "11-classes",
        lambda d: _save_weights(d / "w.safetensors", num_classes=11),
        "tensor 'head.bias' has shape (11,) in the checkpoint but (10,)",
    ),
    (
        "truncated-safetensors",
        lambda d: (_save_weights(d / "w.safetensors"), _cut(d / "w.safetensors"))[0],
        "not a readable safetensors file",
    ),
    (
        "empty-safetensors",
        lambda d: (d / "w.safetensors", (d / "w.safetensors").write_bytes(b""))[0],
        "not a readable safetensors file",
    ),
    ("truncated-pth", lambda d: _truncated_pth(d / "w.pth"), "not a readable torch checkpoint"),
    (
        "text-as-pth",
        lambda d: (d / "w.pth", (d / "w.pth").write_text("not weights"))[0],
        "not a readable torch checkpoint",
    ),
    ("a-folder", lambda d: d, "is a folder"),
]


def _truncated_pth(path: Path) -> Path:
    bb = create_backbone("vit_tiny_patch16_224", **TINY)
    torch.save(bb.model.state_dict(), path)
    _cut(path)
    return path


@pytest.mark.parametrize(
    ("make", "fragment"), [c[1:] for c in CHECKPOINTS], ids=[c[0] for c in CHECKPOINTS]
)
def test_bad_checkpoints(world: World, tmp_path: Path, make, fragment: str):
    ckpt = make(tmp_path)
    run_dir = tmp_path / "run"
    line = assert_user_error(_invoke(world.run_args(run_dir, "--checkpoint", str(ckpt))), fragment)
    assert str(ckpt) in line
    assert_nothing_half(run_dir)
    assert not (run_dir / schema.CACHE_DIR).exists()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["run", "--model", "resnet50"],
            "resnet50 is a ResNet, a family exitsearch cannot attach exits to",
        ),
        (
            ["run", "--model", ""],
            "unknown model ''; `exitsearch backbone list` shows the known ones",
        ),
        (["heads", "train", "--model", "vit_tiny_patch16_22"], "did you mean vit_tiny_patch16_224"),
        (["run", *TINY_MODEL, "-o", "depth=0"], "override depth=0 is impossible"),
    ],
    ids=["not-a-vit", "empty-name", "heads-train-typo", "depth-0"],
)
def test_bad_models(tmp_path: Path, argv: list[str], fragment: str):
    run_dir = tmp_path / "run"
    assert_user_error(_invoke([*argv, "--run", str(run_dir)]), fragment)
    assert_nothing_half(run_dir)


# --------------------------------------------------------------------------------- data
def _replace_labels(d: Path, labels: np.ndarray) -> None:
    _write_idx(d / "train-labels-idx1-ubyte", labels)


def _swap(d: Path) -> None:
    a, b = d / "train-images-idx3-ubyte", d / "train-labels-idx1-ubyte"
    os.replace(a, d / "swap")
    os.replace(b, a)
    os.replace(d / "swap", b)


def _gzip_cut(d: Path) -> None:
    raw = (d / "train-images-idx3-ubyte").read_bytes()
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw)[:5000])
    (d / "train-images-idx3-ubyte").unlink()


IDX_DAMAGE: list[tuple[str, Callable[[Path], object], str]] = [
    (
        "truncated-images",
        lambda d: _cut(d / "train-images-idx3-ubyte"),
        "truncated or padded IDX data: header says shape (600, 28, 28)",
    ),
    (
        "truncated-header",
        lambda d: _cut(d / "t10k-labels-idx1-ubyte", 6),
        "t10k-labels-idx1-ubyte: truncated IDX header",
    ),
    (
        "bad-magic",
        lambda d: flip_byte(d / "train-labels-idx1-ubyte", 0),
        "not an IDX file (bad magic number)",
    ),
    (
        "missing-file",
        lambda d: (d / "t10k-labels-idx1-ubyte").unlink(),
        "t10k-labels-idx1-ubyte.gz: file not found",
    ),
    (
        "fewer-labels",
        lambda d: _replace_labels(d, np.zeros(599, np.uint8)),
        "holds 599 labels but train-images-idx3-ubyte holds 600 images",
    ),
    (
        "label-12",
        lambda d: _replace_labels(d, np.full(600, 12, np.uint8)),
        "label 12 found, expected 0..9",
    ),
    ("swapped-files", _swap, "expected an IDX file with 3 dimensions, found 1"),
    ("cut-gzip", _gzip_cut, "train-images-idx3-ubyte.gz: not a readable gzip file"),
]


@pytest.mark.parametrize(
    ("damage", "fragment"), [c[1:] for c in IDX_DAMAGE], ids=[c[0] for c in IDX_DAMAGE]
)
def test_damaged_idx_copies(world: World, tmp_path: Path, damage, fragment: str):
    data = Path(shutil.copytree(world.data_dir, tmp_path / "fmnist"))
    damage(data)
    run_dir = tmp_path / "run"
    args = world.run_args(run_dir)
    args[args.index("--data-dir") + 1] = str(data)
    line = assert_user_error(_invoke(args), fragment)
    assert str(data) in line
    assert_nothing_half(run_dir)
    assert not (run_dir / schema.CACHE_DIR).exists()


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _images(n: int = 300) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def _labels(n: int = 300, classes: int = 10) -> np.ndarray:
    return np.arange(n) % classes


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _cut_npz(path: Path) -> Path:
    _npz(path, x=_images(), y=_labels())
    _cut(path)
    return path


NPZ = [
    pytest.param(lambda p: _text(p, "not arrays"), "not a .npz file", (), id="not-a-zip"),
    pytest.param(_cut_npz, "not a .npz file (not a zip archive", (), id="truncated"),
    pytest.param(lambda p: _npz(p, x=_images()), "missing array(s) y; found ['x']", (), id="no-y"),
    pytest.param(
        lambda p: _npz(p, x=_images(), y=_labels().astype(np.float32)),
        "y must be a 1-D integer array, got float32",
        (),
        id="float-labels",
    ),
    pytest.param(
        lambda p: _npz(p, x=np.array([1, "a"], dtype=object), y=_labels(2)),
        "Object arrays cannot be loaded when allow_pickle=False",
        (),
        id="object-array",
    ),
    pytest.param(
        lambda p: _npz(p, x=_images(), y=_labels() - 1),
        "labels must lie in 0..8, found -1..8",
        (),
        id="negative-label",
    ),
    pytest.param(
        lambda p: _npz(p, x=_images(), y=_labels(classes=5)),
        "the data has 5 classes but the backbone predicts 10; pass --override num_classes=5",
        (),
        id="5-classes",
    ),
    pytest.param(
        lambda p: _npz(p, x=_images(3), y=_labels(3)),
        "cannot hold out 0 validation samples from 3 training samples",
        (),
        id="3-samples",
    ),
    pytest.param(
        lambda p: _npz(p, x=np.repeat(_images()[..., None], 4, axis=3), y=_labels()),
        "4 image channels",
        ("-o", "in_chans=3"),
        id="rgba-into-rgb",
    ),
]


@pytest.mark.parametrize(("make", "fragment", "extra"), NPZ)
def test_bad_npz_files(world: World, tmp_path: Path, make, fragment: str, extra: tuple):
    path = make(tmp_path / "data.npz")
    run_dir = tmp_path / "run"
    args = world.run_args(run_dir, "--data", str(path), *extra, data_dir=False)
    assert_user_error(_invoke(args), fragment)
    assert_nothing_half(run_dir)


# ------------------------------------------------------------------------ search spaces
SPACES = [
    (
        "unknown-key",
        "heads: {linear: {}}\ncriterion: [confidence]\n",
        "criterion: unknown key; allowed:",
    ),
    (
        "unknown-head-key",
        "heads: {linear: {depth: 3}}\n",
        "heads.linear.depth: unknown key; allowed: half, k, params, s",
    ),
    (
        "unknown-head-type",
        "heads: {linearr: {}}\n",
        "heads.linearr: unknown head type; known: cnn_add",
    ),
    ("heads-a-number", "heads: 5\n", "heads: must be a non-empty mapping of head types"),
    (
        "criteria-a-number",
        "heads: {linear: {}}\ncriteria: 5\n",
        "criteria: must be a list (or {choices: [...]}), got 5",
    ),
    (
        "bound-a-word",
        "heads: {linear: {}}\nconfidence: {low: high, high: 1.0}\n",
        "confidence.low: must be a number, got 'high'",
    ),
    (
        "empty-criteria",
        "heads: {linear: {}}\ncriteria: {choices: []}\n",
        "criteria: empty choices; allowed: confidence",
    ),
    (
        "empty-kernels",
        "heads: {lph: {k: []}}\n",
        "heads.lph.k: empty choices; give at least one value",
    ),
    (
        "beyond-depth",
        "heads: {linear: {}}\nlocations: [2, 5]\n",
        "locations: [5] lie beyond the backbone; allowed: 1..3 for a 4-block backbone",
    ),
    (
        "at-the-last-block",
        "heads: {linear: {}}\nlocations: [4]\n",
        "locations: [4] lie beyond the backbone",
    ),
    (
        "range-beyond",
        "heads: {linear: {}}\nlocations: {low: 1, high: 9}\n",
        "locations: [4, 5, 6, 7, 8, 9] lie beyond the backbone",
    ),
    (
        "no-shallow-location",
        "heads: {lph: {half: shallow}}\nlocations: [3]\n",
        "no candidate head at any location",
    ),
    ("empty-file", "", "the file must hold a mapping of keys, got NoneType"),
    ("broken-yaml", "heads: {linear: {}\n", "not valid YAML"),
    (
        "param-the-head-lacks",
        "heads: {mlp: {params: {bogus: 1}}}\nuncertainty: false\ncriteria: [confidence]\n",
        "head mlp[bogus=1]@1: MLPHead.__init__() got an unexpected keyword argument 'bogus'",
    ),
]


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in SPACES], ids=[c[0] for c in SPACES])
def test_malformed_search_spaces(world: World, tmp_path: Path, text: str, fragment: str):
    space = _text(tmp_path / "space.yaml", text)
    run_dir = tmp_path / "run"
    line = assert_user_error(_invoke(world.run_args(run_dir, "--space", str(space))), fragment)
    if "head mlp[bogus=1]@1" not in line:  # the head's own constructor does not know the file
        assert str(space) in line
    assert_nothing_half(run_dir)
    assert not (run_dir / schema.CACHE_DIR).exists()


# ------------------------------------------------------------------------ export, bench
def _damage_run(run: Path, what: str) -> None:
    heads = next((run / schema.CACHE_DIR).glob("heads-*"))
    {
        "truncated-pareto": lambda: _cut(run / schema.PARETO_JSON),
        "truncated-placements": lambda: _cut(run / schema.PLACEMENTS_JSON),
        "truncated-head-weights": lambda: _cut(heads / "heads.safetensors"),
        "no-heads-json": lambda: (heads / "heads.json").unlink(),
        "flipped-head-weight": lambda: flip_byte(heads / "heads.safetensors", -10),
    }[what]()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "damage", "fragment"),
    [
        pytest.param(
            ["--config", "999"],
            None,
            "configuration 999 is not on the front; known ids: 0",
            id="unknown-id",
        ),
        pytest.param(
            ["--config", "-1"], None, "configuration -1 is not on the front", id="negative-id"
        ),
        pytest.param([], "truncated-pareto", "pareto.json: not valid JSON", id="truncated-pareto"),
        pytest.param(
            [], "truncated-placements", "placements.json: not valid JSON", id="truncated-placements"
        ),
        pytest.param(
            [],
            "truncated-head-weights",
            "the run's trained heads are damaged",
            id="truncated-head-weights",
        ),
        pytest.param(
            [],
            "no-heads-json",
            "heads.json: file is missing; it lists the specs",
            id="no-heads-json",
        ),
        pytest.param(
            [],
            "flipped-head-weight",
            "heads.safetensors",
            id="flipped-head-weight",
        ),
    ],
)
def test_export_errors(
    run_and_bundle: RunAndBundle, tmp_path: Path, args: list[str], damage, fragment: str
):
    run = run_and_bundle.run_dir
    if damage:
        run = Path(
            shutil.copytree(
                run_and_bundle.run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("export")
            )
        )
        _damage_run(run, damage)
    out = tmp_path / "bundles" / "b"
    assert_user_error(_invoke(["export", str(run), *args, "--out", str(out)]), fragment)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def _manifest_edit(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """Edit exitsearch.json and drop its self-checksum (a forged manifest, not a damaged one)."""

    def apply(bundle: Path) -> None:
        doc = json.loads((bundle / "exitsearch.json").read_text())
        doc.pop("manifest_sha256")
        edit(doc)
        (bundle / "exitsearch.json").write_text(json.dumps(doc))

    return apply


BUNDLE_DAMAGE = [
    (
        "truncated-heads",
        lambda b: _cut(b / "heads.safetensors"),
        "heads.safetensors: checksum differs from the one recorded in exitsearch.json",
    ),
    (
        "flipped-backbone",
        lambda b: flip_byte(b / "backbone.safetensors"),
        "backbone.safetensors: checksum differs",
    ),
    (
        "no-manifest",
        lambda b: (b / "exitsearch.json").unlink(),
        "exitsearch.json: file is missing; is",
    ),
    (
        "truncated-manifest",
        lambda b: _cut(b / "exitsearch.json"),
        "exitsearch.json: not valid JSON",
    ),
    (
        "edited-manifest",
        lambda b: _text(
            b / "exitsearch.json",
            (b / "exitsearch.json").read_text().replace('"confidence"', '"entropy"', 1),
        ),
        "contents differ from its recorded checksum",
    ),
    (
        "no-recipe",
        lambda b: (b / "train.yaml").unlink(),
        "train.yaml: file is missing from the bundle",
    ),
    (
        "schema-a-string",
        _manifest_edit(lambda d: d.update(schema_version="1")),
        "schema_version must be a positive integer, got '1'",
    ),
    (
        "newer-schema",
        _manifest_edit(lambda d: d.update(schema_version=99)),
        "bundle schema 99 is newer than this exitsearch understands",
    ),
    (
        "config-garbage",
        _manifest_edit(lambda d: d.update(config={"exits": "x"})),
        "exitsearch.json: malformed entry",
    ),
    (
        "fewer-exits",
        _manifest_edit(lambda d: d["config"].update(exits=d["config"]["exits"][:1])),
        "invalid configuration",
    ),
    (
        "depth-edited",
        _manifest_edit(lambda d: d["backbone"]["spec"]["overrides"].update(depth=2)),
        "backbone.safetensors: weights do not fit the architecture",
    ),
    (
        "a-file",
        lambda b: (shutil.rmtree(b), b.write_text("x")),
        "not a bundle folder (it does not exist or is a file)",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "fragment"), [c[1:] for c in BUNDLE_DAMAGE], ids=[c[0] for c in BUNDLE_DAMAGE]
)
def test_bench_on_a_damaged_bundle(
    run_and_bundle: RunAndBundle, tmp_path: Path, damage, fragment: str
):
    bundle = Path(shutil.copytree(run_and_bundle.bundle, tmp_path / "bundle"))
    damage(bundle)
    report = tmp_path / "bench.json"
    args = ["bench", str(bundle), "--batch-size", "2", "--repeats", "1", "--warmup", "0"]
    assert_user_error(_invoke([*args, "--json-out", str(report)]), fragment)
    assert not report.exists()
